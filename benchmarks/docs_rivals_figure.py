"""docs/images/rivals-2d.png and rivals-3d.png: the diversity rivals beside FSD and SDS on the same seeds, from the
finished sweeps of docs/results/rivals.md.

    python benchmarks/docs_rivals_figure.py [--prompt cat] [--prompt-3d mushroom] [--seeds 8] [--figures 2d 3d mvdream]

2D (outputs/batch/rivals_2d, rivals_2d_particles): one row per method, one column per seed; VSD with 4 particles
adds a row per particle (each seed's particles share its critic). 3D (outputs/batch/rivals_3d, rivals_3d_particles
on tiny-sd-objects; rivals_3d_mvdream on tiny-mvdream, rivals-3d-mvdream.png): one row per method, the columns the
first seeds at two evaluation views; VSD with 4 particles a row per particle.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from fsd2d.figures import image_grid
from fsd2d.folders import particle_dir, seed_dir

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
                    images = [run / "images" / f"{method}_seed{s}{suffix}.png" for s in range(seeds)]
                    rows.append(np.stack([load(path) for path in images]))
                    labels.append(method if particles == 1 else f"{method} x{particles}\nparticle {k}")
    order = ["ddim", "fsd", "sds", "vsd", "esd", "dsd"]
    keyed = sorted(zip(labels, rows), key=lambda lr: (order.index(lr[0].split()[0]), lr[0]))
    rows, labels = [r for _, r in keyed], [label for label, _ in keyed]
    image_grid(out, rows, labels, [f"seed {s}" for s in range(seeds)],
               title=f"'{prompt}' on tiny-sd, CFG 7.5, 300 steps: the same seeds through each method")


def figure_3d(prompt: str, seeds: int, out: Path, model: str, sweeps: tuple[str, ...]) -> None:
    views = ("az_000", "az_090")
    rows, labels = [], []
    for sweep in sweeps:
        for run in runs(sweep):
            config = json.loads((run / "run.json").read_text())["config"]
            if (config["prompt"], config["model"]) != (prompt, model):
                continue
            method, particles = config["train"]["method"], config["train"]["family"]["particles"]
            for k in range(particles):
                def folder(s: int, k: int = k) -> Path:  # particle 0 is the seed's own folder
                    return particle_dir(run, s, k) if k else seed_dir(run, s)
                rows.append(np.stack([load(folder(s) / "views" / f"{v}.png") for s in range(seeds) for v in views]))
                labels.append(method if particles == 1 else f"{method} x{particles}\nparticle {k}")
    order = ["fsd", "sds", "vsd", "esd", "dsd"]
    keyed = sorted(zip(labels, rows), key=lambda lr: (order.index(lr[0].split()[0]), lr[0]))
    image_grid(out, [r for _, r in keyed], [label for label, _ in keyed],
               [f"seed {s} {v.replace('az_', 'az ')}" for s in range(seeds) for v in views],
               title=f"'{prompt}' on {model}, 150 steps: the same seeds through each method (two views each)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", default="cat")
    parser.add_argument("--prompt-3d", default="mushroom")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--figures", nargs="+", choices=("2d", "3d", "mvdream"), default=("2d", "3d", "mvdream"))
    args = parser.parse_args()
    if "2d" in args.figures:
        figure_2d(args.prompt, args.seeds, Path("docs/images/rivals-2d.png"))
    if "3d" in args.figures:
        figure_3d(args.prompt_3d, 4, Path("docs/images/rivals-3d.png"), "tiny-sd-objects",
                  ("rivals_3d", "rivals_3d_particles"))
    if "mvdream" in args.figures:
        figure_3d(args.prompt_3d, 4, Path("docs/images/rivals-3d-mvdream.png"), "tiny-mvdream", ("rivals_3d_mvdream",))


if __name__ == "__main__":
    main()
