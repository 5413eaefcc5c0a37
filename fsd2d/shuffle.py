"""Patch permutations of a noise or an image (the paper's Fig. 5).

A g x g grid cuts a [B, C, H, W] tensor into g^2 patches, numbered row-major. A permutation `perm`
[g^2] says: patch j of the output is patch perm[j] of the input. The same permutation applies to the
noise (in the prior's space, e.g. SD's latent) and to the decoded image (pixels), patch for patch,
because the grid is relative to each tensor's own size.
"""
from __future__ import annotations

import enum

import torch

from fsd2d.errors import InputError


class Permutation(str, enum.Enum):
    RANDOM = "random"  # a uniformly random permutation from --perm-seed
    REVERSE = "reverse"  # patch j <- patch g^2 - 1 - j (a 180 degree rotation of the patch layout)
    TRANSPOSE = "transpose"  # patch (r, c) <- patch (c, r)
    SHIFT = "shift"  # patch (r, c) <- patch (r, c + 1 mod g): a cyclic shift by one patch column


def make_permutation(kind: Permutation, grid: int, seed: int = 0) -> torch.Tensor:
    """The permutation [g^2] (long) of a g x g grid. Never the identity for g >= 2."""
    if grid < 2:
        raise InputError(f"the shuffle grid must be at least 2 x 2, got {grid}")
    n = grid * grid
    idx = torch.arange(n).view(grid, grid)
    if kind is Permutation.RANDOM:
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n, generator=g)
        while torch.equal(perm, torch.arange(n)):
            perm = torch.randperm(n, generator=g)
        return perm
    if kind is Permutation.REVERSE:
        return torch.arange(n).flip(0)
    if kind is Permutation.TRANSPOSE:
        return idx.T.reshape(-1)
    if kind is Permutation.SHIFT:
        return idx.roll(-1, dims=1).reshape(-1)
    raise InputError(f"unknown permutation {kind!r}; allowed: {', '.join(p.value for p in Permutation)}")


def check_grid(grid: int, height: int, width: int, what: str) -> None:
    if grid < 2:
        raise InputError(f"the shuffle grid must be at least 2 x 2, got {grid}")
    if height % grid or width % grid:
        raise InputError(
            f"shuffle grid {grid} does not divide the {what} ({height} x {width}); use a divisor of both, >= 2"
        )


def permute_patches(x: torch.Tensor, grid: int, perm: torch.Tensor) -> torch.Tensor:
    """x [B, C, H, W] -> the same with patch j replaced by patch perm[j] (g x g grid, row-major)."""
    b, c, h, w = x.shape
    check_grid(grid, h, w, "tensor")
    ph, pw = h // grid, w // grid
    patches = x.reshape(b, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, grid * grid, c, ph, pw)
    out = patches[:, perm.to(x.device)]  # [B, g^2, C, ph, pw]
    return out.reshape(b, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per sample between a and b [B, ...] -> [B] (float64)."""
    a = a.detach().double().flatten(1)
    b = b.detach().double().flatten(1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-300)
