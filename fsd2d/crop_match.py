"""Which picture a generated image is a crop of: the ground truth of the trained `tiny-sd` (fsdtrain, `imageset`).

tiny-sd learns the distribution of square crops (side 40-100 % of the short side, any position, flipped or not)
of the 8 prompts' pictures, of which the exact prior's 64 crops per prompt are one sample. An image's nearest
crop over that whole family, per picture p:

    d_p(x) = min over sides s, positions (i, j), flips f of  mean |x - resize_R(flip_f(S_p[i:i+s, j:j+s]))|^2,

searched on N_SIDES sides evenly spaced over the crop range and every position of the picture downscaled so
that a side-s crop is R pixels (stride s / R pixels of the picture), with ||x||^2 - 2 <x, w> + ||w||^2 as one
convolution per side. `nearest_picture` = argmin_p d_p, its PSNR = 10 log10(1 / d_p) (images in [0, 1]).
Prompt accuracy over seeds = the fraction whose nearest picture is the prompt's. A crop of picture p at a
searched side scores its own grid (a crop between two searched sides or positions scores a little lower); a
COPY of the exact prior's set shows instead as a high PSNR to the nearest of those 64 crops (`metrics.nearest`).
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from fsd2d.metrics import MSE_FLOOR
from fsd2d.priors.base import match_prompt
from fsd2d.priors.imageset import CROP_SIDE, PROMPTS, scaled_source

N_SIDES = 13  # crop sides searched, evenly spaced over CROP_SIDE of the short side


@functools.lru_cache(maxsize=8)
def _pyramid(name: str, resolution: int) -> list[torch.Tensor]:
    """The picture downscaled for each searched side: [3, H_s, W_s] float32 in [0, 1], a side-s crop = R px."""
    src = torch.from_numpy(np.ascontiguousarray(scaled_source(name, resolution).transpose(2, 0, 1))).float()
    short = min(src.shape[1:])
    out = []
    for frac in np.linspace(CROP_SIDE[0], CROP_SIDE[1], N_SIDES):
        side = frac * short
        size = (max(resolution, round(src.shape[1] * resolution / side)), max(resolution, round(src.shape[2] * resolution / side)))
        out.append(F.interpolate(src[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0])
    return out


def crop_distances(images: torch.Tensor, name: str) -> torch.Tensor:
    """min over searched crops (sides, positions, flips) of the picture `name` of the mean squared difference,
    per image: [B] for images [B, 3, R, R] in [0, 1]."""
    x = images.float().cpu()
    b, r = x.shape[0], x.shape[-1]
    best = torch.full((b,), torch.inf)
    x2 = (x**2).flatten(1).sum(1)  # [B]
    ones = torch.ones(1, 3, r, r)
    for level in _pyramid(name, r):
        w2 = F.conv2d(level[None] ** 2, ones)[0, 0]  # [H', W'] window sums of squares
        for weights in (x, x.flip(-1)):  # a flipped crop of the picture = the flipped image against the picture
            cross = F.conv2d(level[None], weights)[0]  # [B, H', W']
            d = (x2[:, None, None] - 2.0 * cross + w2[None]).flatten(1).amin(1) / x[0].numel()
            best = torch.minimum(best, d.clamp_min(0.0))
    return best


def nearest_picture(images: torch.Tensor, prompts: list[str] | None = None) -> tuple[list[str], torch.Tensor]:
    """(the nearest picture's prompt per image, its PSNR [B] in dB) over the prompts' pictures."""
    prompts = list(PROMPTS) if prompts is None else prompts
    d = torch.stack([crop_distances(images, p) for p in prompts])  # [P, B]
    best, idx = d.min(0)
    return [prompts[int(i)] for i in idx], -10.0 * torch.log10(best.clamp_min(MSE_FLOOR))  # capped as every PSNR


def picture_scores(images: torch.Tensor, prompt: str) -> dict:
    """metrics.json entries of a trained imageset model: per image the nearest picture and its PSNR, and the
    prompt accuracy (fraction of images whose nearest picture is `prompt`'s, the prompt as every prior reads it:
    fsd2d.priors.base.match_prompt, so 'Cat' is 'cat')."""
    prompt = match_prompt(prompt, list(PROMPTS)) if prompt else prompt
    names, psnrs = nearest_picture(images)
    return {"nearest_picture": names, "picture_psnr": [round(float(p), 2) for p in psnrs],
            "prompt_accuracy": float(np.mean([n == prompt for n in names])) if prompt else float("nan")}
