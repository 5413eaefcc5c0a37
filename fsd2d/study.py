"""What every 2D study shares: its configuration (prompt, seeds, schedule, model, ...) and the wiring
from that configuration to a prior, a guidance and a DistillConfig."""
from __future__ import annotations

from dataclasses import dataclass, replace

from fsd2d.errors import InputError
from fsd2d.guidance import Guidance
from fsd2d.priors.base import Prior
from fsd2d.sampling import DistillConfig, check_guidance_scale, check_seeds
from fsd2d.schedule import Anneal, timesteps


@dataclass(frozen=True)
class StudyConfig:
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

    def ddim_grid(self):
        """DDIM's decreasing grid [steps]: the same t(tau) as FSD's annealing (any decreasing grid is a
        valid DDIM grid), so fsd-exact equals DDIM for every --anneal."""
        return timesteps(self.steps, self.t_min, self.t_max, self.anneal)

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


def check_resolution(resolution: int | None) -> None:
    """A given resolution is a positive pixel count (0 is not "the default"); each prior caps it further."""
    if resolution is not None and resolution < 1:
        raise InputError(f"resolution must be a positive number of pixels, got {resolution}")
