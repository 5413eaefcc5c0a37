"""Gaussian rendering (fsd3d.renderer): projection, compositing, gradients, gsplat parity (cameras: test_cameras.py).

CPU tests use the dense PyTorch reference; the gsplat comparison needs CUDA and gsplat and is
skipped otherwise.
"""
from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from fsd2d.errors import InputError
from fsd3d.cameras import CameraRanges, orbit_camera, sample_cameras, stack_cameras
from fsd3d.renderer import render, render_gsplat, render_reference

F64 = torch.float64
HAS_GSPLAT = importlib.util.find_spec("gsplat") is not None


def _identity_quats(n: int, dtype=F64) -> torch.Tensor:
    return torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=dtype).repeat(n, 1)  # [n, 4]


def _render_one(cam, means, scales, opacities, colors, background=None, quats=None):
    """Render a list of Gaussians (float64) from one camera; returns images without the C dim."""
    n = means.shape[0]
    quats = _identity_quats(n) if quats is None else quats
    viewmats, Ks = stack_cameras([cam])
    out = render_reference(means, quats, scales, opacities, colors, viewmats, Ks, cam.width, cam.height, background)
    return out.rgb[0], out.alpha[0, 0], out.depth[0, 0]  # [3, H, W], [H, W], [H, W]


def _argmax_2d(img: torch.Tensor) -> tuple[int, int]:
    idx = int(torch.argmax(img))
    return idx // img.shape[1], idx % img.shape[1]  # (row, col)


# ----------------------------------------------------------------------------- projection


def test_small_gaussian_peaks_at_projected_pixel():
    cam = orbit_camera(0.0, 0.0, 2.0, 60.0, 64, 64, dtype=F64)
    p = torch.tensor([0.1, -0.2, 0.15], dtype=F64)
    # By hand: the camera sits at (2, 0, 0) with right = +y, down = -z, forward = -x, so
    # p_cam = (p_y, -p_z, 2 - p_x) = (-0.2, -0.15, 1.9); fx = fy = 32 / tan(30 deg), c = (32, 32).
    f = 32.0 / math.tan(math.radians(30.0))
    u, v = 32.0 + f * (-0.2 / 1.9), 32.0 + f * (-0.15 / 1.9)  # (26.17, 27.62)
    uvw = cam.K @ (cam.viewmat @ torch.cat([p, torch.ones(1, dtype=F64)]))[:3]
    torch.testing.assert_close(uvw[:2] / uvw[2], torch.tensor([u, v], dtype=F64), atol=1e-9, rtol=0)
    _, alpha, _ = _render_one(
        cam, p[None], torch.full((1, 3), 0.01, dtype=F64), torch.tensor([0.9], dtype=F64), torch.ones(1, 3, dtype=F64)
    )
    # Pixel (row i, col j) has its centre at (j + 0.5, i + 0.5): the peak is the pixel containing (u, v).
    assert _argmax_2d(alpha) == (int(v), int(u)) == (27, 26)


def test_camera_conventions_up_and_right():
    small = torch.full((1, 3), 0.02, dtype=F64)
    one, white = torch.tensor([0.9], dtype=F64), torch.ones(1, 3, dtype=F64)
    H = W = 32
    for azimuth in (0.0, 90.0, -135.0):
        cam = orbit_camera(0.0, azimuth, 2.0, 50.0, W, H, dtype=F64)
        row, col = _argmax_2d(_render_one(cam, torch.tensor([[0.0, 0.0, 0.4]], dtype=F64), small, one, white)[1])
        assert row < H // 2 and col in (W // 2 - 1, W // 2)  # +z is up in the image, on the centre column
    # Azimuth 0 camera on +x looking at -x with +z up: its right is world +y.
    cam0 = orbit_camera(0.0, 0.0, 2.0, 50.0, W, H, dtype=F64)
    row, col = _argmax_2d(_render_one(cam0, torch.tensor([[0.0, 0.4, 0.0]], dtype=F64), small, one, white)[1])
    assert col >= W // 2 and row in (H // 2 - 1, H // 2)
    # Azimuth 90 camera on +y looking at -y: its right is world -x, so +x appears on the left.
    cam90 = orbit_camera(0.0, 90.0, 2.0, 50.0, W, H, dtype=F64)
    row, col = _argmax_2d(_render_one(cam90, torch.tensor([[0.4, 0.0, 0.0]], dtype=F64), small, one, white)[1])
    assert col < W // 2
    # From above (elevation 30) +z still projects upwards.
    cam30 = orbit_camera(30.0, 20.0, 2.0, 50.0, W, H, dtype=F64)
    row, _ = _argmax_2d(_render_one(cam30, torch.tensor([[0.0, 0.0, 0.4]], dtype=F64), small, one, white)[1])
    assert row < H // 2


