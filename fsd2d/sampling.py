"""The 2D loops: DDIM sampling (the reference) and score distillation (SDS / FSD / the family of
fsd2d.family: ISM, SDI, CSD, NFSD) on the clean image.

All seeds of a run are one batch [B, C, h, w] through the prior: one prior call per step.
Noise is drawn per seed from its own CPU generator, so a seed gives the same noise whatever the
batch, device or dtype (drawn in float32, then cast).
"""
from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from fsd2d import dsd, updates, vsd
from fsd2d.family import FamilyOptions, Rule, check_rule, gradient
from fsd2d.errors import InputError, check_finite, check_int_range
from fsd2d.guidance import Guidance, check_cfg, predict_eps
from fsd2d.priors.base import Prior
from fsd2d.schedule import Anneal, timesteps, uniform_timesteps
from fsd2d.seeds import SEED_LIMIT, stream_seed

__all__ = ["Method", "DistillConfig", "TimestepSampling", "Optimizer", "StepInfo", "Callback", "sample", "ddim_sample",
           "distill", "initial_noise", "rows_per_seed"]

# The authors' 2D playground (REFERENCE.md): Adam betas (0, 0.99), eps 1e-15, lr 2.5e-3 over 1000 steps.
ADAM_BETAS = (0.0, 0.99)
ADAM_EPS = 1e-15  # also the authors' 3D optimisers (sd- and mvdream-stage1.yaml): every 3D profile uses it
ADAM_TOTAL_LR = 2.5  # lr * steps: 2.5e-3 * 1000; the default lr keeps this product for any step count

# Caps no real run reaches; beyond them a value is a typo that would overflow or exhaust memory.
MAX_STEPS = 100_000  # of a sampling or distillation run, 2D or 3D (paper: 1000 / 2000); training: MAX_TRAIN_STEPS
MAX_SEEDS = 4096  # seeds in one run (each is a row of one batch)
MAX_LR = 100.0  # Adam's step on pixels in [-1, 1] (default 2.5 / steps); far beyond, images overflow to NaN
MAX_CFG = 1000.0  # guidance scale; DreamFusion-style 3D runs use 100


class Optimizer(str, enum.Enum):
    EXACT = "exact"  # gradient descent with step Delta(sigma/alpha) on the annealed grid (Prop. 1)
    ADAM = "adam"  # the paper's practice


class TimestepSampling(str, enum.Enum):
    ANNEALED = "annealed"  # t(tau) decreasing (FSD; Eq. 9)
    UNIFORM = "uniform"  # t ~ U{t_min..t_max} each step, per seed (original SDS)


@dataclass(frozen=True)
class DistillConfig:
    """One score-distillation run on the clean image theta."""

    steps: int
    beta: float = 1.0  # noise blend: 1 = fixed noise (FSD), 0 = fresh noise (SDS)
    sampling: TimestepSampling = TimestepSampling.ANNEALED
    anneal: Anneal = Anneal.LINEAR
    optimizer: Optimizer = Optimizer.ADAM
    t_min: int = 20
    t_max: int = 980
    lr: float | None = None  # Adam learning rate; None -> ADAM_TOTAL_LR / steps
    rule: Rule = Rule.SDS  # the gradient (fsd2d.family): eps_hat - noise for SDS/FSD, or ISM, SDI, CSD, NFSD
    family: FamilyOptions = FamilyOptions()  # ISM's interval and inversion, SDI's inversion, NFSD's threshold

    def __post_init__(self):
        check_steps(self.steps)
        timesteps(self.steps, self.t_min, self.t_max)  # validates steps and range
        check_finite("beta", self.beta)
        updates.check_beta(self.beta)
        check_finite("learning rate", self.lr)
        self.family.validate()
        if self.optimizer is Optimizer.EXACT and self.sampling is not TimestepSampling.ANNEALED:
            raise InputError("the exact optimiser steps along the annealed grid; it cannot use uniform timesteps")
        if self.lr is not None and not 0 < self.lr <= MAX_LR:
            raise InputError(f"learning rate must be in (0, {MAX_LR:g}], got {self.lr}")

    @property
    def adam_lr(self) -> float:
        return self.lr if self.lr is not None else ADAM_TOTAL_LR / self.steps


