"""FSD in 3D from Python, in memory: `run_3d(config) -> Run3D`.

    >>> from fsd3d import Gen3DConfig, run_3d
    >>> run = run_3d(Gen3DConfig(prompt="mushroom", seeds=(0, 1, 2, 3)))   # the embedded prior, 150 steps, CPU
    >>> run.summary["diversity"], run.summary["references_reached"]
    >>> run.scenes[0]            # GaussianScene of seed 0; run.renders[0].rgb: [V, 3, R, R] in [0, 1]

`run_3d` validates the config, loads its prior (or takes `prior`, a ScenePrior), resolves the settings once
(fsd3d.settings), optimises one scene per seed (fsd3d.train: the seeds in batches of `seed_batch`), renders every
seed at the evaluation views and scores it: the numbers `fsd gen-3d` writes to metrics.json (fsd3d.gen3d.save_run
writes a Run3D as gen-3d's folder). Its two halves, `prepare_run` and `execute`, are what gen-3d composes with its
checkpoints and an earlier run's seeds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from fsd2d.cost import Cost, Meter, metered
from fsd2d.errors import InputError
from fsd2d.family import check_rule
from fsd2d.vsd import critic_parameters
from fsd2d.io import differences
from fsd2d.models import REFERENCES, REFERENCES_WORLD
from fsd3d.cameras import Camera
from fsd3d.checkpoint import SeedState, initial_state
from fsd3d.config import Gen3DConfig, check_noise_function
from fsd3d.gaussians import GaussianScene
from fsd3d.metrics3d import (diversity_3d, mean_over_pairs, pairwise_dissimilarity_3d, references_reached, score_scene,
                             seed_spread)
from fsd3d.priors3d import ScenePrior
from fsd3d.renderer import RenderOutput, render_scene
from fsd3d.settings import Resolved3D, ResolvedTrain3D, resolve, run_defaults
from fsd3d.train import StepLog, train_seeds

__all__ = ["Run3D", "run_3d", "load_scene_prior", "prepare_run", "execute", "start_state"]


@dataclass
class Run3D:
    """A finished 3D run, in memory."""

    settings: Resolved3D  # the config as given (.config) and the settings it ran with (.train)
    states: dict[int, SeedState]  # seed -> its final state: scene, Adams, generators, step
    views: list[Camera]  # the evaluation cameras (fsd3d.cameras.CameraRanges.evaluation_cameras)
    renders: dict[int, RenderOutput]  # seed -> its renders at `views`: rgb [V, 3, R, R] in [0, 1], alpha, depth
    per_seed: dict[int, dict]  # seed -> its metrics (with references: nearest reference, PSNR, holes, ...)
    summary: dict  # across seeds: diversity, references reached, spread, per_seed (= gen-3d's metrics.json)
    prior: dict  # what the scene prior was (ScenePrior.describe)
    seed_batch: int  # seeds that advanced together
    resolution: int  # render side in pixels
    background: torch.Tensor  # [3] in [0, 1]: the colour the evaluation views and turntables are rendered on
    cost: Cost | None = None  # what training the seeds of this call cost (fsd2d.cost); None: none was trained
    particle_renders: dict[int, list[RenderOutput]] = field(default_factory=dict)  # seed -> its particles 1..P-1's

    @property
    def config(self) -> Gen3DConfig:
        return self.settings.config

    @property
    def train(self) -> ResolvedTrain3D:
        return self.settings.train

    @property
    def scenes(self) -> dict[int, GaussianScene]:
        """seed -> its optimised scene."""
        return {seed: state.scene for seed, state in self.states.items()}


def run_3d(config: Gen3DConfig, prior: ScenePrior | None = None, *,
           callback: Callable[[SeedState, StepLog], None] | None = None, progress: bool = False) -> Run3D:
    """Optimise one scene per seed of `config` and score them, in memory (nothing is written). `prior`: a loaded
    scene prior for this config (`load_scene_prior(config)`), to share one between runs. `callback(state, log)`
    after every step of every seed. Bad input: one-line InputError, as `fsd gen-3d` gives."""
    scene_prior, settings = prepare_run(config, prior)
    init = initial_scene(config)
    states = {seed: start_state(settings, seed, init, scene_prior) for seed in config.seeds}
    return execute(scene_prior, settings, states, callback=callback, progress=progress)


def prepare_run(config: Gen3DConfig, prior: ScenePrior | None = None) -> tuple[ScenePrior, Resolved3D]:
    """The run's checks, its scene prior (loaded unless given) and its settings, resolved once."""
    config.validate()
    scene_prior = load_scene_prior(config) if prior is None else prior
    if scene_prior.made_for is not None and scene_prior.made_for != made_for(config):
        differ = differences(scene_prior.made_for, made_for(config))
        raise InputError(f"the prior given was loaded for another run ({'; '.join(differ)}): load it with "
                         "load_scene_prior(config) for this config")
    settings = resolve(config, scene_prior)
    check_noise_function(settings.train, scene_prior.prior.latent_shape)  # its own checks (e.g. --theta)
    return scene_prior, settings


