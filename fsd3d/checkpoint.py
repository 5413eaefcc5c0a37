"""A seed's state during a 3D run and its checkpoint: the scene, one Adam per parameter, the generators, the
densification state and the step. A checkpoint holds all of it, so a run killed and resumed ends bit for bit where
an uninterrupted run ends (on the CPU); it carries the fingerprint of the run's resolved settings, and a checkpoint
of other settings is refused with what differs."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from fsd2d.errors import InputError
from fsd2d.io import atomic_path, differences
from fsd2d.sampling import ADAM_EPS
from fsd2d.vsd import Critic
from fsd3d.densify import state_to
from fsd3d.gaussians import GaussianScene
from fsd3d.settings import ResolvedTrain3D

__all__ = ["SeedState", "initial_state", "load_checkpoint", "save_checkpoint", "seed_for"]


def seed_for(seed: int, purpose: str) -> int:
    """An independent 63-bit generator seed per (seed, purpose): scene init, cameras, noise map, fresh noise.

    Plain seed + k offsets would make seed s's camera stream seed s+1's scene stream."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{purpose}".encode()).digest()[:8], "little") >> 1




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




def check_resolved(config) -> None:
    """A programming error, not a user's: code that builds scenes or Adams from a config the prior has not filled."""
    if not isinstance(config, ResolvedTrain3D):
        raise TypeError(f"a {type(config).__name__} given where the resolved settings are needed: "
                        "fsd3d.settings.resolve(config, scene_prior).train")


def initial_state(config: ResolvedTrain3D, seed: int, init: GaussianScene | None = None,
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


def save_checkpoint(path: Path, state: SeedState, config: ResolvedTrain3D, identity: dict | None = None) -> None:
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
        "critic": None if state.critic is None else state.critic.state_dict(),  # weights, AdamW, generator
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, config: ResolvedTrain3D, device: torch.device, identity: dict | None = None) -> SeedState:
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
                     None if densify_state is None else state_to(densify_state, device),
                     critic_state=payload.get("critic"))
