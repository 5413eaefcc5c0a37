"""Gaussian scene (activations, SH), the 3DGS .ply format, and the noise functions eps(c) of Section 4."""
import math

import numpy as np
import pytest
import torch

from fsd2d.errors import InputError
from fsd3d.gaussians import SH_C0, SH_C1, GaussianScene
from fsd3d.noise import ConstantNoise, RandomNoise, WorldMapNoise
from fsd3d.ply import load_ply, property_names, save_ply
from numerics import TEST_THREADS

D, H, W = 4, 16, 16  # small prior space for the noise tests
THETA = 60.0  # -> world map 48 x 96


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny tensors: one intra-op thread is ~50x faster than two on a busy shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    yield
    torch.set_num_threads(n)


def random_scene(n=7, sh_degree=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return GaussianScene.from_tensors(r(n, 3), r(n, 3), r(n, 4), r(n), r(n, 3), r(n, 3, 3) if sh_degree else None)


def raw(scene):
    return {k: v.detach().clone() for k, v in scene.state_dict().items()}


def read_header(path):
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    return data[:end].decode("ascii").splitlines(), end


def assert_one_line_input_error(path, match):
    with pytest.raises(InputError, match=match) as e:
        load_ply(path)
    assert "\n" not in str(e.value)


# ---- Gaussian scene ------------------------------------------------------------------------------
def test_activations_and_sh0_colour():
    s = random_scene()
    assert torch.equal(s.scales(), torch.exp(s.log_scales))
    assert torch.all((s.opacities() > 0) & (s.opacities() < 1))
    assert torch.allclose(s.normalized_quats().norm(dim=-1), torch.ones(len(s)))
    assert torch.equal(s.colors(), torch.clamp_min(0.5 + SH_C0 * s.sh0, 0.0))
    assert torch.equal(s.colors(torch.randn(len(s), 3)), s.colors())  # degree 0 ignores the view


def test_sh1_zero_rest_equals_sh0_and_matches_3dgs_basis():
    s0 = random_scene(sh_degree=0)
    s1 = GaussianScene.from_tensors(s0.means, s0.log_scales, s0.quats, s0.opacity_logits, s0.sh0, torch.zeros(len(s0), 3, 3))
    dirs = torch.randn(2, len(s0), 3)
    assert torch.allclose(s1.colors(dirs), s0.colors().expand(2, -1, -1), atol=1e-7)
    assert torch.allclose(s1.colors(dirs[0]), s0.colors(), atol=1e-7)
    # 3DGS eval_sh degree 1: C0 sh[0] - C1 y sh[1] + C1 z sh[2] - C1 x sh[3], then + 0.5
    sh0, rest = torch.tensor([[0.1, -0.2, 0.3]]), torch.tensor([[[0.2, 0.1, 0.0], [0.3, -0.1, 0.2], [-0.4, 0.5, 0.1]]])
    one = GaussianScene.from_tensors(torch.zeros(1, 3), torch.zeros(1, 3), torch.tensor([[1.0, 0, 0, 0]]), torch.zeros(1), sh0, rest)
    x, y, z = 0.6, -0.48, 0.64  # a unit vector
    want = 0.5 + SH_C0 * sh0 - SH_C1 * y * rest[:, 0] + SH_C1 * z * rest[:, 1] - SH_C1 * x * rest[:, 2]
    assert torch.allclose(one.colors(torch.tensor([[x, y, z]]) * 3.0), want.clamp_min(0), atol=1e-6)  # normalised
    with pytest.raises(InputError, match="view_dirs"):
        one.colors()


@pytest.mark.parametrize("degree", [0, 1])
def test_colours_clamped_at_zero_only_as_gsplat(degree):
    """3DGS and gsplat clamp 0.5 + SH at 0 only: colours above 1 stay (and keep their gradient), below 0 are 0.
    Compared with gsplat's PyTorch SH reference (cuda/_torch_impl.py) followed by its clamp_min(+ 0.5, 0)."""
    n = 6
    sh0 = torch.tensor([[3.0, -3.0, 0.0], [1.0, 2.0, -0.5]]).repeat(3, 1)  # [6, 3]: 0.5 + C0 sh0 = 1.35, -0.35, ...
    rest = torch.randn(n, 3, 3, generator=torch.Generator().manual_seed(1)) if degree else None
    s = GaussianScene.from_tensors(torch.zeros(n, 3), torch.zeros(n, 3), torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                                   torch.zeros(n), sh0, rest)
    dirs = torch.randn(n, 3, generator=torch.Generator().manual_seed(2))
    c = s.colors(dirs)
    assert c.max().item() > 1.3 and c.min().item() == 0.0  # above 1 kept, below 0 clamped
    if degree == 0:
        assert c[0, 0].item() == pytest.approx(0.5 + SH_C0 * 3.0, abs=1e-6)  # 1.346, was clamped to 1
    c.sum().backward()
    assert s.sh0.grad[0, 0].item() == pytest.approx(SH_C0, abs=1e-7)  # the above-1 colour still learns
    gsplat_impl = pytest.importorskip("gsplat.cuda._torch_impl")
    coeffs = torch.cat([s.sh0[:, None], s.sh_rest], dim=1) if degree else s.sh0[:, None]  # [N, K + 1, 3]
    want = torch.clamp_min(gsplat_impl._spherical_harmonics(degree, dirs, coeffs.detach()) + 0.5, 0.0)
    torch.testing.assert_close(c.detach(), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("init", ["init_ball", "init_sphere"])
def test_init_deterministic_and_in_place(init):
    make = lambda: getattr(GaussianScene, init)(500, 0.8, torch.Generator().manual_seed(3), sh_degree=1)  # noqa: E731
    a, b = make(), make()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    r = a.means.norm(dim=-1)
    assert torch.all(r <= 0.8 + 1e-5)
    if init == "init_sphere":
        assert torch.allclose(r, torch.full_like(r, 0.8), atol=1e-5)
    else:
        assert 0.55 < r.median().item() < 0.7  # uniform in volume: median radius 0.8 * 2^(-1/3) = 0.635
    assert torch.all((a.opacities() >= 0.1 - 1e-6) & (a.opacities() <= 0.5))
    assert torch.all(a.scales() < 0.1 * 0.8)
    assert torch.allclose(a.colors(torch.randn(500, 3)), torch.full((500, 3), 0.5))
    with pytest.raises(InputError):
        GaussianScene.init_ball(10, 1.0, torch.Generator(), sh_degree=3)


# ---- PLY -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("degree", [0, 1])
def test_ply_round_trip_is_exact_and_standard(tmp_path, degree):
    s = random_scene(n=11, sh_degree=degree)
    path = tmp_path / "scene.ply"
    save_ply(path, s)
    back = load_ply(path)
    assert back.sh_degree == degree
    a, b = raw(s), raw(back)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    lines, end = read_header(path)
    assert lines[:3] == ["ply", "format binary_little_endian 1.0", "element vertex 11"]
    props = [ln.split() for ln in lines[3:-1]]
    assert all(p[:2] == ["property", "float"] for p in props)
    names = [p[2] for p in props]
    rest = [f"f_rest_{i}" for i in range(9)] if degree else []
    assert names == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *rest,
                     "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert names == property_names(degree)
    table = np.frombuffer(path.read_bytes()[end:], dtype="<f4").reshape(11, len(names))
    assert np.all(table[:, 3:6] == 0)  # normals
    assert np.array_equal(table[:, names.index("opacity")], s.opacity_logits.detach().numpy())
    if degree:  # channel-major: f_rest_0..2 are the 3 red coefficients, then green, then blue
        assert np.array_equal(table[:, 9:12], s.sh_rest[:, :, 0].detach().numpy())
        assert np.array_equal(table[:, 15:18], s.sh_rest[:, :, 2].detach().numpy())


def handmade_ply(path, names, types=None, n=3, extra_bytes=0):
    types = types or {}
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property {types.get(k, 'float')} {k}" for k in names] + ["end_header"]
    dtype = np.dtype([(k, {"float": "<f4", "double": "<f8", "uchar": "u1"}[types.get(k, "float")]) for k in names])
    path.write_bytes(("\n".join(header) + "\n").encode() + np.zeros(n, dtype).tobytes() + b"\0" * extra_bytes)
    return path


def test_ply_broken_files_raise_one_line_input_error(tmp_path):
    good = tmp_path / "good.ply"
    save_ply(good, random_scene(n=5))
    data = good.read_bytes()
    (tmp_path / "trunc.ply").write_bytes(data[:-7])
    assert_one_line_input_error(tmp_path / "trunc.ply", "truncated")
    (tmp_path / "cut_header.ply").write_bytes(data[:40])
    assert_one_line_input_error(tmp_path / "cut_header.ply", "end_header")
    (tmp_path / "notes.txt").write_text("hello, I am not a point cloud\n")
    assert_one_line_input_error(tmp_path / "notes.txt", "not a PLY")
    assert_one_line_input_error(tmp_path / "missing.ply", "cannot read")

    names = property_names(0)
    no_opacity = [k for k in names if k != "opacity"]
    assert_one_line_input_error(handmade_ply(tmp_path / "no_op.ply", no_opacity), "missing vertex property 'opacity'")
    assert_one_line_input_error(handmade_ply(tmp_path / "dbl.ply", names, {"x": "double"}), "'x' is double")
    assert_one_line_input_error(handmade_ply(tmp_path / "long.ply", names, extra_bytes=4 * len(names)), "wrong vertex count")
    bad_rest = names[:9] + [f"f_rest_{i}" for i in range(45)] + names[9:]
    assert_one_line_input_error(handmade_ply(tmp_path / "deg3.ply", bad_rest), "45 f_rest")
    (tmp_path / "ascii.ply").write_bytes(data.replace(b"binary_little_endian", b"ascii", 1))
    assert_one_line_input_error(tmp_path / "ascii.ply", "not supported")
    # extra non-float properties a viewer added are fine; the 3DGS ones load
    ok = handmade_ply(tmp_path / "extra.ply", names + ["red"], {"red": "uchar"})
    assert len(load_ply(ok)) == 3


def test_ply_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "scene.ply"
    save_ply(path, random_scene(n=4))
    before = path.read_bytes()
    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("fsd3d.ply.os.fsync", disk_full)
    with pytest.raises(OSError):
        save_ply(path, random_scene(n=9))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["scene.ply"]


# ---- World-map noise -----------------------------------------------------------------------------
def wm(beta=1.0, seed=0, **kw):
    return WorldMapNoise(D, H, W, beta=beta, seed=seed, theta_deg=THETA, **kw)


def t(*v):
    return torch.tensor(v, dtype=torch.float64)


def test_world_map_size_and_centred_patch():
    n = wm()
    assert (n.map_height, n.map_width) == (48, 96)
    assert n.world_map.shape == (D, 48, 96) and n.padded_map.shape == (D, 48 + H, 96)
    assert (WorldMapNoise(4, 64, 64).map_height, WorldMapNoise(4, 64, 64).map_width) == (64, 128)  # Theta = 180
    for r, c in [(0, 0), (24, 50), (47, 95), (7, 3)]:  # elevation 90 - 180 r / Hb, azimuth 360 c / Wb
        p = n.patch(t(90 - 180 * r / 48), t(360 * c / 96))[0]
        assert torch.equal(p[:, H // 2, W // 2], n.world_map[:, r, c])  # the camera's cell is the centre
    p = n.patch(t(0.0), t(0.0))[0]  # horizon, azimuth 0: rows 16..31, columns -8..7 (wrapped)
    assert torch.equal(p, n.world_map[:, 16:32][:, :, torch.arange(-8, 8) % 96])


def test_world_map_deterministic_and_periodic_in_azimuth():
    n = wm()
    el, az = t(10.0, -45.0, 80.0), t(33.3, 200.0, -170.0)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    assert torch.equal(n(el, az, None, g1), n(el, az, None, g2))  # beta = 1: the fresh noise plays no part
    assert torch.equal(n.fixed(el, az), wm().fixed(el, az))  # same seed, same map
    assert not torch.equal(n.fixed(el, az), wm(seed=1).fixed(el, az))
    assert torch.equal(n.patch(el, az), n.patch(el, az + 360.0))
    assert torch.equal(n.patch(el, az), n.patch(el, az - 720.0))
    assert torch.equal(n.patch(t(5.0, 5.0), t(179.9, 359.9)), n.patch(t(5.0, 5.0), t(-180.1, -0.1)))
    # just either side of the seam (0 deg): columns continue through it, shifted by one cell
    k = 360 / 96
    a, b = n.patch(t(0.0), t(-k))[0], n.patch(t(0.0), t(0.0))[0]
    assert torch.equal(a[:, :, 1:], b[:, :, :-1])


@pytest.mark.parametrize("k", [1, 3, 7])
def test_nearby_cameras_give_shifted_overlapping_patches(k):
    n = wm()
    az0, el0 = 37.0, 12.0  # not on a rounding boundary
    p1 = n.patch(t(el0), t(az0))[0]
    p2 = n.patch(t(el0), t(az0 + 360 / 96 * k))[0]  # k cells east
    assert torch.equal(p1[:, :, k:], p2[:, :, :-k])
    assert not torch.equal(p1, p2)
    p3 = n.patch(t(el0 - 180 / 48 * k), t(az0))[0]  # k cells lower (rows grow downwards from the top pole)
    assert torch.equal(p1[:, k:, :], p3[:, :-k, :])


def test_poles_are_full_patches_and_rows_do_not_wrap():
    n = wm()
    top, bottom = n.patch(t(90.0), t(0.0))[0], n.patch(t(-90.0), t(0.0))[0]
    assert top.shape == bottom.shape == (D, H, W)
    assert torch.equal(top[:, H // 2:], n.world_map[:, : H // 2][:, :, torch.arange(-8, 8) % 96])
    assert torch.equal(bottom[:, : H // 2], n.world_map[:, -(H // 2):][:, :, torch.arange(-8, 8) % 96])
    rows, _ = n.patch_index(t(90.0, -90.0), t(0.0, 0.0))
    assert set(rows[0].tolist()).isdisjoint(rows[1].tolist())
    with pytest.raises(InputError, match="elevation"):
        n.patch(t(91.0), t(0.0))


def test_beta_zero_is_fresh_noise_and_beta_half_blends():
    el, az = torch.linspace(-80, 80, 6), torch.linspace(0, 300, 6)
    fixed = wm().fixed(el, az)
    fresh = torch.randn(6, D, H, W, generator=torch.Generator().manual_seed(5))
    out0 = wm(beta=0.0)(el, az, None, torch.Generator().manual_seed(5))
    assert torch.equal(out0, fresh)
    corr = (out0 * fixed).mean() / (out0.std() * fixed.std())
    assert abs(corr.item()) < 0.05
    out_half = wm(beta=0.5)(el, az, None, torch.Generator().manual_seed(5))
    assert torch.allclose(out_half, math.sqrt(0.5) * fixed + math.sqrt(0.5) * fresh, atol=1e-6)
    assert torch.equal(RandomNoise(D, H, W)(el, az, None, torch.Generator().manual_seed(5)), fresh)


def test_background_cells_take_eps_b():
    n = wm()
    el, az = t(0.0, 30.0, -60.0), t(0.0, 100.0, 250.0)
    zeros, ones = torch.zeros(3, 1, 64, 64), torch.ones(3, 1, 64, 64)
    assert torch.equal(n(el, az, zeros), n.background.expand(3, -1, -1, -1))
    assert torch.equal(n(el, az, ones), n.patch(el, az))
    half = torch.zeros(3, 1, 64, 64)
    half[..., :32] = 1.0  # left half opaque; pooled 4 x 4 blocks: columns < 8 foreground
    half[..., 32:36] = 0.49  # pooled 0.49 < alpha0: background
    out = n(el, az, half)
    assert torch.equal(out[..., :8], n.patch(el, az)[..., :8])
    assert torch.equal(out[..., 8:], n.background[..., 8:].expand(3, -1, -1, -1))
    assert torch.equal(wm(alpha0=0.4)(el, az, half)[..., 8], n.patch(el, az)[..., 8])


@pytest.mark.parametrize("alpha0", [0.5, 0.375, 0.0])  # dyadic: the 4 x 4 average pooling is exact
def test_pooled_opacity_at_alpha0_is_foreground(alpha0):
    """The authors' background is pooled < alpha0, so a cell whose pooled opacity equals alpha0 is foreground
    (alpha0 = 0: every cell, empty ones included); one 2^-20 below is background."""
    n = wm(alpha0=alpha0)
    el, az = t(0.0, 20.0), t(0.0, 200.0)
    opacity = torch.zeros(2, 1, 64, 64)
    below = max(alpha0 - 2.0**-20, 0.0)
    opacity[..., :, :16] = alpha0  # pooled cells of columns < 4: exactly alpha0 (the tie)
    opacity[..., :, 16:32] = below  # columns 4..7: just below
    mask = n.foreground(opacity)
    assert mask[..., :4].all()
    assert mask[..., 4:8].all() if alpha0 == 0.0 else not mask[..., 4:8].any()
    out = n(el, az, opacity)
    assert torch.equal(out[..., :4], n.patch(el, az)[..., :4])
    if alpha0 > 0:
        assert torch.equal(out[..., 4:], n.background[..., 4:].expand(2, -1, -1, -1))


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("masked", [False, True])
def test_unit_variance_per_element(beta, masked):
    el, az = t(-30.0, 0.0, 60.0, 89.0), t(0.0, 90.0, 200.0, 359.0)
    opacity = None
    if masked:
        opacity = torch.zeros(4, 1, H, W)
        opacity[:, :, 4:12, 2:10] = 1.0
    g = torch.Generator().manual_seed(0)
    samples = torch.stack([WorldMapNoise(D, H, W, beta=beta, seed=s, theta_deg=THETA)(el, az, opacity, g) for s in range(200)])
    per_elem_mean, per_elem_var = samples.mean(0), samples.var(0)  # over seeds: [4, D, H, W]
    assert abs(per_elem_mean.mean().item()) < 0.02 and per_elem_mean.abs().max() < 0.35
    assert abs(per_elem_var.mean().item() - 1.0) < 0.03
    assert per_elem_var.min() > 0.55 and per_elem_var.max() < 1.5  # 200-sample estimates: std ~0.1 each
    one = samples[0].flatten()  # one seed, over cameras and elements
    assert abs(one.mean().item()) < 0.1 and abs(one.var().item() - 1.0) < 0.15


def test_bad_settings_raise_input_error():
    for theta in (0.0, -10.0, float("nan")):
        with pytest.raises(InputError, match="theta_deg"):
            WorldMapNoise(D, H, W, theta_deg=theta)
    with pytest.raises(InputError, match="too large"):
        WorldMapNoise(4, 64, 64, theta_deg=1e-3)
    for beta in (-0.1, 1.1):
        with pytest.raises(InputError, match="beta"):
            wm(beta=beta)
        with pytest.raises(InputError, match="beta"):
            ConstantNoise(D, H, W, beta=beta)
    n = wm()
    with pytest.raises(InputError, match=r"\[C, 1, H, W\]"):
        n(t(0.0, 0.0), t(0.0, 0.0), torch.zeros(3, 1, 8, 8))
    with pytest.raises(InputError, match=r"\[C\]"):
        n(torch.zeros(2, 1), torch.zeros(2, 1))
    with pytest.raises(InputError, match="gamma"):
        n.renoise(1.5)


def test_renoise_keeps_unit_variance_and_gamma_zero_is_fixed():
    n = wm()
    before = n.padded_map.clone()
    n.renoise(0.0)
    assert torch.equal(n.padded_map, before)
    n.renoise(0.3, torch.Generator().manual_seed(9))
    corr = (n.padded_map * before).mean().item()
    assert abs(corr - math.sqrt(0.7)) < 0.03 and abs(n.padded_map.var().item() - 1.0) < 0.05


def test_device_dtype_and_no_aliasing():
    n = ConstantNoise(D, H, W, seed=4)
    el, az = t(0.0, 45.0, -30.0), t(0.0, 120.0, 270.0)
    out = n(el, az)
    assert torch.equal(out, n.noise.expand(3, -1, -1, -1))  # the same noise for every camera at beta = 1
    out.add_(1.0)
    assert not torch.equal(out[0], n.noise)  # the caller's tensor is a copy
    o64 = wm(beta=0.5)(el, az, None, torch.Generator().manual_seed(1), dtype=torch.float64)
    o32 = wm(beta=0.5)(el, az, None, torch.Generator().manual_seed(1))
    assert o64.dtype == torch.float64 and torch.equal(o64, o32.double())
    c0 = ConstantNoise(D, H, W, beta=0.0)(el, az, None, torch.Generator().manual_seed(2))
    assert torch.equal(c0, torch.randn(3, D, H, W, generator=torch.Generator().manual_seed(2)))


def test_a_world_map_narrower_than_the_view_is_refused():
    """Theta > 360 makes the map fewer cells wide than the latent view, so one view would hold the same noise
    twice (the patch wraps round the map): refused; Theta = 360 (one map width = one view) still works."""
    with pytest.raises(InputError, match="narrower than the 16-cell latent view"):
        WorldMapNoise(4, 16, 16, theta_deg=720.0)
    n = WorldMapNoise(4, 16, 16, theta_deg=360.0)
    assert n.map_width == 16
    patch = n.patch(torch.tensor([10.0]), torch.tensor([0.0]))
    assert not torch.equal(patch[..., :8], patch[..., 8:])
