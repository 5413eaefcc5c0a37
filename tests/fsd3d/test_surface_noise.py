"""SurfaceNoise (fsd3d/noise.py): its three steps against brute force, and the properties the design promises:
unit variance, the same surface point gives the same noise from any camera, distinct points independent noise."""
import math

import pytest
import torch

from fsd2d.errors import InputError
from fsd3d.cameras import orbit_camera, stack_cameras
from fsd3d.noise import SurfaceNoise, cube_texels, surface_points, texel_noise


def test_surface_points_project_back_to_their_pixel_and_depth():
    cams = [orbit_camera(20.0, 30.0, 1.6, 45.0, 12, 8, dtype=torch.float64), orbit_camera(-10.0, 200.0, 2.0, 60.0, 12, 8,
                                                                                           dtype=torch.float64)]
    viewmats, Ks = stack_cameras(cams)
    depth = 1.0 + torch.rand(2, 1, 8, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pts = surface_points(depth, viewmats, Ks)  # [2, 8, 12, 3]
    for c in range(2):
        cam = viewmats[c, :3, :3] @ pts[c].reshape(-1, 3).T + viewmats[c, :3, 3:]  # [3, H*W]
        uvz = Ks[c] @ cam
        u, v = uvz[0] / uvz[2], uvz[1] / uvz[2]
        vv, uu = torch.meshgrid(torch.arange(8.0, dtype=torch.float64) + 0.5, torch.arange(12.0, dtype=torch.float64) + 0.5,
                                indexing="ij")
        torch.testing.assert_close(u, uu.flatten(), rtol=0, atol=1e-9)
        torch.testing.assert_close(v, vv.flatten(), rtol=0, atol=1e-9)
        torch.testing.assert_close(cam[2], depth[c, 0].flatten(), rtol=0, atol=1e-12)


def brute_texel(p, texels, shells, width):
    x = [float(v) for v in p]
    a = max(range(3), key=lambda i: abs(x[i]))
    face = 2 * a + (1 if x[a] < 0 else 0)
    cell = [min(texels - 1, max(0, math.floor((x[i] + 1) * texels / 2))) for i in range(3) if i != a]
    shell = min(shells - 1, max(0, math.floor(abs(x[a]) / width)))
    return ((shell * 6 + face) * texels + cell[0]) * texels + cell[1]


def test_cube_texels_equal_a_brute_force_per_point():
    pts = torch.randn(500, 3, generator=torch.Generator().manual_seed(1)) * 0.4
    ids = cube_texels(pts, 16, 8, 0.1)
    assert ids.tolist() == [brute_texel(p, 16, 8, 0.1) for p in pts]
    assert int(ids.max()) < 8 * 6 * 16 * 16
    # one line along the projection axis: another shell, another texel; within a texel and a shell, the same one
    p = torch.tensor([[0.3, 0.1, -0.05]])
    assert cube_texels(p, 16, 8, 0.1) != cube_texels(p + torch.tensor([0.2, 0.0, 0.0]), 16, 8, 0.1)
    assert cube_texels(p, 16, 8, 0.1) == cube_texels(p + torch.tensor([0.01, 0.01, 0.01]), 16, 8, 0.1)


def test_texel_noise_equals_a_brute_force_over_cells():
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 40, (2, 8, 12), generator=g)  # few texels: many repeats within a cell
    valid = torch.rand(2, 8, 12, generator=g) < 0.7
    tex = torch.randn(40, 3, generator=g, dtype=torch.float64)
    noise, counts = texel_noise(ids, valid, tex, 4, 3)  # cells of 2 x 4 pixels
    for c in range(2):
        for y in range(4):
            for x in range(3):
                seen = {int(ids[c, yy, xx]) for yy in range(2 * y, 2 * y + 2) for xx in range(4 * x, 4 * x + 4)
                        if valid[c, yy, xx]}
                assert counts[c, 0, y, x] == len(seen)
                want = sum((tex[i] for i in seen), torch.zeros(3, dtype=torch.float64)) / math.sqrt(max(1, len(seen)))
                torch.testing.assert_close(noise[c, :, y, x], want, rtol=0, atol=1e-12)


