"""What `fsd gen-3d` writes per seed: files a user can open, written in a few seconds.

    gaussians.ply         the scene (standard 3DGS layout)
    views/az_AAA.png      each evaluation view's RGB at the render size
    views.png             grid of the evaluation views: RGB, depth, opacity (+ matched reference); cells of
                          at most GRID_MAX_PX pixels (larger renders are box-downscaled)
    turntable.mp4         RGB | depth over a full turn, H.264 yuv420p (browsers and players open it);
                          turntable.gif with TurntableFormat.GIF
    metrics.json          the seed's metrics

Budget (benchmarks/bench_outputs.py): about a second per seed at 32 px on one CPU thread, and designed for
a few seconds at 512 px on a GPU: turntable frames are rendered in chunks, coloured (a viridis lookup
table), upscaled and quantised to uint8 on the render device and moved to the CPU once; matplotlib
draws only views.png. Renders of at least TURNTABLE_MIN_PX pixels are not upscaled.
"""
from __future__ import annotations

import enum
import itertools
from pathlib import Path
from typing import Iterable

import imageio.v2 as imageio
import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fsd2d import metrics
from fsd2d.figures import FIGURE_DPI, image_grid
from fsd2d.io import atomic_path, save_png, write_json
from fsd3d.cameras import Camera
from fsd3d.gaussians import GaussianScene
from fsd3d.ply import save_ply
from fsd3d.renderer import DENSE_LIMIT, RenderOutput, render_scene

TURNTABLE_FPS = 12.5  # 80 ms per frame: 36 frames turn once in 2.9 s
TURNTABLE_MIN_PX = 256  # smaller renders are upscaled (nearest) by the integer factor that reaches this
TURNTABLE_CHUNK = 12  # cameras per render call at most (fewer where the dense reference renderer needs it)
MP4_QUALITY = 8  # imageio's 0-10 scale; for libx264 crf = 51 * (1 - 8/10) ~ 10 (near-lossless on renders)
MACRO_BLOCK = 16  # H.264 macro block: MP4 frames are padded with white to multiples of this
GRID_MAX_PX = 256  # views.png: images larger than this are box-downscaled by an integer factor
GRID_MIN_INCHES = 1.4  # views.png cell size for small images (room for the labels)
DEPTH_FG = 0.05  # pixels with opacity above this have a depth; the others are drawn white

# viridis, 256 rows as matplotlib bins [0, 1], plus row 256 = white for the background
DEPTH_LUT = np.concatenate([matplotlib.colormaps["viridis"](np.arange(256))[:, :3], np.ones((1, 3))])  # [257, 3]
DEPTH_LUT_U8 = (DEPTH_LUT * 255 + 0.5).astype(np.uint8)  # [257, 3]


class TurntableFormat(str, enum.Enum):
    """The turntable's file format."""

    MP4 = "mp4"  # H.264 in yuv420p: small, quick to write, opens everywhere
    GIF = "gif"  # 256 colours per frame: larger and slower to write

    @property
    def filename(self) -> str:
        return f"turntable.{self.value}"


def export_seed(seed_dir: Path, scene: GaussianScene, rendered: RenderOutput, seed_metrics: dict,
                orbit: list[Camera], background: torch.Tensor | None, turntable: TurntableFormat) -> None:
    """Write one seed's outputs (module docstring): `rendered` holds the evaluation views; `orbit` are the
    turntable's cameras on the scene's device (the run's evaluation orbit: CameraRanges.evaluation_cameras of its
    resolved ranges, made once per run), `background` [3] the prior's."""
    save_ply(seed_dir / "gaussians.ply", scene)
    save_view_pngs(seed_dir / "views", rendered)
    save_views_figure(seed_dir / "views.png", rendered, seed_metrics)
    frames = turntable_frames(scene, orbit, background)
    save_video(seed_dir / turntable.filename, frames, TURNTABLE_FPS, turntable)
    write_json(seed_dir / "metrics.json", {k: v for k, v in seed_metrics.items() if k != "reference_renders"})


