"""DSD (fsd2d.dsd): its ODE point is DDIM's x_t' from the same noise, its perturbed t' stays in its bounds, without
the perturbation its update is CSD's classifier term at s - 1, its evaluations are what prior_calls says, and it runs
on a flow model (whose last index is pure noise)."""
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from fsd2d import dsd, updates
from fsd2d.cost import Meter, counted
from fsd2d.family import FamilyOptions, Rule, classifier_term, eps_many, gradient, prior_calls
from fsd2d.guidance import Guidance, predict_eps
from fsd2d.priors.imageset import ImageSetPrior
from fsd2d.sampling import DistillConfig, Method, ddim_sample, initial_noise, sample

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def prior():
    return ImageSetPrior()  # float64, exact


@pytest.fixture(scope="module")
def guidance(prior):
    return Guidance.from_prompts(prior, "cat", "", 3.0)


@pytest.mark.parametrize("t_prime", [999, 950, 899, 640, 300, 21])
def test_the_ode_point_is_ddims_x_t_from_the_same_noise(prior, guidance, t_prime):
    """DDIM along (999, the coarse grid's points above t', t') then to the clean image gives the same x_0 as one
    DDIM step from DSD's ODE point at t' (float64: the same steps in the same order, so to ~1e-13)."""
    noise = initial_noise(prior, [3, 4])
    tp = torch.tensor([t_prime, t_prime])
    x_tp = dsd.ode_point(prior, guidance, noise, tp, 11)
    grid = dsd.ode_grid(999, 11)
    ddim_grid = torch.cat([grid[:1], grid[1:][grid[1:] > t_prime], torch.tensor([t_prime])]).unique_consecutive()
    x0 = ddim_sample(prior, guidance, noise, ddim_grid)
    a, s = prior.schedule.alpha_sigma(tp, x_tp.dtype, x_tp.device)
    a0, s0 = prior.schedule.alpha_sigma(torch.full_like(tp, -1), x_tp.dtype, x_tp.device)
    stepped = updates.ddim_step(x_tp, predict_eps(prior, x_tp, tp, guidance), a, s, a0, s0)
    torch.testing.assert_close(stepped, x0, rtol=0, atol=1e-12)
    assert dsd.ode_steps(t_prime, 999, 11) == len(ddim_grid) - 1


def test_rows_stop_at_their_own_t_prime(prior, guidance):
    """Rows with different t' in one batch: each row's point equals its own single-row ODE."""
    noise = initial_noise(prior, [0, 1])
    both = dsd.ode_point(prior, guidance, noise, torch.tensor([850, 333]), 11)
    for k, tp in enumerate((850, 333)):
        alone = dsd.ode_point(prior, guidance, noise[k:k + 1], torch.tensor([tp]), 11)
        torch.testing.assert_close(both[k:k + 1], alone, rtol=0, atol=1e-13)


def test_perturbed_timesteps_stay_in_their_bounds():
    gens = [torch.Generator().manual_seed(s) for s in range(64)]
    for t in (980, 700, 400, 321, 20):
        tt = torch.full((64,), t)
        tp = dsd.perturbed_timesteps(tt, gens, 320, 999, 0.1)
        assert bool((tp >= tt).all()) and bool((tp <= min(t + max(0.1 * (t - 320), 0), 999)).all())
    tp = dsd.perturbed_timesteps(torch.full((64,), 900), gens, 320, 999, 0.1)
    assert len(set(tp.tolist())) > 10  # and they vary per seed


def test_without_perturbation_dsd_is_the_classifier_term_at_s_minus_1(prior, guidance):
    """t' = t: grad = eps_s(x_t) - eps_1(x_t) = (s - 1)(eps_c - eps_u) at x_t = alpha_t theta + sigma_t e_ode."""
    theta = initial_noise(prior, [7]) * 0.3
    fixed = initial_noise(prior, [8])
    t = torch.tensor([600])
    est = gradient(Rule.DSD, prior, guidance, guidance.uncond, theta, t, fixed, t_prime=t)
    eps_u, eps_c = eps_many(prior, est.x_t, t, [guidance.uncond, guidance.cond])
    torch.testing.assert_close(est.grad, classifier_term(eps_u, eps_c, 2.0), rtol=1e-10, atol=1e-12)
    a, s = prior.schedule.alpha_sigma(t, theta.dtype, theta.device)
    torch.testing.assert_close(est.x_t, updates.add_noise(theta, est.noise, a, s))


def test_dsd_evaluations_are_prior_calls(prior, guidance):
    """Counted at the prior: ODE steps x 2 + e_ode 2 + e_ref 1 + eps_hat 2 per row at CFG 3 (t' = t here)."""
    theta, fixed, t = initial_noise(prior, [1]), initial_noise(prior, [2]), torch.tensor([500])
    meter = Meter()
    with counted(prior, meter):
        gradient(Rule.DSD, prior, guidance, guidance.uncond, theta, t, fixed, t_prime=t)
    assert meter.evaluations == prior_calls(Rule.DSD, 500, 3.0) == 5 * 2 + 2 + 1 + 2


def test_dsd_method_uses_fixed_noise_and_its_sqrt_anneal(prior, guidance):
    config = Method.DSD.config(DistillConfig(steps=10, family=FamilyOptions(dsd_points=6)))
    assert config.beta == 1.0 and config.anneal.value == "sqrt" and config.rule is Rule.DSD
    a = sample(prior, guidance, Method.DSD, [0, 1], DistillConfig(steps=4))
    b = sample(prior, guidance, Method.DSD, [1], DistillConfig(steps=4))
    torch.testing.assert_close(a[1:], b, rtol=0, atol=1e-8)  # a seed's run does not depend on the others (to rounding)


def test_dsd_and_vsd_run_on_a_flow_model(tiny_sd3_path, tmp_path):
    """On an SD3-layout model (alpha = 0 at its last index) DSD's ODE starts at the last index with alpha > 0."""
    out = tmp_path / "run"
    res = runner.invoke(app, ["compare-2d", "--model", str(tiny_sd3_path), "--prompt", "a cat", "--methods",
                              "dsd,vsd", "--steps", "2", "--seeds", "0", "--t-max", "990", "--out", str(out),
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (out / "images" / "dsd_seed0.png").exists() and (out / "images" / "vsd_seed0.png").exists()
