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
when the prior's posterior product rounds alike at both batch sizes (tests/test_densify.py evaluates it sample by
sample), else to that rounding (~1e-15 relative on eps); the renderer's backward gives the same bits on every run
at any thread count (fsd3d/render.py, "Gradients"). A checkpoint holds the scene (any number of Gaussians), Adam's state, the
strategy's state, the step and every generator's state, so a run killed and resumed ends bit for bit where
an uninterrupted run ends (on the CPU).
"""
from __future__ import annotations

import enum
import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from fsd2d import updates
from fsd2d.errors import InputError, check_finite, check_int_range
from fsd2d.family import FamilyOptions, Rule, gradient
from fsd2d.io import atomic_path, differences, jsonable
from fsd2d.sampling import ADAM_EPS, Method, TimestepSampling, check_guidance_scale, check_steps
from fsd2d.schedule import Anneal, timesteps, uniform_timesteps
from fsd3d.backbones import Background, Defaults3D, LearningRates, Profile, Weighting
from fsd3d.cameras import CameraRanges, sample_cameras, stack_cameras
from fsd3d.densify import MAX_GAUSSIANS, Densifier, Densify, DensifyConfig, scene_scale, state_to
from fsd3d.gaussians import GaussianScene
from fsd3d.noise import ConstantNoise, NoiseFunction, RandomNoise, SurfaceNoise, WorldMapNoise, surface_points
from fsd3d.priors3d import ScenePrior
from fsd3d.render import render_scene

MAX_CAMERAS_PER_STEP = 256  # views per seed and step (one prior batch); the paper renders 1-4
MAX_CAMERA_RADIUS = 1000.0  # scenes start in a ball of radius 0.4; cameras sit at 1.5-2


class NoiseKind(str, enum.Enum):
    """--method: FSD and SDS by name, a noise function by name, or a rule of the family (fsd2d.family).

    A name that compare-2d also has means the same algorithm here (noise, gradient rule and timesteps: fsd2d.sampling.
    Method.sampling); the noise functions are FSD with another noise, on FSD's annealed timesteps."""

    FSD = "fsd"  # world-map noise (Eq. 16), annealed t
    SDS = "sds"  # fresh noise every step, t uniform (DreamFusion; as compare-2d's sds)
    SDS_ANNEALED = "sds-annealed"  # fresh noise every step, annealed t: differs from fsd in the noise only
    WORLDMAP = "worldmap"  # = fsd
    CONSTANT = "constant"  # one noise for all views (the vanilla design, Fig. 6)
    SURFACE = "surface"  # noise fixed on the object's surface (the authors' successor, fsd3d.noise.SurfaceNoise)
    RANDOM = "random"  # fresh noise as a noise function (Fig. 6's third design): = sds-annealed
    ISM = "ism"  # the family: fresh noise, each with its own gradient rule and timesteps (same functions as 2D)
    SDI = "sdi"
    CSD = "csd"
    NFSD = "nfsd"

    @property
    def sampling(self) -> TimestepSampling:
        """The timesteps of this method: the 2D method's of the same name (fsd2d.sampling.Method.sampling), else
        annealed (the noise functions)."""
        shared = {m.value: m for m in Method}
        return shared[self.value].sampling if self.value in shared else TimestepSampling.ANNEALED

    @property
    def rule(self) -> Rule:
        """The gradient rule of this method: the family's own, else eps_hat - noise (Eq. 15)."""
        return Rule(self.value) if self.value in {r.value for r in Rule} - {Rule.SDS.value} else Rule.SDS

    def noise_function(self, shape: tuple[int, int, int], beta: float, seed: int, theta: float,
                       alpha0: float) -> NoiseFunction:
        d, h, w = shape
        if self in (NoiseKind.FSD, NoiseKind.WORLDMAP):
            return WorldMapNoise(d, h, w, beta=beta, seed=seed, theta_deg=theta, alpha0=alpha0)
        if self is NoiseKind.CONSTANT:
            return ConstantNoise(d, h, w, beta=beta, seed=seed)
        if self is NoiseKind.SURFACE:
            return SurfaceNoise(d, h, w, beta=beta, seed=seed, alpha0=alpha0)
        return RandomNoise(d, h, w)


# the fields a backbone decides when the user leaves them None (fsd3d.backbones.Defaults3D, `resolve`)
FROM_PRIOR = ("steps", "num_gaussians", "init_radius", "init_scale", "init_opacity", "lr", "means_lr_final",
              "adam_betas", "weighting", "anneal", "cameras", "background", "clamp_renders", "opacity_reg", "scale_reg")


