"""Depth artefacts of finished gen-3d runs (for sweeps made before metrics.json carried them).

    python benchmarks/fig6_depth.py outputs/batch/fig6

For every finished run: each seed's gaussians.ply rendered at the run's evaluation cameras, scored against
the references (fsd3d.metrics3d.score_scene with depths), then seed_spread over the seeds. Prints one line per
run: holes and depth artefacts (fraction of pixels solid in both scene and reference whose depth is off by
more than DEPTH_TOL) with their std over seeds.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from fsd3d.cameras import CameraRanges
from fsd3d.run import reference_renders
from fsd3d.metrics3d import score_scene, seed_spread
from fsd3d.ply import load_ply
from fsd3d.reference_prior import ReferencePrior
from fsd3d.renderer import render_scene


def main() -> None:
    torch.set_num_threads(1)
    sweep = Path(sys.argv[1])
    prior = ReferencePrior("mushroom")  # the references and their renders (prompt irrelevant here)
    views = CameraRanges().evaluation_cameras(32)  # the default ranges (the sweeps use them)
    refs = reference_renders(prior, views)  # rendered once for every run
    names = list(prior.references.names)
    for run in sorted(p for p in sweep.iterdir() if (p / "done.json").exists()):
        result = run / "result"
        cfg = json.loads((result / "run.json").read_text())["config"]
        scores = []
        for seed_dir in sorted(result.glob("seed_*"), key=lambda p: int(p.name.split("_")[1])):
            scene = load_ply(seed_dir / "gaussians.ply")
            with torch.no_grad():
                out = render_scene(scene, views, prior.background_tensor())
            scores.append(score_scene(out.rgb, out.alpha, refs.rgb, refs.alpha, names, out.depth, refs.depth))
        sp = seed_spread(scores)
        print(f"{cfg['prompt']:9s} {cfg['train']['method']:9s} seeds {sp['seeds']:2d}  holes {sp['holes']:.3f} "
              f"+- {sp['holes_std']:.3f}  depth artefacts {sp['depth_artefacts']:.3f} "
              f"+- {sp['depth_artefacts_std']:.3f}"
              f"  depth MAE {sp['depth_mae']:.3f} +- {sp['depth_mae_std']:.3f}  PSNR {sp['majority_psnr']:.1f}"
              f"  reached {sp['references_reached']:.0f}")


if __name__ == "__main__":
    main()
