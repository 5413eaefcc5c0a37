"""Seconds to write one seed's gen-3d outputs (fsd3d.outputs), split by part.

    python benchmarks/bench_outputs.py [--resolution 512] [--device cuda] [--gaussians 1000] [--threads 1]

Always times the embedded prior's size (32 px, CPU), then --resolution on --device when either differs.
The scene is N random coloured Gaussians in a ball of radius ~0.4; 8 evaluation views plus a 4th
"reference" row in views.png (as with the embedded prior), 36 turntable frames (Gen3DConfig defaults).
Parts: ply, view pngs (views/az_*.png), views.png (the grid), turntable render (render, colour, upscale,
uint8, to CPU), turntable encode (MP4; GIF too with --gif). Best of --repeats after one warm-up.
On the CPU at 512 px the dense reference renderer needs few Gaussians (--gaussians-large).
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

from fsd3d.cameras import CameraRanges
from fsd3d.gaussians import GaussianScene, rgb_to_sh0
from fsd3d.config import Gen3DConfig
from fsd3d.outputs import (TURNTABLE_FPS, TurntableFormat, save_video, save_view_pngs, save_views_figure,
                           turntable_frames)
from fsd3d.ply import save_ply
from fsd3d.renderer import render_scene


def make_scene(n: int, device: torch.device, seed: int = 0) -> GaussianScene:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.2  # [N, 3]
    log_scales = torch.log(torch.rand(n, 3, generator=g) * 0.04 + 0.01)  # [N, 3]
    quats = torch.randn(n, 4, generator=g)  # [N, 4] wxyz
    logits = torch.rand(n, generator=g) * 4.0 - 1.0  # [N]
    sh0 = rgb_to_sh0(torch.rand(n, 3, generator=g))  # [N, 3]: colours in [0, 1]
    return GaussianScene.from_tensors(means, log_scales, quats, logits, sh0).to(device)


def timed(fn, repeats: int, device: torch.device):
    """(best seconds of `repeats` calls after one warm-up, the last result)."""
    result = fn()
    best = math.inf
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, result


def bench(resolution: int, device: torch.device, n: int, repeats: int, gif: bool) -> dict[str, float]:
    config = Gen3DConfig()
    ranges = CameraRanges()  # the embedded prior's (its resolved ranges)
    scene = make_scene(n, device)
    background = torch.ones(3, device=device)
    views = [c.to(device) for c in ranges.evaluation_cameras(resolution, config.eval_views)]
    turn_cams = [c.to(device) for c in ranges.evaluation_cameras(resolution, config.turntable_frames)]
    with torch.no_grad():
        rendered = render_scene(scene, views, background)
    seed_metrics = {"reference_renders": rendered.rgb.cpu(), "majority": "bench/reference"}
    times = {}
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        times["ply"], _ = timed(lambda: save_ply(out / "gaussians.ply", scene), repeats, device)
        times["view pngs"], _ = timed(lambda: save_view_pngs(out / "views", rendered), repeats, device)
        times["views.png"], _ = timed(lambda: save_views_figure(out / "views.png", rendered, seed_metrics),
                                      repeats, device)
        times["turn render"], frames = timed(lambda: turntable_frames(scene, turn_cams, background), repeats, device)
        for fmt in [TurntableFormat.MP4] + ([TurntableFormat.GIF] if gif else []):
            path = out / fmt.filename
            times[f"{fmt.value} encode"], _ = timed(lambda: save_video(path, frames, TURNTABLE_FPS, fmt), repeats,
                                                    device)
            times[f"{fmt.value} MB"] = path.stat().st_size / 2**20
        times["frame"] = f"{frames.shape[2]}x{frames.shape[1]}"
    times["total"] = sum(v for k, v in times.items() if k in ("ply", "view pngs", "views.png", "turn render",
                                                                "mp4 encode"))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gaussians", type=int, default=1000, help="Gaussians at 32 px (and on CUDA)")
    ap.add_argument("--gaussians-large", type=int, default=20, help="Gaussians at --resolution on the CPU")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gif", action="store_true", help="also time the GIF encoder")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    runs = [(32, torch.device("cpu"), args.gaussians)]
    if (args.resolution, device.type) != (32, "cpu"):
        runs.append((args.resolution, device, args.gaussians if device.type == "cuda" else args.gaussians_large))
    for res, dev, n in runs:
        t = bench(res, dev, n, args.repeats, args.gif)
        parts = "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in t.items())
        print(f"{res:>4} px {dev.type:<4} N={n:<5} seconds: {parts}")


if __name__ == "__main__":
    main()