# ----------------------------------------------------------------------------- compositing


def _two_on_axis(opacity: float, far_first: bool):
    """A red Gaussian at camera depth 1.7 and a green one at 2.3, both on the optical axis."""
    means = torch.tensor([[0.3, 0.0, 0.0], [-0.3, 0.0, 0.0]], dtype=F64)  # camera on +x at distance 2
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=F64)
    if far_first:
        means, colors = means.flip(0), colors.flip(0)
    return means, torch.full((2, 3), 0.15, dtype=F64), torch.full((2,), opacity, dtype=F64), colors


@pytest.mark.parametrize("far_first", [False, True])
def test_nearer_opaque_gaussian_wins(far_first):
    cam = orbit_camera(0.0, 0.0, 2.0, 50.0, 33, 33, dtype=F64)  # odd size: pixel 16 is centred on the axis
    means, scales, opac, colors = _two_on_axis(0.995, far_first)
    rgb, alpha, depth = _render_one(cam, means, scales, opac, colors, torch.tensor([0.0, 0.0, 1.0], dtype=F64))
    centre = rgb[:, 16, 16]
    # T after the near one is 0.005; the far one would bring it to 2.5e-5 <= 1e-4: the early stop drops it
    # and the background shows through the remaining 0.005.
    torch.testing.assert_close(centre, torch.tensor([0.995, 0.0, 0.005], dtype=F64), atol=1e-12, rtol=0)
    assert depth[16, 16].item() == pytest.approx(1.7, abs=0.01)
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0


def test_semi_transparent_golden_values_and_background():
    cam = orbit_camera(0.0, 0.0, 2.0, 50.0, 33, 33, dtype=F64)
    means, _, _, colors = _two_on_axis(0.5, far_first=True)
    scales = torch.full((2, 3), 0.03, dtype=F64)  # small: the corners see nothing
    o1, o2 = 0.5, 0.6
    opac = torch.tensor([o2, o1], dtype=F64)  # far (green) first in the arrays
    bg = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    rgb, alpha, depth = _render_one(cam, means, scales, opac, colors, bg)
    # At the centre pixel both Gaussians sit exactly under the pixel centre: alpha_i = o_i.
    w1, w2 = o1, (1 - o1) * o2
    expected_rgb = torch.tensor([w1, w2, (1 - o1) * (1 - o2)], dtype=F64)
    torch.testing.assert_close(rgb[:, 16, 16], expected_rgb, atol=1e-12, rtol=0)
    assert alpha[16, 16].item() == pytest.approx(w1 + w2, abs=1e-12)
    assert depth[16, 16].item() == pytest.approx((w1 * 1.7 + w2 * 2.3) / (w1 + w2), abs=1e-12)
    assert 1.7 < depth[16, 16].item() < 2.3
    assert ((alpha >= 0) & (alpha <= 1)).all()
    # Background where there is nothing: alpha 0, depth 0, rgb = bg exactly.
    torch.testing.assert_close(rgb[:, 0, 0], bg, atol=0, rtol=0)
    assert alpha[0, 0].item() == 0.0 and depth[0, 0].item() == 0.0


