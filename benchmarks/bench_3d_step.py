"""Time per 3D step, split into render, prior and the rest (encode, noise, backward, Adam).

    python benchmarks/bench_3d_step.py                      # CPU, embedded reference prior, 32 px
    python benchmarks/bench_3d_step.py --sd21 --device cuda # random SD 2.1-sized pipeline, 512 px renders

With --sd21 a randomly initialised Stable Diffusion 2.1 base architecture is built in a temporary folder
(random weights cost what real ones do) and loaded through the same code path as a user's model.
Prints ms per step per section, steps per second and, on CUDA, the peak GPU memory.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from fsd3d.gen3d import Gen3DConfig, load_scene_prior
from fsd3d.train import NoiseKind, Train3DConfig, initial_state, train_seed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sd21", action="store_true", help="random SD 2.1-sized pipeline instead of the embedded prior")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--resolution", type=int, default=None, help="render size (default 32 embedded, 512 SD)")
    ap.add_argument("--gaussians", type=int, default=1000)
    ap.add_argument("--cameras", type=int, default=2, help="cameras per step")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        model = "references"
        if args.sd21:
            from fsd2d.priors.random_sd import build_random_sd

            t0 = time.perf_counter()
            model = str(build_random_sd(tmp, "sd21"))
            print(f"built a random SD 2.1-sized model in {time.perf_counter() - t0:.0f} s")
        train = Train3DConfig(steps=args.steps + 2, num_gaussians=args.gaussians, cameras_per_step=args.cameras,
                              method=NoiseKind.FSD, cfg=7.5 if args.sd21 else None, checkpoint_every=10**9)
        config = Gen3DConfig(model=model, prompt="a hamburger" if args.sd21 else "mushroom",
                             resolution=args.resolution, device=args.device, train=train)
        prior = load_scene_prior(config)
        device = prior.prior.device
        state = initial_state(train, 0, device=device)
        from dataclasses import replace

        train_seed(prior, replace(train, steps=2), 0, state)  # warm-up: allocator, kernels, BLAS threads
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        train_seed(prior, train, 0, state, timings=timings)
        wall = time.perf_counter() - t0

    n = args.steps
    print(f"{type(prior).__name__} on {device}, {args.gaussians} Gaussians, {args.cameras} cameras/step, "
          f"{prior.resolution} px renders, latent {prior.prior.latent_shape}, {n} steps")
    for name in ("render", "prior", "rest"):
        print(f"  {name:<7}{1e3 * timings.get(name, 0.0) / n:9.1f} ms/step")
    print(f"  total  {1e3 * wall / n:9.1f} ms/step  ->  {n / wall:.2f} steps/s")
    if device.type == "cuda":
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
