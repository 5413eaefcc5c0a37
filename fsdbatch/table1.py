"""Table 1 from finished batch runs: DDIM images vs SDS vs FSD, over many prompts x 4 seeds.

Rows: one per (space, method): `2D` rows from compare-2d runs (DDIM images and the distilled images),
`3D` rows from gen-3d runs. Columns, averaged over prompts:
- ground truth on the embedded priors: the fraction of seeds that reached distinct set images / references
  (mode coverage), the PSNR to the nearest set image / reached reference, cross-view agreement (3D),
  holes (3D);
- weight-free diversity across seeds (1 - SSIM on matched images / views);
- with real backbones (fsd2d.backbone_metrics), when the user points to weights on disk: CLIP score,
  Inception Score (per prompt, averaged) and CROSS-FID (seeds {0, 1} vs {2, 3}, per prompt, averaged).
Without weights those three columns are left empty and one line says how to enable them.
3D runs also get one row per prompt with each number's spread over the seeds (`fsd3d.metrics3d.seed_spread`:
std over seeds for PSNR, agreement and holes; a bootstrap interval for the references reached and the
diversity, the latter recomputed from the saved evaluation views): `table1_per_prompt.md` / `.csv`.

Unlike `fsd gather`, a damaged run (a file missing, truncated or lacking a field) is an InputError naming
the file, not skipped: a Table 1 row averaged over fewer prompts than the sweep has would be misleading.

This module computes the rows; fsdbatch.table1_files writes them (table1.md, table1.csv and the per-prompt pair).
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fsd2d import backbone_metrics as bm
from fsd2d.errors import InputError
from fsd2d.folders import TABLE1, claim
from fsd2d.io import check_output_dir, read_object
from fsd2d.metrics import PSNR_CAP_DB
from fsdbatch.checks import clip
from fsdbatch.layout import Done, SweepFolder, SweepRun, seed_dir
from fsdbatch.table1_files import to_markdown, write_table  # noqa: F401 (re-exported: `fsd table1` writes)

COMMANDS = ("compare-2d", "gen-3d")  # the sweeps Table 1 reads
VIEWS = "views"  # a gen-3d seed's evaluation views (fsd3d.outputs)
IMAGES = "images"  # compare-2d's final images, <method>_seed<S>.png (fsd2d.compare)


@dataclass
class PromptResult:
    """One run's numbers for one (space, method, prompt): what a Table 1 row averages over prompts."""

    run: str  # the run folder (for messages)
    coverage: float | None  # distinct set images / references reached per seed
    psnr: float | None  # PSNR to the nearest set image (2D) / the majority reference (3D), capped, seed mean
    agreement: float | None
    holes: float | None
    diversity: float
    images: dict[int, list[Path]]  # seed -> image files (2D: the final image; 3D: the evaluation views)
    spread: dict | None = None  # 3D: fsd3d.metrics3d.seed_spread over the run's seeds


MALFORMED = (KeyError, TypeError, AttributeError, ValueError, IndexError, ZeroDivisionError)


def read_json(path: Path) -> dict:
    try:
        return read_object(path)
    except InputError as e:
        raise InputError(f"{e}; rerun that run") from None


def malformed(path: Path, e: Exception) -> InputError:
    """A field missing from, or of the wrong kind in, a run's JSON file."""
    what = f"has no field {clip(str(e))}" if isinstance(e, KeyError) else \
        f"is malformed ({type(e).__name__}: {clip(str(e))})"
    return InputError(f"{path} {what}; rerun that run")