@pytest.mark.numerics
def test_behind_camera_is_dropped_and_batch_matches_single():
    cams = [orbit_camera(10.0, azimuth, 2.0, 50.0, 16, 16, dtype=F64) for azimuth in (0.0, 180.0)]
    behind = torch.tensor([[3.0, 0.0, 0.0]], dtype=F64)  # behind the azimuth-0 camera, far in front of the other
    args = (behind, _identity_quats(1), torch.full((1, 3), 0.5, dtype=F64), torch.tensor([0.9], dtype=F64),
            torch.ones(1, 3, dtype=F64))
    viewmats, Ks = stack_cameras(cams)
    out = render_reference(*args, viewmats, Ks, 16, 16)
    assert out.alpha[0].max().item() == 0.0 and out.alpha[1].max().item() > 0.5
    single = render_reference(*args, viewmats[1:], Ks[1:], 16, 16)
    # float64, 2 cameras in one call or 1: the projection's 4-term products may round in another order
    # (<= 2 gamma_4 * 32 px ~ 1e-14 px), and one Gaussian's pixel moves by at most ~1/px per px
    torch.testing.assert_close(out.rgb[1:], single.rgb, atol=1e-12, rtol=0)


# ------------------------------------------------------------------------------ early stop


def _brute_force_composite(uv, conics, depth, opac, colors, bg, width, height):
    """gsplat's rasterize_to_pixels kernel as a per-pixel Python loop (float64): front to back, skip
    alpha < 1/255, next_T = T (1 - alpha); stop WITHOUT compositing once next_T <= 1e-4.
    -> rgb [3, H, W], alpha [H, W], number of pixels that stopped early."""
    order = sorted(range(len(depth)), key=lambda i: depth[i])
    rgb, acc, stopped = torch.zeros(3, height, width, dtype=F64), torch.zeros(height, width, dtype=F64), 0
    for row in range(height):
        for col in range(width):
            T, pix = 1.0, [0.0, 0.0, 0.0]
            for i in order:
                dx, dy = col + 0.5 - uv[i][0], row + 0.5 - uv[i][1]
                (a, b), (_, c) = conics[i]
                alpha = min(0.999, opac[i] * math.exp(-(0.5 * a * dx * dx + 0.5 * c * dy * dy + b * dx * dy)))
                if alpha < 1.0 / 255.0:
                    continue
                next_T = T * (1.0 - alpha)
                if next_T <= 1e-4:
                    stopped += 1
                    break
                pix = [p + alpha * T * ci for p, ci in zip(pix, colors[i])]
                T = next_T
            rgb[:, row, col] = torch.tensor(pix, dtype=F64) + T * bg
            acc[row, col] = 1.0 - T
    return rgb, acc, stopped


