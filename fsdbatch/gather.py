"""Collect the finished runs of a sweep folder into results.csv, summary_<metric>.png and report.html
(fsdbatch.report: one self-contained page with the table, plots, turntables and links).

The rows and columns are fsdbatch.table's (one row per finished run and entry of its metrics.json). A bar plot
marks a missing value "n/a".

Plots: each numeric metric that varies, against the first swept numeric parameter (else the numeric entry
name, e.g. beta), one line per combination of the other labels; a bar per row when nothing is numeric.

A broken sweep.json or an unwritable folder is an InputError before anything is read or written; a damaged run is
skipped with one `warning:` line (fsdbatch.table).
"""
from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from fsd2d.folders import BATCH, claim
from fsd2d.io import atomic_path, check_output_dir
from fsdbatch.layout import RESULTS, SweepFolder, summary_plot_file, summary_plot_files
from fsdbatch.report import write_report
from fsdbatch.table import FIXED_COLUMNS, collect


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
    sweep = SweepFolder.open(out)
    claim(out, BATCH, "sweep folder")  # results.csv and the plots go there
    check_output_dir(out, "sweep folder")
    table = collect(sweep)
    csv_path = out / RESULTS
    write_csv(csv_path, list(table.columns), list(table.rows))
    swept = list(table.snapshot["swept"])
    made = tuple(summary_plots(out, list(table.rows), list(table.columns), swept, list(table.item_keys))) \
        if plots else ()
    page = None
    if report:
        page = write_report(out, sweep_table=table)
    return GatherResult(csv_path, made, table.columns, table.rows, len(table.snapshot["runs"]), table.finished,
                        table.missing, table.damaged, page)


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
            path = summary_plot_file(out, metric)
            plot_metric(path, rows, metric, x, [k for k in labels if k != x])
            made.append(path)
    for stale in summary_plot_files(out):
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