def defined(v) -> float | None:
    """A metric that may be undefined (the diversity of one seed): JSON's null, or an older run's "nan" -> None
    (left out of the averages); a number -> float; anything else is malformed (TypeError)."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise TypeError(f"expected a number or null, got a {type(v).__name__}")
    v = float(v)
    return v if math.isfinite(v) else None


def capped(v) -> float:
    return min(float(v), PSNR_CAP_DB)  # runs written before the cap (fsd2d.metrics) stored an identical image's as "inf"


def collect(outs: list[Path]) -> dict[tuple[str, str], dict[str, PromptResult]]:
    """(space, method) -> prompt -> result, from the finished runs listed in each folder's sweep.json.

    One run per (space, method, prompt): two (a folder given twice, or runs that differ in other settings)
    are an InputError, never silently averaged together.
    """
    groups: dict[tuple[str, str], dict[str, PromptResult]] = defaultdict(dict)
    for out in outs:
        sweep = SweepFolder.open(Path(out), ("command", "runs"), ("folder",))
        if sweep.command not in COMMANDS:
            continue
        for run, done in sweep.finished():
            prompt, results = run_results(run, done)
            for key, result in results:
                if prompt in groups[key]:
                    raise InputError(f"two runs give {key[0]} {key[1]} on '{prompt}': {groups[key][prompt].run} and "
                                     f"{result.run}; table1 takes one run per prompt and method")
                groups[key][prompt] = result
    return groups


def run_results(run: SweepRun, done: Done) -> tuple[str, list[tuple[tuple[str, str], PromptResult]]]:
    """(the prompt, ((space, method), its PromptResult) for each method) of one finished run."""
    record = read_json(done.run_record)
    m = read_json(done.metrics)
    try:
        prompt, command = str(record["config"]["prompt"]), record["command"]
    except MALFORMED as e:
        raise malformed(done.run_record, e) from None
    try:
        return prompt, prompt_results(command, m, run.path, done.outputs)
    except MALFORMED as e:
        raise malformed(done.metrics, e) from None


def prompt_results(command: str, m: dict, run_dir: Path, result: Path) -> list[tuple[tuple[str, str], PromptResult]]:
    """((space, method), its PromptResult) for each method of one finished run, from its metrics.json `m`."""
    if command == "compare-2d":
        return [(("2D", method), result_2d(method, e, run_dir, result)) for method, e in m["methods"].items()]
    per, method = m["per_seed"], m["method"]
    if not isinstance(method, str):
        raise TypeError(f"'method' should be a name, got a {type(method).__name__}")
    return [(("3D", method), result_3d(m, per, run_dir, result))]


def result_2d(method: str, e: dict, run_dir: Path, result: Path) -> PromptResult:
    """One method of a compare-2d run (`e`: its entry of metrics.json's methods)."""
    seeds = [p["seed"] for p in e["per_seed"]]
    truth = "modes_reached" in e
    return PromptResult(
        str(run_dir),
        e["modes_reached"] / len(seeds) if truth else None,
        float(np.mean([capped(p["nearest_psnr"]) for p in e["per_seed"]])) if truth else None,
        None, None, defined(e["diversity"]),
        {s: [result / IMAGES / f"{method}_seed{s}.png"] for s in seeds})


def result_3d(m: dict, per: dict, run_dir: Path, result: Path) -> PromptResult:
    """A gen-3d run (`m`: its metrics.json, `per`: its per_seed entry); its images are each seed's evaluation views."""
    truth = "references_reached" in m
    images = {int(s): sorted((seed_dir(result, s) / VIEWS).glob("*.png")) for s in per}
    return PromptResult(
        str(run_dir),
        m["references_reached"] / len(per) if truth else None,
        float(np.mean([capped(v["majority_psnr"]) for v in per.values()])) if truth else None,
        float(np.mean([v["agreement"] for v in per.values()])) if truth else None,
        float(np.mean([v["holes"] for v in per.values()])) if truth else None,
        defined(m["diversity"]),
        images, spread_3d(per, images) if truth else None)


def spread_3d(per: dict, images: dict[int, list[Path]]) -> dict:
    """seed_spread over a gen-3d run's seeds, the diversity from its evaluation views (8-bit PNGs)."""
    from fsd3d.metrics3d import pairwise_dissimilarity_3d, seed_spread

    seeds = sorted(images)
    pairwise = None
    if len(seeds) > 1 and all(images[s] for s in seeds):
        rgb = torch.stack([load_images(images[s]) for s in seeds])  # [S, V, 3, R, R]
        pairwise = pairwise_dissimilarity_3d(rgb)
    return seed_spread([per[str(s)] for s in seeds], pairwise)


def load_images(files: list[Path]) -> torch.Tensor:
    """PNG files -> [N, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.stack([load_image(f) for f in files])).permute(0, 3, 1, 2)


def load_image(path: Path) -> np.ndarray:
    """One PNG -> [H, W, 3] float32 in [0, 1]; an InputError naming the file when it is missing or damaged."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except OSError as e:  # PIL's UnidentifiedImageError is one
        raise InputError(f"{path} is missing or not an image ({type(e).__name__}); rerun that run") from None


def backbone_columns(space: str, by_prompt: dict[str, PromptResult], clip_model: str, inception_weights: str
                     ) -> dict[str, float | None]:
    """Per prompt: CLIP score over all images, IS over all images, and (3D only, seeds 0-3 present)
    CROSS-FID between the renders of seeds {0, 1} and {2, 3}; each averaged over prompts.

    2D has one image per seed, so CROSS-FID (2 vs 2 images) would be meaningless there: left empty."""
    clip, isc, fid = [], [], []
    logits = bm.inception_feature(inception_weights, "logits_unbiased")
    pool = bm.inception_feature(inception_weights, "2048")
    for prompt, r in by_prompt.items():
        files = [f for s in sorted(r.images) for f in r.images[s]]
        ims = load_images(files)
        clip.append(bm.clip_score(ims, [prompt] * len(ims), clip_model))
        isc.append(bm.inception_score(ims, logits)[0])
        if space == "3D" and {0, 1, 2, 3} <= set(r.images):
            a = load_images([f for s in (0, 1) for f in r.images[s]])
            b = load_images([f for s in (2, 3) for f in r.images[s]])
            fid.append(bm.cross_fid(a, b, pool))
    return {"clip": mean(clip), "inception_score": mean(isc), "cross_fid": mean(fid)}


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def table1(outs: list[Path], clip_model: str | None = None, inception_weights: str | None = None,
           out: Path | None = None) -> tuple[list[dict], str | None]:
    """Rows of Table 1 (each value averaged over prompts) and, when the backbone columns are skipped,
    the one line that says why and how to enable them. `out` (where write_table will write) is checked
    first, so that nothing is computed for a table that cannot be written. No finished run: InputError."""
    if out is not None:
        claim(out, TABLE1)
        check_output_dir(out)
    for folder in outs:
        if not Path(folder).is_dir():
            raise InputError(f"{folder} is not a folder (give the out folders of `fsd batch` runs)")
    why = bm.missing(clip_model, inception_weights)
    groups = collect(outs)
    if not groups:
        raise InputError(f"no finished compare-2d or gen-3d runs under {', '.join(map(str, outs))}")
    rows = []
    for (space, method), by_prompt in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "ddim", kv[0][1])):
        rs = list(by_prompt.values())
        row = {"space": space, "method": method, "prompts": len(rs),
               **{c: mean(getattr(r, c) for r in rs) for c in ("coverage", "agreement", "holes", "diversity")},
               "nearest_psnr": mean(r.psnr for r in rs), "clip": None, "inception_score": None, "cross_fid": None}
        if not why:
            row |= backbone_columns(space, by_prompt, clip_model, inception_weights)
        row["per_prompt"] = per_prompt_rows(space, method, by_prompt)  # not a column: table1_per_prompt.md
        rows.append(row)
    note = None if not why else f"CLIP, IS and CROSS-FID skipped ({'; '.join(why)}): {bm.ENABLE_HINT}"
    return rows, note


def per_prompt_rows(space: str, method: str, by_prompt: dict[str, PromptResult]) -> list[dict]:
    """One row per prompt of a 3D (space, method) with the spread over seeds (std, or a 95 % bootstrap
    interval); [] for runs without ground truth."""
    rows = []
    for prompt, r in sorted(by_prompt.items()):
        if r.spread is not None:
            sp = r.spread
            rows.append({"space": space, "method": method, "prompt": prompt, "seeds": sp["seeds"],
                         "reached": int(sp["references_reached"]),
                         "reached_ci": [int(round(v)) for v in sp["references_reached_ci"]],
                         "psnr": sp["majority_psnr"], "psnr_std": sp["majority_psnr_std"],
                         "agreement": sp["agreement"], "agreement_std": sp["agreement_std"],
                         "holes": sp["holes"], "holes_std": sp["holes_std"],
                         "diversity": sp.get("diversity"), "diversity_ci": sp.get("diversity_ci")})
    return rows