def test_early_stop_two_opaque_gaussians():
    """alpha 0.95 then 0.999 at the centre pixel: T would drop to 5e-5 <= 1e-4, so gsplat stops there and
    the second Gaussian is not composited (without the stop the centre would be (0.95, 0.04995, 5e-5))."""
    cam = orbit_camera(0.0, 0.0, 2.0, 50.0, 33, 33, dtype=F64)
    means, scales, _, colors = _two_on_axis(0.0, far_first=False)
    opac = torch.tensor([0.95, 0.9999], dtype=F64, requires_grad=True)
    colors = colors.clone().requires_grad_(True)
    bg = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    for dense in (False, True):
        viewmats, Ks = stack_cameras([cam])
        out = render_reference(means, _identity_quats(2), scales, opac, colors, viewmats, Ks, 33, 33, bg, dense=dense)
        want = torch.tensor([0.95, 0.0, 0.05], dtype=F64)
        torch.testing.assert_close(out.rgb[0, :, 16, 16], want, atol=1e-12, rtol=0)
        assert out.alpha[0, 0, 16, 16].item() == pytest.approx(0.95, abs=1e-12)
        assert out.depth[0, 0, 16, 16].item() == pytest.approx(1.7, abs=1e-12)
        # The dropped Gaussian gets no gradient from that pixel; the kept one does.
        g_col, g_op = torch.autograd.grad(out.rgb[0, 1, 16, 16] + out.alpha[0, 0, 16, 16], (colors, opac))
        assert g_col[1].abs().max().item() == 0.0 and g_op[1].item() == 0.0 and g_op[0].item() != 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_early_stop_matches_brute_force_loop(monkeypatch, seed):
    """A pile of nearly opaque Gaussians (opacities 0.85-0.9999, two of them on the axis): the box and dense
    compositing both equal a per-pixel loop written after gsplat's kernel. Without the stop, 8-10 pixels
    of these scenes differ by 1e-4 to 4e-4."""
    import fsd3d.renderer as render_module
    from fsd3d.renderer import _screen_space, _to_camera

    g = torch.Generator().manual_seed(seed)
    n, res = 14, 24
    means = torch.cat([torch.tensor([[0.2, 0.0, 0.0], [-0.2, 0.0, 0.0]], dtype=F64),
                       (torch.rand(n - 2, 3, generator=g, dtype=F64) - 0.5) * torch.tensor([0.8, 0.3, 0.3], dtype=F64)])
    scales = torch.rand(n, 3, generator=g, dtype=F64) * 0.05 + 0.08
    quats = torch.randn(n, 4, generator=g, dtype=F64)
    opac = torch.cat([torch.tensor([0.9999, 0.9999], dtype=F64),
                      torch.rand(n - 2, generator=g, dtype=F64) * 0.15 + 0.85])
    colors = torch.rand(n, 3, generator=g, dtype=F64)
    bg = torch.tensor([0.2, 0.4, 0.6], dtype=F64)
    cam = orbit_camera(10.0, 20.0, 2.0, 50.0, res, res, dtype=F64)
    viewmats, Ks = stack_cameras([cam])

    means_c, covars_c = _to_camera(means, quats / quats.norm(dim=-1, keepdim=True), scales, viewmats)
    _, depth, uv, conics, _ = _screen_space(means_c, covars_c, Ks, res, res, 0.01)
    rgb_bf, alpha_bf, stopped = _brute_force_composite(uv[0].tolist(), conics[0].tolist(), depth[0].tolist(),
                                                       opac.tolist(), colors.tolist(), bg, res, res)
    assert stopped >= 8 and (alpha_bf < 0.5).any()  # the scene reaches the stop, and has empty pixels

    def no_fallback(*args):
        raise AssertionError("the box compositing fell back to the dense pass")

    with monkeypatch.context() as m:
        m.setattr(render_module, "_composite_dense", no_fallback)
        boxes = render_reference(means, quats, scales, opac, colors, viewmats, Ks, res, res, bg)
    dense = render_reference(means, quats, scales, opac, colors, viewmats, Ks, res, res, bg, dense=True)
    for out in (boxes, dense):
        torch.testing.assert_close(out.rgb[0], rgb_bf, atol=1e-10, rtol=0)
        torch.testing.assert_close(out.alpha[0, 0], alpha_bf, atol=1e-10, rtol=0)


# ------------------------------------------------------------------------------- gradients


