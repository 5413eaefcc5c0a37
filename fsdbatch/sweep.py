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
(check_runs, fsdbatch.commands): a sweep whose every run would be rejected fails with one line. YAML aliases are refused
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

from fsd2d.errors import InputError
from fsd2d.folders import BATCH, claim
from fsd2d.io import check_output_dir, read_object
from fsdbatch.checks import clip, describe, short
from fsdbatch.commands import COMMANDS, Command
from fsdbatch.layout import SWEEP_RECORD

SWEEPABLE_COMMANDS = tuple(COMMANDS)  # compare-2d, shuffle-noise, consistency, beta-sweep, gen-3d
RUNNER_OWNED = ("out", "resume", "progress")  # set by the runner for every run, never by the sweep file
TOP_LEVEL_KEYS = ("command", "params", "name", "out")
SLUG_MAX = 100  # characters of the readable part of a run folder's name (the '-hash8' comes on top)
VALUE_MAX = 30  # characters of one value inside the slug (long prompts are cut here)
DEFAULT_ROOT = Path("outputs/batch")
MAX_RUNS = 10_000  # runs a sweep may expand to unless the caller raises it (`fsd batch --max-runs`)

Scalar = str | int | float | bool | None  # None: leave the option out (the command's default)


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
    out: Path  # the sweep folder (fsdbatch.layout): sweep.json, one folder per run, results.csv
    fixed: dict[str, Scalar]
    grid: dict[str, tuple[Scalar, ...]]  # swept name -> its values, in sweep-file order
    runs: tuple[Run, ...]

    def snapshot(self) -> dict:
        """What sweep.json holds: enough for `gather` to know the grid without the sweep file (fsdbatch.layout)."""
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
    snapshot = sweep.out / SWEEP_RECORD
    if snapshot.is_file():
        command = read_object(snapshot).get("command")
        if command != sweep.command:
            raise InputError(f"sweep folder {sweep.out} holds a sweep of {command} runs, this one runs {sweep.command}: "
                             "choose another --out")


def load_sweep(path: Path, out: Path | None = None, overrides: dict | None = None,
               max_runs: int = MAX_RUNS) -> Sweep:
    """Read, validate and expand a sweep file against its command's options (fsdbatch.commands); check that its
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
    sweep = parse_sweep(text, path, out, overrides, max_runs)
    check_sweep_folder(sweep)
    check_runs(sweep)
    return sweep


def parse_sweep(text: str, source: Path, out: Path | None = None, overrides: dict | None = None,
                max_runs: int = MAX_RUNS) -> Sweep:
    """The sweep in `text` (YAML); `source` names it in messages and gives the default name.

    `overrides` (from `fsd batch --set key=value`) replace or add params before validation, e.g.
    {"model": "/path/to/sd"} to run a predefined sweep on Stable Diffusion.
    """
    where = str(source)
    doc = with_overrides(read_document(text, where), overrides)
    command = doc.get("command")
    if command not in COMMANDS:
        got = "no 'command:'" if command is None else f"unknown command {short(command)}"
        raise InputError(f"{where}: {got}; allowed: {', '.join(SWEEPABLE_COMMANDS)}")
    options = COMMANDS[command].options()
    name = sweep_name(doc, source, where)
    if out is None:
        raw_out = doc.get("out")
        if raw_out is not None and not isinstance(raw_out, str):
            raise InputError(f"{where}: out must be a path, got {describe(raw_out)}")
        out = Path(raw_out) if raw_out else DEFAULT_ROOT / name
    fixed, grid = split_params(doc.get("params") or {}, command, options, where)
    count = math.prod(len(v) for v in grid.values())
    if count > max_runs:
        shape = " x ".join(str(len(v)) for v in grid.values())
        raise InputError(f"{where}: the grid has {count:,} runs ({shape}), more than the limit of {max_runs:,} "
                         "(--max-runs)")
    runs = tuple(make_run(i, COMMANDS[command], params_of(fixed, grid, combo), tuple(grid))
                 for i, combo in enumerate(itertools.product(*grid.values())))
    return Sweep(name=name, command=command, source=Path(source), out=Path(out), fixed=fixed, grid=grid, runs=runs)


def read_document(text: str, where: str) -> dict:
    """The sweep file's YAML mapping, with only TOP_LEVEL_KEYS; aliases are refused (module docstring)."""
    import yaml

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
    return doc


