"""`fsd compare-2d`: the same seeds through DDIM, FSD and SDS (the paper's Fig. 3), and the family
(ISM, SDI, CSD, NFSD: fsd2d.family) on the same seeds, all seeds of a method in one batch.

DDIM always runs: it is the reference every method is measured against (same seed, same eps~).

In memory (`compare_methods`, what `compare_2d` writes to the folder, so both give the same numbers):

    result = compare_methods(load_prior("imageset"), Compare2DConfig.from_flags(methods="fsd,sds", seeds="0-3"))
    result.images[Method.FSD]     # [4, 3, 32, 32] float32 in [0, 1], one row per seed
    result.metrics["methods"]["fsd"]["mean_psnr_to_ddim"]
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import ClassVar

import torch

from fsd2d import metrics
from fsd2d.cost import Cost, counted, metered
from fsd2d.figures import image_grid
from fsd2d.family import FAMILY_FLAGS, FamilyOptions, check_rule
from fsd2d.flags import to_enum_tuple
from fsd2d.io import atomic_output_dir, run_record, save_png, write_json
from fsd2d.folders import COMPARE_2D, Layout, claim
from fsd2d.priors.base import Prior
from fsd2d.priors.imageset import ImageSetPrior
from fsd2d.errors import InputError
from fsd2d.sampling import DistillConfig, Method, sample
from fsd2d.vsd import critic_parameters
from fsd2d.study import StudyConfig

__all__ = ["Compare2DConfig", "Compare2D", "compare_methods", "run_methods", "evaluate", "compare_2d"]

DEFAULT_METHODS = (Method.DDIM, Method.FSD, Method.FSD_EXACT, Method.SDS)
FAMILY_OPTIONS = tuple(f.name for f in fields(FamilyOptions))  # options given flat (--ism-interval is ism_interval)


@dataclass(frozen=True)
class Compare2DConfig(StudyConfig):
    LAYOUT: ClassVar[Layout] = COMPARE_2D

    methods: tuple[Method, ...] = DEFAULT_METHODS
    family: FamilyOptions = FamilyOptions()  # ISM / SDI / NFSD settings (fsd2d.family)

    @classmethod
    def flag_names(cls) -> tuple[str, ...]:
        """The shared options, methods and the family's (flat, as --ism-interval)."""
        return (*(n for n in super().flag_names() if n != "family"), *FAMILY_FLAGS)

    @classmethod
    def fields_from_flags(cls, flags: dict) -> dict:
        """Besides the shared options: methods ('fsd,sds' or Method members) and the family's options, flat
        (ism_interval=..., as the command's --ism-interval) or as `family` (FamilyOptions or run.json's dict)."""
        flags = super().fields_from_flags(flags)
        if "methods" in flags:
            flags["methods"] = to_enum_tuple(flags["methods"], Method, "--methods")
        flat = {name: flags.pop(name) for name in FAMILY_OPTIONS if name in flags}
        family = flags.get("family", FamilyOptions())
        family = FamilyOptions(**family) if isinstance(family, dict) else family
        if flat or "family" in flags:
            flags["family"] = replace(family, **flat)
        return flags

    def write_study(self, prior: Prior, out: Path, progress: bool = False) -> dict:
        return compare_2d(prior, self, out, progress=progress)

    def distill_base(self) -> DistillConfig:
        """The shared base (StudyConfig.distill_base) with the family's options: every method starts from it."""
        return replace(super().distill_base(), family=self.family)

    def validate(self) -> None:
        super().validate()
        self.family.validate()
        if self.family.particles > 1 and not any(m in (Method.VSD, Method.ESD) for m in self.methods):
            raise InputError("--particles is the number of particles sharing one critic: it needs --methods with "
                             "vsd or esd")

    def ordered_methods(self) -> tuple[Method, ...]:
        """DDIM first (always run), then the others in the order given, without repeats."""
        rest = [m for m in dict.fromkeys(self.methods) if m is not Method.DDIM]
        return (Method.DDIM, *rest)


def method_configs(config: Compare2DConfig) -> dict[str, DistillConfig]:
    """Each method's DistillConfig (DDIM's grid is the annealed one), as run.json records them."""
    base = config.distill_base()
    return {m.value: m.config(base) for m in config.ordered_methods() if m is not Method.DDIM}


