"""VSD / ESD (fsd2d.vsd): the critic is off outside its own calls, the reductions the maths promises (a critic equal
to the pretrained model gives CSD's classifier term at s - 1; a critic that has learned one particle gives SDS), the
critic learns, particles share one critic, its state restores to the same bits, and the one-line refusals."""
import json

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from fsd2d import updates, vsd
from fsd2d.family import FamilyOptions, Rule, classifier_term, eps_many, gradient
from fsd2d.guidance import Guidance
from fsd2d.priors.load import load_prior
from fsd2d.sampling import DistillConfig, Method, sample

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def prior(tiny_sd_path):
    return load_prior(str(tiny_sd_path), device="cpu", dtype="float64")


@pytest.fixture(scope="module")
def guidance(prior):
    return Guidance.from_prompts(prior, "a cat", "", 7.5)


def point(prior, seed=0, b=2):
    """(theta, t, noise) of b rows, drawn from `seed`."""
    gen = torch.Generator().manual_seed(seed)
    shape = (b, *prior.latent_shape)
    theta = torch.randn(shape, generator=gen, dtype=torch.float64)
    noise = torch.randn(shape, generator=gen, dtype=torch.float64)
    return theta, torch.tensor([700, 300])[:b], noise


def test_critic_leaves_the_prior_unchanged_outside_its_calls(prior):
    """The prior's eps is the same bits before a critic exists, while it exists (after it trained), and after close."""
    theta, t, noise = point(prior)
    cond = prior.encode_prompt("a cat").expand(2, -1, -1)
    before = prior.eps(theta, t, cond)
    with vsd.Critic(prior, "c", seed=0, lr=1e-2) as critic:
        for _ in range(3):
            critic.train_step(prior, theta, cond, None)
        assert not torch.equal(critic.eps(prior, theta, t, cond, None), before)  # the critic has moved away
        assert torch.equal(prior.eps(theta, t, cond), before)
    assert torch.equal(prior.eps(theta, t, cond), before)
    assert not getattr(prior.unet, "peft_config", {})  # nothing of the adapter is left configured


def test_a_critic_equal_to_the_prior_gives_the_classifier_term_at_s_minus_1(prior, guidance):
    """A fresh critic (LoRA and camera MLP at their zero start) is the pretrained model, so VSD's gradient is
    eps_s - eps_1 = (s - 1)(eps_c - eps_u): CSD's term at scale s - 1, zero without CFG (not SDS's eps_s - eps)."""
    theta, t, noise = point(prior)
    with vsd.Critic(prior, "c", seed=0) as critic:
        est = gradient(Rule.VSD, prior, guidance, guidance.uncond, theta, t, noise, critics=vsd.Critics([critic]))
        plain = gradient(Rule.VSD, prior, Guidance(guidance.cond, guidance.uncond, 1.0), guidance.uncond, theta, t,
                         noise, critics=vsd.Critics([critic]))
    x_t = updates.add_noise(theta, noise, *prior.schedule.alpha_sigma(t, theta.dtype, theta.device))
    eps_u, eps_c = eps_many(prior, x_t, t, [guidance.uncond, guidance.cond])
    torch.testing.assert_close(est.grad, classifier_term(eps_u, eps_c, 6.5), rtol=1e-9, atol=1e-12)
    assert float(plain.grad.abs().max()) == 0.0
    assert float((est.grad - (est.eps_hat - noise)).abs().max()) > 1e-3  # and this is not SDS's gradient


class PointMassCritic:
    """A critic that has learned one particle theta exactly: eps_lora(x_t) = (x_t - alpha_t theta) / sigma_t."""

    def __init__(self, prior, theta):
        self.prior, self.theta = prior, theta

    def eps(self, prior, x_t, t, cond, cameras, scale=1.0):
        alpha, sigma = self.prior.schedule.alpha_sigma(t, x_t.dtype, x_t.device)
        return updates.eps_from_x0(x_t, self.theta, alpha, sigma)


