"""`fsd compare-2d`: the same seeds through DDIM, FSD and SDS (the paper's Fig. 3).

DDIM always runs: it is the reference every method is measured against (same seed, same eps~).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fsd2d import metrics
from fsd2d.figures import image_grid
from fsd2d.guidance import Guidance
from fsd2d.io import atomic_output_dir, run_record, save_png, write_json
from fsd2d.priors.base import Prior
from fsd2d.priors.imageset import ImageSetPrior
from fsd2d.sampling import DistillConfig, Method, ddim_sample, distill, initial_noise
from fsd2d.schedule import Anneal, timesteps

DEFAULT_METHODS = (Method.DDIM, Method.FSD, Method.FSD_EXACT, Method.SDS)


@dataclass(frozen=True)
class Compare2DConfig:
    prompt: str = "cat"
    negative_prompt: str = ""
    seeds: tuple[int, ...] = tuple(range(8))
    methods: tuple[Method, ...] = DEFAULT_METHODS
    steps: int = 300
    cfg: float | None = None  # None -> the prior's default (1 for analytic priors, 7.5 for Stable Diffusion)
    beta: float = 1.0  # FSD's noise blend (fsd, fsd-exact); SDS always uses beta = 0
    t_min: int = 20
    t_max: int = 980
    anneal: Anneal = Anneal.LINEAR
    lr: float | None = None  # Adam; None -> 2.5 / steps
    model: str = "imageset"  # built-in prior name, local diffusers folder or hub id (see priors.load)
    device: str = "auto"
    dtype: str = "auto"
    resolution: int | None = None  # None -> the prior's native resolution

    def distill_base(self) -> DistillConfig:
        return DistillConfig(
            steps=self.steps, beta=self.beta, anneal=self.anneal, t_min=self.t_min, t_max=self.t_max, lr=self.lr
        )

    def ordered_methods(self) -> tuple[Method, ...]:
        """DDIM first (always run), then the others in the order given, without repeats."""
        rest = [m for m in dict.fromkeys(self.methods) if m is not Method.DDIM]
        return (Method.DDIM, *rest)


def run_methods(prior: Prior, config: Compare2DConfig, progress: bool = False) -> dict[Method, torch.Tensor]:
    """Final results in the prior's working space [B, C, h, w], per method (one batch of all seeds each)."""
    base = config.distill_base()  # validates steps, beta and the timestep range before any work
    cfg = prior.default_cfg if config.cfg is None else config.cfg
    guidance = Guidance.from_prompts(prior, config.prompt, config.negative_prompt, cfg)
    results = {}
    for method in config.ordered_methods():
        if method is Method.DDIM:
            grid = timesteps(config.steps, config.t_min, config.t_max, Anneal.LINEAR)
            results[method] = ddim_sample(prior, guidance, initial_noise(prior, config.seeds), grid, progress=progress)
        else:
            results[method] = distill(
                prior, guidance, method.config(base), config.seeds, progress=progress, desc=method.value
            )
    return results


def evaluate(prior: Prior, config: Compare2DConfig, images: dict[Method, torch.Tensor]) -> dict:
    """metrics.json: per method and seed the distance to DDIM (PSNR, SSIM); per method the diversity;
    for the analytic prior the nearest set image (index, PSNR) and the mode coverage."""
    ref = metrics.to_hwc(images[Method.DDIM])
    set_images = prior.set_images(config.prompt) if isinstance(prior, ImageSetPrior) else None
    out = {"seeds": list(config.seeds), "methods": {}}
    for method, ims in images.items():
        hwc = metrics.to_hwc(ims)
        per_seed = [
            {"seed": s, "psnr_to_ddim": metrics.psnr(hwc[i], ref[i]), "ssim_to_ddim": metrics.ssim(hwc[i], ref[i])}
            for i, s in enumerate(config.seeds)
        ]
        entry = {
            "per_seed": per_seed,
            "mean_psnr_to_ddim": _mean([p["psnr_to_ddim"] for p in per_seed]),
            "mean_ssim_to_ddim": _mean([p["ssim_to_ddim"] for p in per_seed]),
            "diversity": metrics.diversity(ims),
        }
        if set_images is not None:
            idx, near_psnr = metrics.nearest(ims, set_images)
            for i, p in enumerate(per_seed):
                p["nearest_set_image"], p["nearest_psnr"] = int(idx[i]), float(near_psnr[i])
            entry["mean_nearest_psnr"] = _mean(near_psnr.tolist())
            entry["modes_reached"] = metrics.mode_coverage(idx, near_psnr)
            entry["set_size"] = len(set_images)
        out["methods"][method.value] = entry
    if set_images is not None:
        out["reached_psnr_db"] = metrics.REACHED_PSNR_DB
    return out


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v != float("inf")]
    return float(sum(finite) / len(finite)) if finite else float("inf")


def caption(method: Method, seed_metrics: dict) -> str:
    if method is Method.DDIM:
        if "nearest_psnr" not in seed_metrics:
            return ""
        near = seed_metrics["nearest_psnr"]
        return f"set image #{seed_metrics['nearest_set_image']}" + ("" if near > 60 else f" ({near:.0f} dB)")
    p = seed_metrics["psnr_to_ddim"]
    return "= DDIM" if p == float("inf") or p > 60 else f"{p:.1f} dB vs DDIM"


def compare_2d(prior: Prior, config: Compare2DConfig, out: Path, progress: bool = False) -> dict:
    """Run every method, write grid.png, images/, metrics.json and run.json to `out` atomically."""
    start = time.perf_counter()
    results = run_methods(prior, config, progress=progress)
    with torch.no_grad():
        images = {m: prior.decode(z).float().cpu() for m, z in results.items()}
    summary = evaluate(prior, config, images)
    summary["seconds"] = time.perf_counter() - start
    with atomic_output_dir(out) as tmp:
        (tmp / "images").mkdir()
        for method, ims in images.items():
            for seed, im in zip(config.seeds, metrics.to_hwc(ims)):
                save_png(tmp / "images" / f"{method.value}_seed{seed}.png", im)
        per = summary["methods"]
        image_grid(
            tmp / "grid.png",
            [metrics.to_hwc(ims) for ims in images.values()],
            [m.value for m in images],
            [f"seed {s}" for s in config.seeds],
            captions=[[caption(m, p) for p in per[m.value]["per_seed"]] for m in images],
            title=f"'{config.prompt}'  (cfg {prior.default_cfg if config.cfg is None else config.cfg}, "
            f"{config.steps} steps)",
        )
        write_json(tmp / "metrics.json", summary)
        write_json(tmp / "run.json", run_record("compare-2d", config, {"prior": prior.describe()}))
    return summary
