"""The embedded analytic prior: the exact posterior-mean denoiser of a finite image set.

For x_t = alpha_t x_0 + sigma_t eps with x_0 drawn from a finite set {y_k} with prior weights pi_k:

    p(k | x_t) = softmax_k( log pi_k - ||x_t - alpha_t y_k||^2 / (2 sigma_t^2) )
    E[x_0 | x_t] = sum_k p(k | x_t) y_k,        eps_hat = (x_t - alpha_t E[x_0 | x_t]) / sigma_t

This is the optimal (MMSE) denoiser, so eps_hat is exactly -sigma_t * score (Eq. 3) of the noisy
distribution: DDIM on it samples the set, and it tells us which set image a result reached.

Each prompt names one picture shipped inside scikit-image; its set is `crops_per_prompt` random
square crops (side 40-100% of the short side, random flip) resized to `resolution` (32 by default).
The unconditional model ("" prompt) is the mixture of all prompts with equal weight, so
classifier-free guidance has its usual meaning. Working space: pixels in [-1, 1], [B, 3, R, R].
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from fsd2d.priors.base import ModelError, PixelPrior, match_prompt
from fsd2d.schedule import NoiseSchedule, scaled_linear_schedule
from fsd2d.updates import eps_from_x0


@dataclass(frozen=True)
class SetSource:
    """One prompt's source picture: the scikit-image loader name and what it shows."""

    loader: str
    description: str


# prompt -> picture shipped with scikit-image (no download).
PROMPTS: dict[str, SetSource] = {
    "cat": SetSource("chelsea", "Chelsea the cat"),
    "astronaut": SetSource("astronaut", "astronaut Eileen Collins"),
    "coffee": SetSource("coffee", "a cup of coffee"),
    "rocket": SetSource("rocket", "a rocket on its launch pad"),
    "galaxy": SetSource("hubble_deep_field", "Hubble deep field"),
    "brick": SetSource("brick", "brick wall texture (grey)"),
    "grass": SetSource("grass", "grass texture (grey)"),
    "gravel": SetSource("gravel", "gravel texture (grey)"),
}

DEFAULT_RESOLUTION = 32
DEFAULT_CROPS = 64
MIN_RESOLUTION, MAX_RESOLUTION = 8, 128


