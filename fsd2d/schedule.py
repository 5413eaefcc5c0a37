"""Noise schedules and timestep schedules: the one source of truth for alpha_t, sigma_t and t(tau).

Symbols (paper, Eq. 1):  x_t = alpha_t * x_0 + sigma_t * eps
    alpha_t = sqrt(abar_t),  sigma_t = sqrt(1 - abar_t),  t in {0, ..., 999} (integer, discrete).
The DDIM grid, FSD's annealing t(tau) and SDS's annealed variant all come from `timesteps()`.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from fsd2d.errors import InputError

NUM_TRAIN_TIMESTEPS = 1000


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete VP schedule. `alphas_cumprod` is a float64 CPU tensor [T], decreasing in t."""

    alphas_cumprod: torch.Tensor  # [T] float64

    @property
    def num_timesteps(self) -> int:
        return self.alphas_cumprod.shape[0]

    def alpha_sigma(self, t: torch.Tensor, dtype: torch.dtype, device: torch.device | str):
        """(alpha_t, sigma_t) for integer timesteps t [B], shaped [B, 1, 1, 1] to broadcast on images.

        t = -1 means "clean" (alpha = 1, sigma = 0): the end point of a DDIM grid.
        """
        abar = self.abar(t)
        alpha = abar.sqrt().to(dtype=dtype, device=device, non_blocking=True)  # no host sync on CUDA
        sigma = (1.0 - abar).sqrt().to(dtype=dtype, device=device, non_blocking=True)
        return alpha.view(-1, 1, 1, 1), sigma.view(-1, 1, 1, 1)

    def abar(self, t: torch.Tensor) -> torch.Tensor:
        """abar_t in float64 on the CPU for timesteps t [B] (t = -1 gives 1.0)."""
        t = torch.as_tensor(t, dtype=torch.long).cpu()
        padded = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])
        return padded[t + 1]

    def snr_ratio(self, t: torch.Tensor) -> torch.Tensor:
        """sigma_t / alpha_t in float64 [B] (0 at t = -1): the variable of Proposition 1, Eq. 12."""
        abar = self.abar(t)
        return (1.0 - abar).sqrt() / abar.sqrt()


def scaled_linear_schedule(
    beta_start: float = 0.00085, beta_end: float = 0.012, num_timesteps: int = NUM_TRAIN_TIMESTEPS
) -> NoiseSchedule:
    """Stable Diffusion's schedule: betas = linspace(sqrt(b0), sqrt(b1), T)^2, abar = cumprod(1 - betas)."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
    return NoiseSchedule(torch.cumprod(1.0 - betas, dim=0))


def linear_schedule(
    beta_start: float = 0.0001, beta_end: float = 0.02, num_timesteps: int = NUM_TRAIN_TIMESTEPS
) -> NoiseSchedule:
    """DDPM's linear beta schedule (used by some diffusers pipelines)."""
    betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
    return NoiseSchedule(torch.cumprod(1.0 - betas, dim=0))


class Anneal(str, enum.Enum):
    """Shape p(tau) of the annealing t(tau) = t_max - (t_max - t_min) * p(tau), tau in [0, 1]."""

    LINEAR = "linear"  # p = tau
    SQRT = "sqrt"  # p = sqrt(tau)  (HiFA)
    PIECEWISE = "piecewise"  # ours (not the authors'): linear through PIECEWISE_KNOTS, fast first, then slow
    DREAMTIME = "dreamtime"  # DreamTime's (Huang et al. 2023), not the FSD authors' (their configs: dreamtime null)
    AUTHORS_SD = "authors-sd"  # the authors' 3D schedule with Stable Diffusion (KNOTS below); t stops at 212
    AUTHORS_MVDREAM = "authors-mvdream"  # the authors' 3D schedule with MVDream (KNOTS below); t stops at 212


# (tau, p) knots of the piecewise-linear schedules, p(tau) linear between them:
# - PIECEWISE: ours, half the range in the first fifth of the run;
# - AUTHORS_SD / AUTHORS_MVDREAM: the authors' successor code base, runjie-yan/ConsistentFlowDistillation
#   configs/cfd/sd-stage1.yaml and mvdream-stage1.yaml, `t_scheduler.linear_anneal_max: [0, 0.3, 0.6, 0.8]` at
#   `linear_anneal_steps: [0, 2500, 12500, 25000]` (SD) and `[0, 2000, 5000, 10000]` (MVDream) of their runs, with
#   t% = 0.98 - 0.96 p: p never reaches 1, so t ends at 980 - 0.8 * 960 = 212 (with t_min 20, t_max 980), never 20.
PIECEWISE_KNOTS = ((0.0, 0.0), (0.2, 0.5), (1.0, 1.0))
KNOTS = {"piecewise": PIECEWISE_KNOTS,
         "authors-sd": ((0.0, 0.0), (0.1, 0.3), (0.5, 0.6), (1.0, 0.8)),
         "authors-mvdream": ((0.0, 0.0), (0.2, 0.3), (0.5, 0.6), (1.0, 0.8))}


@dataclass(frozen=True)
class DreamTimePrior:
    """DreamTime's prior weight W_p(t) (Huang et al. 2023, Eq. 9): a plateau of 1 on [m2, m1], Gaussian
    flanks of std s1 above m1 and s2 below m2. The paper's (and common implementations') defaults."""

    m1: float = 800.0
    m2: float = 500.0
    s1: float = 300.0
    s2: float = 100.0

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(torch.float64)
        above = torch.exp(-((t - self.m1) ** 2) / (2.0 * self.s1**2))
        below = torch.exp(-((t - self.m2) ** 2) / (2.0 * self.s2**2))
        return torch.where(t > self.m1, above, torch.where(t < self.m2, below, torch.ones_like(t)))