def test_gradcheck_reference():
    cam = orbit_camera(20.0, 30.0, 2.0, 50.0, 6, 6, dtype=F64)
    viewmats, Ks = stack_cameras([cam])
    # Large Gaussians near the axis with distinct depths: every per-pixel alpha lies in ~[0.03, 0.6],
    # far from the 1/255 cut and the 0.999 clamp, and the depth order is stable under perturbation.
    means = torch.tensor([[0.1, 0.05, 0.0], [-0.25, -0.1, 0.1], [0.3, 0.0, -0.05]], dtype=F64)
    scales = torch.tensor([[0.6, 0.5, 0.7], [0.5, 0.8, 0.6], [0.7, 0.6, 0.5]], dtype=F64)
    quats = torch.tensor([[0.9, 0.1, -0.2, 0.3], [0.7, -0.3, 0.2, 0.1], [1.0, 0.0, 0.3, -0.2]], dtype=F64)
    opac = torch.tensor([0.5, 0.6, 0.4], dtype=F64)
    colors = torch.tensor([[0.9, 0.1, 0.2], [0.2, 0.8, 0.3], [0.1, 0.3, 0.9]], dtype=F64)
    bg = torch.tensor([0.2, 0.3, 0.4], dtype=F64)
    inputs = [t.clone().requires_grad_(True) for t in (means, quats, scales, opac, colors)]

    def fn(m, q, s, o, c):
        out = render_reference(m, q, s, o, c, viewmats, Ks, 6, 6, bg)
        return out.rgb, out.alpha, out.depth

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_reference_gradients_are_the_same_bits_on_every_run():
    """With 2 threads, five backward passes of one scene give the same bits (fsd3d/renderer.py, "Gradients"): the
    densification strategy thresholds means2d.grad, so a rerun, a resumed run or a seed in a batch must see the same
    bits. Gathering with x[idx] (whose backward adds float32 values with atomics in thread order) made 19 of 19
    reruns of this scene differ (~5700 box entries x 11 columns per camera: above the 32768 where it goes parallel)."""
    from fsd3d.gaussians import GaussianScene

    g = torch.Generator().manual_seed(0)
    scene = GaussianScene.init_ball(400, 0.4, g, scale=0.1)
    viewmats, Ks = stack_cameras([orbit_camera(10.0, a, 1.6, 45.0, 16, 16) for a in (0.0, 120.0)])
    weights = torch.randn(2, 3, 16, 16, generator=g)

    def grads():
        scene.zero_grad()
        out = render_reference(scene.means, scene.normalized_quats(), scene.scales(), scene.opacities(),
                               scene.colors(), viewmats, Ks, 16, 16, torch.ones(3))
        out.means2d.retain_grad()
        ((out.rgb * weights).sum() + 0.1 * out.depth.sum()).backward()
        return [out.means2d.grad] + [p.grad.clone() for p in scene.parameters()]

    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    try:
        first = grads()
        for _ in range(4):
            assert all(torch.equal(a, b) for a, b in zip(first, grads()))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.numerics
@pytest.mark.parametrize("scale,opacity_spread,res", [(0.03, 2.0, 32), (0.08, 1.0, 24)])
def test_box_compositing_equals_dense(monkeypatch, scale, opacity_spread, res):
    """The default (box-culled) compositing gives the dense pass's images and gradients, to float32 rounding;
    scenes with small Gaussians (boxes of a few pixels) and some crossing the border or nearly opaque."""
    import fsd3d.renderer as render_module
    from fsd3d.gaussians import GaussianScene

    g = torch.Generator().manual_seed(0)
    scene = GaussianScene.init_ball(600, 0.6, g, scale=scale)
    with torch.no_grad():
        scene.opacity_logits.copy_(torch.randn(600, generator=g) * opacity_spread + 1.0)
        scene.log_scales.add_(torch.randn(600, 3, generator=g) * 0.4)
    viewmats, Ks = stack_cameras([orbit_camera(20.0, a, 1.4, 50.0, res, res) for a in (0.0, 130.0)])
    weights = torch.rand(2, 3, res, res, generator=g)

    def run(dense):
        scene.zero_grad()
        out = render_reference(scene.means, scene.normalized_quats(), scene.scales(), scene.opacities(),
                               scene.colors(), viewmats, Ks, res, res, torch.ones(3), dense=dense)
        ((out.rgb * weights).sum() + out.alpha.sum() + 0.1 * out.depth.sum()).backward()
        return out, [p.grad.clone() for p in scene.parameters()]

    def no_fallback(*args):
        raise AssertionError("the box compositing fell back to the dense pass")

    with monkeypatch.context() as m:
        m.setattr(render_module, "_composite_dense", no_fallback)
        boxes, g_boxes = run(dense=False)
    dense, g_dense = run(dense=True)
    # float32 transmittance products and colour sums of <= 600 Gaussians per pixel in another order: rtol 1e-5 is
    # probable_atol(600, float32) (tests/numerics.py), the worst case 2 gamma_600 = 7e-5 (measured: < 1e-6)
    for name in ("rgb", "alpha", "depth"):
        torch.testing.assert_close(getattr(boxes, name), getattr(dense, name), rtol=1e-5, atol=2e-6)
    for a, b in zip(g_boxes, g_dense):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item())
    assert (dense.alpha > 0.5).any() and (dense.alpha < 0.01).any()  # both covered and empty pixels


