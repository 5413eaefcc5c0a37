"""`fsd beta-sweep`: FSD with the noise blend sqrt(beta) eps~ + sqrt(1 - beta) eps for several beta
(the paper's Fig. 8, in 2D): diversity across seeds, agreement with DDIM and, for analytic priors,
mode coverage as functions of beta. beta = 1 is FSD, beta = 0 is SDS with annealed timesteps."""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from fsd2d import metrics  # noqa: E402
from fsd2d.errors import check_finite  # noqa: E402
from fsd2d.figures import image_grid, save_figure  # noqa: E402
from fsd2d.flags import to_floats  # noqa: E402
from fsd2d.io import atomic_output_dir, run_record, write_json  # noqa: E402
from fsd2d.folders import BETA_SWEEP, Layout, claim  # noqa: E402
from fsd2d.priors.base import Prior  # noqa: E402
from fsd2d.priors.imageset import ImageSetPrior  # noqa: E402
from fsd2d.sampling import Method, distill, sample  # noqa: E402
from fsd2d.study import StudyConfig  # noqa: E402
from fsd2d.updates import check_beta  # noqa: E402

__all__ = ["BetaSweepConfig", "beta_sweep"]

COLUMNS = ("beta", "diversity", "mean_psnr_to_ddim", "mean_ssim_to_ddim", "modes_reached")


@dataclass(frozen=True)
class BetaSweepConfig(StudyConfig):
    LAYOUT: ClassVar[Layout] = BETA_SWEEP
    NOT_OPTIONS: ClassVar[tuple[str, ...]] = ("beta",)  # each run of the sweep has its own beta

    betas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)  # the sweep's noise blends (the field beta is unused)

    @classmethod
    def fields_from_flags(cls, flags: dict) -> dict:
        """Besides the shared options: betas ('0,0.5,1' or numbers)."""
        flags = super().fields_from_flags(flags)
        if "betas" in flags:
            flags["betas"] = to_floats(flags["betas"], "--betas")
        return flags

    def write_study(self, prior: Prior, out: Path, progress: bool = False) -> dict:
        return beta_sweep(prior, self, out, progress=progress)

    def validate(self) -> None:
        super().validate()
        for b in self.betas:
            check_finite("--betas", b)  # the message of the command's parser (fsd2d.flags.parse_floats)
            check_beta(b)


def beta_sweep(prior: Prior, config: BetaSweepConfig, out: Path, progress: bool = False) -> dict:
    """DDIM once, then FSD (Adam) for each beta; writes grid.png, beta_sweep.png, table.csv, metrics.json."""
    config.validate()
    claim(out, BETA_SWEEP)
    start = time.perf_counter()
    guidance = config.guidance(prior)
    with torch.no_grad():
        ddim = prior.decode(sample(prior, guidance, Method.DDIM, config.seeds, config.distill_base(),
                                   progress=progress)).float().cpu()
    set_images = prior.set_images(config.prompt) if isinstance(prior, ImageSetPrior) else None
    images, rows = {}, []
    configs = {beta: Method.FSD.config(replace(config.distill_base(), beta=beta)) for beta in config.betas}
    for beta, cfg in configs.items():
        z = distill(prior, guidance, cfg, config.seeds, progress=progress, desc=f"beta={beta:g}")
        with torch.no_grad():
            images[beta] = prior.decode(z).float().cpu()
        entry = metrics.score(images[beta], ddim, config.seeds, set_images)
        rows.append({"beta": beta, **entry})
    summary = {"seeds": list(config.seeds), "rows": rows, "seconds": time.perf_counter() - start}

    with atomic_output_dir(out, BETA_SWEEP) as tmp:
        image_grid(tmp / "grid.png", [metrics.to_hwc(ddim)] + [metrics.to_hwc(v) for v in images.values()],
                   ["ddim"] + [f"beta {b:g}" for b in images], [f"seed {s}" for s in config.seeds],
                   title=f"'{config.prompt}': FSD with noise blend beta (1 = FSD, 0 = SDS)")
        plot_sweep(tmp / "beta_sweep.png", rows, has_modes=set_images is not None, n_seeds=len(config.seeds))
        with open(tmp / "table.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            for r in rows:
                w.writerow([r.get(c, "") for c in COLUMNS])
        write_json(tmp / "metrics.json", summary)
        write_json(tmp / "run.json", run_record("beta-sweep", config, config.run_extras(
            prior, {f"fsd beta={b:g}": c for b, c in configs.items()})))
    return summary


def plot_sweep(path: Path, rows: list[dict], has_modes: bool, n_seeds: int) -> None:
    betas = [r["beta"] for r in rows]
    panels = [("diversity", "diversity (1 - SSIM)"), ("mean_psnr_to_ddim", "PSNR to DDIM (dB)")]
    if has_modes:
        panels.append(("modes_reached", f"set images reached (of {n_seeds} seeds)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.0), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        ax.plot(betas, [r[key] for r in rows], "o-")
        ax.set_xlabel("beta")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
