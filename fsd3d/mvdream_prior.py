"""MVDream lifted to 3D: every sampled camera becomes a 4-view set, and the cameras condition the multi-view UNet.

Per step and seed the loop (fsd3d.train) samples C cameras and `expand_cameras` turns each into its set at
azimuths a, a+90, a+180, a+270 (shared elevation, distance and field of view), so it renders, encodes and
noises 4C views (world-map noise per view, Eq. 16, as for any prior). `view_batch` converts the S*4C cameras
to MVDream's convention (fsd2d.priors.mvdream.viewmats_to_mvdream) and binds them to the per-view prior
(`MVDreamViewPrior.bind`), so ONE guided call (fsd2d.guidance.predict_eps, [uncond; cond] stacked) denoises
all views of all seeds, each set attending across its 4 views. The prompt has no view suffix (MVDream's
cameras say the view; MVDream-threestudio: view_dependent_prompting False).

Default CFG 50 in our standard form eps_u + s (eps_c - eps_u): MVDream-threestudio's multiview guidance
(guidance_scale 50, combined as noise_pred_uncond + scale * (noise_pred_text - noise_pred_uncond)) is
already the standard form, so s = 50 (no +1). Default render size: 256 px (the model's views).
"""
from __future__ import annotations

import copy

import torch

from fsd2d.guidance import Guidance, check_cfg
from fsd2d.errors import InputError
from fsd2d.priors.base import Prior
from fsd2d.priors.mvdream import MVDreamPrior, MVDreamViewPrior, viewmats_to_mvdream
from fsd3d.cameras import Camera, orbit_camera
from fsd3d.backbones import MVDREAM
from fsd3d.densify import Densify
from fsd3d.priors3d import ScenePrior


def view_set(camera: Camera, views: int = 4) -> list[Camera]:
    """The `views` cameras at azimuths a + k 360/views (wrapped to [-180, 180)), with camera's elevation,
    radius, fov and image size."""
    out = []
    for k in range(views):
        azimuth = (camera.azimuth + k * 360.0 / views + 180.0) % 360.0 - 180.0
        out.append(orbit_camera(camera.elevation, azimuth, camera.radius, camera.fov, camera.width, camera.height,
                                dtype=camera.viewmat.dtype, device=camera.viewmat.device))
    return out


class MVDreamScenePrior(ScenePrior):
    """MVDream in the 3D loop; working space: one view's VAE latent [4, R/8, R/8] (MVDreamViewPrior)."""

    default_cfg = MVDREAM.cfg  # the profile's (MVDream-threestudio's 50, our standard form)
    default_densify = Densify.MCMC  # as Stable Diffusion: no measured screen-gradient threshold for real weights
    cameras_per_step = 1  # one 4-view set per seed and step, as MVDream-threestudio's 4-view batches

    def __init__(self, prior: MVDreamPrior | MVDreamViewPrior, prompt: str, negative_prompt: str = "",
                 compile: bool = False):
        view = copy.copy(prior.view if isinstance(prior, MVDreamPrior) else prior)  # shares the networks
        view.cameras = None  # unbound: only the priors view_batch returns know their cameras
        self.prior: MVDreamViewPrior = view
        self.views_per_camera = view.views
        self.prompt, self.negative_prompt = prompt, negative_prompt
        view.speed_up(compile)
        self.compiled = compile
        self._cond = view.encode_prompt(prompt)  # [1, 77, D]
        self._uncond = view.encode_prompt(negative_prompt)
        self._null = self._uncond if negative_prompt == "" else view.encode_prompt("")  # ISM / NFSD (fsd2d.family)

    def expand_cameras(self, cameras: list[Camera]) -> list[Camera]:
        return [v for c in cameras for v in view_set(c, self.views_per_camera)]

    def view_batch(self, cameras: list[Camera], scale: float) -> tuple[Prior, Guidance]:
        """The per-view prior bound to these cameras (whole 4-view sets, consecutive) and the prompt guidance."""
        check_cfg(scale)
        if not cameras or len(cameras) % self.views_per_camera:
            raise InputError(f"MVDream needs whole sets of {self.views_per_camera} views, got {len(cameras)} cameras")
        viewmats = torch.stack([c.viewmat for c in cameras])  # [N, 4, 4] OpenCV world-to-camera
        bound = self.prior.bind(viewmats_to_mvdream(viewmats))
        return bound, Guidance(self._cond, self._uncond, float(scale), null=self._null)

    def describe(self) -> dict:
        return super().describe() | {"prompt": self.prompt, "negative_prompt": self.negative_prompt,
                                     "views_per_camera": self.views_per_camera, "compiled": self.compiled}
