"""Output folders: what each fsd command writes, how a command tells its own earlier output, and what it may replace.

Every writer claims its folder (`claim`) before any work starts, and the 2D studies, table1 and train-prior again
just before their one-rename swap (fsd2d.io.atomic_output_dir):

    absent, or an empty folder           new: the command makes it
    the command's own earlier output     its MARKER names this command (below); the command may replace it (2D
                                         studies, table1, train-prior: only when every file in it is one that the
                                         command or `fsd report` writes, LAYOUTS) or add to it (gen-3d: more seeds
                                         of the same settings; batch: runs of the same command)
    anything else                        refused with one line naming what is there; nothing is touched: a user's
                                         folder, another command's output, the current folder or one holding it, a
                                         file, a symbolic link

Markers (`whose`): run.json's "command" (compare-2d, shuffle-noise, consistency, beta-sweep, gen-3d), sweep.json
(batch), fsd_model.json or .train/ (train-prior), table1.md (table1). The file patterns below are
the layouts the commands' module docstrings describe (one pattern per path part; "**" matches any rest).
"""
from __future__ import annotations

import enum
import fnmatch
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fsd2d.errors import InputError

REPORT = "report.html"  # `fsd report` may add it to any run or sweep folder (fsdbatch.report)
RUN_RECORD = "run.json"
METRICS = "metrics.json"  # a run's numbers; in a gen-3d seed folder, the seed's
SEED_PREFIX = "seed_"  # gen-3d: one folder per seed, seed_<S>
PARTICLE_PREFIX = "particle_"  # gen-3d with VSD / ESD's --particles: seed_<S>/particle_<K> for K >= 1
# the sweep folder of `fsd batch` (fsdbatch.layout joins these names into paths and reads them)
SWEEP_RECORD = "sweep.json"  # the expanded grid
SWEEP_RESULTS = "results.csv"  # fsd gather's table
SUMMARY_PREFIX = "summary_"  # fsd gather's plots, summary_<metric>.png
RUN_RESULT = "result"  # in a run's folder: the command's --out
RUN_DONE = "done.json"  # in a run's folder: written when the command succeeded
RUN_FAILED = "failed.json"  # in a run's folder: the last failure
SHOWN = 3  # foreign entries named in a refusal


class Mode(str, enum.Enum):
    """What a command does with its own earlier output."""

    REPLACE = "replace"  # a new folder replaces it in one rename (every file in it must be the command's)
    EXTEND = "extend"  # the command adds to it in place and never deletes (gen-3d seeds, batch runs)


@dataclass(frozen=True)
class Layout:
    """A command's output folder: the files it writes (patterns relative to the folder) and its marker."""

    command: str
    files: tuple[str, ...]
    mode: Mode = Mode.REPLACE
    markers: tuple[str, ...] = (RUN_RECORD,)  # any of these marks the folder; run.json must also name the command

    def holds(self, relative: PurePosixPath) -> bool:
        """Whether a file at `relative` (inside the folder) is one this layout writes."""
        return any(_match(relative.parts, PurePosixPath(p).parts) for p in (*self.files, REPORT))


