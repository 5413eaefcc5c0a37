"""docs/images/gen-3d-fsd-vs-sds.png: FSD above, SDS below, same seeds, from finished gen-3d runs (one block per run,
top to bottom: e.g. FSD and SDS on Stable Diffusion, then on MVDream).

    python benchmarks/docs_gen3d_figure.py FSD_RUN/result SDS_RUN/result [MORE_RUNS ...] [--seeds 8] [--out FILE]

Each block: one row per seed (the first --seeds seeds), the 8 evaluation views (seed_S/views/az_*.png),
the row label naming the reference the seed reached.
"""
from __future__ import annotations

import argparse
import json
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
    config = json.loads((run / "run.json").read_text())["config"]
    model = "" if config["model"] == "references" else f" on {config['model']}"
    n = m["references_reached"]
    image_grid(path, rows, labels, cols, title=f"'{config['prompt']}' - {m['method']}{model}: {n} "
                                                f"reference{'' if n == 1 else 's'} reached by {len(per)} seeds (first {seeds} shown)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="finished gen-3d result folders, one block each, top to bottom")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("docs/images/gen-3d-fsd-vs-sds.png"))
    parsed = parser.parse_args()
    args, seeds, out = parsed.runs, parsed.seeds, parsed.out
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"{i}.png" for i in range(len(args))]
        for run, p in zip(args, paths):
            block(Path(run), seeds, p)
        blocks = [Image.open(p).convert("RGB") for p in paths]
        canvas = Image.new("RGB", (max(b.width for b in blocks), sum(b.height for b in blocks)), "white")
        y = 0
        for b in blocks:
            canvas.paste(b, (0, y))
            y += b.height
        canvas.save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
