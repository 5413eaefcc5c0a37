"""The sweep folder of `fsd batch`: where each of its files lies, and the one reader of it. The runner, gather, report,
table1 and view find a sweep's runs, their records and their outputs only through this module.

    OUT/                        a sweep folder (the names are fsd2d.folders's: its BATCH layout lets `claim` know it)
      sweep.json                SWEEP_RECORD: the expanded grid (fsdbatch.sweep.Sweep.snapshot), written by every runner
      <slug>-<hash8>/           a run's folder (fsdbatch.sweep: the swept values and a hash of the whole configuration)
        result/                 RESULT: the command's --out, laid out as fsd2d.folders says (run.json, metrics.json,
                                gen-3d's seed_S/)
        done.json               DONE: written only after the command succeeded; a run is finished exactly when it
                                exists. Its "output" names the run's outputs folder in the run folder (RESULT if absent)
        failed.json             FAILED: the last failure (removed when the run succeeds)
      results.csv               RESULTS (fsdbatch.gather)
      summary_<metric>.png      summary_plot_file (fsdbatch.gather)
      report.html               fsd2d.folders.REPORT (fsdbatch.report)

Reading:
    SweepFolder.open(out)       sweep.json, checked; its runs as SweepRun (index, folder, params, path), in grid order
    SweepFolder.finished()      the finished runs with their Done record (table1: a damaged one is an InputError)
    SweepRun.done()             done.json and the run's outputs folder (Done); None while the run is not finished
    SweepRun.outputs()          where the run's outputs are (or will be): done.json's output, else result/
    Done.record                 done.json (params, args, seconds, output, finished)
    Done.metrics, .run_record   the paths of the run's metrics.json and run.json
    seed_dirs(outputs)          a gen-3d run's seed_S folders, in the order of S

A damaged file is an InputError naming it; what a caller does with a damaged run (gather skips it with a warning,
table1 refuses it) is the caller's.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fsd2d.errors import InputError
from fsd2d.folders import seed_dir  # noqa: F401 (re-exported: the readers' seed folders)
from fsd2d.folders import METRICS, RUN_DONE, RUN_FAILED, RUN_RECORD, RUN_RESULT, SEED_PREFIX, SUMMARY_PREFIX, \
    SWEEP_RECORD, SWEEP_RESULTS
from fsd2d.io import read_object
from fsdbatch.checks import describe, short

__all__ = ["DONE", "FAILED", "RESULT", "RESULTS", "SWEEP_RECORD", "Done", "SweepFolder", "SweepRun", "is_done",
           "is_sweep", "read_snapshot", "seed_dir", "seed_dirs", "summary_plot_file", "summary_plot_files"]

RESULT = RUN_RESULT  # a run's folder: the command's --out inside it (fsdbatch.runner)
DONE = RUN_DONE  # written when the command succeeded
FAILED = RUN_FAILED  # the last failure
RESULTS = SWEEP_RESULTS
NAME_MAX = 255  # a run folder's name: one path component on common filesystems
SEED_DIR = re.compile(re.escape(SEED_PREFIX) + r"(\d+)")
SNAPSHOT_KINDS = {"command": str, "swept": list, "runs": list, "folder": str, "index": int, "params": dict}


def is_sweep(folder: Path) -> bool:
    """Whether `folder` is a sweep folder (it holds sweep.json)."""
    return (Path(folder) / SWEEP_RECORD).is_file()


def is_done(run_dir: Path) -> bool:
    """Whether the run in `run_dir` (OUT/<folder>) has finished: its done.json exists."""
    return (Path(run_dir) / DONE).exists()


def summary_plot_file(out: Path, metric: str) -> Path:
    """OUT/summary_<metric>.png, the metric's name made safe for a file name."""
    return Path(out) / f"{SUMMARY_PREFIX}{re.sub(r'[^A-Za-z0-9._-]+', '-', metric)}.png"


def summary_plot_files(out: Path) -> list[Path]:
    """The summary plots in OUT now, sorted by name."""
    return sorted(Path(out).glob(f"{SUMMARY_PREFIX}*.png"))


def seed_dirs(outputs: Path) -> list[tuple[int, Path]]:
    """(S, outputs/seed_S) for every seed folder of a gen-3d run, in the order of S; [] when `outputs` is not there."""
    outputs = Path(outputs)
    if not outputs.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in outputs.iterdir() if p.is_dir() and (m := SEED_DIR.fullmatch(p.name))]
    return sorted(found)


