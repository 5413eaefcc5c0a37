"""A seed's state during a 3D run and its checkpoint: the scene, one Adam per parameter, the generators, the
densification state and the step. A checkpoint holds all of it, so a run killed and resumed ends bit for bit where
an uninterrupted run ends (on the CPU); it carries the fingerprint of the run's resolved settings, and a checkpoint
of other settings is refused with what differs."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fsd2d.errors import InputError
from fsd2d.io import atomic_path, differences
from fsd2d.sampling import ADAM_EPS
from fsd2d.seeds import seed_for
from fsd2d.vsd import Critic
from fsd3d.densify import state_to
from fsd3d.gaussians import GaussianScene
from fsd3d.settings import ResolvedTrain3D

__all__ = ["SeedState", "initial_state", "load_checkpoint", "save_checkpoint", "seed_for"]


def build_optimizers(scene: GaussianScene, config: ResolvedTrain3D) -> dict[str, torch.optim.Adam]:
    """One Adam per scene parameter (gsplat's strategies replace parameters one by one) with the resolved config's
    learning rates and betas (the profile's: fsd3d.backbones), eps 1e-15; fused into one kernel per parameter on CUDA."""
    fused = {"fused": True} if scene.means.is_cuda else {}
    return {name: torch.optim.Adam([p], lr=getattr(config.lr, name), betas=config.adam_betas, eps=ADAM_EPS, **fused)
            for name, p in scene.named_parameters()}




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
    critic: Critic | None = None  # VSD / ESD: the seed's LoRA critic (fsd2d.vsd), made by the training loop
    critic_state: dict | None = None  # a checkpoint's critic (Critic.state_dict), loaded into it when it is made
    # VSD / ESD with --particles P: the seed's particles 1..P-1, each a scene with its own Adams, generators and
    # densification (their `particles` empty, their critic None); this state is particle 0 and holds the critic
    particles: list["SeedState"] = field(default_factory=list)

    @property
    def scenes(self) -> list["SeedState"]:
        """This seed's particles, particle 0 (this state) first: what the loop renders and steps."""
        return [self, *self.particles]




def check_resolved(config) -> None:
    """A programming error, not a user's: code that builds scenes or Adams from a config the prior has not filled."""
    if not isinstance(config, ResolvedTrain3D):
        raise TypeError(f"a {type(config).__name__} given where the resolved settings are needed: "
                        "fsd3d.settings.resolve(config, scene_prior).train")


def initial_state(config: ResolvedTrain3D, seed: int, init: GaussianScene | None = None,
                  device: torch.device | str = "cpu") -> SeedState:
    """Step 0 of a seed: a random ball of Gaussians (or `init`), fresh Adams, seeded generators; with VSD / ESD's
    --particles P, its particles 1..P-1 beside it (`SeedState.particles`), each from streams of its own.

    With `config.shared_cameras` every seed draws the same camera sequence (one run-wide stream), so a
    prior that renders references per camera renders them once for all seeds; None counts as per seed.
    `config` must be resolved (`resolve`): the initial Gaussians and the Adams are the profile's."""
    check_resolved(config)
    particles = config.family.particles if config.method.rule.has_critic else 1
    state = particle_state(config, seed, 0, init, device)
    state.particles = [particle_state(config, seed, k, None if init is None else copy.deepcopy(init), device)
                       for k in range(1, particles)]
    return state


def particle_state(config: ResolvedTrain3D, seed: int, particle: int, init: GaussianScene | None,
                   device: torch.device | str) -> SeedState:
    """Particle `particle` of seed `seed` at step 0: particle 0 draws from the seed's own streams (so it is the
    one-particle run's scene), particle k > 0 from streams named after it."""
    def stream(purpose: str) -> torch.Generator:
        return torch.Generator().manual_seed(seed_for(seed, purpose if particle == 0 else f"{purpose}/{particle}"))

    scene = init if init is not None else GaussianScene.init_ball(
        config.num_gaussians, config.init_radius, stream("scene"), sh_degree=config.sh_degree, scale=config.init_scale,
        opacity=config.init_opacity)
    scene = scene.to(device)
    cameras = torch.Generator().manual_seed(seed_for(0, "shared-cameras")) if config.shared_cameras else \
        stream("cameras")
    return SeedState(seed, 0, scene, build_optimizers(scene, config), cameras, stream("fresh-noise"),
                     stream("densify"))


def save_checkpoint(path: Path, state: SeedState, config: ResolvedTrain3D, identity: dict | None = None) -> None:
    """Atomic write: a killed run never leaves a half-written checkpoint. One file per seed: its scene, Adams,
    generators and densification, its critic, and the same for each of its particles."""
    payload = {
        "fingerprint": config.fingerprint(identity),
        "settings": json.dumps(config.settings(identity)),  # to name what differs when a resume is refused
        "seed": state.seed,
        "step": state.step,
        **scene_payload(state),
        "critic": None if state.critic is None else state.critic.state_dict(),  # weights, AdamW, generator
        "particles": [scene_payload(p) for p in state.particles],
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def scene_payload(state: SeedState) -> dict:
    """What a checkpoint holds of one scene (a seed's, or one of its particles'): the scene, its Adams, its
    generators and its densification state, on the CPU."""
    return {
        "scene": {k: v.detach().cpu() for k, v in state.scene.state_dict().items()},
        "sh_degree": state.scene.sh_degree,
        "optimizers": {k: opt.state_dict() for k, opt in state.optimizers.items()},
        "camera_gen": state.camera_gen.get_state(),
        "noise_gen": state.noise_gen.get_state(),
        "densify_gen": state.densify_gen.get_state(),
        "densify_state": None if state.densify_state is None else state_to(state.densify_state, "cpu"),
    }


def load_checkpoint(path: Path, config: ResolvedTrain3D, device: torch.device, identity: dict | None = None) -> SeedState:
    """Rebuild a SeedState (any number of Gaussians) with its particles; a broken or foreign checkpoint is an
    InputError (one line). `config`: the resolved one (`resolve`), whose fingerprint with `identity` the checkpoint
    must carry."""
    check_resolved(config)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        scenes = [scene_from(p) for p in (payload, *payload.get("particles", []))]
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
    seed, step = int(payload["seed"]), int(payload["step"])
    states = [scene_state(p, scene, seed, step, config, device)
              for p, scene in zip((payload, *payload.get("particles", [])), scenes)]
    states[0].critic_state, states[0].particles = payload.get("critic"), states[1:]
    return states[0]


def scene_from(payload: dict) -> GaussianScene:
    s = payload["scene"]
    return GaussianScene.from_tensors(s["means"], s["log_scales"], s["quats"], s["opacity_logits"], s["sh0"],
                                      s.get("sh_rest"))


def scene_state(payload: dict, scene: GaussianScene, seed: int, step: int, config: ResolvedTrain3D,
                device: torch.device) -> SeedState:
    """One scene's SeedState from its part of a checkpoint (`scene_payload`)."""
    scene = scene.to(device)
    optimizers = build_optimizers(scene, config)
    for name, opt in optimizers.items():
        opt.load_state_dict(payload["optimizers"][name])
    gens = [torch.Generator() for _ in range(3)]
    for g, key in zip(gens, ("camera_gen", "noise_gen", "densify_gen")):
        g.set_state(payload[key])
    densify_state = payload["densify_state"]
    return SeedState(seed, step, scene, optimizers, *gens,
                     None if densify_state is None else state_to(densify_state, device))
