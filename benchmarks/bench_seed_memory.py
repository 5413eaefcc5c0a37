"""Autograd bytes per view of the 3D loop's encoder (what `--seed-batch`'s default on CUDA counts, fsd3d/memory.py)
for the SD 2.1-sized VAE encoder (random weights: the bytes do not depend on them), and the seeds that fit in a
card's memory for a default Stable Diffusion run (2 views per seed).

    python benchmarks/bench_seed_memory.py [--resolutions 64,128] [--dtypes float32,bfloat16] [--target 512]

The encoder's saved activations grow with the pixels (convolutions and GroupNorms; its one attention runs as a
fused kernel, which saves no N x N matrix), so the bytes at `--target` are extrapolated from the largest measured
resolution by the pixel ratio; the rows at two resolutions show the growth (x4 per doubling). A 512 px encoder
forward takes minutes on a CPU core, hence the small sizes. bfloat16 stands for float16 (the same 2 bytes; CPU
float16 convolutions are slow). Prints GiB per view and per seed, and seeds at a time on 24, 40 and 80 GB cards
with SD 2.1 loaded in that dtype (UNet 866 M + VAE 84 M + text encoder 340 M parameters).
"""
from __future__ import annotations

import argparse

import torch

from fsd2d.priors.random_sd import random_codec, write_tokenizer
from fsd3d.memory import GIB, saved_bytes, seeds_that_fit

SD21_PARAMS = 866e6 + 84e6 + 340e6  # UNet, VAE, OpenCLIP-H text encoder of SD 2.1 base


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolutions", default="64,128")
    ap.add_argument("--target", type=int, default=512)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--views-per-seed", type=int, default=2)
    args = ap.parse_args()
    import tempfile
    from pathlib import Path

    torch.manual_seed(0)
    vae, _, _ = random_codec("sd21", write_tokenizer(Path(tempfile.mkdtemp())))
    encoder = lambda x: vae.encode(2 * x - 1).latent_dist.mean  # noqa: E731  (as fsd2d.priors.diffusers_prior)
    vae.requires_grad_(False)
    print(f"| dtype | measured MiB per view | GiB per {args.target} px view | GiB per seed | seeds on 24 GB | 40 GB "
          "| 80 GB |")
    print("|---|---|---|---|---|---|---|")
    for name in args.dtypes.split(","):
        dtype = getattr(torch, name)
        vae.to(dtype)
        measured = {}
        for res in map(int, args.resolutions.split(",")):
            def views(k: int):
                return encoder(torch.rand(k, 3, res, res, dtype=dtype, requires_grad=True))

            measured[res] = saved_bytes(lambda: views(2)) - saved_bytes(lambda: views(1))
        res = max(measured)
        per_view = measured[res] * (args.target / res) ** 2
        per_seed = args.views_per_seed * per_view
        weights = SD21_PARAMS * torch.finfo(dtype).bits / 8
        fits = [seeds_that_fit(int(gb * 1e9 - weights), int(per_seed), 64) for gb in (24, 40, 80)]
        shown = ", ".join(f"{b / 2**20:.0f} at {r} px" for r, b in measured.items())
        print(f"| {name} | {shown} | {per_view / GIB:.2f} | {per_seed / GIB:.2f} | {fits[0]} | {fits[1]} | {fits[2]} |")


if __name__ == "__main__":
    main()
