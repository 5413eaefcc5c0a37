"""The embedded local patch prior: the posterior-mean denoiser when every pixel sees only its k x k neighbourhood.

Real diffusion networks are largely local (and translation equivariant), and the paper's Fig. 5 shows that
the local texture of FSD's fixed noise decides the local texture of the result. The image-set prior cannot
show this (its denoiser is global and returns copies of set images). This one can. Assume each pixel's
clean value depends only on its neighbourhood, and that x_0's neighbourhoods are drawn uniformly from a bank
of k x k patches {P_j} of the prompt's images (prior weights pi_j). Then, pixel by pixel:

    w_j(p) = softmax_j( log pi_j - ||N_p(x_t) - alpha_t P_j||^2 / (2 sigma_t^2) )
    E[x_0(p) | x_t] = sum_j w_j(p) centre(P_j),        eps_hat = (x_t - alpha_t E[x_0 | x_t]) / sigma_t

N_p(x_t) is the k x k x 3 neighbourhood of pixel p, with reflect padding at the borders. This is the
"equivariant local score machine" of Kamb & Ganguli (2024, "An analytic theory of creativity in
convolutional diffusion models"): it is translation equivariant (away from the borders), so DDIM on it
gives new mosaics of the prompt's local textures rather than copies of set images.

Symbols:  x_t [B, 3, R, R] noisy pixels (working space: pixels in [-1, 1], channels-first);
          P_j [3 k k] one bank patch, flattened channel-major (c, dy, dx) as `F.unfold` does;
          cond [B, M] log pi_j over the bank (-inf outside the prompt), from `encode_prompt`.

Choices (all constructor arguments):
  * Patch size by timestep, `patch_sizes = ((t_from, k), ...)`: k is used for t >= t_from (largest t_from
    that fits). Default ((600, 9), (250, 7), (0, 5)). At high noise a pixel's own neighbourhood says
    little (alpha_t small), so the denoiser needs more context to set the coarse layout of the texture;
    at low noise small neighbourhoods suffice and keep the result a fine mosaic of real texture rather
    than of whole remembered patches (Kamb & Ganguli calibrate patch sizes that shrink with t in the same
    way). Tried on DDIM (300 steps, 20..980): k = 5 throughout gives finer, more fragmented mosaics (cat,
    astronaut); adding k = 3 below t = 100 changes little; ((700, 11), (400, 9), (150, 7), (0, 5)) gives
    larger coherent object parts but costs ~1.5x. The matmul cost grows with 3 k^2: k <= 9 keeps a call
    well under 50 ms on a 2-core CPU.
  * Bank: `patches_per_prompt` (default 512) patch centres drawn without replacement, uniformly over all
    (set image, position) pairs of the prompt's `build_image_sets` crops whose largest patch lies inside
    the image (no padded patches in the bank). One centre gives the k x k patch for every k of the
    schedule, so the conditioning [1, M] does not depend on t. Fixed RNG seed: deterministic. DDIM
    results look alike with 512 and 2048 patches per prompt, 256 loses some variety (fewer cat eyes);
    cost is linear in the bank.
  * Unconditional model (""): the union of all prompts' banks with equal prompt weight, like the image-set
    prior, so classifier-free guidance has its usual meaning. Its half of a CFG batch scores all M
    patches, so a CFG call costs ~9x a conditional one. (A subsampled unconditional bank would be cheaper
    but is wrong for CFG: eps_c - eps_u then measures which patches the small bank misses, and DDIM with
    s = 3 left [-1, 1] (values to +-2.3) and at s = 7.5 gave noise when tried; with the full union the cat at
    s = 3 stays in [-1, 1] and results at s = 3, 7.5 are plausible textures with a few overshooting pixels.)
  * Arithmetic: x_t, eps and alpha, sigma in `dtype` (float64 by default, float32 allowed); the distance
    matmul and the softmax in `compute_dtype`: float32 by default (2x faster; on DDIM with 300 steps the
    results differ from float64 by < 2e-5 in [0, 1] pixels), float64 for exact comparisons (tests).
    The |x|^2 trick makes the distance one matmul per pixel chunk
    (addmm: log pi_j - (alpha^2/2s^2)|P_j|^2 + (alpha/s^2) x.P_j, the |x|^2 term is constant in j);
    weights are clamped below at exp(-LOG_FLOOR) so no subnormal float slows the CPU down.
    Samples are grouped by (patch size, support of cond), so a batch with mixed t (SDS) works and each
    half of a CFG batch only scores the patches its conditioning gives weight to.
  * Speed (2 CPU cores, B = 16, 32 x 32, defaults): 12 / 16 / 23 ms per `eps` call at k = 5 / 7 / 9;
    with CFG (2B samples, the unconditional half over the union bank) 110 / 150 / 210 ms.
    patches_per_prompt=256 halves both.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fsd2d.errors import InputError
from fsd2d.priors.base import ModelError, PixelPrior
from fsd2d.priors.imageset import (
    DEFAULT_CROPS,
    DEFAULT_RESOLUTION,
    MAX_RESOLUTION,
    MIN_RESOLUTION,
    PROMPTS,
    build_image_sets,
    prompt_log_weights,
)
from fsd2d.schedule import NoiseSchedule, scaled_linear_schedule
from fsd2d.updates import eps_from_x0

PatchSizes = tuple[tuple[int, int], ...]  # ((t_from, k), ...): k for t >= t_from; one t_from must be 0

DEFAULT_PATCH_SIZES: PatchSizes = ((600, 9), (250, 7), (0, 5))
DEFAULT_PATCHES_PER_PROMPT = 512
DEFAULT_COMPUTE_DTYPE = torch.float32
BANK_SEED = 0
CHUNK_ENTRIES = 1 << 18  # logits per chunk (pixels x bank patches): 2 MiB in float64, stays in cache
# Weights are clamped below at exp(-LOG_FLOOR) and centres with |c| < CENTRE_SNAP are set to 0, so the weights
# and their products with the centres stay normal floats (float64: >= 1e-269, float32: >= 4e-26).
LOG_FLOOR = {torch.float64: 600.0, torch.float32: 40.0}
CENTRE_SNAP = 1e-8


def check_patch_sizes(patch_sizes: PatchSizes, resolution: int) -> PatchSizes:
    """Validated schedule sorted by decreasing t_from."""
    try:
        pairs = tuple(sorted(((int(t), int(k)) for t, k in patch_sizes), reverse=True))
    except (TypeError, ValueError) as e:
        raise InputError(f"patch_sizes must be ((t_from, k), ...) pairs of integers, got {patch_sizes!r}") from e
    ts = [t for t, _ in pairs]
    if not pairs or ts[-1] != 0 or len(set(ts)) != len(ts):
        raise InputError(f"patch_sizes needs distinct t_from values, one of them 0, got {patch_sizes!r}")
    for _, k in pairs:
        if k < 1 or k % 2 == 0 or k // 2 >= resolution:
            raise InputError(f"patch sizes must be odd, >= 1 and below 2 * resolution ({resolution}), got k={k}")
    return pairs


@dataclass(frozen=True)
class PatchBank:
    """Bank patches for one k: flattened patches, half squared norms. Centres are shared across k."""

    k: int
    patches_t: torch.Tensor  # [3 k k, M]  transposed for addmm, channel-major (c, dy, dx)
    half_sq: torch.Tensor  # [M]  |P_j|^2 / 2


class PatchPrior(PixelPrior):
    """Local (k x k neighbourhood) posterior-mean denoiser over patch banks of the scikit-image prompt sets.

    Conditioning: log prior weights over the bank, [1, M].
    """

    def __init__(
        self,
        resolution: int = DEFAULT_RESOLUTION,
        patch_sizes: PatchSizes = DEFAULT_PATCH_SIZES,
        patches_per_prompt: int | None = DEFAULT_PATCHES_PER_PROMPT,
        crops_per_prompt: int = DEFAULT_CROPS,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
        compute_dtype: torch.dtype = DEFAULT_COMPUTE_DTYPE,
        schedule: NoiseSchedule | None = None,
        seed: int = BANK_SEED,
    ):
        """The built-in prior: patches of `crops_per_prompt` crops of each scikit-image picture at `resolution`."""
        if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
            raise ModelError(
                f"the patch prior works at {MIN_RESOLUTION}..{MAX_RESOLUTION} pixels, got resolution {resolution}"
            )
        images, labels = build_image_sets(resolution, crops_per_prompt)
        self._setup(
            torch.as_tensor(images), torch.as_tensor(labels), list(PROMPTS), patch_sizes, patches_per_prompt,
            device, dtype, compute_dtype, schedule, seed,
        )  # fmt: skip

    @classmethod
    def from_images(
        cls,
        images: torch.Tensor,  # [K, 3, R, R] in [-1, 1]
        labels: torch.Tensor,  # [K] index into prompts
        prompts: list[str],
        patch_sizes: PatchSizes = DEFAULT_PATCH_SIZES,
        patches_per_prompt: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
        compute_dtype: torch.dtype = torch.float64,
        schedule: NoiseSchedule | None = None,
        seed: int = BANK_SEED,
    ) -> PatchPrior:
        """The patch denoiser of any image sets (tests, your own data). patches_per_prompt None: all patches."""
        prior = cls.__new__(cls)
        prior._setup(
            images, labels, prompts, patch_sizes, patches_per_prompt, device, dtype, compute_dtype, schedule, seed
        )
        return prior

    def _setup(
        self, images, labels, prompts, patch_sizes, patches_per_prompt, device, dtype, compute_dtype, schedule, seed
    ):
        for name, dt in (("dtype", dtype), ("compute_dtype", compute_dtype)):
            if dt not in (torch.float32, torch.float64):
                raise ModelError(f"the patch prior computes in float64 or float32, got {name}={dt}")
        if patches_per_prompt is not None and patches_per_prompt < 1:
            raise InputError(f"patches_per_prompt must be >= 1 (or None: all), got {patches_per_prompt}")
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise InputError(f"images must be [K, 3, R, R], got {list(images.shape)}")
        self.device, self.dtype, self.compute_dtype = torch.device(device), dtype, compute_dtype
        self.schedule = schedule or scaled_linear_schedule()
        self.prompts = [p.lower() for p in prompts]
        self._resolution = images.shape[-1]
        self.patch_sizes = check_patch_sizes(patch_sizes, self._resolution)
        self.patches_per_prompt = patches_per_prompt
        images = images.to(torch.float64).cpu()
        labels = labels.long().cpu()

        # 1. Bank centres (set image, y, x): the largest patch must lie inside the image.
        h = max(k for _, k in self.patch_sizes) // 2
        r = self._resolution
        side = r - 2 * h
        if side < 1:
            raise InputError(f"the largest patch ({2 * h + 1}) does not fit in {r} x {r} images")
        rng = np.random.default_rng(seed)
        centres, bank_labels = [], []
        for p in range(len(self.prompts)):
            idx = torch.nonzero(labels == p).flatten().numpy()
            total = len(idx) * side * side
            if total == 0:
                raise InputError(f"prompt {self.prompts[p]!r} has no images")
            n = total if patches_per_prompt is None else min(int(patches_per_prompt), total)
            flat = np.sort(rng.choice(total, size=n, replace=False))
            img, rest = np.divmod(flat, side * side)
            y, x = np.divmod(rest, side)
            centres.append(np.stack([idx[img], y + h, x + h], axis=1))
            bank_labels.append(np.full(n, p))
        where = torch.as_tensor(np.concatenate(centres))  # [M, 3] (image, y, x)
        self.bank_labels = torch.as_tensor(np.concatenate(bank_labels))  # [M] prompt index of each patch
        self.bank_where = where

        # 2. Patches for every k around the centres, flattened channel-major (c, dy, dx) like the x_t side.
        self._banks: dict[int, PatchBank] = {}
        for k in sorted({k for _, k in self.patch_sizes}):
            hk = k // 2
            windows = images.unfold(2, k, 1).unfold(3, k, 1)  # [K, 3, R-k+1, R-k+1, k, k] (a view), top-left
            patches = windows[where[:, 0], :, where[:, 1] - hk, where[:, 2] - hk].reshape(len(where), -1)  # [M, 3 k k]
            self._banks[k] = PatchBank(
                k,
                patches.T.contiguous().to(self.device, compute_dtype),
                (0.5 * (patches**2).sum(1)).to(self.device, compute_dtype),
            )
        centre = images[where[:, 0], :, where[:, 1], where[:, 2]]  # [M, 3] x_0 value at the centre
        centre = torch.where(centre.abs() < CENTRE_SNAP, 0.0, centre)
        self.centres = centre.to(self.device, dtype)  # [M, 3] in [-1, 1]
        # [M, 4]: centre and a column of ones, so one matmul gives the weighted sum and the normaliser.
        ones = torch.ones(len(centre), 1, dtype=torch.float64)
        self._centres1 = torch.cat([centre, ones], 1).to(self.device, compute_dtype)

    # ---- the Prior interface ---------------------------------------------------------------------------------

    @property
    def bank_size(self) -> int:
        """M, the number of bank patches over all prompts."""
        return len(self.bank_labels)

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """Log prior weights over the M bank patches, [1, M] (-inf outside the prompt's patches)."""
        return prompt_log_weights(prompt, self.bank_labels, self.prompts).to(self.device, self.dtype)[None]

    def patch_size(self, t: torch.Tensor) -> torch.Tensor:
        """k [B] (long, CPU) for integer timesteps t [B]: the k of the largest t_from <= t."""
        t = torch.as_tensor(t, dtype=torch.long).cpu()
        k = torch.empty_like(t)
        for t_from, size in reversed(self.patch_sizes):  # increasing t_from: later pairs override
            k[t >= t_from] = size
        return k

    def posterior_mean(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """E[x_0 | x_t] [B, 3, R, R] (pixel-wise local posterior mean) for x_t [B, 3, R, R], t [B], cond [B, M]."""
        b = self._check(x_t, t, cond)
        alpha, sigma = self.schedule.alpha_sigma(t, self.dtype, self.device)
        cdt = self.compute_dtype
        scale = (alpha / sigma**2).view(b).to(cdt)  # [B]  alpha / s^2 multiplies x.P_j
        quad = (alpha**2 / sigma**2).view(b).to(cdt)  # [B]  alpha^2 / s^2 multiplies |P_j|^2 / 2
        x = x_t.to(cdt)
        cond = cond.to(cdt)
        out = torch.empty_like(x)
        support = torch.isfinite(cond)  # [B, M]
        sizes = self.patch_size(t)
        _, support_id = torch.unique(support.cpu(), dim=0, return_inverse=True)  # [B]
        groups = torch.stack([sizes, support_id.cpu()], 1)  # [B, 2]
        for key in torch.unique(groups, dim=0):
            members = torch.nonzero((groups == key).all(1)).flatten().to(self.device)  # samples of this group
            k = int(key[0])
            cols = torch.nonzero(support[members[0]]).flatten()  # the bank patches with pi_j > 0
            out[members] = self._local_mean(x[members], scale[members], quad[members], cond[members][:, cols], k, cols)
        return out.to(self.dtype)

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.schedule.alpha_sigma(t, self.dtype, self.device)
        x0 = self.posterior_mean(x_t, t, cond)
        return eps_from_x0(x_t.to(self.dtype), x0, alpha, sigma).to(x_t.dtype)

    def describe(self) -> dict:
        return super().describe() | {
            "patch_sizes": [list(p) for p in self.patch_sizes],
            "bank_sizes": {p: int((self.bank_labels == i).sum()) for i, p in enumerate(self.prompts)},
            "dtype": str(self.dtype),
            "compute_dtype": str(self.compute_dtype),
        }

    # ---- internals -----------------------------------------------------------------------------------------

    def _check(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> int:
        r = self._resolution
        if x_t.ndim != 4 or tuple(x_t.shape[1:]) != (3, r, r):
            raise InputError(f"x_t must be [B, 3, {r}, {r}], got {list(x_t.shape)}")
        b = x_t.shape[0]
        if tuple(t.shape) != (b,):
            raise InputError(f"t must be [B] = [{b}], got {list(t.shape)}")
        if tuple(cond.shape) != (b, self.bank_size):
            raise InputError(f"cond must be [B, M] = [{b}, {self.bank_size}] (encode_prompt), got {list(cond.shape)}")
        if b and not torch.isfinite(cond).any(1).all():
            raise InputError("cond gives zero prior weight to every patch of some sample")
        return b

    def _local_mean(self, x, scale, quad, logw, k, cols) -> torch.Tensor:
        """Posterior mean [b, 3, R, R] of one group: x [b, 3, R, R], scale/quad [b], logw [b, m], bank columns [m]."""
        bank = self._banks[k]
        pt = bank.patches_t[:, cols]  # [D, m]
        half_sq = bank.half_sq[cols]  # [m]
        centres1 = self._centres1[cols]  # [m, 4]
        b, _, r, _ = x.shape
        h = k // 2
        padded = F.pad(x, (h, h, h, h), mode="reflect") if h else x  # [b, 3, R+2h, R+2h]
        windows = padded.unfold(2, k, 1).unfold(3, k, 1)  # [b, 3, R, R, k, k] (a view)
        hood = windows.permute(0, 2, 3, 1, 4, 5).reshape(b, r * r, -1)  # [b, R*R, D]  N_p(x_t), (c, dy, dx)
        floor = -LOG_FLOOR[self.compute_dtype]
        rows = max(1, CHUNK_ENTRIES // len(cols))
        out = torch.empty(b, r * r, 3, dtype=self.compute_dtype, device=self.device)
        for i in range(b):
            bias = (logw[i] - quad[i] * half_sq)[None]  # [1, m]  log pi_j - (alpha^2 / 2 s^2) |P_j|^2
            for s in range(0, r * r, rows):
                # [n, m]  = log pi_j - ||N_p - a P_j||^2 / 2s^2 + (a term constant in j)
                logits = torch.addmm(bias, hood[i, s : s + rows], pt, alpha=float(scale[i]))
                # Shift by the row max, then clamp at -LOG_FLOOR: exp stays a normal float (no subnormals, which
                # are ~100x slower on CPUs) and so do its products with the centres (|c| >= CENTRE_SNAP or 0);
                # the clamped weights add < M exp(-LOG_FLOOR) to a normaliser >= 1: below the dtype's precision.
                w = logits.sub_(logits.amax(1, keepdim=True)).clamp_min_(floor).exp_()  # [n, m]
                acc = w @ centres1  # [n, 4]  sum_j w_j centre(P_j), sum_j w_j
                out[i, s : s + rows] = acc[:, :3] / acc[:, 3:]
        return out.transpose(1, 2).reshape(b, 3, r, r)
