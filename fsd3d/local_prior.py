"""`--model references-local`: the embedded 3D prior with a LOCAL denoiser, for the paper's Fig. 6.

The exact reference prior (`fsd3d.reference_prior`) returns whole reference renders: its posterior is
global, so the noise's local texture cannot show through, and neither can the paper's explanation of
Fig. 6 (with one noise for all views, the same noise texture is asked of different surface points, which
leaves holes). This prior keeps the same references and cameras but, at each camera c, denoises with the
2D `patches` prior (`fsd2d.priors.patches.PatchPrior`, the equivariant local score machine) built from
the K references' renders at c:

    E[x_0(p) | x_t, c] = sum_j w_j(p) centre(P_j^c),
    w_j(p) = softmax_j( log pi_j - ||N_p(x_t) - alpha_t P_j^c||^2 / (2 sigma_t^2) ),

P_j^c: k x k patches of the renders at camera c. Two banks (`shift`):

* shift = None: the 2D `patches` prior itself (bank positions anywhere in the renders, drawn once with
  BANK_SEED): fully translation equivariant, as in Fig. 5. Measured: it knows textures but not where the
  object is. DDIM on it at one camera fills the whole frame with a mosaic of cap, stem and background
  (no object on a background), and `fsd gen-3d --model references-local` with it ended with EMPTY scenes
  (holes 1.0 on 4 of 4 mushroom seeds, 150 steps): no scene can show a mosaic consistently in every view.
* shift = d (default 1): the neighbourhood of pixel p is compared with the k x k patches of the renders
  centred within d pixels of p (|dy|, |dx| <= d; positions beyond the border repeat the border's patch).
  Equivariant to shifts of up to d pixels (the noise's local texture can move the result's texture by
  that much) while the object stays where the references put it. This is the "local score machine" of
  Kamb & Ganguli with a small window of positions; d -> R gives back the equivariant prior (with every
  patch in the bank).
Patch size by timestep as the 2D `patches` prior: k = 9 for t >= 600, 7 for t >= 250, 5 below.

Conditioning: as the exact prior, one block of log-weights per distinct camera of the batch, -inf outside
the sample's block ([B, U*M], M bank entries per camera: M = K references with a shift window, M = bank
patches without); `CameraBlocksPrior` sends each sample to its camera's prior. Working space, background
and metrics: those of `ReferencePrior`.
"""
from __future__ import annotations

import torch

import torch.nn.functional as F

from fsd2d.errors import InputError
from fsd2d.priors.base import PixelPrior
from fsd2d.priors.imageset import prompt_log_weights
from fsd2d.priors.patches import DEFAULT_PATCH_SIZES, PatchPrior, PatchSizes, check_patch_sizes
from fsd2d.schedule import NoiseSchedule, scaled_linear_schedule
from fsd3d.cameras import Camera
from fsd3d.reference_prior import ReferencePrior

PATCHES_PER_PROMPT = 512  # shift None: bank patches per prompt and camera (of 5 renders x 24 x 24 positions)
DEFAULT_SHIFT = 1  # pixels: how far from p the patches compared with p's neighbourhood may be centred


