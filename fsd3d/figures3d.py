"""Figures and tables of 3D runs (`fsd3d.run_3d` -> Run3D), shown in a notebook: what the notebooks share.

    >>> from dataclasses import replace
    >>> from fsd3d import Gen3DConfig, NoiseKind, Train3DConfig, load_scene_prior, run_3d
    >>> from fsd3d.figures3d import show_references, show_seed_table, show_summary_table, show_views
    >>> config = Gen3DConfig(prompt="mushroom", seeds=(0, 1, 2, 3))
    >>> prior = load_scene_prior(config)                          # one prior for both runs (same prompt and model)
    >>> runs = {k.value: run_3d(replace(config, train=Train3DConfig(method=k)), prior)
    ...         for k in (NoiseKind.SDS_ANNEALED, NoiseKind.FSD)}
    >>> show_views(runs, title="one scene per seed")              # a row per run and seed, a column per view
    >>> show_references(prior, runs["fsd"])                       # the prompt's references at the same views
    >>> show_seed_table(runs); show_summary_table(runs)           # per seed; per run

Every function takes `runs`, a mapping label -> Run3D (the label names the run in row labels and in the tables'
first column), and draws the runs' renders at their evaluation views (`Run3D.views`, the cameras gen-3d scores
with): rgb [V, 3, R, R] in [0, 1]. The figures are fsd2d.figures.image_grid's, shown with fsd2d.figures.show_grid;
the tables are markdown (fsd2d.figures.show_table). The metrics are gen-3d's (`Run3D.per_seed`, `Run3D.summary`):
runs on a prior without references (a Stable Diffusion model of other data) have none, and show "-".
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from fsd2d.errors import InputError
from fsd2d.figures import show_grid, show_table
from fsd2d.metrics import to_hwc
from fsd3d.outputs import depth_to_rgb
from fsd3d.priors3d import ScenePrior
from fsd3d.run import Run3D, reference_renders

__all__ = ["SUMMARY_COLUMNS", "matched", "seed_rows", "show_channels", "show_prompt_rows", "show_references",
           "show_seed_table", "show_strip", "show_summary_table", "show_views", "summary_row", "view_labels"]

# show_summary_table's columns: key of summary_row -> header
SUMMARY_COLUMNS = {
    "reached": "references reached", "which": "which", "diversity": "diversity (1 - SSIM)",
    "psnr": "PSNR to reference (dB)", "agreement": "view agreement", "holes": "holes", "matched": "matched (per seed)",
}


def matched(run: Run3D, seed: int) -> str:
    """The reference `seed`'s views resemble most (its "majority"): the variant alone when it is one of the run's
    prompt ("mushroom/parasol" -> "parasol" for 'mushroom'), else the whole name; "" for a prior without references."""
    majority = run.per_seed[seed].get("majority")
    if majority is None:
        return ""
    prompt, _, variant = majority.partition("/")
    return variant if prompt == run.config.prompt else majority


def view_labels(run: Run3D, views: Sequence[int] | None = None) -> list[str]:
    """Column labels of the evaluation views (all, or the indices `views`): their azimuths."""
    return [f"az {run.views[i].azimuth:.0f}" for i in (range(len(run.views)) if views is None else views)]


def row_label(*parts: str) -> str:
    """A row label of the non-empty parts, one per line."""
    return "\n".join(p for p in parts if p)


def show_views(runs: Mapping[str, Run3D], *, seeds: Sequence[int] | None = None, views: Sequence[int] | None = None,
               title: str = "", cell_inches: float = 1.0) -> None:
    """One row per run and seed (default: each run's seeds): the seed's RGB at the evaluation views (or at the
    indices `views`), labelled with the run's label, the seed and the reference it matched."""
    rows, labels = [], []
    for label, run in runs.items():
        for seed in run.per_seed if seeds is None else seeds:
            rgb = run.renders[seed].rgb  # [V, 3, R, R] in [0, 1]
            rows.append(to_hwc(rgb if views is None else rgb[list(views)]))
            labels.append(row_label(label, f"seed {seed}", matched(run, seed)))
    show_grid(rows, labels, view_labels(first(runs), views), title=title, cell_inches=cell_inches)


def show_channels(runs: Mapping[str, Run3D], seed: int, *, title: str = "", cell_inches: float = 1.0) -> None:
    """One seed, three rows per run: RGB, depth (bright = near, white = empty; fsd3d.outputs.depth_to_rgb) and
    opacity at the evaluation views; then the reference the seed matched in the last run, at the same views."""
    rows, labels = [], []
    for label, run in runs.items():
        r = run.renders[seed]
        rows += [to_hwc(r.rgb), depth_to_rgb(r), to_hwc(r.alpha.expand(-1, 3, -1, -1))]
        labels += [row_label(label, "rgb"), row_label(label, "depth"), row_label(label, "opacity")]
    last = list(runs.values())[-1]
    if "reference_renders" in last.per_seed[seed]:
        rows.append(to_hwc(last.per_seed[seed]["reference_renders"]))
        labels.append(row_label("reference", matched(last, seed)))
    show_grid(rows, labels, view_labels(first(runs)), title=title, cell_inches=cell_inches)


def show_references(prior: ScenePrior, run: Run3D, *, title: str = "", cell_inches: float = 1.0) -> None:
    """The references of the run's prompt (those of a prior scored against references: the embedded ones, the
    models trained on their renders), one row per variant, at the run's evaluation views on the prior's background.
    `prior`: the run's scene prior (load_scene_prior of its config)."""
    refs = reference_renders(prior, run.views)  # rgb [K, V, 3, R, R], all K references
    if refs is None:
        raise InputError(f"the prior of '{run.config.model}' has no references to show")
    names = list(prior.references.names)
    shown = [i for i, name in enumerate(names) if name.startswith(run.config.prompt + "/")]
    show_grid([to_hwc(refs.rgb[i].float()) for i in shown], [names[i].split("/")[-1] for i in shown],
              view_labels(run), title=title or f"the references of '{run.config.prompt}'", cell_inches=cell_inches)


def show_strip(runs: Mapping[str, Run3D], *, views: Sequence[int] = (0, 2), title: str = "",
               cell_inches: float = 0.9) -> None:
    """One row per run: every seed at a few evaluation views (default the first and the third: azimuth 0 and 90
    of 8 views), the seeds side by side."""
    rows = [np.concatenate([to_hwc(run.renders[s].rgb[list(views)]) for s in run.per_seed]) for run in runs.values()]
    run = first(runs)
    cols = [f"s{s} {az}" for s in run.per_seed for az in view_labels(run, views)]
    show_grid(rows, list(runs), cols, title=title, cell_inches=cell_inches)


def seed_rows(runs: Mapping[str, Run3D]) -> list[list]:
    """Per run and seed: [label, seed, matched reference, PSNR to it (dB), view agreement, holes] ("-": none)."""
    keys = ("majority", "majority_psnr", "agreement", "holes")
    return [[label, seed, *(m.get(k, "-") for k in keys)] for label, run in runs.items()
            for seed, m in run.per_seed.items()]


def show_seed_table(runs: Mapping[str, Run3D], label: str = "method") -> None:
    """`seed_rows` as a table; `label`: the header of the runs' labels."""
    show_table([label, "seed", "matched reference", "PSNR (dB)", "view agreement", "holes"], seed_rows(runs))


def summary_row(run: Run3D) -> dict:
    """A run across its seeds (SUMMARY_COLUMNS' keys): references reached ("k of n seeds") and which, the diversity
    (gen-3d's), the mean PSNR to the matched references, view agreement and holes, the variant each seed matched."""
    per, summary = list(run.per_seed.values()), run.summary

    def mean(key: str) -> float | str:
        return float(np.mean([m[key] for m in per])) if all(key in m for m in per) else "-"

    reached = summary.get("references_reached")
    return {"reached": "-" if reached is None else f"{reached} of {len(per)} seeds",
            "which": ", ".join(summary.get("reached", [])) or "-", "diversity": summary["diversity"],
            "psnr": mean("majority_psnr"), "agreement": mean("agreement"), "holes": mean("holes"),
            "matched": ", ".join(matched(run, s) for s in run.per_seed)}


def show_summary_table(runs: Mapping[str, Run3D], label: str = "method",
                       columns: Sequence[str] = ("reached", "which", "diversity", "psnr", "holes")) -> None:
    """One row per run: its label, then `columns` of `summary_row` (keys of SUMMARY_COLUMNS)."""
    unknown = sorted(set(columns) - set(SUMMARY_COLUMNS))
    if unknown:
        raise InputError(f"unknown columns {unknown}; choose from {list(SUMMARY_COLUMNS)}")
    rows = [[name, *(summary_row(run)[c] for c in columns)] for name, run in runs.items()]
    show_table([label, *(SUMMARY_COLUMNS[c] for c in columns)], rows)


def show_prompt_rows(rows: Sequence[dict]) -> None:
    """A sweep's rows per (method, prompt) with their spread over seeds, as fsdbatch.table1.per_prompt_rows gives
    them: reached and diversity with a 95 % bootstrap interval [lo, hi], PSNR, agreement and holes +- std."""
    def interval(value, ci, fmt: str) -> str:
        return "-" if value is None else f"{value:{fmt}} [{ci[0]:{fmt}}, {ci[1]:{fmt}}]"

    show_table(["method", "prompt", "seeds", "reached [95% CI]", "PSNR (dB) +- std", "agreement +- std",
                "holes +- std", "diversity [95% CI]"],
               [[r["method"], r["prompt"], r["seeds"], interval(r["reached"], r["reached_ci"], ".0f"),
                 f"{r['psnr']:.1f} +- {r['psnr_std']:.1f}", f"{r['agreement']:.2f} +- {r['agreement_std']:.2f}",
                 f"{r['holes']:.3f} +- {r['holes_std']:.3f}", interval(r["diversity"], r["diversity_ci"], ".3f")]
                for r in rows])


def first(runs: Mapping[str, Run3D]) -> Run3D:
    """The first run (whose views label the columns: the runs of one figure share their evaluation views)."""
    if not runs:
        raise InputError("no runs to show")
    return next(iter(runs.values()))
