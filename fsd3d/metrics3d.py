"""Ground-truth metrics of generated 3D scenes, from renders at V evaluation cameras.

Inputs (torch, channels-first, all rendered on the same background; see fsd3d.references):
    scene_rgb   [V, 3, R, R]     in [0, 1]   one generated scene at the V evaluation cameras
    scene_alpha [V, 1, R, R]     in [0, 1]   its accumulated opacity
    ref_rgb     [K, V, 3, R, R]  in [0, 1]   the K references at the same cameras (ReferenceSet.render)
    ref_alpha   [K, V, 1, R, R]  in [0, 1]
    names       [K]                          "prompt/variant"
Outputs are plain dicts of floats / ints / strings (JSON-ready). PSNR (data range 1) is capped at
`PSNR_CAP_DB` so that identical images give a finite number.

Per scene (`score_scene`): in each view the reference with the highest PSNR; the majority reference over
the views (ties: the higher mean PSNR) and the agreement (fraction of views voting for it); the mean PSNR
against the majority reference over all views; and the holes measure (FSD paper, Fig. 6): the fraction of
the majority reference's silhouette (ref alpha > 0.5) where the scene is transparent (alpha < 0.5),
averaged over the views.
Across seeds: `references_reached` counts distinct majority references with mean PSNR >= REACHED_PSNR_3D_DB;
`diversity_3d` is the mean pairwise 1 - SSIM of the seeds' renders on matched views (any prior).
"""
from __future__ import annotations

import torch

from fsd2d.errors import InputError
from fsd2d.metrics import diversity
from fsd3d.cameras import Camera, orbit_camera

PSNR_CAP_DB = 100.0
ALPHA_SOLID = 0.5  # silhouette / hole threshold on the accumulated opacity
# A scene "reaches" a reference when its mean PSNR to it is at least this. Measured on the 9 references at
# the 8 `evaluation_cameras` (white background): two different references are at most 19.5 dB apart at 32 px
# (20.3 dB at 64 px; snowman/red_scarf vs snowman/beanie) in the mean over views, and at most 21.8 dB in any
# single view; a reference with its Gaussians jittered by N(0, 0.02^2) (4% of the object's radius), blurred
# by 1 pixel or with 1.3x larger Gaussians stays at >= 26.6 dB at 32 px (>= 24.1 dB at 64 px). 22 dB lies
# between: a scene above it is closer to its reference than any other reference is.
REACHED_PSNR_3D_DB = 22.0


def evaluation_cameras(resolution: int, n_views: int = 8, elevation: float = 20.0, radius: float = 1.75,
                       fov: float = 50.0) -> list[Camera]:
    """n_views cameras at equally spaced azimuths (0, 360/n, ...) at one elevation, radius and fov."""
    return [orbit_camera(elevation, 360.0 * i / n_views, radius, fov, resolution, resolution) for i in range(n_views)]


def psnr_matrix(scene_rgb: torch.Tensor, ref_rgb: torch.Tensor) -> torch.Tensor:
    """PSNR [V, K] (dB, capped) of the scene's view v against reference k's view v."""
    _check_rgb(scene_rgb, ref_rgb)
    a = scene_rgb.detach().to("cpu", torch.float64).flatten(1)  # [V, D]
    r = ref_rgb.detach().to("cpu", torch.float64).flatten(2)  # [K, V, D]
    mse = ((a[None] - r) ** 2).mean(dim=2).T  # [V, K]
    return (-10.0 * torch.log10(mse.clamp_min(10.0 ** (-PSNR_CAP_DB / 10.0))))


