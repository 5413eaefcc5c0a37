"""The update rules of DDIM, SDS and FSD as pure functions (paper Sections 2-3).

Symbols -> names:
    theta, x^c_t   clean image (the optimised parameter)          theta  [B, C, h, w]
    eps~           FSD's fixed noise, one per seed                  fixed  [B, C, h, w]
    eps            SDS's fresh noise, new at every step             fresh  [B, C, h, w]
    eps_phi        the prior's (guided) noise prediction            eps_hat
    x^gt_t         one-step estimate of the clean image (Eq. 8)     x_gt
    alpha_t, sigma_t                                                [B, 1, 1, 1] (see schedule.py)
All tensors share shape [B, C, h, w]; 3D reuses these functions on rendered images.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fsd2d.errors import InputError


@dataclass(frozen=True)
class Estimate:
    """One step's outcome. All [B, C, h, w] in the working space (detached)."""

    grad: torch.Tensor  # gradient w.r.t. theta (w_t = 1)
    x_t: torch.Tensor  # the noisy point where the guided prediction was taken
    eps_hat: torch.Tensor  # the guided prediction eps_s(x_t, t) there (standard CFG, uncond = negative prompt)
    noise: torch.Tensor  # the noise x_t carries: (x_t - alpha_t theta) / sigma_t (the input noise for SDS/CSD/NFSD)


def blend_noise(fixed: torch.Tensor, fresh: torch.Tensor, beta: float) -> torch.Tensor:
    """sqrt(beta) * fixed + sqrt(1 - beta) * fresh (Eq. 16's blend): beta = 1 is FSD, 0 is SDS.

    The one noise blend of the project: unit variance for any beta if both inputs have it.
    """
    check_beta(beta)
    if beta == 1.0:
        return fixed
    if beta == 0.0:
        return fresh
    return beta**0.5 * fixed + (1.0 - beta) ** 0.5 * fresh


def check_beta(beta: float) -> None:
    if not 0.0 <= beta <= 1.0:
        raise InputError(f"beta must be in [0, 1] (1 = FSD fixed noise, 0 = SDS fresh noise), got {beta}")


def add_noise(theta: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_t = alpha_t * theta + sigma_t * noise (Eq. 1 / Eq. 11)."""
    return alpha * theta + sigma * noise


def one_step_estimate(x_t: torch.Tensor, eps_hat: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x^gt_t = (x_t - sigma_t eps_hat) / alpha_t, the estimated ground-truth image (Eq. 8)."""
    return (x_t - sigma * eps_hat) / alpha


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """eps = (x_t - alpha_t x0) / sigma_t: the noise prediction of a denoiser that predicts x0 (Eq. 1 inverted)."""
    return (x_t - alpha * x0) / sigma


def sds_gradient(eps_hat: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """grad_theta L_sds-2d = eps_phi(x_t | y, t) - eps (Eq. 10); with eps = eps(c) it is FSD's (Eq. 15)."""
    return eps_hat - noise


def ddim_step(
    x_t: torch.Tensor,
    eps_hat: torch.Tensor,
    alpha_t: torch.Tensor,
    sigma_t: torch.Tensor,
    alpha_s: torch.Tensor,
    sigma_s: torch.Tensor,
) -> torch.Tensor:
    """One deterministic DDIM step (eta = 0) from t to s < t: x_s = alpha_s x^gt_t + sigma_s eps_hat (Eq. 5)."""
    return alpha_s * one_step_estimate(x_t, eps_hat, alpha_t, sigma_t) + sigma_s * eps_hat


def flow_step(theta: torch.Tensor, grad: torch.Tensor, ratio_t: torch.Tensor, ratio_s: torch.Tensor) -> torch.Tensor:
    """Gradient descent with step Delta(sigma/alpha) (Proposition 1, Eq. 12-13, discretised):

        theta_s = theta_t - (sigma_t/alpha_t - sigma_s/alpha_s) * (eps_phi(x_t) - eps~)

    With grad = sds_gradient(eps_hat, eps~) at x_t = alpha_t theta_t + sigma_t eps~, this is exactly
    one DDIM step written on the clean image. ratio_t, ratio_s: sigma/alpha, [B, 1, 1, 1].
    """
    return theta - (ratio_t - ratio_s) * grad