def check_steps(steps: int) -> None:
    """The upper cap on steps (the lower bound, >= 1, is `timesteps`'s), checked before any allocation."""
    if steps > MAX_STEPS:
        raise InputError(f"steps must be <= {MAX_STEPS}, got {steps}")


def check_guidance_scale(cfg: float | None) -> None:
    """A given CFG scale (None: the prior's default) is finite, >= 0 and at most MAX_CFG."""
    if cfg is not None:
        check_finite("CFG scale", cfg)
        check_cfg(cfg)
        if cfg > MAX_CFG:
            raise InputError(f"CFG scale must be <= {MAX_CFG:g}, got {cfg}")


def check_seeds(seeds: Sequence[int]) -> None:
    """At least one and at most MAX_SEEDS seeds, each in [0, SEED_LIMIT)."""
    check_int_range("the number of seeds", len(seeds), 1, MAX_SEEDS)
    for seed in seeds:
        check_int_range("seeds", seed, 0, SEED_LIMIT - 1)


class Method(str, enum.Enum):
    """The methods `compare-2d` knows, each a preset of DistillConfig (DDIM is the reference sampler)."""

    DDIM = "ddim"  # DDIM sampler (eta = 0) on x_t
    FSD = "fsd"  # fixed noise, annealed t, Adam
    FSD_EXACT = "fsd-exact"  # fixed noise (beta = 1), DDIM's grid, gradient descent with Delta(sigma/alpha): = DDIM
    SDS = "sds"  # fresh noise, t uniform in [t_min, t_max], Adam (DreamFusion)
    SDS_ANNEALED = "sds-annealed"  # fresh noise, annealed t, Adam: differs from FSD in the noise only
    # The family (fsd2d.family), each with its paper's timestep and noise choices, Adam:
    ISM = "ism"  # LucidDreamer: fresh noise at the inversion's start, t uniform, inversion to s = t - interval
    SDI = "sdi"  # noise from DDIM inversion of theta (fresh noise only in its eta term), t annealed (their t_anneal)
    CSD = "csd"  # classifier term alone, fresh noise, t uniform
    NFSD = "nfsd"  # condition + denoising terms, no noise subtracted, fresh noise, t uniform
    # The diversity rivals: a LoRA critic per seed shared by its particles (fsd2d.vsd), fresh noise, t uniform
    # (threestudio's prolificdreamer); DSD (fsd2d.dsd): fixed noise, t annealed with its sqrt schedule
    VSD = "vsd"
    ESD = "esd"
    DSD = "dsd"

    @property
    def sampling(self) -> TimestepSampling | None:
        """This method's timesteps, the same in 2D and 3D (gen-3d's methods of the same name): uniform for SDS
        (DreamFusion) and ISM, CSD, NFSD (their papers), annealed for FSD, SDI and SDS-annealed; None for DDIM
        (its own grid)."""
        if self is Method.DDIM:
            return None
        uniform = (Method.SDS, Method.ISM, Method.CSD, Method.NFSD, Method.VSD, Method.ESD)
        return TimestepSampling.UNIFORM if self in uniform else TimestepSampling.ANNEALED

    def config(self, base: DistillConfig) -> DistillConfig | None:
        """This method's DistillConfig, taking steps, t range, anneal, lr, the family options and FSD's beta
        from `base`."""
        if self is Method.DDIM:
            return None
        if self in FAMILY or self in RIVALS:
            rule = FAMILY.get(self) or RIVALS[self]
            if self is Method.DSD:  # its fixed noise, its sqrt anneal (fsd2d.dsd)
                return replace(base, beta=1.0, sampling=self.sampling, anneal=Anneal.SQRT, optimizer=Optimizer.ADAM,
                               rule=rule)
            return replace(base, beta=0.0, sampling=self.sampling, optimizer=Optimizer.ADAM, rule=rule)
        if self is Method.FSD:
            return replace(base, sampling=self.sampling, optimizer=Optimizer.ADAM)
        if self is Method.FSD_EXACT:  # Proposition 1 needs the fixed noise: beta = 1 whatever the base says
            return replace(base, beta=1.0, sampling=self.sampling, optimizer=Optimizer.EXACT)
        return replace(base, beta=0.0, sampling=self.sampling, optimizer=Optimizer.ADAM)  # SDS, SDS-annealed


