"""The score-distillation family as one contract: (prior, guidance, theta, t, noise) -> Estimate(grad, ...).

Every rule returns the gradient w.r.t. the image (or latent) theta, with weight w(t) = 1 (Adam is scale
invariant; the peers' w(t) = sigma_t/alpha_t or 1 - abar_t only rescale a step). 2D (`fsd2d.sampling.distill`)
and 3D (`fsd3d.train`) call `gradient` and nothing else, so each formula below exists once.

CFG is always the project's standard form (fsd2d.guidance): eps_s = eps_u + s (eps_c - eps_u), s = 1 none.
Conditionings: `guidance.cond` (prompt y), `guidance.uncond` (the negative prompt; '' = the null model)
and `null` (the empty prompt, always the null model, for the rules whose paper asks for it explicitly).

Rule   gradient (our symbols; the paper's form in brackets)
SDS    eps_s(x_t, t) - eps,   x_t = alpha_t theta + sigma_t eps       [FSD Eq. 10; FSD Eq. 15 with eps = eps~]
CSD    s (eps(x_t, y) - eps(x_t, uncond))                              [Yu et al. 2023 Eq. 7: the classifier term alone]
NFSD   s delta_C + delta_D,                                             [Katzir et al. 2023 Eq. 7: delta_D + s delta_C]
         delta_C = eps(x_t, y) - eps(x_t, null)                          [Katzir Eq. 3]
         (their eps(x_t, null) = delta_D + delta_N, Eq. 4: NFSD drops delta_N and SDS's eps, Eq. 5 -> 7)
         delta_D = eps(x_t, null)                         if t < t_threshold (200)   [Katzir Eq. 6]
                 = eps(x_t, null) - eps(x_t, uncond)      otherwise   (uncond = their negative prompt)
ISM    eps_s(x_t, t) - eps(x_s, s, null), s = t - interval,           [Liang et al. 2023, LucidDreamer Eq. 17]
         x_s = DDIM inversion of theta with the null model (from alpha_0 theta + sigma_0 eps, strides of
               `ism_stride`, at most `ism_inversion_steps` of them), x_t = one more inversion step s -> t
               [LucidDreamer Eq. 10: x_t = sqrt(abar_t) x0^(s) + sqrt(1 - abar_t) eps(x_s, s, null)]
SDI    eps_s(x_t, t) - kappa,  x_t = DDIM inversion of theta to t,     [Lukoianov et al. 2024 Eq. 10 with kappa_y^t]
         kappa = (x_t - alpha_t theta) / sigma_t  (the noise that inversion "found"; FSD Eq. 1 inverted)
                 [Lukoianov: kappa_y^t is the root of Eq. 8, found by DDIM inversion + entropy term, Eq. 11]
The diversity rivals, each in its own module:
VSD    eps_s(x_t, t) - eps_lora(x_t, t, c)  (a LoRA critic trained on the particles)   [fsd2d.vsd; ProlificDreamer]
ESD    VSD with the critic's camera CFG 1 - lambda                                        [fsd2d.vsd; Wang et al. 2024]
DSD    eps_s(x_t, t) - eps_1(x_t', t'), x_. = alpha_. theta + sigma_. e_ode (the seed's DDIM ODE at t' >= t)
                                                                                            [fsd2d.dsd; Xu et al. 2024]

A DDIM inversion step is `updates.ddim_step` towards a larger timestep (Eq. 5 read upwards).
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch

from fsd2d import dsd, updates, vsd
from fsd2d.errors import InputError, check_finite, check_int_range
from fsd2d.guidance import Guidance, cfg_combine, expand, predict_eps
from fsd2d.priors.base import Prior
from fsd2d.schedule import NUM_TRAIN_TIMESTEPS
from fsd2d.updates import Estimate  # the rules' result (defined beside the update rules)


class Rule(str, enum.Enum):
    """How a step turns (theta, t, noise) into a gradient (see the module table)."""

    SDS = "sds"  # eps_hat - noise: SDS (fresh noise), FSD (fixed noise), fsd-exact (= DDIM)
    ISM = "ism"
    SDI = "sdi"
    CSD = "csd"
    NFSD = "nfsd"
    VSD = "vsd"  # the rivals: a critic per run (fsd2d.vsd), or the seed's DDIM trajectory (fsd2d.dsd)
    ESD = "esd"
    DSD = "dsd"

    @property
    def has_critic(self) -> bool:
        """VSD and ESD: a LoRA critic per run, trained on its particles (fsd2d.vsd.Critic)."""
        return self in (Rule.VSD, Rule.ESD)


# Peers' defaults: LucidDreamer configs (delta_t 25, xs_delta_t 200, xs_inv_steps 5); SDI's threestudio
# guidance (inversion_n_steps 10); NFSD's paper (t < 200 switches the denoising term).
ISM_INTERVAL = 25
ISM_STRIDE = 200
ISM_INVERSION_STEPS = 5
SDI_INVERSION_STEPS = 10
SDI_ETA = 0.3
NFSD_T_THRESHOLD = 200
MAX_INVERSION_STEPS = 1000  # one prior call per step: beyond T steps every stride is 0 or 1


# the options of FamilyOptions that the commands take (--ism-interval ...): compare-2d's and gen-3d's
FAMILY_FLAGS = ("ism_interval", "ism_stride", "ism_inversion_steps", "sdi_inversion_steps", "sdi_inversion_cfg",
                "sdi_eta", "particles", "lora_rank", "lora_lr", "esd_lambda", "dsd_points")
MAX_PARTICLES = 64  # particles sharing one critic (ProlificDreamer's 2D runs: 8; thu-ml's 3D example: 4)


@dataclass(frozen=True)
class FamilyOptions:
    """The peers' own settings, each read only by its rule (ISM's, SDI's, NFSD's; VSD / ESD's critic and particles;
    DSD's ODE grid); FSD, SDS and CSD read none. The command-line flags of the same names set them (--ism-interval,
    --particles, ...)."""

    ism_interval: int = ISM_INTERVAL  # delta_t = t - s between ISM's two points
    ism_stride: int = ISM_STRIDE  # timesteps per DDIM inversion step from 0 up to s
    ism_inversion_steps: int = ISM_INVERSION_STEPS  # at most this many strides: start = max(s - n stride, 0)
    sdi_inversion_steps: int = SDI_INVERSION_STEPS  # strides of T/n from the clean image up to t
    sdi_inversion_cfg: float | None = None  # CFG of SDI's inversion (standard form); None: the run's scale
    sdi_eta: float = SDI_ETA  # DDIM-eta noise added per inversion step (0 = deterministic inversion)
    nfsd_t_threshold: int = NFSD_T_THRESHOLD
    particles: int = 1  # VSD / ESD: particles per run sharing one critic (other rules: 1 per seed, this ignored)
    lora_rank: int = vsd.LORA_RANK  # the critic's LoRA rank
    lora_lr: float = vsd.LORA_LR  # the critic's AdamW learning rate
    camera_dropout: float = vsd.CAMERA_DROPOUT  # the critic's camera replaced by zeros w.p. this in training
    esd_lambda: float = vsd.ESD_LAMBDA  # ESD's entropy weight: its critic's camera CFG is 1 - lambda
    dsd_points: int = dsd.DSD_POINTS  # DSD's coarse ODE grid linspace(top, 0, points)
    dsd_perturbation: float = dsd.DSD_PERTURBATION  # DSD's t' = t + floor(u min(f (t - t_min), top - t))

    def validate(self) -> None:
        top = NUM_TRAIN_TIMESTEPS - 1
        check_int_range("ism-interval", self.ism_interval, 0, top)
        check_int_range("ism-stride", self.ism_stride, 1, top)
        check_int_range("ism-inversion-steps", self.ism_inversion_steps, 1, MAX_INVERSION_STEPS)
        check_int_range("sdi-inversion-steps", self.sdi_inversion_steps, 1, MAX_INVERSION_STEPS)
        check_finite("sdi-inversion-cfg", self.sdi_inversion_cfg)
        check_finite("sdi-eta", self.sdi_eta)
        if not 0.0 <= self.sdi_eta <= 1.0:
            raise InputError(f"sdi-eta must be in [0, 1], got {self.sdi_eta}")
        if self.sdi_inversion_cfg is not None and abs(self.sdi_inversion_cfg) > 1000.0:
            raise InputError(f"sdi-inversion-cfg must be in [-1000, 1000], got {self.sdi_inversion_cfg}")
        check_int_range("nfsd t threshold", self.nfsd_t_threshold, 0, NUM_TRAIN_TIMESTEPS)
        check_int_range("particles", self.particles, 1, MAX_PARTICLES)
        check_int_range("lora-rank", self.lora_rank, 1, 256)
        check_int_range("dsd-points", self.dsd_points, 2, NUM_TRAIN_TIMESTEPS)
        for name, value in (("lora-lr", self.lora_lr), ("camera-dropout", self.camera_dropout),
                            ("esd-lambda", self.esd_lambda), ("dsd-perturbation", self.dsd_perturbation)):
            check_finite(name, value)
            if not 0.0 <= value <= 1.0 or (name == "lora-lr" and value == 0.0):
                raise InputError(f"{name} must be in {'(' if name == 'lora-lr' else '['}0, 1], got {value}")

    def lora_scale(self, rule: "Rule") -> float:
        """The critic's camera CFG s_L: 1 for VSD, 1 - lambda for ESD."""
        return 1.0 - self.esd_lambda if rule is Rule.ESD else 1.0


