"""Reference objects, the embedded view-conditioned reference prior and the 3D ground-truth metrics."""
from __future__ import annotations

import math

import pytest
import torch

from fsd2d.guidance import Guidance, predict_eps
from fsd2d.priors.base import PromptError
from fsd3d.cameras import CameraRanges, orbit_camera, stack_cameras
from fsd3d.metrics3d import (
    REACHED_PSNR_3D_DB,
    diversity_3d,
    psnr_matrix,
    references_reached,
    score_scene,
)
from fsd3d.reference_prior import ReferencePrior
from fsd3d.references import MAX_RADIUS, REFERENCE_PROMPTS, ReferenceSet, reference_scene
from fsd3d.renderer import render
from numerics import RENDER_F32_ATOL, TEST_THREADS, gamma, reorder_atol

torch.set_num_threads(TEST_THREADS)
R = 32
WHITE = torch.ones(3)


@pytest.fixture(scope="module")
def refs() -> ReferenceSet:
    return ReferenceSet()


@pytest.fixture(scope="module")
def eval_renders(refs):
    """The K references at the 8 evaluation cameras: rgb [K, 8, 3, R, R], alpha [K, 8, 1, R, R]."""
    return refs.render(CameraRanges().evaluation_cameras(R))


def render_scene(scene, cameras, opacities=None):
    viewmats, Ks = stack_cameras(cameras)
    o = scene.opacities() if opacities is None else opacities
    with torch.no_grad():
        return render(scene.means, scene.normalized_quats(), scene.scales(), o, scene.colors(), viewmats, Ks,
                      R, R, WHITE)


def mean_psnr(a, b) -> float:
    """Mean over views of the PSNR between renders a, b [V, 3, R, R]."""
    return float(psnr_matrix(a, b[None])[:, 0].mean())


# ----------------------------------------------------------------------------------- references
def test_table_and_set_agree(refs):
    assert refs.prompts == list(REFERENCE_PROMPTS)
    assert len(REFERENCE_PROMPTS) >= 4 and all(len(v) >= 5 for v in REFERENCE_PROMPTS.values())
    assert len(refs) == len(refs.names) == len(refs.labels) == sum(len(v) for v in REFERENCE_PROMPTS.values())
    for name, label in zip(refs.names, refs.labels.tolist()):
        assert name.split("/")[0] == refs.prompts[label]


def test_scenes_are_deterministic_small_and_fit_the_ball(refs):
    for name, scene in zip(refs.names, refs.scenes):
        assert 150 <= len(scene) <= 520, name
        assert float(scene.means.detach().norm(dim=1).max()) <= MAX_RADIUS, name
        again = reference_scene(*name.split("/"))
        assert torch.equal(again.means, scene.means) and torch.equal(again.sh0, scene.sh0)


# the corners of the default camera ranges (elevation 0-40, radius 1.55-1.75, fov 40-46) and their middle
@pytest.mark.parametrize("elev, azim, radius, fov", [(0, 0, 1.55, 40), (40, 135, 1.75, 46), (20, -100, 1.65, 43),
                                                     (40, 0, 1.55, 40)])
