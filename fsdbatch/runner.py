"""Run a sweep's runs in this process, resumably, one shard at a time.

The sweep folder (`out`, laid out as fsdbatch.layout says): every runner writes sweep.json (atomically); each run's
command writes into <run>/result/ (its --out); done.json is written (atomically) only after the command succeeded
(params, args, seconds, output folder), failed.json holds the last failure (the one-line error, removed when the run
succeeds). A run is done exactly when its done.json exists.

A run without done.json is run again: the 2D studies replace result/ atomically, so they start over;
gen-3d continues the seeds that have a checkpoint in result/. Each run is its config, built from its params, and
the library call its command makes (fsdbatch.commands) with `out = <run>/result`, in this process, so the prior and
CUDA are set up once per process. A KeyboardInterrupt stops the runner at once (nothing is recorded for the
interrupted run); any other failure is recorded and the next run starts.

Before that, `fsdbatch.sweep.check_runs` (called by load_sweep) builds and validates the runs' configurations
(no prior loaded): a sweep that every run would reject fails at once.
"""
from __future__ import annotations

import gc
import os
import re
import shutil
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from fsd2d.errors import InputError
from fsd2d.io import write_json
from fsdbatch.checks import short
from fsdbatch.commands import COMMANDS
from fsdbatch.layout import DONE, FAILED, RESULT, SWEEP_RECORD, is_done
from fsdbatch.sweep import Run, Sweep, check_sweep_folder




@dataclass(frozen=True)
class Shard:
    """Runs whose grid index % count == index belong to this shard."""

    index: int
    count: int
    source: str = "default"  # where it came from: --shard, SLURM array, torchrun, default

    def owns(self, run: Run) -> bool:
        return run.index % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str, source: str = "--shard") -> Shard:
    """'i/n' with 0 <= i < n -> Shard(i, n)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise InputError(f"bad {source} {short(text)}: use 'i/n' with 0 <= i < n, like '0/4'")
    return Shard(int(m.group(1)), int(m.group(2)), source)


def shard_from_env(env: Mapping[str, str]) -> Shard | None:
    """A SLURM job array (SLURM_ARRAY_TASK_ID with _COUNT, or with _MIN/_MAX [/_STEP]) or torchrun
    (RANK, WORLD_SIZE); both together (torchrun inside an array task) split each array task's share
    between the ranks: shard i * world + rank of n * world. None when neither is set."""

    def ints(*names: str) -> list[int | None]:
        out = []
        for n in names:
            v = env.get(n)
            if v is None or v.strip() == "":
                out.append(None)
                continue
            try:
                out.append(int(v))
            except ValueError:
                raise InputError(f"environment variable {n}={short(v)} is not an integer; pass --shard i/n") from None
        return out

    task, count, lo, hi, step = ints("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN",
                                     "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_STEP")
    if task is not None:
        step = step or 1
        if count is None and (lo is None or hi is None):
            raise InputError("SLURM_ARRAY_TASK_ID is set without SLURM_ARRAY_TASK_COUNT or _MIN/_MAX; "
                             "pass --shard i/n")
        lo = lo or 0
        n = count if count is not None else (hi - lo) // step + 1
        i, rem = divmod(task - lo, step)
        if rem or not 0 <= i < n:
            raise InputError(f"SLURM array task {task} is not in a plain range (min {lo}, step {step}, "
                             f"count {n}); pass --shard i/n")
        rank, world = ints("RANK", "WORLD_SIZE")
        if rank is not None and world is not None and world > 1:  # torchrun inside an array task
            if not 0 <= rank < world:
                raise InputError(f"RANK={rank} / WORLD_SIZE={world} is not a valid shard; pass --shard i/n")
            return Shard(i * world + rank, n * world, "SLURM array x torchrun")
        return Shard(i, n, "SLURM array")
    rank, world = ints("RANK", "WORLD_SIZE")
    if rank is not None and world is not None:
        if world < 1 or not 0 <= rank < world:
            raise InputError(f"RANK={rank} / WORLD_SIZE={world} is not a valid shard; pass --shard i/n")
        return Shard(rank, world, "torchrun")
    return None


def resolve_shard(text: str | None, env: Mapping[str, str] | None = None) -> Shard:
    """--shard if given, else SLURM, else torchrun, else the whole grid (0/1)."""
    if text is not None:
        return parse_shard(text)
    return shard_from_env(os.environ if env is None else env) or Shard(0, 1)


@dataclass
class BatchResult:
    shard: Shard
    total: int  # runs in the grid
    owned: int  # runs of this shard
    skipped: int  # already done before this call
    finished: list[str] = field(default_factory=list)  # folders completed by this call
    failed: list[tuple[str, str]] = field(default_factory=list)  # (folder, one-line error)


def run_sweep(sweep: Sweep, shard: Shard = Shard(0, 1), progress: bool = False) -> BatchResult:
    """Run this shard's runs that have no done.json, in grid order; failures are recorded, not raised."""
    from tqdm.auto import tqdm

    out = sweep.out
    check_sweep_folder(sweep)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SWEEP_RECORD, sweep.snapshot())
    owned = [r for r in sweep.runs if shard.owns(r)]
    todo = [r for r in owned if not is_done(out / r.folder)]
    result = BatchResult(shard, len(sweep.runs), len(owned), len(owned) - len(todo))
    source = "" if shard.source == "default" else f" (from {shard.source})"
    print(f"shard {shard}{source}: {len(owned)} of {len(sweep.runs)} runs; skipping {result.skipped} done, "
          f"{len(todo)} to run -> {out}/", flush=True)
    with tqdm(total=len(owned), initial=result.skipped, desc=sweep.name, unit="run", file=sys.stderr) as bar:
        for run in todo:
            label = ", ".join(f"{k}={v}" for k, v in run.swept_values().items()) or run.folder
            bar.write(f"[run {run.index}] {sweep.command} {label}")
            error = run_one(run, out / run.folder, progress)
            if error is None:
                result.finished.append(run.folder)
            else:
                result.failed.append((run.folder, error))
                bar.write(f"[run {run.index}] failed: {error}")
            bar.update(1)
    return result


