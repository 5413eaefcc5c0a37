"""The family (ISM, SDI, CSD, NFSD): each update against a hand computation on a Gaussian prior whose eps is
known in closed form, the reductions between rules, the CLI on every prior, and bad options (one line)."""
import json
import math

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from fsd2d import updates
from fsd2d.family import FamilyOptions, Rule, gradient
from fsd2d.guidance import Guidance
from fsd2d.priors.base import PixelPrior
from fsd2d.priors.imageset import ImageSetPrior
from fsd2d.sampling import DistillConfig, Method, ddim_sample, distill, initial_noise
from fsd2d.schedule import scaled_linear_schedule, timesteps

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")
TAU = 0.5  # data std of the Gaussian prior


class GaussianPrior(PixelPrior):
    """x_0 ~ N(m, TAU^2 I) where the conditioning IS the mean m [1, 3, 2, 2]: eps(x_t) = E[eps | x_t] =
    sigma (x_t - alpha m) / (alpha^2 TAU^2 + sigma^2), exact and linear in x_t."""

    _resolution = 2

    def __init__(self):
        self.schedule, self.device, self.dtype = scaled_linear_schedule(), torch.device("cpu"), torch.float64
        gen = torch.Generator().manual_seed(0)
        self.means = {p: torch.randn(1, 3, 2, 2, generator=gen, dtype=torch.float64) for p in ("a", "b")}
        self.means[""] = torch.zeros(1, 3, 2, 2, dtype=torch.float64)

    def encode_prompt(self, prompt):
        return self.means[prompt]

    def eps(self, x_t, t, cond):
        alpha, sigma = self.schedule.alpha_sigma(t, x_t.dtype, x_t.device)
        return sigma * (x_t - alpha * cond) / (alpha**2 * TAU**2 + sigma**2)


@pytest.fixture(scope="module")
def gp():
    return GaussianPrior()


@pytest.fixture(scope="module")
def imageset():
    return ImageSetPrior()


def scalars(prior, t):
    """(alpha_t, sigma_t) as Python floats from abar (t = -1: clean)."""
    abar = 1.0 if t < 0 else float(prior.schedule.alphas_cumprod[t])
    return math.sqrt(abar), math.sqrt(1.0 - abar)


def hand_eps(prior, x, t, m):
    """The closed form, written again with Python-float coefficients (t = -1 is evaluated at 0)."""
    a, s = scalars(prior, max(t, 0))
    return s * (x - a * m) / (a * a * TAU**2 + s * s)


