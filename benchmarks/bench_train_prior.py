"""Seconds per training step of `fsd train-prior` (VAE and denoiser stages) for each dataset and arch, and the
projected time of a default run (the shipped models' settings), on this machine.

    python benchmarks/bench_train_prior.py --threads 1 [--steps 20] [--json]

Prints one row per (dataset, arch): parameters, VAE s/step (batch 32), denoiser (UNet; SD3: transformer) s/step
(batch 64), the default run's projection (its arch's VAE and denoiser steps, fsdtrain.train.ARCH_DEFAULTS) and,
for the objects datasets, the seconds to render the camera pool.
"""
from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace

import torch

from fsdtrain import models
from fsdtrain.datasets import Dataset, build_dataset
from fsdtrain.datasets import ObjectPool
from fsdtrain.models import Arch
from fsdtrain.train import (DEFAULT_POOL, TrainPriorConfig, build_networks, caption_encoder, flow_loss, latents,
                            sample_latents, unet_loss, vae_loss)
from fsd2d.schedule import flow_schedule, scaled_linear_schedule


def time_steps(step, n: int) -> float:
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - start) / n


def bench(dataset: Dataset, arch: Arch, steps: int) -> dict:
    config = TrainPriorConfig(dataset, arch=arch)
    tokenizer, text, vae, unet = build_networks(config)
    start = time.perf_counter()
    pool = 16 if dataset is not Dataset.IMAGESET else 0
    data = build_dataset(dataset, models.RESOLUTION, pool, 0)
    render_s = (time.perf_counter() - start) / max(pool * dataset.views, 1) * DEFAULT_POOL.get(dataset, 0) * dataset.views
    gen = torch.Generator().manual_seed(0)
    vae_opt, unet_opt = torch.optim.AdamW(vae.parameters(), 1e-3), torch.optim.AdamW(unet.parameters(), 5e-4)
    v = dataset.views

    def vae_step():
        b = data.sample(config.vae_batch // v, gen)
        loss = vae_loss(vae, 2 * b.images.flatten(0, 1) - 1, gen, config.kl_weight)
        vae_opt.zero_grad()
        loss.backward()
        vae_opt.step()

    captions = caption_encoder(config, tokenizer, text)
    schedule = flow_schedule(shift=models.SD3_FLOW_SHIFT) if config.flow else scaled_linear_schedule()

    pool_latents = None  # the objects' pool is encoded once, as the trainer does (fsdtrain.train)
    if isinstance(data, ObjectPool):
        k, p = data.images.shape[:2]
        pool_latents = latents(vae, data.images.flatten(0, 2).float() / 255.0, 1.0)
        pool_latents = pool_latents.reshape(k, p, v, *pool_latents.shape[1:])
    state = SimpleNamespace(data_gen=gen, scaling=1.0)

    def unet_step():
        z0, b = sample_latents(data, pool_latents, vae, state, config)
        ctx = captions(b.captions).repeat_interleave(v, 0)
        cams = None if b.cameras is None else b.cameras.flatten(0, 1)
        if config.flow:
            loss = flow_loss(unet, z0, ctx, gen, schedule)
        else:
            loss = unet_loss(unet, z0, ctx, cams, v, gen, schedule)
        unet_opt.zero_grad()
        loss.backward()
        unet_opt.step()

    vae_s, unet_s = time_steps(vae_step, steps), time_steps(unet_step, steps)
    return {"dataset": dataset.value, "arch": arch.value, "unet_parameters": models.parameters(unet),
            "vae_parameters": models.parameters(vae), "vae_s_per_step": vae_s, "unet_s_per_step": unet_s,
            "pool_render_s": render_s,
            "default_run_min": (config.vae_steps * vae_s + config.steps * unet_s + render_s) / 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = [(d, Arch.SD) for d in Dataset] + [(d, Arch.SD3) for d in (Dataset.IMAGESET, Dataset.OBJECTS)]
    rows = [bench(d, arch, args.steps) for d, arch in runs]
    if args.json:
        print(json.dumps(rows))
        return
    print(f"threads {args.threads}")
    print(f"{'dataset':<11} {'arch':<4} {'denoiser params':>15} {'VAE params':>10} {'VAE s/step':>10} "
          f"{'denoiser s/step':>15} {'pool s':>7} {'default run (min)':>17}")
    for r in rows:
        print(f"{r['dataset']:<11} {r['arch']:<4} {r['unet_parameters']:>15,} {r['vae_parameters']:>10,} "
              f"{r['vae_s_per_step']:>10.3f} "
              f"{r['unet_s_per_step']:>15.3f} {r['pool_render_s']:>7.0f} {r['default_run_min']:>17.1f}")


if __name__ == "__main__":
    main()
