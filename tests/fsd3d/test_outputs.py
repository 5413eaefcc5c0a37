"""gen-3d outputs (fsd3d.outputs): MP4 / GIF turntables, atomic writes, depth colours, views.png size."""
import json

import imageio.v2 as imageio
import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from fsd2d.figures import image_grid
from fsd3d import outputs
from fsd3d.cameras import CameraRanges
from fsd3d.gaussians import GaussianScene
from fsd3d.config import Gen3DConfig
from fsd3d.run import load_scene_prior
from fsd3d.config import Train3DConfig
from fsd3d.outputs import (GRID_MAX_PX, TURNTABLE_FPS, TurntableFormat, depth_to_rgb, export_seed, save_video,
                           save_views_figure, turntable_frames)
from fsd3d.renderer import RenderOutput, render_scene

pytestmark = pytest.mark.usefixtures("one_thread")


def block_frames(n: int = 6, h: int = 40, w: int = 56) -> np.ndarray:
    """uint8 [n, h, w, 3]: 8x8-pixel blocks of random colours (like upscaled renders), shifted per frame."""
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(h // 8 + n, w // 8, 3), dtype=np.uint8)
    big = colours.repeat(8, axis=0).repeat(8, axis=1)  # [(h/8 + n) * 8, w, 3]
    return np.stack([big[8 * i : 8 * i + h] for i in range(n)])


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # imageio-ffmpeg's reader leaves a pipe
def test_mp4_is_h264_with_every_frame_close_to_the_input(tmp_path):
    """40 x 56 frames are padded (white) to 48 x 64; H.264 at crf ~10 keeps random-colour blocks within 4/255 on average
    (measured ~3: YUV 4:2:0 rounding plus the codec)."""
    frames = block_frames()
    path = tmp_path / "turntable.mp4"
    save_video(path, frames, TURNTABLE_FPS)
    with imageio.get_reader(path) as reader:
        meta = reader.get_meta_data()
        back = np.stack([frame for frame in reader.iter_data()])  # list(reader) fails: len() is inf
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p") and meta["fps"] == TURNTABLE_FPS
    assert back.shape == (6, 48, 64, 3)
    err = np.abs(back[:, :40, :56].astype(float) - frames).mean(axis=(1, 2, 3))  # per frame
    assert err.max() < 4.0, err
    assert back[:, 40:].min() > 240 and back[:, :, 56:].min() > 240  # the padding is white
    assert [p.name for p in tmp_path.iterdir()] == ["turntable.mp4"]  # no temporary file left


def test_gif_on_request_has_every_frame(tmp_path):
    path = tmp_path / "turntable.gif"
    save_video(path, block_frames(5), TURNTABLE_FPS, TurntableFormat.GIF)
    with Image.open(path) as im:
        assert im.n_frames == 5 and im.size == (56, 40) and im.info["duration"] == 80


@pytest.mark.parametrize("fmt", list(TurntableFormat))
def test_interrupted_write_leaves_no_partial_file(tmp_path, fmt):
    path = tmp_path / fmt.filename
    path.write_bytes(b"previous")

    def frames():
        yield from block_frames(3)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_video(path, frames(), TURNTABLE_FPS, fmt)
    assert [p.name for p in tmp_path.iterdir()] == [fmt.filename] and path.read_bytes() == b"previous"


def test_bad_frames_and_paths_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\]"):
        save_video(tmp_path / "t.mp4", block_frames().astype(np.float32), TURNTABLE_FPS)
    with pytest.raises(ValueError, match="one size"):
        save_video(tmp_path / "t.mp4", [block_frames()[0], block_frames(h=48)[0]], TURNTABLE_FPS)
    with pytest.raises(ValueError, match=r"\.gif path"):
        save_video(tmp_path / "t.mp4", block_frames(), TURNTABLE_FPS, TurntableFormat.GIF)
    assert list(tmp_path.iterdir()) == []


