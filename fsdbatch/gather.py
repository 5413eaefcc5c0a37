"""Collect the finished runs of a sweep folder into results.csv, summary_<metric>.png and report.html
(fsdbatch.report: one self-contained page with the table, plots, turntables and links).

One row per finished run (done.json present) and per entry of its metrics.json:
    metrics["methods"] = {name: {...}}  -> one row per method, column `method`   (compare-2d, consistency)
    metrics["rows"] = [{...}, ...]      -> one row per entry, named by its first field (beta-sweep: beta)
    otherwise                           -> one row                               (shuffle-noise, gen-3d)
Columns: run, index, the swept parameters, seconds (the run's time), then every scalar of the entry and
of the top level of metrics.json (lists and per-seed details are left out; null is an undefined value, and the
"inf"/"nan" of runs written before JSON held null become numbers). A bar plot marks a missing value "n/a".

Plots: each numeric metric that varies, against the first swept numeric parameter (else the numeric entry
name, e.g. beta), one line per combination of the other labels; a bar per row when nothing is numeric.

A broken sweep.json or an unwritable folder is an InputError before anything is read or written. A damaged
run (done.json or metrics.json truncated, not an object, or malformed) is skipped with one `warning:` line on
stderr and listed in `damaged`: a partial sweep is still gathered; deleting its done.json reruns it.
"""
from __future__ import annotations

import csv
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from fsd2d.errors import InputError
from fsd2d.folders import BATCH, claim
from fsd2d.io import atomic_path, check_output_dir
from fsdbatch.checks import read_object, read_snapshot, short

SKIPPED_TOP = ("seconds",)  # the command's own timer; `seconds` in the CSV is the run's time from done.json
FIXED_COLUMNS = ("run", "index")


@dataclass(frozen=True)
class SweepTable:
    """What a sweep folder holds, read and flattened (nothing written)."""

    snapshot: dict  # sweep.json
    columns: tuple[str, ...]
    rows: tuple[dict, ...]
    item_keys: tuple[str, ...]  # entry label columns (method, beta, ...) met in the runs' metrics
    finished: tuple[str, ...]  # run folders with done.json and metrics.json
    missing: tuple[str, ...]  # run folders not finished (no done.json, or no metrics.json)
    damaged: tuple[str, ...]  # run folders skipped: done.json or metrics.json unreadable or malformed
    outputs: dict[str, str] = field(default_factory=dict)  # finished run folder -> its outputs' folder (done.json)


@dataclass(frozen=True)
class GatherResult:
    csv: Path
    plots: tuple[Path, ...]
    columns: tuple[str, ...]
    rows: tuple[dict, ...]
    total: int  # runs in the grid
    finished: tuple[str, ...]  # run folders with done.json and metrics.json
    missing: tuple[str, ...]  # run folders not finished (no done.json, or no metrics.json)
    damaged: tuple[str, ...] = ()  # run folders skipped: done.json or metrics.json unreadable or malformed
    report: Path | None = None  # report.html (fsdbatch.report), when asked for


def gather(out: Path, plots: bool = True, report: bool = True) -> GatherResult:
    """Write `out`/results.csv (and summary plots, and report.html) from the finished runs in `out`/sweep.json."""
    out = Path(out)
    read_snapshot(out)
    claim(out, BATCH, "sweep folder")  # results.csv and the plots go there
    check_output_dir(out, "sweep folder")
    table = collect(out)
    csv_path = out / "results.csv"
    write_csv(csv_path, list(table.columns), list(table.rows))
    swept = list(table.snapshot["swept"])
    made = tuple(summary_plots(out, list(table.rows), list(table.columns), swept, list(table.item_keys))) \
        if plots else ()
    page = None
    if report:
        from fsdbatch.report import write_report

        page = write_report(out, sweep_table=table)
    return GatherResult(csv_path, made, table.columns, table.rows, len(table.snapshot["runs"]), table.finished,
                        table.missing, table.damaged, page)


def collect(out: Path) -> SweepTable:
    """Read the finished runs listed in `out`/sweep.json into rows (module docstring); writes nothing.
    A damaged run is skipped with one `warning:` line on stderr."""
    out = Path(out)
    snapshot = read_snapshot(out)
    swept = list(snapshot["swept"])
    rows, finished, missing, damaged = [], [], [], []
    outputs: dict[str, str] = {}
    item_keys: list[str] = []
    for run in snapshot["runs"]:
        try:
            record = finished_run(out / run["folder"])
        except InputError as e:
            print(f"warning: skipping run {run['folder']}: {e}", file=sys.stderr, flush=True)
            damaged.append(run["folder"])
            continue
        if record is None:
            missing.append(run["folder"])
            continue
        done, entries = record
        finished.append(run["folder"])
        outputs[run["folder"]] = done.get("output", "result")  # checked by finished_run
        head = {"run": run["folder"], "index": run["index"], **{k: run["params"].get(k) for k in swept},
                "seconds": done.get("seconds")}
        for key, entry in entries:
            if key is not None and key not in item_keys:
                item_keys.append(key)
            rows.append({**head, **entry})
    columns = list(FIXED_COLUMNS) + swept + ["seconds"]
    for row in rows:
        columns += [k for k in row if k not in columns]
    return SweepTable(snapshot, tuple(columns), tuple(rows), tuple(item_keys), tuple(finished), tuple(missing),
                      tuple(damaged), outputs)