@dataclass(frozen=True)
class Done:
    """A finished run's done.json and where its outputs are."""

    record: dict  # done.json: params, args, seconds, output, finished
    outputs: Path  # the command's --out: the folder done.json's "output" names inside the run folder

    @property
    def metrics(self) -> Path:
        return self.outputs / METRICS

    @property
    def run_record(self) -> Path:
        return self.outputs / RUN_RECORD


@dataclass(frozen=True)
class SweepRun:
    """One run as sweep.json lists it."""

    index: int | None  # position in the grid (None where the caller did not ask sweep.json for it)
    folder: str  # '<slug>-<hash8>'
    params: dict  # every option given, by Python name ({} where the caller did not ask for them)
    path: Path  # the run's folder: OUT/<folder>

    def done(self) -> Done | None:
        """done.json and the run's outputs folder; None when the run has no done.json (not finished).
        InputError (naming the file) when done.json is damaged or its 'output' leaves the run."""
        done_file = self.path / DONE
        if not done_file.exists():
            return None
        record = read_object(done_file)
        output = record.get("output", RESULT)
        if not isinstance(output, str) or output.startswith("/") or ".." in output.split("/"):
            raise InputError(f"{done_file}: 'output' should name a folder inside the run, got {short(output)}")
        return Done(record, self.path / output)

    def outputs(self) -> Path:
        """The run's outputs folder: done.json's 'output' once the run has finished, else result/ (where the command
        is writing, or will write). InputError when done.json is damaged."""
        done = self.done()
        return self.path / RESULT if done is None else done.outputs


@dataclass(frozen=True)
class SweepFolder:
    """A sweep folder as its sweep.json lists it (read and checked once)."""

    path: Path  # OUT
    snapshot: dict  # sweep.json
    runs: tuple[SweepRun, ...]  # in grid order

    @classmethod
    def open(cls, out: Path, fields: tuple[str, ...] = ("command", "swept", "runs"),
             run_fields: tuple[str, ...] = ("folder", "index", "params")) -> SweepFolder:
        """OUT's sweep.json with the `fields` and `run_fields` the caller reads (read_snapshot); an InputError
        naming the file when it is missing or damaged."""
        out = Path(out)
        snapshot = read_snapshot(out, fields, run_fields)
        runs = tuple(SweepRun(r["index"] if "index" in run_fields else None, r["folder"],
                              r["params"] if "params" in run_fields else {}, out / r["folder"])
                     for r in snapshot["runs"])
        return cls(out, snapshot, runs)

    @property
    def command(self) -> str:
        return self.snapshot["command"]

    def finished(self) -> Iterator[tuple[SweepRun, Done]]:
        """The finished runs with their done.json, in grid order; a damaged done.json is an InputError."""
        for run in self.runs:
            done = run.done()
            if done is not None:
                yield run, done


def read_snapshot(out: Path, fields: tuple[str, ...] = ("command", "swept", "runs"),
                  run_fields: tuple[str, ...] = ("folder", "index", "params")) -> dict:
    """`out`/sweep.json (written by `fsd batch`) with the `fields` and, in each of its runs, the `run_fields`
    the caller reads (of the kinds in SNAPSHOT_KINDS); a run's folder must be a plain folder name."""
    out = Path(out)
    path = out / SWEEP_RECORD
    if not out.is_dir():
        raise InputError(f"{out} {'is not a folder' if out.exists() else 'does not exist'}: give a folder "
                         "written by `fsd batch`")
    if not path.exists():
        raise InputError(f"{out} has no {SWEEP_RECORD}: not a folder written by `fsd batch`")
    doc = read_object(path)

    def bad(problem: str) -> InputError:
        return InputError(f"{path}: {problem}; rerun `fsd batch` on the sweep file to rewrite it")

    for key in dict.fromkeys(("runs", *fields)):
        if key not in doc:
            raise bad(f"no '{key}'")
        if not isinstance(doc[key], SNAPSHOT_KINDS[key]):
            raise bad(f"'{key}' should be a {SNAPSHOT_KINDS[key].__name__}, got {describe(doc[key])}")
    if not all(isinstance(k, str) for k in doc.get("swept", [])):
        raise bad("'swept' should list parameter names")
    for i, run in enumerate(doc["runs"]):
        if not isinstance(run, dict):
            raise bad(f"runs[{i}] should be an object, got {describe(run)}")
        for key in dict.fromkeys(("folder", *run_fields)):
            kind = SNAPSHOT_KINDS[key]
            if not isinstance(run.get(key), kind) or isinstance(run.get(key), bool):
                raise bad(f"runs[{i}] has no {kind.__name__} '{key}'")
        name = run["folder"]
        if name in ("", ".", "..") or "/" in name or "\\" in name or len(name) > NAME_MAX:
            raise bad(f"runs[{i}].folder {short(name)} is not a folder name")
    return doc