def test_depth_colours_equal_matplotlib_viridis():
    """The lookup table gives exactly matplotlib's viridis (near = bright), white where opacity <= 0.05."""
    g = torch.Generator().manual_seed(0)
    depth = torch.rand(3, 1, 9, 11, generator=g) + 1.0
    alpha = torch.rand(3, 1, 9, 11, generator=g)
    got = depth_to_rgb(RenderOutput(torch.zeros(3, 3, 9, 11), alpha, depth))
    d, fg = depth[:, 0].double(), alpha[:, 0] > 0.05
    lo, hi = d[fg].min(), d[fg].max()
    want = matplotlib.colormaps["viridis"](((hi - d) / (hi - lo)).clamp(0, 1).numpy())[..., :3]
    want[~fg.numpy()] = 1.0
    np.testing.assert_array_equal(got, want)


def grid_size(tmp_path, res: int) -> tuple[int, int]:
    """Pixel size of views.png for 3 views of res x res (flat images: fast to draw and compress)."""
    r = RenderOutput(torch.full((3, 3, res, res), 0.5), torch.ones(3, 1, res, res), torch.ones(3, 1, res, res))
    save_views_figure(tmp_path / f"views_{res}.png", r, {})
    with Image.open(tmp_path / f"views_{res}.png") as im:
        return im.size


def test_views_png_cells_are_capped(tmp_path, monkeypatch):
    """3 views x 3 rows: 512 px renders are drawn downscaled, in GRID_MAX_PX cells as 256 px renders."""
    drawn = []
    monkeypatch.setattr(outputs, "image_grid", lambda path, rows, *a, **k: drawn.append(rows) or image_grid(
        path, rows, *a, **k))
    w512, h512 = grid_size(tmp_path, 512)
    assert [r.shape for r in drawn[0]] == [(3, GRID_MAX_PX, GRID_MAX_PX, 3)] * 3
    np.testing.assert_allclose(drawn[0][0], 0.5)  # box average of a flat image
    assert (w512, h512) == grid_size(tmp_path, GRID_MAX_PX)
    assert w512 < 3 * (GRID_MAX_PX + 20) + 150 and h512 < 3 * (GRID_MAX_PX + 20) + 100
    assert grid_size(tmp_path, 32)[0] < w512  # small renders keep the default cell size


def ball(n: int = 40) -> GaussianScene:
    return GaussianScene.init_ball(n, 0.4, torch.Generator().manual_seed(0), opacity=0.6)


def test_turntable_enlarges_small_renders_only():
    """32 px -> 8x nearest (256 px, left half = the RGB render); 260 px -> unchanged."""
    ranges = CameraRanges()
    scene = ball()
    bg = torch.ones(3)
    cams = ranges.evaluation_cameras(32, 2)
    frames = turntable_frames(scene, cams, bg)
    assert frames.shape == (2, 256, 512, 3) and frames.dtype == np.uint8
    rgb = (render_scene(scene, cams, bg).rgb.detach().permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
    assert np.abs(frames[:, ::8, :256:8].astype(int) - rgb).max() <= 1
    assert turntable_frames(ball(4), ranges.evaluation_cameras(260, 2), bg).shape == (2, 260, 520, 3)


def test_export_seed_writes_the_requested_turntable(tmp_path):
    config = Gen3DConfig(resolution=16, turntable=TurntableFormat.GIF, turntable_frames=4,
                         train=Train3DConfig(cameras=CameraRanges()))
    prior = load_scene_prior(config)
    scene = ball()
    rendered = render_scene(scene, config.train.cameras.evaluation_cameras(16), prior.background_tensor(torch.device("cpu")))
    export_seed(tmp_path, scene, rendered, {"agreement": 1.0}, config.train.cameras.evaluation_cameras(16, 4),
                prior.background_tensor(torch.device("cpu")), config.turntable)
    assert {p.name for p in tmp_path.iterdir()} == {"gaussians.ply", "views", "views.png", "turntable.gif",
                                                    "metrics.json"}
    assert len(list((tmp_path / "views").glob("az_*.png"))) == config.eval_views
    with Image.open(tmp_path / "turntable.gif") as im:
        assert im.n_frames == 4 and im.size == (2 * 256, 256)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"agreement": 1.0}
