"""How many seeds advance together on a GPU: the default of `--seed-batch` on CUDA.

What grows with the seeds of a batch is what autograd keeps for the backward of each view: the render and the VAE
encoder's activations (the UNet runs without gradients, one layer's activations at a time). We count those bytes
exactly, on whatever device the run uses, by a probe: one seed's views rendered and encoded with a saved-tensor
hook, once with one view and once with two, the difference being one view's bytes (the model's own weights, saved
too, cancel). No backward runs and no state changes. Then

    seeds = floor((free - reserve) / (views per seed x bytes per view)), clipped to [1, number of seeds]

with `reserve` = 15 % of the free memory + 1 GiB for the UNet's transient activations, the allocator's rounding
and gsplat's tile lists. Measured on the CPU (`python benchmarks/bench_seed_memory.py`: 190 MiB per 128 px view in
float32, x4 per doubling of the side): 1.48 GiB per 512 px view for SD 2.1's encoder in 16-bit floats, 2.96 GiB per
seed of a default SD run (2 views), so 5 of its 8 seeds at a time on a 24 GB card with SD 2.1 in float16 (2.6 GB)
loaded, all 8 from 40 GB. Not yet checked on a GPU.
"""
from __future__ import annotations

import math

import torch

GIB = 2**30


def saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd saves for backward while `fn()` runs (each storage counted once)."""
    seen: dict[tuple, int] = {}

    def pack(t: torch.Tensor):
        s = t.untyped_storage()
        seen[(t.device, s.data_ptr())] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def seeds_that_fit(free_bytes: int, per_seed_bytes: int, n_seeds: int) -> int:
    """floor((free - reserve) / per_seed) in [1, n_seeds], reserve = 0.15 free + 1 GiB (module docstring)."""
    usable = 0.85 * free_bytes - GIB
    if per_seed_bytes <= 0:
        return n_seeds
    return max(1, min(n_seeds, math.floor(usable / per_seed_bytes)))


def view_bytes(scene_prior, scene, cameras, background: torch.Tensor, clamp: bool) -> int:
    """Autograd bytes of one view of `scene` rendered at `cameras[0]` and encoded by the scene prior's 2D prior:
    saved(two views) - saved(one view). `scene` is not changed (its parameters get no gradient: no backward)."""
    from fsd3d.renderer import render_scene

    prior = scene_prior.prior

    def one(k: int):
        rgb = render_scene(scene, [cameras[0]] * k, background).rgb
        return prior.encode((rgb.clamp(0.0, 1.0) if clamp else rgb).to(prior.dtype))

    return saved_bytes(lambda: one(2)) - saved_bytes(lambda: one(1))
