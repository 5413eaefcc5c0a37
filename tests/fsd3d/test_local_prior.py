"""`--model references-local` (fsd3d.local_prior): the local per-camera denoiser of the references."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fsd2d.guidance import predict_eps
from fsd2d.schedule import scaled_linear_schedule
from fsd3d.cameras import orbit_camera
from fsd3d.local_prior import CameraBlocksPrior, LocalReferencePrior, ShiftWindowPrior
from numerics import RENDER_F32_ATOL, TEST_THREADS, probable_atol, reorder_atol

torch.set_num_threads(TEST_THREADS)
F64 = torch.float64


def tiny_images(k: int = 3, r: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.rand(k, 3, r, r, generator=torch.Generator().manual_seed(seed), dtype=F64) * 2 - 1


def brute_force_mean(x, t, logw, images, shift, k):
    """The module docstring's formula, pixel by pixel: reflect-padded neighbourhoods of x, image patches
    centred at p + s (images continued by their border pixels)."""
    r, h = x.shape[-1], k // 2
    abar = scaled_linear_schedule().abar(t)
    a, s2 = float(abar.sqrt()), float(1 - abar)
    xp = F.pad(x[None], (h, h, h, h), mode="reflect")[0]
    e = h + shift
    yp = F.pad(images, (e, e, e, e), mode="replicate")
    out = torch.zeros_like(x)
    for i in range(r):
        for j in range(r):
            hood = xp[:, i:i + k, j:j + k]
            logits, centres = [], []
            for m in range(len(images)):
                for dy in range(-shift, shift + 1):
                    for dx in range(-shift, shift + 1):
                        yi, yj = i + dy + shift, j + dx + shift  # top-left of P_m(p + s) in yp
                        patch = yp[m, :, yi:yi + k, yj:yj + k]
                        logits.append(logw[m] - ((hood - a * patch) ** 2).sum() / (2 * s2))
                        centres.append(yp[m, :, yi + h, yj + h])
            w = torch.softmax(torch.stack(logits), 0)
            out[:, i, j] = (w[:, None] * torch.stack(centres)).sum(0)
    return out


@pytest.mark.parametrize("shift, t, k", [(0, 300, 3), (1, 700, 5), (2, 100, 3)])
def test_fast_posterior_mean_equals_the_formula(shift, t, k):
    images = tiny_images()
    labels = torch.tensor([0, 0, 1])
    prior = ShiftWindowPrior(images, labels, ["a", "b"], shift, patch_sizes=((0, k),), dtype=F64, compute_dtype=F64)
    x = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(1), dtype=F64)
    tt = torch.tensor([t, t])
    cond = torch.cat([prior.encode_prompt("a"), prior.encode_prompt("")])  # [2, 3]
    fast = prior.posterior_mean(x, tt, cond)
    for b in range(2):
        torch.testing.assert_close(fast[b], brute_force_mean(x[b], tt[b:b + 1], cond[b], images, shift, k),
                                   rtol=1e-9, atol=1e-9)


def test_clean_reference_is_a_fixed_point():
    """At low noise a reference's own render (with shift 0: at its own place) is denoised to itself."""
    images = tiny_images(r=12)
    prior = ShiftWindowPrior(images, torch.tensor([0, 0, 0]), ["a"], 0, patch_sizes=((0, 5),), dtype=F64,
                             compute_dtype=F64)
    t = torch.tensor([5])
    a, s = prior.schedule.alpha_sigma(t, F64, "cpu")
    x_t = a * images[1:2]
    torch.testing.assert_close(prior.posterior_mean(x_t, t, prior.encode_prompt("a")), images[1:2], rtol=0, atol=1e-6)


