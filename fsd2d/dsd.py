"""DSD (diverse score distillation, Xu et al. 2024): distil towards each seed's own DDIM trajectory.

Each run keeps one fixed noise eps~ (as FSD). At step k, with t = t(tau) annealed and a perturbed t' >= t:
  1. x_t'^ode: the DDIM ODE (eta = 0, the run's CFG) from x_top = sigma_top eps~ down the coarse grid
     linspace(top, 0, points) through the points above t', then to t'            [DSD: ODE simulation, Sec. 4]
  2. e_ode = eps_s(x_t'^ode, t'): the noise the trajectory carries at t'
  3. x_t' = alpha_t' theta + sigma_t' e_ode,  x_t = alpha_t theta + sigma_t e_ode
  4. grad = eps_s(x_t, t) - eps_1(x_t', t')                                        [DSD's update, w(t) = 1]
with eps_s the run's CFG and eps_1 the conditional model. t' = t + floor(u * min(f (t - t_min), top - t)), u ~ U[0, 1)
per seed and step. Without the perturbation (t' = t) the update is eps_s - eps_1 = (s - 1)(eps_c - eps_u), CSD's
classifier term at s - 1: the perturbation is what moves theta towards the trajectory's point.

Defaults and sources: BillyXYB/Diverse-Score-Distillation (threestudio/models/guidance/stable_diffusion_dsd_guidance.py,
configs/dsd.yaml): 11 grid points (at most 10 ODE steps, re-simulated every step), f = 0.1, t annealed as
t = T[(0.98 - 0.32)(1 - sqrt(k / K)) + 0.32], i.e. fsd2d.schedule.Anneal.SQRT from t_max 980 to t_min 320 (ours: the
run's t range). Their guidance_scale 7.5 is in threestudio's +1 form (8.5 here), with perp-neg prompts (not here).
Three differences, stated: their ODE starts at x_T = eps~, ours where the project's DDIM starts (sigma_top eps~,
theta_0 = 0; 0.3 % apart on SD's schedule), so the ODE point is DDIM's x_t' exactly (tested); `top` is the last
timestep with alpha > 0 (999 on a VP schedule; a flow model's last index is pure noise); and eps_1 is the conditional
model, the paper's unguided prediction, where their code calls its +1-form helper with 1.0 (standard scale 2; at
CFG 1 that reference would push theta off the prompt).
"""
from __future__ import annotations

import torch

from fsd2d import updates
from fsd2d.guidance import Guidance, predict_eps
from fsd2d.priors.base import Prior

__all__ = ["DSD_POINTS", "DSD_PERTURBATION", "ode_grid", "perturbed_timesteps", "ode_point",
           "dsd_gradient", "ode_steps"]

DSD_POINTS = 11  # torch.linspace(999, 0, 11): the coarse ODE grid
DSD_PERTURBATION = 0.1  # f in t' = t + floor(u min(f (t - t_min), top - t))


def ode_grid(top: int, points: int) -> torch.Tensor:
    """The coarse DDIM grid, decreasing integers from `top` to 0: CPU long [points]."""
    return torch.linspace(top, 0, points, dtype=torch.float64).round().long()


def perturbed_timesteps(t: torch.Tensor, generators, t_min: int, top: int, fraction: float) -> torch.Tensor:
    """t' = t + floor(u min(f (t - t_min), top - t)), u ~ U[0, 1) from each seed's generator: CPU long [B]."""
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])
    span = torch.minimum(fraction * (t - t_min).clamp(min=0).double(), (top - t).clamp(min=0).double())
    return t + (u * span).floor().long()


def ode_steps(t_prime: int, top: int, points: int) -> int:
    """How many DDIM steps the ODE takes down to t_prime: the grid points above it after `top`, plus one to it."""
    grid = ode_grid(top, points)
    return int((grid[1:] > t_prime).sum()) + (1 if t_prime < top else 0)


def ode_point(prior: Prior, guidance: Guidance, fixed: torch.Tensor, t_prime: torch.Tensor,
              points: int) -> torch.Tensor:
    """x_t'^ode [B, C, h, w]: DDIM (eta = 0, `guidance`) from sigma_top eps~ (`fixed` [B, C, h, w]) down the grid
    `ode_grid(top, points)` through its points above t'_b, then to t'_b (CPU long [B]), per row; one batched prior
    call per grid interval, rows that have arrived kept bit for bit."""
    top = prior.schedule.top
    alpha, sigma = prior.schedule.alpha_sigma(torch.full_like(t_prime, top), fixed.dtype, fixed.device)
    x = updates.add_noise(torch.zeros_like(fixed), fixed, alpha, sigma)
    cur = torch.full_like(t_prime, top)
    for g in ode_grid(top, points)[1:].tolist():
        moving = cur > t_prime
        if not bool(moving.any()):
            break
        nxt = torch.where(moving, torch.clamp(t_prime, min=g), cur)
        a_c, s_c = prior.schedule.alpha_sigma(cur, x.dtype, x.device)
        a_n, s_n = prior.schedule.alpha_sigma(nxt, x.dtype, x.device)
        eps = predict_eps(prior, x, cur.to(x.device, non_blocking=True), guidance)
        stepped = updates.ddim_step(x, eps, a_c, s_c, a_n, s_n)
        x = torch.where(moving.to(x.device).view(-1, 1, 1, 1), stepped, x)
        cur = nxt
    return x


def dsd_gradient(prior: Prior, guidance: Guidance, theta: torch.Tensor, t: torch.Tensor, t_prime: torch.Tensor,
                 fixed: torch.Tensor, points: int) -> updates.Estimate:
    """DSD's gradient (module docstring, steps 1-4) at theta [B, C, h, w]; t <= t' CPU long [B]; `fixed` eps~."""
    cond = Guidance(guidance.cond, guidance.uncond, 1.0)
    x_ode = ode_point(prior, guidance, fixed, t_prime, points)
    tp, td = t_prime.to(theta.device, non_blocking=True), t.to(theta.device, non_blocking=True)
    e_ode = predict_eps(prior, x_ode, tp, guidance)
    a_p, s_p = prior.schedule.alpha_sigma(t_prime, theta.dtype, theta.device)
    alpha, sigma = prior.schedule.alpha_sigma(t, theta.dtype, theta.device)
    x_tp = updates.add_noise(theta, e_ode, a_p, s_p)
    x_t = updates.add_noise(theta, e_ode, alpha, sigma)
    eps_hat = predict_eps(prior, x_t, td, guidance)
    e_ref = predict_eps(prior, x_tp, tp, cond)
    return updates.Estimate(eps_hat - e_ref, x_t, eps_hat, e_ode)
