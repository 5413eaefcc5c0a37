"""The 2D table of docs/results/rivals.md: diversity against cost on the trained tiny-sd, from finished sweeps
`fsd batch experiments/rivals_2d.yaml` and `fsd batch experiments/rivals_2d_particles.yaml`.

    python benchmarks/rivals_table.py outputs/batch/rivals_2d outputs/batch/rivals_2d_particles

One row per (method, particles), each quality cell `prompt1 / prompt2` over the sweeps' prompts: prompt accuracy
(seeds whose nearest picture over all crops is the prompt's), mean PSNR to that nearest crop, the diversity across
seeds (mean pairwise 1 - SSIM of each seed's particle 0) with its 95 % bootstrap interval over the seeds, the
diversity across a seed's particles (mean over seeds), and the cost averaged over the prompts: prior evaluations per
step and seed (all its particles), seconds per step of the 16-seed batch (median step), parameters trained per seed.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from fsd3d.metrics3d import diversity_spread, pairwise_dissimilarity_3d

ORDER = ("ddim", "fsd", "sds", "vsd", "esd", "dsd")


def seed_images(run: Path, method: str, seeds: list[int]):
    """The seeds' images of `method` in `run` as [S, 3, H, W] in [0, 1] (particle 0)."""
    import imageio.v3 as iio
    import torch

    ims = [iio.imread(run / "result" / "images" / f"{method}_seed{s}.png") for s in seeds]
    return torch.tensor(np.stack(ims), dtype=torch.float32).permute(0, 3, 1, 2) / 255.0


def bootstrap_diversity(images) -> tuple[float, float]:
    """The 95 % bootstrap interval of the diversity over resampled seeds, as gen-3d's (fsd3d.metrics3d)."""
    return diversity_spread(pairwise_dissimilarity_3d(images[:, None]))[1]  # [S, S] 1 - SSIM (one view)


def main() -> None:
    cells: dict[tuple[str, int], dict[str, dict]] = defaultdict(dict)
    costs: dict[tuple[str, int], list[dict]] = defaultdict(list)
    prompts: list[str] = []
    for sweep in map(Path, sys.argv[1:] or ["outputs/batch/rivals_2d", "outputs/batch/rivals_2d_particles"]):
        for run in sorted(p for p in sweep.iterdir() if (p / "done.json").is_file()):
            config = json.loads((run / "result" / "run.json").read_text())["config"]
            metrics = json.loads((run / "result" / "metrics.json").read_text())
            prompt = config["prompt"]
            if prompt not in prompts:
                prompts.append(prompt)
            for method, entry in metrics["methods"].items():
                particles = entry.get("particles", 1)
                if method == "ddim" and (method, 1) in cells and prompt in cells[method, 1]:
                    continue  # DDIM is in both sweeps: once
                ims = seed_images(run, method, metrics["seeds"])
                cells[method, particles][prompt] = entry | {"ci": bootstrap_diversity(ims)}
                costs[method, particles].append(metrics["cost"][method])
    seeds = len(next(iter(next(iter(cells.values())).values()))["per_seed"])
    known = ["cat", "astronaut", "coffee"]
    prompts.sort(key=lambda p: (known.index(p) if p in known else len(known), p))

    def join(entries: dict, fmt) -> str:
        return " / ".join(fmt(entries[p]) if p in entries else "-" for p in prompts)

    def mean_cost(key: tuple[str, int], name: str, spec: str) -> str:
        return format(float(np.mean([c[name] for c in costs[key]])), spec)

    print(f"prompts: {' / '.join(prompts)}; {seeds} seeds")
    print(f"| method | particles | prompt accuracy (of {seeds}) | PSNR to nearest crop (dB) | diversity across seeds "
          "[95% CI] | diversity across particles | evals / step / seed | s / step | trained / seed |")
    print("|---|---|---|---|---|---|---|---|---|")
    def accuracy(e: dict) -> str:
        return f"{e['prompt_accuracy'] * seeds:.0f}"

    def quality(e: dict) -> str:
        return f"{e['mean_picture_psnr']:.1f}"

    def spread(e: dict) -> str:
        return f"{e['diversity']:.2f} [{e['ci'][0]:.2f}, {e['ci'][1]:.2f}]"

    def within(e: dict) -> str:
        return f"{e['particle_diversity']:.2f}" if "particle_diversity" in e else "-"

    for key in sorted(cells, key=lambda k: (ORDER.index(k[0]) if k[0] in ORDER else 9, k[1])):
        entries = cells[key]
        print(f"| `{key[0]}` | {key[1]} | {join(entries, accuracy)} | {join(entries, quality)} | "
              f"{join(entries, spread)} | {join(entries, within)} | "
              f"{mean_cost(key, 'prior_evaluations_per_step', '.1f')} | {mean_cost(key, 'seconds_per_step', '.3f')} | "
              f"{mean_cost(key, 'trained_parameters', '.0f')} |")

if __name__ == "__main__":
    main()