def finished_run(run_dir: Path) -> tuple[dict, list[tuple[str | None, dict]]] | None:
    """(done.json, the rows of metrics.json) of a finished run; None when it is not finished yet.
    InputError (naming the file) when either file is damaged."""
    record = read_done(run_dir)
    if record is None:
        return None
    done, output = record
    metrics_file = run_dir / output / "metrics.json"
    if not metrics_file.exists():
        return None
    return done, flatten(read_object(metrics_file), metrics_file)


def read_done(run_dir: Path) -> tuple[dict, str] | None:
    """(done.json, the folder inside the run its outputs are in); None when the run has no done.json.
    InputError (naming the file) when done.json is damaged or its 'output' leaves the run."""
    done_file = run_dir / "done.json"
    if not done_file.exists():
        return None
    done = read_object(done_file)
    output = done.get("output", "result")
    if not isinstance(output, str) or output.startswith("/") or ".." in output.split("/"):
        raise InputError(f"{done_file}: 'output' should name a folder inside the run, got {short(output)}")
    return done, output


def flatten(metrics: dict, source: Path | str = "metrics.json") -> list[tuple[str | None, dict]]:
    """metrics.json -> [(entry label column or None, {column: scalar})] as described in the module doc."""
    top = {k: v for k, v in scalars(metrics).items() if k not in SKIPPED_TOP}
    if isinstance(metrics.get("methods"), dict):
        methods = metrics["methods"]
        if not all(isinstance(m, dict) for m in methods.values()):
            raise InputError(f"{source}: every entry of 'methods' should be an object")
        return [("method", {**top, "method": name, **scalars(m)}) for name, m in methods.items()]
    if isinstance(metrics.get("rows"), list) and metrics["rows"]:
        return [(next(iter(r)), {**top, **scalars(r)}) for r in metrics["rows"] if isinstance(r, dict) and r]
    return [(None, top)]


def scalars(d: dict) -> dict:
    """The plain entries of a dict: numbers and strings; 'inf'/'-inf'/'nan' (JSON's stand-ins) as floats."""
    out = {}
    for k, v in d.items():
        if isinstance(v, str) and v in ("inf", "-inf", "nan"):
            v = float(v)
        if isinstance(v, (int, float, str)) or v is None:
            out[k] = v
    return out


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, restval="")
        w.writeheader()
        for row in rows:
            w.writerow({k: "" if v is None else v for k, v in row.items()})


def number(value) -> float | None:
    """A plottable number, or None (booleans and text like '0-3' are not numbers)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def summary_plots(out: Path, rows: list[dict], columns: list[str], swept: list[str],
                  item_keys: list[str]) -> list[Path]:
    """summary_<metric>.png for every numeric metric that varies; stale summary plots are removed."""
    made: list[Path] = []
    if rows:
        labels = swept + [k for k in item_keys if k not in swept]
        head = set(FIXED_COLUMNS) | {"seconds"} | set(labels)
        metric_cols, text_cols = [], []
        for c in columns:
            if c in head:
                continue
            values = [number(r.get(c)) for r in rows if r.get(c) not in (None, "")]
            if values and all(v is not None for v in values):
                finite = {v for v in values if math.isfinite(v)}
                if finite and (len(finite) > 1 or len(rows) == 1):
                    metric_cols.append(c)
            elif values:
                text_cols.append(c)  # e.g. gen-3d's method: a label, not a metric
        labels += [c for c in text_cols if c not in labels]
        x = next((k for k in labels if all(number(r.get(k)) is not None for r in rows)), None)
        for metric in metric_cols:
            path = out / f"summary_{re.sub(r'[^A-Za-z0-9._-]+', '-', metric)}.png"
            plot_metric(path, rows, metric, x, [k for k in labels if k != x])
            made.append(path)
    for stale in out.glob("summary_*.png"):
        if stale not in made:
            stale.unlink(missing_ok=True)  # another shard may be gathering at the same time
    return made


def plot_metric(path: Path, rows: list[dict], metric: str, x: str | None, groups: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fsd2d.figures import save_figure

    def label(r: dict, keys: list[str]) -> str:
        return ", ".join(f"{k}={r.get(k)}" for k in keys) or metric

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    if x is not None:
        lines: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in rows:
            y = number(r.get(metric))
            if y is not None and math.isfinite(y):
                lines[label(r, groups)].append((number(r[x]), y))
        for name, pts in lines.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=name)
        ax.set_xlabel(x)
        if 1 < len(lines) <= 12:
            ax.legend(fontsize=7)
    else:
        names = [label(r, groups) for r in rows]
        ys = [number(r.get(metric)) for r in rows]
        ax.bar(range(len(rows)), [y if y is not None and math.isfinite(y) else 0.0 for y in ys])
        for i, y in enumerate(ys):  # no bar is not a zero: say what is there instead
            if y is None or not math.isfinite(y):
                ax.annotate("inf" if y == math.inf else "n/a", (i, 0), ha="center", va="bottom", fontsize=8,
                            color="0.3", xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(range(len(rows)), names, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(metric)
    ax.set_title(metric if x is None else f"{metric} vs {x}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
