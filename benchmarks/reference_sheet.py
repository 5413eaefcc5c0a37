"""Contact sheet of every reference variant and how much of the frame the references fill.

    python benchmarks/reference_sheet.py [OUT.png] [--px 64]

Writes a grid (rows: prompt/variant, columns: 4 azimuths at the evaluation elevation, radius and fov, i.e.
the middle of the default camera ranges) and prints, over all references and the 8 evaluation views at 32 px,
the fill: the larger side of the bounding box of alpha > 0.5 over the image side, and the covered area.
"""
from __future__ import annotations

import sys
import time

import torch

from fsd2d.figures import image_grid
from fsd2d.metrics import to_hwc
from fsd3d.cameras import CameraRanges
from fsd3d.references import ReferenceSet


def fill(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha [..., 1, R, R] -> (bbox larger side / R, area fraction), each [...]."""
    solid = alpha[..., 0, :, :] > 0.5
    r = solid.shape[-1]
    rows, cols = solid.any(-1), solid.any(-2)  # [..., R]
    idx = torch.arange(r)
    def extent(m):
        lo = torch.where(m, idx, r).amin(-1)
        hi = torch.where(m, idx, -1).amax(-1)
        return (hi - lo + 1).clamp(min=0)
    side = torch.maximum(extent(rows), extent(cols)).double() / r
    return side, solid.flatten(-2).double().mean(-1)


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out = args[0] if args else "outputs/reference_sheet.png"
    px = int(sys.argv[sys.argv.index("--px") + 1]) if "--px" in sys.argv else 64
    torch.set_num_threads(1)
    refs = ReferenceSet()
    r = CameraRanges()
    mid = lambda rng: 0.5 * (rng[0] + rng[1])  # noqa: E731
    at = lambda el, rad, fov: CameraRanges(elevation=(el, el), radius=(rad, rad), fov=(fov, fov))  # noqa: E731
    cams = r.evaluation_cameras(px, 4)
    sheet = refs.render(cams)
    image_grid(out, [to_hwc(sheet.rgb[k]) for k in range(len(refs))], list(refs.names),
               [f"az {c.azimuth:.0f}" for c in cams], title="references at the middle of the camera ranges")
    ev = refs.render(r.evaluation_cameras(32, 8))
    side, area = fill(ev.alpha)  # [K, V]
    for k, name in enumerate(refs.names):
        print(f"{name:22s} fill {float(side[k].mean()):.2f} (min {float(side[k].min()):.2f}) "
              f"area {float(area[k].mean()):.2f}")
    print(f"all: fill (bbox side / image side) mean {float(side.mean()):.3f}, area {float(area.mean()):.3f}; "
          f"{len(refs)} references, {sum(len(s) for s in refs.scenes)} Gaussians")
    # extremes of the camera ranges: is anything cut at the border?
    for el, rad, fov in ((r.elevation[0], r.radius[0], r.fov[0]), (r.elevation[1], r.radius[0], r.fov[0]),
                         (r.elevation[1], r.radius[1], r.fov[1])):
        a = refs.render(at(el, rad, fov).evaluation_cameras(32, 8)).alpha  # [K, V, 1, R, R]
        border = torch.cat([a[..., 0, :], a[..., -1, :], a[..., :, 0], a[..., :, -1]], -1).amax()
        print(f"elev {el:g} radius {rad:g} fov {fov:g}: fill {float(fill(a)[0].mean()):.2f}, "
              f"max border alpha {float(border):.3f}")
    t = time.perf_counter()
    for _ in range(5):
        refs.render(at(20.0, mid(r.radius), mid(r.fov)).evaluation_cameras(32, 2))
    print(f"render of all references at 2 cameras, 32 px: {(time.perf_counter() - t) / 5 * 1000:.0f} ms")


if __name__ == "__main__":
    main()
