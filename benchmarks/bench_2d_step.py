"""Time one step of DDIM, FSD, SDS and the family (ISM, SDI, CSD, NFSD) with the same prior and batch;
and batching seeds vs a loop.

    PYTHONPATH=. python benchmarks/bench_2d_step.py [--model imageset] [--seeds 16] [--steps 50] [--cfg 7.5] [--family]

Prints ms/step per method and its ratio to DDIM's (the prior call is the whole cost, so FSD/SDS's limit is
1.0; the family's extra prior calls, fsd2d.family.prior_calls averaged over t in [20, 980], are printed
beside), and the speed-up of one batch of all seeds over running the seeds one by one.
"""
from __future__ import annotations

import argparse
import time

import torch

from fsd2d.guidance import Guidance
from fsd2d.priors.load import load_prior
from fsd2d.family import prior_calls
from fsd2d.sampling import FAMILY, DistillConfig, Method, ddim_sample, distill, initial_noise
from fsd2d.schedule import timesteps


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="imageset")
    ap.add_argument("--prompt", default="cat")
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--resolution", type=int, default=None)
    ap.add_argument("--family", action="store_true", help="also time ISM, SDI, CSD and NFSD")
    ap.add_argument("--negative-prompt", default="", help="NFSD's negative prompt ('' saves one prior call)")
    args = ap.parse_args()

    prior = load_prior(args.model, args.device, "auto", args.resolution)
    g = Guidance.from_prompts(prior, args.prompt, args.negative_prompt, args.cfg)
    seeds = list(range(args.seeds))
    grid = timesteps(args.steps, 20, 980)
    base = DistillConfig(steps=args.steps)
    runs = {
        "ddim": lambda s: ddim_sample(prior, g, initial_noise(prior, s), grid),
        "fsd": lambda s: distill(prior, g, Method.FSD.config(base), s),
        "sds": lambda s: distill(prior, g, Method.SDS.config(base), s),
    }
    if args.family:
        for m in FAMILY:
            runs[m.value] = lambda s, m=m: distill(prior, g, m.config(base), s)
    for name in ("ddim", "fsd"):  # warm-up (imports, allocator, BLAS threads, Adam's first step)
        runs[name](seeds[:1])
    per_step = {name: best_of(lambda: fn(seeds), args.repeats) / args.steps for name, fn in runs.items()}

    print(f"prior {type(prior).__name__} {prior.latent_shape} {prior.dtype} on {prior.device}, "
          f"{args.seeds} seeds in one batch, cfg {args.cfg} (2 x batch per prior call), {args.steps} steps")
    print(f"{'method':<8}{'ms/step':>10}{'ratio to DDIM':>16}{'prior evals/sample/step':>26}")

    def mean_calls(rule) -> float:  # over the grid 980..20 (= the mean over t ~ U[20, 980] for uniform t)
        null = args.negative_prompt == ""
        return sum(prior_calls(rule, int(t), args.cfg, base.family, null) for t in grid) / len(grid)

    calls = {"ddim": mean_calls(Method.FSD.config(base).rule)}
    calls |= {"fsd": calls["ddim"], "sds": calls["ddim"]} | {m.value: mean_calls(r) for m, r in FAMILY.items()}
    for name, t in per_step.items():
        print(f"{name:<8}{1e3 * t:>10.2f}{t / per_step['ddim']:>16.2f}{calls[name]:>26.2f}")
    one_by_one = best_of(lambda: [runs["fsd"]([s]) for s in seeds], 1) / args.steps
    print(f"FSD, {args.seeds} seeds one by one: {1e3 * one_by_one:.2f} ms/step "
          f"-> batching speed-up x{one_by_one / per_step['fsd']:.1f}")


if __name__ == "__main__":
    main()