def test_a_critic_that_learned_its_particle_gives_sds(prior, guidance):
    """Single-particle VSD tends to SDS (ESD's observation): with the point mass's exact score as the critic the
    gradient is eps_s(x_t) - eps, SDS's, to rounding."""
    theta, t, noise = point(prior, b=1)
    est = vsd.vsd_gradient(prior, vsd.Critics([PointMassCritic(prior, theta)]), guidance, theta, t, noise, 1.0)
    sds = gradient(Rule.SDS, prior, guidance, guidance.uncond, theta, t, noise)
    torch.testing.assert_close(est.grad, sds.grad, rtol=1e-9, atol=1e-9)


def test_the_critic_learns_a_fixed_render():
    """Trained on one fixed particle, the critic of the trained tiny-sd learns it: its denoising error on fixed
    held-out draws falls below 0.6 of its start (0.84 -> 0.44 measured; lr 1e-3, 60 steps)."""
    prior = load_prior("tiny-sd", device="cpu", dtype="float64")
    theta, _, _ = point(prior, seed=3, b=1)
    cond = prior.encode_prompt("cat")
    gen = torch.Generator().manual_seed(9)
    t = torch.randint(0, 1000, (32,), generator=gen)
    noise = torch.randn(32, *prior.latent_shape, generator=gen, dtype=torch.float64)
    x_t = updates.add_noise(theta.expand(32, -1, -1, -1), noise, *prior.schedule.alpha_sigma(t, torch.float64, "cpu"))

    def error(critic):
        with torch.no_grad():
            return float((critic.eps(prior, x_t, t, cond, None) - noise).pow(2).mean())

    with vsd.Critic(prior, "c", seed=0, lr=1e-3) as critic:
        start = error(critic)
        losses = [float(critic.train_step(prior, theta.expand(4, -1, -1, -1), cond, None)) for _ in range(60)]
        end = error(critic)
    assert end < 0.6 * start, (start, end)
    assert sum(losses[-10:]) < sum(losses[:10])


def test_particles_share_one_critic_per_seed(prior, guidance, monkeypatch):
    """2 seeds x 3 particles: two critics (one per seed), each trained on its own 3 rows every step; the result has
    a row per seed and particle, seed-major, particle 0 drawn from the seed's own generator."""
    seen = []
    train = vsd.Critic.train_step

    def spy(self, prior, x0, cond, cameras):
        seen.append((self.name, x0.shape[0]))
        return train(self, prior, x0, cond, cameras)

    monkeypatch.setattr(vsd.Critic, "train_step", spy)
    base = DistillConfig(steps=3, family=FamilyOptions(particles=3))
    out = sample(prior, guidance, Method.VSD, [5, 6], base)
    assert out.shape == (6, *prior.latent_shape)
    assert sorted(set(seen)) == [("critic0", 3), ("critic1", 3)] and len(seen) == 6
    assert not torch.equal(out[0], out[1])  # the particles differ