@dataclass(frozen=True)
class Train3DConfig:
    """The 3D run's settings. None: the prior's choice (`resolve`): its profile's value (fsd3d.backbones, each with
    its source), or for cameras_per_step / shared_cameras / densification the scene prior's own."""

    steps: int | None = None
    method: NoiseKind = NoiseKind.FSD
    beta: float = 1.0  # noise blend of constant / world-map noise (1 = deterministic, 0 = SDS)
    theta: float = 180.0  # world-map size parameter Theta in degrees (H = h * 180/Theta, W = w * 360/Theta)
    alpha0: float = 0.5  # foreground threshold on pooled opacity
    cfg: float | None = None  # None -> the profile's, else the prior's default
    t_min: int = 20
    t_max: int = 980
    anneal: Anneal | None = None
    sampling: TimestepSampling | None = None  # None: the method's own (NoiseKind.sampling); uniform: t ~ U every step
    cameras_per_step: int | None = None  # cameras sampled per seed and step; None: the prior decides (`resolve`)
    cameras: CameraRanges | None = None
    num_gaussians: int | None = None
    init_radius: float | None = None
    init_scale: float | None = None  # initial std-dev / init_radius
    init_opacity: float | None = None
    sh_degree: int = 0
    lr: LearningRates | None = None
    means_lr_final: float | None = None  # the means' LR decays exponentially to this fraction of it (1: constant)
    adam_betas: tuple[float, float] | None = None
    weighting: Weighting | None = None
    background: Background | None = None
    clamp_renders: bool | None = None  # renders clamped to [0, 1] before the prior's encoder (a VAE)
    opacity_reg: float | None = None  # weights of mean opacity / mean scale added to each seed's loss
    scale_reg: float | None = None
    profile: Profile | None = None  # whose defaults fill the None fields above; None: the prior's (`--defaults`)
    checkpoint_every: int = 50
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    shared_cameras: bool | None = None  # one camera sequence for all seeds; None: the prior decides (`resolve`)
    family: FamilyOptions = FamilyOptions()  # ISM / SDI / NFSD settings (method ism, sdi, csd, nfsd)

    def resolved(self, defaults: Defaults3D) -> "Train3DConfig":
        """This config with every FROM_PRIOR field left None taken from `defaults` (and cfg, if the profile has one)."""
        fill = {k: getattr(defaults, k) for k in FROM_PRIOR if getattr(self, k) is None}
        if self.cfg is None and defaults.cfg is not None:
            fill["cfg"] = defaults.cfg
        return replace(self, **fill)

    def validate(self) -> None:
        """Everything checkable without a prior: ranges, caps, finite floats (the noise function's own
        checks run in `check_noise_function`, also before anything is written)."""
        if self.steps is not None:
            check_steps(self.steps)
            timesteps(self.steps, self.t_min, self.t_max)
        for name in ("beta", "theta", "alpha0", "init_radius", "init_scale", "init_opacity", "means_lr_final",
                     "opacity_reg", "scale_reg"):
            check_finite(name.replace("_", "-"), getattr(self, name))
        for name, value in jsonable(self.lr or LearningRates()).items():
            check_finite(f"learning rate of {name}", value)
        if self.means_lr_final is not None and not 0.0 < self.means_lr_final <= 1.0:
            raise InputError(f"means-lr-final must be in (0, 1] (a fraction of the initial LR), got {self.means_lr_final}")
        for name in ("opacity_reg", "scale_reg"):
            if getattr(self, name) is not None and not 0.0 <= getattr(self, name) <= 100.0:
                raise InputError(f"{name.replace('_', '-')} must be in [0, 100], got {getattr(self, name)}")
        if self.adam_betas is not None and not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise InputError(f"Adam betas must lie in [0, 1), got {self.adam_betas}")
        updates.check_beta(self.beta)
        own = self.method.sampling
        if self.sampling not in (None, own) and self.method.value in {m.value for m in Method}:
            other = {(NoiseKind.SDS, TimestepSampling.ANNEALED): " (that is --method sds-annealed)",
                     (NoiseKind.SDS_ANNEALED, TimestepSampling.UNIFORM): " (that is --method sds)"}
            raise InputError(f"--method {self.method.value} draws its timesteps {own.value}, as in compare-2d; "
                             f"--t-sampling {self.sampling.value} would make it another method"
                             f"{other.get((self.method, self.sampling), '')}")
        if not self.theta > 0:
            raise InputError(f"theta must be > 0 degrees (world-map size), got {self.theta}")
        if not 0.0 <= self.alpha0 <= 1.0:
            raise InputError(f"alpha0 must be in [0, 1], got {self.alpha0}")
        check_guidance_scale(self.cfg)
        for name in ("cameras_per_step", "num_gaussians", "checkpoint_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InputError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.cameras_per_step is not None:
            check_int_range("cameras-per-step", self.cameras_per_step, 1, MAX_CAMERAS_PER_STEP)
        if self.num_gaussians is not None:
            check_int_range("num-gaussians", self.num_gaussians, 1, MAX_GAUSSIANS)
        if not ((self.init_radius is None or self.init_radius > 0) and (self.init_scale is None or self.init_scale > 0)
                and (self.init_opacity is None or 0 < self.init_opacity < 1)):
            raise InputError("init radius and scale must be > 0 and init opacity in (0, 1)")
        if self.sh_degree not in (0, 1):
            raise InputError(f"sh degree must be 0 or 1, got {self.sh_degree}")
        if self.cameras is not None:
            self.cameras.validate()
            if self.cameras.radius[1] > MAX_CAMERA_RADIUS:
                raise InputError(f"camera radius must be <= {MAX_CAMERA_RADIUS:g}, got {self.cameras.radius}")
        self.densify.validate()
        self.family.validate()

    def settings(self, identity: dict | None = None) -> dict:
        """Everything that shapes the optimisation, as plain JSON values: these settings but checkpoint_every (and
        the family's options for FSD / SDS), plus `identity` (prompt, model, resolution, ... of the run)."""
        train = {k: v for k, v in jsonable(self).items() if k != "checkpoint_every"
                 and not (k == "family" and self.method.rule is Rule.SDS)}
        return {"train": train, "run": jsonable(identity or {})}

    def fingerprint(self, identity: dict | None = None) -> str:
        """A short hash of `settings(identity)`: a checkpoint must match it to be continued."""
        blob = json.dumps(self.settings(identity), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def check_noise_function(config: Train3DConfig, latent_shape: tuple[int, int, int]) -> None:
    """Build the run's noise function once, so that its own checks (e.g. the world map's size for --theta)
    fail before anything is written; train_seeds builds the real ones per seed."""
    config.method.noise_function(latent_shape, config.beta, 0, config.theta, config.alpha0)


def seed_for(seed: int, purpose: str) -> int:
    """An independent 63-bit generator seed per (seed, purpose): scene init, cameras, noise map, fresh noise.

    Plain seed + k offsets would make seed s's camera stream seed s+1's scene stream."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{purpose}".encode()).digest()[:8], "little") >> 1


@dataclass
class StepLog:
    step: int
    t: int
    loss: torch.Tensor  # 0-dim, on the prior's device: mean over cameras of ||z - x_gt||^2 / numel (Eq. 8 without
    #                     its weight). Reading it (.item()) waits for the GPU; the loop itself never does.


def build_optimizers(scene: GaussianScene, config: Train3DConfig) -> dict[str, torch.optim.Adam]:
    """One Adam per scene parameter (gsplat's strategies replace parameters one by one) with the resolved config's
    learning rates and betas (the profile's: fsd3d.backbones), eps 1e-15; fused into one kernel per parameter on CUDA."""
    fused = {"fused": True} if scene.means.is_cuda else {}
    return {name: torch.optim.Adam([p], lr=getattr(config.lr, name), betas=config.adam_betas, eps=ADAM_EPS, **fused)
            for name, p in scene.named_parameters()}


def means_lr(config: Train3DConfig, step: int) -> float:
    """The means' learning rate at `step` (0-based) of the resolved config: lr_means f^(step / (steps - 1)), an
    exponential decay to the fraction f = means_lr_final at the last step (gsplat's trainer: ExponentialLR with
    gamma = 0.01^(1 / max_steps); DreamGaussian / 3DGS: log-linear from position_lr_init to position_lr_final)."""
    if config.means_lr_final == 1.0 or config.steps < 2:
        return config.lr.means
    return config.lr.means * config.means_lr_final ** (step / (config.steps - 1))


@dataclass
class SeedState:
    """Everything that changes during a seed's run (what a checkpoint holds)."""

    seed: int
    step: int
    scene: GaussianScene
    optimizers: dict[str, torch.optim.Adam]  # scene parameter name -> its Adam
    camera_gen: torch.Generator  # camera sampling (one stream for all seeds when cameras are shared)
    noise_gen: torch.Generator  # fresh noise and uniform timesteps
    densify_gen: torch.Generator  # the densification strategy's random draws (splits, MCMC)
    densify_state: dict | None = None  # the strategy's running state (None: not started yet)


def resolve(config: Train3DConfig, scene_prior: ScenePrior) -> Train3DConfig:
    """The prior's choices for what the user left open: the profile's defaults (fsd3d.backbones: steps, initial
    Gaussians, learning rates, Adam, weighting, timesteps, cameras, background, regularisers, CFG), cameras per step,
    shared cameras, densification; and the method's timestep sampling. Every field of the result is set."""
    defaults = scene_prior.defaults_for(config.profile)
    config = config.resolved(defaults)
    shared = scene_prior.shares_cameras if config.shared_cameras is None else config.shared_cameras
    per_step = scene_prior.cameras_per_step if config.cameras_per_step is None else config.cameras_per_step
    densify = config.densify.resolved(config.steps, config.num_gaussians, scene_prior.densify_grad_threshold,
                                      scene_prior.default_densify, defaults.prune_scale3d)
    if config.cfg is None:
        config = replace(config, cfg=scene_prior.default_cfg)
    sampling = config.method.sampling if config.sampling is None else config.sampling
    out = replace(config, cameras_per_step=per_step, shared_cameras=shared, densify=densify, sampling=sampling)
    out.validate()
    return out


def check_resolved(config: Train3DConfig) -> None:
    """A programming error, not a user's: code that builds scenes or Adams from a config the prior has not filled."""
    missing = [k for k in FROM_PRIOR if getattr(config, k) is None]
    if missing:
        raise ValueError(f"config not resolved (fsd3d.train.resolve): {', '.join(missing)} left to the prior")


def initial_state(config: Train3DConfig, seed: int, init: GaussianScene | None = None,
                  device: torch.device | str = "cpu") -> SeedState:
    """Step 0 of a seed: a random ball of Gaussians (or `init`), fresh Adams, seeded generators.

    With `config.shared_cameras` every seed draws the same camera sequence (one run-wide stream), so a
    prior that renders references per camera renders them once for all seeds; None counts as per seed.
    `config` must be resolved (`resolve`): the initial Gaussians and the Adams are the profile's."""
    check_resolved(config)
    scene_gen = torch.Generator().manual_seed(seed_for(seed, "scene"))
    scene = init if init is not None else GaussianScene.init_ball(
        config.num_gaussians, config.init_radius, scene_gen, sh_degree=config.sh_degree, scale=config.init_scale,
        opacity=config.init_opacity)
    scene = scene.to(device)
    cameras = seed_for(0, "shared-cameras") if config.shared_cameras else seed_for(seed, "cameras")
    return SeedState(seed, 0, scene, build_optimizers(scene, config), torch.Generator().manual_seed(cameras),
                     torch.Generator().manual_seed(seed_for(seed, "fresh-noise")),
                     torch.Generator().manual_seed(seed_for(seed, "densify")))


def save_checkpoint(path: Path, state: SeedState, config: Train3DConfig, identity: dict | None = None) -> None:
    """Atomic write: a killed run never leaves a half-written checkpoint."""
    payload = {
        "fingerprint": config.fingerprint(identity),
        "settings": json.dumps(config.settings(identity)),  # to name what differs when a resume is refused
        "seed": state.seed,
        "step": state.step,
        "scene": {k: v.detach().cpu() for k, v in state.scene.state_dict().items()},
        "sh_degree": state.scene.sh_degree,
        "optimizers": {k: opt.state_dict() for k, opt in state.optimizers.items()},
        "camera_gen": state.camera_gen.get_state(),
        "noise_gen": state.noise_gen.get_state(),
        "densify_gen": state.densify_gen.get_state(),
        "densify_state": None if state.densify_state is None else state_to(state.densify_state, "cpu"),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, config: Train3DConfig, device: torch.device, identity: dict | None = None) -> SeedState:
    """Rebuild a SeedState (any number of Gaussians); a broken or foreign checkpoint is an InputError (one line).
    `config`: the resolved one (`resolve`), whose fingerprint with `identity` the checkpoint must carry."""
    check_resolved(config)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        s = payload["scene"]
        scene = GaussianScene.from_tensors(s["means"], s["log_scales"], s["quats"], s["opacity_logits"], s["sh0"],
                                           s.get("sh_rest"))
        fingerprint = payload.get("fingerprint")
        saved = json.loads(payload["settings"]) if isinstance(payload.get("settings"), str) else None
    except Exception as e:  # noqa: BLE001 - any failure to read is the same problem for the user
        raise InputError(f"checkpoint {path} is unreadable ({type(e).__name__}); delete it to start over") from None
    if fingerprint != config.fingerprint(identity):
        plain = lambda d: {**d.get("run", {}), **d.get("train", {})}  # noqa: E731 - no key is in both
        differ = differences(plain(saved), plain(config.settings(identity))) if isinstance(saved, dict) else []
        what = "; ".join(differ) if differ else "prompt, model or flags"
        raise InputError(f"checkpoint {path} was made with other settings ({what}); use the same ones or another "
                         "--out")
    scene = scene.to(device)
    optimizers = build_optimizers(scene, config)
    for name, opt in optimizers.items():
        opt.load_state_dict(payload["optimizers"][name])
    gens = [torch.Generator() for _ in range(3)]
    for g, key in zip(gens, ("camera_gen", "noise_gen", "densify_gen")):
        g.set_state(payload[key])
    densify_state = payload["densify_state"]
    return SeedState(int(payload["seed"]), int(payload["step"]), scene, optimizers, *gens,
                     None if densify_state is None else state_to(densify_state, device))


def train_seeds(
    scene_prior: ScenePrior,
    config: Train3DConfig,
    states: list[SeedState],
    checkpoints: dict[int, Path] | None = None,
    identity: dict | None = None,
    progress: bool = False,
    callback: Callable[[SeedState, StepLog], None] | None = None,
    timings: dict[str, float] | None = None,
) -> list[SeedState]:
    """Advance every seed to config.steps together: per step, one encode, ONE guided prior call and one
    backward for all S seeds x C cameras; each seed keeps its own scene, Adams, generators, noise function,
    densification state and checkpoint (`checkpoints[seed]`), so its result does not depend on the others.

    Seeds may start at different steps (a resumed run): a seed joins when the loop reaches its step.
    `timings`, if given, accumulates seconds per section: render (forward), prior (view conditioning and
    the guided noise prediction) and rest (encode, noise, backward through renderer/encoder, Adam, densify).
    Nothing in a step waits for the GPU (no .item(), host copies are non-blocking) except checkpoints,
    densification refinements and, inside gsplat, the sizing of its tile lists.
    """
    if len({s.seed for s in states}) != len(states):
        raise InputError("each seed may appear once in a batch of seeds")
    config = resolve(config, scene_prior)  # idempotent; checkpoints carry the resolved config's fingerprint
    prior = scene_prior.prior
    device = prior.device
    clock = Stopwatch(timings, device)
    res = scene_prior.resolution
    scale = scene_prior.default_cfg if config.cfg is None else config.cfg
    noise_fns = {s.seed: config.method.noise_function(prior.latent_shape, config.beta, seed_for(s.seed, "noise-map"),
                                                       config.theta, config.alpha0) for s in states}
    densifier = None
    if config.densify.strategy is not Densify.NONE:
        fov = 0.5 * (config.cameras.fov[0] + config.cameras.fov[1])  # camera distances (relative radii converted)
        distances = tuple(config.cameras.distance(r, fov) for r in config.cameras.radius)
        densifier = Densifier(config.densify, scene_scale(distances), config.lr.means)
        for s in states:
            if s.densify_state is None:
                s.densify_state = densifier.initial_state()
    grid = timesteps(config.steps, config.t_min, config.t_max, config.anneal)  # CPU long [steps]
    uniform = config.sampling is TimestepSampling.UNIFORM
    # [3], made once: no host copy per step (RANDOM draws white or black per view, `view_backgrounds`)
    background = torch.zeros(3, device=device) if config.background is Background.BLACK else \
        scene_prior.background_tensor(device)
    n_cam = config.cameras_per_step  # cameras sampled per seed and step
    c = n_cam * scene_prior.views_per_camera  # views rendered per seed and step (MVDream: a 4-view set per camera)
    first = min((s.step for s in states), default=config.steps)
    bar = tqdm(range(first, config.steps), initial=first, total=config.steps, disable=not progress, leave=False,
               desc=f"seed{'s' if len(states) > 1 else ''} {','.join(str(s.seed) for s in states)}",
               dynamic_ncols=True)
    for i in bar:
        active = [s for s in states if s.step == i]
        if not active:
            continue
        if scene_prior.compiled:
            torch.compiler.cudagraph_mark_step_begin()
        clock.start()
        cams, angles, ts, outs = [], [], [], []
        for s in active:
            cams_s = scene_prior.expand_cameras(sample_cameras(n_cam, config.cameras, s.camera_gen, res, res,
                                                              device=device))  # [C] views, a camera's consecutive
            angles.append(torch.tensor([(cam.elevation, cam.azimuth) for cam in cams_s]))  # [C, 2] CPU, degrees
            ts.append(uniform_timesteps([s.noise_gen] * n_cam, config.t_min, config.t_max).repeat_interleave(c // n_cam)
                      if uniform else grid[i].expand(c))  # the views of one camera share t
            out = render_scene(s.scene, cams_s, view_backgrounds(config.background, background, len(cams_s),
                                                                 s.noise_gen, device))  # rgb [C, 3, R, R]
            if densifier is not None:
                densifier.pre_backward(out)
            cams += cams_s
            outs.append(out)
        t_cpu = torch.cat(ts)  # [S*C] long
        clock.lap("render")
        rgb = torch.cat([o.rgb for o in outs])  # [S*C, 3, R, R]; colours may exceed 1 (no upper clamp on SH)
        if config.clamp_renders:  # to [0, 1] before a VAE encoder, which was trained on images in range
            rgb = rgb.clamp(0.0, 1.0)
        z = prior.encode(rgb.to(prior.dtype))  # [S*C, D, h, w], one encoder call
        noise = torch.cat([  # [S*C, D, h, w], eps(c) per seed (surface noise also reads the views' surface points)
            noise_fns[s.seed](el_az[:, 0], el_az[:, 1], o.alpha.detach(), s.noise_gen, device=device, dtype=prior.dtype,
                              points=view_points(noise_fns[s.seed], o, cams[k * c:(k + 1) * c]))
            for k, (s, o, el_az) in enumerate(zip(active, outs, angles))])
        clock.lap("rest")
        view_prior, guidance = scene_prior.view_batch(cams, scale)
        # the family's rules (fsd2d.family, the 2D functions): SDS/FSD is eps_hat - noise (Eq. 15), one guided call
        # for every seed and camera; ISM/NFSD also use the empty prompt's conditioning at these cameras
        est = gradient(config.method.rule, view_prior, guidance, guidance.null_or_uncond, z.detach(), t_cpu, noise,
                       config.family)
        clock.lap("prior")
        grad = est.grad if config.weighting is Weighting.ONE else \
            est.grad * step_weights(prior.schedule, t_cpu, est.grad)  # w(t) = sigma_t / alpha_t
        if callback is not None:  # the logged loss is for the callback only: no extra work without one
            with torch.no_grad():
                alpha, sigma = prior.schedule.alpha_sigma(t_cpu, prior.dtype, device)
                x_gt = updates.one_step_estimate(est.x_t, est.eps_hat, alpha, sigma)
                losses = (z.detach() - x_gt).pow(2).flatten(1).mean(1).view(len(active), c).mean(1)  # [S]
        for s in active:
            for opt in s.optimizers.values():
                opt.zero_grad(set_to_none=True)
        # one backward: each seed's scene gets the mean over its own C views, plus gsplat's MCMC regularisers
        # (mean opacity and mean scale of each seed's own Gaussians) where the profile has them
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
            if densifier is not None:
                densifier.post_backward(s.scene, s.optimizers, s.densify_state, s.step, outs[k], s.densify_gen,
                                        means_lr=lr_means)
        clock.lap("rest")
        bar.set_postfix(t=int(t_cpu[0]), gaussians=len(active[0].scene), refresh=False)
        for k, s in enumerate(active):
            if checkpoints is not None and (s.step % config.checkpoint_every == 0 or s.step == config.steps):
                save_checkpoint(checkpoints[s.seed], s, config, identity)
            if callback is not None:
                callback(s, StepLog(s.step, int(t_cpu[k * c]), losses[k]))
    return states


def train_seed(
    scene_prior: ScenePrior,
    config: Train3DConfig,
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