def check_rule(rule: Rule, prior: Prior) -> None:
    """A one-line InputError where `rule` cannot run on `prior`: every rule but SDS's reads the unconditional model
    or builds its classifier term by hand (eps_c - eps_u), which a prior that embeds its guidance scale (FLUX.1-dev:
    one guided call, no unconditional branch; fsd2d.guidance.predict_eps) does not have; VSD / ESD need a denoiser
    network to put their critic's LoRA in (fsd2d.vsd.denoiser_of: not the analytic priors)."""
    if rule is not Rule.SDS and prior.embeds_guidance:
        name = prior.describe().get("model", type(prior).__name__)
        raise InputError(f"{rule.value} combines the model's conditional and unconditional predictions, and {name} "
                         "embeds its guidance scale (no unconditional branch): use ddim, fsd, fsd-exact or sds on it "
                         "(or load it with real CFG: load_flux(..., true_cfg=True))")
    if rule.has_critic:
        vsd.time_embedding_of(vsd.denoiser_of(prior))


def gradient(rule: Rule, prior: Prior, guidance: Guidance, null: torch.Tensor, theta: torch.Tensor,
             t: torch.Tensor, noise: torch.Tensor, options: FamilyOptions = FamilyOptions(), *,
             critics: vsd.Critics | None = None, t_prime: torch.Tensor | None = None) -> Estimate:
    """The gradient of `rule` at theta [B, C, h, w] for timesteps t (CPU long [B]) and noise [B, C, h, w].

    `null` [1 or B, ...] is the empty prompt's conditioning (ISM's inversion, NFSD's null terms).
    VSD / ESD also take the runs' `critics` (fsd2d.vsd.Critics: one per run, B / len contiguous rows each, and the
    rows' cameras, None in 2D: c = 0, so ESD is VSD there); DSD takes t' [B] >= t (`dsd.perturbed_timesteps`) and
    reads `noise` as the fixed eps~.
    Runs under no_grad; theta is read, never written (the critics are trained by the loop: vsd.train_critics).
    """
    with torch.no_grad():
        theta = theta.detach()
        if rule.has_critic:
            if critics is None:
                raise ValueError(f"{rule.value} needs the runs' critics (fsd2d.vsd.Critics)")
            return vsd.vsd_gradient(prior, critics, guidance, theta, t, noise, options.lora_scale(rule))
        if rule is Rule.DSD:
            if t_prime is None:
                raise ValueError("dsd needs t' per row (fsd2d.dsd.perturbed_timesteps)")
            return dsd.dsd_gradient(prior, guidance, theta, t, t_prime, noise, options.dsd_points)
        if rule is Rule.SDS:
            return sds(prior, guidance, theta, t, noise)
        if rule is Rule.CSD:
            return csd(prior, guidance, theta, t, noise)
        if rule is Rule.NFSD:
            return nfsd(prior, guidance, null, theta, t, noise, options.nfsd_t_threshold)
        if rule is Rule.ISM:
            return ism(prior, guidance, null, theta, t, noise, options)
        if rule is Rule.SDI:
            return sdi(prior, guidance, theta, t, noise, options)
    raise ValueError(f"unknown rule {rule!r}; allowed: {[r.value for r in Rule]}")