def initial_scene(config: Gen3DConfig) -> GaussianScene | None:
    """The scene every seed starts from (--init), None for the random ball."""
    if not config.init_ply:
        return None
    from fsd3d.ply import load_ply
    from pathlib import Path

    return load_ply(Path(config.init_ply))


def start_state(settings: Resolved3D, seed: int, init: GaussianScene | None, scene_prior: ScenePrior) -> SeedState:
    """Step 0 of a seed: a copy of `init` (the --init scene), else the seed's random ball."""
    scene = None if init is None else GaussianScene.from_tensors(
        init.means, init.log_scales, init.quats, init.opacity_logits, init.sh0, init.sh_rest)
    return initial_state(settings.train, seed, scene, scene_prior.prior.device)


def execute(scene_prior: ScenePrior, settings: Resolved3D, states: dict[int, SeedState], *,
            finished: dict[int, SeedState] | None = None, order: list[int] | None = None, checkpoints: Callable[[int], object] | None = None,
            on_seeds: Callable[["Run3D", list[int]], None] | None = None,
            callback: Callable[[SeedState, StepLog], None] | None = None, progress: bool = False) -> Run3D:
    """Train `states` (seed -> start state) to the end in batches of seeds, render and score each seed; `finished`
    (seed -> final state of an earlier call) are scored with them; `order`: the run's seeds in the order they are
    listed (default: the finished ones, then the others). `checkpoints(seed)`: the path of a
    seed's checkpoint (written every checkpoint_every steps). `on_seeds(run, seeds)`: after each batch of seeds,
    with the run so far."""
    config, train = settings.config, settings.train
    res, device = scene_prior.resolution, scene_prior.prior.device
    views = [v.to(device) for v in train.cameras.evaluation_cameras(res, config.eval_views)]
    background = scene_prior.background_tensor(device)
    refs = reference_renders(scene_prior, views)  # once for all seeds (None without references)
    run = Run3D(settings, {}, views, {}, {}, {}, scene_prior.describe(), seed_batch(scene_prior, config, train, states),
                res, background)

    def score(seed: int, state: SeedState) -> None:  # the seed's renders at the views and its metrics
        with torch.no_grad():
            run.renders[seed] = render_scene(state.scene, views, background)
            particles = [render_scene(p.scene, views, background) for p in state.particles]
        run.per_seed[seed] = scene_metrics(scene_prior, run.renders[seed], views, refs)
        if particles:  # VSD / ESD's particles: their renders, and their diversity (as the seeds', matched views)
            run.particle_renders[seed] = particles
            rgb = torch.stack([r.rgb for r in (run.renders[seed], *particles)]).float().cpu()  # [P, V, 3, R, R]
            run.per_seed[seed]["particle_diversity"] = diversity_3d(rgb)
        run.states[seed] = state

    seeds = list(states)
    meter = Meter()
    for first in range(0, len(seeds), run.seed_batch):
        chunk = seeds[first : first + run.seed_batch]
        ckpts = None if checkpoints is None else {s: checkpoints(s) for s in chunk}
        with metered(device, meter):  # training only: the scoring renders are not the method's cost
            train_seeds(scene_prior, train, [states[s] for s in chunk], ckpts, config.identity(), progress=progress,
                        callback=callback, meter=meter)
        for seed in chunk:
            score(seed, states[seed])
        if on_seeds is not None:
            on_seeds(run, chunk)
    for seed, state in (finished or {}).items():
        score(seed, state)
    every = order or [*(finished or {}), *(s for s in seeds if s not in (finished or {}))]
    if set(every) != set(run.states):
        raise ValueError(f"order {every} does not list the run's seeds {sorted(run.states)}")
    run.states, run.renders = {s: run.states[s] for s in every}, {s: run.renders[s] for s in every}
    run.per_seed = {s: run.per_seed[s] for s in every}
    run.summary = summarize(scene_prior, config, run.renders, run.per_seed)
    if meter.seed_steps:
        trained = critic_parameters(scene_prior.prior, train.family.lora_rank) if train.method.rule.has_critic else 0
        run.cost = meter.cost(train.steps, len(seeds), trained)
    return run