def ball_view(noise: SurfaceNoise, azimuth: float, res: int = 32):
    """An opaque sphere of radius 0.45 seen from (0, azimuth) at distance 1.6: (opacity, points) as a render gives."""
    cam = orbit_camera(0.0, azimuth, 1.6, 45.0, res, res, dtype=torch.float64)
    viewmat, K = stack_cameras([cam])
    v, u = torch.meshgrid(torch.arange(res, dtype=torch.float64) + 0.5, torch.arange(res, dtype=torch.float64) + 0.5,
                          indexing="ij")
    d = torch.linalg.inv(K[0]) @ torch.stack([u, v, torch.ones_like(u)]).reshape(3, -1)  # rays, z = 1
    d = d / d.norm(dim=0)
    o = -viewmat[0, :3, :3].T @ viewmat[0, :3, 3]  # camera centre
    dw = viewmat[0, :3, :3].T @ d  # world directions [3, N]
    b = dw.T @ o  # ray-sphere: |o + s dw|^2 = r^2
    disc = b**2 - (o @ o - 0.45**2)
    hit = disc > 0
    s = -b - disc.clamp_min(0).sqrt()
    pts = (o[:, None] + s * dw).T.reshape(1, res, res, 3)
    return hit.reshape(1, 1, res, res).float(), pts.float(), cam


def test_surface_noise_is_unit_variance_and_background_elsewhere():
    values = []
    for seed in range(40):
        n = SurfaceNoise(2, 8, 8, seed=seed)
        alpha, pts, cam = ball_view(n, 30.0)
        out = n.fixed(torch.tensor([0.0]), torch.tensor([30.0]), alpha, points=pts)
        fg = n.foreground(alpha)[0, 0]
        assert torch.equal(out[0][:, ~fg], n.background[:, ~fg])  # off the object: eps_b
        values.append(out[0][:, fg].flatten())
    v = torch.cat(values)
    assert abs(float(v.mean())) < 0.05 and abs(float(v.std()) - 1.0) < 0.05, (float(v.mean()), float(v.std()))


def test_the_same_surface_points_give_the_same_noise_from_another_camera():
    """A cell that sees the same texels as a cell of another camera gets the same noise; changing the textures of
    texels one cell sees and another does not changes only the first (distinct points: independent noise)."""
    n = SurfaceNoise(3, 8, 8, seed=0, texels=8, shells=4, shell_width=0.25)
    alpha, pts, _ = ball_view(n, 0.0)
    # camera B sees camera A's cell (2, 3) in its cell (5, 6), pixels in another order
    pts_b, alpha_b = torch.zeros_like(pts), torch.zeros_like(alpha)
    block = pts[0, 8:12, 12:16].flip(0).transpose(0, 1)
    pts_b[0, 20:24, 24:28], alpha_b[0, 0, 20:24, 24:28] = block, alpha[0, 0, 8:12, 12:16].flip(0).T
    a = n.fixed(torch.tensor([0.0]), torch.tensor([0.0]), alpha, points=pts)
    b = n.fixed(torch.tensor([0.0]), torch.tensor([10.0]), alpha_b, points=pts_b)
    assert alpha[0, 0, 8:12, 12:16].mean() >= 0.5
    torch.testing.assert_close(b[0, :, 5, 6], a[0, :, 2, 3], rtol=0, atol=1e-6)
    ids = cube_texels(pts, n.texels, n.shells, n.shell_width)[0]
    mine = set(ids[8:12, 12:16].flatten().tolist())
    other = set(ids[16:20, 12:16].flatten().tolist())  # cell (4, 3)
    assert mine and other and not mine & other and alpha[0, 0, 16:20, 12:16].mean() >= 0.5  # two cells, no texel shared
    only_mine = torch.tensor(sorted(mine))
    n.textures[only_mine] += 1.0
    n._on.clear()
    c = n.fixed(torch.tensor([0.0]), torch.tensor([0.0]), alpha, points=pts)
    assert not torch.allclose(c[0, :, 2, 3], a[0, :, 2, 3])
    torch.testing.assert_close(c[0, :, 4, 3], a[0, :, 4, 3], rtol=0, atol=0)


def test_surface_noise_needs_points_and_matching_shapes():
    n = SurfaceNoise(4, 8, 8)
    alpha = torch.ones(1, 1, 32, 32)
    with pytest.raises(InputError, match="surface points"):
        n.fixed(torch.tensor([0.0]), torch.tensor([0.0]), alpha)
    with pytest.raises(InputError, match="multiple of 8 x 8"):
        n.fixed(torch.tensor([0.0]), torch.tensor([0.0]), torch.ones(1, 1, 30, 30), points=torch.zeros(1, 30, 30, 3))


