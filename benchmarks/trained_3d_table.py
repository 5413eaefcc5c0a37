"""The 3D tables of docs/results/ (trained-world.md, noise-designs.md, gpu-profiles.md) on the trained networks, from finished gen-3d sweeps (experiments/trained_3d_*.yaml).

    python benchmarks/trained_3d_table.py outputs/batch/trained_3d_sd outputs/batch/trained_3d_mvdream
    python benchmarks/trained_3d_table.py outputs/batch/trained_defaults_sd outputs/batch/trained_defaults_mvdream

One row per (model [--defaults], method, prompt), from each run's metrics.json (fsd3d.gen3d: scored against the references
the model was trained on): variants reached (mean PSNR >= 22 dB, with the 95 % bootstrap interval over seeds),
variants nearest (distinct nearest references over the seeds, at any PSNR), mean PSNR to the nearest reference
+- std over seeds, holes +- std, depth artefacts +- std, diversity (mean pairwise 1 - SSIM) [95 % interval].
Then one line per (model, method) averaged over the prompts, with what the method cost (metrics.json's `cost`:
prior evaluations per step and seed, seconds per step of the whole seed batch, parameters trained per seed); VSD / ESD
with P particles per seed are their own method, `vsd xP`, and a last table gives their diversity across each seed's
particles (metrics.json's `particle_diversity`, the mean over its seeds) per prompt.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

PROMPTS = ("mushroom", "snowman", "cactus", "tree")


def main() -> None:
    rows, means = [], defaultdict(lambda: defaultdict(list))
    for sweep in map(Path, sys.argv[1:]):
        for run in sorted(p for p in sweep.iterdir() if (p / "done.json").is_file()):
            cfg = json.loads((run / "result" / "run.json").read_text())["config"]
            profile = cfg["train"].get("profile")  # --defaults, if the run gave it (experiments/trained_defaults_*)
            m = json.loads((run / "result" / "metrics.json").read_text())
            sp = m["spread"]
            nearest = len({s["majority"] for s in m["per_seed"].values()})
            particles = cfg["train"].get("family", {}).get("particles", 1)  # VSD / ESD's particles per seed
            key = (cfg["model"] + (f" --defaults {profile}" if profile else ""),
                   m["method"] + (f" x{particles}" if particles > 1 else ""))
            rows.append((key, cfg["prompt"], m, sp, nearest))
            cost = m.get("cost") or {}
            for name, value in (("reached", m["references_reached"]), ("nearest", nearest),
                                ("psnr", sp["majority_psnr"]), ("holes", sp["holes"]),
                                ("depth", sp["depth_artefacts"]), ("diversity", sp["diversity"]),
                                ("evals", cost.get("prior_evaluations_per_step")),
                                ("seconds", cost.get("seconds_per_step")), ("trained", cost.get("trained_parameters"))):
                means[key][name].append(value)
    order = {"fsd": 0, "sds": 1, "sds-annealed": 2, "constant": 3, "surface": 4, "vsd": 5, "esd": 6, "dsd": 7}
    rows.sort(key=lambda r: (r[0][0], order.get(r[0][1].split()[0], 9), r[0][1],
                             PROMPTS.index(r[1]) if r[1] in PROMPTS else 9))
    print("| model | method | prompt | reached of 5 [95% CI] | nearest of 5 | PSNR (dB) | holes | depth artefacts "
          "| diversity [95% CI] |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (model, method), prompt, m, sp, nearest in rows:
        lo, hi = sp["references_reached_ci"]
        dlo, dhi = sp["diversity_ci"]
        print(f"| {model} | {method} | {prompt} | {m['references_reached']} [{lo:.0f}, {hi:.0f}] | {nearest} | "
              f"{sp['majority_psnr']:.1f} +- {sp['majority_psnr_std']:.1f} | {sp['holes']:.3f} +- {sp['holes_std']:.3f} | "
              f"{sp['depth_artefacts']:.3f} +- {sp['depth_artefacts_std']:.3f} | {sp['diversity']:.2f} [{dlo:.2f}, {dhi:.2f}] |")
    print()
    print("| model | method | prompts | reached of 5 | nearest of 5 | PSNR (dB) | holes | depth artefacts | diversity "
          "| evals / step | s / step | trained |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")

    def mean(values: list, fmt: str) -> str:  # a cost the runs did not record (older runs): -
        return "-" if any(v is None for v in values) else format(float(np.mean(values)), fmt)

    for (model, method), v in sorted(means.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1].split()[0], 9),
                                                                    kv[0][1])):
        print(f"| {model} | {method} | {len(v['psnr'])} | {np.mean(v['reached']):.2f} | {np.mean(v['nearest']):.2f} | "
              f"{np.mean(v['psnr']):.1f} | {np.mean(v['holes']):.3f} | {np.mean(v['depth']):.3f} | "
              f"{np.mean(v['diversity']):.2f} | {mean(v['evals'], '.1f')} | {mean(v['seconds'], '.3f')} | "
              f"{mean(v['trained'], '.0f')} |")
    particle_rows = [(key, prompt, m["particle_diversity"]) for key, prompt, m, _, _ in rows
                     if "particle_diversity" in m]
    if particle_rows:
        print()
        print("| model | method | prompt | diversity across particles |")
        print("|---|---|---|---|")
        for (model, method), prompt, diversity in particle_rows:
            print(f"| {model} | {method} | {prompt} | {diversity:.2f} |")


if __name__ == "__main__":
    main()