def made_for(config: Gen3DConfig) -> dict:
    """What a scene prior loaded for `config` depends on (a prior may serve every run that agrees on these)."""
    return {"model": config.model, "prompt": config.prompt, "negative_prompt": config.negative_prompt,
            "profile": None if config.train.profile is None else config.train.profile.value,
            "resolution": config.resolution, "device": config.device, "dtype": config.dtype, "compile": config.compile}


def load_scene_prior(config: Gen3DConfig) -> ScenePrior:
    """The scene prior of `config.model` (see `load`), marked with what it was loaded for (`made_for`): run_3d
    refuses it for a config that disagrees (another prompt, model, negative prompt, ...)."""
    scene_prior = load(config)
    scene_prior.made_for = made_for(config)
    return scene_prior


def load(config: Gen3DConfig) -> ScenePrior:
    """The scene prior of `config.model`: the embedded references (exact, no weights), or a Stable Diffusion / MVDream
    folder or hub id lifted to 3D (fsd3d.priors3d), with the negative prompt of the run's profile when none is given."""
    from fsd2d.priors.load import load_prior, resolve_device, resolve_dtype

    config.validate()
    if config.embedded:
        from fsd3d.local_prior import LocalReferencePrior
        from fsd3d.reference_prior import ReferencePrior

        res = 32 if config.resolution is None else config.resolution  # 0 is an error, not the default
        embedded = ReferencePrior if config.model == REFERENCES else LocalReferencePrior
        scene_prior = embedded(config.prompt, config.negative_prompt or "", resolution=res,
                               device=resolve_device(config.device), dtype=resolve_dtype(config.dtype) or torch.float64)
        check_rule(config.train.method.rule, scene_prior.prior)  # VSD / ESD: no network to put a critic in
        return scene_prior
    from fsd2d.priors.mvdream import MVDreamPrior
    from fsd3d.mvdream_prior import MVDreamScenePrior
    from fsd3d.priors3d import StableDiffusionScenePrior

    resolution = run_defaults(config).resolution if config.resolution is None else config.resolution
    prior = load_prior(config.model, config.device, config.dtype, resolution)  # None: the prior's native size
    if prior.card is not None and prior.card.get("world") != REFERENCES_WORLD:
        raise InputError(f"'{config.model}' was trained on 2D {prior.card.get('world')} crops; gen-3d takes a model "
                         "trained on the references' renders (tiny-sd-objects, tiny-mvdream) or any other SD folder")
    check_rule(config.train.method.rule, prior)
    if config.compile and config.train.method.rule.has_critic:
        raise InputError(f"--compile captures the denoiser as it is, and {config.train.method.value}'s critic changes "
                         "it every step (a LoRA trained in place): run it without --compile")
    cls = MVDreamScenePrior if isinstance(prior, MVDreamPrior) else StableDiffusionScenePrior  # MVDream: 4-view sets
    negative = run_defaults(config).negative_prompt if config.negative_prompt is None else config.negative_prompt
    scene_prior = cls(prior, config.prompt, negative, compile=config.compile)
    if prior.card is not None:  # trained here on the references' renders: scored against them
        from fsd3d.references import ReferenceSet

        scene_prior.references = ReferenceSet()
    return scene_prior


def seed_batch(scene_prior: ScenePrior, config: Gen3DConfig, train: ResolvedTrain3D, states: dict) -> int:
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
    first = next(iter(states.values()))
    per_view = view_bytes(scene_prior, first.scene, cams, scene_prior.background_tensor(device), train.clamp_renders)
    free, _ = torch.cuda.mem_get_info(device)
    views = train.cameras_per_step * scene_prior.views_per_camera * len(first.scenes)  # a seed's, all its particles
    return seeds_that_fit(free, views * per_view, len(states))


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
    particles = [m["particle_diversity"] for m in per_seed.values() if "particle_diversity" in m]
    if particles:  # VSD / ESD's particles: the mean over seeds of the diversity across a seed's particles
        summary["particle_diversity"] = float(np.mean(particles))
    if all("majority" in m for m in per_seed.values()):  # scored against references
        reached = references_reached(list(per_seed.values()))
        summary |= {k: reached[k] for k in ("references_reached", "reached", "threshold_db")}
        # each number with its spread over the seeds (std; bootstrap intervals for reached and diversity)
        summary["spread"] = seed_spread([per_seed[s] for s in renders], pairwise)
    return summary
