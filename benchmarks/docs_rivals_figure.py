"""docs/images/rivals-2d.png and rivals-3d.png: the diversity rivals beside FSD and SDS on the same seeds, from the
finished sweeps of docs/results/rivals.md.

    python benchmarks/docs_rivals_figure.py [--prompt cat] [--seeds 8]

2D (outputs/batch/rivals_2d, rivals_2d_particles): one row per method, one column per seed; VSD with 4 particles
adds a row per particle (each seed's particles share its critic). 3D (outputs/batch/rivals_3d, rivals_3d_particles):
one row per method, the columns the first seeds at two evaluation views; VSD with 4 particles a row per particle.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from fsd2d.figures import image_grid

BATCH = Path("outputs/batch")


def load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255


def runs(sweep: str) -> list[Path]:
    return sorted(p / "result" for p in (BATCH / sweep).iterdir() if (p / "done.json").is_file())


def figure_2d(prompt: str, seeds: int, out: Path) -> None:
    rows, labels = [], []
    for sweep in ("rivals_2d", "rivals_2d_particles"):
        for run in runs(sweep):
            config = json.loads((run / "run.json").read_text())["config"]
            if config["prompt"] != prompt:
                continue
            particles = config["family"]["particles"]
            for method in config["methods"]:
                if method == "ddim" and particles > 1:
                    continue  # DDIM once
                for k in range(particles if method in ("vsd", "esd") else 1):
                    suffix = "" if k == 0 else f"_particle{k}"
                    rows.append(np.stack([load(run / "images" / f"{method}_seed{s}{suffix}.png") for s in range(seeds)]))
                    labels.append(method if particles == 1 else f"{method} x{particles}\nparticle {k}")
    order = ["ddim", "fsd", "sds", "vsd", "esd", "dsd"]
    keyed = sorted(zip(labels, rows), key=lambda lr: (order.index(lr[0].split()[0]), lr[0]))
    rows, labels = [r for _, r in keyed], [label for label, _ in keyed]
    image_grid(out, rows, labels, [f"seed {s}" for s in range(seeds)],
               title=f"'{prompt}' on tiny-sd, CFG 7.5, 300 steps: the same seeds through each method")


def figure_3d(seeds: int, out: Path) -> None:
    views = ("az_000", "az_090")
    rows, labels = [], []
    for sweep in ("rivals_3d", "rivals_3d_particles"):
        for run in runs(sweep):
            config = json.loads((run / "run.json").read_text())["config"]
            method, particles = config["train"]["method"], config["train"]["family"]["particles"]
            for k in range(particles):
                folder = (lambda s: run / f"seed_{s}") if k == 0 else (lambda s, k=k: run / f"seed_{s}" / f"particle_{k}")
                rows.append(np.stack([load(folder(s) / "views" / f"{v}.png") for s in range(seeds) for v in views]))
                labels.append(method if particles == 1 else f"{method} x{particles}\nparticle {k}")
    order = ["fsd", "sds", "vsd", "esd", "dsd"]
    keyed = sorted(zip(labels, rows), key=lambda lr: (order.index(lr[0].split()[0]), lr[0]))
    image_grid(out, [r for _, r in keyed], [label for label, _ in keyed],
               [f"seed {s} {v.replace('az_', 'az ')}" for s in range(seeds) for v in views],
               title="'mushroom' on tiny-sd-objects, 150 steps: the same seeds through each method (two views each)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default="cat")
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    figure_2d(args.prompt, args.seeds, Path("docs/images/rivals-2d.png"))
    figure_3d(4, Path("docs/images/rivals-3d.png"))


if __name__ == "__main__":
    main()