def prior_calls(rule: Rule, t: int, scale: float, options: FamilyOptions = FamilyOptions(),
                negative_is_null: bool = True) -> int:
    """Prior evaluations per sample of one step at timestep t (a batched call of 2B samples counts 2); DSD's at
    t' = t (its ODE runs to t') on a VP schedule (top 999); VSD / ESD count the critic's training forward (its
    backward not counted), ESD's camera CFG as two calls (3D: in 2D, without cameras, it makes one, as VSD)."""
    guided = 1 if scale == 1.0 else 2
    if rule.has_critic:
        return guided + (1 if options.lora_scale(rule) == 1.0 else 2) + 1
    if rule is Rule.DSD:
        top = NUM_TRAIN_TIMESTEPS - 1
        return dsd.ode_steps(t, top, options.dsd_points) * guided + guided + 1 + guided
    if rule is Rule.SDS:
        return guided
    if rule is Rule.CSD:
        return 2
    if rule is Rule.NFSD:
        return 2 if negative_is_null else 3
    if rule is Rule.ISM:
        s = max(t - options.ism_interval, 0)
        start = max(s - options.ism_stride * options.ism_inversion_steps, 0)
        return math.ceil((s - start) / options.ism_stride) + 1 + guided
    inv_scale = scale if options.sdi_inversion_cfg is None else options.sdi_inversion_cfg
    steps = math.ceil((t + 1) / sdi_stride(options))  # from -1 (clean) up to t
    return steps * (1 if inv_scale == 1.0 else 2) + guided


