"""The 3D optimisation loop: FSD / SDS on a Gaussian scene (paper Section 4, Eq. 14-16).

Per step, for C cameras c drawn from the camera ranges:
  1. render the scene: rgb [C, 3, R, R] in [0, 1], alpha [C, 1, R, R];
  2. z = prior.encode(rgb) (pixels in [-1, 1], or the VAE latent with gradients through the encoder);
  3. t = t(tau) annealed (or uniform); noise = eps(c) from the noise function (world map / constant / random);
  4. x_t = alpha_t z + sigma_t noise;  eps_hat = predict_eps(view prior, x_t, t, view guidance);
  5. grad_z = eps_hat - noise (Eq. 15) pushed through the encoder and renderer; Adam on the scene.
Steps 3-5 use the 2D functions (fsd2d.updates, fsd2d.guidance, fsd2d.schedule): nothing is re-implemented.

Every seed is its own scene, optimiser and checkpoint. A checkpoint holds the scene, Adam's state,
the step and every generator's state, so a run killed and resumed ends bit for bit where an
uninterrupted run ends (on the CPU).
"""
from __future__ import annotations

import enum
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from fsd2d import updates
from fsd2d.errors import InputError
from fsd2d.guidance import predict_eps
from fsd2d.io import atomic_path, jsonable
from fsd2d.sampling import ADAM_BETAS, ADAM_EPS, TimestepSampling
from fsd2d.schedule import Anneal, timesteps, uniform_timesteps
from fsd3d.cameras import CameraRanges, sample_cameras
from fsd3d.gaussians import GaussianScene
from fsd3d.noise import ConstantNoise, NoiseFunction, RandomNoise, WorldMapNoise
from fsd3d.priors3d import ScenePrior
from fsd3d.render import render_scene


class NoiseKind(str, enum.Enum):
    """--method: FSD and SDS by name, or a noise function by name."""

    FSD = "fsd"  # world-map noise (Eq. 16)
    SDS = "sds"  # fresh noise every step
    WORLDMAP = "worldmap"
    CONSTANT = "constant"  # one noise for all views (the vanilla design, Fig. 6)
    RANDOM = "random"

    def noise_function(self, shape: tuple[int, int, int], beta: float, seed: int, theta: float,
                       alpha0: float) -> NoiseFunction:
        d, h, w = shape
        if self in (NoiseKind.FSD, NoiseKind.WORLDMAP):
            return WorldMapNoise(d, h, w, beta=beta, seed=seed, theta_deg=theta, alpha0=alpha0)
        if self is NoiseKind.CONSTANT:
            return ConstantNoise(d, h, w, beta=beta, seed=seed)
        return RandomNoise(d, h, w)


@dataclass(frozen=True)
class LearningRates:
    """Adam learning rates per Gaussian parameter group (betas and eps as the authors' 2D setting)."""

    means: float = 2e-3
    log_scales: float = 1e-2
    quats: float = 5e-3
    opacity_logits: float = 5e-2
    sh0: float = 2e-2
    sh_rest: float = 2e-3