class ShiftWindowPrior(PixelPrior):
    """Posterior mean when pixel p sees only its k x k neighbourhood and that neighbourhood is a patch of
    one of the K images centred within `shift` pixels of p (all such (image, shift) pairs equally likely
    a priori, image weights pi_k from the conditioning [B, K]):

        w_{k,s}(p) = softmax_{k,s}( log pi_k - ||N_p(x_t) - alpha_t P_k(p + s)||^2 / (2 sigma_t^2) ),
        E[x_0(p) | x_t] = sum_{k,s} w_{k,s}(p) y_k(p + s),     |s_y|, |s_x| <= shift.

    images y_k [K, 3, R, R] in [-1, 1]; working space pixels in [-1, 1]. N_p(x_t): reflect padding at the
    border (as the 2D `patches` prior); the images continue beyond their border with their border pixels
    (the references' white background). ||N_p - a P||^2 = |N_p|^2 - 2a N_p.P + a^2 |P|^2: the first term
    does not depend on (k, s); the other two are k x k box sums of x_t(q) y_k(q + s) and y_k(q + s)^2, so a
    call costs O(B K (2 shift + 1)^2 R^2 k^2) with no patch tensor."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, prompts: list[str], shift: int = DEFAULT_SHIFT,
                 patch_sizes: PatchSizes = DEFAULT_PATCH_SIZES, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float64, compute_dtype: torch.dtype = torch.float32,
                 schedule: NoiseSchedule | None = None):
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise InputError(f"images must be [K, 3, R, R], got {list(images.shape)}")
        if isinstance(shift, bool) or not isinstance(shift, int) or shift < 0:
            raise InputError(f"shift must be an int >= 0 (pixels), got {shift!r}")
        self.device, self.dtype, self.compute_dtype = torch.device(device), dtype, compute_dtype
        self.schedule = schedule or scaled_linear_schedule()
        self._resolution = r = images.shape[-1]
        self.patch_sizes = check_patch_sizes(patch_sizes, r)
        self.shift, self.prompts, self.labels = shift, [p.lower() for p in prompts], labels.long().cpu()
        y = images.to(self.device, compute_dtype)  # [K, 3, R, R]
        d = shift
        self._centres = F.pad(y, (d, d, d, d), mode="replicate")  # [K, 3, R+2d, R+2d]: y_k(p + s) at [p + d + s]
        self._ext, self._half_sq = {}, {}
        for k in sorted({k for _, k in self.patch_sizes}):
            e = k // 2 + d
            ext = F.pad(y, (e, e, e, e), mode="replicate")  # [K, 3, R+2h+2d, R+2h+2d]
            self._ext[k] = ext
            self._half_sq[k] = 0.5 * _box_sum((ext**2).sum(1), k)  # [K, R+2d, R+2d]: |P_k(p + s)|^2 / 2

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """Log prior weights over the K images, [1, K]: uniform over the prompt's (all prompts equally for "")."""
        return prompt_log_weights(prompt, self.labels, self.prompts).to(self.device, self.dtype)[None]

    # k [B] by timestep and eps from the posterior mean: the 2D `patches` prior's own methods (they read only
    # patch_sizes, schedule, dtype, device and posterior_mean), not copies of them
    patch_size = PatchPrior.patch_size
    eps = PatchPrior.eps

    def posterior_mean(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """E[x_0 | x_t] [B, 3, R, R] for x_t [B, 3, R, R], t [B], cond [B, K] (log pi_k)."""
        b, r, d = x_t.shape[0], self._resolution, self.shift
        if tuple(cond.shape) != (b, len(self.labels)):
            raise InputError(f"cond must be [B, K] = [{b}, {len(self.labels)}], got {list(cond.shape)}")
        alpha, sigma = self.schedule.alpha_sigma(t, self.dtype, self.device)
        cdt = self.compute_dtype
        scale, quad = (alpha / sigma**2).view(b, 1, 1).to(cdt), (alpha**2 / sigma**2).view(b, 1, 1).to(cdt)
        sizes, support = self.patch_size(t), torch.isfinite(cond)
        _, support_id = torch.unique(support.cpu(), dim=0, return_inverse=True)
        groups = torch.stack([sizes, support_id], 1)  # [B, 2]
        out = torch.empty(b, 3, r * r, dtype=cdt, device=self.device)
        for key in torch.unique(groups, dim=0):
            rows = torch.nonzero((groups == key).all(1)).flatten().to(self.device)
            k, cols = int(key[0]), torch.nonzero(support[rows[0]]).flatten()
            h, m = k // 2, len(cols)
            xp = F.pad(x_t[rows].to(cdt), (h, h, h, h), mode="reflect")  # [n, 3, R+2h, R+2h]
            logw = cond[rows][:, cols].to(cdt)[:, :, None, None]  # [n, m, 1, 1]
            ext, hs, cen = self._ext[k][cols], self._half_sq[k][cols], self._centres[cols]
            side = r + 2 * h
            logits, centres = [], []
            for sy in range(2 * d + 1):
                for sx in range(2 * d + 1):
                    prod = torch.einsum("nchw,mchw->nmhw", xp, ext[:, :, sy:sy + side, sx:sx + side])
                    cross = _box_sum(prod.reshape(-1, side, side), k).view(len(rows), m, r, r)  # N_p . P_k(p+s)
                    logits.append(logw + scale[rows, :, None] * cross
                                  - quad[rows, :, None] * hs[None, :, sy:sy + r, sx:sx + r])  # [n, m, R, R]
                    centres.append(cen[:, :, sy:sy + r, sx:sx + r])  # [m, 3, R, R]
            w = torch.softmax(torch.cat(logits, 1), dim=1)  # [n, S*m, R, R]
            out[rows] = torch.einsum("nmhw,mchw->nchw", w, torch.cat(centres, 0)).reshape(len(rows), 3, r * r)
        return out.view(b, 3, r, r).to(self.dtype)

    def describe(self) -> dict:
        return super().describe() | {"shift": self.shift, "patch_sizes": [list(p) for p in self.patch_sizes]}


def _box_sum(img: torch.Tensor, k: int) -> torch.Tensor:
    """k x k box sums (valid positions) of img [N, H, W] -> [N, H-k+1, W-k+1]."""
    return F.avg_pool2d(img[:, None], k, stride=1)[:, 0] * (k * k)


class CameraBlocksPrior(PixelPrior):
    """U per-camera priors seen as one: conditioning [B, U*M] with exactly one finite block per sample.

    eps(x_t, t, cond): sample b goes to the prior of its finite block u with cond[b, u*M:(u+1)*M]."""

    def __init__(self, priors: list[PatchPrior | ShiftWindowPrior]):
        if not priors:
            raise InputError("CameraBlocksPrior needs at least one camera's prior")
        self.priors = priors
        first = priors[0]
        self.device, self.dtype, self.schedule = first.device, first.dtype, first.schedule
        self._resolution = first.resolution
        self.block = first.encode_prompt("").shape[1]  # M

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """Log-weights [1, M] over one camera's bank (the same for every camera: same bank positions)."""
        return self.priors[0].encode_prompt(prompt)

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b, m, u = x_t.shape[0], self.block, len(self.priors)
        if tuple(cond.shape) != (b, u * m):
            raise InputError(f"cond must be [B, U*M] = [{b}, {u * m}], got {list(cond.shape)}")
        finite = torch.isfinite(cond.view(b, u, m)).any(2)  # [B, U]
        if not bool((finite.sum(1) == 1).all()):
            raise InputError("each sample's conditioning must select exactly one camera block")
        block = finite.float().argmax(1)  # [B]
        out = torch.empty_like(x_t)
        for k in range(u):
            sel = torch.nonzero(block == k).flatten()
            if len(sel):
                out[sel] = self.priors[k].eps(x_t[sel], t[sel], cond[sel, k * m:(k + 1) * m])
        return out

    def describe(self) -> dict:
        return {"class": type(self).__name__, "cameras": len(self.priors), "per_camera": self.priors[0].describe()}


class LocalReferencePrior(ReferencePrior):
    """The references with a local (patch) posterior per camera; everything else as `ReferencePrior`."""

    def __init__(self, prompt: str, negative_prompt: str = "", *, patch_sizes: PatchSizes = DEFAULT_PATCH_SIZES,
                 patches_per_prompt: int = PATCHES_PER_PROMPT, compute_dtype: torch.dtype = torch.float32,
                 shift: int | None = DEFAULT_SHIFT, **reference_prior):
        """`reference_prior`: ReferencePrior's resolution, device, dtype, background and render_dtype."""
        self.patch_sizes, self.patches_per_prompt, self.compute_dtype = patch_sizes, patches_per_prompt, compute_dtype
        self.shift = shift
        super().__init__(prompt, negative_prompt, **reference_prior)

    def _set_prior(self, cameras: list[Camera], schedule: NoiseSchedule | None) -> CameraBlocksPrior:
        """One local prior per camera over the K references' renders there (images [K, 3, R, R] in [-1, 1])."""
        out = self.references.render(cameras, self._resolution, self.background, self.device, self.render_dtype)
        if self.shift is not None:
            return CameraBlocksPrior([ShiftWindowPrior(out.rgb[:, c].to(self.dtype) * 2.0 - 1.0, self.references.labels,
                                                       self.references.prompts, self.shift, self.patch_sizes,
                                                       self.device, self.dtype, self.compute_dtype, schedule)
                                      for c in range(out.rgb.shape[1])])
        priors = [PatchPrior.from_images(out.rgb[:, c].to(self.dtype) * 2.0 - 1.0, self.references.labels,
                                         self.references.prompts, self.patch_sizes, self.patches_per_prompt,
                                         self.device, self.dtype, self.compute_dtype, schedule)
                  for c in range(out.rgb.shape[1])]
        return CameraBlocksPrior(priors)

    def describe(self) -> dict:
        return super().describe() | {"denoiser": "local patches per camera", "shift": self.shift,
                                     "patches_per_prompt": self.patches_per_prompt,
                                     "patch_sizes": [list(p) for p in self.patch_sizes]}