# ---------------------------------------------------------------------------- input checks


def test_render_input_errors():
    cam = orbit_camera(0.0, 0.0, 2.0, 50.0, 8, 8)
    viewmats, Ks = stack_cameras([cam])
    good = {
        "means": torch.zeros(2, 3), "quats": _identity_quats(2, torch.float32), "scales": torch.ones(2, 3),
        "opacities": torch.full((2,), 0.5), "colors": torch.ones(2, 3), "viewmats": viewmats, "Ks": Ks,
        "width": 8, "height": 8,
    }
    out = render(**good)  # CPU: auto picks the reference
    ref = render_reference(**good)
    torch.testing.assert_close(out.rgb, ref.rgb, atol=0, rtol=0)
    assert out.rgb.shape == (1, 3, 8, 8) and out.alpha.shape == out.depth.shape == (1, 1, 8, 8)
    with pytest.raises(InputError, match=r"\(2, 3, 1\)"):
        render_reference(**{**good, "means": torch.zeros(2, 3, 1)})
    with pytest.raises(InputError, match=r"opacities.*\(2, 1\)"):
        render_reference(**{**good, "opacities": torch.ones(2, 1)})
    with pytest.raises(InputError, match=r"Ks"):
        render_reference(**{**good, "Ks": Ks.repeat(2, 1, 1)})
    with pytest.raises(InputError, match=r"background"):
        render_reference(**good, background=torch.ones(4))
    with pytest.raises(InputError, match=r"dtype"):
        render_reference(**{**good, "colors": torch.ones(2, 3, dtype=F64)})
    with pytest.raises(ValueError, match=r"auto, reference, gsplat"):
        render(**good, backend="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(InputError):
            render_gsplat(**good)


def test_empty_scene_shows_background():
    cam = orbit_camera(0.0, 0.0, 2.0, 50.0, 4, 4)
    viewmats, Ks = stack_cameras([cam])
    bg = torch.tensor([0.1, 0.2, 0.3])
    out = render_reference(torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, 3),
                           viewmats, Ks, 4, 4, bg)
    torch.testing.assert_close(out.rgb, bg.view(1, 3, 1, 1).expand(1, 3, 4, 4))
    assert out.alpha.abs().max() == 0 and out.depth.abs().max() == 0