def run_methods(prior: Prior, config: Compare2DConfig, progress: bool = False) -> dict[Method, torch.Tensor]:
    """Final results in the prior's working space [B, C, h, w], per method (one batch of all seeds each): every
    method through `sampling.sample` with the same base settings, DDIM first (compare_methods decodes and scores)."""
    return run_methods_metered(prior, config, progress)[0]


def run_methods_metered(prior: Prior, config: Compare2DConfig,
                        progress: bool = False) -> tuple[dict[Method, torch.Tensor], dict[Method, Cost]]:
    """`run_methods`'s results and, per method, what it cost (fsd2d.cost: prior evaluations, seconds, memory, the
    critic's parameters; per seed, all its particles together). VSD / ESD with particles give [S * P, C, h, w]
    (seed-major; `split_particles`)."""
    for method_config in method_configs(config).values():  # every method's rule checked before any runs
        check_rule(method_config.rule, prior)
    guidance, base = config.guidance(prior), config.distill_base()  # prompts encoded once, outside every meter
    latents, costs = {}, {}
    for m in config.ordered_methods():
        with metered(prior.device) as meter, counted(prior, meter):
            latents[m] = sample(prior, guidance, m, config.seeds, base, callback=meter.tick, progress=progress)
        trained = critic_parameters(prior, config.family.lora_rank) if m in (Method.VSD, Method.ESD) else 0
        costs[m] = meter.cost(config.steps, len(config.seeds), trained)
    return latents, costs


