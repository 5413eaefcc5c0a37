"""docs/gen-3d-fsd-vs-sds.png: FSD above, SDS below, same seeds, from two finished gen-3d runs.

    python benchmarks/docs_gen3d_figure.py FSD_RUN/result SDS_RUN/result [--seeds 8] [--out docs/gen-3d-fsd-vs-sds.png]

Each block: one row per seed (the first --seeds seeds), the 8 evaluation views (seed_S/views/az_*.png),
the row label naming the reference the seed reached.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from fsd2d.figures import image_grid


def block(run: Path, seeds: int, path: Path) -> None:
    m = json.loads((run / "metrics.json").read_text())
    per = m["per_seed"]
    chosen = sorted(per, key=int)[:seeds]
    rows, labels = [], []
    for s in chosen:
        files = sorted((run / f"seed_{s}" / "views").glob("*.png"))
        rows.append(np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255 for f in files]))
        labels.append(f"seed {s}\n{per[s]['majority'].split('/')[1]}")
    cols = [f.stem.replace("az_", "az ") for f in sorted((run / f"seed_{chosen[0]}" / "views").glob("*.png"))]
    prompt = json.loads((run / "run.json").read_text())["config"]["prompt"]
    image_grid(path, rows, labels, cols, title=f"'{prompt}' - {m['method']}: {m['references_reached']} references "
                                                f"reached by {len(per)} seeds (first {seeds} shown)")


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    seeds = int(sys.argv[sys.argv.index("--seeds") + 1]) if "--seeds" in sys.argv else 8
    out = Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else Path("docs/gen-3d-fsd-vs-sds.png")
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / "a.png", Path(tmp) / "b.png"]
        for run, p in zip(args[:2], paths):
            block(Path(run), seeds, p)
        a, b = (Image.open(p).convert("RGB") for p in paths)
        canvas = Image.new("RGB", (max(a.width, b.width), a.height + b.height), "white")
        canvas.paste(a, (0, 0))
        canvas.paste(b, (0, a.height))
        canvas.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