def setup(prior, b=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(b, 3, 2, 2, generator=gen, dtype=torch.float64)
    noise = torch.randn(b, 3, 2, 2, generator=gen, dtype=torch.float64)
    return theta, noise


def test_from_prompts_carries_the_empty_prompt_whatever_the_negative(gp):
    """Guidance.null_or_uncond is the null model (`distill` and 3D pass it to `gradient` as `null`): the empty
    prompt's encoding with a negative prompt, the negative prompt's own tensor without one."""
    g = Guidance.from_prompts(gp, "a", "b", 3.0)
    assert torch.equal(g.null_or_uncond, gp.means[""]) and not torch.equal(g.uncond, gp.means[""])
    plain = Guidance.from_prompts(gp, "a", "", 3.0)
    assert plain.null is None and plain.null_or_uncond is plain.uncond
    theta, noise = setup(gp)
    t = torch.tensor([500, 100])
    with_null = gradient(Rule.NFSD, gp, g, g.null_or_uncond, theta, t, noise)
    by_hand = gradient(Rule.NFSD, gp, g, gp.encode_prompt(""), theta, t, noise)
    torch.testing.assert_close(with_null.grad, by_hand.grad, rtol=0, atol=0)


def test_csd_is_the_classifier_term(gp):
    g = Guidance.from_prompts(gp, "a", "b", 3.0)
    theta, noise = setup(gp)
    t = 600
    est = gradient(Rule.CSD, gp, g, gp.means[""], theta, torch.tensor([t, t]), noise)
    a, s = scalars(gp, t)
    x = a * theta + s * noise
    expected = 3.0 * (hand_eps(gp, x, t, gp.means["a"]) - hand_eps(gp, x, t, gp.means["b"]))
    torch.testing.assert_close(est.grad, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(est.x_t, x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("t", [150, 600])
def test_nfsd_condition_plus_denoising_term(gp, t):
    """delta_C = s (eps_y - eps_null); delta_D = eps_null (t < 200) or eps_null - eps_neg; no noise subtracted."""
    g = Guidance.from_prompts(gp, "a", "b", 7.5)
    theta, noise = setup(gp, seed=1)
    est = gradient(Rule.NFSD, gp, g, gp.means[""], theta, torch.tensor([t, t]), noise)
    a, s = scalars(gp, t)
    x = a * theta + s * noise
    e0, ey, en = (hand_eps(gp, x, t, gp.means[k]) for k in ("", "a", "b"))
    expected = 7.5 * (ey - e0) + (e0 if t < 200 else e0 - en)
    torch.testing.assert_close(est.grad, expected, rtol=1e-12, atol=1e-12)


def test_ism_by_hand(gp):
    """x_start = a theta + s eps at max(s - n stride, 0); null-model DDIM inversion in strides to s; one more
    step to t; grad = eps_cfg(x_t, t) - eps_null(x_s, s)."""
    opts = FamilyOptions(ism_interval=30, ism_stride=200, ism_inversion_steps=2)
    g = Guidance.from_prompts(gp, "a", "b", 2.0)
    theta, noise = setup(gp, seed=2)
    t = 530
    est = gradient(Rule.ISM, gp, g, gp.means[""], theta, torch.tensor([t, t]), noise, opts)
    s_ = 500
    start = 100  # 500 - 2 * 200
    a, s = scalars(gp, start)
    x = a * theta + s * noise
    for cur, nxt in [(100, 300), (300, 500)]:
        e = hand_eps(gp, x, cur, gp.means[""])
        (ac, sc), (an, sn) = scalars(gp, cur), scalars(gp, nxt)
        x = an * (x - sc * e) / ac + sn * e
    target = hand_eps(gp, x, s_, gp.means[""])
    (a_s, s_s), (a_t, s_t) = scalars(gp, s_), scalars(gp, t)
    x_t = a_t * (x - s_s * target) / a_s + s_t * target
    eu, ec = hand_eps(gp, x_t, t, gp.means["b"]), hand_eps(gp, x_t, t, gp.means["a"])
    expected = eu + 2.0 * (ec - eu) - target
    torch.testing.assert_close(est.x_t, x_t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(est.grad, expected, rtol=1e-12, atol=1e-12)


def test_sdi_by_hand(gp):
    """Invert theta from clean (-1) on the grid 99, 199, ... below t, then t, with CFG 2 (eta 0);
    kappa = (x_t - alpha theta)/sigma; grad = eps_cfg(x_t) - kappa."""
    opts = FamilyOptions(sdi_inversion_steps=10, sdi_inversion_cfg=-1.5, sdi_eta=0.0)
    g = Guidance.from_prompts(gp, "a", "b", 3.0)
    theta, noise = setup(gp, seed=3)
    t = 250
    est = gradient(Rule.SDI, gp, g, gp.means[""], theta, torch.tensor([t, t]), noise, opts)
    x = theta.clone()
    for cur, nxt in [(-1, 99), (99, 199), (199, 250)]:
        eu, ec = hand_eps(gp, x, cur, gp.means["b"]), hand_eps(gp, x, cur, gp.means["a"])
        e = eu - 1.5 * (ec - eu)
        (ac, sc), (an, sn) = scalars(gp, cur), scalars(gp, nxt)
        x = an * (x - sc * e) / ac + sn * e
    a, s = scalars(gp, t)
    kappa = (x - a * theta) / s
    eu, ec = hand_eps(gp, x, t, gp.means["b"]), hand_eps(gp, x, t, gp.means["a"])
    torch.testing.assert_close(est.noise, kappa, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(est.grad, eu + 3.0 * (ec - eu) - kappa, rtol=1e-10, atol=1e-10)


def test_sdi_eta_adds_seed_noise(gp):
    g = Guidance.from_prompts(gp, "a", "", 1.0)
    theta, noise = setup(gp, seed=4)
    t = torch.tensor([700, 700])
    quiet = gradient(Rule.SDI, gp, g, gp.means[""], theta, t, noise, FamilyOptions(sdi_eta=0.0))
    same = gradient(Rule.SDI, gp, g, gp.means[""], theta, t, -noise, FamilyOptions(sdi_eta=0.0))
    loud = gradient(Rule.SDI, gp, g, gp.means[""], theta, t, noise, FamilyOptions(sdi_eta=0.3))
    torch.testing.assert_close(quiet.grad, same.grad, rtol=0, atol=0)  # eta 0: the noise is not used
    assert (loud.x_t - quiet.x_t).abs().max() > 1e-3


# ---- reductions (on the exact, nonlinear imageset prior) ----

def test_ism_with_zero_interval_is_csd_at_the_inverted_point(imageset):
    """s = t: x_t = x_s and grad = eps_cfg(x_s) - eps_null(x_s) = s (eps_y - eps_null)(x_s): CSD there."""
    g = Guidance.from_prompts(imageset, "cat", "", 2.5)
    null = imageset.encode_prompt("")
    theta, noise = initial_noise(imageset, [0, 1]) * 0.3, initial_noise(imageset, [2, 3])
    t = torch.tensor([400, 710])
    ism = gradient(Rule.ISM, imageset, g, null, theta, t, noise, FamilyOptions(ism_interval=0))
    csd = gradient(Rule.CSD, imageset, g, null, theta, t, ism.noise)  # x_t = alpha theta + sigma kappa = ism.x_t
    torch.testing.assert_close(csd.x_t, ism.x_t, rtol=0, atol=1e-12)
    torch.testing.assert_close(ism.grad, csd.grad, rtol=0, atol=1e-9)


def test_nfsd_without_negative_prompt_is_cfg_below_200_and_csd_above(imageset):
    g = Guidance.from_prompts(imageset, "rocket", "", 4.0)
    null = imageset.encode_prompt("")
    theta, noise = initial_noise(imageset, [5, 6]) * 0.5, initial_noise(imageset, [7, 8])
    low, high = torch.tensor([50, 199]), torch.tensor([200, 900])
    nf_low = gradient(Rule.NFSD, imageset, g, null, theta, low, noise)
    sds_low = gradient(Rule.SDS, imageset, g, null, theta, low, noise)
    torch.testing.assert_close(nf_low.grad, sds_low.grad + noise, rtol=0, atol=1e-10)  # = eps_cfg(x_t): no "- eps"
    nf_high = gradient(Rule.NFSD, imageset, g, null, theta, high, noise)
    csd_high = gradient(Rule.CSD, imageset, g, null, theta, high, noise)
    torch.testing.assert_close(nf_high.grad, csd_high.grad, rtol=0, atol=1e-10)


def test_csd_with_negative_equal_to_prompt_is_zero(imageset):
    g = Guidance.from_prompts(imageset, "cat", "cat", 7.5)
    theta, noise = initial_noise(imageset, [0]), initial_noise(imageset, [1])
    est = gradient(Rule.CSD, imageset, g, imageset.encode_prompt(""), theta, torch.tensor([500]), noise)
    assert est.grad.abs().max() == 0


def test_one_step_sdi_is_sds_with_the_noise_eps_of_the_clean_image(imageset):
    """With one inversion step (-1 -> t): x_t = alpha theta + sigma eps(theta, 0), so kappa = eps_cfg(theta, 0)."""
    g = Guidance.from_prompts(imageset, "coffee", "", 2.0)
    theta = initial_noise(imageset, [3]).clamp(-1, 1)
    t = torch.tensor([640])
    est = gradient(Rule.SDI, imageset, g, imageset.encode_prompt(""), theta, t, torch.zeros_like(theta),
                   FamilyOptions(sdi_inversion_steps=1, sdi_eta=0.0))
    from fsd2d.guidance import predict_eps

    kappa = predict_eps(imageset, theta, torch.tensor([0]), g)
    torch.testing.assert_close(est.noise, kappa, rtol=0, atol=1e-9)
    sds = gradient(Rule.SDS, imageset, g, None, theta, t, kappa)
    torch.testing.assert_close(est.grad, sds.grad, rtol=0, atol=1e-9)


def test_sdi_with_exact_inversion_is_ddim(imageset):
    """DDIM on the clean estimate: x0hat_i = x0hat_{i-1} - (sigma/alpha)_{t_i} (eps(x_{t_i}) - kappa_i) with
    kappa_i = eps(x_{t_{i-1}}), the noise that puts x0hat_{i-1} on DDIM's x_{t_i}: an exact inversion gives
    SDI this kappa, and with the full step sigma/alpha SDI is DDIM. FSD reaches DDIM with kappa = eps~ fixed
    instead, on its own variable theta (Proposition 1); SDS with fresh kappa does neither."""
    g = Guidance.from_prompts(imageset, "astronaut", "", 1.0)
    seeds = [0, 1, 2]
    grid = timesteps(40, 20, 980)
    eps = initial_noise(imageset, seeds)
    recorded = []
    x_ddim = ddim_sample(imageset, g, eps, grid, callback=lambda s: recorded.append(s.x_gt))
    b = len(seeds)
    theta, kappa = torch.zeros_like(eps), eps  # x_{t_0} = sigma eps~: theta = 0, kappa = eps~
    for i, t in enumerate(grid):
        tb = t.expand(b)
        est = gradient(Rule.SDS, imageset, g, None, theta, tb, kappa)
        ratio = imageset.schedule.snr_ratio(tb)[0].item()
        theta = updates.flow_step(theta, est.grad, torch.tensor(ratio), torch.tensor(0.0))
        # = DDIM's x_gt at every step (float64 rounding, amplified by sigma/alpha up to 13)
        assert ((theta - recorded[i]).norm() / recorded[i].norm()).item() < 1e-7
        kappa = est.eps_hat  # the exact inversion's noise for the next timestep
    assert ((theta - x_ddim).norm() / x_ddim.norm()).item() < 1e-7


@pytest.mark.numerics
@pytest.mark.parametrize("method", [Method.ISM, Method.SDI, Method.CSD, Method.NFSD])
def test_family_runs_are_reproducible_per_seed(imageset, method):
    g = Guidance.from_prompts(imageset, "cat", "", 1.0)
    config = method.config(DistillConfig(steps=8))
    a = distill(imageset, g, config, [3, 4])
    alone = distill(imageset, g, config, [4])
    assert torch.isfinite(a).all()
    # a seed's result does not depend on the batch, up to the rounding of the posterior's float64 product at
    # another row count (logit sums over D = 3072 pixels, 2 gamma_D ~ 7e-13 relative) carried through 8 steps
    torch.testing.assert_close(a[1:], alone, rtol=0, atol=1e-9)
    assert not torch.equal(a[0], a[1])


def test_compare_2d_all_methods(tmp_path):
    out = tmp_path / "c"
    res = runner.invoke(app, ["compare-2d", "--methods", "ddim,fsd,sds,ism,sdi,csd,nfsd", "--steps", "6",
                              "--seeds", "0,1", "--resolution", "16", "--no-progress", "--out", str(out)])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["methods"]) == ["ddim", "fsd", "sds", "ism", "sdi", "csd", "nfsd"]
    assert (out / "grid.png").is_file() and (out / "images" / "nfsd_seed1.png").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["family"]["ism_interval"] == 25


@pytest.mark.parametrize("method", ["ism", "sdi", "csd", "nfsd"])
def test_gen_3d_family_on_references(tmp_path, method):
    out = tmp_path / method
    res = runner.invoke(app, ["gen-3d", "--method", method, "--steps", "4", "--seeds", "0", "--resolution", "16",
                              "--num-gaussians", "100", "--no-progress", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "metrics.json").read_text())["method"] == method


@pytest.mark.slow
def test_family_on_tiny_stable_diffusion(tiny_sd_path, tmp_path):
    from fsd2d.priors.diffusers_prior import load_stable_diffusion

    prior = load_stable_diffusion(str(tiny_sd_path), resolution=16)
    g = Guidance.from_prompts(prior, "a cat", "blurry", 7.5)
    for method in (Method.ISM, Method.SDI, Method.CSD, Method.NFSD):
        x = distill(prior, g, method.config(DistillConfig(steps=3)), [0, 1])
        assert x.shape == (2, *prior.latent_shape) and torch.isfinite(x).all()
    for method in ("ism", "sdi", "csd", "nfsd"):
        res = runner.invoke(app, ["gen-3d", "--model", str(tiny_sd_path), "--method", method, "--steps", "2",
                                  "--seeds", "0", "--resolution", "16", "--num-gaussians", "50", "--no-progress",
                                  "--out", str(tmp_path / method)])
        assert res.exit_code == 0, (method, res.output)


def test_3d_null_is_the_empty_prompt_at_each_camera_whatever_the_negative_prompt():
    """ISM / NFSD in 3D read the empty prompt's per-camera conditioning (Guidance.null), not the negative prompt's."""
    from fsd3d.cameras import orbit_camera
    from fsd3d.reference_prior import ReferencePrior

    cams = [orbit_camera(20.0, a, 1.65, 43.0, 16, 16) for a in (0.0, 90.0, 0.0)]
    plain = ReferencePrior("mushroom", "", resolution=16)
    negative = ReferencePrior("mushroom", "snowman", resolution=16)
    _, g_plain = plain.view_batch(cams, 3.0)
    _, g_neg = negative.view_batch(cams, 3.0)
    assert torch.equal(g_plain.null_or_uncond, g_plain.uncond)  # '' as negative prompt: null = uncond
    assert torch.equal(g_neg.null_or_uncond, g_plain.uncond) and not torch.equal(g_neg.uncond, g_plain.uncond)
    assert g_neg.null.shape == g_neg.cond.shape == (3, 2 * len(plain.references))  # two distinct cameras


def snapshot(root):
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("command,args,needle", [
    ("compare-2d", ["--methods", "ddim,lsd"], "unknown --methods value 'lsd'"),
    ("compare-2d", ["--methods", "ism", "--ism-interval", "-1"], "ism-interval must be in [0, 999]"),
    ("compare-2d", ["--methods", "ism", "--ism-stride", "0"], "ism-stride must be in [1, 999]"),
    ("compare-2d", ["--methods", "ism", "--ism-inversion-steps", "0"], "ism-inversion-steps must be in [1, 1000]"),
    ("compare-2d", ["--methods", "sdi", "--sdi-inversion-steps", "5000"], "sdi-inversion-steps must be in"),
    ("compare-2d", ["--methods", "sdi", "--sdi-eta", "2"], "sdi-eta must be in [0, 1]"),
    ("compare-2d", ["--methods", "sdi", "--sdi-inversion-cfg", "nan"], "sdi-inversion-cfg must be a finite"),
    ("gen-3d", ["--method", "lsd"], "unknown --method value 'lsd'"),
    ("gen-3d", ["--method", "ism", "--ism-interval", "5000"], "ism-interval must be in [0, 999]"),
])
def test_bad_family_options_one_line(tmp_path, command, args, needle):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text(f'{{"command": "{command}"}}\n')  # an earlier output, which it could replace
    before = snapshot(tmp_path)
    tiny = ["--steps", "3", "--resolution", "16", "--seeds", "0", "--no-progress"]
    res = runner.invoke(app, [command, *tiny, *args, "--out", str(out)])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.stderr
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("rule,t,scale,negative", [(Rule.SDS, 500, 1.0, ""), (Rule.SDS, 500, 3.0, "b"),
                                                  (Rule.CSD, 700, 1.0, ""), (Rule.NFSD, 700, 2.0, ""),
                                                  (Rule.NFSD, 700, 2.0, "b"), (Rule.ISM, 530, 2.0, ""),
                                                  (Rule.ISM, 20, 1.0, ""), (Rule.SDI, 250, 1.0, ""),
                                                  (Rule.SDI, 980, 4.0, "b")])
def test_prior_calls_counts_the_evaluations(gp, rule, t, scale, negative):
    """prior_calls (the benchmark's column) = the samples the prior actually evaluates, per batch row."""
    from fsd2d.family import prior_calls

    seen = []

    class Counting(GaussianPrior):
        def eps(self, x_t, t_, cond):
            seen.append(x_t.shape[0])
            return super().eps(x_t, t_, cond)

    prior = Counting()
    opts = FamilyOptions(ism_interval=30, ism_stride=200, ism_inversion_steps=2)
    g = Guidance.from_prompts(prior, "a", negative, scale)
    theta, noise = setup(prior, b=2)
    gradient(rule, prior, g, prior.means[""], theta, torch.tensor([t, t]), noise, opts)
    assert sum(seen) / 2 == prior_calls(rule, t, scale, opts, negative_is_null=negative == "")