def test_warping_a_view_onto_itself_is_the_identity_and_a_rendered_scene_agrees_across_views():
    from fsd3d.gaussians import GaussianScene
    from fsd3d.metrics3d import view_disagreement, warp_view
    from fsd3d.renderer import render_scene

    scene = GaussianScene.init_ball(400, 0.35, torch.Generator().manual_seed(0), scale=0.15, opacity=0.9)
    with torch.no_grad():
        scene.sh0.copy_(torch.randn(400, 3, generator=torch.Generator().manual_seed(1)))  # colourful, view-independent
    a, b = orbit_camera(10.0, 0.0, 1.6, 45.0, 48, 48), orbit_camera(10.0, 10.0, 1.6, 45.0, 48, 48)
    with torch.no_grad():
        ra, rb = render_scene(scene, [a], torch.ones(3)), render_scene(scene, [b], torch.ones(3))
    warped, mask = warp_view(ra.rgb[0], ra.depth[0], ra.alpha[0], a, ra.depth[0], ra.alpha[0], a)
    assert mask.float().mean() > 0.2
    torch.testing.assert_close(warped[:, mask], ra.rgb[0][:, mask], rtol=0, atol=1e-5)
    same = view_disagreement(ra.rgb[0], rb.rgb[0], ra.depth[0], ra.alpha[0], a, rb.depth[0], rb.alpha[0], b)
    noise = view_disagreement(ra.rgb[0], torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(2)),
                              ra.depth[0], ra.alpha[0], a, rb.depth[0], rb.alpha[0], b)
    assert same < 0.05 < 0.2 < noise, (same, noise)


@pytest.fixture(scope="module")
def tiny_mvdream_path(tmp_path_factory):
    from fsd2d.priors.random_sd import build_random_mvdream

    return build_random_mvdream(tmp_path_factory.mktemp("tiny_mvdream"), "tiny")


@pytest.mark.parametrize("model", ["references", "references-local", "tiny-sd-objects", "sd", "mvdream"])
def test_gen_3d_runs_surface_noise_on_every_prior(model, tiny_sd_path, tiny_mvdream_path, monkeypatch):
    """Two steps of --method surface from a ball opaque enough to have a surface, on each kind of prior: the prior
    sees x_t of its latent's shape, the scene stays finite, and the noise of the object's cells really comes from
    the textures (cells that see texels, at the prior's latent size), not only from the background eps_b."""
    import fsd3d.noise
    from fsd3d.config import Gen3DConfig
    from fsd3d.run import load_scene_prior
    from fsd3d.config import NoiseKind, Train3DConfig
    from fsd3d.checkpoint import initial_state
    from fsd3d.settings import resolve
    from fsd3d.train import train_seeds

    name = {"sd": str(tiny_sd_path), "mvdream": str(tiny_mvdream_path)}.get(model, model)
    config = Gen3DConfig(model=name, prompt="a cat" if model in ("sd", "mvdream") else "mushroom", resolution=32,
                         train=Train3DConfig(method=NoiseKind.SURFACE, steps=2, num_gaussians=300, init_opacity=0.6,
                                             cameras_per_step=1))
    prior = load_scene_prior(config)
    train = resolve(config, prior).train
    seen = []
    calls = prior.view_batch

    def spy(cameras, scale):
        bound, guidance = calls(cameras, scale)
        eps = bound.eps

        def recording(x_t, t, cond):
            seen.append(x_t)
            return eps(x_t, t, cond)

        bound.eps = recording
        return bound, guidance

    prior.view_batch = spy
    counts = []
    texels = fsd3d.noise.texel_noise
    monkeypatch.setattr(fsd3d.noise, "texel_noise", lambda *a: (lambda out: (counts.append(out[1]), out)[1])(texels(*a)))
    state = train_seeds(prior, train, [initial_state(train, 0)])[0]
    assert state.step == 2 and all(torch.isfinite(p).all() for p in state.scene.parameters())
    assert seen and all(x.shape[-3:] == prior.prior.latent_shape for x in seen)
    assert len(counts) == 2 and all(c.shape[-2:] == prior.prior.latent_shape[-2:] for c in counts)
    assert all((c > 0).float().mean() > 0.05 for c in counts)  # the object covers cells that read texels