def save_view_pngs(folder: Path, rendered: RenderOutput) -> None:
    """views/az_AAA.png: each view's RGB at its render size (view k of V at azimuth 360 k / V)."""
    folder.mkdir(exist_ok=True)
    for k, im in enumerate(metrics.to_hwc(rendered.rgb)):
        save_png(folder / f"az_{round(360 * k / len(rendered.rgb)):03d}.png", im)


def save_views_figure(path: Path, rendered: RenderOutput, seed_metrics: dict) -> None:
    """views.png: rows RGB, depth, opacity (+ the matched reference's renders), one column per view."""
    rows = [metrics.to_hwc(rendered.rgb), depth_to_rgb(rendered),
            metrics.to_hwc(rendered.alpha.expand(-1, 3, -1, -1))]
    labels = ["rgb", "depth", "opacity"]
    matched = seed_metrics.get("reference_renders")
    if matched is not None:
        rows.append(metrics.to_hwc(matched))
        labels.append(f"nearest ref\n{seed_metrics['majority']}")
    rows = [shrink_to(r, GRID_MAX_PX) for r in rows]
    cell_px = max(rows[0].shape[1:3])
    n = len(rows[0])
    image_grid(path, rows, labels, [f"az {360 * k / n:.0f}" for k in range(n)],
               cell_inches=max(GRID_MIN_INCHES, cell_px / FIGURE_DPI))


def shrink_to(images: np.ndarray, max_px: int) -> np.ndarray:
    """[N, H, W, C] -> mean over k x k blocks, k the smallest integer with H/k and W/k <= max_px (blocks cut
    by the bottom / right edge average the pixels they hold); unchanged when already small enough."""
    k = -(-max(images.shape[1:3]) // max_px)
    if k == 1:
        return images
    x = torch.from_numpy(images).permute(0, 3, 1, 2)  # [N, C, H, W]
    return F.avg_pool2d(x, k, ceil_mode=True).permute(0, 2, 3, 1).numpy()  # [N, ceil(H/k), ceil(W/k), C]


def depth_lut_index(depth: torch.Tensor, alpha: torch.Tensor, per_image: bool) -> torch.Tensor:
    """Row of DEPTH_LUT per pixel [V, H, W] (int64): near = 255 (bright), far = 0, 256 (white) where
    opacity <= DEPTH_FG. depth, alpha: [V, 1, H, W]; the depth range is that of the foreground of each
    image (per_image) or of the whole batch. Bins as matplotlib's Colormap: floor(256 x), 1 -> 255."""
    d = depth[:, 0]
    fg = alpha[:, 0] > DEPTH_FG
    dims = (1, 2) if per_image else (0, 1, 2)
    inf = torch.tensor(float("inf"), dtype=d.dtype, device=d.device)
    lo = torch.where(fg, d, inf).amin(dim=dims, keepdim=True)
    hi = torch.where(fg, d, -inf).amax(dim=dims, keepdim=True)
    empty = torch.isinf(lo)  # no foreground: any range will do
    lo, hi = torch.where(empty, 0.0, lo), torch.where(empty, 1.0, hi)
    norm = ((hi - d) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)
    return torch.where(fg, (norm * 256).long().clamp_max(255), 256)


def depth_to_rgb(r: RenderOutput) -> np.ndarray:
    """Expected depth [V, 1, H, W] -> viridis [V, H, W, 3] in [0, 1] (near = bright, range over the batch),
    white where opacity <= 0.05."""
    idx = depth_lut_index(r.depth.detach().cpu().double(), r.alpha.detach().cpu().double(), per_image=False)
    return DEPTH_LUT[idx.numpy()]


def side_by_side(r: RenderOutput, scale: int) -> torch.Tensor:
    """Turntable frames RGB | depth (depth range per frame), upscaled `scale` x (nearest), on r's device:
    uint8 [C, H*scale, 2*W*scale, 3]."""
    lut = torch.from_numpy(DEPTH_LUT_U8).to(r.rgb.device)
    depth = lut[depth_lut_index(r.depth, r.alpha, per_image=True)]  # [C, H, W, 3]
    rgb = (r.rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1)  # [C, H, W, 3]
    frames = torch.cat([rgb, depth], dim=2)  # [C, H, 2W, 3]
    return frames.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)


