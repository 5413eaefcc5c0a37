"""The sweep file: one `fsd` command, its fixed and swept options, expanded into runs with stable folders.

    command: compare-2d              # one of SWEEPABLE_COMMANDS
    name: fig3                       # optional; default: the file's stem
    out: outputs/batch/fig3          # optional; default: outputs/batch/<name>
    params:                          # the command's option names, with dashes or underscores
      steps: 300                     # a scalar is fixed for every run
      seeds: "0-7"                   # strings go through exactly as the CLI takes them
      prompt: [cat, coffee]          # a list is swept: the grid is the cartesian product
      methods: [[fsd, sds], ddim]    # a list inside the list is one value, joined by commas: "fsd,sds"
      cfg: [null, 3]                 # null = the command's default (the option is left out)

Runs are numbered in the order of itertools.product over the swept parameters, the first one outermost
(above: prompt=cat, then prompt=coffee). A run's folder is `<slug>-<hash8>`: the slug shows the swept
values only (readable, ASCII [A-Za-z0-9._=-], at most SLUG_MAX characters), the hash is the first 8 hex
digits of the sha256 of the run's whole configuration (command + every option as passed), so distinct
runs never share a folder and the same run always finds its own folder again.

Before anything is written, the grid is counted (more than `max_runs` runs is refused before it is built),
the sweep folder is checked, and the runs' configurations are built and validated by the command itself
(check_runs): a sweep whose every run would be rejected fails with one line. YAML aliases are refused
(a few nested ones expand into an exponentially large value: "billion laughs").
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from fsd2d.errors import InputError
from fsd2d.folders import BATCH, claim
from fsd2d.io import check_output_dir, read_object
from fsdbatch.checks import clip, describe, short
from fsdbatch.invoke import CliGroup, PriorReached, invoke_command, prior_loading_stopped, usage_error

SWEEPABLE_COMMANDS = ("compare-2d", "shuffle-noise", "consistency", "beta-sweep", "gen-3d")
RUNNER_OWNED = ("out", "resume", "progress")  # set by the runner for every run, never by the sweep file
TOP_LEVEL_KEYS = ("command", "params", "name", "out")
SLUG_MAX = 100  # characters of the readable part of a run folder's name (the '-hash8' comes on top)
VALUE_MAX = 30  # characters of one value inside the slug (long prompts are cut here)
DEFAULT_ROOT = Path("outputs/batch")
MAX_RUNS = 10_000  # runs a sweep may expand to unless the caller raises it (`fsd batch --max-runs`)

Scalar = str | int | float | bool | None  # None: leave the option out (the command's default)
RESULT = "result"  # a run's folder: the command's --out inside it (fsdbatch.runner)
DONE = "done.json"  # written when the command succeeded
FAILED = "failed.json"  # the last failure


@dataclass(frozen=True)
class Run:
    """One point of the grid: one invocation of the command."""

    index: int  # position in the expanded grid; shards split on it
    command: str
    params: dict[str, Scalar]  # every option given, by Python name (t_min), in sweep-file order
    swept: tuple[str, ...]  # the names of the swept ones, in sweep-file order
    args: tuple[str, ...]  # the command's options as CLI arguments (without --out/--progress/--resume)
    folder: str  # '<slug>-<hash8>'

    def swept_values(self) -> dict[str, Scalar]:
        return {k: self.params[k] for k in self.swept}


@dataclass(frozen=True)
class Sweep:
    name: str
    command: str
    source: Path  # the sweep file
    out: Path  # the sweep folder: sweep.json, results.csv, one folder per run
    fixed: dict[str, Scalar]
    grid: dict[str, tuple[Scalar, ...]]  # swept name -> its values, in sweep-file order
    runs: tuple[Run, ...]

    def snapshot(self) -> dict:
        """What sweep.json holds: enough for `gather` to know the grid without the sweep file."""
        return {
            "name": self.name,
            "command": self.command,
            "source": str(self.source),
            "fixed": self.fixed,
            "grid": {k: list(v) for k, v in self.grid.items()},
            "swept": list(self.grid),
            "runs": [{"index": r.index, "folder": r.folder, "params": r.params, "args": list(r.args)}
                     for r in self.runs],
        }


def check_sweep_folder(sweep: Sweep) -> None:
    """The sweep's folder is new, or a sweep of the same command (fsd2d.folders: more runs may join it; nothing in it
    is deleted); anything else is an InputError."""
    claim(sweep.out, BATCH, "sweep folder")
    check_output_dir(sweep.out, "sweep folder")
    snapshot = sweep.out / "sweep.json"
    if snapshot.is_file():
        command = read_object(snapshot).get("command")
        if command != sweep.command:
            raise InputError(f"sweep folder {sweep.out} holds a sweep of {command} runs, this one runs {sweep.command}: "
                             "choose another --out")


def load_sweep(path: Path, cli: CliGroup, out: Path | None = None, overrides: dict | None = None,
               max_runs: int = MAX_RUNS) -> Sweep:
    """Read, validate and expand a sweep file against the commands of the `fsd` click group; check that its
    folder can be written and that not every run would be rejected by the command's own validation.

    Every problem is an InputError with one line naming the file; nothing is run or written.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"sweep file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"sweep file {path} is unreadable ({type(e).__name__})") from None
    sweep = parse_sweep(text, path, cli, out, overrides, max_runs)
    check_sweep_folder(sweep)
    check_runs(sweep, cli)
    return sweep


