"""Proposition 1: FSD with step Delta(sigma/alpha) on the DDIM grid is DDIM, to rounding."""
import pytest
import torch

from fsd2d.guidance import Guidance
from fsd2d.priors.diffusers_prior import load_stable_diffusion
from fsd2d.priors.imageset import ImageSetPrior
from fsd2d.sampling import DistillConfig, Method, ddim_sample, distill, initial_noise
from fsd2d.schedule import Anneal, timesteps

SEEDS = (0, 1, 2, 3)


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def imageset():
    return ImageSetPrior()


@pytest.mark.parametrize(
    "prompt,negative,cfg,steps,anneal",
    [("cat", "", 1.0, 50, Anneal.LINEAR), ("brick", "grass", 3.0, 40, Anneal.SQRT), ("", "", 1.0, 7, Anneal.PIECEWISE)],
)
def test_fsd_exact_equals_ddim_on_analytic_prior(imageset, prompt, negative, cfg, steps, anneal):
    g = Guidance.from_prompts(imageset, prompt, negative, cfg)
    config = DistillConfig(steps=steps, anneal=anneal)
    grid = timesteps(steps, config.t_min, config.t_max, anneal)
    x_ddim = ddim_sample(imageset, g, initial_noise(imageset, SEEDS), grid)
    x_fsd = distill(imageset, g, Method.FSD_EXACT.config(config), SEEDS)
    assert x_ddim.dtype == torch.float64
    assert rel_err(x_fsd, x_ddim) <= 1e-10
    # and the result is not trivial: DDIM on the exact prior lands on set images
    assert x_ddim.abs().max() > 0.5


def test_one_step_estimates_agree_along_the_way(imageset):
    """Same x_t at every step, so the same x_gt (Eq. 8); DDIM's last x_gt is its output."""
    g = Guidance.from_prompts(imageset, "coffee", "", 1.0)
    grid = timesteps(20, 20, 980)
    rec_ddim, rec_fsd = [], []
    x = ddim_sample(imageset, g, initial_noise(imageset, SEEDS), grid, callback=lambda s: rec_ddim.append(s.x_gt))
    distill(imageset, g, Method.FSD_EXACT.config(DistillConfig(steps=20)), SEEDS, callback=lambda s: rec_fsd.append(s.x_gt))
    assert len(rec_ddim) == len(rec_fsd) == 20
    for a, b in zip(rec_ddim, rec_fsd):
        assert rel_err(b, a) <= 1e-10
    torch.testing.assert_close(rec_ddim[-1], x, rtol=0, atol=1e-12)


def test_fsd_exact_equals_ddim_on_tiny_stable_diffusion(tiny_sd_path):
    prior = load_stable_diffusion(str(tiny_sd_path), resolution=16)
    g = Guidance.from_prompts(prior, "a photo of a cat", "", 7.5)
    steps = 25
    x_ddim = ddim_sample(prior, g, initial_noise(prior, SEEDS), timesteps(steps, 20, 980))
    x_fsd = distill(prior, g, Method.FSD_EXACT.config(DistillConfig(steps=steps)), SEEDS)
    assert x_ddim.dtype == torch.float32
    assert rel_err(x_fsd, x_ddim) <= 1e-4
    # a different noise gives a different result: the match is not an artefact of a constant output
    x_other = distill(prior, g, Method.FSD_EXACT.config(DistillConfig(steps=steps)), (10, 11, 12, 13))
    assert rel_err(x_other, x_ddim) > 1e-2


def test_compare_2d_fsd_exact_is_ddim_for_any_anneal_and_beta(imageset):
    """fsd-exact forces beta = 1 and DDIM uses the same annealed grid, so the two always agree."""
    from fsd2d.compare import Compare2DConfig, run_methods

    config = Compare2DConfig(seeds=(0, 1), steps=30, beta=0.5, anneal=Anneal.SQRT, methods=(Method.FSD_EXACT,))
    out = run_methods(imageset, config)
    assert rel_err(out[Method.FSD_EXACT], out[Method.DDIM]) <= 1e-10


def test_half_precision_priors_optimise_in_float32():
    from types import SimpleNamespace

    from fsd2d.sampling import work_dtype

    for dt, expected in [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                         (torch.float32, torch.float32), (torch.float64, torch.float64)]:
        assert work_dtype(SimpleNamespace(dtype=dt)) == expected
