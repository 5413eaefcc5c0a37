"""Image metrics for the 2D studies. Inputs: RGB images [B, 3, H, W] in [0, 1] (torch) unless stated.

PSNR and SSIM come from scikit-image (data_range 1, channels last); PSNR is capped at PSNR_CAP_DB (2D and 3D alike),
so that identical images give a finite number that JSON can hold and a plot can draw. Diversity is the mean pairwise
1 - SSIM across seeds; mode coverage counts distinct set images reached (analytic priors only).
"""
from __future__ import annotations

import itertools

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

# PSNR of identical images (MSE 0) and of near copies: 100 dB is an RMSE of 1e-5 in [0, 1], far below an 8-bit step;
# fsd-exact's results differ from DDIM's by rounding (~160 dB in float64), so both read "= DDIM" at the cap.
PSNR_CAP_DB = 100.0
MSE_FLOOR = 10.0 ** (-PSNR_CAP_DB / 10.0)
# A result "reaches" a set image when its PSNR to that image is at least this (RMSE <= 0.032 in [0, 1]).
REACHED_PSNR_DB = 30.0


def to_hwc(images: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] in [0, 1] -> float64 numpy [B, H, W, 3]."""
    return images.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two [H, W, 3] images in [0, 1], at most PSNR_CAP_DB (identical images give the cap)."""
    if np.array_equal(a, b):
        return PSNR_CAP_DB
    return min(float(peak_signal_noise_ratio(a, b, data_range=1.0)), PSNR_CAP_DB)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two [H, W, 3] images in [0, 1] (7x7 window, or the largest odd one that fits)."""
    win = min(7, *(s - (1 - s % 2) for s in a.shape[:2]))
    return float(structural_similarity(a, b, data_range=1.0, channel_axis=-1, win_size=win))


def diversity(images: torch.Tensor) -> float:
    """Mean pairwise 1 - SSIM over the batch (0 when all equal; needs B >= 2, else NaN)."""
    ims = to_hwc(images)
    pairs = list(itertools.combinations(range(len(ims)), 2))
    return float(np.mean([1.0 - ssim(ims[i], ims[j]) for i, j in pairs])) if pairs else float("nan")


def nearest(images: torch.Tensor, references: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index [B] of the nearest reference (L2) for each image and the PSNR [B] (dB, capped) to it."""
    a = images.detach().to("cpu", torch.float64).flatten(1)
    r = references.detach().to("cpu", torch.float64).flatten(1)
    dist, idx = torch.cdist(a, r).min(dim=1)
    mse = dist**2 / a.shape[1]
    return idx, -10.0 * torch.log10(mse.clamp_min(MSE_FLOOR))


def mode_coverage(indices: torch.Tensor, psnrs: torch.Tensor, threshold_db: float = REACHED_PSNR_DB) -> int:
    """Number of distinct set images reached (nearest image with PSNR >= threshold)."""
    return len(set(indices[psnrs >= threshold_db].tolist()))


def score(images: torch.Tensor, reference: torch.Tensor, seeds, set_images: torch.Tensor | None = None) -> dict:
    """One method's results [B, 3, H, W] against DDIM's from the same seeds [B, 3, H, W] (all in [0, 1]).

    Per seed: PSNR and SSIM to the reference (and, with `set_images`, the nearest set image and its PSNR);
    overall: their means, the diversity across seeds and, with `set_images`, the mode coverage.
    """
    hwc, ref = to_hwc(images), to_hwc(reference)
    per_seed = [
        {"seed": int(s), "psnr_to_ddim": psnr(hwc[i], ref[i]), "ssim_to_ddim": ssim(hwc[i], ref[i])}
        for i, s in enumerate(seeds)
    ]
    entry = {
        "per_seed": per_seed,
        "mean_psnr_to_ddim": finite_mean([p["psnr_to_ddim"] for p in per_seed]),
        "mean_ssim_to_ddim": finite_mean([p["ssim_to_ddim"] for p in per_seed]),
        "diversity": diversity(images),
    }
    if set_images is not None:
        idx, near_psnr = nearest(images, set_images)
        for i, p in enumerate(per_seed):
            p["nearest_set_image"], p["nearest_psnr"] = int(idx[i]), float(near_psnr[i])
        entry["mean_nearest_psnr"] = finite_mean(near_psnr.tolist())
        entry["modes_reached"] = mode_coverage(idx, near_psnr)
        entry["set_size"] = len(set_images)
    return entry


def finite_mean(values: list[float]) -> float:
    """Mean of the finite values (NaN where a value is undefined); NaN if there are none."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")