def parse_sweep(text: str, source: Path, cli: CliGroup, out: Path | None = None, overrides: dict | None = None,
                max_runs: int = MAX_RUNS) -> Sweep:
    """The sweep in `text` (YAML); `source` names it in messages and gives the default name.

    `overrides` (from `fsd batch --set key=value`) replace or add params before validation, e.g.
    {"model": "/path/to/sd"} to run a predefined sweep on Stable Diffusion.
    """
    import yaml

    where = str(source)
    try:
        doc = load_yaml_without_aliases(text)
    except AliasRefused as e:
        mark = e.event.start_mark
        raise InputError(f"{where}: YAML aliases are not allowed in a sweep file (*{clip(e.event.anchor, 40)} at "
                         f"line {mark.line + 1}, column {mark.column + 1}); write the values out") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise InputError(f"{where}: not valid YAML ({clip(problem)}{at})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{where}: expected a mapping with 'command:' and 'params:', got {describe(doc)}")
    unknown = [str(k) for k in doc if k not in TOP_LEVEL_KEYS]
    if unknown:
        raise InputError(f"{where}: unknown key {short(unknown[0])}; allowed: {', '.join(TOP_LEVEL_KEYS)}")
    if overrides:
        params = dict(doc.get("params") or {}) if isinstance(doc.get("params") or {}, dict) else doc.get("params")
        if isinstance(params, dict):
            norm = lambda k: str(k).replace("-", "_")  # noqa: E731
            for key, value in overrides.items():
                params = {k: v for k, v in params.items() if norm(k) != norm(key)}
                params[key] = value
            doc = {**doc, "params": params}

    command = doc.get("command")
    if command not in SWEEPABLE_COMMANDS or command not in cli.commands:
        got = "no 'command:'" if command is None else f"unknown command {short(command)}"
        raise InputError(f"{where}: {got}; allowed: {', '.join(SWEEPABLE_COMMANDS)}")
    options = command_options(cli.commands[command])

    name = doc.get("name", re.sub(r"[^A-Za-z0-9._-]+", "-", Path(source).stem).strip("-.") or "sweep")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", name):
        raise InputError(f"{where}: name must be a folder name of letters, digits, '.', '_' or '-', got {short(name)}")
    if out is None:
        raw_out = doc.get("out")
        if raw_out is not None and not isinstance(raw_out, str):
            raise InputError(f"{where}: out must be a path, got {describe(raw_out)}")
        out = Path(raw_out) if raw_out else DEFAULT_ROOT / name

    params = doc.get("params") or {}
    if not isinstance(params, dict):
        raise InputError(f"{where}: params must be a mapping of option name to value or list, got {describe(params)}")
    fixed: dict[str, Scalar] = {}
    grid: dict[str, tuple[Scalar, ...]] = {}
    for key, value in params.items():
        pname = option_name(str(key), command, options, where)
        if pname in fixed or pname in grid:
            raise InputError(f"{where}: parameter {short(key)} is given twice "
                             "(dashes and underscores name the same option)")
        if isinstance(value, list):
            if not value:
                raise InputError(f"{where}: params.{key} is an empty list, so the grid has no runs")
            values = tuple(plain_value(v, key, where, inner=True) for v in value)
            repeated = first_repeat(cli_text(v) for v in values)
            if repeated is not None:
                raise InputError(f"{where}: params.{key} lists {short(repeated)} twice")
            grid[pname] = values
        else:
            fixed[pname] = plain_value(value, key, where, inner=False)
    for pname, values in {**{k: (v,) for k, v in fixed.items()}, **grid}.items():
        for value in values:
            check_flag(options[pname], value, where)

    count = math.prod(len(v) for v in grid.values())
    if count > max_runs:
        shape = " x ".join(str(len(v)) for v in grid.values())
        raise InputError(f"{where}: the grid has {count:,} runs ({shape}), more than the limit of {max_runs:,} "
                         "(--max-runs)")
    runs = tuple(make_run(i, command, params_of(fixed, grid, combo), tuple(grid), options)
                 for i, combo in enumerate(itertools.product(*grid.values())))
    return Sweep(name=name, command=command, source=Path(source), out=Path(out), fixed=fixed, grid=grid, runs=runs)


class AliasRefused(Exception):
    def __init__(self, event):
        super().__init__(event.anchor)
        self.event = event


def load_yaml_without_aliases(text: str):
    """yaml.safe_load, refusing the first alias (*name) as soon as it is read: nothing is expanded."""
    import yaml

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                raise AliasRefused(self.peek_event())
            return super().compose_node(parent, index)

    loader = Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def first_repeat(items) -> str | None:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return None


