"""Noise, determinism, the beta blend, and the paper's claim on the exact prior: FSD ~ DDIM, SDS collapses."""
import pytest
import torch

from fsd2d import metrics
from fsd2d.errors import InputError
from fsd2d.guidance import Guidance
from fsd2d.priors.imageset import ImageSetPrior
from fsd2d.sampling import DistillConfig, Method, Optimizer, TimestepSampling, ddim_sample, distill, initial_noise
from fsd2d.schedule import timesteps
from fsd2d.updates import blend_noise


@pytest.fixture(scope="module")
def prior():
    return ImageSetPrior()


def test_seed_noise_does_not_depend_on_batch(prior):
    full = initial_noise(prior, [0, 1, 2, 3])
    alone = initial_noise(prior, [3])
    assert torch.equal(full[3], alone[0])
    assert not torch.equal(full[0], full[1])


@pytest.mark.parametrize("method", [Method.FSD, Method.SDS, Method.SDS_ANNEALED])
def test_same_seed_same_result_bit_for_bit(prior, method):
    g = Guidance.from_prompts(prior, "rocket", "", 2.0)
    config = method.config(DistillConfig(steps=30, beta=0.5))
    a = distill(prior, g, config, [5, 6])
    b = distill(prior, g, config, [5, 6])
    assert torch.equal(a, b)
    c = distill(prior, g, config, [7, 8])
    assert not torch.equal(a, c)


def test_blend_noise_endpoints_and_unit_variance():
    gen = torch.Generator().manual_seed(0)
    fixed, fresh = torch.randn(200_000, generator=gen), torch.randn(200_000, generator=gen)
    assert torch.equal(blend_noise(fixed, fresh, 1.0), fixed)
    assert torch.equal(blend_noise(fixed, fresh, 0.0), fresh)
    for beta in (0.25, 0.5, 0.75):
        mixed = blend_noise(fixed, fresh, beta)
        assert abs(mixed.var().item() - 1.0) < 0.02
        assert abs(torch.corrcoef(torch.stack([mixed, fixed]))[0, 1].item() - beta**0.5) < 0.01
    with pytest.raises(InputError, match="beta"):
        blend_noise(fixed, fresh, 1.5)


def test_beta_one_ignores_fresh_noise_and_beta_below_one_uses_it(prior):
    g = Guidance.from_prompts(prior, "cat", "", 1.0)
    noises = {}
    for beta in (1.0, 0.5):
        rec = []
        distill(prior, g, DistillConfig(steps=5, beta=beta), [0], callback=lambda s: rec.append(s.noise))
        noises[beta] = rec
    assert all(torch.equal(n, noises[1.0][0]) for n in noises[1.0])  # FSD: one eps~ throughout
    assert not torch.equal(noises[0.5][0], noises[0.5][1])  # blend: changes every step


def test_method_presets():
    base = DistillConfig(steps=10, beta=0.7)
    assert Method.DDIM.config(base) is None
    assert Method.FSD.config(base).beta == 0.7 and Method.FSD_EXACT.config(base).optimizer is Optimizer.EXACT
    sds = Method.SDS.config(base)
    assert sds.beta == 0.0 and sds.sampling is TimestepSampling.UNIFORM
    with pytest.raises(InputError, match="exact"):
        DistillConfig(steps=10, optimizer=Optimizer.EXACT, sampling=TimestepSampling.UNIFORM)
    assert DistillConfig(steps=200).adam_lr == pytest.approx(2.5 / 200)


def test_fsd_is_diverse_and_close_to_ddim_sds_collapses(prior):
    """16 seeds on 'cat' (64 crops): FSD reaches more set images than SDS and stays closer to DDIM."""
    seeds = list(range(16))
    steps = 300
    g = Guidance.from_prompts(prior, "cat", "", 1.0)
    base = DistillConfig(steps=steps)
    ddim = prior.decode(ddim_sample(prior, g, initial_noise(prior, seeds), timesteps(steps, 20, 980)))
    fsd = prior.decode(distill(prior, g, Method.FSD.config(base), seeds))
    sds = prior.decode(distill(prior, g, Method.SDS.config(base), seeds))
    cat = prior.set_images("cat")
    reached = {name: metrics.mode_coverage(*metrics.nearest(x, cat)) for name, x in [("fsd", fsd), ("sds", sds)]}
    assert reached["fsd"] > reached["sds"] + 3
    d_fsd, d_sds = ((x - ddim).flatten(1).norm(dim=1).mean().item() for x in (fsd, sds))
    assert d_fsd < 0.5 * d_sds
    assert metrics.diversity(fsd) > metrics.diversity(sds)
