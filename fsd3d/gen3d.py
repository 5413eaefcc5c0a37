"""`fsd gen-3d`: text-to-3D with FSD / SDS on 3D Gaussian Splatting, one scene per seed.

Output folder layout:
    run.json, metrics.json, summary.png      the run: configuration, metrics across seeds, all seeds' views
    seed_S/checkpoint.pt                      written every --checkpoint-every steps (atomic)
    seed_S/gaussians.ply                      standard 3DGS layout (opens in common splat viewers)
    seed_S/turntable.mp4                      RGB | depth, a full turn at the evaluation elevation (H.264;
                                              turntable.gif with --turntable gif)
    seed_S/views.png                          evaluation views: RGB, depth, opacity (+ matched reference),
                                              cells of at most 256 px
    seed_S/views/az_AAA.png                   each evaluation view's RGB (for CLIP / IS / CROSS-FID)
    seed_S/metrics.json                       the seed's metrics
    seed_S/mesh.glb                           with --mesh: the surface as a vertex-coloured mesh (fsd3d.mesh)
(the seed_S/ files other than the checkpoint are written by fsd3d.outputs.export_seed)
Nothing already in the folder is lost: an existing checkpoint is only continued (--resume), never replaced.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from fsd2d import metrics
from fsd2d.errors import InputError
from fsd2d.figures import image_grid
from fsd2d.folders import GEN_3D, claim
from fsd2d.priors.load import check_prompts
from fsd2d.io import check_output_dir, differences, jsonable, read_object, run_record, write_json
from fsd2d.sampling import check_seeds
from fsd2d.study import check_resolution
from fsd3d.backbones import Background, Profile, defaults
from fsd3d.cameras import Camera, CameraRanges
from fsd3d.gaussians import GaussianScene
from fsd3d.mesh import MESH_EVAL_PX, EmptyMeshError, export_mesh
from fsd3d.metrics3d import (mean_over_pairs, pairwise_dissimilarity_3d, references_reached,
                             score_scene, seed_spread)
from fsd3d.outputs import TurntableFormat, export_seed
from fsd3d.ply import load_ply
from fsd3d.priors3d import ScenePrior
from fsd3d.render import RenderOutput, render_scene
from fsd3d.train import (SeedState, Train3DConfig, check_noise_function, initial_state, load_checkpoint, resolve,
                         train_seeds)

BUILTIN_3D = "references"  # the embedded view-conditioned analytic prior (fsd3d.reference_prior)
# What the world of the models trained on the references' renders (tiny-sd-objects, tiny-mvdream) fixes whatever
# the profile (fsd3d.backbones): they know only their captions (no negative prompt), were trained at gen-3d's
# embedded camera ranges on white, and take CFG 7.5 (standard form), not the real backbones' 50-71: measured on
# tiny-sd-objects, mushroom, seeds 0-3, 150 steps: at CFG 50 every scene is an oversaturated mixture (PSNR
# 15.9-19.3 dB to its nearest reference, none reached), at 7.5 three variants are reached (22.7-25.6 dB), at 20
# (500 steps) none (20.5-21.0 dB, colour noise).
TRAINED_WORLD = {"cfg": 7.5, "negative_prompt": "", "cameras": CameraRanges(), "background": Background.WHITE}
LOCAL_3D = "references-local"  # the same references with a local patch denoiser per camera (fsd3d.local_prior)


@dataclass(frozen=True)
class Gen3DConfig:
    prompt: str = "mushroom"
    negative_prompt: str | None = None  # None: the profile's (fsd3d.backbones: '' embedded, the authors' on SD)
    seeds: tuple[int, ...] = tuple(range(8))
    model: str = BUILTIN_3D  # or a Stable Diffusion folder / hub id, or an MVDream folder
    resolution: int | None = None  # render size: 32 for the embedded prior, 512 for Stable Diffusion, 256 MVDream
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

    def validate(self) -> None:
        self.train.validate()
        check_seeds(self.seeds)
        check_resolution(self.resolution)
        if self.model in (BUILTIN_3D, LOCAL_3D):  # the prompts the prior checks when it loads, checked now
            from fsd3d.reference_prior import check_reference_prompt

            check_reference_prompt(self.prompt, allow_empty=False)
            check_reference_prompt(self.negative_prompt or "")
        elif self.model not in ("imageset", "patches"):  # those are refused by name when the prior loads
            check_prompts(self.model, self.prompt, self.negative_prompt)
        if self.eval_views < 2 or self.turntable_frames < 2:
            raise InputError("eval views and turntable frames must be >= 2")
        if self.seed_batch is not None and self.seed_batch < 1:
            raise InputError(f"seed-batch must be >= 1, got {self.seed_batch}")
        if self.compile and self.model in (BUILTIN_3D, LOCAL_3D):
            raise InputError(f"--compile speeds up Stable Diffusion's networks; the embedded '{BUILTIN_3D}' prior "
                             "has none")
        if self.compile and os.environ.get("ATEN_CPU_CAPABILITY") == "default":
            from fsd2d.priors.load import resolve_device

            if resolve_device(self.device).type == "cpu":  # inductor's C++ kernels need a vector ISA (torch 2.13)
                raise InputError("--compile on the CPU needs a vector instruction set: torch's inductor cannot build "
                                 "its kernels under ATEN_CPU_CAPABILITY=default (unset it, or run without --compile)")


def model_profile(model: str, profile: Profile | None = None) -> tuple[Profile, dict]:
    """(profile, world) of a --model, read from its folder without loading any weights: the embedded priors and
    the models trained on the references' renders (world: TRAINED_WORLD) take EMBEDDED, an MVDream folder MVDREAM,
    any other Stable Diffusion STABLE_DIFFUSION; `profile` (--defaults) replaces the profile, not the world."""
    from fsd2d.priors.mvdream import is_mvdream_folder
    from fsd2d.priors.trained import read_card, trained_folder

    if model in (BUILTIN_3D, LOCAL_3D):
        return profile or Profile.EMBEDDED, {}
    folder = trained_folder(model) or Path(model).expanduser()
    card = read_card(folder) if folder.is_dir() else None
    if card is not None:
        return profile or Profile.EMBEDDED, dict(TRAINED_WORLD)
    own = Profile.MVDREAM if folder.is_dir() and is_mvdream_folder(folder) else Profile.STABLE_DIFFUSION
    return profile or own, {}


def load_scene_prior(config: Gen3DConfig) -> ScenePrior:
    from fsd2d.priors.load import load_prior, resolve_device, resolve_dtype

    if config.model in ("imageset", "patches"):
        raise InputError(f"'{config.model}' is a 2D prior; gen-3d takes '{BUILTIN_3D}' (embedded) or a Stable "
                         "Diffusion folder / hub id")
    if config.model in (BUILTIN_3D, LOCAL_3D):
        from fsd3d.local_prior import LocalReferencePrior
        from fsd3d.reference_prior import ReferencePrior

        res = 32 if config.resolution is None else config.resolution  # 0 is an error, not the default
        embedded = ReferencePrior if config.model == BUILTIN_3D else LocalReferencePrior
        return embedded(config.prompt, config.negative_prompt or "", resolution=res,
                        device=resolve_device(config.device), dtype=resolve_dtype(config.dtype) or torch.float64)
    from fsd2d.priors.mvdream import MVDreamPrior
    from fsd3d.mvdream_prior import MVDreamScenePrior
    from fsd3d.priors3d import StableDiffusionScenePrior

    prior = load_prior(config.model, config.device, config.dtype, config.resolution)
    if prior.card is not None and prior.card.get("world") != "references":
        raise InputError(f"'{config.model}' was trained on 2D {prior.card.get('world')} crops; gen-3d takes a model "
                         "trained on the references' renders (tiny-sd-objects, tiny-mvdream) or any other SD folder")
    cls = MVDreamScenePrior if isinstance(prior, MVDreamPrior) else StableDiffusionScenePrior  # MVDream: 4-view sets
    trained = prior.card is not None  # trained here on the references' renders: their world fixes these
    profile, world = model_profile(config.model, config.train.profile)
    negative = defaults(profile, world).negative_prompt if config.negative_prompt is None else config.negative_prompt
    scene_prior = cls(prior, config.prompt, negative, compile=config.compile)
    scene_prior.profile, scene_prior.world_defaults = profile, world
    if trained:
        from fsd3d.references import ReferenceSet

        scene_prior.references = ReferenceSet()
    return scene_prior


def prepare_states(scene_prior: ScenePrior, config: Gen3DConfig, train: Train3DConfig, out: Path, resume: bool,
                   init: GaussianScene | None) -> dict[int, SeedState]:
    """Every seed's starting state: its checkpoint in `out` (with `resume`), else step 0 from `init` (a loaded
    --init PLY) or a random ball; checked before anything is written (broken files -> InputError)."""
    device = scene_prior.prior.device
    states = {}
    for seed in config.seeds:
        ckpt = out / f"seed_{seed}" / "checkpoint.pt"
        if ckpt.exists() and not resume:
            raise InputError(f"{ckpt} exists: pass --resume to continue it, or choose another --out")
        if ckpt.exists():
            states[seed] = load_checkpoint(ckpt, train, device, config.identity())
        else:
            scene = None if init is None else GaussianScene.from_tensors(
                init.means, init.log_scales, init.quats, init.opacity_logits, init.sh0, init.sh_rest)
            states[seed] = initial_state(train, seed, scene, device)
    return states


PACE = ("seeds", "device", "seed_batch", "compile", "train")  # Gen3DConfig fields a run's seeds may differ in


def run_settings(config: dict, train: dict) -> dict:
    """What every seed of one run folder shares, from run.json's `config` and `train_resolved` (or the jsonable
    Gen3DConfig and resolved Train3DConfig of a call): all but PACE and the checkpoint cadence."""
    return ({k: v for k, v in config.items() if k not in PACE}
            | {k: v for k, v in train.items() if k != "checkpoint_every"})


def earlier_seeds(out: Path, config: Gen3DConfig, train: Train3DConfig) -> tuple[int, ...]:
    """The seeds of the gen-3d run already in `out` (fsd2d.folders.claim said it is one), () for a new folder; an
    InputError naming the settings that differ when they are not this call's (a run takes more seeds only with the
    same settings)."""
    if not (out / "run.json").is_file():
        return ()
    record = read_object(out / "run.json")
    try:
        before = run_settings(record["config"], record["train_resolved"])
        seeds = tuple(int(s) for s in record["config"]["seeds"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise InputError(f"{out / 'run.json'} is not a gen-3d run record this version can extend; choose another "
                         "--out") from None
    differ = differences(before, run_settings(jsonable(config), jsonable(train)))
    if differ:
        raise InputError(f"--out {out} is a gen-3d run with other settings ({'; '.join(differ)}): a run folder "
                         "takes more seeds only with the same settings; use them, or choose another --out")
    return seeds


def finished_states(scene_prior: ScenePrior, config: Gen3DConfig, train: Train3DConfig, out: Path,
                    seeds: list[int]) -> dict[int, SeedState]:
    """The final states of earlier seeds of the run that this call does not train (for its metrics over all seeds);
    an InputError for one that did not finish."""
    states = {}
    for seed in seeds:
        ckpt = out / f"seed_{seed}" / "checkpoint.pt"
        state = load_checkpoint(ckpt, train, scene_prior.prior.device, config.identity()) if ckpt.is_file() else None
        if state is None or state.step != train.steps or not (out / f"seed_{seed}" / "metrics.json").is_file():
            done = "has no checkpoint" if state is None else f"stopped at step {state.step} of {train.steps}"
            raise InputError(f"seed {seed} of the run in {out} {done}: finish it first (the same command with "
                             f"--seeds {seed} --resume), or choose another --out")
        states[seed] = state
    return states


def seed_batch(scene_prior: ScenePrior, config: Gen3DConfig, train: Train3DConfig, states: dict) -> int:
    """Seeds advancing together: --seed-batch if given; on CUDA as many as fit in the free memory (fsd3d.memory,
    probed on the first seed's scene at a camera of the run's ranges); all of them on the CPU."""
    if config.seed_batch is not None:
        return config.seed_batch
    device = scene_prior.prior.device
    if device.type != "cuda" or len(states) < 2:
        return max(1, len(states))
    from fsd3d.cameras import sample_cameras
    from fsd3d.memory import seeds_that_fit, view_bytes

    res = scene_prior.resolution
    cams = sample_cameras(1, train.cameras, torch.Generator().manual_seed(0), res, res, device=device)
    per_view = view_bytes(scene_prior, next(iter(states.values())).scene, cams, scene_prior.background_tensor(device),
                          train.clamp_renders)
    free, _ = torch.cuda.mem_get_info(device)
    return seeds_that_fit(free, train.cameras_per_step * scene_prior.views_per_camera * per_view, len(states))


def gen_3d(scene_prior: ScenePrior, config: Gen3DConfig, out: Path, resume: bool = False,
           progress: bool = False) -> dict:
    """Optimise one scene per seed and write every output; returns the run's metrics.

    `out` is new, or a gen-3d run of the same settings (fsd2d.folders): the seeds given are added to it (their
    checkpoints continued with `resume`), and run.json, metrics.json and summary.png then cover all its seeds."""
    config.validate()
    out = Path(out)
    claim(out, GEN_3D)
    check_output_dir(out)
    train = resolve(config.train, scene_prior)
    check_noise_function(train, scene_prior.prior.latent_shape)  # its own checks (e.g. --theta) before the folder's
    init = load_ply(Path(config.init_ply)) if config.init_ply else None
    earlier = earlier_seeds(out, config, train)
    states = prepare_states(scene_prior, config, train, out, resume, init)
    kept = finished_states(scene_prior, config, train, out, [s for s in earlier if s not in states])
    every = tuple(dict.fromkeys([*earlier, *config.seeds]))  # the run's seeds: the earlier ones first
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "run.json", run_record("gen-3d", replace(config, seeds=every),
                                            {"prior": scene_prior.describe(), "train_resolved": train}))
    res = scene_prior.resolution
    device = scene_prior.prior.device
    views = [v.to(device) for v in train.cameras.evaluation_cameras(res, config.eval_views)]
    orbit = [v.to(device) for v in train.cameras.evaluation_cameras(res, config.turntable_frames)]  # turntables
    mesh_views = train.cameras.evaluation_cameras(max(res, MESH_EVAL_PX), config.eval_views)  # silhouette IoU
    background = scene_prior.background_tensor(device)
    refs = reference_renders(scene_prior, views)  # once for all seeds (None without references)

    def evaluate(seed: int, scene: GaussianScene) -> None:  # the seed's renders at the views and its metrics
        with torch.no_grad():
            renders[seed] = render_scene(scene, views, background)
        per_seed[seed] = scene_metrics(scene_prior, renders[seed], views, refs)

    renders: dict[int, RenderOutput] = {}
    per_seed = {}
    seeds = list(states)
    batch = seed_batch(scene_prior, config, train, states)
    for first in range(0, len(seeds), batch):
        chunk = seeds[first : first + batch]
        for seed in chunk:
            (out / f"seed_{seed}").mkdir(exist_ok=True)
        train_seeds(scene_prior, train, [states[s] for s in chunk],
                    {s: out / f"seed_{s}" / "checkpoint.pt" for s in chunk}, config.identity(), progress=progress)
        for seed in chunk:
            state = states[seed]
            evaluate(seed, state.scene)
            mesh = {}  # with --mesh: written before export_seed, which writes the seed's metrics.json
            if config.mesh:
                try:
                    m = export_mesh(out / f"seed_{seed}", state.scene, mesh_views, formats=("glb",))
                    mesh = {"mesh_iou": m["mean_iou"], "watertight": m["watertight"], "mesh_seconds": m["seconds"]}
                except EmptyMeshError as e:  # a scene too faint for the level: the run goes on without its mesh
                    (out / f"seed_{seed}" / "mesh.glb").unlink(missing_ok=True)  # no earlier mesh beside the new scene
                    print(f"warning: seed {seed}: no mesh.glb: {e} (with `fsd export-mesh {out}/seed_{seed}`)",
                          file=sys.stderr, flush=True)
                    mesh = {"mesh": None, "mesh_error": str(e)}
            export_seed(out / f"seed_{seed}", state.scene, renders[seed], per_seed[seed] | mesh, orbit, background,
                        config.turntable)
    for seed, state in kept.items():  # earlier seeds: their files stay, they count in the run's metrics
        evaluate(seed, state.scene)
    renders = {s: renders[s] for s in every}
    per_seed = {s: per_seed[s] for s in every}
    summary = summarize(scene_prior, config, renders, per_seed)
    summary["seconds"], summary["seed_batch"] = time.perf_counter() - start, batch
    write_json(out / "metrics.json", summary)
    image_grid(out / "summary.png", [metrics.to_hwc(renders[s].rgb) for s in renders],
               [f"seed {s}" for s in renders], [f"az {v.azimuth:.0f}" for v in views],
               title=f"'{config.prompt}' - {config.train.method.value}, {train.steps} steps")
    return summary


def reference_renders(scene_prior: ScenePrior, views: list[Camera]) -> RenderOutput | None:
    """The references rendered at the evaluation views (rgb [K, V, 3, R, R]), None for priors without them."""
    if scene_prior.references is None:
        return None
    return scene_prior.references.render(views, scene_prior.resolution, scene_prior.background,
                                         scene_prior.prior.device)


def scene_metrics(scene_prior: ScenePrior, rendered: RenderOutput, views: list[Camera],
                  refs: RenderOutput | None = None) -> dict:
    """Ground truth against the references (embedded prior only): the reference the views resemble,
    their agreement, PSNR and holes, plus that reference's renders for the figure. {} for other priors.
    `refs`: `reference_renders(scene_prior, views)`, made once per run (rendered here when not given)."""
    refs = reference_renders(scene_prior, views) if refs is None else refs
    if refs is None:
        return {}
    names = list(scene_prior.references.names)
    score = score_scene(rendered.rgb, rendered.alpha, refs.rgb, refs.alpha, names, rendered.depth, refs.depth)
    return score | {"reference_renders": refs.rgb[names.index(score["majority"])].float().cpu()}


def summarize(scene_prior: ScenePrior, config: Gen3DConfig, renders: dict[int, RenderOutput],
              per_seed: dict[int, dict]) -> dict:
    """Across seeds: weight-free diversity (1 - SSIM on matched views) and, with references, how many
    distinct references the seeds reached."""
    rgbs = torch.stack([r.rgb for r in renders.values()]).float().cpu()  # [S, V, 3, R, R]
    pairwise = pairwise_dissimilarity_3d(rgbs) if rgbs.shape[0] > 1 else None  # [S, S] 1 - SSIM, computed once
    summary = {"seeds": list(renders), "method": config.train.method.value,
               "diversity": mean_over_pairs(pairwise) if pairwise is not None else float("nan"),
               "per_seed": {str(s): {k: v for k, v in m.items() if k != "reference_renders"}
                            for s, m in per_seed.items()}}
    if all(per_seed.values()):
        reached = references_reached(list(per_seed.values()))
        summary |= {k: reached[k] for k in ("references_reached", "reached", "threshold_db")}
        # each number with its spread over the seeds (std; bootstrap intervals for reached and diversity)
        summary["spread"] = seed_spread([per_seed[s] for s in renders], pairwise)
    return summary


def run_config(run_json: Path) -> tuple[Gen3DConfig, int]:
    """(Gen3DConfig whose train.cameras are the run's resolved ranges, with its view counts; render size) from a
    gen-3d run.json; the embedded defaults where the file is absent. The views: `config.train.cameras.
    evaluation_cameras(size, config.eval_views)`."""
    if not Path(run_json).is_file():
        return Gen3DConfig(train=Train3DConfig(cameras=CameraRanges())), 32
    try:
        record = read_object(run_json)
        cfg = record["config"]
        # the cameras the run used: its resolved settings (runs before the profiles: the config's own)
        cams = (record.get("train_resolved") or {}).get("cameras") or cfg["train"]["cameras"]
        ranges = CameraRanges(**{k: tuple(v) if isinstance(v, list) else v for k, v in cams.items()})
        # the render size the run used: the one given, else the one its prior recorded (MVDream 256, SD 512)
        recorded = record.get("prior", {}).get("prior", {}).get("resolution")
        res = cfg.get("resolution") or recorded or (32 if cfg.get("model", BUILTIN_3D) in (BUILTIN_3D, LOCAL_3D) else 512)
        config = Gen3DConfig(train=Train3DConfig(cameras=ranges), eval_views=int(cfg.get("eval_views", 8)),
                             turntable_frames=int(cfg.get("turntable_frames", 36)))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{run_json}: not a gen-3d run record ({type(e).__name__}: {e})") from None
    return config, int(res)