def command_options(command) -> dict[str, Any]:
    """The command's options by Python name (t_min), the runner-owned ones included."""
    return {p.name: p for p in command.params if getattr(p, "param_type_name", None) == "option" and p.name}


def option_name(key: str, command: str, options: dict[str, Any], where: str) -> str:
    pname = key.strip().replace("-", "_")
    if pname in RUNNER_OWNED:
        raise InputError(f"{where}: '{clip(key)}' cannot be set in a sweep: the runner sets --out (use the sweep's "
                         "out:), --resume and --progress (use `fsd batch --progress`)")
    if pname not in options:
        allowed = [n.replace("_", "-") for n in options if n not in RUNNER_OWNED]
        raise InputError(f"{where}: unknown parameter {short(key)} for {command}; allowed: {', '.join(allowed)}")
    return pname


def plain_value(value, key: str, where: str, inner: bool) -> Scalar:
    """A YAML value -> one option value; a list inside a swept list becomes a comma string."""
    if inner and isinstance(value, list):
        if not value or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
            raise InputError(f"{where}: params.{key}: a list inside the list must hold plain values, "
                             f"got {short(value)}")
        return ",".join(cli_text(v) for v in value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise InputError(f"{where}: params.{key} must be a value or a list of values, got {describe(value)}")


def check_flag(option: Any, value: Scalar, where: str) -> None:
    if option.is_flag and value is not None and not isinstance(value, bool):
        raise InputError(f"{where}: params.{option.name.replace('_', '-')} is a flag: give true or false")


def cli_text(value: Scalar) -> str:
    """How a value is written on the command line (floats in Python's shortest form: 0.5, 1e-05)."""
    return value if isinstance(value, str) else str(value)


def params_of(fixed: dict, grid: dict, combo: tuple) -> dict[str, Scalar]:
    return {**fixed, **dict(zip(grid, combo))}


def make_run(index: int, command: str, params: dict[str, Scalar], swept: tuple[str, ...],
             options: dict[str, Any]) -> Run:
    args: list[str] = []
    for pname, value in params.items():
        opt = options[pname]
        if value is None:
            continue
        if opt.is_flag:
            flag = opt.opts[0] if value else (opt.secondary_opts[0] if opt.secondary_opts else None)
            args += [flag] if flag else []
        else:
            args += [opt.opts[0], cli_text(value)]
    folder = f"{slug(params, swept)}-{config_hash(command, params)}"
    return Run(index=index, command=command, params=params, swept=swept, args=tuple(args), folder=folder)


def config_hash(command: str, params: dict[str, Scalar]) -> str:
    """First 8 hex digits of sha256 over the command and every option as the CLI receives it."""
    canon = {"command": command, "params": {k: None if v is None else cli_text(v) for k, v in params.items()}}
    text = json.dumps(canon, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def slug(params: dict[str, Scalar], swept: tuple[str, ...]) -> str:
    """'prompt=a-typewriter-made-out-of-veg_beta=0.5': the swept values, safe for any filesystem."""
    if not swept:
        return "run"
    parts = [f"{name.replace('_', '-')}={slug_value(params[name])}" for name in swept]
    return "_".join(parts)[:SLUG_MAX].rstrip("-_=.")


def slug_value(value: Scalar) -> str:
    if value is None:
        return "default"
    text = re.sub(r"[^A-Za-z0-9.-]+", "-", cli_text(value)).strip("-")
    return text[:VALUE_MAX].rstrip("-") or "x"


def config_error(run: Run, run_dir: Path, cli: CliGroup) -> str | None:
    """The one-line error the command gives for this run's options before it loads its prior, or None."""
    try:
        return invoke_command(cli, [run.command, *run.args, "--out", str(run_dir / RESULT), "--no-progress"],
                              quiet=True).failure()
    except PriorReached:
        return None
    except (KeyboardInterrupt, typer.Abort):
        raise
    except Exception as e:  # noqa: BLE001 - not an input error: the run itself will record it
        return usage_error(e)


def check_runs(sweep: Sweep, cli: CliGroup) -> None:
    """InputError when every run of the sweep would be rejected by its command (steps: 0, beta: 2, an unknown
    method): each run's configuration is built and validated in-process (about 1 ms), stopped before the prior
    loads; the check ends at the first valid run. Runs that only some values break still run (and are recorded
    as failed): the other runs of the grid are worth having."""
    first = None
    with prior_loading_stopped(sweep.command):
        for run in sweep.runs:
            error = config_error(run, sweep.out / run.folder, cli)
            if error is None:
                return
            first = first or (run, error)
    if first is not None:
        run, error = first
        label = ", ".join(f"{k}={short(v)}" for k, v in run.swept_values().items())
        which = f"run {run.index} ({label})" if label else "the run"
        raise InputError(f"{sweep.source}: every run would fail; {which}: {clip(error, 200)}")