@dataclass(frozen=True)
class Train3DConfig:
    steps: int = 150
    method: NoiseKind = NoiseKind.FSD
    beta: float = 1.0  # noise blend of constant / world-map noise (1 = deterministic, 0 = SDS)
    theta: float = 180.0  # world-map size parameter Theta in degrees (H = h * 180/Theta, W = w * 360/Theta)
    alpha0: float = 0.5  # foreground threshold on pooled opacity
    cfg: float | None = None  # None -> the prior's default
    t_min: int = 20
    t_max: int = 980
    anneal: Anneal = Anneal.LINEAR
    sampling: TimestepSampling = TimestepSampling.ANNEALED  # uniform: t ~ U[t_min, t_max] every step
    cameras_per_step: int = 2
    cameras: CameraRanges = field(default_factory=CameraRanges)
    num_gaussians: int = 1000
    init_radius: float = 0.4
    init_opacity: float = 0.1
    sh_degree: int = 0
    lr: LearningRates = field(default_factory=LearningRates)
    checkpoint_every: int = 50

    def validate(self) -> None:
        timesteps(self.steps, self.t_min, self.t_max)
        updates.check_beta(self.beta)
        if not self.theta > 0:
            raise InputError(f"theta must be > 0 degrees (world-map size), got {self.theta}")
        if not 0.0 <= self.alpha0 <= 1.0:
            raise InputError(f"alpha0 must be in [0, 1], got {self.alpha0}")
        for name in ("cameras_per_step", "num_gaussians", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise InputError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not (self.init_radius > 0 and 0 < self.init_opacity < 1):
            raise InputError("init radius must be > 0 and init opacity in (0, 1)")
        if self.sh_degree not in (0, 1):
            raise InputError(f"sh degree must be 0 or 1, got {self.sh_degree}")
        self.cameras.validate()

    def fingerprint(self, identity: dict | None = None) -> str:
        """A short hash of everything that shapes the optimisation (checkpoints must match it): these
        settings but checkpoint_every, plus `identity` (prompt, model, resolution, ... of the run)."""
        settings = {k: v for k, v in jsonable(self).items() if k != "checkpoint_every"}
        blob = json.dumps({"train": settings, "run": jsonable(identity or {})}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def seed_for(seed: int, purpose: str) -> int:
    """An independent 63-bit generator seed per (seed, purpose): scene init, cameras, noise map, fresh noise.

    Plain seed + k offsets would make seed s's camera stream seed s+1's scene stream."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{purpose}".encode()).digest()[:8], "little") >> 1


@dataclass
class StepLog:
    step: int
    t: int
    loss: float  # mean over cameras of ||z - x_gt||^2 / numel (Eq. 8 without its weight)


def build_optimizer(scene: GaussianScene, lr: LearningRates) -> torch.optim.Adam:
    groups = [{"params": [p], "lr": getattr(lr, name), "name": name} for name, p in scene.named_parameters()]
    return torch.optim.Adam(groups, betas=ADAM_BETAS, eps=ADAM_EPS)


@dataclass
class SeedState:
    """Everything that changes during a seed's run (what a checkpoint holds)."""

    step: int
    scene: GaussianScene
    optimizer: torch.optim.Adam
    camera_gen: torch.Generator  # camera sampling
    noise_gen: torch.Generator  # fresh noise and uniform timesteps


def initial_state(config: Train3DConfig, seed: int, init: GaussianScene | None = None,
                  device: torch.device | str = "cpu") -> SeedState:
    """Step 0 of a seed: a random ball of Gaussians (or `init`), a fresh Adam, seeded generators."""
    scene_gen = torch.Generator().manual_seed(seed_for(seed, "scene"))
    scene = init if init is not None else GaussianScene.init_ball(
        config.num_gaussians, config.init_radius, scene_gen, sh_degree=config.sh_degree, opacity=config.init_opacity)
    scene = scene.to(device)
    return SeedState(0, scene, build_optimizer(scene, config.lr),
                     torch.Generator().manual_seed(seed_for(seed, "cameras")),
                     torch.Generator().manual_seed(seed_for(seed, "fresh-noise")))


def save_checkpoint(path: Path, state: SeedState, config: Train3DConfig, identity: dict | None = None) -> None:
    """Atomic write: a killed run never leaves a half-written checkpoint."""
    payload = {
        "fingerprint": config.fingerprint(identity),
        "step": state.step,
        "scene": {k: v.detach().cpu() for k, v in state.scene.state_dict().items()},
        "sh_degree": state.scene.sh_degree,
        "optimizer": state.optimizer.state_dict(),
        "camera_gen": state.camera_gen.get_state(),
        "noise_gen": state.noise_gen.get_state(),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, config: Train3DConfig, device: torch.device, identity: dict | None = None) -> SeedState:
    """Rebuild a SeedState; a broken or foreign checkpoint is an InputError (one line)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        s = payload["scene"]
        scene = GaussianScene.from_tensors(s["means"], s["log_scales"], s["quats"], s["opacity_logits"], s["sh0"],
                                           s.get("sh_rest"))
    except Exception as e:  # noqa: BLE001 - any failure to read is the same problem for the user
        raise InputError(f"checkpoint {path} is unreadable ({type(e).__name__}); delete it to start over") from None
    if payload.get("fingerprint") != config.fingerprint(identity):
        raise InputError(f"checkpoint {path} was made with other settings (prompt, model or flags); "
                         "use the same ones or another --out")
    scene = scene.to(device)
    opt = build_optimizer(scene, config.lr)
    opt.load_state_dict(payload["optimizer"])
    cam, noise = torch.Generator(), torch.Generator()
    cam.set_state(payload["camera_gen"])
    noise.set_state(payload["noise_gen"])
    return SeedState(int(payload["step"]), scene, opt, cam, noise)


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
    """Run the remaining steps of one seed (from state.step to config.steps), checkpointing as it goes.

    `timings`, if given, accumulates seconds per section: render (forward), prior (view conditioning and
    the guided noise prediction) and rest (encode, noise, backward through renderer/encoder, Adam).
    """
    prior = scene_prior.prior
    clock = Stopwatch(timings, prior.device)
    res = scene_prior.resolution
    scale = scene_prior.default_cfg if config.cfg is None else config.cfg
    noise_fn = config.method.noise_function(prior.latent_shape, config.beta, seed_for(seed, "noise-map"), config.theta,
                                            config.alpha0)
    grid = timesteps(config.steps, config.t_min, config.t_max, config.anneal)
    uniform = config.sampling is TimestepSampling.UNIFORM
    bar = tqdm(range(state.step, config.steps), initial=state.step, total=config.steps, desc=f"seed {seed}",
               disable=not progress, leave=False, dynamic_ncols=True)
    for i in bar:
        clock.start()
        cams = sample_cameras(config.cameras_per_step, config.cameras, state.camera_gen, res, res,
                              device=prior.device)
        c = len(cams)
        if uniform:
            t = uniform_timesteps([state.noise_gen] * c, config.t_min, config.t_max)
        else:
            t = grid[i].expand(c)
        out = render_scene(state.scene, cams, scene_prior.background_tensor(prior.device))  # rgb [C, 3, R, R], alpha [C, 1, R, R]
        clock.lap("render")
        z = prior.encode(out.rgb.to(prior.dtype))  # [C, D, h, w]
        el = torch.tensor([cam.elevation for cam in cams])
        az = torch.tensor([cam.azimuth for cam in cams])
        noise = noise_fn(el, az, out.alpha.detach(), state.noise_gen, device=prior.device, dtype=prior.dtype)
        alpha, sigma = prior.schedule.alpha_sigma(t, prior.dtype, prior.device)
        clock.lap("rest")
        view_prior, guidance = scene_prior.view_batch(cams, scale)
        with torch.no_grad():
            x_t = updates.add_noise(z.detach(), noise, alpha, sigma)
            eps_hat = predict_eps(view_prior, x_t, t, guidance)
        clock.lap("prior")
        with torch.no_grad():
            grad = updates.sds_gradient(eps_hat, noise)  # Eq. 15
            x_gt = updates.one_step_estimate(x_t, eps_hat, alpha, sigma)
            loss = (z.detach() - x_gt).pow(2).mean().item()
        state.optimizer.zero_grad(set_to_none=True)
        z.backward(gradient=grad / c)
        state.optimizer.step()
        clock.lap("rest")
        state.step = i + 1
        bar.set_postfix(t=int(t[0]), loss=f"{loss:.4f}", refresh=False)
        if checkpoint is not None and (state.step % config.checkpoint_every == 0 or state.step == config.steps):
            save_checkpoint(checkpoint, state, config, identity)
        if callback is not None:
            callback(state, StepLog(state.step, int(t[0]), loss))
    return state


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
