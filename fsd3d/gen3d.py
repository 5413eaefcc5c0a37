"""`fsd gen-3d`: text-to-3D with FSD / SDS on 3D Gaussian Splatting, one scene per seed.

Output folder layout:
    run.json, metrics.json, summary.png      the run: configuration, metrics across seeds, all seeds' views
    seed_S/checkpoint.pt                      written every --checkpoint-every steps (atomic)
    seed_S/gaussians.ply                      standard 3DGS layout (opens in common splat viewers)
    seed_S/turntable.gif                      RGB | depth, a full turn at the evaluation elevation
    seed_S/views.png                          evaluation views: RGB, depth, opacity (+ matched reference)
    seed_S/views/az_AAA.png                   each evaluation view's RGB (for CLIP / IS / CROSS-FID)
    seed_S/metrics.json                       the seed's metrics
Nothing already in the folder is lost: an existing checkpoint is only continued (--resume), never replaced.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image

from fsd2d import metrics
from fsd2d.errors import InputError
from fsd2d.figures import image_grid
from fsd2d.io import atomic_path, run_record, save_png, write_json
from fsd3d.cameras import Camera
from fsd3d.gaussians import GaussianScene
from fsd3d.metrics3d import diversity_3d, evaluation_cameras, references_reached, score_scene
from fsd3d.ply import load_ply, save_ply
from fsd3d.priors3d import ScenePrior
from fsd3d.render import RenderOutput, render_scene
from fsd3d.train import SeedState, Train3DConfig, initial_state, load_checkpoint, train_seed

BUILTIN_3D = "references"  # the embedded view-conditioned analytic prior (fsd3d.reference_prior)


@dataclass(frozen=True)
class Gen3DConfig:
    prompt: str = "mushroom"
    negative_prompt: str = ""
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    model: str = BUILTIN_3D  # or a Stable Diffusion folder / hub id
    resolution: int | None = None  # render size: 32 for the embedded prior, 512 for Stable Diffusion
    device: str = "auto"
    dtype: str = "auto"
    train: Train3DConfig = field(default_factory=Train3DConfig)
    eval_views: int = 8
    turntable_frames: int = 36
    init_ply: str | None = None  # start every seed from this scene instead of a random ball

    def identity(self) -> dict:
        """What, besides the training settings, a checkpoint must match to be continued."""
        return {"prompt": self.prompt, "negative_prompt": self.negative_prompt, "model": self.model,
                "resolution": self.resolution, "dtype": self.dtype, "init_ply": self.init_ply}

    def validate(self) -> None:
        self.train.validate()
        if not self.seeds:
            raise InputError("give at least one seed")
        if self.eval_views < 2 or self.turntable_frames < 2:
            raise InputError("eval views and turntable frames must be >= 2")

    def eval_cameras(self, resolution: int, n: int | None = None) -> list[Camera]:
        """n views on a full turn (azimuth 0, 360/n, ...) at the middle elevation, radius and fov of the ranges."""
        r = self.train.cameras
        mid = lambda rng: 0.5 * (rng[0] + rng[1])  # noqa: E731
        return evaluation_cameras(resolution, n or self.eval_views, mid(r.elevation), mid(r.radius), mid(r.fov))


def load_scene_prior(config: Gen3DConfig) -> ScenePrior:
    from fsd2d.priors.load import load_prior, resolve_device, resolve_dtype

    if config.model in ("imageset", "patches"):
        raise InputError(f"'{config.model}' is a 2D prior; gen-3d takes '{BUILTIN_3D}' (embedded) or a Stable "
                         "Diffusion folder / hub id")
    if config.model == BUILTIN_3D:
        from fsd3d.reference_prior import ReferencePrior

        return ReferencePrior(config.prompt, config.negative_prompt, resolution=config.resolution or 32,
                              device=resolve_device(config.device), dtype=resolve_dtype(config.dtype) or torch.float64)
    from fsd3d.priors3d import StableDiffusionScenePrior

    prior = load_prior(config.model, config.device, config.dtype, config.resolution)
    return StableDiffusionScenePrior(prior, config.prompt, config.negative_prompt)


def prepare_states(scene_prior: ScenePrior, config: Gen3DConfig, out: Path, resume: bool) -> dict[int, SeedState]:
    """Every seed's starting state, checked before anything is written (broken files -> InputError)."""
    device = scene_prior.prior.device
    init = load_ply(Path(config.init_ply)) if config.init_ply else None
    states = {}
    for seed in config.seeds:
        ckpt = out / f"seed_{seed}" / "checkpoint.pt"
        if ckpt.exists() and not resume:
            raise InputError(f"{ckpt} exists: pass --resume to continue it, or choose another --out")
        if ckpt.exists():
            states[seed] = load_checkpoint(ckpt, config.train, device, config.identity())
        else:
            scene = None if init is None else GaussianScene.from_tensors(
                init.means, init.log_scales, init.quats, init.opacity_logits, init.sh0, init.sh_rest)
            states[seed] = initial_state(config.train, seed, scene, device)
    return states


