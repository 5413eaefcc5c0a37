"""What a sweep folder holds (read through fsdbatch.layout), flattened into rows; nothing is written
(fsdbatch.gather writes results.csv and the summary plots from it, fsdbatch.report the page).

One row per finished run (done.json present) and per entry of its metrics.json:
    metrics["methods"] = {name: {...}}  -> one row per method, column `method`   (compare-2d, consistency)
    metrics["rows"] = [{...}, ...]      -> one row per entry, named by its first field (beta-sweep: beta)
    otherwise                           -> one row                               (shuffle-noise, gen-3d)
metrics["cost"] (fsd2d.cost: per method for compare-2d, one for gen-3d) adds its numbers to the row it belongs to
(prior_evaluations_per_step, seconds_per_step, peak_memory_gib, trained_parameters), so diversity is read
beside cost; its total `seconds` is the command's, left out as the top level's is.
Columns: run, index, the swept parameters, seconds (the run's time), then every scalar of the entry and
of the top level of metrics.json (lists and per-seed details are left out; null is an undefined value, and the
"inf"/"nan" of runs written before JSON held null become numbers).

A damaged run (done.json or metrics.json truncated, not an object, or malformed) is skipped with one `warning:`
line on stderr and listed in `damaged`: a partial sweep is still read; deleting its done.json reruns it.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from fsd2d.errors import InputError
from fsd2d.folders import METRICS
from fsd2d.io import read_object
from fsdbatch.layout import Done, SweepFolder, SweepRun

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
    outputs: dict[str, Path] = field(default_factory=dict)  # finished run folder -> its outputs folder (done.json)


def collect(sweep: SweepFolder) -> SweepTable:
    """Read the finished runs listed in the sweep's sweep.json into rows (module docstring); writes nothing.
    A damaged run is skipped with one `warning:` line on stderr."""
    swept = list(sweep.snapshot["swept"])
    rows, finished, missing, damaged = [], [], [], []
    outputs: dict[str, Path] = {}
    item_keys: list[str] = []
    for run in sweep.runs:
        try:
            record = finished_run(run)
        except InputError as e:
            print(f"warning: skipping run {run.folder}: {e}", file=sys.stderr, flush=True)
            damaged.append(run.folder)
            continue
        if record is None:
            missing.append(run.folder)
            continue
        done, entries = record
        finished.append(run.folder)
        outputs[run.folder] = done.outputs
        head = {"run": run.folder, "index": run.index, **{k: run.params.get(k) for k in swept},
                "seconds": done.record.get("seconds")}
        for key, entry in entries:
            if key is not None and key not in item_keys:
                item_keys.append(key)
            rows.append({**head, **entry})
    columns = list(FIXED_COLUMNS) + swept + ["seconds"]
    for row in rows:
        columns += [k for k in row if k not in columns]
    return SweepTable(sweep.snapshot, tuple(columns), tuple(rows), tuple(item_keys), tuple(finished), tuple(missing),
                      tuple(damaged), outputs)


def finished_run(run: SweepRun) -> tuple[Done, list[tuple[str | None, dict]]] | None:
    """(done.json, the rows of metrics.json) of a finished run; None when it is not finished yet (no done.json, or
    no metrics.json). InputError (naming the file) when either file is damaged."""
    done = run.done()
    if done is None or not done.metrics.exists():
        return None
    return done, flatten(read_object(done.metrics), done.metrics)


def flatten(metrics: dict, source: Path | str = METRICS) -> list[tuple[str | None, dict]]:
    """metrics.json -> [(entry label column or None, {column: scalar})] as described in the module doc."""
    top = {k: v for k, v in scalars(metrics).items() if k not in (*SKIPPED_TOP, "cost")}  # cost: cost_columns
    if isinstance(metrics.get("methods"), dict):
        methods = metrics["methods"]
        if not all(isinstance(m, dict) for m in methods.values()):
            raise InputError(f"{source}: every entry of 'methods' should be an object")
        costs = cost if isinstance(cost := metrics.get("cost"), dict) else {}
        return [("method", {**top, "method": name, **scalars(m), **cost_columns(costs.get(name))})
                for name, m in methods.items()]
    if isinstance(metrics.get("rows"), list) and metrics["rows"]:
        return [(next(iter(r)), {**top, **scalars(r)}) for r in metrics["rows"] if isinstance(r, dict) and r]
    return [(None, {**top, **cost_columns(metrics.get("cost"))})]


def cost_columns(cost) -> dict:
    """A cost record's numbers as columns (module docstring); nothing for a missing or malformed one."""
    return {k: v for k, v in scalars(cost).items() if k not in SKIPPED_TOP} if isinstance(cost, dict) else {}


def scalars(d: dict) -> dict:
    """The plain entries of a dict: numbers and strings; 'inf'/'-inf'/'nan' (JSON's stand-ins) as floats."""
    out = {}
    for k, v in d.items():
        if isinstance(v, str) and v in ("inf", "-inf", "nan"):
            v = float(v)
        if isinstance(v, (int, float, str)) or v is None:
            out[k] = v
    return out