def dreamtime_weights(schedule: NoiseSchedule, prior: DreamTimePrior = DreamTimePrior()) -> torch.Tensor:
    """W(t) = W_d(t) W_p(t) for t = 0..T-1 (float64 [T], unnormalised), DreamTime Eq. 8-10.

    W_d(t) = sqrt((1 - abar_t) / abar_t) = sigma_t / alpha_t: the diffusion model's own weight of
    timestep t (its training loss in eps-form, moved to x_0-form); W_p(t): `DreamTimePrior`."""
    abar = schedule.alphas_cumprod
    return ((1.0 - abar) / abar).sqrt() * prior(torch.arange(len(abar)))


def dreamtime_timesteps(tau: torch.Tensor, t_min: int, t_max: int,
                        schedule: NoiseSchedule | None = None) -> torch.Tensor:
    """DreamTime's time-prioritised t(tau) (Huang et al. 2023, Eq. 11): with W normalised over
    [t_min, t_max], t(tau) = argmin_t | sum_{t' = t + 1}^{t_max} W(t') - tau | (the mass strictly above t, so
    that t(0) = t_max exactly; the paper's sum starts at t, one timestep apart), so the run spends its
    steps in proportion to W(t). tau [n] in [0, 1] -> long [n], non-increasing, t(0) = t_max,
    t(1) = t_min. `schedule`: Stable Diffusion's scaled-linear one by default (the authors' setting);
    t is an integer, so one step of t is taken even where W is tiny."""
    schedule = schedule or scaled_linear_schedule()
    t = torch.arange(t_min, t_max + 1)
    w = dreamtime_weights(schedule)[t]  # [n_t]
    # mass above each t: tail[i] = sum_{t' >= t_min + i} W(t') / sum W, decreasing from 1 to W(t_max) / sum W
    tail = torch.flip(torch.cumsum(torch.flip(w, [0]), 0), [0]) / w.sum()
    tail = torch.cat([tail[1:], torch.zeros(1, dtype=tail.dtype)])  # mass strictly above t: 0 at t_max
    # tail is decreasing in t: t(tau) is the t whose tail is nearest tau (ties: the larger t)
    nearest = (tail[None, :] - tau[:, None]).abs()  # [n, n_t]
    idx = (nearest.shape[1] - 1) - torch.flip(nearest, [1]).argmin(1)
    return t[idx]


def anneal_fraction(tau: torch.Tensor, kind: Anneal) -> torch.Tensor:
    """p(tau) in [0, 1] for tau in [0, 1] (float64), monotonically increasing (the authors' ends at 0.8).

    DREAMTIME has no p of its own: its t(tau) depends on the noise schedule and the run's [t_min, t_max]
    (`dreamtime_timesteps`, which `timesteps` calls)."""
    if kind is Anneal.DREAMTIME:
        raise ValueError("DreamTime's t(tau) depends on the noise schedule and the timestep range: "
                         "use timesteps(..., Anneal.DREAMTIME) or dreamtime_timesteps")
    if kind is Anneal.LINEAR:
        return tau
    if kind is Anneal.SQRT:
        return tau.sqrt()
    if kind.value in KNOTS:
        xs = torch.tensor([k[0] for k in KNOTS[kind.value]], dtype=torch.float64)
        ys = torch.tensor([k[1] for k in KNOTS[kind.value]], dtype=torch.float64)
        idx = torch.clamp(torch.searchsorted(xs, tau, right=True) - 1, 0, len(xs) - 2)
        w = (tau - xs[idx]) / (xs[idx + 1] - xs[idx])
        return ys[idx] + w * (ys[idx + 1] - ys[idx])
    raise ValueError(f"unknown anneal schedule {kind!r}; allowed: {[a.value for a in Anneal]}")


def timesteps(steps: int, t_min: int, t_max: int, kind: Anneal = Anneal.LINEAR) -> torch.Tensor:
    """The decreasing integer timestep grid t_0 >= ... >= t_{steps-1}, from t_max to t_min.

    This is FSD's annealing t(tau) (Eq. 9, 14) and, with LINEAR, the DDIM grid.  Returns long [steps].
    """
    check_timestep_range(t_min, t_max)
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    tau = torch.linspace(0.0, 1.0, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
    if kind is Anneal.DREAMTIME:  # W(t) over this run's range
        return dreamtime_timesteps(tau, t_min, t_max)
    t = t_max - (t_max - t_min) * anneal_fraction(tau, kind)
    return t.round().long()


def uniform_timesteps(generators, t_min: int, t_max: int) -> torch.Tensor:
    """SDS's timesteps: one draw t ~ U{t_min..t_max} from each generator, long [len(generators)]."""
    return torch.stack([torch.randint(t_min, t_max + 1, (), generator=g) for g in generators])


def check_timestep_range(t_min: int, t_max: int, num_timesteps: int = NUM_TRAIN_TIMESTEPS) -> None:
    if not (0 <= t_min <= t_max <= num_timesteps - 1):
        raise InputError(
            f"timestep range must satisfy 0 <= t_min <= t_max <= {num_timesteps - 1}, got t_min={t_min}, t_max={t_max}"
        )
