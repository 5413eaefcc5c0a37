"""The 2D table of docs/results/trained-world.md on the trained tiny-sd, from a finished `fsd batch experiments/trained_2d.yaml` sweep.

    python benchmarks/trained_2d_table.py [outputs/batch/trained_2d]

One row per (CFG, method), each cell `prompt1 / prompt2 / ...` over the sweep's prompts: prompt accuracy
(seeds whose nearest picture over all crops is the prompt's), mean PSNR to that nearest crop, mean PSNR to the
nearest of the exact prior's 64 crops (a copy would score high), mean PSNR to DDIM from the same seed (+- its std
over the seeds), and the diversity across seeds (mean pairwise 1 - SSIM).
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def main() -> None:
    sweep = Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/batch/trained_2d")
    cells: dict[tuple[float, str], dict[str, dict]] = defaultdict(dict)
    prompts: list[str] = []
    for run in sorted(p for p in sweep.iterdir() if (p / "done.json").is_file()):
        config = json.loads((run / "result" / "run.json").read_text())["config"]
        metrics = json.loads((run / "result" / "metrics.json").read_text())
        if config["prompt"] not in prompts:
            prompts.append(config["prompt"])
        for method, entry in metrics["methods"].items():
            cells[config["cfg"], method][config["prompt"]] = entry
    prompts.sort(key=["cat", "astronaut", "coffee"].index if set(prompts) <= {"cat", "astronaut", "coffee"} else str)
    seeds = len(next(iter(next(iter(cells.values())).values()))["per_seed"])

    def join(entries: dict, key: str, fmt: str) -> str:
        out = []
        for p in prompts:
            v = entries.get(p, {}).get(key)
            if v is None:
                out.append("-")
            elif key == "mean_psnr_to_ddim" and float(v) > 60:  # DDIM itself, fsd-exact (= DDIM to rounding)
                out.append("= DDIM")
            elif key == "mean_psnr_to_ddim":  # with its std over the seeds
                per = [float(q["psnr_to_ddim"]) for q in entries[p]["per_seed"]]
                out.append(f"{float(v):.1f} +- {np.std(per, ddof=1):.1f}")
            else:
                out.append(format(float(v) * (seeds if key == "prompt_accuracy" else 1), fmt))
        return " / ".join(out)

    print(f"prompts: {' / '.join(prompts)}; {seeds} seeds")
    print("| CFG | method | prompt accuracy (of %d) | PSNR to nearest crop (dB) | PSNR to exact prior's nearest crop (dB) "
          "| PSNR to DDIM (dB) | diversity (1 - SSIM) |" % seeds)
    print("|---|---|---|---|---|---|---|")
    for (cfg, method), entries in sorted(cells.items(), key=lambda kv: (kv[0][0], list(cells).index(kv[0]))):
        print(f"| {cfg:g} | `{method}` | {join(entries, 'prompt_accuracy', '.0f')} | "
              f"{join(entries, 'mean_picture_psnr', '.1f')} | {join(entries, 'mean_exact_set_psnr', '.1f')} | "
              f"{join(entries, 'mean_psnr_to_ddim', '.1f')} | {join(entries, 'diversity', '.2f')} |")


if __name__ == "__main__":
    main()