def eps_many(prior: Prior, x_t: torch.Tensor, t: torch.Tensor, conds: list[torch.Tensor]) -> list[torch.Tensor]:
    """Unguided eps_phi(x_t | cond_k, t) for each conditioning, in ONE batched prior call of len(conds) x B."""
    b = x_t.shape[0]
    k = len(conds)
    eps = prior.eps(torch.cat([x_t] * k), torch.cat([t] * k), torch.cat([expand(c, b) for c in conds]))
    return list(eps.chunk(k))


def sds(prior: Prior, guidance: Guidance, theta, t, noise) -> Estimate:
    """SDS / FSD (Eq. 10, 15): x_t = alpha theta + sigma eps (Eq. 11); grad = eps_s(x_t) - eps."""
    alpha, sigma = prior.schedule.alpha_sigma(t, theta.dtype, theta.device)
    x_t = updates.add_noise(theta, noise, alpha, sigma)
    eps_hat = predict_eps(prior, x_t, device_t(t, theta), guidance)
    return Estimate(updates.sds_gradient(eps_hat, noise), x_t, eps_hat, noise)


def classifier_term(eps_u: torch.Tensor, eps_c: torch.Tensor, scale: float) -> torch.Tensor:
    """s (eps_c - eps_u) = cfg_combine(eps_u, eps_c, s) - eps_u: what CFG adds to the unconditional model."""
    return cfg_combine(eps_u, eps_c, scale) - eps_u


def csd(prior: Prior, guidance: Guidance, theta, t, noise) -> Estimate:
    """CSD (classifier score distillation): grad = s (eps(x_t, y) - eps(x_t, uncond)), x_t = alpha theta + sigma eps.

    The paper writes w(t) (eps(x_t, y) - eps(x_t, empty)) [Yu et al. Eq. 7]; our s is that scale (1 on the
    analytic priors) and `uncond` the negative prompt ('' = their empty prompt)."""
    alpha, sigma = prior.schedule.alpha_sigma(t, theta.dtype, theta.device)
    x_t = updates.add_noise(theta, noise, alpha, sigma)
    eps_u, eps_c = eps_many(prior, x_t, device_t(t, theta), [guidance.uncond, guidance.cond])
    return Estimate(classifier_term(eps_u, eps_c, guidance.scale), x_t, cfg_combine(eps_u, eps_c, guidance.scale),
                    noise)