def run_one(run: Run, run_dir: Path, progress: bool = False) -> str | None:
    """Run one grid point; write done.json on success (returns None) or failed.json (returns the error)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(run_dir)
    command = COMMANDS[run.command]
    args = [run.command, *run.args, "--out", str(run_dir / RESULT)]  # the command line of this run, for the record
    start = time.perf_counter()
    trace = None
    try:
        command.run(command.build(run.params), run_dir / RESULT, progress)
        error = None
    except KeyboardInterrupt:
        raise
    except InputError as e:
        error = str(e)
    except Exception as e:  # noqa: BLE001 - any failure of one run is recorded, the sweep goes on
        error = f"{type(e).__name__}: {first_line(str(e))}"
        trace = traceback.format_exc()
        print(trace, file=sys.stderr, flush=True)
    finally:
        release_memory()
    seconds = time.perf_counter() - start
    record = {"command": run.command, "index": run.index, "folder": run.folder, "params": run.params,
              "swept": run.swept_values(), "args": args, "seconds": seconds}
    if error is not None:
        write_json(run_dir / FAILED, {**record, "error": error, "traceback": trace, "failed": now()})
        return error
    write_json(run_dir / DONE, {**record, "output": RESULT, "finished": now()})
    (run_dir / FAILED).unlink(missing_ok=True)
    return None


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text.strip())


def remove_leftovers(run_dir: Path) -> None:
    """Temporary folders of an atomic --out left by a killed process (SIGKILL skips the cleanup).
    A run folder belongs to one runner at a time: shards never share runs."""
    for p in run_dir.glob(f".{RESULT}.*-*"):
        if p.is_dir() and (".tmp-" in p.name or ".old-" in p.name):
            shutil.rmtree(p, ignore_errors=True)


def release_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
