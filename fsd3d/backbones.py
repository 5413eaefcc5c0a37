"""What gen-3d runs on each backbone when the user gives no flag: one `Defaults3D` per profile, each value with
its source beside it.

Profiles (`--defaults`, otherwise the prior's own, `ScenePrior.defaults`):
- EMBEDDED: tuned on the embedded 32 px priors (references, references-local) and kept for the models trained on
  their renders (tiny-sd-objects, tiny-mvdream), so that every number the docs quote for them stays the default
  command's; measured here, sources in docs/concepts/profiles.md;
- STABLE_DIFFUSION: Stable Diffusion 2.1 base at 512 px: the 3DGS settings of DreamGaussian's text-to-3D stage 1
  (dreamgaussian/dreamgaussian configs/text.yaml and gs_renderer.py) and the authors' own 3D settings (their
  successor code base, runjie-yan/ConsistentFlowDistillation configs/cfd/sd-stage1.yaml: guidance, timesteps,
  optimiser, cameras);
- MVDREAM: MVDream at 256 px: DreamGaussian's configs/text_mv.yaml for the Gaussians, the authors'
  configs/cfd/mvdream-stage1.yaml (= MVDream-threestudio's cameras, guidance 50 and negative prompt) for the rest;
- SD3: Stable Diffusion 3 / 3.5 at 512 px: DreamGaussian's Gaussians as for SD, RFDS' SD3 3D settings
  (yangxiaofeng/rectified_flow_prior configs/rfds_sd3.yaml: guidance, negative prompt, cameras, optimiser, 512 px
  renders) and the FSD authors' annealing (RFDS draws t uniformly in [0.3, 0.98] of the scheduler's descending
  table, sigma 0.06-0.88; FSD anneals from high noise down, as on SD);
- SDXL: the SD profile (no public 3D configuration for SDXL exists that we know of) at 512 px: SDXL's own 1024 px
  would quadruple every 3D step;
- FLUX (Flux.1 and FLUX.2 klein): the SD3 profile with the model's own guidance, the prior's default (FLUX.1-dev:
  FluxPipeline's embedded 3.5, a guidance-distilled model is not run with CFG 100; klein base: Flux2KleinPipeline's
  real CFG 4) and no negative prompt (FLUX.1-dev takes none without true CFG, klein's pipeline always uses "");
  no public 3D configuration for Flux exists that we know of.
What a profile cannot take from a model that was trained here (their CFG, negative prompt, cameras and background
belong to the trained world) the trained models' scene priors keep as their own (fsd3d.settings.TRAINED_WORLD).
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, replace

from fsd2d.priors.layouts import Backbone
from fsd2d.schedule import Anneal
from fsd3d.cameras import CameraRanges


class Profile(str, enum.Enum):
    EMBEDDED = "embedded"
    STABLE_DIFFUSION = "sd"
    MVDREAM = "mvdream"
    SD3 = "sd3"
    SDXL = "sdxl"
    FLUX = "flux"


class Weighting(str, enum.Enum):
    """w(t) multiplying the distillation gradient eps_hat - eps (Eq. 15)."""

    ONE = "one"  # w = 1
    SIGMA_ALPHA = "sigma-alpha"  # w = sigma_t / alpha_t: the step of Eq. 12-13, Delta(sigma/alpha) per unit of t


class Background(str, enum.Enum):
    """The colour the scene is rendered on (and the references / training renders were)."""

    WHITE = "white"
    BLACK = "black"
    RANDOM = "random"  # white or black, one draw per view and step from the seed's noise generator


@dataclass(frozen=True)
class LearningRates:
    """Adam learning rates per Gaussian parameter group (the means' is the initial one of its decay)."""

    means: float = 2e-3
    log_scales: float = 1e-2
    quats: float = 5e-3
    opacity_logits: float = 5e-2
    sh0: float = 2e-2
    sh_rest: float = 2e-3


def spacing_scale(n: int) -> float:
    """std / radius of n Gaussians uniform in a ball when each has the mean spacing of the points as its std,
    (4 pi / 3 n)^(1/3): 3DGS' initialisation (each Gaussian's scale = its distance to its nearest neighbours,
    `create_from_pcd`) in closed form; 0.094 for DreamGaussian's 5000."""
    return (4.0 * math.pi / (3.0 * n)) ** (1.0 / 3.0)


@dataclass(frozen=True)
class Defaults3D:
    steps: int
    num_gaussians: int
    init_radius: float  # the initial ball
    init_scale: float  # each initial Gaussian's std-dev, as a fraction of init_radius
    init_opacity: float
    lr: LearningRates
    means_lr_final: float  # the means' learning rate decays exponentially to this fraction at the last step
    adam_betas: tuple[float, float]  # Adam's eps is every profile's 1e-15: fsd2d.sampling.ADAM_EPS
    weighting: Weighting
    anneal: Anneal
    cfg: float | None  # standard form (fsd2d.guidance); None: the prior's own default
    negative_prompt: str
    cameras: CameraRanges = field(default_factory=CameraRanges)
    background: Background = Background.WHITE
    clamp_renders: bool = False  # renders clamped to [0, 1] before the VAE encoder (trained on images in range)
    # the default densification's large-Gaussian prune: largest scale > prune_scale3d x the scene scale (0: off)
    prune_scale3d: float = 0.0
    opacity_reg: float = 0.0  # + opacity_reg mean(opacity) + scale_reg mean(scale) per seed and step (MCMC)
    scale_reg: float = 0.0
    resolution: int | None = None  # render side in pixels; None: the prior's own (its native size)


EMBEDDED = Defaults3D(
    steps=150, num_gaussians=1000, init_radius=0.4, init_scale=0.03, init_opacity=0.1, lr=LearningRates(),
    means_lr_final=1.0, adam_betas=(0.0, 0.99),  # the authors' 2D playground optimiser
    weighting=Weighting.ONE, anneal=Anneal.LINEAR, cfg=None, negative_prompt="",
    cameras=CameraRanges(),  # objects filling ~70 % of the frame (fsd3d.cameras.CameraRanges)
)

# MVDream-threestudio's and the authors' negative prompt for MVDream (configs/cfd/mvdream-stage1.yaml)
MVDREAM_NEGATIVE = ("ugly, bad anatomy, blurry, pixelated obscure, unnatural colors, poor lighting, dull, and unclear, "
                    "cropped, lowres, low quality, artifacts, duplicate, morbid, mutilated, poorly drawn face, deformed, "
                    "dehydrated, bad proportions")
# the authors' negative prompt for Stable Diffusion (configs/cfd/sd-stage1.yaml, commit 7af7c8c)
SD_NEGATIVE = ("lack details, ugly, oversmoothed, bad structure, out of focus, blurry, cartoon, oversaturated, foggy, "
               "hazy, bad anatomy, malformed, pixelated obscure, unnatural colors, dull, unclear, lowres, low quality, "
               "deformed, dehydrated")

# DreamGaussian (configs/text.yaml, text_mv.yaml): 500 iterations of stage 1; num_pts 5000 uniform in a ball of
# radius 0.5 (gs_renderer.initialize) at opacity 0.1 (3DGS create_from_pcd: inverse_sigmoid(0.1)) with the
# nearest-neighbour scale (spacing_scale); position_lr 1e-3 -> 2e-5 times its spatial_lr_scale 10
# (create_from_pcd(pcd, 10)): 1e-2 decaying to 2 % of it; feature_lr 0.01, opacity_lr 0.05, scaling_lr 0.005,
# rotation_lr 0.005; sh_rest at feature_lr / 20 (3DGS' training_setup).
DREAMGAUSSIAN_LR = LearningRates(means=1e-2, log_scales=5e-3, quats=5e-3, opacity_logits=5e-2, sh0=1e-2, sh_rest=5e-4)
# gsplat's MCMC trainer (examples/simple_trainer.py with the mcmc strategy): opacity_reg 0.01, scale_reg 0.01
MCMC_REG = 0.01

STABLE_DIFFUSION = Defaults3D(
    steps=500, num_gaussians=5000, init_radius=0.5, init_scale=spacing_scale(5000), init_opacity=0.1,
    lr=DREAMGAUSSIAN_LR, means_lr_final=0.02,
    adam_betas=(0.9, 0.99),  # the authors' 3D optimiser (sd-stage1.yaml: Adam, betas; eps 1e-15 = ADAM_EPS)
    weighting=Weighting.SIGMA_ALPHA,  # the authors' w = sigma_t / alpha_t for SD (docs/concepts/conventions.md)
    anneal=Anneal.AUTHORS_SD,  # sd-stage1.yaml t_scheduler (fsd2d.schedule.KNOTS)
    cfg=71.0,  # sd-stage1.yaml guidance_scale 70 in the "+1" form (eps_c + s (eps_c - eps_u)) = 71 in ours
    negative_prompt=SD_NEGATIVE,
    cameras=CameraRanges(elevation=(0.0, 40.0), radius=(1.3, 1.5), fov=(40.0, 65.0)),  # sd-stage1.yaml data
    background=Background.RANDOM,  # DreamGaussian's invert_bg_prob 0.5 (the authors use a learned environment map)
    clamp_renders=True,  # as DreamGaussian's renderer (gs_renderer.render: image.clamp(0, 1)) and 3DGS'
    prune_scale3d=0.1,  # gsplat's DefaultStrategy default (not measured here: random weights cannot calibrate it)
    opacity_reg=MCMC_REG, scale_reg=MCMC_REG,
)

MVDREAM = Defaults3D(
    steps=500, num_gaussians=5000, init_radius=0.5, init_scale=spacing_scale(5000), init_opacity=0.1,
    lr=DREAMGAUSSIAN_LR, means_lr_final=0.02,
    adam_betas=(0.9, 0.99),  # mvdream-stage1.yaml: AdamW betas [0.9, 0.99]; eps 1e-15 = ADAM_EPS
    weighting=Weighting.ONE,  # the authors' MVDream guidance: w = 1
    anneal=Anneal.AUTHORS_MVDREAM,  # mvdream-stage1.yaml t_scheduler
    cfg=50.0,  # mvdream-stage1.yaml / MVDream-threestudio guidance_scale 50, already our standard form
    negative_prompt=MVDREAM_NEGATIVE,
    # mvdream-stage1.yaml: elevation 0-30, fovy 15-60, camera distance 0.8-1.0 relative: distance = r / tan(fov / 2),
    # so the frame's half-height at the object is 0.8-1.0 whatever the fov
    cameras=CameraRanges(elevation=(0.0, 30.0), radius=(0.8, 1.0), fov=(15.0, 60.0), relative_radius=True),
    background=Background.RANDOM,  # DreamGaussian text_mv.yaml invert_bg_prob 0.5
    clamp_renders=True,  # as DreamGaussian's renderer (gs_renderer.render: image.clamp(0, 1)) and 3DGS'
    prune_scale3d=0.1,  # gsplat's DefaultStrategy default (not measured here: random weights cannot calibrate it)
    opacity_reg=MCMC_REG, scale_reg=MCMC_REG,
)

# RFDS' negative prompt for SD3 (configs/rfds_sd3.yaml prompt_processor.negative_prompt)
SD3_NEGATIVE = "unrealistic, blurry, low quality, oversaturation."

SD3 = Defaults3D(
    steps=500, num_gaussians=5000, init_radius=0.5, init_scale=spacing_scale(5000), init_opacity=0.1,
    lr=DREAMGAUSSIAN_LR, means_lr_final=0.02,
    adam_betas=(0.9, 0.99),  # rfds_sd3.yaml: AdamW betas [0.9, 0.99], eps 1e-15 (= ADAM_EPS)
    weighting=Weighting.ONE,  # RFDS weighs by sigmoid(u), u ~ N(0, 1) drawn per step: 1 on average up to noise
    anneal=Anneal.AUTHORS_SD,  # the FSD authors' SD schedule (fsd2d.schedule.KNOTS): no FSD config for SD3 exists
    cfg=100.0,  # rfds_sd3.yaml guidance_scale 100, diffusers' (standard) form, as ours
    negative_prompt=SD3_NEGATIVE,
    cameras=CameraRanges(elevation=(-10.0, 45.0), radius=(1.0, 1.5), fov=(40.0, 70.0)),  # rfds_sd3.yaml data
    background=Background.RANDOM,  # as the SD profile (RFDS: a learned environment map)
    clamp_renders=True,  # RFDS' encode_images clamps to [0, 1]
    prune_scale3d=0.1,  # gsplat's DefaultStrategy default, as the SD profile
    opacity_reg=MCMC_REG, scale_reg=MCMC_REG,
    resolution=512,  # rfds_sd3.yaml width/height 512 (after 64 px early steps); SD3's own size is 1024
)

SDXL = replace(STABLE_DIFFUSION, resolution=512)  # the SD profile (its sources above) at 512 px
FLUX = replace(SD3, cfg=None, negative_prompt="")  # the SD3 profile with FluxPipeline's guidance (docstring)

# the profile each backbone's folders take (fsd3d.settings.model_profile; fsd2d.priors.diffusers_prior.backbone_of_model)
BACKBONE_PROFILES = {Backbone.STABLE_DIFFUSION: Profile.STABLE_DIFFUSION, Backbone.MVDREAM: Profile.MVDREAM,
                     Backbone.SD3: Profile.SD3, Backbone.SDXL: Profile.SDXL, Backbone.FLUX: Profile.FLUX,
                     Backbone.FLUX2_KLEIN: Profile.FLUX}

PROFILES = {Profile.EMBEDDED: EMBEDDED, Profile.STABLE_DIFFUSION: STABLE_DIFFUSION, Profile.MVDREAM: MVDREAM,
            Profile.SD3: SD3, Profile.SDXL: SDXL, Profile.FLUX: FLUX}


def defaults(profile: Profile, world: dict | None = None) -> Defaults3D:
    """The defaults a run of `profile` takes, with what a trained model's world fixes ({field: value})."""
    return replace(PROFILES[profile], **(world or {}))