FAMILY = {Method.ISM: Rule.ISM, Method.SDI: Rule.SDI, Method.CSD: Rule.CSD, Method.NFSD: Rule.NFSD}
RIVALS = {Method.VSD: Rule.VSD, Method.ESD: Rule.ESD, Method.DSD: Rule.DSD}


@dataclass(frozen=True)
class StepInfo:
    """What a callback sees after each step (tensors are detached; do not modify them)."""

    step: int
    t: torch.Tensor  # [B] timesteps of this step
    theta: torch.Tensor  # [B, C, h, w] clean image before the update (DDIM: x^gt of the step)
    x_gt: torch.Tensor  # [B, C, h, w] one-step estimate (Eq. 8)
    noise: torch.Tensor  # [B, C, h, w] the noise added this step


Callback = Callable[[StepInfo], None]


def work_dtype(prior: Prior) -> torch.dtype:
    """The dtype of theta, x_t and the noise: the prior's, but float32 for half-precision priors
    (Adam's eps = 1e-15 and its second moments underflow in float16; bfloat16 cannot resolve its steps)."""
    return torch.float64 if prior.dtype == torch.float64 else torch.float32


def seed_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def draw_noise(generators: Sequence[torch.Generator], shape, dtype, device) -> torch.Tensor:
    """N(0, I) [B, *shape], row b from generator b (CPU float32, then cast): batch-independent per seed."""
    rows = [torch.randn(tuple(shape), generator=g, dtype=torch.float32) for g in generators]
    return torch.stack(rows).to(device=device, dtype=dtype)


def initial_noise(prior: Prior, seeds: Sequence[int]) -> torch.Tensor:
    """The per-seed noise eps~ [B, C, h, w] shared by DDIM and FSD (Eq. 11): the first draw of each seed."""
    return draw_noise(seed_generators(seeds), prior.latent_shape, work_dtype(prior), prior.device)


