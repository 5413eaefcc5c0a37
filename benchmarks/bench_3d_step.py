"""Time per 3D step: S seeds advancing together (one prior call) against the same seeds one after another.

    python benchmarks/bench_3d_step.py --threads 1 --seeds 4          # CPU, embedded reference prior, 32 px
    python benchmarks/bench_3d_step.py --sd21 --device cuda --seeds 4 --compile --json
    python benchmarks/bench_3d_step.py --model /path/to/sd-folder --device cuda --seeds 1
    python benchmarks/bench_3d_step.py --mvdream --device cuda --seeds 4 --json       # random full-size MVDream

With --sd21 a randomly initialised Stable Diffusion 2.1-base-sized pipeline is built in a temporary folder
(random weights cost what real ones do); --model takes a folder instead (build one once with
`python -c "from fsd2d.priors.random_sd import build_random_sd; build_random_sd('DIR', 'sd21')"`).
SD defaults: 512 px renders, 20k Gaussians, 1 camera per seed and step. No densification (a fixed N).
With --mvdream a random full-size MVDream (SD 2.1-base multi-view UNet, `build_random_mvdream(DIR, "full")`) is
built the same way (--model also takes an MVDream folder): each camera is one 4-view set, 256 px renders.

Printed: ms per step for the batch of S seeds (`batched_ms_per_step`) and for the S seeds run one after
another (`sequential_ms_per_step`, per step of all S), their ratio, the render / prior / rest split of a
batched step (a separate run, synchronised per section), and on CUDA the peak GPU memory of the batched
run. --json prints one JSON object (last line) instead of the table.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace

import torch

from fsd3d.densify import Densify, DensifyConfig
from fsd3d.config import Gen3DConfig
from fsd3d.run import load_scene_prior
from fsd3d.config import NoiseKind, Train3DConfig
from fsd3d.checkpoint import initial_state
from fsd3d.settings import resolve
from fsd3d.train import train_seeds


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_ms(prior, train: Train3DConfig, seeds: list[int], warmup: int, steps: int,
           timings: dict[str, float] | None = None) -> float:
    """ms per step for `seeds` advancing together, after `warmup` untimed steps (compilation, allocator)."""
    device = prior.prior.device
    states = [initial_state(train, s, device=device) for s in seeds]
    train_seeds(prior, replace(train, steps=warmup), states)
    sync(device)
    t0 = time.perf_counter()
    train_seeds(prior, replace(train, steps=warmup + steps), states, timings=timings)
    sync(device)
    return 1e3 * (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = ap.add_mutually_exclusive_group()
    source.add_argument("--sd21", action="store_true", help="build a random SD 2.1-sized pipeline (temporary folder)")
    source.add_argument("--mvdream", action="store_true", help="build a random full-size MVDream (temporary folder)")
    source.add_argument("--model", default=None,
                        help="a Stable Diffusion or MVDream folder (default: the embedded prior)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--resolution", type=int, default=None, help="render size (default 32 embedded, 512 SD)")
    ap.add_argument("--gaussians", type=int, default=None, help="Gaussians per scene (default 1000 embedded, 20000 SD)")
    ap.add_argument("--cameras", type=int, default=None, help="cameras per seed and step (default 2 embedded, 1 SD)")
    ap.add_argument("--seeds", type=int, default=4, help="how many seeds advance together")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3, 10 with --compile)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet (CUDA graphs) and VAE encoder")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sd = args.sd21 or args.mvdream or args.model is not None
    warmup = args.warmup if args.warmup is not None else (10 if args.compile else 3)

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or "references"
        if args.sd21:
            from fsd2d.priors.random_sd import build_random_sd

            t0 = time.perf_counter()
            model = str(build_random_sd(tmp, "sd21"))
            if not args.json:
                print(f"built a random SD 2.1-sized model in {time.perf_counter() - t0:.0f} s")
        if args.mvdream:
            from fsd2d.priors.random_sd import build_random_mvdream

            t0 = time.perf_counter()
            model = str(build_random_mvdream(tmp, "full"))
            if not args.json:
                print(f"built a random full-size MVDream model in {time.perf_counter() - t0:.0f} s")
        train = Train3DConfig(
            steps=warmup + args.steps, method=NoiseKind.FSD, cfg=7.5 if sd else None, checkpoint_every=10**9,
            num_gaussians=args.gaussians or (20000 if sd else 1000),
            cameras_per_step=args.cameras or (1 if sd else 2), densify=DensifyConfig(strategy=Densify.NONE))
        config = Gen3DConfig(model=model, prompt="a hamburger" if sd else "mushroom", resolution=args.resolution,
                             device=args.device, train=train, compile=args.compile)
        prior = load_scene_prior(config)
        train = resolve(config, prior).train
        device = prior.prior.device
        seeds = list(range(args.seeds))

        sequential = sum(run_ms(prior, train, [s], warmup, args.steps) for s in seeds)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        batched = run_ms(prior, train, seeds, warmup, args.steps)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        timings: dict[str, float] = {}
        run_ms(prior, train, seeds, warmup, args.steps, timings)

    split = {f"{k}_ms": 1e3 * timings.get(k, 0.0) / args.steps for k in ("render", "prior", "rest")}
    result = {
        "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "prior": type(prior).__name__,
        "model": "random sd21" if args.sd21 else "random mvdream full" if args.mvdream else model,
        "views_per_step": train.cameras_per_step * prior.views_per_camera,  # per seed
        "resolution": prior.resolution, "latent": list(prior.prior.latent_shape), "gaussians": train.num_gaussians,
        "cameras": train.cameras_per_step, "seeds": args.seeds, "compile": args.compile, "steps": args.steps,
        "batched_ms_per_step": batched, "sequential_ms_per_step": sequential, "ratio": sequential / batched,
        "steps_per_s": 1e3 / batched, "seed_steps_per_s": 1e3 * args.seeds / batched,
        **split, "peak_gib": peak, "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['prior']} on {device}, {train.num_gaussians} Gaussians, {train.cameras_per_step} camera(s) per "
          f"seed and step, {prior.resolution} px renders, latent {tuple(prior.prior.latent_shape)}, "
          f"{args.seeds} seeds, {args.steps} timed steps{', compiled' if args.compile else ''}")
    print(f"  batched     {batched:9.1f} ms/step  ->  {result['steps_per_s']:.2f} steps/s, "
          f"{result['seed_steps_per_s']:.2f} seed-steps/s")
    print(f"  sequential  {sequential:9.1f} ms/step of all {args.seeds} seeds  ->  ratio {result['ratio']:.2f}")
    for k in ("render", "prior", "rest"):
        print(f"    {k:<7}{split[k + '_ms']:9.1f} ms/step (batched, synchronised per section)")
    if peak is not None:
        print(f"  peak GPU memory {peak:.2f} GiB (batched)")


if __name__ == "__main__":
    main()
