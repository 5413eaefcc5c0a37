"""Noise schedules, model parameterisations and timestep schedules: the one source of truth for alpha_t, sigma_t,
the conversion of a network's output to a noise prediction, and t(tau).

Symbols (paper, Eq. 1):  x_t = alpha_t * x_0 + sigma_t * eps,  t in {0, ..., T-1} (an integer index, T = 1000).
A schedule is the two tables (alpha_t, sigma_t), float64 [T]; two kinds are instances of it:
    VP (DDPM / Stable Diffusion / SDXL / MVDream):  alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t);
    rectified flow (SD3 / SD3.5 / Flux):  sigma_t = shift((t + 1) / T), alpha_t = 1 - sigma_t, with the timestep
        shift of the model (SD3's static `shift`, Flux's resolution-dependent mu; `flow_schedule`), exactly the
        training sigmas of diffusers' FlowMatchEulerDiscreteScheduler (in float64 here, float32 there).
Everything else (DDIM, FSD, fsd-exact, SDS, the family, t(tau)) reads only alpha_t and sigma_t, so it runs on
either kind unchanged: on a flow model DDIM *is* the flow-matching Euler sampler, and Proposition 1 holds with
sigma/alpha = s / (1 - s). The DDIM grid, FSD's annealing t(tau) and SDS's annealed variant all come from
`timesteps()`.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch

from fsd2d.errors import InputError

NUM_TRAIN_TIMESTEPS = 1000


class ScheduleKind(str, enum.Enum):
    VP = "vp"  # variance preserving: alpha^2 + sigma^2 = 1
    FLOW = "flow"  # rectified flow: alpha + sigma = 1


class Prediction(str, enum.Enum):
    """What a network outputs (its scheduler config's `prediction_type`; a flow-matching scheduler: FLOW)."""

    EPSILON = "epsilon"  # eps itself
    V = "v_prediction"  # v = alpha_t eps - sigma_t x_0 (Salimans & Ho 2022), on a VP schedule
    FLOW = "flow"  # the velocity v = d x_t / d sigma = eps - x_0, on a rectified-flow schedule


def to_eps(prediction: Prediction, out: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor,
           sigma: torch.Tensor) -> torch.Tensor:
    """THE conversion of a network's output [B, C, h, w] at x_t to a noise prediction eps (alpha, sigma
    [B, 1, 1, 1]); exact for every t with alpha > 0, and for FLOW at alpha = 0 too:
        EPSILON: eps = out;
        V:       eps = alpha v + sigma x_t     (x_t = alpha x_0 + sigma eps, v = alpha eps - sigma x_0, alpha^2 + sigma^2 = 1);
        FLOW:    eps = x_t + alpha v           (x_t = alpha x_0 + sigma eps, v = eps - x_0, alpha + sigma = 1)."""
    if prediction is Prediction.EPSILON:
        return out
    if prediction is Prediction.V:
        return alpha * out + sigma * x_t
    return x_t + alpha * out


@dataclass(frozen=True)
class NoiseSchedule:
    """(alpha_t, sigma_t) tables, float64 CPU tensors [T]; sigma_t / alpha_t increases with t.

    `alphas_cumprod` is kept for VP schedules (abar_t as built, so alpha_t = sqrt(abar_t) to the last bit)."""

    alphas: torch.Tensor  # [T] float64
    sigmas: torch.Tensor  # [T] float64
    kind: ScheduleKind = ScheduleKind.VP
    abar_table: torch.Tensor | None = None  # [T] float64, VP only
    shift: str = ""  # how a flow schedule's sigmas were shifted ("shift 3", "mu 1.15"), for describe()

    @classmethod
    def vp(cls, alphas_cumprod: torch.Tensor) -> "NoiseSchedule":
        """A discrete VP schedule from abar_t [T] (decreasing in t)."""
        abar = alphas_cumprod.to(torch.float64)
        return cls(abar.sqrt(), (1.0 - abar).sqrt(), ScheduleKind.VP, abar)

    @property
    def num_timesteps(self) -> int:
        return self.alphas.shape[0]

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """abar_t = alpha_t^2, float64 [T]."""
        return self.abar_table if self.abar_table is not None else self.alphas**2

    def _table(self, table: torch.Tensor, clean: float, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.long).cpu()
        padded = torch.cat([torch.full((1,), clean, dtype=torch.float64), table])
        return padded[t + 1]

    def alpha_sigma(self, t: torch.Tensor, dtype: torch.dtype, device: torch.device | str):
        """(alpha_t, sigma_t) for integer timesteps t [B], shaped [B, 1, 1, 1] to broadcast on images.

        t = -1 means "clean" (alpha = 1, sigma = 0): the end point of a DDIM grid.
        """
        alpha = self._table(self.alphas, 1.0, t).to(dtype=dtype, device=device, non_blocking=True)  # no host sync
        sigma = self._table(self.sigmas, 0.0, t).to(dtype=dtype, device=device, non_blocking=True)
        return alpha.view(-1, 1, 1, 1), sigma.view(-1, 1, 1, 1)

    def abar(self, t: torch.Tensor) -> torch.Tensor:
        """abar_t = alpha_t^2 in float64 on the CPU for timesteps t [B] (t = -1 gives 1.0)."""
        return self._table(self.alphas_cumprod, 1.0, t)

    def snr_ratio(self, t: torch.Tensor) -> torch.Tensor:
        """sigma_t / alpha_t in float64 [B] (0 at t = -1; inf where alpha_t = 0, a flow model's t = T - 1): the
        variable of Proposition 1, Eq. 12."""
        return self._table(self.sigmas, 0.0, t) / self._table(self.alphas, 1.0, t)

    def network_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The timestep value the network was trained with at index t [B], float64: t itself on a VP schedule,
        sigma_t * T on a flow one (diffusers' FlowMatchEulerDiscreteScheduler.timesteps; Flux divides by T)."""
        t = torch.as_tensor(t, dtype=torch.long).cpu()
        if self.kind is ScheduleKind.VP:
            return t.to(torch.float64)
        return self.sigmas[t] * self.num_timesteps

    @property
    def top(self) -> int:
        """The highest timestep with alpha > 0: T - 1 on a VP schedule, T - 2 on a flow one (its last is pure noise)."""
        return int((self.alphas > 0).nonzero().max())

    def check_range(self, t_max: int) -> None:
        """A grid that starts at t_max must have alpha > 0 there (a flow schedule's last index is pure noise, where
        x_0 cannot be estimated): an InputError saying which t_max works."""
        if not 0 <= t_max < self.num_timesteps or self.alphas[t_max] <= 0.0:
            raise InputError(f"t_max {t_max} is pure noise on this model (alpha_t = 0: nothing of the image is left "
                             f"to estimate); use t_max <= {self.top}")

    def describe(self) -> dict:
        return {"kind": self.kind.value, **({"shift": self.shift} if self.shift else {})}


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3's static timestep shift (Esser et al. 2024, Eq. 23): shift s / (1 + (shift - 1) s); 1 is no shift."""
    return shift * sigmas / (1.0 + (shift - 1.0) * sigmas)


def time_shift(sigmas: torch.Tensor, mu: float, kind: str = "exponential") -> torch.Tensor:
    """Flux's resolution-dependent shift of sigmas in (0, 1]: e^mu / (e^mu + (1/s - 1)) ("exponential") or
    mu / (mu + (1/s - 1)) ("linear"), as diffusers' FlowMatchEulerDiscreteScheduler.time_shift with sigma 1."""
    if kind == "exponential":
        return math.exp(mu) / (math.exp(mu) + (1.0 / sigmas - 1.0))
    if kind == "linear":
        return mu / (mu + (1.0 / sigmas - 1.0))
    raise ValueError(f"unknown time_shift_type {kind!r}; allowed: exponential, linear")


def flux_mu(image_tokens: int, base_tokens: int = 256, max_tokens: int = 4096, base_shift: float = 0.5,
            max_shift: float = 1.15) -> float:
    """Flux's mu for an image of `image_tokens` latent tokens: linear from base_shift at base_tokens to max_shift
    at max_tokens (the pipelines' calculate_shift; defaults: the scheduler config's fields of FLUX.1)."""
    slope = (max_shift - base_shift) / (max_tokens - base_tokens)
    return image_tokens * slope + (base_shift - slope * base_tokens)


def flux2_mu(image_tokens: int, steps: int) -> float:
    """FLUX.2's mu for an image of `image_tokens` latent tokens sampled in `steps` steps (the FLUX.2 pipelines'
    compute_empirical_mu, from Black Forest Labs' flux2 sampling code; Flux.1's is `flux_mu`): two lines in the
    token count, mu at 10 and at 200 steps, interpolated linearly in the step count; beyond 4300 tokens the 200-step
    line alone."""
    a1, b1 = 8.73809524e-05, 1.89833333
    a2, b2 = 0.00016927, 0.45666666
    m_200 = a2 * image_tokens + b2
    if image_tokens > 4300:
        return float(m_200)
    m_10 = a1 * image_tokens + b1
    slope = (m_200 - m_10) / 190.0
    return float(slope * steps + (m_200 - 200.0 * slope))


def flow_schedule(num_timesteps: int = NUM_TRAIN_TIMESTEPS, shift: float = 1.0, mu: float | None = None,
                  time_shift_type: str = "exponential") -> NoiseSchedule:
    """The rectified-flow schedule: sigma_t = shifted((t + 1) / T), alpha_t = 1 - sigma_t, t = 0..T-1 (diffusers'
    FlowMatchEulerDiscreteScheduler: timesteps linspace(1, T, T) / T). `mu` given: Flux's dynamic shift
    (`time_shift`), else the static `shift` (SD3: 3.0). sigma_{T-1} = 1: pure noise (`check_range`)."""
    s = torch.arange(1, num_timesteps + 1, dtype=torch.float64) / num_timesteps
    if mu is not None:
        sigmas, label = time_shift(s, mu, time_shift_type), f"mu {mu:.6g} ({time_shift_type})"
    else:
        sigmas, label = shift_sigmas(s, shift), (f"shift {shift:g}" if shift != 1.0 else "")
    return NoiseSchedule(1.0 - sigmas, sigmas, ScheduleKind.FLOW, None, label)


def scaled_linear_schedule(
    beta_start: float = 0.00085, beta_end: float = 0.012, num_timesteps: int = NUM_TRAIN_TIMESTEPS
) -> NoiseSchedule:
    """Stable Diffusion's schedule: betas = linspace(sqrt(b0), sqrt(b1), T)^2, abar = cumprod(1 - betas)."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
    return NoiseSchedule.vp(torch.cumprod(1.0 - betas, dim=0))


def linear_schedule(
    beta_start: float = 0.0001, beta_end: float = 0.02, num_timesteps: int = NUM_TRAIN_TIMESTEPS
) -> NoiseSchedule:
    """DDPM's linear beta schedule (used by some diffusers pipelines)."""
    betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
    return NoiseSchedule.vp(torch.cumprod(1.0 - betas, dim=0))


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
    t = torch.arange(schedule.num_timesteps)
    return schedule.snr_ratio(t) * prior(t)


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


def timesteps(steps: int, t_min: int, t_max: int, kind: Anneal = Anneal.LINEAR,
              schedule: NoiseSchedule | None = None) -> torch.Tensor:
    """The decreasing integer timestep grid t_0 >= ... >= t_{steps-1}, from t_max to t_min.

    This is FSD's annealing t(tau) (Eq. 9, 14) and, with LINEAR, the DDIM grid.  Returns long [steps].
    `schedule`: the prior's, which DREAMTIME's weights read (default: Stable Diffusion's scaled-linear one).
    """
    check_timestep_range(t_min, t_max)
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    tau = torch.linspace(0.0, 1.0, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
    if kind is Anneal.DREAMTIME:  # W(t) over this run's range
        return dreamtime_timesteps(tau, t_min, t_max, schedule)
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