def test_solid_silhouettes_inside_the_frame(refs, elev, azim, radius, fov):
    out = refs.render([orbit_camera(elev, azim, radius, fov, R, R)])
    alpha = out.alpha[:, 0, 0]  # [K, R, R]
    assert out.rgb.shape == (len(refs), 1, 3, R, R)
    assert alpha[:, R // 2, R // 2].min() > 0.9
    corners = alpha[:, [0, 0, -1, -1], [0, -1, 0, -1]]  # [K, 4]
    assert corners.max() < 0.01
    assert alpha[:, [0, -1], :].max() < 0.05 and alpha[:, :, [0, -1]].max() < 0.05  # nothing cut at the border


def test_objects_fill_about_70_percent_of_the_frame(refs, eval_renders):
    """At the evaluation cameras (the middle of the default ranges) the bounding box of each reference's
    silhouette spans 0.6-0.8 of the image side on average, and no reference is below half the frame."""
    solid = eval_renders.alpha[:, :, 0] > 0.5  # [K, V, R, R]
    idx = torch.arange(R)

    def extent(m):  # [K, V, R] occupied rows or columns -> [K, V] span in pixels
        return torch.where(m, idx, -1).amax(-1) - torch.where(m, idx, R).amin(-1) + 1

    side = torch.maximum(extent(solid.any(-1)), extent(solid.any(-2))).double() / R  # [K, V]
    assert 0.6 <= float(side.mean()) <= 0.8
    assert float(side.mean(1).min()) >= 0.5


def test_variants_differ_in_silhouette_and_colour(refs, eval_renders):
    """Every two variants of a prompt: silhouettes (alpha > 0.5 over the 8 views) overlap by IoU < 0.9 and their
    mean colours over the silhouette differ by > 0.04 in some channel."""
    solid = eval_renders.alpha[:, :, 0] > 0.5  # [K, V, R, R]
    a = eval_renders.alpha  # [K, V, 1, R, R]
    mean_rgb = (eval_renders.rgb * a).sum((1, 3, 4)) / a.sum((1, 3, 4))  # [K, 3]
    for p in range(len(refs.prompts)):
        idx = (refs.labels == p).nonzero().flatten().tolist()
        for i in idx:
            for j in idx:
                if i < j:
                    iou = float((solid[i] & solid[j]).sum() / (solid[i] | solid[j]).sum())
                    assert iou < 0.9, (refs.names[i], refs.names[j], iou)
                    assert float((mean_rgb[i] - mean_rgb[j]).abs().max()) > 0.04, (refs.names[i], refs.names[j])


def test_variants_of_a_prompt_differ_clearly(refs, eval_renders):
    for p, prompt in enumerate(refs.prompts):
        idx = (refs.labels == p).nonzero().flatten().tolist()
        for i in idx:
            for j in idx:
                if i < j:
                    assert mean_psnr(eval_renders.rgb[i], eval_renders.rgb[j]) < 25.0, (refs.names[i], refs.names[j])


def test_snowman_front_and_back_differ(refs):
    out = refs.render([orbit_camera(10, 0, 1.75, 50, R, R), orbit_camera(10, 180, 1.75, 50, R, R)])
    for k in (refs.labels == refs.prompts.index("snowman")).nonzero().flatten().tolist():
        front, back = out.rgb[k, 0:1], out.rgb[k, 1:2]
        assert mean_psnr(front, back) < 25.0
        assert mean_psnr(front, back.flip(-1)) < 25.0  # not a mirror image either: the nose and face are on +x


def test_render_resolution_rescales_the_cameras(refs):
    cam = orbit_camera(20, 30, 1.75, 50, 64, 64)
    small = refs.render([cam], resolution=16).rgb  # [K, 1, 3, 16, 16]
    direct = refs.render([orbit_camera(20, 30, 1.75, 50, 16, 16)]).rgb
    torch.testing.assert_close(small, direct, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------- reference prior
@pytest.fixture(scope="module")
def snowman_prior() -> ReferencePrior:
    return ReferencePrior("snowman", resolution=R)


def two_cameras():
    return [orbit_camera(10, 30, 1.6, 45, R, R), orbit_camera(35, -120, 1.9, 60, R, R)]


def test_unknown_prompt_is_a_prompt_error():
    with pytest.raises(PromptError, match="mushroom"):
        ReferencePrior("dragon")
    with pytest.raises(PromptError, match="snowman"):
        ReferencePrior("mushroom", negative_prompt="dragon")
    with pytest.raises(PromptError):
        reference_scene("dragon", "red")


def test_view_batch_weights_are_per_camera_blocks(snowman_prior):
    prior, g = snowman_prior.view_batch(two_cameras(), 2.0)
    refs = snowman_prior.references
    k = len(refs)
    assert prior.images.shape == (2 * k, 3, R, R) and g.cond.shape == g.uncond.shape == (2, 2 * k)
    assert snowman_prior.prior.latent_shape == (3, R, R) and snowman_prior.default_cfg == 1.0
    snow = refs.labels == refs.prompts.index("snowman")
    for c in range(2):
        w_c, w_u = g.cond[c].exp().view(2, k), g.uncond[c].exp().view(2, k)  # [camera block, reference]
        assert w_c[1 - c].sum() == 0 and w_u[1 - c].sum() == 0  # only this camera's renders
        torch.testing.assert_close(w_c[c][snow], torch.full((int(snow.sum()),), 1.0 / int(snow.sum()), dtype=w_c.dtype))
        assert w_c[c][~snow].sum() == 0
        per_prompt = torch.zeros(len(refs.prompts), dtype=w_u.dtype).index_add_(0, refs.labels, w_u[c])
        torch.testing.assert_close(per_prompt, torch.full_like(per_prompt, 1.0 / len(refs.prompts)))
    _, g_neg = ReferencePrior("snowman", negative_prompt="cactus", resolution=R).view_batch(two_cameras(), 2.0)
    cactus = (refs.labels == refs.prompts.index("cactus")).repeat(2)
    assert torch.isinf(g_neg.uncond[:, ~cactus]).all() and torch.isfinite(g_neg.uncond[0, :k][cactus[:k]]).all()


def test_denoiser_returns_each_cameras_own_render(snowman_prior):
    cameras = two_cameras()
    prior, g = snowman_prior.view_batch(cameras, 1.0)
    refs = snowman_prior.references
    k0, k1 = refs.names.index("snowman/top_hat"), refs.names.index("snowman/beanie")
    renders = refs.render(cameras).rgb.double()  # [K, 2, 3, R, R]
    x0 = torch.stack([renders[k0, 0], renders[k1, 1]]) * 2 - 1  # [2, 3, R, R] in [-1, 1]
    t = torch.tensor([20, 20])
    a, s = prior.schedule.alpha_sigma(t, torch.float64, "cpu")
    x_t = a * x0 + s * torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    post = prior.posterior(x_t, t, g.cond)  # [2, 2K]
    assert post[0, k0] > 1 - 1e-9 and post[1, len(refs) + k1] > 1 - 1e-9
    x0_hat = (x_t - s * predict_eps(prior, x_t, t, g)) / a
    torch.testing.assert_close(x0_hat, x0, rtol=0, atol=1e-6)


@pytest.mark.numerics
@pytest.mark.parametrize("render_dtype", [torch.float64, torch.float32])
def test_batched_eps_equals_camera_by_camera(render_dtype):
    """Routing: sample c of a 2-camera batch is denoised against camera c's renders, as when it is alone.

    The two sides differ in rounding only: the references rendered at 2 cameras in one call or at 1, and the
    posterior's logits alpha x.y / sigma^2 (sums over D = 3 R^2 pixels, |x| <= ~4, |y| <= 1, alpha/sigma^2 <= 1.4
    here) as a product of another shape; eps amplifies a logit error by <= 2 alpha/sigma (<= 1.3): float64
    renders give reorder_atol(D, float64, 4 D, 1.4 * 2 * 1.3) ~ 3e-8. Float32 renders (the default, for speed)
    add RENDER_F32_ATOL per pixel, which moves eps by ~alpha/sigma of it (the posterior being settled on one
    reference there). A camera mix-up moves eps by ~1 (the swap below)."""
    prior = ReferencePrior("snowman", resolution=R, render_dtype=render_dtype)
    cameras = two_cameras()
    x_t = torch.randn(2, 3, R, R, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([400, 700])
    batch, g = prior.view_batch(cameras, 3.0)
    eps = predict_eps(batch, x_t, t, g)
    d = 3 * R * R
    atol = reorder_atol(d, torch.float64, 4 * d, 1.4 * 2 * 1.3)
    if render_dtype == torch.float32:
        atol += 2 * RENDER_F32_ATOL
    for c in range(2):
        prior_c, g_c = prior.view_batch([cameras[c]], 3.0)
        eps_c = predict_eps(prior_c, x_t[c : c + 1], t[c : c + 1], g_c)
        torch.testing.assert_close(eps[c : c + 1], eps_c, rtol=0, atol=atol)
    # and the two cameras really see different things: the same x_t denoised at the other camera differs
    swapped = predict_eps(batch, x_t.flip(0), t.flip(0), g)
    assert not torch.allclose(swapped.flip(0), eps, atol=1e-3)


# ----------------------------------------------------------------------------------- metrics
def test_reference_scores_itself_perfectly(refs, eval_renders):
    name = "snowman/top_hat"
    out = render_scene(reference_scene(*name.split("/")), CameraRanges().evaluation_cameras(R))
    s = score_scene(out.rgb, out.alpha, eval_renders.rgb, eval_renders.alpha, refs.names)
    assert s["majority"] == name and s["agreement"] == 1.0
    assert all(v["nearest"] == name for v in s["per_view"]) and len(s["per_view"]) == 8
    assert s["majority_psnr"] > 60.0 and s["holes"] < 1e-3
    import json

    json.dumps(s)  # plain types only


def test_weakened_region_makes_holes(refs, eval_renders):
    name = "mushroom/red"
    scene = reference_scene(*name.split("/"))
    cams = CameraRanges().evaluation_cameras(R)
    full = render_scene(scene, cams)
    o = scene.opacities().detach().clone()
    o[scene.means[:, 2].detach() > 0.0] *= 0.5  # the cap's upper part
    weak = render_scene(scene, cams, opacities=o)
    s_full = score_scene(full.rgb, full.alpha, eval_renders.rgb, eval_renders.alpha, refs.names)
    s_weak = score_scene(weak.rgb, weak.alpha, eval_renders.rgb, eval_renders.alpha, refs.names)
    assert s_weak["holes"] > s_full["holes"] + 0.02


def test_reached_counts_distinct_good_majorities():
    scores = [
        {"majority": "a/x", "majority_psnr": 30.0},
        {"majority": "a/x", "majority_psnr": 25.0},
        {"majority": "a/y", "majority_psnr": REACHED_PSNR_3D_DB - 1.0},
        {"majority": "a/z", "majority_psnr": REACHED_PSNR_3D_DB},
    ]
    r = references_reached(scores)
    assert r["references_reached"] == 2 and r["reached"] == ["a/x", "a/z"] and r["seeds"] == 4


def test_diversity_3d(eval_renders):
    same = eval_renders.rgb[0].expand(3, *eval_renders.rgb.shape[1:])  # [S=3, V, 3, R, R]
    assert diversity_3d(same) == pytest.approx(0.0, abs=1e-12)
    assert diversity_3d(eval_renders.rgb[:3]) > 0.05
    assert math.isfinite(diversity_3d(eval_renders.rgb[:2]))


@pytest.mark.numerics
def test_repeated_cameras_are_rendered_once(snowman_prior):
    """Seeds sharing a camera sequence: the image set holds each distinct camera once, in order of first
    appearance, and every sample is denoised against its own camera's block (as when it runs alone)."""
    a, b = two_cameras()
    prior, g = snowman_prior.view_batch([a, b, a, b, a], 2.0)  # 3 seeds' cameras, say
    k = len(snowman_prior.references)
    assert prior.images.shape[0] == 2 * k and g.cond.shape == (5, 2 * k)
    alone, g_alone = snowman_prior.view_batch([a, b], 2.0)
    assert torch.equal(prior.images, alone.images)
    assert torch.equal(g.cond[[0, 1, 2, 3, 4]], g_alone.cond[[0, 1, 0, 1, 0]])
    x_t = torch.randn(5, 3, R, R, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t = torch.tensor([300, 500, 700, 300, 900])
    eps = predict_eps(prior, x_t, t, g)
    # the images are the same render call (equal above); the posterior's product has 5 rows here, 1 alone: its
    # sums over D pixels may round in another order (see test_batched_eps_equals_camera_by_camera)
    d = 3 * R * R
    for i, cam in enumerate([0, 1, 0, 1, 0]):
        torch.testing.assert_close(eps[i : i + 1], predict_eps(alone, x_t[i : i + 1], t[i : i + 1],
                                                               Guidance(g_alone.cond[cam : cam + 1],
                                                                        g_alone.uncond[cam : cam + 1], 2.0)),
                                   rtol=0, atol=reorder_atol(d, torch.float64, 4 * d, 1.4 * 2 * 1.3))


def test_seed_spread_by_hand(eval_renders):
    from fsd3d.metrics3d import mean_over_pairs, pairwise_dissimilarity_3d, seed_spread

    scores = [{"majority": m, "majority_psnr": p, "agreement": a, "holes": h}
              for m, p, a, h in [("a/x", 30.0, 1.0, 0.0), ("a/x", 26.0, 0.5, 0.1), ("a/y", 20.0, 1.0, 0.2),
                                 ("a/z", 24.0, 1.0, 0.3)]]
    sp = seed_spread(scores)
    assert sp["references_reached"] == references_reached(scores)["references_reached"] == 2
    lo, hi = sp["references_reached_ci"]
    assert 0 <= lo <= 2 <= hi <= 2  # resampling 4 seeds can only lose reached references
    assert sp["majority_psnr"] == pytest.approx(25.0) and sp["holes"] == pytest.approx(0.15)
    assert sp["majority_psnr_std"] == pytest.approx(math.sqrt((25 + 1 + 25 + 1) / 3))  # ddof 1
    same = seed_spread([scores[0]] * 5)
    assert same["references_reached_ci"] == [1.0, 1.0] and same["holes_std"] == 0.0
    # diversity: the mean over seed pairs of the pairwise matrix is diversity_3d
    rgb = eval_renders.rgb[:4].float()  # 4 "seeds" [S, V, 3, R, R]
    d = pairwise_dissimilarity_3d(rgb)
    assert d.shape == (4, 4) and (d == d.T).all() and (d.diagonal() == 0).all()
    sp = seed_spread(scores, d)
    assert sp["diversity"] == pytest.approx(diversity_3d(rgb), rel=1e-9)
    assert mean_over_pairs(d) == pytest.approx(diversity_3d(rgb), rel=1e-9)  # what gen3d's summary reports
    lo, hi = sp["diversity_ci"]
    # means of pairwise values of distinct seeds: within [min, max] up to the rounding of a mean of <= 6 values
    slack = 2 * gamma(6, torch.float64) * float(d.max())
    assert float(d[d > 0].min()) - slack <= lo <= hi <= float(d.max()) + slack