def _match(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    if pattern and pattern[-1] == "**":
        return len(parts) >= len(pattern) and _match(parts[: len(pattern) - 1], pattern[:-1])
    return len(parts) == len(pattern) and all(fnmatch.fnmatchcase(a, p) for a, p in zip(parts, pattern))


STUDY = (RUN_RECORD, METRICS)
SEEDS = f"{SEED_PREFIX}*"


def seed_dir(run: Path, seed: int | str) -> Path:
    """A gen-3d run's folder of one seed: run/seed_<S>."""
    return Path(run) / f"{SEED_PREFIX}{seed}"


def particle_dir(run: Path, seed: int | str, particle: int) -> Path:
    """A gen-3d run's folder of a seed's particle K >= 1 (VSD / ESD's --particles): run/seed_<S>/particle_<K>
    (particle 0 is the seed's own folder)."""
    return seed_dir(run, seed) / f"{PARTICLE_PREFIX}{particle}"
COMPARE_2D = Layout("compare-2d", (*STUDY, "grid.png", "images/*.png", "particles_*.png"))
SHUFFLE_NOISE = Layout("shuffle-noise", (*STUDY, "shuffle.png"))
CONSISTENCY = Layout("consistency", (*STUDY, "strip.png", "curve.png"))
BETA_SWEEP = Layout("beta-sweep", (*STUDY, "beta_sweep.png", "grid.png", "table.csv"))
GEN_3D = Layout("gen-3d", (*STUDY, "summary.png", "particles.png", *(f"{SEEDS}/{name}" for name in (
    "checkpoint.pt", "gaussians.ply", "turntable.mp4", "turntable.gif", "views.png", "views/az_*.png", METRICS,
    "mesh.glb", "mesh.obj", "mesh.json")), *(f"{SEEDS}/{PARTICLE_PREFIX}*/{name}" for name in (
    "gaussians.ply", "turntable.mp4", "turntable.gif", "views.png", "views/az_*.png", METRICS))), Mode.EXTEND)
BATCH = Layout("batch", (SWEEP_RECORD, SWEEP_RESULTS, f"{SUMMARY_PREFIX}*.png", f"*/{RUN_DONE}", f"*/{RUN_FAILED}",
                         f"*/{RUN_RESULT}/**"), Mode.EXTEND, markers=(SWEEP_RECORD,))
TABLE1 = Layout("table1", ("table1.md", "table1.csv", "table1_per_prompt.md", "table1_per_prompt.csv"),
                markers=("table1.md",))
TRAIN_PRIOR = Layout("train-prior", ("fsd_model.json", "model_index.json", "samples.png", "unet/*", "vae/*",
                                     "text_encoder/*", "tokenizer/*", "scheduler/*", ".train/*"),
                     markers=("fsd_model.json", ".train"))
LAYOUTS = (COMPARE_2D, SHUFFLE_NOISE, CONSISTENCY, BETA_SWEEP, GEN_3D, BATCH, TABLE1, TRAIN_PRIOR)
RUN_COMMANDS = tuple(lay.command for lay in LAYOUTS if lay.markers == (RUN_RECORD,))  # the runs: run.json + metrics


class Claim(str, enum.Enum):
    NEW = "new"  # absent or empty
    OWN = "own"  # the command's own earlier output (replace or extend it)


def whose(folder: Path) -> str | None:
    """The command whose output `folder` is, by its marker (module docstring); None for anything else."""
    folder = Path(folder)
    record = folder / RUN_RECORD
    if record.is_file():
        try:
            command = json.loads(record.read_text()).get("command")
        except (OSError, ValueError, AttributeError):
            return None
        return command if isinstance(command, str) and any(lay.command == command for lay in LAYOUTS) else None
    for layout in LAYOUTS:
        if layout.markers != (RUN_RECORD,) and any((folder / m).exists() for m in layout.markers):
            return layout.command
    return None


def describe(command: str | None) -> str:
    """'a compare-2d run', 'an fsd batch sweep', ... for messages."""
    return {"batch": "an `fsd batch` sweep", "table1": "a table written by `fsd table1`",
            "train-prior": "a model written by `fsd train-prior`", None: "files fsd did not write"
            }.get(command, f"a {command} run")


def foreign_files(folder: Path, layout: Layout) -> list[str]:
    """Files and links under `folder` that `layout` does not write (relative paths, sorted)."""
    folder = Path(folder)
    found = []
    for root, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = PurePosixPath(Path(root, name).relative_to(folder).as_posix())
            if os.path.islink(os.path.join(root, name)) or not layout.holds(rel):
                found.append(str(rel))
    return sorted(found)


def _named(entries: list[str]) -> str:
    shown = ", ".join(entries[:SHOWN])
    return shown + (f" and {len(entries) - SHOWN} more" if len(entries) > SHOWN else "")


def claim_files(folder: Path, names: tuple[str, ...], layout: Layout) -> None:
    """Files `names` may be (re)written in `folder` when it lies in `layout`'s output (the folder or its parent
    carries that marker, and the layout writes those files there: export-mesh's mesh.* in a gen-3d seed folder);
    elsewhere only where none of them exists yet. Else an InputError; nothing is touched."""
    folder = Path(folder)
    run = next((p for p in (folder, folder.parent) if whose(p) == layout.command), None)
    if run is not None and all(layout.holds(PurePosixPath((folder / n).relative_to(run).as_posix())) for n in names):
        return
    taken = [n for n in names if os.path.lexists(folder / n)]
    if taken:
        raise InputError(f"{folder} is not in a {layout.command} run and already holds {_named(taken)}, which this "
                         f"would replace: move {'it' if len(taken) == 1 else 'them'} out first")


def claim(out: Path, layout: Layout, what: str = "--out") -> Claim:
    """NEW or OWN for `layout.command` writing to `out`; anything else is an InputError (one line) and nothing is
    touched (module docstring). Reads only: the caller makes or replaces the folder."""
    out = Path(out)
    shown = f"{what} {out}"
    here = Path.cwd().resolve()
    try:
        if os.path.islink(out):
            raise InputError(f"{shown} is a symbolic link: give the folder it points to, or a new folder")
        if not os.path.lexists(out):
            return Claim.NEW
        if not out.is_dir():
            raise InputError(f"{shown} exists and is not a folder")
        if out.resolve() == here or out.resolve() in here.parents:
            raise InputError(f"{shown} is the current folder or holds it: give a new folder, like outputs/run1")
        if next(out.iterdir(), None) is None:
            return Claim.NEW
        owner = whose(out)
    except OSError as e:
        raise InputError(f"{shown} cannot be checked ({e.strerror or type(e).__name__})") from None
    if owner != layout.command:
        entries = sorted(p.name for p in out.iterdir()) if owner is None else []
        held = f" ({_named(entries)})" if entries else ""
        raise InputError(f"{shown} holds {describe(owner)}{held}; {layout.command} writes only into a new folder or "
                         "its own earlier output: choose another folder")
    if layout.mode is Mode.REPLACE:
        foreign = foreign_files(out, layout)
        if foreign:
            raise InputError(f"{shown} is an earlier {layout.command} output but also holds {_named(foreign)}, which "
                             f"{layout.command} did not write and would delete: move {'it' if len(foreign) == 1 else 'them'}"
                             " out or choose another folder")
    return Claim.OWN