def gen_3d(scene_prior: ScenePrior, config: Gen3DConfig, out: Path, resume: bool = False,
           progress: bool = False) -> dict:
    """Optimise one scene per seed and write every output; returns the run's metrics."""
    config.validate()
    states = prepare_states(scene_prior, config, out, resume)
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "run.json", run_record("gen-3d", config, {"prior": scene_prior.describe()}))
    res = scene_prior.resolution
    device = scene_prior.prior.device
    views = [v.to(device) for v in config.eval_cameras(res)]
    renders: dict[int, RenderOutput] = {}
    per_seed = {}
    for seed, state in states.items():
        seed_dir = out / f"seed_{seed}"
        seed_dir.mkdir(exist_ok=True)
        train_seed(scene_prior, config.train, seed, state, seed_dir / "checkpoint.pt", config.identity(),
                   progress=progress)
        with torch.no_grad():
            renders[seed] = render_scene(state.scene, views, scene_prior.background_tensor(device))
        per_seed[seed] = scene_metrics(scene_prior, renders[seed], views)
        export_seed(seed_dir, state.scene, scene_prior, config, renders[seed], per_seed[seed])
    summary = summarize(scene_prior, config, renders, per_seed)
    summary["seconds"] = time.perf_counter() - start
    write_json(out / "metrics.json", summary)
    image_grid(out / "summary.png", [metrics.to_hwc(renders[s].rgb) for s in renders],
               [f"seed {s}" for s in renders], [f"az {v.azimuth:.0f}" for v in views],
               title=f"'{config.prompt}' - {config.train.method.value}, {config.train.steps} steps")
    return summary


def scene_metrics(scene_prior: ScenePrior, rendered: RenderOutput, views: list[Camera]) -> dict:
    """Ground truth against the references (embedded prior only): the reference the views resemble,
    their agreement, PSNR and holes, plus that reference's renders for the figure. {} for other priors."""
    from fsd3d.reference_prior import ReferencePrior

    if not isinstance(scene_prior, ReferencePrior):
        return {}
    refs = scene_prior.references.render(views, scene_prior.resolution, scene_prior.background,
                                         scene_prior.prior.device)  # rgb [K, V, 3, R, R]
    names = list(scene_prior.references.names)
    score = score_scene(rendered.rgb, rendered.alpha, refs.rgb, refs.alpha, names)
    return score | {"reference_renders": refs.rgb[names.index(score["majority"])].float().cpu()}


def summarize(scene_prior: ScenePrior, config: Gen3DConfig, renders: dict[int, RenderOutput],
              per_seed: dict[int, dict]) -> dict:
    """Across seeds: weight-free diversity (1 - SSIM on matched views) and, with references, how many
    distinct references the seeds reached."""
    rgbs = torch.stack([r.rgb for r in renders.values()]).float().cpu()  # [S, V, 3, R, R]
    summary = {"seeds": list(renders), "method": config.train.method.value,
               "diversity": diversity_3d(rgbs) if rgbs.shape[0] > 1 else float("nan"),
               "per_seed": {str(s): {k: v for k, v in m.items() if k != "reference_renders"}
                            for s, m in per_seed.items()}}
    if all(per_seed.values()):
        reached = references_reached(list(per_seed.values()))
        summary |= {k: reached[k] for k in ("references_reached", "reached", "threshold_db")}
    return summary


def export_seed(seed_dir: Path, scene: GaussianScene, scene_prior: ScenePrior, config: Gen3DConfig,
                rendered: RenderOutput, seed_metrics: dict) -> None:
    save_ply(seed_dir / "gaussians.ply", scene)
    (seed_dir / "views").mkdir(exist_ok=True)
    for k, im in enumerate(metrics.to_hwc(rendered.rgb)):
        save_png(seed_dir / "views" / f"az_{round(360 * k / len(rendered.rgb)):03d}.png", im)
    device = scene_prior.prior.device
    res = scene_prior.resolution
    with torch.no_grad():
        turn = render_scene(scene, [c.to(device) for c in config.eval_cameras(res, config.turntable_frames)],
                            scene_prior.background_tensor(device))
    save_gif(seed_dir / "turntable.gif", [side_by_side(turn, i) for i in range(turn.rgb.shape[0])])
    rows = [metrics.to_hwc(rendered.rgb), depth_to_rgb(rendered), metrics.to_hwc(rendered.alpha.expand(-1, 3, -1, -1))]
    labels = ["rgb", "depth", "opacity"]
    matched = seed_metrics.get("reference_renders")
    if matched is not None:
        rows.append(metrics.to_hwc(matched))
        labels.append(f"nearest ref\n{seed_metrics['majority']}")
    image_grid(seed_dir / "views.png", rows, labels, [f"az {360 * k / len(rows[0]):.0f}" for k in range(len(rows[0]))])
    write_json(seed_dir / "metrics.json", {k: v for k, v in seed_metrics.items() if k != "reference_renders"})


def depth_to_rgb(r: RenderOutput) -> np.ndarray:
    """Expected depth [V, 1, H, W] -> viridis [V, H, W, 3] (near = bright), white where opacity < 0.05."""
    d = r.depth[:, 0].detach().cpu().double()
    a = r.alpha[:, 0].detach().cpu().double()
    fg = a > 0.05
    lo, hi = (d[fg].min().item(), d[fg].max().item()) if fg.any() else (0.0, 1.0)
    norm = ((hi - d) / max(hi - lo, 1e-6)).clamp(0, 1).numpy()
    rgb = matplotlib.colormaps["viridis"](norm)[..., :3]
    rgb[~fg.numpy()] = 1.0
    return rgb


def side_by_side(r: RenderOutput, i: int, scale: int = 4) -> np.ndarray:
    """One turntable frame: RGB | depth, upscaled (nearest) for viewing, uint8 [H*s, 2*W*s, 3]."""
    rgb = metrics.to_hwc(r.rgb[i : i + 1])[0]
    depth = depth_to_rgb(RenderOutput(r.rgb[i : i + 1], r.alpha[i : i + 1], r.depth[i : i + 1]))[0]
    frame = np.concatenate([rgb, depth], axis=1)
    frame = np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)
    return (np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8)


def save_gif(path: Path, frames: list[np.ndarray], ms_per_frame: int = 80) -> None:
    images = [Image.fromarray(f) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)
