"""Milliseconds per render (4 cameras) of the PyTorch reference, and of gsplat when CUDA and gsplat exist.

    python benchmarks/bench_render.py [--repeats 3] [--threads 1]

Scenes: N random Gaussians in a ball of radius ~0.5 (the object scale of `CameraRanges`), N in
(500, 2000), images 32 and 64 px square. "fwd" runs under torch.no_grad(); "fwd+bwd" renders with
gradients on all Gaussian parameters and backpropagates a weighted sum of rgb, alpha and depth.
"""
from __future__ import annotations

import argparse
import importlib.util
import time

import torch

from fsd3d.cameras import CameraRanges, sample_cameras, stack_cameras
from fsd3d.renderer import render_gsplat, render_reference


def make_scene(n: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.2  # [N, 3]
    quats = torch.randn(n, 4, generator=g)  # [N, 4]
    scales = torch.rand(n, 3, generator=g) * 0.04 + 0.01  # [N, 3]
    opacities = torch.rand(n, generator=g) * 0.9 + 0.05  # [N]
    colors = torch.rand(n, 3, generator=g)  # [N, 3]
    return [t.to(device) for t in (means, quats, scales, opacities, colors)]


def time_ms(fn, repeats: int, device: torch.device) -> float:
    """Best of `repeats` timed calls after one warm-up (the minimum is robust to a shared CPU)."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 1000.0 * best


def bench(renderer, device: torch.device, n: int, size: int, repeats: int) -> tuple[float, float]:
    scene = make_scene(n, device)
    cams = sample_cameras(4, CameraRanges(), torch.Generator().manual_seed(1), size, size, device=device)
    viewmats, Ks = stack_cameras(cams)
    bg = torch.ones(3, device=device)

    def forward():
        with torch.no_grad():
            renderer(*scene, viewmats, Ks, size, size, bg)

    def forward_backward():
        leaves = [t.clone().requires_grad_(True) for t in scene]
        out = renderer(*leaves, viewmats, Ks, size, size, bg)
        (out.rgb.sum() + out.alpha.sum() + 0.1 * out.depth.sum()).backward()

    return time_ms(forward, repeats, device), time_ms(forward_backward, repeats, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default); "
                        "on a CPU shared with other jobs, 1 is often much faster than oversubscribing")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    backends = [("reference", render_reference, torch.device("cpu"))]
    if torch.cuda.is_available():
        backends.append(("reference", render_reference, torch.device("cuda")))
        if importlib.util.find_spec("gsplat") is not None:
            backends.append(("gsplat", render_gsplat, torch.device("cuda")))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, 4 cameras, best-of-{args.repeats} ms per render")
    print(f"{'backend':<10} {'device':<6} {'N':>5} {'px':>4} {'fwd':>10} {'fwd+bwd':>10}")
    for name, fn, device in backends:
        for n in (500, 2000):
            for size in (32, 64):
                fwd, fwd_bwd = bench(fn, device, n, size, args.repeats)
                print(f"{name:<10} {device.type:<6} {n:>5} {size:>4} {fwd:>10.1f} {fwd_bwd:>10.1f}")


if __name__ == "__main__":
    main()
