"""The 3D optimisation loop: FSD / SDS on a Gaussian scene (paper Section 4, Eq. 14-16).

All S seeds of a run advance together. Per step, for C cameras c per seed drawn from the camera ranges:
  1. render each seed's scene: rgb [C, 3, R, R] in [0, 1], alpha [C, 1, R, R];
  2. z = prior.encode(all S*C renders) (pixels in [-1, 1], or the VAE latent with gradients through the encoder);
  3. t = t(tau) annealed (or uniform); noise = eps(c) from each seed's noise function (world map / constant / random);
  4. x_t = alpha_t z + sigma_t noise;  eps_hat = predict_eps(view prior, x_t, t, view guidance): one call for all;
  5. grad_z = eps_hat - noise (Eq. 15; or ISM/SDI/CSD/NFSD: fsd2d.family.gradient, the 2D function)
     pushed through the encoder and renderers in one backward; Adam per seed;
  6. densification and pruning per seed with gsplat's strategies (fsd3d.densify).
Steps 3-5 use the 2D functions (fsd2d.family, fsd2d.updates, fsd2d.schedule): nothing is re-implemented.

Every seed is its own scene, optimisers, generators, noise function, densification state and checkpoint,
so a seed's result does not depend on the seeds beside it: on the CPU with the embedded prior the same bits
when the prior's posterior product rounds alike at both batch sizes (tests/fsd3d/test_densify.py evaluates it sample by
sample), else to that rounding (~1e-15 relative on eps); the renderer's backward gives the same bits on every run
at any thread count (fsd3d/renderer.py, "Gradients"). A checkpoint holds the scene (any number of Gaussians), Adam's state, the
strategy's state, the step and every generator's state, so a run killed and resumed ends bit for bit where
an uninterrupted run ends (on the CPU).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from fsd2d import dsd, updates
from fsd2d.cost import Meter, counted
from fsd2d.errors import InputError
from fsd2d.family import Rule, gradient
from fsd2d.sampling import TimestepSampling
from fsd2d.schedule import timesteps, uniform_timesteps
from fsd2d.vsd import Critic, Critics
from fsd3d.backbones import Background, Weighting
from fsd3d.cameras import sample_cameras, stack_cameras
from fsd2d.seeds import seed_for
from fsd3d.checkpoint import SeedState, check_resolved, save_checkpoint
from fsd3d.densify import Densifier, Densify, scene_scale
from fsd3d.noise import NoiseFunction, surface_points
from fsd3d.priors3d import ScenePrior
from fsd3d.renderer import RenderOutput, render_scene
from fsd3d.settings import ResolvedTrain3D

__all__ = ["StepLog", "train_seeds", "train_seed"]


@dataclass
class StepLog:
    step: int
    t: int
    loss: torch.Tensor  # 0-dim, on the prior's device: mean over cameras of ||z - x_gt||^2 / numel (Eq. 8 without
    #                     its weight). Reading it (.item()) waits for the GPU; the loop itself never does.




def means_lr(config: ResolvedTrain3D, step: int) -> float:
    """The means' learning rate at `step` (0-based) of the resolved config: lr_means f^(step / (steps - 1)), an
    exponential decay to the fraction f = means_lr_final at the last step (gsplat's trainer: ExponentialLR with
    gamma = 0.01^(1 / max_steps); DreamGaussian / 3DGS: log-linear from position_lr_init to position_lr_final)."""
    if config.means_lr_final == 1.0 or config.steps < 2:
        return config.lr.means
    return config.lr.means * config.means_lr_final ** (step / (config.steps - 1))


@dataclass
class Loop:
    """What every step of one `train_seeds` call shares: made once, before the first step."""

    scene_prior: ScenePrior
    config: ResolvedTrain3D
    noise_fns: dict[int, NoiseFunction]  # seed -> its noise function eps(c)
    densifier: Densifier | None
    grid: torch.Tensor  # CPU long [steps]: the annealed timesteps
    background: torch.Tensor  # [3] on the device (RANDOM draws white or black per view, `view_backgrounds`)
    clock: "Stopwatch"
    meter: Meter | None = None  # the run's cost (fsd2d.cost): the view priors' evaluations, the steps advanced

    @property
    def cameras(self) -> int:
        """Cameras sampled per seed and step."""
        return self.config.cameras_per_step

    @property
    def views(self) -> int:
        """Views rendered per seed and step (MVDream: a 4-view set per camera)."""
        return self.config.cameras_per_step * self.scene_prior.views_per_camera


def start_loop(scene_prior: ScenePrior, config: ResolvedTrain3D, states: list[SeedState],
               timings: dict[str, float] | None, meter: Meter | None = None) -> Loop:
    """Each seed's noise function, the densifier (its state started for the seeds that have none), the timestep
    grid and the background: made once per call."""
    prior = scene_prior.prior
    device = prior.device
    prior.schedule.check_range(config.t_max)  # a flow model's last index is pure noise
    noise_fns = {s.seed: config.method.noise_function(prior.latent_shape, config.beta, seed_for(s.seed, "noise-map"),
                                                       config.theta, config.alpha0) for s in states}
    densifier = None
    if config.densify.strategy is not Densify.NONE:
        fov = 0.5 * (config.cameras.fov[0] + config.cameras.fov[1])  # camera distances (relative radii converted)
        distances = tuple(config.cameras.distance(r, fov) for r in config.cameras.radius)
        densifier = Densifier(config.densify, scene_scale(distances), config.lr.means)
        for s in (p for seed in states for p in seed.scenes):
            if s.densify_state is None:
                s.densify_state = densifier.initial_state()
    grid = timesteps(config.steps, config.t_min, config.t_max, config.anneal, prior.schedule)  # CPU long [steps]
    # [3], made once: no host copy per step
    background = torch.zeros(3, device=device) if config.background is Background.BLACK else \
        scene_prior.background_tensor(device)
    return Loop(scene_prior, config, noise_fns, densifier, grid, background, Stopwatch(timings, device), meter)


def train_seeds(
    scene_prior: ScenePrior,
    config: ResolvedTrain3D,
    states: list[SeedState],
    checkpoints: dict[int, Path] | None = None,
    identity: dict | None = None,
    progress: bool = False,
    callback: Callable[[SeedState, StepLog], None] | None = None,
    timings: dict[str, float] | None = None,
    meter: Meter | None = None,
) -> list[SeedState]:
    """Advance every seed to config.steps together: per step, one encode, ONE guided prior call and one
    backward for all S seeds x C cameras; each seed keeps its own scene, Adams, generators, noise function,
    densification state and checkpoint (`checkpoints[seed]`), so its result does not depend on the others.

    `config`: the run's resolved settings (fsd3d.settings.resolve(...).train).
    Seeds may start at different steps (a resumed run): a seed joins when the loop reaches its step.
    `timings`, if given, accumulates seconds per section: render (forward), prior (view conditioning and
    the guided noise prediction) and rest (encode, noise, backward through renderer/encoder, Adam, densify).
    Nothing in a step waits for the GPU (no .item(), host copies are non-blocking) except checkpoints,
    densification refinements and, inside gsplat, the sizing of its tile lists.
    `meter` (fsd2d.cost.Meter), if given, counts the prior's evaluations and the seed-steps, and ticks each step.
    """
    check_resolved(config)
    if len({s.seed for s in states}) != len(states):
        raise InputError("each seed may appear once in a batch of seeds")
    loop = start_loop(scene_prior, config, states, timings, meter)
    try:
        if config.method.rule.has_critic:
            make_critics(loop, states)
        run_steps(loop, states, checkpoints, identity, progress, callback)
    finally:  # the critics leave the prior; each state keeps its critic's last state (and its checkpoint has it)
        for s in states:
            if s.critic is not None:
                s.critic_state = s.critic.state_dict()
                s.critic.close()
                s.critic = None
    return states


def make_critics(loop: Loop, states: list[SeedState]) -> None:
    """VSD / ESD: each seed's critic in the prior's denoiser, restored from `critic_state` (a checkpoint's, or an
    earlier call's) where the seed has one."""
    family = loop.config.family
    for s in states:
        s.critic = Critic(loop.scene_prior.prior, f"critic_seed{s.seed}", s.seed, family.lora_rank, family.lora_lr,
                          family.camera_dropout)
        if s.critic_state is not None:
            s.critic.load_state_dict(s.critic_state)
            s.critic_state = None


def run_steps(loop: Loop, states: list[SeedState], checkpoints: dict[int, Path] | None, identity: dict | None,
              progress: bool, callback: Callable[[SeedState, StepLog], None] | None) -> None:
    """`train_seeds`'s steps, from the earliest seed's step to the end."""
    config, meter = loop.config, loop.meter
    first = min((s.step for s in states), default=config.steps)
    bar = tqdm(range(first, config.steps), initial=first, total=config.steps, disable=not progress, leave=False,
               desc=f"seed{'s' if len(states) > 1 else ''} {','.join(str(s.seed) for s in states)}",
               dynamic_ncols=True)
    for i in bar:
        active = [s for s in states if s.step == i]
        if not active:
            continue
        t_seed, losses = train_step(loop, active, i, with_loss=callback is not None)
        if meter is not None:
            meter.seed_steps += len(active)
            meter.tick()
        bar.set_postfix(t=int(t_seed[0]), gaussians=len(active[0].scene), refresh=False)
        for k, s in enumerate(active):
            if checkpoints is not None and (s.step % config.checkpoint_every == 0 or s.step == config.steps):
                save_checkpoint(checkpoints[s.seed], s, config, identity)
            if callback is not None:
                callback(s, StepLog(s.step, int(t_seed[k]), losses[k]))


def train_step(loop: Loop, seeds: list[SeedState], i: int, with_loss: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Step i of the seeds in `seeds` (Eq. 14-15): render, encode, noise, one guided prior call, one backward, Adam
    and densification per scene (a seed's, and its particles' with VSD / ESD's --particles). Returns each seed's
    timestep [S] (CPU; its first view's) and, `with_loss`, each seed's loss [S] (its particle 0's)."""
    config, scene_prior = loop.config, loop.scene_prior
    prior = scene_prior.prior
    if scene_prior.compiled:
        torch.compiler.cudagraph_mark_step_begin()
    loop.clock.start()
    active = [p for s in seeds for p in s.scenes]  # the scenes: each seed's particles consecutive
    cams, angles, t_cpu, outs = render_views(loop, active, i)
    loop.clock.lap("render")
    rgb = torch.cat([o.rgb for o in outs])  # [S*C, 3, R, R]; colours may exceed 1 (no upper clamp on SH)
    if config.clamp_renders:  # to [0, 1] before a VAE encoder, which was trained on images in range
        rgb = rgb.clamp(0.0, 1.0)
    z = prior.encode(rgb.to(prior.dtype))  # [S*C, D, h, w], one encoder call
    c = loop.views
    noise = torch.cat([  # [S*C, D, h, w], eps(c) per seed (surface noise also reads the views' surface points)
        loop.noise_fns[s.seed](el_az[:, 0], el_az[:, 1], o.alpha.detach(), s.noise_gen, device=prior.device,
                               dtype=prior.dtype, points=view_points(loop.noise_fns[s.seed], o, cams[k * c:(k + 1) * c]))
        for k, (s, o, el_az) in enumerate(zip(active, outs, angles))])
    loop.clock.lap("rest")
    view_prior, guidance = scene_prior.view_batch(cams, config.cfg)
    rule = config.method.rule
    critics = seed_critics(loop, seeds, cams) if rule.has_critic else None
    vpc = scene_prior.views_per_camera  # DSD's t' is drawn per camera (MVDream's 4 views share it, as they share t)
    t_prime = None if rule is not Rule.DSD else dsd.perturbed_timesteps(
        t_cpu[::vpc], [s.noise_gen for s in active for _ in range(loop.cameras)], config.t_min, prior.schedule.top,
        config.family.dsd_perturbation).repeat_interleave(vpc)
    # the family's rules (fsd2d.family, the 2D functions): SDS/FSD is eps_hat - noise (Eq. 15), one guided call
    # for every seed and camera; ISM/NFSD also use the empty prompt's conditioning at these cameras
    with contextlib.ExitStack() as counting:
        if loop.meter is not None:
            for p in {id(p): p for p in [view_prior, *(critics.priors if critics else [])]}.values():
                counting.enter_context(counted(p, loop.meter))
        est = gradient(rule, view_prior, guidance, guidance.null_or_uncond, z.detach(), t_cpu, noise, config.family,
                       critics=critics, t_prime=t_prime)
        if critics is not None:  # each seed's critic learns its renders of this step (threestudio: one joint step)
            critics.train(view_prior, z.detach(), guidance.cond)
    loop.clock.lap("prior")
    grad = est.grad if config.weighting is Weighting.ONE else \
        est.grad * step_weights(prior.schedule, t_cpu, est.grad)  # w(t) = sigma_t / alpha_t
    losses = None
    if with_loss:  # the logged loss is for the callback only: no extra work without one
        with torch.no_grad():
            alpha, sigma = prior.schedule.alpha_sigma(t_cpu, prior.dtype, prior.device)
            x_gt = updates.one_step_estimate(est.x_t, est.eps_hat, alpha, sigma)
            losses = (z.detach() - x_gt).pow(2).flatten(1).mean(1).view(len(active), c).mean(1)  # [scenes]
    update_scenes(loop, active, i, z, grad, outs)
    loop.clock.lap("rest")
    first = torch.arange(len(seeds)) * len(seeds[0].scenes)  # each seed's particle 0 among the scenes
    return t_cpu[first * c], None if losses is None else losses[first.to(losses.device)]


def seed_critics(loop: Loop, seeds: list[SeedState], cams: list) -> Critics:
    """The seeds' critics over their rows (a seed's P particles x C views, consecutive), each with the view prior of
    its own cameras (MVDream's is bound to them) and the views' flattened camera-to-world matrices [S*P*C, 16]."""
    n = len(cams) // len(seeds)
    priors = [loop.scene_prior.view_batch(cams[k * n:(k + 1) * n], loop.config.cfg)[0] for k in range(len(seeds))]
    c2w = torch.linalg.inv(torch.stack([cam.viewmat for cam in cams]).double()).flatten(1).float()  # [S*P*C, 16]
    return Critics([s.critic for s in seeds], priors, c2w)


def render_views(loop: Loop, active: list[SeedState], i: int):
    """Each active seed's cameras for step i drawn from its camera stream, rendered on its backgrounds:
    (cameras [S*C], (elevation, azimuth) [C, 2] per seed on the CPU in degrees, t [S*C] CPU long, renders per seed)."""
    config, scene_prior = loop.config, loop.scene_prior
    device, res, n_cam, c = scene_prior.prior.device, scene_prior.resolution, loop.cameras, loop.views
    uniform = config.sampling is TimestepSampling.UNIFORM
    cams, angles, ts, outs = [], [], [], []
    for s in active:
        cams_s = scene_prior.expand_cameras(sample_cameras(n_cam, config.cameras, s.camera_gen, res, res,
                                                          device=device))  # [C] views, a camera's consecutive
        angles.append(torch.tensor([(cam.elevation, cam.azimuth) for cam in cams_s]))  # [C, 2] CPU, degrees
        ts.append(uniform_timesteps([s.noise_gen] * n_cam, config.t_min, config.t_max).repeat_interleave(c // n_cam)
                  if uniform else loop.grid[i].expand(c))  # the views of one camera share t
        out = render_scene(s.scene, cams_s, view_backgrounds(config.background, loop.background, len(cams_s),
                                                             s.noise_gen, device))  # rgb [C, 3, R, R]
        if loop.densifier is not None:
            loop.densifier.pre_backward(out)
        cams += cams_s
        outs.append(out)
    return cams, angles, torch.cat(ts), outs


def update_scenes(loop: Loop, active: list[SeedState], i: int, z: torch.Tensor, grad: torch.Tensor,
                  outs: list[RenderOutput]) -> None:
    """One backward of grad [S*C, D, h, w] through z (each seed's scene gets the mean over its own C views, plus
    gsplat's MCMC regularisers, mean opacity and mean scale of its own Gaussians, where the profile has them), then
    per seed: Adam (the means' LR on its schedule) and densification."""
    config, c = loop.config, loop.views
    for s in active:
        for opt in s.optimizers.values():
            opt.zero_grad(set_to_none=True)
    if config.opacity_reg or config.scale_reg:
        reg = sum(config.opacity_reg * s.scene.opacities().mean() + config.scale_reg * s.scene.scales().mean()
                  for s in active)
        torch.autograd.backward([z, reg], [grad / c, None])
    else:
        z.backward(gradient=grad / c)
    lr_means = means_lr(config, i)
    for k, s in enumerate(active):
        s.optimizers["means"].param_groups[0]["lr"] = lr_means
        for opt in s.optimizers.values():
            opt.step()
        s.step = i + 1
        if loop.densifier is not None:
            loop.densifier.post_backward(s.scene, s.optimizers, s.densify_state, s.step, outs[k], s.densify_gen,
                                         means_lr=lr_means)


def train_seed(
    scene_prior: ScenePrior,
    config: ResolvedTrain3D,
    seed: int,
    state: SeedState,
    checkpoint: Path | None = None,
    identity: dict | None = None,
    progress: bool = False,
    callback: Callable[[SeedState, StepLog], None] | None = None,
    timings: dict[str, float] | None = None,
) -> SeedState:
    """One seed alone: `train_seeds` with a batch of one (the same result as in any batch of seeds)."""
    if state.seed != seed:
        raise InputError(f"state of seed {state.seed} given for seed {seed}")
    ckpts = None if checkpoint is None else {seed: checkpoint}
    return train_seeds(scene_prior, config, [state], ckpts, identity, progress, callback, timings)[0]


def view_points(noise_fn: NoiseFunction, rendered, cameras) -> torch.Tensor | None:
    """The surface points of a seed's views [C, R, R, 3] for a noise function that reads them (SurfaceNoise)."""
    if not noise_fn.needs_points:
        return None
    viewmats, Ks = stack_cameras(cameras)
    return surface_points(rendered.depth.detach(), viewmats, Ks)


def view_backgrounds(kind: Background, fixed: torch.Tensor, views: int, generator: torch.Generator,
                     device: torch.device) -> torch.Tensor:
    """The background of each of a seed's views: `fixed` [3] (WHITE, BLACK), or for RANDOM white or black with
    probability 1/2 per view (DreamGaussian's invert_bg_prob 0.5), drawn from the seed's generator: [C, 3]."""
    if kind is not Background.RANDOM:
        return fixed
    white = (torch.rand(views, generator=generator) < 0.5).to(torch.float32)  # [C] on the CPU (reproducible)
    return white[:, None].expand(views, 3).to(device, non_blocking=True)


def step_weights(schedule, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Weighting.SIGMA_ALPHA's w(t) = sigma_t / alpha_t (`NoiseSchedule.snr_ratio`, the variable of Prop. 1;
    0.14 at t = 20, 0.60 at 212, 13.0 at 980 on SD's schedule) for CPU timesteps t [B], as [B, 1, 1, 1] in
    `like`'s dtype on its device (a non-blocking copy: no host sync in the loop)."""
    return schedule.snr_ratio(t).to(like.dtype).view(-1, 1, 1, 1).to(like.device, non_blocking=True)


class Stopwatch:
    """Accumulates wall time per named section into a dict (a no-op when the dict is None)."""

    def __init__(self, totals: dict[str, float] | None, device: torch.device):
        self.totals, self.cuda = totals, torch.device(device).type == "cuda"
        self.t0 = 0.0

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def start(self) -> None:
        if self.totals is not None:
            self.t0 = self._now()

    def lap(self, name: str) -> None:
        if self.totals is not None:
            now = self._now()
            self.totals[name] = self.totals.get(name, 0.0) + now - self.t0
            self.t0 = now
