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
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fsd2d import backbone_metrics as bm
from fsd2d.io import atomic_path

PSNR_CAP_DB = 100.0  # exact copies of a set image have PSNR = inf (or ~160 dB from rounding): counted as 100

COLUMNS = ("space", "method", "prompts", "coverage", "nearest_psnr", "agreement", "holes", "diversity",
           "clip", "inception_score", "cross_fid")


@dataclass
class Group:
    """What one (space, method) row collects, per prompt."""

    coverage: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    agreement: list[float] = field(default_factory=list)
    holes: list[float] = field(default_factory=list)
    diversity: list[float] = field(default_factory=list)
    images: dict[str, dict[int, list[Path]]] = field(default_factory=dict)  # prompt -> seed -> image files


def collect(outs: list[Path]) -> dict[tuple[str, str], Group]:
    """Read every finished compare-2d / gen-3d run (done.json present) under the batch folders."""
    groups: dict[tuple[str, str], Group] = defaultdict(Group)
    for out in outs:
        for done in sorted(Path(out).glob("*/done.json")):
            result = done.parent / "result"
            run = json.loads((result / "run.json").read_text())
            m = json.loads((result / "metrics.json").read_text())
            prompt = run["config"]["prompt"]
            if run["command"] == "compare-2d":
                for method, e in m["methods"].items():
                    g = groups[("2D", method)]
                    n = len(e["per_seed"])
                    if "modes_reached" in e:
                        g.coverage.append(e["modes_reached"] / n)
                        g.psnr.append(float(np.mean([min(float(p["nearest_psnr"]), PSNR_CAP_DB) for p in e["per_seed"]])))
                    g.diversity.append(e["diversity"])
                    g.images.setdefault(prompt, {}).update(
                        {p["seed"]: [result / "images" / f"{method}_seed{p['seed']}.png"] for p in e["per_seed"]})
            elif run["command"] == "gen-3d":
                g = groups[("3D", m["method"])]
                per = m["per_seed"]
                if "references_reached" in m:
                    g.coverage.append(m["references_reached"] / len(per))
                    g.psnr.append(float(np.mean([s["majority_psnr"] for s in per.values()])))
                    g.agreement.append(float(np.mean([s["agreement"] for s in per.values()])))
                    g.holes.append(float(np.mean([s["holes"] for s in per.values()])))
                g.diversity.append(m["diversity"])
                g.images.setdefault(prompt, {}).update(
                    {int(s): sorted((result / f"seed_{s}" / "views").glob("*.png")) for s in per})
    return groups


def load_images(files: list[Path]) -> torch.Tensor:
    """PNG files -> [N, 3, H, W] in [0, 1]."""
    arrays = [np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0 for f in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def backbone_columns(g: Group, clip_model: str, inception_weights: str) -> dict[str, float]:
    """CLIP score over all images, IS per prompt (averaged), CROSS-FID seeds {0,1} vs {2,3} per prompt."""
    clip, isc, fid = [], [], []
    logits = bm.inception_feature(inception_weights, "logits_unbiased")
    pool = bm.inception_feature(inception_weights, "2048")
    for prompt, by_seed in g.images.items():
        files = [f for s in sorted(by_seed) for f in by_seed[s]]
        ims = load_images(files)
        clip.append(bm.clip_score(ims, [prompt] * len(ims), clip_model))
        isc.append(bm.inception_score(ims, logits)[0])
        a = [f for s in (0, 1) for f in by_seed.get(s, [])]
        b = [f for s in (2, 3) for f in by_seed.get(s, [])]
        if len(a) >= 2 and len(b) >= 2:
            fid.append(bm.cross_fid(load_images(a), load_images(b), pool))
    mean = lambda v: float(np.mean(v)) if v else None  # noqa: E731
    return {"clip": mean(clip), "inception_score": mean(isc), "cross_fid": mean(fid)}


def table1(outs: list[Path], clip_model: str | None = None, inception_weights: str | None = None
           ) -> tuple[list[dict], str | None]:
    """Rows of Table 1 and, when the backbone columns are skipped, the one line that says why and how."""
    why = bm.missing(clip_model, inception_weights)
    groups = collect(outs)
    mean = lambda v: float(np.mean(v)) if v else None  # noqa: E731
    rows = []
    for (space, method), g in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "ddim", kv[0][1])):
        row = {"space": space, "method": method, "prompts": len(g.images), "coverage": mean(g.coverage),
               "nearest_psnr": mean(g.psnr), "agreement": mean(g.agreement), "holes": mean(g.holes),
               "diversity": mean(g.diversity), "clip": None, "inception_score": None, "cross_fid": None}
        if not why:
            row |= backbone_columns(g, clip_model, inception_weights)
        rows.append(row)
    note = None if not why else f"CLIP, IS and CROSS-FID skipped ({'; '.join(why)}): {bm.ENABLE_HINT}"
    return rows, note


def to_markdown(rows: list[dict]) -> str:
    cell = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_table(out: Path, rows: list[dict], note: str | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    text = to_markdown(rows) + (f"\n{note}\n" if note else "")
    with atomic_path(out / "table1.md") as tmp:
        tmp.write_text(text)
    with atomic_path(out / "table1.csv") as tmp:
        tmp.write_text(",".join(COLUMNS) + "\n" + "".join(
            ",".join("" if r[c] is None else str(r[c]) for c in COLUMNS) + "\n" for r in rows))