def test_output_at_a_pixel_depends_only_on_its_neighbourhood():
    images = tiny_images(r=16)
    prior = ShiftWindowPrior(images, torch.tensor([0, 0, 0]), ["a"], 1, patch_sizes=((0, 5),), dtype=F64,
                             compute_dtype=F64)
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=F64)
    t, cond = torch.tensor([400]), prior.encode_prompt("a")
    y = x.clone()
    y[..., 10:, :] += 1.0  # rows 10.. changed: rows <= 7 (more than 2 = 5 // 2 rows away) must not move
    a, b = prior.posterior_mean(x, t, cond), prior.posterior_mean(y, t, cond)
    torch.testing.assert_close(a[..., :8, :], b[..., :8, :], rtol=0, atol=1e-12)
    assert not torch.allclose(a[..., 10:, :], b[..., 10:, :])


@pytest.fixture(scope="module")
def local_prior() -> LocalReferencePrior:
    return LocalReferencePrior("snowman", resolution=16)


@pytest.mark.numerics
@pytest.mark.parametrize("exact", [True, False])
def test_view_batch_routes_each_sample_to_its_camera(local_prior, exact):
    """Routing: sample i of a 3-sample, 2-camera batch is denoised by its camera's prior, as when alone.

    The sides differ in rounding only: the references rendered at 2 cameras in one call or at 1, and the
    posterior's logits (sums over the 3 k^2 <= 243 values of a k x k patch, |x| <= ~4, |y| <= 1,
    alpha / sigma^2 <= 1.4) computed for 3 samples or 1. exact: renders and posterior in float64, bound
    reorder_atol(243, float64, 4 * 243, 1.4 * 2 * 1.3) ~ 1e-12 on eps, gain as in test_references; the default
    (float32 renders and compute, for speed): float32's worst case says nothing here (0.1), so its probable
    bound, probable_atol(243, float32, 243 (|x| ~ 1), gain) ~ 7e-3, plus the renders' RENDER_F32_ATOL (measured
    with MKL's AVX2 path: 2.4e-6). A camera mix-up moves eps by > 0.1."""
    prior_3d = LocalReferencePrior("snowman", resolution=16, compute_dtype=F64, render_dtype=F64) if exact \
        else local_prior
    cams = [orbit_camera(10, 30, 1.6, 42, 16, 16), orbit_camera(35, -120, 1.7, 45, 16, 16)]
    prior, g = prior_3d.view_batch([cams[0], cams[1], cams[0]], 1.0)
    k = len(prior_3d.references)
    assert isinstance(prior, CameraBlocksPrior) and len(prior.priors) == 2 and g.cond.shape == (3, 2 * k)
    x_t = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(3), dtype=F64)
    t = torch.tensor([300, 600, 900])
    eps = predict_eps(prior, x_t, t, g)
    n, gain = 3 * 9 * 9, 1.4 * 2 * 1.3
    atol = reorder_atol(n, F64, 4 * n, gain) if exact else probable_atol(n, torch.float32, n, gain) + RENDER_F32_ATOL
    for i, c in enumerate([0, 1, 0]):
        alone, g1 = prior_3d.view_batch([cams[c]], 1.0)
        torch.testing.assert_close(eps[i:i + 1], predict_eps(alone, x_t[i:i + 1], t[i:i + 1], g1), rtol=0, atol=atol)
    other, _ = prior_3d.view_batch([cams[1]], 1.0)
    assert (eps[:1] - predict_eps(other, x_t[:1], t[:1], g1)).abs().max() > 0.1  # the other camera's prior
    with pytest.raises(Exception, match="exactly one camera block"):
        prior.eps(x_t[:1], t[:1], torch.zeros(1, 2 * k, dtype=F64))


def test_equivariant_variant_uses_the_2d_patches_prior():
    from fsd2d.priors.patches import PatchPrior

    p = LocalReferencePrior("tree", resolution=16, shift=None, patch_sizes=((0, 3),), patches_per_prompt=64)
    prior, g = p.view_batch([orbit_camera(20, 0, 1.65, 43, 16, 16)], 1.0)
    assert isinstance(prior.priors[0], PatchPrior) and g.cond.shape == (1, prior.priors[0].bank_size)
