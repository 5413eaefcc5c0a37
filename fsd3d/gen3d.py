"""`fsd gen-3d`'s folder: a Run3D (fsd3d.run) written to disk, and the command that trains into it (checkpoints,
--resume, more seeds added to an earlier run).

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
Nothing already in the folder is lost: gen-3d only continues an existing checkpoint (--resume), never replaces it;
save_run replaces only the files of its own seeds in its own folder.

    save_run(run, out)                 a Run3D from `run_3d` as this folder (new, or the same run's own folder)
    gen_3d(config, out, resume=...)    what `fsd gen-3d` runs: prepare_run -> train with checkpoints -> save_run
    Gen3DConfig.from_record(...)       run.json back into the config (fsd3d.config)
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

from fsd2d import metrics
from fsd2d.errors import InputError
from fsd2d.figures import image_grid
from fsd2d.folders import GEN_3D, claim, particle_dir, seed_dir
from fsd2d.models import REFERENCES, REFERENCES_LOCAL
from fsd2d.io import check_output_dir, differences, jsonable, read_object, run_record, write_json
from fsd3d.cameras import CameraRanges
from fsd3d.checkpoint import SeedState, load_checkpoint, save_checkpoint
from fsd3d.config import CAMERA_OVERRIDES, Gen3DConfig, Train3DConfig
from fsd3d.gaussians import GaussianScene
from fsd3d.mesh import (DEFAULT_GRID, DEFAULT_LEVEL, DEFAULT_MAX_FACES, MESH_EVAL_PX, EmptyMeshError,
                        check_mesh_options, export_mesh)
from fsd3d.outputs import export_seed
from fsd3d.priors3d import ScenePrior
from fsd3d.run import Run3D, execute, initial_scene, prepare_run, start_state
from fsd3d.settings import Resolved3D

__all__ = ["gen_3d", "save_run", "export_seed_mesh", "run_config"]

CHECKPOINT = "checkpoint.pt"  # in seed_S/


def save_run(run: Run3D, out: Path, *, mesh: bool | None = None) -> Path:
    """Write `run` as gen-3d writes its folder (module docstring), final checkpoints included, so the folder is a
    gen-3d run like any other (`fsd report`, `fsd view`, `fsd export-mesh`, more seeds with `fsd gen-3d --out`).
    `out`: a new folder, or a gen-3d folder of this run's settings whose seeds are all in `run`. `mesh`: also write
    mesh.glb per seed (None: the config's). Returns `out`."""
    out = Path(out)
    claim(out, GEN_3D)
    check_output_dir(out)
    if (out / "run.json").is_file():
        before = earlier_seeds(out, run.settings)
        if not set(before) <= set(run.states):
            raise InputError(f"--out {out} holds seeds {sorted(set(before) - set(run.states))} that this run has "
                             "not: choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    write_run_record(out, run.settings, list(run.states), run.prior)
    for seed, state in run.states.items():
        seed_dir(out, seed).mkdir(exist_ok=True)
        save_checkpoint(seed_dir(out, seed) / CHECKPOINT, state, run.train, run.config.identity())
        save_seed(run, seed, out, run.config.mesh if mesh is None else mesh)
    save_summary(run, out)
    return out


def write_run_record(out: Path, settings: Resolved3D, seeds: list[int], prior: dict) -> None:
    write_json(out / "run.json", run_record("gen-3d", replace(settings.config, seeds=tuple(seeds)),
                                            {"prior": prior, "train_resolved": settings.train} | settings.record()))


def save_seed(run: Run3D, seed: int, out: Path, mesh: bool) -> None:
    """seed_S/: gaussians.ply, turntable, views (fsd3d.outputs.export_seed), metrics.json, and with `mesh` mesh.glb
    (its silhouette IoU and watertightness in the seed's metrics.json)."""
    folder, state = seed_dir(out, seed), run.states[seed]
    extra = {}
    if mesh:  # written before export_seed, which writes the seed's metrics.json
        mesh_views = run.train.cameras.evaluation_cameras(max(run.resolution, MESH_EVAL_PX), run.config.eval_views)
        try:
            m = export_mesh(folder, state.scene, mesh_views, formats=("glb",))
            extra = {"mesh_iou": m["mean_iou"], "watertight": m["watertight"], "mesh_seconds": m["seconds"]}
        except EmptyMeshError as e:  # a scene too faint for the level: the run goes on without its mesh
            (folder / "mesh.glb").unlink(missing_ok=True)  # no earlier mesh beside the new scene
            print(f"warning: seed {seed}: no mesh.glb: {e} (with `fsd export-mesh {folder}`)", file=sys.stderr,
                  flush=True)
            extra = {"mesh": None, "mesh_error": str(e)}
    device = run.background.device
    orbit = [v.to(device) for v in run.train.cameras.evaluation_cameras(run.resolution, run.config.turntable_frames)]
    export_seed(folder, state.scene, run.renders[seed], run.per_seed[seed] | extra, orbit, run.background,
                run.config.turntable)
    for k, (particle, rendered) in enumerate(zip(state.particles, run.particle_renders.get(seed, [])), start=1):
        particle_folder = particle_dir(out, seed, k)  # VSD / ESD's particles: the seed's critic shared
        particle_folder.mkdir(exist_ok=True)
        export_seed(particle_folder, particle.scene, rendered, {"seed": seed, "particle": k}, orbit, run.background,
                    run.config.turntable)


def save_summary(run: Run3D, out: Path) -> None:
    """metrics.json (run.summary, with the run's seconds and seed batch) and summary.png (every seed's views)."""
    write_json(out / "metrics.json", run.summary)
    image_grid(out / "summary.png", [metrics.to_hwc(run.renders[s].rgb) for s in run.renders],
               [f"seed {s}" for s in run.renders], [f"az {v.azimuth:.0f}" for v in run.views],
               title=f"'{run.config.prompt}' - {run.config.train.method.value}, {run.train.steps} steps")
    if run.particle_renders:  # one row per seed and particle, a seed's particles together
        rows = [(s, k, r) for s in run.renders
                for k, r in enumerate([run.renders[s], *run.particle_renders.get(s, [])])]
        image_grid(out / "particles.png", [metrics.to_hwc(r.rgb) for _, _, r in rows],
                   [f"seed {s} p{k}" for s, k, _ in rows], [f"az {v.azimuth:.0f}" for v in run.views],
                   title=f"'{run.config.prompt}' - {run.config.train.method.value}, particles sharing each seed's "
                         "critic")


def gen_3d(config: Gen3DConfig, out: Path, resume: bool = False, progress: bool = False,
           prior: ScenePrior | None = None) -> dict:
    """What `fsd gen-3d` runs: optimise one scene per seed with checkpoints in `out`, write every output (each batch
    of seeds as soon as it is done); returns the run's metrics (metrics.json).

    `out` is new, or a gen-3d run of the same settings (fsd2d.folders): the seeds given are added to it (their
    checkpoints continued with `resume`), and run.json, metrics.json and summary.png then cover all its seeds."""
    config.validate()
    out = Path(out)
    claim(out, GEN_3D)
    check_output_dir(out)
    scene_prior, settings = prepare_run(config, prior)
    init = initial_scene(config)  # a broken --init PLY is refused before the folder's run is read
    earlier = earlier_seeds(out, settings)
    states = start_states(scene_prior, settings, out, resume, init)
    kept = finished_states(scene_prior, settings, out, [s for s in earlier if s not in states])
    every = list(dict.fromkeys([*earlier, *config.seeds]))  # the run's seeds: the earlier ones first
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    write_run_record(out, settings, every, scene_prior.describe())
    for seed in states:
        seed_dir(out, seed).mkdir(exist_ok=True)

    def written(run: Run3D, seeds: list[int]) -> None:  # each batch of seeds on disk as soon as it is done
        for seed in seeds:
            save_seed(run, seed, out, config.mesh)

    run = execute(scene_prior, settings, states, finished=kept, order=every,
                  checkpoints=lambda seed: seed_dir(out, seed) / CHECKPOINT, on_seeds=written, progress=progress)
    run.summary["seconds"], run.summary["seed_batch"] = time.perf_counter() - start, run.seed_batch
    run.summary["cost"] = None if run.cost is None else run.cost.record()  # None: every seed was done before
    save_summary(run, out)
    return run.summary


def start_states(scene_prior: ScenePrior, settings: Resolved3D, out: Path, resume: bool,
                 init: GaussianScene | None) -> dict[int, SeedState]:
    """Every seed's starting state: its checkpoint in `out` (with `resume`), else step 0 from `init` (the --init
    scene) or a random ball; checked before anything is written (broken files -> InputError)."""
    config, device = settings.config, scene_prior.prior.device
    states = {}
    for seed in config.seeds:
        ckpt = seed_dir(out, seed) / CHECKPOINT
        if ckpt.exists() and not resume:
            raise InputError(f"{ckpt} exists: pass --resume to continue it, or choose another --out")
        if ckpt.exists():
            states[seed] = load_checkpoint(ckpt, settings.train, device, config.identity())
        else:
            states[seed] = start_state(settings, seed, init, scene_prior)
    return states


PACE = ("seeds", "device", "seed_batch", "compile", "train")  # Gen3DConfig fields a run's seeds may differ in


def run_settings(config: dict, train: dict) -> dict:
    """What every seed of one run folder shares, from run.json's `config` and `train_resolved` (or the jsonable
    Gen3DConfig and resolved Train3DConfig of a call): all but PACE and the checkpoint cadence (the camera ranges
    given as elevation / radius / fov count by their effect, the resolved `cameras`)."""
    return ({k: v for k, v in config.items() if k not in PACE}
            | {k: v for k, v in train.items() if k not in ("checkpoint_every", *CAMERA_OVERRIDES)})


def earlier_seeds(out: Path, settings: Resolved3D) -> tuple[int, ...]:
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
    differ = differences(before, run_settings(jsonable(settings.config), jsonable(settings.train)))
    if differ:
        raise InputError(f"--out {out} is a gen-3d run with other settings ({'; '.join(differ)}): a run folder "
                         "takes more seeds only with the same settings; use them, or choose another --out")
    return seeds


def finished_states(scene_prior: ScenePrior, settings: Resolved3D, out: Path,
                    seeds: list[int]) -> dict[int, SeedState]:
    """The final states of earlier seeds of the run that this call does not train (for its metrics over all seeds);
    an InputError for one that did not finish."""
    config, train = settings.config, settings.train
    states = {}
    for seed in seeds:
        ckpt = seed_dir(out, seed) / CHECKPOINT
        state = load_checkpoint(ckpt, train, scene_prior.prior.device, config.identity()) if ckpt.is_file() else None
        if state is None or state.step != train.steps or not (seed_dir(out, seed) / "metrics.json").is_file():
            done = "has no checkpoint" if state is None else f"stopped at step {state.step} of {train.steps}"
            raise InputError(f"seed {seed} of the run in {out} {done}: finish it first (the same command with "
                             f"--seeds {seed} --resume), or choose another --out")
        states[seed] = state
    return states


def export_seed_mesh(seed_dir: Path, grid: int = DEFAULT_GRID, level: float = DEFAULT_LEVEL,
                     max_faces: int | None = DEFAULT_MAX_FACES) -> dict:
    """What `fsd export-mesh` runs: the mesh of a seed folder's gaussians.ply (fsd3d.mesh.export_mesh, scored at the
    run's evaluation cameras, at least MESH_EVAL_PX pixels) as mesh.glb, mesh.obj and mesh.json; returns mesh.json's
    content. `max_faces` 0 or None keeps every face. Bad input, or mesh files it cannot tell are its own: InputError."""
    from fsd2d.folders import claim_files
    from fsd3d.ply import load_ply

    check_mesh_options(grid, level, max_faces)
    seed_dir = Path(seed_dir)
    if not seed_dir.is_dir():
        raise InputError(f"{seed_dir} is not a folder; give a gen-3d seed folder like outputs/gen-3d/seed_0")
    if not (seed_dir / "gaussians.ply").is_file():
        raise InputError(f"{seed_dir} holds no gaussians.ply; give a gen-3d seed folder like outputs/gen-3d/seed_0")
    claim_files(seed_dir, ("mesh.glb", "mesh.obj", "mesh.json"), GEN_3D)  # a gen-3d run's own, or new files
    scene = load_ply(seed_dir / "gaussians.ply")
    config, res = run_config(seed_dir.parent / "run.json")
    cameras = config.train.cameras.evaluation_cameras(max(res, MESH_EVAL_PX), config.eval_views)
    m = export_mesh(seed_dir, scene, cameras, grid, level, max_faces=max_faces or None)
    write_json(seed_dir / "mesh.json", m)
    return m


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
        embedded = cfg.get("model", REFERENCES) in (REFERENCES, REFERENCES_LOCAL)
        res = cfg.get("resolution") or recorded or (32 if embedded else 512)
        config = Gen3DConfig(train=Train3DConfig(cameras=ranges), eval_views=int(cfg.get("eval_views", 8)),
                             turntable_frames=int(cfg.get("turntable_frames", 36)))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{run_json}: not a gen-3d run record ({type(e).__name__}: {e})") from None
    return config, int(res)