def test_esd_is_vsd_in_2d_and_its_camera_cfg_is_the_one_helper(prior, guidance):
    """In 2D (no cameras) ESD's result is VSD's to the bit; with cameras its critic prediction is
    eps(c=0) + (1 - lambda)(eps(c) - eps(c=0))."""
    base = DistillConfig(steps=3)
    assert torch.equal(sample(prior, guidance, Method.VSD, [1], base), sample(prior, guidance, Method.ESD, [1], base))
    theta, t, _ = point(prior)
    cond = guidance.cond.expand(2, -1, -1)
    cams = torch.randn(2, vsd.CAMERA_DIM, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with vsd.Critic(prior, "c", seed=0, lr=1e-2) as critic:
        critic.train_step(prior, theta, cond, cams)
        critic.train_step(prior, theta, cond, cams)  # the camera MLP is no longer zero
        with torch.no_grad():
            mixed = critic.eps(prior, theta, t, cond, cams, 0.5)
            e0, ec = critic.eps(prior, theta, t, cond, torch.zeros_like(cams)), critic.eps(prior, theta, t, cond, cams)
    assert not torch.allclose(e0, ec)
    torch.testing.assert_close(mixed, e0 + 0.5 * (ec - e0), rtol=1e-9, atol=1e-12)


def test_critic_state_restores_to_the_same_bits(prior):
    """Save a critic after 3 steps, go on 3 more; a new critic loaded from the save and stepped 3 times ends with the
    same LoRA, camera MLP and AdamW moments (the generator's draws included)."""
    theta, _, _ = point(prior, b=2)
    cond = prior.encode_prompt("a cat").expand(2, -1, -1)
    cams = torch.ones(2, vsd.CAMERA_DIM, dtype=torch.float64)
    with vsd.Critic(prior, "a", seed=4, lr=1e-3) as a:
        for _ in range(3):
            a.train_step(prior, theta, cond, cams)
        saved = a.state_dict()  # a copy: the steps below do not change it
        for _ in range(3):
            a.train_step(prior, theta, cond, cams)
        want = a.state_dict()
    with vsd.Critic(prior, "b", seed=99, lr=1e-3) as b:  # another seed: everything comes from the state
        b.load_state_dict(saved)
        for _ in range(3):
            b.train_step(prior, theta, cond, cams)
        got = b.state_dict()
    assert all(torch.equal(x, y) for x, y in zip(want["lora"], got["lora"]))
    assert all(torch.equal(want["camera_mlp"][k], got["camera_mlp"][k]) for k in want["camera_mlp"])
    for sa, sb in zip(want["optimizer"]["state"].values(), got["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert got["steps"] == 6


def test_critic_parameters_counts_what_the_critic_trains(prior):
    with vsd.Critic(prior, "c", seed=0) as critic:
        assert vsd.critic_parameters(prior) == critic.trained_parameters > 0


def test_vsd_on_an_analytic_prior_is_one_line(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["compare-2d", "--methods", "vsd", "--steps", "2", "--seeds", "0", "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: ") and res.output.count("\n") == 1 and "closed-form score" in res.output
    assert not out.exists()


def test_particles_without_a_critic_method_is_one_line(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["compare-2d", "--methods", "fsd", "--particles", "2", "--steps", "2", "--out", str(out)])
    assert res.exit_code == 2 and "needs --methods with vsd or esd" in res.output and not out.exists()


def test_compare_2d_with_particles_writes_them_and_their_cost(tiny_sd_path, tmp_path):
    """compare-2d --methods vsd --particles 2: particle 0 in the grid, the others in images/ and particles_vsd.png,
    the particle diversity and the critic's cost in metrics.json (4 evaluations per particle and step at CFG 7.5:
    2 guided, 1 critic, 1 critic training)."""
    out = tmp_path / "run"
    res = runner.invoke(app, ["compare-2d", "--model", str(tiny_sd_path), "--prompt", "a cat", "--methods", "vsd,dsd",
                              "--particles", "2", "--steps", "3", "--seeds", "0,1", "--cfg", "7.5", "--out", str(out),
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["methods"]["vsd"]["particles"] == 2 and m["methods"]["vsd"]["particle_diversity"] > 0.0
    assert m["cost"]["vsd"]["prior_evaluations_per_step"] == 8.0
    assert m["cost"]["vsd"]["trained_parameters"] > 0 and m["cost"]["dsd"]["trained_parameters"] == 0
    assert (out / "particles_vsd.png").exists() and (out / "images" / "vsd_seed1_particle1.png").exists()
    assert not (out / "particles_dsd.png").exists() and "particles" not in m["methods"]["dsd"]
    again = runner.invoke(app, ["compare-2d", "--model", str(tiny_sd_path), "--prompt", "a cat", "--methods", "vsd",
                                "--particles", "2", "--steps", "2", "--seeds", "0", "--out", str(out), "--no-progress"])
    assert again.exit_code == 0, again.output  # its own particles_*.png: the folder is compare-2d's to replace


def test_particles_are_distinct_streams(prior, guidance):
    """Every particle of a seed draws from a stream of its own (torch keeps a seed's low 32 bits only: offsets by
    multiples of 2^32 would repeat a stream), so 3 particles end as 3 different images."""
    out = sample(prior, guidance, Method.VSD, [2], DistillConfig(steps=2, family=FamilyOptions(particles=3)))
    assert not torch.equal(out[0], out[2]) and not torch.equal(out[1], out[2]) and not torch.equal(out[0], out[1])


def test_closing_the_last_critic_restores_the_denoiser(tiny_sd_path):
    """After the last critic closes: no LoRA wrapper, no peft config, the same state-dict keys and requires_grad."""
    prior = load_prior(str(tiny_sd_path), device="cpu", dtype="float64")
    prior.unet.conv_in.weight.requires_grad_(True)  # a weight left trainable by its loader stays so
    keys, flags = list(prior.unet.state_dict()), {n: p.requires_grad for n, p in prior.unet.named_parameters()}
    a, b = vsd.Critic(prior, "a", seed=0), vsd.Critic(prior, "b", seed=1)
    a.close()
    assert any(isinstance(m, type(b.layers[0])) for m in prior.unet.modules())  # b still there
    b.close()
    assert list(prior.unet.state_dict()) == keys and not hasattr(prior.unet, "peft_config")
    assert {n: p.requires_grad for n, p in prior.unet.named_parameters()} == flags


def test_a_half_precision_critic_trains_in_float32(tiny_sd_path):
    """On a float16 model the LoRA and the camera MLP are float32 (AdamW's steps underflow in float16) and a few
    training steps stay finite; the critic's eps comes back in the input's dtype."""
    prior = load_prior(str(tiny_sd_path), device="cpu", dtype="float32")
    prior.unet.to(torch.float16)  # as on CUDA (the loader refuses float16 on the CPU: slow, not wrong)
    prior.dtype = torch.float16
    theta = torch.randn(2, *prior.latent_shape, generator=torch.Generator().manual_seed(0))
    cond = prior.encode_prompt("a cat")
    with vsd.Critic(prior, "h", seed=0, lr=1e-3) as critic:
        assert {p.dtype for p in critic.lora_params} == {torch.float32}
        losses = [float(critic.train_step(prior, theta, cond, torch.ones(2, vsd.CAMERA_DIM))) for _ in range(3)]
        assert all(torch.isfinite(p).all() for p in critic.lora_params)
        with torch.no_grad():
            eps = critic.eps(prior, theta, torch.tensor([300, 600]), cond, torch.ones(2, vsd.CAMERA_DIM), 0.5)
    assert all(map(lambda v: v == v and abs(v) < 1e6, losses)) and eps.dtype == theta.dtype and eps.isfinite().all()


@pytest.mark.parametrize("flags, needle", [
    (["--esd-lambda", "2"], "esd-lambda must be in [0, 1], got 2.0"),
    (["--lora-lr", "0"], "lora-lr must be in (0, 1], got 0.0"),
    (["--particles", "0"], "particles must be"),
    (["--lora-rank", "0"], "lora-rank must be"),
    (["--dsd-points", "1"], "dsd-points must be"),
])
@pytest.mark.parametrize("command", ["compare-2d", "gen-3d"])
def test_bad_rival_options_are_one_line(tmp_path, command, flags, needle):
    out = tmp_path / "run"
    method = ["--methods", "vsd,dsd"] if command == "compare-2d" else ["--method", "vsd"]
    res = runner.invoke(app, [command, "--model", "tiny-sd" if command == "compare-2d" else "tiny-sd-objects",
                              *method, *flags, "--steps", "2", "--out", str(out), "--no-progress"])
    assert res.exit_code == 2 and res.output.startswith("error: ") and needle in res.output, res.output
    assert not out.exists()
