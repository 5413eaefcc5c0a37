"""The commands a sweep may run, wired to the library: each builds its config from a run's params with the config's
own `from_flags` (the parser the command line uses), validates it, and runs it into a folder with the function the
command calls. `fsd batch` neither drives the command line nor stubs anything out: a run is a config and a call.

    compare-2d, shuffle-noise, consistency, beta-sweep   fsd2d.study.run_study(config, out, progress)
    gen-3d                                                fsd3d.gen3d.gen_3d(config, out, resume=True, progress)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fsd2d.beta_sweep import BetaSweepConfig
from fsd2d.compare import Compare2DConfig
from fsd2d.consistency import ConsistencyConfig
from fsd2d.errors import InputError
from fsd2d.shuffle_study import ShuffleConfig
from fsd2d.study import run_study
from fsd3d.config import Gen3DConfig
from fsd3d.gen3d import gen_3d

__all__ = ["COMMANDS", "Command"]


def run_gen_3d(config: Gen3DConfig, out: Path, progress: bool) -> dict:
    """gen-3d continues a run's seeds from their checkpoints (a run interrupted earlier goes on where it stopped)."""
    return gen_3d(config, out, resume=True, progress=progress)


@dataclass(frozen=True)
class Command:
    """One sweepable command: its config type (from_flags, flag_names, validate) and its runner into a folder."""

    name: str
    config: type
    run: Callable[[Any, Path, bool], dict]  # (config, out, progress) -> the summary (metrics.json)
    negations: tuple[tuple[str, str], ...] = ()  # (option, the flag that sets it false), for the recorded command line

    def options(self) -> tuple[str, ...]:
        """The options a sweep may set, by their Python names (t_min)."""
        return tuple(self.config.flag_names())

    def build(self, params: dict[str, Any]):
        """The run's config from its params (None: the default), typed and validated: one-line InputError."""
        config = self.config.from_flags(**params)  # typed: '5' for steps is 5, 45 for theta 45.0, 'abc' an error
        config.validate()
        return config

    def args(self, params: dict[str, Any]) -> list[str]:
        """The command line that runs these params (recorded in sweep.json and done.json, for a user to rerun)."""
        negate = dict(self.negations)
        args: list[str] = []
        for name, value in params.items():
            flag = "--" + name.replace("_", "-")
            if value is None:
                continue
            if isinstance(value, bool):
                args.append(flag if value else negate.get(name, "--no-" + name.replace("_", "-")))
            else:
                args += [flag, value if isinstance(value, str) else str(value)]
        return args


COMMANDS = {c.name: c for c in (
    Command("compare-2d", Compare2DConfig, run_study),
    Command("shuffle-noise", ShuffleConfig, run_study),
    Command("consistency", ConsistencyConfig, run_study),
    Command("beta-sweep", BetaSweepConfig, run_study),
    Command("gen-3d", Gen3DConfig, run_gen_3d, negations=(("shared_cameras", "--per-seed-cameras"),)),
)}


def command(name: str) -> Command:
    if name not in COMMANDS:
        raise InputError(f"unknown command {name!r}; allowed: {', '.join(COMMANDS)}")
    return COMMANDS[name]