def turntable_frames(scene: GaussianScene, cameras: list[Camera], background: torch.Tensor | None) -> np.ndarray:
    """Render the cameras (on the scene's device) in chunks -> uint8 [F, H*s, 2*W*s, 3] on the CPU, with
    s = TURNTABLE_MIN_PX // H (at least 1): small renders are enlarged for viewing, large ones are not.
    A chunk holds at most TURNTABLE_CHUNK cameras and, for the dense renderer, ~DENSE_LIMIT elements."""
    h, w = cameras[0].height, cameras[0].width
    scale = max(1, TURNTABLE_MIN_PX // h)
    chunk = min(TURNTABLE_CHUNK, max(1, DENSE_LIMIT // (len(scene) * h * w)))
    parts = []
    with torch.no_grad():
        for i in range(0, len(cameras), chunk):
            parts.append(side_by_side(render_scene(scene, cameras[i : i + chunk], background), scale))
    return torch.cat(parts).cpu().numpy()


def save_video(path: Path, frames: Iterable[np.ndarray], fps: float,
               fmt: TurntableFormat = TurntableFormat.MP4) -> None:
    """Frames (each uint8 [H, W, 3], one size) -> an MP4 (H.264, yuv420p, frames padded with white to
    multiples of 16) or a GIF, written atomically: an error or interrupt leaves no partial file."""
    path = Path(path)
    if path.suffix != f".{fmt.value}":
        raise ValueError(f"a {fmt.value} video needs a .{fmt.value} path, got {path.name}")
    if fmt is TurntableFormat.GIF:
        save_gif(path, list(frames), round(1000 / fps))
        return
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"no frames to write to {path}")
    shape = check_frame(first, None)
    with atomic_path(path, suffix=f".tmp{path.suffix}") as tmp:  # imageio picks ffmpeg by the suffix
        writer = imageio.get_writer(tmp, fps=fps, codec="libx264", quality=MP4_QUALITY, pixelformat="yuv420p",
                                    macro_block_size=MACRO_BLOCK, ffmpeg_log_level="error",
                                    output_params=["-movflags", "+faststart"])
        try:
            for frame in itertools.chain([first], frames):
                check_frame(frame, shape)
                writer.append_data(pad_to_multiple(frame, MACRO_BLOCK))
        finally:
            writer.close()  # also on errors (imageio's `with` skips it): ffmpeg exits before the file is removed


def save_gif(path: Path, frames: list[np.ndarray], ms_per_frame: int = 80) -> None:
    """Frames (each uint8 [H, W, 3], one size) -> a looping GIF, written atomically."""
    shape = None
    for frame in frames:
        shape = check_frame(frame, shape)
    if shape is None:
        raise ValueError(f"no frames to write to {path}")
    images = [Image.fromarray(f) for f in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)


def check_frame(frame: np.ndarray, shape: tuple | None) -> tuple:
    """A frame must be uint8 [H, W, 3] and, when `shape` is given, of that shape; returns its shape."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"a video frame must be uint8 [H, W, 3], got {frame.dtype} {list(frame.shape)}")
    if shape is not None and frame.shape != shape:
        raise ValueError(f"video frames must have one size: {list(frame.shape)} after {list(shape)}")
    return frame.shape


def pad_to_multiple(frame: np.ndarray, m: int) -> np.ndarray:
    """uint8 [H, W, 3] -> [ceil(H/m) m, ceil(W/m) m, 3], padded with white at the bottom and right."""
    h, w = frame.shape[:2]
    if h % m == 0 and w % m == 0:
        return frame
    return np.pad(frame, ((0, -h % m), (0, -w % m), (0, 0)), constant_values=255)