def split_particles(images: torch.Tensor, seeds: int) -> torch.Tensor:
    """[S * P, ...] seed-major -> [S, P, ...]."""
    return images.reshape(seeds, images.shape[0] // seeds, *images.shape[1:])


@dataclass(frozen=True)
class Compare2D:
    """What `fsd compare-2d` computes, in memory: its config, the decoded images and metrics.json's numbers."""

    config: Compare2DConfig
    images: dict[Method, torch.Tensor]  # per method, DDIM first: [B, C, H, W] float32 on the CPU in [0, 1], B = seeds
    #                                     (VSD / ESD with particles: each seed's particle 0, as a one-particle run's)
    metrics: dict  # metrics.json less "seconds" and "cost" (evaluate): per method and seed the distance to DDIM, ...
    cost: dict[Method, Cost] = field(default_factory=dict)  # per method (fsd2d.cost); metrics.json's "cost"
    particles: dict[Method, torch.Tensor] = field(default_factory=dict)  # VSD / ESD with P > 1: [S, P, C, H, W]


def compare_methods(prior: Prior, config: Compare2DConfig, progress: bool = False) -> Compare2D:
    """Run every method of `config` (DDIM always) on `prior`, decode and score them: the images and the numbers
    `fsd compare-2d` writes, without a folder. Validates `config` first (InputError, one line)."""
    config.validate()
    latents, costs = run_methods_metered(prior, config, progress=progress)
    with torch.no_grad():
        decoded = {m: split_particles(prior.decode(z).float().cpu(), len(config.seeds)) for m, z in latents.items()}
    images = {m: ims[:, 0] for m, ims in decoded.items()}
    particles = {m: ims for m, ims in decoded.items() if ims.shape[1] > 1}
    result = evaluate(prior, config, images)
    for m, ims in particles.items():
        add_particle_scores(result["methods"][m.value], ims)
    return Compare2D(config, images, result, costs, particles)


def add_particle_scores(entry: dict, particles: torch.Tensor) -> None:
    """A method with particles [S, P, 3, H, W]: their number and their diversity within each seed's run (the mean
    over seeds of metrics.diversity across its P particles); `diversity` stays the one across seeds (particle 0)."""
    entry["particles"] = particles.shape[1]
    entry["particle_diversity"] = float(sum(metrics.diversity(p) for p in particles) / len(particles))


def evaluate(prior: Prior, config: Compare2DConfig, images: dict[Method, torch.Tensor]) -> dict:
    """metrics.json: per method and seed the distance to DDIM (PSNR, SSIM); per method the diversity;
    for the analytic prior the nearest set image (index, PSNR) and the mode coverage; for a model trained on
    the pictures (tiny-sd) the nearest picture over all crops and the prompt accuracy (add_picture_scores)."""
    set_images = prior.set_images(config.prompt) if isinstance(prior, ImageSetPrior) else None
    ref = images[Method.DDIM]
    out = {"seeds": list(config.seeds), "methods": {}}
    for method, ims in images.items():
        out["methods"][method.value] = metrics.score(ims, ref, config.seeds, set_images)
    if set_images is not None:
        out["reached_psnr_db"] = metrics.REACHED_PSNR_DB
    if prior.card is not None and prior.card.get("world") == "imageset":  # a trained model of the pictures
        add_picture_scores(out, images, config.prompt, prior.resolution)
    return out


def add_picture_scores(out: dict, images: dict[Method, torch.Tensor], prompt: str, resolution: int) -> None:
    """A model trained on crops of the pictures (tiny-sd): per method and seed the nearest picture over all its
    crops and that PSNR (fsd2d.crop_match), the prompt accuracy, and the PSNR to the nearest of the exact prior's
    64 crops of the prompt (high: a copy of that set; the network never saw it, it saw fresh crops)."""
    from fsd2d.crop_match import picture_scores

    exact = ImageSetPrior(resolution).set_images(prompt) if prompt else None
    for method, ims in images.items():
        entry = out["methods"][method.value]
        pics = picture_scores(ims, prompt)
        for i, seed_entry in enumerate(entry["per_seed"]):
            seed_entry["nearest_picture"], seed_entry["picture_psnr"] = pics["nearest_picture"][i], pics["picture_psnr"][i]
        entry["prompt_accuracy"] = pics["prompt_accuracy"]
        entry["mean_picture_psnr"] = float(sum(pics["picture_psnr"]) / len(ims))
        if exact is not None:
            _, copy = metrics.nearest(ims, exact)
            for seed_entry, c in zip(entry["per_seed"], copy.tolist()):
                seed_entry["exact_set_psnr"] = c
            entry["mean_exact_set_psnr"] = metrics.finite_mean(copy.tolist())


def caption(method: Method, seed_metrics: dict) -> str:
    if method is Method.DDIM:
        if "nearest_picture" in seed_metrics:  # a trained model of the pictures: what DDIM's image is a crop of
            return f"{seed_metrics['nearest_picture']} {seed_metrics['picture_psnr']:.0f} dB"
        if "nearest_psnr" not in seed_metrics:
            return ""
        near = seed_metrics["nearest_psnr"]
        return f"set image #{seed_metrics['nearest_set_image']}" + ("" if near > 60 else f" ({near:.0f} dB)")
    p = seed_metrics["psnr_to_ddim"]
    return "= DDIM" if p > 60 else f"{p:.1f} dB vs DDIM"


def compare_2d(prior: Prior, config: Compare2DConfig, out: Path, progress: bool = False) -> dict:
    """Run every method, write grid.png, images/, metrics.json and run.json to `out` atomically."""
    claim(out, COMPARE_2D)
    start = time.perf_counter()
    result = compare_methods(prior, config, progress=progress)
    images = result.images
    summary = {**result.metrics, "seconds": time.perf_counter() - start,
               "cost": {m.value: c.record() for m, c in result.cost.items()}}
    with atomic_output_dir(out, COMPARE_2D) as tmp:
        (tmp / "images").mkdir()
        for method, ims in images.items():
            for seed, im in zip(config.seeds, metrics.to_hwc(ims)):
                save_png(tmp / "images" / f"{method.value}_seed{seed}.png", im)
        for method, parts in result.particles.items():  # particle 0 is the seed's image above
            for seed, row in zip(config.seeds, parts):
                for k, im in enumerate(metrics.to_hwc(row[1:]), start=1):
                    save_png(tmp / "images" / f"{method.value}_seed{seed}_particle{k}.png", im)
            rows = [metrics.to_hwc(parts[:, k]) for k in range(parts.shape[1])]  # a row per particle, a column per seed
            image_grid(tmp / f"particles_{method.value}.png", rows,
                       [f"particle {k}" for k in range(parts.shape[1])], [f"seed {s}" for s in config.seeds],
                       title=f"{method.value}: {parts.shape[1]} particles per seed sharing one critic")
        per = summary["methods"]
        image_grid(
            tmp / "grid.png",
            [metrics.to_hwc(ims) for ims in images.values()],
            [m.value for m in images],
            [f"seed {s}" for s in config.seeds],
            captions=[[caption(m, p) for p in per[m.value]["per_seed"]] for m in images],
            title=f"'{config.prompt}'  (cfg {config.cfg_for(prior)}, {config.steps} steps)",
        )
        write_json(tmp / "metrics.json", summary)
        write_json(tmp / "run.json", run_record("compare-2d", config, config.run_extras(prior, method_configs(config))))
    return summary