def score_scene(
    scene_rgb: torch.Tensor,  # [V, 3, R, R] in [0, 1]
    scene_alpha: torch.Tensor,  # [V, 1, R, R] in [0, 1]
    ref_rgb: torch.Tensor,  # [K, V, 3, R, R] in [0, 1]
    ref_alpha: torch.Tensor,  # [K, V, 1, R, R] in [0, 1]
    names: list[str],  # [K]
) -> dict:
    """Which reference one scene resembles, how consistently across views, how closely, and its holes."""
    p = psnr_matrix(scene_rgb, ref_rgb)  # [V, K]
    v, k = p.shape
    if len(names) != k or tuple(ref_alpha.shape) != (k, v, 1, *scene_rgb.shape[-2:]):
        raise InputError(f"need {k} names and ref_alpha [K={k}, V={v}, 1, R, R]; got {len(names)} names, "
                         f"ref_alpha {tuple(ref_alpha.shape)}")
    if tuple(scene_alpha.shape) != (v, 1, *scene_rgb.shape[-2:]):
        raise InputError(f"scene_alpha must be [V={v}, 1, R, R], got {tuple(scene_alpha.shape)}")
    best = p.argmax(dim=1)  # [V]
    votes = torch.bincount(best, minlength=k)  # [K]
    mean_psnr = p.mean(dim=0)  # [K]
    tied = votes == votes.max()
    majority = int(torch.where(tied, mean_psnr, torch.full_like(mean_psnr, -torch.inf)).argmax())
    holes = hole_fraction(scene_alpha, ref_alpha[majority])
    return {
        "per_view": [{"view": i, "nearest": names[int(best[i])], "psnr": float(p[i, best[i]])} for i in range(v)],
        "majority": names[majority],
        "agreement": float(votes[majority]) / v,
        "majority_psnr": float(mean_psnr[majority]),
        "holes": holes,
    }


def hole_fraction(scene_alpha: torch.Tensor, ref_alpha: torch.Tensor) -> float:
    """Mean over views of the fraction of the reference silhouette where the scene is transparent.

    scene_alpha, ref_alpha: [V, 1, R, R] in [0, 1]. Views whose reference silhouette is empty are skipped
    (NaN if all are).
    """
    inside = ref_alpha.detach().cpu() > ALPHA_SOLID  # [V, 1, R, R]
    hole = (scene_alpha.detach().cpu() < ALPHA_SOLID) & inside
    n_in = inside.flatten(1).sum(1)  # [V]
    frac = hole.flatten(1).sum(1)[n_in > 0].double() / n_in[n_in > 0]
    return float(frac.mean()) if len(frac) else float("nan")


def references_reached(scores: list[dict], threshold_db: float = REACHED_PSNR_3D_DB) -> dict:
    """Across seeds (score_scene outputs): distinct majority references whose mean PSNR >= threshold_db."""
    reached = sorted({s["majority"] for s in scores if s["majority_psnr"] >= threshold_db})
    return {"references_reached": len(reached), "reached": reached, "threshold_db": float(threshold_db),
            "seeds": len(scores)}


def diversity_3d(rgb: torch.Tensor) -> float:
    """Mean over views of the mean pairwise 1 - SSIM across S seeds; rgb [S, V, 3, R, R] in [0, 1] (S >= 2)."""
    if rgb.dim() != 5 or rgb.shape[2] != 3:
        raise InputError(f"diversity_3d takes renders [S, V, 3, R, R], got {tuple(rgb.shape)}")
    if rgb.shape[0] < 2:
        raise InputError(f"diversity needs at least 2 seeds, got {rgb.shape[0]}")
    return float(sum(diversity(rgb[:, i]) for i in range(rgb.shape[1])) / rgb.shape[1])


def _check_rgb(scene_rgb: torch.Tensor, ref_rgb: torch.Tensor) -> None:
    if scene_rgb.dim() != 4 or scene_rgb.shape[1] != 3:
        raise InputError(f"scene_rgb must be [V, 3, R, R], got {tuple(scene_rgb.shape)}")
    if ref_rgb.dim() != 5 or tuple(ref_rgb.shape[1:]) != tuple(scene_rgb.shape):
        raise InputError(f"ref_rgb must be [K, V, 3, R, R] matching scene_rgb {tuple(scene_rgb.shape)}, "
                         f"got {tuple(ref_rgb.shape)}")
