"""The one place a 3D run's settings are resolved, once per run, in this order:

    1. the profile's defaults (fsd3d.backbones: embedded, sd, mvdream, sd3, sdxl, flux; `--defaults`, else the model's own, read from
       its folder without loading weights: `model_profile`);
    2. what a model trained here on the references' renders fixes whatever the profile (TRAINED_WORLD);
    3. the scene prior's own choices (cameras per step, shared cameras, densification strategy and threshold, CFG);
    4. the user's values, which win over all of these (a field of Train3DConfig that is not None).

`resolve(config, scene_prior)` returns a `Resolved3D` whose `train` is a `ResolvedTrain3D`: every field set, the
camera ranges given as elevation / radius / fov folded into `cameras`, and the method's timestep sampling written
out. The loop (fsd3d.train), the checkpoints (fsd3d.checkpoint) and the outputs take only that type.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

from fsd2d.family import Rule
from fsd2d.io import jsonable
from fsd2d.models import REFERENCES, REFERENCES_LOCAL
from fsd2d.records import typed
from fsd2d.schedule import Anneal
from fsd3d.backbones import BACKBONE_PROFILES, Background, Defaults3D, Profile, defaults
from fsd3d.cameras import CameraRanges
from fsd3d.config import CAMERA_OVERRIDES, FROM_PRIOR, Gen3DConfig, Train3DConfig
from fsd3d.priors3d import ScenePrior

__all__ = ["Resolved3D", "ResolvedTrain3D", "TRAINED_WORLD", "model_profile", "resolve", "run_defaults"]

# What the world of the models trained on the references' renders (tiny-sd-objects, tiny-mvdream) fixes whatever
# the profile (fsd3d.backbones): they know only their captions (no negative prompt), were trained at gen-3d's
# embedded camera ranges on white, and take CFG 7.5 (standard form), not the real backbones' 50-71: measured on
# tiny-sd-objects, mushroom, seeds 0-3, 150 steps: at CFG 50 every scene is an oversaturated mixture (PSNR
# 15.9-19.3 dB to its nearest reference, none reached), at 7.5 three variants are reached (22.7-25.6 dB), at 20
# (500 steps) none (20.5-21.0 dB, colour noise).
TRAINED_WORLD = {"cfg": 7.5, "negative_prompt": "", "cameras": CameraRanges(), "background": Background.WHITE}


@dataclass(frozen=True)
class ResolvedTrain3D(Train3DConfig):
    """A Train3DConfig with every field set (made by `resolve` only): what the loop runs."""


@dataclass(frozen=True)
class Resolved3D:
    """A run's settings, resolved once: the config as given, and what the run actually uses."""

    config: Gen3DConfig  # as the user gave it (run.json's "config")
    train: ResolvedTrain3D  # every training setting (run.json's "train_resolved")
    profile: Profile  # whose defaults filled the fields left None
    world: dict  # what a trained model's world fixed ({} for other models)
    negative_prompt: str  # the one the prior uses: the config's, else the profile's (with the world's)

    def record(self) -> dict:
        """What run.json adds about the resolution besides train_resolved."""
        return {"profile": self.profile.value, "world": jsonable(self.world), "negative_prompt": self.negative_prompt}


def model_profile(model: str, profile: Profile | None = None) -> tuple[Profile, dict]:
    """(profile, world) of a --model, read from its folder without loading any weights: the embedded priors and
    the models trained on the references' renders (world: TRAINED_WORLD) take EMBEDDED, any other model its
    backbone's (fsd3d.backbones.BACKBONE_PROFILES: MVDREAM, SD3, STABLE_DIFFUSION); `profile` (--defaults) replaces
    the profile, not the world."""
    from fsd2d.priors.diffusers_prior import backbone_of_model
    from fsd2d.priors.trained import read_card, trained_folder

    if model in (REFERENCES, REFERENCES_LOCAL):
        return profile or Profile.EMBEDDED, {}
    folder = trained_folder(model) or Path(model).expanduser()
    card = read_card(folder) if folder.is_dir() else None
    if card is not None:
        return profile or Profile.EMBEDDED, dict(TRAINED_WORLD)
    return profile or BACKBONE_PROFILES[backbone_of_model(model)], {}


def run_defaults(config: Gen3DConfig) -> Defaults3D:
    """Steps 1-2: the defaults of the run's profile with what the model's world fixes (no weights loaded)."""
    return defaults(*model_profile(config.model, config.train.profile))


def resolve(config: Gen3DConfig, scene_prior: ScenePrior) -> Resolved3D:
    """All four steps for a run whose prior is loaded (`scene_prior`, made from `config`)."""
    profile, world = model_profile(config.model, config.train.profile)
    base = defaults(profile, world)
    negative = base.negative_prompt if config.negative_prompt is None else config.negative_prompt
    return Resolved3D(config, resolve_train(config.train, scene_prior, base), profile, world, negative)


def resolve_train(train: Train3DConfig, scene_prior: ScenePrior, base: Defaults3D) -> ResolvedTrain3D:
    """Steps 3-4 on the training settings, given the defaults of steps 1-2 (`run_defaults`)."""
    fill = {k: getattr(base, k) for k in FROM_PRIOR if getattr(train, k) is None}
    if train.cfg is None:
        fill["cfg"] = base.cfg if base.cfg is not None else scene_prior.default_cfg
    if train.anneal is None and train.method.rule is Rule.DSD:  # DSD's own schedule, as compare-2d's dsd
        fill["anneal"] = Anneal.SQRT
    config = replace(train, **fill)
    densify = config.densify.resolved(config.steps, config.num_gaussians, scene_prior.densify_grad_threshold,
                                      scene_prior.default_densify, base.prune_scale3d)
    values = {f.name: getattr(config, f.name) for f in fields(config)} | {
        "cameras": config.camera_ranges(config.cameras), **dict.fromkeys(CAMERA_OVERRIDES),
        "shared_cameras": scene_prior.shares_cameras if config.shared_cameras is None else config.shared_cameras,
        "cameras_per_step": scene_prior.cameras_per_step if config.cameras_per_step is None else config.cameras_per_step,
        "densify": densify, "sampling": config.method.sampling if config.sampling is None else config.sampling}
    # each value of its field's type (beta=1 is 1.0): the checkpoints' fingerprints do not depend on how it was typed
    resolved = typed(ResolvedTrain3D(**values), "settings")
    resolved.validate()
    return resolved