def nfsd(prior: Prior, guidance: Guidance, null: torch.Tensor, theta, t, noise, t_threshold: int) -> Estimate:
    """NFSD (noise-free score distillation): grad = s delta_C + delta_D [Katzir Eq. 7] (no noise, no delta_N
    [Eq. 4] subtracted), with delta_C = eps(x_t, y) - eps(x_t, null) [Eq. 3] and delta_D = eps(x_t, null) for
    t < t_threshold, else eps(x_t, null) - eps(x_t, negative) [Eq. 6]. One prior call of 3B (2B when the
    negative prompt is the null one)."""
    alpha, sigma = prior.schedule.alpha_sigma(t, theta.dtype, theta.device)
    x_t = updates.add_noise(theta, noise, alpha, sigma)
    td = device_t(t, theta)
    # identity first: the usual case ('' as negative prompt) needs no comparison (a host sync on CUDA)
    same = null is guidance.uncond or (guidance.uncond.shape == null.shape and torch.equal(guidance.uncond, null))
    if same:
        eps_0, eps_c = eps_many(prior, x_t, td, [null, guidance.cond])
        eps_neg = eps_0
    else:
        eps_0, eps_neg, eps_c = eps_many(prior, x_t, td, [null, guidance.uncond, guidance.cond])
    small = (t < t_threshold).to(device=theta.device).view(-1, 1, 1, 1)  # [B, 1, 1, 1]
    delta_d = torch.where(small, eps_0, eps_0 - eps_neg)
    grad = classifier_term(eps_0, eps_c, guidance.scale) + delta_d
    return Estimate(grad, x_t, cfg_combine(eps_neg, eps_c, guidance.scale), noise)


def ddim_invert(prior: Prior, eps_fn, x: torch.Tensor, start: torch.Tensor, stop: torch.Tensor, stride: int,
                eta: float = 0.0, noise: torch.Tensor | None = None):
    """DDIM inversion (Eq. 5 towards larger t; LucidDreamer Eq. 10) of x [B, C, h, w] from timesteps `start` to
    `stop` (CPU long [B], start <= stop; -1 = clean) in strides of `stride`: cur -> min(cur + stride, stop), each
    step x <- ddim_step(x, eps_fn(x, max(cur, 0)), cur -> next). Rows already at `stop` stay put (one batched
    prior call per stride for all rows). Returns x at `stop`.
    eta > 0 adds eta * sqrt(var) * noise per step, var = (sigma_cur^2 / sigma_next^2)(1 - abar_next / abar_cur),
    DDIM's (DDPM posterior) variance between the two points, as threestudio's SDI code (which draws fresh noise
    each step; we reuse the step's one draw `noise`, so a seed's step needs one draw whatever the inversion length)."""
    cur = start.clone()
    while bool((cur < stop).any()):
        nxt = torch.minimum(cur + stride, stop)
        eps = eps_fn(x, cur.clamp(min=0))
        a_c, s_c = prior.schedule.alpha_sigma(cur, x.dtype, x.device)
        a_n, s_n = prior.schedule.alpha_sigma(nxt, x.dtype, x.device)
        stepped = updates.ddim_step(x, eps, a_c, s_c, a_n, s_n)
        if eta > 0.0:
            var = (s_c / s_n.clamp(min=1e-12)) ** 2 * (1.0 - (a_n / a_c) ** 2)  # 0 where cur = -1
            stepped = stepped + eta * var.clamp(min=0.0).sqrt() * noise
        moving = (cur < stop).to(x.device).view(-1, 1, 1, 1)
        x = torch.where(moving, stepped, x)  # rows already at `stop` keep their bits (batch-independent results)
        cur = nxt
    return x