def with_overrides(doc: dict, overrides: dict | None) -> dict:
    """`doc` with `overrides` ({name: value}) replacing or added to its params (dashes and underscores name the same
    option); `doc` as it is when there are none or its params are not a mapping (split_params says so)."""
    if not overrides:
        return doc
    params = dict(doc.get("params") or {}) if isinstance(doc.get("params") or {}, dict) else doc.get("params")
    if not isinstance(params, dict):
        return doc
    norm = lambda k: str(k).replace("-", "_")  # noqa: E731
    for key, value in overrides.items():
        params = {k: v for k, v in params.items() if norm(k) != norm(key)}
        params[key] = value
    return {**doc, "params": params}


def sweep_name(doc: dict, source: Path, where: str) -> str:
    """The sweep's name: its `name:`, else the file's stem made a folder name."""
    name = doc.get("name", re.sub(r"[^A-Za-z0-9._-]+", "-", Path(source).stem).strip("-.") or "sweep")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", name):
        raise InputError(f"{where}: name must be a folder name of letters, digits, '.', '_' or '-', got {short(name)}")
    return name


def split_params(params, command: str, options: tuple[str, ...], where: str
                 ) -> tuple[dict[str, Scalar], dict[str, tuple[Scalar, ...]]]:
    """The sweep file's params -> (fixed values, swept values) by the command's option names, in file order."""
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
    return fixed, grid


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


def option_name(key: str, command: str, options: tuple[str, ...], where: str) -> str:
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


def cli_text(value: Scalar) -> str:
    """How a value is written on the command line (floats in Python's shortest form: 0.5, 1e-05)."""
    return value if isinstance(value, str) else str(value)


def params_of(fixed: dict, grid: dict, combo: tuple) -> dict[str, Scalar]:
    return {**fixed, **dict(zip(grid, combo))}


def make_run(index: int, command: Command, params: dict[str, Scalar], swept: tuple[str, ...]) -> Run:
    folder = f"{slug(params, swept)}-{config_hash(command.name, params)}"
    return Run(index=index, command=command.name, params=params, swept=swept, args=tuple(command.args(params)),
               folder=folder)


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


def config_error(run: Run) -> str | None:
    """The one-line error the run's config gives (built from its params and validated, no prior loaded), or None."""
    try:
        COMMANDS[run.command].build(run.params)
    except InputError as e:
        return str(e)
    return None


def check_runs(sweep: Sweep) -> None:
    """InputError when every run of the sweep would be rejected by its command (steps: 0, beta: 2, an unknown
    method): each run's configuration is built and validated (fsdbatch.commands; no prior is loaded); the check
    ends at the first valid run. Runs that only some values break still run (and are recorded as failed): the
    other runs of the grid are worth having."""
    first = None
    for run in sweep.runs:
        error = config_error(run)
        if error is None:
            return
        first = first or (run, error)
    if first is not None:
        run, error = first
        label = ", ".join(f"{k}={short(v)}" for k, v in run.swept_values().items())
        which = f"run {run.index} ({label})" if label else "the run"
        raise InputError(f"{sweep.source}: every run would fail; {which}: {clip(error, 200)}")


def parse_overrides(items: list[str]) -> dict:
    """['model=/x', 'steps=10'] -> {'model': '/x', 'steps': 10} (values parsed as YAML scalars or lists)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"bad --set {item!r}: use KEY=VALUE, e.g. --set model=/path/to/sd")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            raise InputError(f"bad --set {item!r}: the value is not valid YAML") from None
    return out
