"""The settings of a 3D run, as typed configs that validate themselves (no prior, no weights needed):

    Train3DConfig   how each seed's scene is optimised: method, noise, timesteps, guidance, cameras, Gaussians,
                    learning rates, densification. A field left None is the prior's choice: `fsd3d.settings.resolve`
                    fills it (the profile's value, a trained model's world, the prior's own), once per run.
    Gen3DConfig     a whole run: prompt, seeds, model, render size, device, evaluation, outputs; holds a Train3DConfig.

Both are built by `fsd gen-3d` (`Gen3DConfig.from_flags`), by `fsd batch`, or in Python, and come back from a run's
run.json (`Gen3DConfig.from_record`). Every check a flag gets lives here, so a Python caller gets the CLI's one-line
InputError.
"""
from __future__ import annotations

import enum
import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from typing import Any

from fsd2d import updates
from fsd2d.errors import InputError, check_finite, check_int_range
from fsd2d.family import FAMILY_FLAGS, FamilyOptions, Rule
from fsd2d.flags import parse_range, to_enum, to_floats, to_seeds
from fsd2d.io import jsonable
from fsd2d.models import IMAGESET, PATCHES, REFERENCES, REFERENCES_LOCAL
from fsd2d.records import from_jsonable, typed
from fsd2d.sampling import Method, TimestepSampling, check_guidance_scale, check_seeds, check_steps
from fsd2d.schedule import Anneal, timesteps
from fsd2d.study import check_resolution
from fsd3d.backbones import Background, LearningRates, Profile, Weighting
from fsd3d.cameras import CameraRanges
from fsd3d.densify import MAX_GAUSSIANS, Densify, DensifyConfig
from fsd3d.noise import ConstantNoise, NoiseFunction, RandomNoise, SurfaceNoise, WorldMapNoise
from fsd3d.outputs import TurntableFormat

__all__ = ["NoiseKind", "Train3DConfig", "Gen3DConfig"]

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
    VSD = "vsd"  # the rivals (fsd2d.vsd, fsd2d.dsd): VSD / ESD fresh noise, t uniform, a LoRA critic per seed;
    ESD = "esd"
    DSD = "dsd"  # DSD: one fixed noise per seed for every view (its code's), t annealed (sqrt unless --anneal)

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
        if self in (NoiseKind.CONSTANT, NoiseKind.DSD):
            return ConstantNoise(d, h, w, beta=beta, seed=seed)
        if self is NoiseKind.SURFACE:
            return SurfaceNoise(d, h, w, beta=beta, seed=seed, alpha0=alpha0)
        return RandomNoise(d, h, w)


# the fields a backbone decides when the user leaves them None (fsd3d.backbones.Defaults3D, `resolve`)
FROM_PRIOR = ("steps", "num_gaussians", "init_radius", "init_scale", "init_opacity", "lr", "means_lr_final",
              "adam_betas", "weighting", "anneal", "cameras", "background", "clamp_renders", "opacity_reg", "scale_reg")