def ism(prior: Prior, guidance: Guidance, null: torch.Tensor, theta, t, noise, options: FamilyOptions) -> Estimate:
    """ISM (interval score matching, LucidDreamer): the null model's DDIM inversion of theta to s = t - interval,
    one more inversion step s -> t [Eq. 10], grad = eps_s(x_t, t) - eps(x_s, s, null) [Eq. 17].

    As LucidDreamer's code: x_start = alpha theta + sigma eps at start = max(s - n * stride, 0), strides of
    `ism_stride` up to s, the inversion's own eps at x_s is the target (no extra call), w(t) = 1 here."""
    td = device_t(t, theta)
    s = (t - options.ism_interval).clamp(min=0)
    start = (s - options.ism_stride * options.ism_inversion_steps).clamp(min=0)
    a0, s0 = prior.schedule.alpha_sigma(start, theta.dtype, theta.device)
    x = updates.add_noise(theta, noise, a0, s0)

    def null_eps(x_, tt):
        return eps_many(prior, x_, device_t(tt, theta), [null])[0]

    x_s = ddim_invert(prior, null_eps, x, start, s, options.ism_stride)
    target = null_eps(x_s, s)  # eps(x_s, s, null), Step 2's inversion eps
    a_s, s_s = prior.schedule.alpha_sigma(s, theta.dtype, theta.device)
    alpha, sigma = prior.schedule.alpha_sigma(t, theta.dtype, theta.device)
    x_t = updates.ddim_step(x_s, target, a_s, s_s, alpha, sigma)
    eps_hat = predict_eps(prior, x_t, td, guidance)
    return Estimate(eps_hat - target, x_t, eps_hat, updates.eps_from_x0(x_t, theta, alpha, sigma))


def sdi_stride(options: FamilyOptions) -> int:
    """SDI's inversion stride T / n: the grid -1 (clean), T/n - 1, 2T/n - 1, ... below t, then t."""
    return max(NUM_TRAIN_TIMESTEPS // options.sdi_inversion_steps, 1)


def sdi(prior: Prior, guidance: Guidance, theta, t, noise, options: FamilyOptions) -> Estimate:
    """SDI (score distillation via reparametrised DDIM): invert theta (clean, t = -1) to t with DDIM, the
    prediction taken with CFG `sdi_inversion_cfg` (default: the run's scale); kappa = (x_t - alpha_t theta)/sigma_t
    (their approximate root of Eq. 8) replaces SDS's fresh noise: grad = eps_s(x_t, t) - kappa [Lukoianov Eq. 10].
    The first inversion step evaluates the prior at timestep 0 on the clean image
    (x_next = alpha_next theta + sigma_next eps(theta, 0)). `noise` enters only
    through `sdi_eta` (their inversion_eta, 0.3; the paper's entropy term H(t), Eq. 11): without it all seeds
    from the same theta agree."""
    scale = guidance.scale if options.sdi_inversion_cfg is None else options.sdi_inversion_cfg
    inv = Guidance(guidance.cond, guidance.uncond, 1.0)

    def inv_eps(x_, tt):
        td_ = device_t(tt, theta)
        if scale == 1.0:
            return predict_eps(prior, x_, td_, inv)
        eps_u, eps_c = eps_many(prior, x_, td_, [guidance.uncond, guidance.cond])
        return cfg_combine(eps_u, eps_c, scale)  # may be negative (SDI's paper: -7.5, Eq. 3 is our standard form; threestudio's -7.5 is +1 form: -6.5)

    x_t = ddim_invert(prior, inv_eps, theta, torch.full_like(t, -1), t, sdi_stride(options), options.sdi_eta, noise)
    alpha, sigma = prior.schedule.alpha_sigma(t, theta.dtype, theta.device)
    kappa = updates.eps_from_x0(x_t, theta, alpha, sigma)
    eps_hat = predict_eps(prior, x_t, device_t(t, theta), guidance)
    return Estimate(updates.sds_gradient(eps_hat, kappa), x_t, eps_hat, kappa)


def device_t(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Timesteps on the working tensor's device (no host sync on CUDA)."""
    return t.to(like.device, non_blocking=True)
