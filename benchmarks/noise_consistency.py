"""Multi-view consistency of the one-step x_gt under each noise design, on finished gen-3d sweeps
(experiments/surface_noise.yaml): for every run and seed, the final scene at 8 camera pairs 10 degrees apart in
azimuth (azimuths 0, 45, ..., 315 and +10; middle elevation, distance and fov of the run's cameras), at t = 500:

    x_t = alpha_t z(c) + sigma_t eps(c),   x_gt(c) = (x_t - sigma_t eps_hat(x_t, c)) / alpha_t,  decoded to pixels

with eps(c) the run's own noise function and seed (fresh noise for sds, drawn from a fixed generator), then the
mean |x_gt(a) - x_gt(b) warped onto a by the rendered depth| over the pixels solid and visible in both
(fsd3d.metrics3d.view_disagreement), and the same for the noise itself (the noise at b warped onto a: its
correlation with a's; 1 = the same noise on the same surface point). Lower x_gt disagreement and higher noise
correlation = more consistent targets across neighbouring views.

    python benchmarks/noise_consistency.py outputs/batch/surface_noise [more sweeps] [--seeds 16]

One row per (model, method, prompt): x_gt disagreement mean +- std over seeds, noise correlation mean +- std;
then one line per (model, method) averaged over the prompts.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fsd2d.family import Rule, gradient
from fsd2d.updates import one_step_estimate
from fsd3d.cameras import CameraRanges, orbit_camera
from fsd3d.config import Gen3DConfig
from fsd3d.run import load_scene_prior
from fsd3d.metrics3d import view_disagreement, warp_view
from fsd3d.ply import load_ply
from fsd3d.renderer import render_scene
from fsd3d.config import NoiseKind
from fsd2d.seeds import seed_for
from fsd3d.train import view_points

T_PROBE = 500
PAIRS = [(45.0 * k, 45.0 * k + 10.0) for k in range(8)]


def pair_scores(scene_prior, train: dict, method: NoiseKind, seed: int, scene) -> tuple[float, float]:
    """(x_gt disagreement, noise correlation), each the mean over the PAIRS, for one seed's scene."""
    prior = scene_prior.prior
    res = scene_prior.resolution
    ranges = CameraRanges(**{k: tuple(v) if isinstance(v, list) else v for k, v in train["cameras"].items()})
    mid = lambda r: 0.5 * (r[0] + r[1])  # noqa: E731
    fov = mid(ranges.fov)
    dist = ranges.distance(mid(ranges.radius), fov)
    noise_fn = method.noise_function(prior.latent_shape, train["beta"], seed_for(seed, "noise-map"), train["theta"],
                                     train["alpha0"])
    gen = torch.Generator().manual_seed(seed_for(seed, "consistency"))
    dis, cor = [], []
    for az_a, az_b in PAIRS:
        cams = [orbit_camera(mid(ranges.elevation), az, dist, fov, res, res) for az in (az_a, az_b)]
        views = scene_prior.expand_cameras(cams)  # MVDream: each camera's 4-view set; we score the first views
        with torch.no_grad():
            out = render_scene(scene, views, scene_prior.background_tensor())
            rgb = out.rgb.clamp(0, 1) if train.get("clamp_renders") else out.rgb
            z = prior.encode(rgb.to(prior.dtype))
            el_az = torch.tensor([(v.elevation, v.azimuth) for v in views])
            noise = noise_fn(el_az[:, 0], el_az[:, 1], out.alpha, gen, dtype=prior.dtype,
                             points=view_points(noise_fn, out, views))
            view_prior, guidance = scene_prior.view_batch(views, train["cfg"])
            t = torch.full((len(views),), T_PROBE, dtype=torch.long)
            est = gradient(Rule.SDS, view_prior, guidance, guidance.null_or_uncond, z, t, noise)
            alpha, sigma = prior.schedule.alpha_sigma(t, prior.dtype, prior.device)
            x_gt = prior.decode(one_step_estimate(est.x_t, est.eps_hat, alpha, sigma)).float()  # [V, 3, R, R]
        a, b = 0, scene_prior.views_per_camera
        geo = (out.depth[a], out.alpha[a], views[a], out.depth[b], out.alpha[b], views[b])
        dis.append(view_disagreement(x_gt[a], x_gt[b], *geo))
        up = F.interpolate(noise.float(), size=(res, res), mode="nearest")  # the noise at pixel resolution
        warped, mask = warp_view(up[b], *geo[:2], views[a], *geo[3:5], views[b])
        if mask.sum() > 8:
            x, y = up[a][:, mask].flatten(), warped[:, mask].flatten()
            cor.append(float(torch.corrcoef(torch.stack([x, y]))[0, 1]))
    return float(np.nanmean(dis)), float(np.nanmean(cor)) if cor else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sweeps", nargs="+", type=Path)
    ap.add_argument("--seeds", type=int, default=16, help="Score at most this many seeds per run.")
    args = ap.parse_args()
    torch.manual_seed(0)
    rows, means = [], defaultdict(lambda: defaultdict(list))
    for sweep in args.sweeps:
        for run in sorted(p for p in sweep.iterdir() if (p / "done.json").is_file()):
            record = json.loads((run / "result" / "run.json").read_text())
            cfg, train = record["config"], record["train_resolved"]
            method = NoiseKind(train["method"])
            scene_prior = load_scene_prior(Gen3DConfig(model=cfg["model"], prompt=cfg["prompt"],
                                                       resolution=cfg.get("resolution")))
            scores = [pair_scores(scene_prior, train, method, int(seed), load_ply(run / "result" / f"seed_{seed}" /
                                                                                    "gaussians.ply"))
                      for seed in cfg["seeds"][: args.seeds]]
            d, c = np.array(scores).T
            key = (cfg["model"], method.value)
            rows.append((key, cfg["prompt"], d, c))
            means[key]["d"].append(d.mean())
            means[key]["c"].append(np.nanmean(c))
    order = {"fsd": 0, "constant": 1, "sds-annealed": 2, "surface": 3}
    print(f"| model | method | prompt | x_gt disagreement (t = {T_PROBE}) | noise correlation, 10 degrees apart |")
    print("|---|---|---|---|---|")
    for (model, method), prompt, d, c in sorted(rows, key=lambda r: (r[0][0], order.get(r[0][1], 9), r[1])):
        print(f"| {model} | {method} | {prompt} | {d.mean():.4f} +- {d.std(ddof=1):.4f} | "
              f"{np.nanmean(c):.3f} +- {np.nanstd(c, ddof=1):.3f} |")
    print()
    print("| model | method | prompts | x_gt disagreement | noise correlation |")
    print("|---|---|---|---|---|")
    for (model, method), v in sorted(means.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9))):
        print(f"| {model} | {method} | {len(v['d'])} | {np.mean(v['d']):.4f} | {np.mean(v['c']):.3f} |")


if __name__ == "__main__":
    main()
