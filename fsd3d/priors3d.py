"""Priors seen from the 3D loop: for a batch of cameras, a 2D prior and the guidance to use with it.

The 3D loop (Eq. 14-15) renders C views, encodes them with `prior.encode`, adds the noise eps(c) and
calls `fsd2d.guidance.predict_eps(prior2d, x_t, t, guidance)` with what `view_batch(cameras)` returns:
the same 2D priors and the same CFG helper as the 2D studies. Only the conditioning depends on the view:
- Stable Diffusion: the prompt with a view suffix ("front view", "side view", "back view") per camera;
- the embedded reference prior (fsd3d.references): the exact posterior over the references' renders
  at each camera;
- MVDream (fsd3d.mvdream_prior): each sampled camera becomes its 4-view set (`expand_cameras`) and the
  cameras are bound to the multi-view prior.
"""
from __future__ import annotations

import abc

import torch

from fsd2d.guidance import Guidance, check_cfg
from fsd2d.priors.base import Prior
from fsd3d.backbones import STABLE_DIFFUSION
from fsd3d.cameras import Camera
from fsd3d.densify import Densify


class ScenePrior(abc.ABC):
    """A text-to-image prior lifted to 3D: a 2D `Prior` for the working space plus view-dependent guidance."""

    prior: Prior  # encode / decode / schedule / latent_shape / resolution of the working space
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)  # RGB the scene is rendered on (white)
    shares_cameras: bool = False  # default for Train3DConfig.shared_cameras: one camera sequence for all seeds
    # default for DensifyConfig.grad_threshold (gsplat's grow_grad2d): the mean screen-space gradient norm, in
    # gsplat's [-1, 1] normalisation, of the loss grad_z . z (grad_z = (eps_hat - eps) / C), above which a
    # Gaussian is split or duplicated; its scale depends on the working space, so each prior sets it
    densify_grad_threshold: float = 2e-3
    # default for DensifyConfig.strategy: MCMC needs no gradient-scale threshold, so it suits priors whose
    # threshold has not been measured (Stable Diffusion: random weights say nothing about real gradients)
    default_densify: Densify = Densify.MCMC
    compiled: bool = False  # the prior's networks run through torch.compile (CUDA graphs need step marks)
    made_for: dict | None = None  # what fsd3d.run.load_scene_prior loaded it for (run_3d checks a config against it)
    views_per_camera: int = 1  # views `expand_cameras` makes of each sampled camera (MVDream: its 4-view set)
    cameras_per_step: int = 2  # default for Train3DConfig.cameras_per_step (cameras sampled per seed and step)
    # the ground truth a scene is scored against (fsd3d.metrics3d): the embedded reference objects, for the
    # embedded priors and the models trained on their renders (fsd train-prior objects / objects-mv); else None
    references = None  # fsd3d.references.ReferenceSet | None
    @property
    def resolution(self) -> int:
        """Side of the rendered RGB images, in pixels."""
        return self.prior.resolution

    @property
    def default_cfg(self) -> float:
        return self.prior.default_cfg

    def background_tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The background colour as a float32 tensor [3] in [0, 1]."""
        return torch.tensor(self.background, dtype=torch.float32, device=device)

    def expand_cameras(self, cameras: list[Camera]) -> list[Camera]:
        """The views rendered for these sampled cameras, `views_per_camera` per camera, those of one camera
        consecutive (the loop's only camera hook). Default: the cameras themselves."""
        return cameras

    @abc.abstractmethod
    def view_batch(self, cameras: list[Camera], scale: float) -> tuple[Prior, Guidance]:
        """The 2D prior and guidance (conditioning [C, ...]) for these C cameras."""

    def describe(self) -> dict:
        return {"class": type(self).__name__, "prior": self.prior.describe()}


def view_suffix(azimuth_deg: float) -> str:
    """The peers' view-dependent prompt suffix: front within 45 degrees of azimuth 0, back within 45 of 180."""
    a = (azimuth_deg + 180.0) % 360.0 - 180.0
    if abs(a) <= 45.0:
        return "front view"
    if abs(a) >= 135.0:
        return "back view"
    return "side view"


class StableDiffusionScenePrior(ScenePrior):
    """Stable Diffusion (and SD3 and the other single-image backbones) with view-dependent prompts ('<prompt>, side
    view'); the negative prompt is shared. On CUDA, a prior that can (SD3) frees its text encoders once the prompts
    are encoded.

    Defaults: fsd3d.backbones.STABLE_DIFFUSION (CFG 71, the authors' 70 in the +1 form, and the rest with sources).
    """

    @property
    def default_cfg(self) -> float:
        """What a profile without a CFG (--defaults embedded; Flux's) takes: the SD profile's 71 on Stable
        Diffusion 1 / 2, else the backbone's own pipeline default (SD3 7, SDXL 5, FLUX.1-dev 3.5 embedded)."""
        from fsd2d.priors.diffusers_prior import StableDiffusionPrior

        return STABLE_DIFFUSION.cfg if type(self.prior) is StableDiffusionPrior else self.prior.default_cfg

    def __init__(self, prior: Prior, prompt: str, negative_prompt: str = "", view_dependent: bool = True,
                 compile: bool = False):
        self.prior, self.prompt, self.negative_prompt, self.view_dependent = prior, prompt, negative_prompt, view_dependent
        prior.speed_up(compile)  # channels-last on CUDA; torch.compile of the UNet and VAE encoder if asked
        self.compiled = compile
        suffixes = ("front view", "side view", "back view") if view_dependent else ("",)
        if view_dependent:  # the prompt as typed first: a trained model's error then quotes exactly that
            prior.encode_prompt(prompt)
        self._cond = {s: prior.encode_prompt(f"{prompt}, {s}" if s else prompt) for s in suffixes}
        self._uncond = prior.encode_prompt(negative_prompt)
        self._null = self._uncond if negative_prompt == "" else prior.encode_prompt("")  # ISM / NFSD (fsd2d.family)
        release = getattr(prior, "release_text_encoders", None)  # SD3 (T5-XXL alone ~9 GB): every prompt is encoded
        if release is not None and prior.device.type == "cuda":
            release()

    def view_batch(self, cameras: list[Camera], scale: float) -> tuple[Prior, Guidance]:
        check_cfg(scale)
        keys = [view_suffix(c.azimuth) if self.view_dependent else "" for c in cameras]
        cond = torch.cat([self._cond[k] for k in keys])  # [C, 77, D]
        return self.prior, Guidance(cond, self._uncond, scale, null=self._null)

    def describe(self) -> dict:
        return super().describe() | {"prompt": self.prompt, "negative_prompt": self.negative_prompt,
                                     "view_dependent": self.view_dependent, "compiled": self.compiled}