def given_noise(drawn: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
    """`noise` (shape-checked, cast to `drawn`'s device and dtype) in place of the seeds' eps~ `drawn` [B, C, h, w]."""
    if noise is None:
        return drawn
    if noise.shape != drawn.shape:
        raise ValueError(f"noise must have shape {tuple(drawn.shape)}, got {tuple(noise.shape)}")
    return noise.to(device=drawn.device, dtype=drawn.dtype)


def ddim_sample(
    prior: Prior,
    guidance: Guidance,
    noise: torch.Tensor,
    grid: torch.Tensor,
    theta0: torch.Tensor | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """DDIM (eta = 0) along the decreasing grid [N], then to the clean image; returns x_0 [B, C, h, w].

    Starts from x_{t_0} = alpha_{t_0} theta0 + sigma_{t_0} eps~ (theta0 = 0 by default), the same
    point FSD starts from, so Proposition 1 holds exactly.
    """
    b = noise.shape[0]
    prior.schedule.check_range(int(grid.max()))
    theta0 = torch.zeros_like(noise) if theta0 is None else theta0
    alpha, sigma = prior.schedule.alpha_sigma(grid[:1].expand(b), noise.dtype, noise.device)
    x = updates.add_noise(theta0, noise, alpha, sigma)
    nexts = torch.cat([grid[1:], grid.new_tensor([-1])])
    bar = tqdm(range(len(grid)), desc="ddim", disable=not progress, leave=False, dynamic_ncols=True)
    with torch.no_grad():
        for i in bar:
            t, s = grid[i].expand(b), nexts[i].expand(b)
            alpha_t, sigma_t = prior.schedule.alpha_sigma(t, x.dtype, x.device)
            alpha_s, sigma_s = prior.schedule.alpha_sigma(s, x.dtype, x.device)
            eps_hat = predict_eps(prior, x, t, guidance)
            if callback is not None:
                x_gt = updates.one_step_estimate(x, eps_hat, alpha_t, sigma_t)
                callback(StepInfo(i, t, x_gt, x_gt, noise))
            x = updates.ddim_step(x, eps_hat, alpha_t, sigma_t, alpha_s, sigma_s)
            bar.set_postfix(t=int(grid[i]), refresh=False)
    return x


def particle_generators(seeds: Sequence[int], particles: int) -> list[torch.Generator]:
    """One generator per row, seed-major: particle 0 of a seed is the seed's own generator (so its draws are a
    one-particle run's), particle k > 0 draws from a stream of its own (`stream_seed`)."""
    return [torch.Generator().manual_seed(int(s) if k == 0 else stream_seed(s, f"particle/{k}"))
            for s in seeds for k in range(particles)]


def rows_per_seed(config: DistillConfig) -> int:
    """Rows of theta per seed: VSD / ESD's particles (sharing the seed's critic), else 1."""
    return config.family.particles if config.rule.has_critic else 1


def distill(
    prior: Prior,
    guidance: Guidance,
    config: DistillConfig,
    seeds: Sequence[int],
    theta0: torch.Tensor | None = None,
    callback: Callback | None = None,
    progress: bool = False,
    desc: str = "distill",
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Score distillation on the clean image theta [B, C, h, w] (one row per seed and particle, seed-major:
    B = seeds x `rows_per_seed(config)`, P = config.family.particles for VSD / ESD, else 1); returns the final theta.

    Per step (Eq. 9-13):
      1. t: the annealed grid value t(tau) (same for all seeds) or, for UNIFORM, one draw per row;
      2. noise = blend_noise(eps~, fresh, beta)   (eps~ fixed per row, fresh drawn every step);
      3. x_t = alpha_t theta + sigma_t noise,  eps_hat = guided eps_phi(x_t | y, t);
      4. grad = eps_hat - noise  (Eq. 10), or the family's rule (`family.gradient`, config.rule);
      5. EXACT: theta -= Delta(sigma/alpha) grad (Eq. 12-13; last step goes to sigma/alpha = 0);
         ADAM: Adam step on theta with that gradient (w_t = 1: Adam is scale invariant).
    VSD / ESD: each seed's critic (fsd2d.vsd.Critic) takes one training step on its particles after step 4;
    the critics are deleted from the prior at the end. DSD: t' drawn per row (fsd2d.dsd.perturbed_timesteps).
    `noise` [B, C, h, w] replaces eps~ (e.g. a patch-shuffled copy); fresh draws still come from the seeds.
    ISM / NFSD read the null model from `guidance.null_or_uncond` (as 3D does; `Guidance.from_prompts` sets it).
    """
    prior.schedule.check_range(config.t_max)
    check_rule(config.rule, prior)
    particles = rows_per_seed(config)
    gens = particle_generators(seeds, particles)
    shape, dtype, device = prior.latent_shape, work_dtype(prior), prior.device
    b = len(gens)
    fixed = given_noise(draw_noise(gens, shape, dtype, device), noise)  # eps~ = initial_noise(prior, seeds), or `noise`
    theta = (torch.zeros(b, *shape, dtype=dtype, device=device) if theta0 is None else theta0.clone()).requires_grad_(
        config.optimizer is Optimizer.ADAM
    )
    grid = timesteps(config.steps, config.t_min, config.t_max, config.anneal, prior.schedule)
    ratios = prior.schedule.snr_ratio(torch.cat([grid, grid.new_tensor([-1])]))  # sigma/alpha, float64 [N+1]
    opt = (
        torch.optim.Adam([theta], lr=config.adam_lr, betas=ADAM_BETAS, eps=ADAM_EPS)
        if config.optimizer is Optimizer.ADAM
        else None
    )
    top = prior.schedule.top
    with contextlib.ExitStack() as stack:
        critics = vsd.Critics([stack.enter_context(vsd.Critic(prior, f"critic{k}", seed, config.family.lora_rank,
                                                              config.family.lora_lr, config.family.camera_dropout))
                               for k, seed in enumerate(seeds)]) if config.rule.has_critic else None  # 2D: no cameras
        bar = tqdm(range(config.steps), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
        for i in bar:
            if config.sampling is TimestepSampling.ANNEALED:
                t = grid[i].expand(b)
            else:
                t = uniform_timesteps(gens, config.t_min, config.t_max)
            fresh = draw_noise(gens, shape, dtype, device) if config.beta < 1.0 else None
            noise = updates.blend_noise(fixed, fresh, config.beta) if fresh is not None else fixed
            t_prime = dsd.perturbed_timesteps(t, gens, config.t_min, top, config.family.dsd_perturbation) \
                if config.rule is Rule.DSD else None
            with torch.no_grad():
                est = gradient(config.rule, prior, guidance, guidance.null_or_uncond, theta, t, noise, config.family,
                               critics=critics, t_prime=t_prime)
                grad = est.grad
                if callback is not None:
                    alpha, sigma = prior.schedule.alpha_sigma(t, dtype, device)
                    x_gt = updates.one_step_estimate(est.x_t, est.eps_hat, alpha, sigma)
                    callback(StepInfo(i, t, theta.detach().clone(), x_gt, est.noise))
                if opt is None:
                    theta.copy_(updates.flow_step(theta, grad, ratios[i].to(dtype), ratios[i + 1].to(dtype)))
            if critics is not None:  # the critic learns the particles as they are at this step (threestudio: one step)
                critics.train(prior, theta.detach(), guidance.cond)
            if opt is not None:
                theta.grad = grad
                opt.step()
            bar.set_postfix(t=int(t[0]), refresh=False)
    return theta.detach()


def sample(
    prior: Prior,
    guidance: Guidance,
    method: Method,
    seeds: Sequence[int],
    base: DistillConfig,
    *,
    noise: torch.Tensor | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Every method behind one contract: the final clean image [B, C, h, w] (one row per seed, or per seed and
    particle for VSD / ESD, seed-major: `rows_per_seed`; the prior's working
    space: pixels in [-1, 1] for analytic priors, latents for Stable Diffusion; prior.decode gives [0, 1] images).

    `base` carries the run's settings: steps, t range, anneal, Adam's lr, FSD's beta, the family's options.
    Method.DDIM samples along `base`'s annealed grid t(tau) (ddim_sample; any decreasing grid is a valid DDIM
    grid); every other method distils with `method.config(base)` (distill). So `Method.DDIM` and `Method.FSD` are
    interchangeable in the same call, and fsd-exact equals DDIM for every anneal (Proposition 1).
    `noise` [B, C, h, w] replaces eps~ (default: initial_noise(prior, seeds)) for DDIM and distillation alike.
    """
    if method is Method.DDIM:
        eps = given_noise(initial_noise(prior, seeds), noise)
        grid = timesteps(base.steps, base.t_min, base.t_max, base.anneal, prior.schedule)
        return ddim_sample(prior, guidance, eps, grid, callback=callback, progress=progress)
    return distill(prior, guidance, method.config(base), seeds, callback=callback, progress=progress, desc=method.value,
                   noise=noise)
