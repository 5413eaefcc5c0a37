"""What every 2D study shares: its configuration (prompt, seeds, schedule, model, ...), the wiring
from that configuration to a prior, a guidance and a DistillConfig, and `run_study`, the one runner of a
study into its output folder (what `fsd compare-2d`, `shuffle-noise`, `consistency`, `beta-sweep` and
`fsd batch` call).

    config = Compare2DConfig.from_flags(seeds="0-3", methods="fsd,sds", steps=50)   # the command's options
    summary = run_study(config, Path("out"))                                        # = metrics.json
    Compare2DConfig.from_record(read_object(Path("out/run.json"))) == config         # True
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import ClassVar, TypeVar

from fsd2d.errors import InputError
from fsd2d.flags import to_enum, to_seeds
from fsd2d.folders import Layout, claim
from fsd2d.guidance import Guidance
from fsd2d.io import check_output_dir
from fsd2d.records import from_jsonable, typed
from fsd2d.priors.base import Prior
from fsd2d.sampling import DistillConfig, check_guidance_scale, check_seeds
from fsd2d.schedule import Anneal

__all__ = ["StudyConfig", "run_study"]

C = TypeVar("C", bound="StudyConfig")


@dataclass(frozen=True)
class StudyConfig:
    """The settings every 2D study shares. Each study's config (compare.Compare2DConfig, ...) adds its own, names
    its output folder (LAYOUT, fsd2d.folders) and runs itself into that folder (`write_study`). The field defaults
    are the commands' defaults (tests/fsd2d/test_api_2d.py holds the CLI to them)."""

    LAYOUT: ClassVar[Layout]  # the study's output folder: its command's name and the files it writes
    NOT_OPTIONS: ClassVar[tuple[str, ...]] = ()  # fields the study fixes itself: not options of its command

    prompt: str = "cat"
    negative_prompt: str = ""
    seeds: tuple[int, ...] = tuple(range(8))
    steps: int = 300
    cfg: float | None = None  # None -> the prior's default (1 for analytic priors, 7.5 for Stable Diffusion)
    beta: float = 1.0  # FSD's noise blend; SDS always uses beta = 0
    t_min: int = 20
    t_max: int = 980
    anneal: Anneal = Anneal.LINEAR
    lr: float | None = None  # Adam; None -> 2.5 / steps
    model: str = "imageset"  # built-in prior name, local diffusers folder or hub id (see priors.load)
    device: str = "auto"
    dtype: str = "auto"
    resolution: int | None = None  # None -> the prior's native resolution

    @classmethod
    def from_flags(cls: type[C], **flags) -> C:
        """This config from its command's options by their Python names (`--t-min 20` is t_min=20; not out and
        progress), each typed or as the command line's text: seeds '0-3' or '0,2,5', enum values ('sqrt'), comma
        lists ('fsd,sds', '0,0.5,1'), numbers as text ('5'). Options not given, or None, take the field defaults,
        which are the command's; an unknown option is an InputError.
        Text that does not parse: the command's one-line InputError (fsd2d.flags). Nothing is validated yet
        (`validate`, or run_study, does that)."""
        given = {k: v for k, v in flags.items() if v is not None}
        unknown = sorted(set(given) - set(cls.flag_names()) - {f.name for f in fields(cls)})
        if unknown:
            raise InputError(f"{cls.LAYOUT.command} has no option {', '.join('--' + k.replace('_', '-') for k in unknown)}")
        config = cls(**cls.fields_from_flags(given))
        return typed(config)  # each value of its field's type

    @classmethod
    def fields_from_flags(cls, flags: dict) -> dict:
        """The dataclass fields from `flags` (a fresh dict: converted in place); each study adds its own options."""
        if "seeds" in flags:
            flags["seeds"] = to_seeds(flags["seeds"])
        if "anneal" in flags:
            flags["anneal"] = to_enum(flags["anneal"], Anneal, "--anneal")
        return flags

    @classmethod
    def from_record(cls: type[C], record: dict) -> C:
        """The config a study's run.json (fsd2d.io.run_record) was written from, nested types typed again:
        `Compare2DConfig.from_record(read_object(out / "run.json"))` equals the config that made `out`.
        Another study's record, or a config with fields this one lacks: InputError."""
        command, given = record.get("command"), record.get("config")
        if command != cls.LAYOUT.command:
            raise InputError(f"a run.json of {command!r} does not load into {cls.__name__} (it takes "
                             f"{cls.LAYOUT.command!r} records)")
        if not isinstance(given, dict):
            raise InputError(f"this run.json has no config object (got {type(given).__name__})")
        return from_jsonable(cls, given, "run.json config")

    @classmethod
    def flag_names(cls) -> tuple[str, ...]:
        """The options `from_flags` takes, by their Python names: the command's (what a sweep's params name)."""
        return tuple(f.name for f in fields(cls) if f.name not in cls.NOT_OPTIONS)

    def write_study(self, prior: Prior, out: Path, progress: bool = False) -> dict:
        """Run this study with `prior` and write its folder `out` (LAYOUT); returns the summary (metrics.json).
        Each study's config implements it with its writer (compare.compare_2d, ...)."""
        raise NotImplementedError(f"{type(self).__name__} is not a study of its own")

    def validate(self) -> None:
        """Check everything that needs no prior, before any loading or work."""
        check_seeds(self.seeds)
        self.distill_base()
        check_guidance_scale(self.cfg)
        check_resolution(self.resolution)
        from fsd2d.priors.load import check_prompts

        check_prompts(self.model, self.prompt, self.negative_prompt)

    def distill_base(self) -> DistillConfig:
        """The DistillConfig every method of the study starts from (Method.config), Adam's learning rate written
        out (None means ADAM_TOTAL_LR / steps): what runs is what run.json records."""
        base = DistillConfig(steps=self.steps, beta=self.beta, anneal=self.anneal, t_min=self.t_min, t_max=self.t_max,
                             lr=self.lr)
        return replace(base, lr=base.adam_lr)

    def cfg_for(self, prior: Prior) -> float:
        return prior.default_cfg if self.cfg is None else self.cfg

    def guidance(self, prior: Prior) -> Guidance:
        return Guidance.from_prompts(prior, self.prompt, self.negative_prompt, self.cfg_for(prior))

    def resolved(self, prior: Prior) -> "StudyConfig":
        """This config with what it leaves to the prior filled in: the CFG scale, Adam's learning rate, the
        resolution (what run.json's `resolved` records: the values used)."""
        return replace(self, cfg=self.cfg_for(prior), lr=self.distill_base().lr, resolution=prior.resolution)

    def run_extras(self, prior: Prior, methods: dict[str, DistillConfig] | None = None) -> dict:
        """run.json's entries beside the config as given: the prior, the resolved config, the device and dtype used,
        and each method's DistillConfig (noise blend, timesteps, optimiser, rule) under the name it is shown by."""
        out = {"prior": prior.describe(), "resolved": self.resolved(prior),
               "device": str(prior.device), "dtype": str(prior.dtype).removeprefix("torch.")}
        return out | ({"methods": methods} if methods else {})

    def load_prior(self) -> Prior:
        from fsd2d.priors.load import load_prior

        return load_prior(self.model, self.device, self.dtype, self.resolution)


def run_study(config: StudyConfig, out: Path, progress: bool = False, *, prior: Prior | None = None) -> dict:
    """Run a 2D study into its folder `out`: what its command and `fsd batch` call. Validates everything that
    needs no prior (the settings, and `out`: new, or the study's own earlier output, fsd2d.folders.claim) before
    loading the prior (config.load_prior(), unless `prior` is given), then runs and writes (config.write_study).
    Returns the summary, metrics.json's content; bad input: a one-line InputError, nothing written."""
    config.validate()
    claim(out, config.LAYOUT)
    check_output_dir(out)
    prior = config.load_prior() if prior is None else prior
    return config.write_study(prior, out, progress=progress)


def check_resolution(resolution: int | None) -> None:
    """A given resolution is a positive pixel count (0 is not "the default"); each prior caps it further."""
    if resolution is not None and resolution < 1:
        raise InputError(f"resolution must be a positive number of pixels, got {resolution}")
