"""Classifier-free guidance: the one CFG helper of the project (2D and 3D).

We use the standard form  eps = eps_uncond + s * (eps_cond - eps_uncond):
s = 1 is the plain conditional model, s = 0 the unconditional one.  The authors' code writes
eps_cond + s' * (eps_cond - eps_uncond), i.e. s = s' + 1 ("CFG 7 in the +1 form" is s = 8 here).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fsd2d.errors import InputError
from fsd2d.priors.base import Prior

__all__ = ["Guidance", "cfg_combine", "predict_eps", "check_cfg"]


def cfg_combine(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Standard classifier-free guidance (Ho & Salimans): eps_u + s (eps_c - eps_u)."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


@dataclass(frozen=True)
class Guidance:
    """Encoded prompt, encoded negative prompt and the guidance scale s >= 0."""

    cond: torch.Tensor  # [1, ...] for one prompt, or [B, ...] per sample (e.g. view-dependent prompts in 3D)
    uncond: torch.Tensor  # same (the negative prompt; "" is the unconditional model)
    scale: float
    # the empty prompt's conditioning, same layout, for the rules that ask for the null model whatever the
    # negative prompt (ISM's inversion, NFSD's terms: fsd2d.family); None: `uncond` (an empty negative prompt)
    null: torch.Tensor | None = None

    @property
    def null_or_uncond(self) -> torch.Tensor:
        """The empty prompt's conditioning, [1 or B, ...]: what fsd2d.family.gradient takes as `null`."""
        return self.uncond if self.null is None else self.null

    @classmethod
    def from_prompts(cls, prior: Prior, prompt: str, negative_prompt: str, scale: float) -> "Guidance":
        """`null` is set (the empty prompt's encoding) only when the negative prompt is not empty: one
        Guidance carries every conditioning the rules of fsd2d.family need, in 2D as in 3D."""
        check_cfg(scale)
        null = None if negative_prompt == "" else prior.encode_prompt("")
        return cls(prior.encode_prompt(prompt), prior.encode_prompt(negative_prompt), float(scale), null=null)


def check_cfg(scale: float) -> None:
    if not scale >= 0.0:  # also rejects NaN
        raise InputError(f"CFG scale must be >= 0 (standard form, 1 = no guidance), got {scale}")


def predict_eps(prior: Prior, x_t: torch.Tensor, t: torch.Tensor, guidance: Guidance) -> torch.Tensor:
    """Guided eps_hat [B, C, h, w]: one batched prior call with [uncond; cond] stacked (2B samples); one conditional
    call where the scale is 1, or where the prior embeds the guidance scale (FLUX.1-dev: the scale is its input)."""
    b = x_t.shape[0]
    if prior.embeds_guidance:
        return prior.eps(x_t, t, expand(guidance.cond, b), guidance=guidance.scale)
    if guidance.scale == 1.0:
        return prior.eps(x_t, t, expand(guidance.cond, b))
    cond = torch.cat([expand(guidance.uncond, b), expand(guidance.cond, b)])
    eps_u, eps_c = prior.eps(torch.cat([x_t, x_t]), torch.cat([t, t]), cond).chunk(2)
    return cfg_combine(eps_u, eps_c, guidance.scale)


def expand(cond: torch.Tensor, b: int) -> torch.Tensor:
    """[1, ...] -> [b, ...] (a view); [b, ...] is returned as is."""
    if cond.shape[0] not in (1, b):
        raise ValueError(f"conditioning for {cond.shape[0]} samples given to a batch of {b}")
    return cond.expand(b, *cond.shape[1:])
