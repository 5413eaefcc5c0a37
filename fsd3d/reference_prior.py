"""The embedded view-conditioned analytic prior: the exact posterior over the references' renders per camera.

For a batch of C cameras, the K reference objects of `fsd3d.references` are rendered at every camera
(on the prior's background, white by default) and stacked into ONE image set of C*K images, index
c*K + k = reference k seen from camera c. Sample c's conditioning is a log-prior-weight vector [C*K]
that is -inf outside camera c's block, so `ImageSetPrior.posterior` (the project's one posterior
formula) gives, for sample c,

    p(k | x_t, c) = softmax_k( log pi_k - ||x_t - alpha_t y_{k,c}||^2 / (2 sigma_t^2) ),  y_{k,c} = render of k at c,

i.e. the exact MMSE denoiser of "a reference of this prompt, seen from camera c". Weights:
    cond   (prompt p): uniform over p's variants;
    uncond (""):       equal mixture over the prompts, uniform over each prompt's variants;
    uncond (negative prompt q): uniform over q's variants.
CFG is `fsd2d.guidance.predict_eps` with these per-sample conditionings, as in 2D.

The scene being optimised must be rendered on the same background (`ReferencePrior.background`).
"""
from __future__ import annotations

import torch

from fsd2d.errors import InputError
from fsd2d.guidance import Guidance, check_cfg
from fsd2d.priors.base import ModelError, Prior, match_prompt
from fsd2d.priors.imageset import MAX_RESOLUTION, MIN_RESOLUTION, ImageSetPrior
from fsd3d.cameras import Camera, orbit_camera
from fsd3d.densify import Densify
from fsd3d.priors3d import ScenePrior
from fsd3d.references import DEFAULT_BACKGROUND, REFERENCE_PROMPTS, ReferenceSet

# The camera whose renders make `self.prior` (used only for encode/decode/schedule/latent_shape).
CANONICAL_VIEW = {"elevation": 20.0, "azimuth": 0.0, "radius": 1.65, "fov": 43.0}  # middle of CameraRanges


class ReferencePrior(ScenePrior):
    """The reference objects' exact view-conditioned posterior; working space: pixels in [-1, 1], [3, R, R]."""

    def __init__(
        self,
        prompt: str,
        negative_prompt: str = "",
        resolution: int = 32,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
        background: tuple[float, float, float] = DEFAULT_BACKGROUND,
        render_dtype: torch.dtype = torch.float32,
    ):
        """`render_dtype`: the references' renders (float32: ~2x faster on CPUs; their rounding then depends on
        how many cameras a render call holds, ~1e-6: float64 for comparisons across camera batches)."""
        self.render_dtype = render_dtype
        self.prompt, self.negative_prompt = check_reference_prompt(prompt, allow_empty=False), check_reference_prompt(negative_prompt)
        if isinstance(resolution, bool) or not isinstance(resolution, int) or not (
            MIN_RESOLUTION <= resolution <= MAX_RESOLUTION
        ):
            raise ModelError(f"the reference prior works at {MIN_RESOLUTION}..{MAX_RESOLUTION} pixels, got {resolution!r}")
        if len(background) != 3 or not all(0.0 <= float(b) <= 1.0 for b in background):
            raise InputError(f"background must be an RGB triple in [0, 1], got {background!r}")
        self.background = tuple(float(b) for b in background)
        self.device, self.dtype, self._resolution = torch.device(device), dtype, resolution
        self.references = ReferenceSet()
        canonical = orbit_camera(**CANONICAL_VIEW, width=resolution, height=resolution)
        # The one-view prior: the working space, the schedule and the per-view weights (encode_prompt).
        self.prior: ImageSetPrior = self._set_prior([canonical], schedule=None)
        self._cond_w = self.prior.encode_prompt(self.prompt)  # [1, K] log-weights within one camera's block
        self._uncond_w = self.prior.encode_prompt(self.negative_prompt)  # [1, K]
        self._null_w = self.prior.encode_prompt("")  # [1, K]: the empty prompt (ISM / NFSD, fsd2d.family)

    def _set_prior(self, cameras: list[Camera], schedule) -> ImageSetPrior:
        """ImageSetPrior over the K references at the C cameras: images [C*K, 3, R, R] in [-1, 1], c-major.

        Renders are made at the prior's resolution (cameras of another size are re-rendered at R x R with
        the same fov) in `render_dtype`, then cast to `dtype`.
        """
        out = self.references.render(cameras, self._resolution, self.background, self.device, self.render_dtype)
        k, c = out.rgb.shape[:2]
        images = out.rgb.transpose(0, 1).reshape(c * k, *out.rgb.shape[2:])  # [C*K, 3, R, R], index c*K + k
        labels = self.references.labels.repeat(c)  # [C*K] prompt index
        return ImageSetPrior.from_images(images.to(self.dtype) * 2.0 - 1.0, labels, self.references.prompts,
                                         self.device, self.dtype, schedule)

    shares_cameras = True  # seeds of a run share one camera sequence, so the references render once per step
    densify_grad_threshold = 0.3  # ~ the 90th percentile of the mean screen gradient at 32 px (docs/results/embedded.md, Densification)
    default_densify = Densify.DEFAULT  # measured: +0.7 to +2.7 dB from 300 Gaussians, MCMC +0.1 to +0.5 (docs/results/embedded.md)

    def view_batch(self, cameras: list[Camera], scale: float) -> tuple[Prior, Guidance]:
        """ImageSetPrior over the references rendered at the U distinct cameras among these B, with conditioning
        [B, U*K] that puts each sample in its camera's block. Cameras with equal (elevation, azimuth, radius,
        fov, size) count once (seeds sharing a camera sequence), in order of first appearance, so a batch of
        seeds builds the same image set as each seed alone."""
        check_cfg(scale)
        if not cameras:
            raise InputError("view_batch needs at least one camera")
        keys = [(c.elevation, c.azimuth, c.radius, c.fov, c.width, c.height) for c in cameras]
        blocks: dict[tuple, int] = {}
        index = torch.tensor([blocks.setdefault(k, len(blocks)) for k in keys])  # [B] block of each sample
        prior = self._set_prior([cameras[keys.index(k)] for k in blocks], self.prior.schedule)
        u = len(blocks)
        return prior, Guidance(camera_blocks(self._cond_w, index, u), camera_blocks(self._uncond_w, index, u),
                               float(scale), null=camera_blocks(self._null_w, index, u))

    def describe(self) -> dict:
        return super().describe() | {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "references": list(self.references.names),
            "background": list(self.background),
        }


def camera_blocks(w: torch.Tensor, index: torch.Tensor, u: int) -> torch.Tensor:
    """[B, U*K] log-weights: row b holds the one-camera log-weights w [1, K] in block index[b], -inf elsewhere."""
    k, b = w.shape[1], index.shape[0]
    out = torch.full((b, u, k), -torch.inf, dtype=w.dtype, device=w.device)
    out[torch.arange(b), index.to(w.device)] = w[0]
    return out.reshape(b, u * k)


def check_reference_prompt(prompt: str, allow_empty: bool = True) -> str:
    """The reference prompt `prompt` names, by the one rule (fsd2d.priors.base.match_prompt); '' (all prompts) where
    allowed (the negative prompt)."""
    return match_prompt(prompt, list(REFERENCE_PROMPTS), empty=allow_empty, known_by="the reference prior")
