"""Is Adam invariant to the weight w(t) of the distillation gradient? Only to a constant one. A simulation:
Adam on a gradient stream g_i = w(t_i) (s + n_i), with a unit signal s and unit-variance noise n_i per parameter,
t_i the 3D schedule (linear 980 -> 20, or the authors' 980 -> 212) over 500 steps, w = sigma_t / alpha_t on SD's
schedule (13.0 at t = 980, 0.60 at t = 212, 0.14 at t = 20). It prints the mean |step| with w = sigma/alpha divided by
the one with w = 1, per fifth of the run: 1 everywhere would be invariance.

    python benchmarks/adam_weighting.py [--steps 500] [--params 20000]

With beta2 = 0.99, sqrt(v) remembers w over ~100 steps, and w falls by 10-100x over the run: late steps are made
with a denominator still holding earlier, larger w, so they shrink (docs/concepts/conventions.md quotes the figures).
"""
from __future__ import annotations

import argparse

import torch

from fsd2d.schedule import Anneal, scaled_linear_schedule, timesteps


def mean_steps(w: torch.Tensor, betas: tuple[float, float], params: int, seed: int = 0) -> torch.Tensor:
    """|Adam step| averaged over `params` independent parameters, per step [steps] (lr 1, eps 1e-15)."""
    gen = torch.Generator().manual_seed(seed)
    b1, b2 = betas
    m = torch.zeros(params, dtype=torch.float64)
    v = torch.zeros(params, dtype=torch.float64)
    out = []
    for i, wi in enumerate(w.tolist(), start=1):
        g = wi * (1.0 + torch.randn(params, generator=gen, dtype=torch.float64))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        step = (m / (1 - b1 ** i)) / ((v / (1 - b2 ** i)).sqrt() + 1e-15)
        out.append(step.abs().mean())
    return torch.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--params", type=int, default=20000)
    args = ap.parse_args()
    ratio = scaled_linear_schedule().snr_ratio(torch.arange(1000))  # sigma_t / alpha_t, float64 [1000]
    print("| schedule | Adam betas | w(t) over the run | step(sigma/alpha) / step(1), by fifth of the run | least |")
    print("|---|---|---|---|---|")
    for anneal in (Anneal.LINEAR, Anneal.AUTHORS_SD):
        t = timesteps(args.steps, 20, 980, anneal)
        w = ratio[t]
        for betas in ((0.9, 0.99), (0.0, 0.99)):
            r = mean_steps(w, betas, args.params) / mean_steps(torch.ones_like(w), betas, args.params)
            fifths = [f"{float(c.mean()):.2f}" for c in r.chunk(5)]
            print(f"| {anneal.value} | {betas} | {float(w[0]):.2f} -> {float(w[-1]):.3f} | {' / '.join(fifths)} | {float(r.min()):.2f} |")


if __name__ == "__main__":
    main()
