"""2D core of the FSD toolkit: priors, schedules, the DDIM / SDS / FSD update rules, metrics and studies.

The public API (everything else may change). Images are channels-first [B, C, H, W], one row per seed:
the samplers return the prior's working space (pixels in [-1, 1] for the built-in priors, latents for
Stable Diffusion); `prior.decode` and the studies' images are float32 in [0, 1].

    import fsd2d

    prior = fsd2d.load_prior("imageset")                # the embedded exact prior: 32 x 32 RGB, no download
    config = fsd2d.Compare2DConfig.from_flags(methods="fsd,sds", seeds="0-3", steps=50)
    result = fsd2d.compare_methods(prior, config)       # DDIM, FSD, SDS; = `fsd compare-2d ... --out X`
    result.images[fsd2d.Method.FSD].shape               # torch.Size([4, 3, 32, 32]), in [0, 1]
    result.metrics["methods"]["fsd"]["mean_psnr_to_ddim"]   # X/metrics.json's number

One sampler contract: `sample(prior, guidance, method, seeds, base)` -> [B, C, h, w] for every Method, so
Method.DDIM and Method.FSD are interchangeable in one call (`base`: a DistillConfig with steps, t range, beta ...):

    guidance = fsd2d.Guidance.from_prompts(prior, "cat", "", scale=1.0)
    base = fsd2d.DistillConfig(steps=50)
    x = {m: fsd2d.sample(prior, guidance, m, seeds=(0, 1), base=base) for m in (fsd2d.Method.DDIM, fsd2d.Method.FSD)}

`base.family` (FamilyOptions) holds the peers' own settings, VSD / ESD's particles among them:
`sample(prior, guidance, Method.VSD, (0, 1), DistillConfig(steps=300, family=FamilyOptions(particles=4)))` gives
[8, C, h, w], each seed's 4 particles (sharing its critic) consecutive.
`ddim_sample` and `distill` are the two loops behind it. A study into its folder, as its command does:
`run_study(ShuffleConfig.from_flags(seeds="0-3"), Path("out"))`; its run.json loads back with
`ShuffleConfig.from_record(...)`. Bad input anywhere: `InputError`, one line, the command's message.

Names resolve on first use (PEP 562), so `import fsd2d` stays light (no torch until a name is used).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public name -> the module that owns it (wiring written out once; a name is imported from there on first use).
_OWNERS = {
    "load_prior": "fsd2d.priors.load",
    "Guidance": "fsd2d.guidance",
    "Method": "fsd2d.sampling",
    "DistillConfig": "fsd2d.sampling",
    "FamilyOptions": "fsd2d.family",
    "sample": "fsd2d.sampling",
    "ddim_sample": "fsd2d.sampling",
    "distill": "fsd2d.sampling",
    "Compare2DConfig": "fsd2d.compare",
    "Compare2D": "fsd2d.compare",
    "compare_methods": "fsd2d.compare",
    "run_methods": "fsd2d.compare",
    "ShuffleConfig": "fsd2d.shuffle_study",
    "ConsistencyConfig": "fsd2d.consistency",
    "BetaSweepConfig": "fsd2d.beta_sweep",
    "run_study": "fsd2d.study",
    "InputError": "fsd2d.errors",
}
__all__ = list(_OWNERS)

if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from fsd2d.beta_sweep import BetaSweepConfig
    from fsd2d.compare import Compare2D, Compare2DConfig, compare_methods, run_methods
    from fsd2d.consistency import ConsistencyConfig
    from fsd2d.errors import InputError
    from fsd2d.family import FamilyOptions
    from fsd2d.guidance import Guidance
    from fsd2d.priors.load import load_prior
    from fsd2d.sampling import DistillConfig, Method, ddim_sample, distill, sample
    from fsd2d.shuffle_study import ShuffleConfig
    from fsd2d.study import run_study


def __getattr__(name: str):
    if name not in _OWNERS:
        raise AttributeError(f"module 'fsd2d' has no attribute {name!r}")
    value = getattr(importlib.import_module(_OWNERS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
