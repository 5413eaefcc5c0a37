"""docs/images/noise-designs.png: the noise each design gives two cameras 10 degrees apart on a reference object (the
parasol mushroom, 32 px), and the second view's noise warped onto the first by depth, with their correlation on
the object; beneath, seed 0-3's scenes of a finished surface-noise sweep per design (front view), if given.

    python benchmarks/docs_noise_figure.py [outputs/batch/surface_noise]
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from fsd3d.cameras import orbit_camera  # noqa: E402
from fsd3d.metrics3d import warp_view  # noqa: E402
from fsd3d.references import reference_scene  # noqa: E402
from fsd3d.renderer import render_scene  # noqa: E402
from fsd3d.config import NoiseKind# noqa: E402
from fsd3d.train import view_points# noqa: E402

KINDS = {"fsd": "world map", "constant": "constant", "sds-annealed": "fresh (SDS)", "surface": "surface"}
RES = 32


def main() -> None:
    sweep = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    scene = reference_scene("mushroom", "parasol")
    cams = [orbit_camera(20.0, 30.0, 1.65, 43.0, RES, RES), orbit_camera(20.0, 40.0, 1.65, 43.0, RES, RES)]
    with torch.no_grad():
        out = render_scene(scene, cams, torch.ones(3))
    el_az = torch.tensor([(c.elevation, c.azimuth) for c in cams])
    cols = 3 + (4 if sweep else 0)
    fig, axes = plt.subplots(len(KINDS), cols, figsize=(1.5 * cols, 1.6 * len(KINDS)))
    for row, (kind, label) in zip(axes, KINDS.items()):
        fn = NoiseKind(kind).noise_function((3, RES, RES), 1.0, 0, 180.0, 0.5)
        noise = fn(el_az[:, 0], el_az[:, 1], out.alpha, torch.Generator().manual_seed(0), points=view_points(fn, out, cams))
        warped, mask = warp_view(noise[1], out.depth[0], out.alpha[0], cams[0], out.depth[1], out.alpha[1], cams[1])
        corr = float(torch.corrcoef(torch.stack([noise[0][:, mask].flatten(), warped[:, mask].flatten()]))[0, 1])
        images = [(noise[0][0] / 6 + 0.5).clamp(0, 1), (noise[1][0] / 6 + 0.5).clamp(0, 1),
                  ((warped[0] * mask) / 6 + 0.5).clamp(0, 1)]
        titles = ["eps, az 30", "eps, az 40", "az 40 warped to 30"]
        if sweep:
            run = next(p for p in sweep.iterdir() if p.name.startswith(f"method={kind}_prompt=mushroom"))
            for seed in range(4):
                images.append(Image.open(run / "result" / f"seed_{seed}" / "views" / "az_000.png"))
                titles.append(f"seed {seed}")
        for ax, img, title in zip(row, images, titles):
            ax.imshow(img if isinstance(img, Image.Image) else img.numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=7)
        row[0].set_ylabel(f"{label}\ncorr {corr:.2f}", fontsize=8)
    fig.suptitle("noise of two views 10 degrees apart (corr: on the object, after the warp); mushroom scenes",
                 fontsize=8)
    fig.tight_layout()
    Path("docs").mkdir(exist_ok=True)
    fig.savefig("docs/images/noise-designs.png", dpi=110)
    print("wrote docs/images/noise-designs.png")


if __name__ == "__main__":
    main()
