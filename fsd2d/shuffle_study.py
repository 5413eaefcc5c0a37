"""`fsd shuffle-noise`: FSD from a noise eps~ and from a patch-permuted copy P(eps~) (the paper's Fig. 5).

If the local texture of the fixed noise decides the local texture of the result, then
FSD(P(eps~)) ~ P(FSD(eps~)). We report, per seed, corr(P(FSD(eps~)), FSD(P(eps~))) against the control
corr(P(FSD(eps~)), FSD(eps_c)) for an unrelated noise eps_c (seed + control_offset). All three runs of
all seeds are one batch. The grid is relative, so for Stable Diffusion latent patches map to image patches.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import matplotlib.patches
import torch
import torch.nn.functional as F

from fsd2d import metrics
from fsd2d.errors import InputError, check_int_range
from fsd2d.figures import image_grid
from fsd2d.flags import to_enum
from fsd2d.io import atomic_output_dir, run_record, write_json
from fsd2d.folders import SHUFFLE_NOISE, Layout, claim
from fsd2d.priors.base import Prior
from fsd2d.sampling import SEED_LIMIT, Method, distill, initial_noise
from fsd2d.shuffle import Permutation, check_grid, make_permutation, pearson, permute_patches
from fsd2d.study import StudyConfig

__all__ = ["ShuffleConfig", "shuffle_noise"]

COLUMNS = ("noise eps~", "FSD(eps~)", "P(eps~)", "FSD(P(eps~))", "P(FSD(eps~))", "control FSD(eps_c)")
FRAME_COLORS = ("#e41a1c", "#377eb8", "#4daf4a", "#ff7f00", "#984ea3", "#ffff33", "#a65628", "#f781bf")


@dataclass(frozen=True)
class ShuffleConfig(StudyConfig):
    LAYOUT: ClassVar[Layout] = SHUFFLE_NOISE
    NOT_OPTIONS: ClassVar[tuple[str, ...]] = ("control_offset",)  # the control's shift: not an option of the command

    prompt: str = "brick"
    model: str = "patches"
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    grid: int = 4  # g x g patches
    permutation: Permutation = Permutation.RANDOM
    perm_seed: int = 0
    frames: int = 4  # how many corresponding patches get coloured frames in the figure (0 = none)
    control_offset: int = 1000  # the control noise is seed + control_offset

    @classmethod
    def fields_from_flags(cls, flags: dict) -> dict:
        """Besides the shared options: the permutation ('random', or a Permutation)."""
        flags = super().fields_from_flags(flags)
        if "permutation" in flags:
            flags["permutation"] = to_enum(flags["permutation"], Permutation, "--permutation")
        return flags

    def write_study(self, prior: Prior, out: Path, progress: bool = False) -> dict:
        return shuffle_noise(prior, self, out, progress=progress)

    def validate(self) -> None:
        super().validate()
        check_int_range("perm-seed", self.perm_seed, 0, SEED_LIMIT - 1)
        if self.frames < 0:
            raise InputError(f"--frames must be >= 0, got {self.frames}")


def shuffle_noise(prior: Prior, config: ShuffleConfig, out: Path, progress: bool = False) -> dict:
    config.validate()
    _, h, w = prior.latent_shape
    check_grid(config.grid, h, w, f"prior's {h} x {w} working space")
    check_grid(config.grid, prior.resolution, prior.resolution, "image")
    claim(out, SHUFFLE_NOISE)
    start = time.perf_counter()
    perm = make_permutation(config.permutation, config.grid, config.perm_seed)
    seeds = tuple(config.seeds)
    eps = initial_noise(prior, seeds)  # [B, C, h, w]
    control_seeds = tuple(s + config.control_offset for s in seeds)
    noise = torch.cat([eps, permute_patches(eps, config.grid, perm), initial_noise(prior, control_seeds)])
    z = distill(prior, config.guidance(prior), Method.FSD.config(config.distill_base()), seeds + seeds + control_seeds,
                noise=noise, progress=progress, desc="fsd x3")
    with torch.no_grad():
        first, second, control = prior.decode(z).float().cpu().chunk(3)
    moved = permute_patches(first, config.grid, perm)  # P(FSD(eps~)) in image space
    corr_perm, corr_ctrl = pearson(moved, second), pearson(moved, control)
    corr_unmoved = pearson(first, second)
    summary = {
        "seeds": list(seeds),
        "permutation": perm.tolist(),
        "per_seed": [
            {"seed": s, "corr_permuted": float(a), "corr_control": float(c), "corr_unpermuted": float(u)}
            for s, a, c, u in zip(seeds, corr_perm, corr_ctrl, corr_unmoved)
        ],
        "mean_corr_permuted": float(corr_perm.mean()),
        "mean_corr_control": float(corr_ctrl.mean()),
        "seconds": time.perf_counter() - start,
    }
    size = prior.resolution
    noise_img = noise_to_image(noise.float().cpu(), size).chunk(3)
    rows = [
        [noise_img[0][b], first[b], noise_img[1][b], second[b], moved[b], control[b]] for b in range(len(seeds))
    ]
    with atomic_output_dir(out, SHUFFLE_NOISE) as tmp:
        image_grid(
            tmp / "shuffle.png",
            [metrics.to_hwc(torch.stack(r)) for r in rows],
            [f"seed {s}" for s in seeds],
            list(COLUMNS),
            captions=[["", "", "", f"r = {a:.2f}", "", f"r = {c:.2f}"] for a, c in zip(corr_perm, corr_ctrl)],
            title=f"'{config.prompt}': {config.grid}x{config.grid} {config.permutation.value} patch permutation "
            f"(r: correlation with P(FSD(eps~)))",
            overlay=frame_overlay(perm, config.grid, size, config.frames),
        )
        write_json(tmp / "metrics.json", summary)
        write_json(tmp / "run.json", run_record("shuffle-noise", config, config.run_extras(
            prior, {"fsd": Method.FSD.config(config.distill_base())})))
    return summary


def noise_to_image(noise: torch.Tensor, size: int) -> torch.Tensor:
    """Noise [B, C, h, w] -> RGB [B, 3, size, size] in [0, 1] for display (first 3 channels, 0.5 + 0.2 n)."""
    rgb = noise[:, :3] if noise.shape[1] >= 3 else noise[:, :1].expand(-1, 3, -1, -1)
    return (0.5 + 0.2 * F.interpolate(rgb, size=(size, size), mode="nearest")).clamp(0, 1)


def frame_overlay(perm: torch.Tensor, grid: int, size: int, count: int):
    """Coloured frames: original patch i (columns 0-1) and where it went (columns 2-4)."""
    n = grid * grid
    chosen = [int(i) for i in torch.linspace(0, n - 1, min(count, n)).round().long()] if count > 0 else []
    where = {int(perm[j]): j for j in range(n)}  # original index -> position in the permuted layout
    cell = size / grid

    def draw(ax, row, col):
        if col == 5:
            return
        for k, i in enumerate(chosen):
            pos = i if col in (0, 1) else where[i]
            r, c = divmod(pos, grid)
            ax.add_patch(matplotlib.patches.Rectangle(
                (c * cell - 0.5, r * cell - 0.5), cell, cell, fill=False, lw=1.6, ls="--",
                edgecolor=FRAME_COLORS[k % len(FRAME_COLORS)]))

    return draw