def prompt_log_weights(prompt: str, labels: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """Log prior weights [K] (float64) over items labelled with prompt indices `labels` [K]: uniform over the
    prompt's items (-inf elsewhere); for "" an equal mixture of all prompts, each uniform over its items. The
    prompt is matched by the one rule (fsd2d.priors.base.match_prompt: case and surrounding spaces ignored)."""
    key = match_prompt(prompt, prompts)
    counts = torch.bincount(labels, minlength=len(prompts)).to(torch.float64)
    if key == "":
        return -torch.log(counts[labels] * len(prompts))
    p = prompts.index(key)
    logw = torch.full(labels.shape, -torch.inf, dtype=torch.float64)
    logw[labels == p] = -torch.log(counts[p])
    return logw


def load_source(name: str) -> np.ndarray:
    """The prompt's scikit-image picture as float [H, W, 3] in [0, 1]."""
    import skimage.data

    img = np.asarray(getattr(skimage.data, PROMPTS[name].loader)(), dtype=np.float64) / 255.0
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return img[..., :3]


CROP_SIDE = (0.4, 1.0)  # a crop's side, as a fraction of the picture's short side (uniform)


@functools.lru_cache(maxsize=16)
def scaled_source(name: str, resolution: int) -> np.ndarray:
    """The prompt's picture [H, W, 3] in [0, 1] resized so that its short side is 4 R: crops of it then need only a
    small, fast resize to R (the exact prior's sets here, the trained tiny-sd's training crops in fsdtrain)."""
    from skimage.transform import resize

    src = load_source(name)
    scale = 4 * resolution / min(src.shape[:2])
    return resize(src, (round(src.shape[0] * scale), round(src.shape[1] * scale)), anti_aliasing=True)


@functools.lru_cache(maxsize=8)
def build_image_sets(resolution: int, crops_per_prompt: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """All prompts' sets: images [K, 3, R, R] in [-1, 1] (float64) and prompt index [K]. Deterministic."""
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for p, name in enumerate(PROMPTS):
        src = scaled_source(name, resolution)
        h, w = src.shape[:2]
        for _ in range(crops_per_prompt):
            side = int(rng.uniform(*CROP_SIDE) * min(h, w))
            y0, x0 = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            crop = src[y0 : y0 + side, x0 : x0 + side]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            crop = resize(crop, (resolution, resolution), anti_aliasing=True)
            images.append(crop.transpose(2, 0, 1) * 2.0 - 1.0)
            labels.append(p)
    return np.stack(images), np.asarray(labels)


class ImageSetPrior(PixelPrior):
    """Exact posterior-mean denoiser over the scikit-image prompt sets. Conditioning: log-weights [1, K]."""

    def __init__(
        self,
        resolution: int = DEFAULT_RESOLUTION,
        crops_per_prompt: int = DEFAULT_CROPS,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
        schedule: NoiseSchedule | None = None,
    ):
        """The built-in prior: `crops_per_prompt` crops of each scikit-image picture at `resolution`."""
        if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
            raise ModelError(
                f"the image-set prior works at {MIN_RESOLUTION}..{MAX_RESOLUTION} pixels, got resolution {resolution}"
            )
        images, labels = build_image_sets(resolution, crops_per_prompt)
        self._setup(torch.as_tensor(images), torch.as_tensor(labels), list(PROMPTS), device, dtype, schedule)

    @classmethod
    def from_images(
        cls,
        images: torch.Tensor,  # [K, 3, R, R] in [-1, 1]
        labels: torch.Tensor,  # [K] index into prompts
        prompts: list[str],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
        schedule: NoiseSchedule | None = None,
    ) -> "ImageSetPrior":
        """The exact denoiser of any image sets (tests, your own data)."""
        prior = cls.__new__(cls)
        prior._setup(images, labels, prompts, device, dtype, schedule)
        return prior

    def _setup(self, images, labels, prompts, device, dtype, schedule) -> None:
        if dtype not in (torch.float32, torch.float64):
            raise ModelError(f"the image-set prior computes in float64 or float32, got {dtype}")
        self.device, self.dtype = torch.device(device), dtype
        self.schedule = schedule or scaled_linear_schedule()
        self.prompts = [p.lower() for p in prompts]
        self.labels = labels.long().cpu()  # [K] prompt index of each set image
        self.images = images.to(self.device, dtype)  # [K, 3, R, R] in [-1, 1]
        self._flat = self.images.flatten(1)  # [K, D]
        self._half_sq_norms = 0.5 * (self._flat**2).sum(1)  # [K]
        self._resolution = images.shape[-1]

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """Log prior weights over the K set images, [1, K] (-inf outside the prompt's set)."""
        return prompt_log_weights(prompt, self.labels, self.prompts).to(self.device, self.dtype)[None]

    def posterior(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """p(k | x_t) [B, K] for x_t [B, 3, R, R], t [B], cond = log-weights [B, K]."""
        alpha, sigma = self.schedule.alpha_sigma(t, self.dtype, self.device)
        alpha, sigma = alpha.view(-1, 1), sigma.view(-1, 1)  # [B, 1]
        x = x_t.to(self.dtype).flatten(1)  # [B, D]
        # -||x - a y||^2 / 2s^2 = (a x.y - a^2 |y|^2 / 2) / s^2 + (terms constant in k)
        logits = cond + (alpha * (x @ self._flat.T) - alpha**2 * self._half_sq_norms) / sigma**2
        logits = logits - logits.amax(dim=1, keepdim=True)
        # Weights below exp(-700) are set to exactly 0: computing them would create subnormal floats,
        # which are ~100x slower on CPUs, for a change of < 1e-300 in the result.
        w = torch.where(logits > -700.0, logits.clamp_min(-700.0).exp(), 0.0)
        return w / w.sum(dim=1, keepdim=True)

    def posterior_mean(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """E[x_0 | x_t] [B, 3, R, R]."""
        return (self.posterior(x_t, t, cond) @ self._flat).view(x_t.shape)

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.schedule.alpha_sigma(t, self.dtype, self.device)
        x0 = self.posterior_mean(x_t, t, cond)
        return eps_from_x0(x_t.to(self.dtype), x0, alpha, sigma).to(x_t.dtype)

    def set_images(self, prompt: str | None = None) -> torch.Tensor:
        """The set of one prompt (or all of them) as RGB [N, 3, R, R] in [0, 1]."""
        if prompt is None:
            return self.decode(self.images)
        key = match_prompt(prompt, self.prompts, empty=False)
        return self.decode(self.images[self.labels.to(self.device) == self.prompts.index(key)])

    def describe(self) -> dict:
        return super().describe() | {
            "set_sizes": {p: int((self.labels == i).sum()) for i, p in enumerate(self.prompts)},
            "dtype": str(self.dtype),
        }