# ------------------------------------------------------------------------------ gsplat parity


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or not HAS_GSPLAT, reason="needs CUDA and gsplat")
@pytest.mark.parametrize("scene", ["translucent", "opaque"])
def test_gsplat_matches_reference(scene):
    """Forward and gradients of gsplat vs the reference on a random float32 scene.

    "translucent": opacities 0.05-0.3, which makes gsplat's box culling immaterial even for versions that size
    the box at 3 sigma (0.3 * exp(-4.5) < 1/255). "opaque": a clustered pile with opacities 0.9-0.9999, where
    ~13% of the pixels accumulate alpha > 0.999 and the T <= 1e-4 early stop acts (on the CPU, dropping the stop
    moves rgb by up to 6e-3 there); it assumes a gsplat whose projection sizes the box from the opacity and the
    1/255 cut (1.5.3 does).
    The remaining differences are float32 rounding, and for "opaque" the rare pixel whose T lands within
    rounding of 1e-4 and stops one Gaussian apart on the two sides.
    Tolerances: rgb/alpha atol 2e-3 on all but 0.1% of pixels, mean abs difference <= 1e-4; depth atol 1e-2
    where alpha > 0.05 (same 0.1% allowance); gradients: relative L2 error <= 2e-2 for means, colors, opacities.
    """
    device = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    N = 300
    opaque = scene == "opaque"
    means = (torch.randn(N, 3, generator=g) * (0.15 if opaque else 0.25)).to(device)
    quats = torch.randn(N, 4, generator=g).to(device)
    scales = (torch.rand(N, 3, generator=g) * 0.06 + (0.03 if opaque else 0.02)).to(device)
    opac = (torch.rand(N, generator=g) * 0.0999 + 0.9 if opaque else torch.rand(N, generator=g) * 0.25 + 0.05).to(device)
    colors = torch.rand(N, 3, generator=g).to(device)
    cams = sample_cameras(3, CameraRanges(), torch.Generator().manual_seed(1), 48, 40, device=device)
    viewmats, Ks = stack_cameras(cams)
    bg = torch.tensor([0.2, 0.4, 0.6], device=device)
    wr, wa, wd = (torch.randn(3, *s, generator=g).to(device) for s in ((3, 40, 48), (1, 40, 48), (1, 40, 48)))

    with torch.no_grad():  # one depth mask for both backends: pixels the reference sees as covered
        ref = render_reference(means, quats, scales, opac, colors, viewmats, Ks, 48, 40, bg)
        mask = (ref.alpha > 0.05).float()
        if opaque:  # the scene does exercise the stop: a fair part of the pixels is nearly opaque
            assert (ref.alpha > 0.999).float().mean() > 0.1

    def run(fn):
        leaves = [t.clone().requires_grad_(True) for t in (means, colors, opac)]
        out = fn(leaves[0], quats, scales, leaves[2], leaves[1], viewmats, Ks, 48, 40, bg)
        loss = (out.rgb * wr).sum() + (out.alpha * wa).sum() + (out.depth * wd * mask).sum()
        loss.backward()
        return out, [t.grad for t in leaves]

    def assert_mostly_close(a, b, atol):
        diff = (a - b).abs()
        far = diff > atol
        assert far.float().mean().item() <= 1e-3, f"{far.sum().item()} of {diff.numel()} beyond {atol}"
        return diff

    out_g, grads_g = run(render_gsplat)
    out_r, grads_r = run(render_reference)
    for name in ("rgb", "alpha"):
        diff = assert_mostly_close(getattr(out_g, name), getattr(out_r, name), 2e-3)
        assert diff.mean().item() <= 1e-4, f"{name}: mean abs difference {diff.mean().item():.2e}"
    visible = mask.bool()
    assert visible.float().mean() > 0.1  # the scene covers a fair part of the images
    assert_mostly_close(out_g.depth[visible], out_r.depth[visible], 1e-2)
    for name, a, b in zip(("means", "colors", "opacities"), grads_g, grads_r):
        rel = ((a - b).norm() / b.norm().clamp(min=1e-12)).item()
        assert rel < 2e-2, f"d loss / d {name}: relative error {rel:.2e}"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or not HAS_GSPLAT, reason="needs CUDA and gsplat")
def test_gsplat_early_stop_two_opaque_gaussians():
    """gsplat's kernel and the reference stop at the same Gaussian: alpha 0.95 then 0.999 on the axis leave the
    centre pixel at 0.95 red + 0.05 background (the far green one dropped), and the images agree everywhere."""
    device = torch.device("cuda")
    cam = orbit_camera(0.0, 0.0, 2.0, 50.0, 33, 33, device=device)
    means, scales, _, colors = (t.float().to(device) for t in _two_on_axis(0.0, far_first=False))
    opac = torch.tensor([0.95, 0.9999], device=device)
    viewmats, Ks = stack_cameras([cam])
    bg = torch.tensor([0.0, 0.0, 1.0], device=device)
    args = (means, _identity_quats(2, torch.float32).to(device), scales, opac, colors, viewmats, Ks, 33, 33, bg)
    out_g, out_r = render_gsplat(*args), render_reference(*args)
    expected = torch.tensor([0.95, 0.0, 0.05], device=device)
    torch.testing.assert_close(out_g.rgb[0, :, 16, 16], expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(out_r.rgb[0, :, 16, 16], expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(out_g.rgb, out_r.rgb, atol=1e-3, rtol=0)
    torch.testing.assert_close(out_g.alpha, out_r.alpha, atol=1e-3, rtol=0)
