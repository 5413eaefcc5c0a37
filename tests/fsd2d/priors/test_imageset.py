"""The analytic prior against an independent brute-force posterior on a three-image set."""
import numpy as np
import pytest
import torch

from fsd2d.guidance import Guidance, cfg_combine, predict_eps
from fsd2d.priors.base import PromptError
from fsd2d.priors.imageset import PROMPTS, ImageSetPrior


def tiny_prior():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1  # [K=3, 3, 4, 4]
    labels = torch.tensor([0, 0, 1])  # prompt "a": images 0, 1; prompt "b": image 2
    return ImageSetPrior.from_images(images, labels, ["a", "b"]), images.numpy()


def brute_force_eps(x_t, t, prior, images, weights):
    """eps_hat from first principles: Gaussian likelihoods N(x_t; alpha y_k, sigma^2 I), priors `weights`."""
    abar = prior.schedule.alphas_cumprod[t].item()
    a, s = np.sqrt(abar), np.sqrt(1 - abar)
    out = []
    for x in x_t:
        logl = np.array([-np.sum((x - a * y) ** 2) / (2 * s * s) for y in images]) + np.log(weights)
        post = np.exp(logl - logl.max())
        post /= post.sum()
        x0 = np.tensordot(post, images, axes=1)
        out.append((x - a * x0) / s)
    return np.stack(out)


@pytest.mark.parametrize("t", [0, 30, 400, 999])
def test_eps_equals_brute_force_posterior(t):
    prior, images = tiny_prior()
    x_t = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
    tt = torch.full((5,), t)
    cases = {"a": [0.5, 0.5, 0.0], "b": [0.0, 0.0, 1.0], "": [0.25, 0.25, 0.5]}  # "" = equal mix of prompts
    for prompt, w in cases.items():
        eps = prior.eps(x_t, tt, prior.encode_prompt(prompt).expand(5, -1)).numpy()
        nz = np.array(w) > 0
        ref = brute_force_eps(x_t.numpy(), t, prior, images[nz], np.array(w)[nz])
        np.testing.assert_allclose(eps, ref, rtol=1e-10, atol=1e-10)


def test_guided_eps_is_one_batch_with_standard_cfg():
    prior, _ = tiny_prior()
    x_t = torch.randn(4, 3, 4, 4, dtype=torch.float64)
    t = torch.tensor([10, 200, 600, 900])
    g = Guidance.from_prompts(prior, "a", "b", 3.0)
    eps_c = prior.eps(x_t, t, g.cond.expand(4, -1))
    eps_u = prior.eps(x_t, t, g.uncond.expand(4, -1))
    torch.testing.assert_close(predict_eps(prior, x_t, t, g), eps_u + 3.0 * (eps_c - eps_u), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cfg_combine(eps_u, eps_c, 0.0), eps_u)


def test_low_noise_posterior_picks_the_nearest_image():
    prior, images = tiny_prior()
    x0 = torch.as_tensor(images[2:3]) + 0.01
    a, s = prior.schedule.alpha_sigma(torch.tensor([0]), torch.float64, "cpu")
    post = prior.posterior(a * x0, torch.tensor([0]), prior.encode_prompt(""))
    assert post[0].argmax().item() == 2 and post[0, 2].item() > 0.999


def test_builtin_sets_and_prompts():
    prior = ImageSetPrior()
    assert prior.latent_shape == (3, 32, 32)
    assert prior.images.min() >= -1 and prior.images.max() <= 1
    sizes = prior.describe()["set_sizes"]
    assert list(sizes) == list(PROMPTS) and all(n >= 24 for n in sizes.values())
    cat = prior.set_images("cat")
    assert cat.shape[0] == sizes["cat"] and cat.min() >= 0 and cat.max() <= 1
    # the crops differ from one another: a real distribution, not copies
    flat = cat.flatten(1)
    assert torch.cdist(flat, flat).add(torch.eye(len(flat)) * 1e9).min() > 0.5
    with pytest.raises(PromptError, match="cat"):
        prior.encode_prompt("a dragon")