CAMERA_OVERRIDES = ("elevation", "radius", "fov")  # Train3DConfig fields folded into `cameras` when resolved


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
    cameras: CameraRanges | None = None  # None: the profile's ranges
    # ranges (lo, hi) replacing those of `cameras` (or of the profile's): --elevation, --radius, --fov
    elevation: tuple[float, float] | None = None
    radius: tuple[float, float] | None = None
    fov: tuple[float, float] | None = None
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
        for name in CAMERA_OVERRIDES:
            if getattr(self, name) is not None and len(getattr(self, name)) != 2:
                raise InputError(f"bad --{name} {getattr(self, name)}: give 'lo,hi'")
        ranges = self.camera_ranges(self.cameras or CameraRanges())  # with the ranges given, before the profile's
        ranges.validate()
        if ranges.radius[1] > MAX_CAMERA_RADIUS:
            raise InputError(f"camera radius must be <= {MAX_CAMERA_RADIUS:g}, got {ranges.radius}")
        self.densify.validate()
        self.family.validate()
        if self.family.particles > 1 and not self.method.rule.has_critic:
            raise InputError("--particles is the number of scenes per seed sharing one critic: it needs --method vsd "
                             "or esd")

    def camera_ranges(self, base: CameraRanges) -> CameraRanges:
        """`base` (the given or the profile's ranges) with the ranges given as elevation / radius / fov."""
        given = {k: getattr(self, k) for k in CAMERA_OVERRIDES if getattr(self, k) is not None}
        return replace(base, **given) if given else base

    def settings(self, identity: dict | None = None) -> dict:
        """Everything that shapes the optimisation, as plain JSON values: these settings but checkpoint_every (and
        the family's options for FSD / SDS), plus `identity` (prompt, model, resolution, ... of the run)."""
        train = {k: v for k, v in jsonable(self).items() if k not in ("checkpoint_every", *CAMERA_OVERRIDES)
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




@dataclass(frozen=True)
class Gen3DConfig:
    """A whole gen-3d run: one scene per seed, optimised with `train`, scored and rendered.

    >>> from fsd3d import Gen3DConfig, Train3DConfig, run_3d
    >>> run = run_3d(Gen3DConfig(prompt="mushroom", seeds=(0, 1, 2, 3), train=Train3DConfig(steps=150)))
    """

    prompt: str = "mushroom"
    negative_prompt: str | None = None  # None: the profile's (fsd3d.backbones: '' embedded, the authors' on SD)
    seeds: tuple[int, ...] = tuple(range(8))
    model: str = REFERENCES  # or a Stable Diffusion folder / hub id, or an MVDream folder (fsd2d.models)
    resolution: int | None = None  # render size; None: the profile's (SD3: 512), else the prior's own (embedded 32, SD 512, MVDream 256)
    device: str = "auto"
    dtype: str = "auto"
    train: Train3DConfig = field(default_factory=Train3DConfig)
    eval_views: int = 8
    turntable_frames: int = 36
    seed_batch: int | None = None  # at most this many seeds advance together (one prior call); None: all
    compile: bool = False  # torch.compile (CUDA graphs on CUDA) for Stable Diffusion's UNet and VAE encoder
    init_ply: str | None = None  # start every seed from this scene instead of a random ball
    turntable: TurntableFormat = TurntableFormat.MP4
    mesh: bool = False  # also write seed_S/mesh.glb (fsd3d.mesh) and its mesh_iou / watertight in metrics.json

    def identity(self) -> dict:
        """What, besides the training settings, a checkpoint must match to be continued."""
        return {"prompt": self.prompt, "negative_prompt": self.negative_prompt, "model": self.model,
                "resolution": self.resolution, "dtype": self.dtype, "init_ply": self.init_ply}

    @property
    def embedded(self) -> bool:
        """The model is one of the embedded 3D priors (no weights, exact references)."""
        return self.model in (REFERENCES, REFERENCES_LOCAL)

    def validate(self) -> None:
        self.train.validate()
        check_seeds(self.seeds)
        check_resolution(self.resolution)
        if self.embedded:  # the prompts the prior checks when it loads, checked now
            from fsd3d.reference_prior import check_reference_prompt

            check_reference_prompt(self.prompt, allow_empty=False)
            check_reference_prompt(self.negative_prompt or "")
        elif self.model in (IMAGESET, PATCHES):
            raise InputError(f"'{self.model}' is a 2D prior; gen-3d takes '{REFERENCES}' (embedded) or a Stable "
                             "Diffusion folder / hub id")
        else:
            from fsd2d.priors.load import check_prompts

            check_prompts(self.model, self.prompt, self.negative_prompt)
        if self.eval_views < 2 or self.turntable_frames < 2:
            raise InputError("eval views and turntable frames must be >= 2")
        if self.seed_batch is not None and self.seed_batch < 1:
            raise InputError(f"seed-batch must be >= 1, got {self.seed_batch}")
        if self.compile and self.embedded:
            raise InputError(f"--compile speeds up Stable Diffusion's networks; the embedded '{REFERENCES}' prior "
                             "has none")
        if self.compile and os.environ.get("ATEN_CPU_CAPABILITY") == "default":
            from fsd2d.priors.load import resolve_device

            if resolve_device(self.device).type == "cpu":  # inductor's C++ kernels need a vector ISA (torch 2.13)
                raise InputError("--compile on the CPU needs a vector instruction set: torch's inductor cannot build "
                                 "its kernels under ATEN_CPU_CAPABILITY=default (unset it, or run without --compile)")

    @classmethod
    def from_flags(cls, **flags: Any) -> "Gen3DConfig":
        """The config of `fsd gen-3d` with these options (their Python names, as `fsd batch` sweeps name them; the
        values typed or as the command line's text: seeds '0-3', enum values, ranges 'lo,hi'); an option not given,
        or None, takes its default (the dataclasses' defaults, which are the command's). Text that does not parse:
        the command's one-line InputError (fsd2d.flags); nothing else is validated yet (`validate`, or run_3d)."""
        unknown = sorted(set(flags) - set(FLAGS))
        if unknown:
            raise InputError(f"gen-3d has no option {', '.join('--' + k.replace('_', '-') for k in unknown)}")
        given = {k: v for k, v in flags.items() if v is not None}
        parts: dict[str, dict] = {"run": {}, "train": {}, "densify": {}, "family": {}}
        for name, value in given.items():
            part, key, parse = FLAGS[name]
            parts[part][key] = parse(value, "--" + name.replace("_", "-")) if parse else value
        train = Train3DConfig(**parts["train"], densify=DensifyConfig(**parts["densify"]),
                              family=FamilyOptions(**parts["family"]))
        # each value of its field's type: '5' for steps, 45 for theta (45.0: the command line's, and the same fingerprint)
        return typed(cls(**parts["run"], train=train))

    @classmethod
    def flag_names(cls) -> tuple[str, ...]:
        """The options `from_flags` takes: `fsd gen-3d`'s, by their Python names (what a sweep's params name)."""
        return tuple(FLAGS)

    @classmethod
    def from_record(cls, record: dict) -> "Gen3DConfig":
        """The config a gen-3d run.json records (its "config"), typed again: rerun it with `run_3d`."""
        if record.get("command") != "gen-3d" or not isinstance(record.get("config"), dict):
            raise InputError("not a gen-3d run record (run.json of `fsd gen-3d` or `fsd3d.save_run`)")
        return from_jsonable(cls, record["config"], "run.json config")


def _enum(cls):
    """A parser of one enum value given as the enum or its text."""
    return lambda value, flag: to_enum(value, cls, flag)


def _seeds(value, flag: str) -> tuple[int, ...]:
    return to_seeds(value)


def _range(value, flag: str) -> tuple[float, ...]:
    return to_floats(value, flag) if not isinstance(value, str) else parse_range(value, flag)


def _path(value, flag: str) -> str:
    return str(value)


# `fsd gen-3d`'s options: option (Python name) -> (part of the config, field, parser of its text or None)
FLAGS = {
    "prompt": ("run", "prompt", None), "negative_prompt": ("run", "negative_prompt", None),
    "seeds": ("run", "seeds", _seeds), "model": ("run", "model", None), "resolution": ("run", "resolution", None),
    "device": ("run", "device", None), "dtype": ("run", "dtype", None), "init": ("run", "init_ply", _path),
    "seed_batch": ("run", "seed_batch", None), "compile": ("run", "compile", None), "mesh": ("run", "mesh", None),
    "turntable": ("run", "turntable", _enum(TurntableFormat)),
    "defaults": ("train", "profile", _enum(Profile)), "method": ("train", "method", _enum(NoiseKind)),
    "steps": ("train", "steps", None), "beta": ("train", "beta", None), "theta": ("train", "theta", None),
    "alpha0": ("train", "alpha0", None), "cfg": ("train", "cfg", None), "t_min": ("train", "t_min", None),
    "t_max": ("train", "t_max", None), "anneal": ("train", "anneal", _enum(Anneal)),
    "weighting": ("train", "weighting", _enum(Weighting)), "background": ("train", "background", _enum(Background)),
    "t_sampling": ("train", "sampling", _enum(TimestepSampling)),
    "cameras_per_step": ("train", "cameras_per_step", None), "elevation": ("train", "elevation", _range),
    "radius": ("train", "radius", _range), "fov": ("train", "fov", _range),
    "num_gaussians": ("train", "num_gaussians", None), "init_radius": ("train", "init_radius", None),
    "init_opacity": ("train", "init_opacity", None), "checkpoint_every": ("train", "checkpoint_every", None),
    "shared_cameras": ("train", "shared_cameras", None),
    "densify": ("densify", "strategy", _enum(Densify)), "densify_from": ("densify", "start", None),
    "densify_until": ("densify", "stop", None), "densify_every": ("densify", "every", None),
    "densify_grad": ("densify", "grad_threshold", None), "densify_cap": ("densify", "cap", None),
    **{k: ("family", k, None) for k in FAMILY_FLAGS},
}
