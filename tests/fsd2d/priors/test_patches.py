"""The local patch prior against a brute-force per-pixel posterior, plus its symmetries and contracts."""
import numpy as np
import pytest
import torch

from fsd2d.errors import InputError
from fsd2d.priors.base import PromptError
from fsd2d.priors.patches import PatchPrior

SIZES = ((500, 5), (0, 3))  # k = 5 for t >= 500, k = 3 below


def tiny_prior(res: int = 6, **kw) -> tuple[PatchPrior, np.ndarray]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, res, res, generator=g, dtype=torch.float64) * 2 - 1  # [K=3, 3, R, R]
    labels = torch.tensor([0, 0, 1])  # prompt "a": images 0, 1; prompt "b": image 2
    return PatchPrior.from_images(images, labels, ["a", "b"], patch_sizes=SIZES, **kw), images.numpy()


def reflect(i: int, n: int) -> int:
    return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)


def brute_force_eps(x_t: np.ndarray, t: int, prior: PatchPrior, images: np.ndarray, weights: np.ndarray):
    """eps_hat pixel by pixel from the formula: reflect-padded k x k neighbourhoods, Gaussian likelihoods."""
    abar = prior.schedule.alphas_cumprod[t].item()
    a, s = np.sqrt(abar), np.sqrt(1 - abar)
    k = 5 if t >= 500 else 3
    h = k // 2
    where = prior.bank_where.numpy()  # [M, 3] (image, y, x) of each bank patch's centre
    _, r, _ = x_t.shape
    offsets = [(dy, dx) for dy in range(-h, h + 1) for dx in range(-h, h + 1)]
    bank = np.array([[images[i, :, y + dy, x + dx] for dy, dx in offsets] for i, y, x in where])  # [M, k*k, 3]
    centres = np.array([images[i, :, y, x] for i, y, x in where])  # [M, 3]
    out = np.zeros_like(x_t)
    for py in range(r):
        for px in range(r):
            hood = np.array([x_t[:, reflect(py + dy, r), reflect(px + dx, r)] for dy, dx in offsets])  # [k*k, 3]
            logl = np.full(len(bank), -np.inf)
            for j, patch in enumerate(bank):
                if weights[j] > 0:
                    logl[j] = np.log(weights[j]) - np.sum((hood - a * patch) ** 2) / (2 * s * s)
            post = np.exp(logl - logl.max())
            x0 = (post / post.sum()) @ centres  # [3]
            out[:, py, px] = (x_t[:, py, px] - a * x0) / s
    return out


def bank_weights(prior: PatchPrior, prompt: str) -> np.ndarray:
    """Prior weights pi_j written out: uniform over the prompt's patches; "" = equal mix of the prompts."""
    labels = prior.bank_labels.numpy()
    if prompt == "":
        return np.array([0.5 / np.sum(labels == lab) for lab in labels])
    p = prior.prompts.index(prompt)
    return np.where(labels == p, 1.0 / np.sum(labels == p), 0.0)


def test_bank_is_every_patch_that_fits():
    prior, _ = tiny_prior()  # largest k = 5 in 6 x 6 images: centres at y, x in {2, 3}
    where = {tuple(w) for w in prior.bank_where.tolist()}
    assert where == {(i, y, x) for i in range(3) for y in (2, 3) for x in (2, 3)}
    assert prior.bank_size == 12 and prior.encode_prompt("a").shape == (1, 12)


@pytest.mark.parametrize("t", [0, 200, 500, 999])
def test_eps_equals_brute_force(t):
    prior, images = tiny_prior()
    x_t = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
    for prompt in ("a", "b", ""):
        eps = prior.eps(x_t, torch.full((2,), t), prior.encode_prompt(prompt).expand(2, -1)).numpy()
        ref = np.stack([brute_force_eps(x, t, prior, images, bank_weights(prior, prompt)) for x in x_t.numpy()])
        np.testing.assert_allclose(eps, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("t", [100, 700])
def test_translation_equivariance_away_from_borders(t):
    prior, _ = tiny_prior(res=16)
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cond, tt = prior.encode_prompt("a"), torch.tensor([t])
    dy, dx, h = 2, 3, 2  # shift, and the largest patch's half width
    shifted = prior.eps(torch.roll(x, (dy, dx), (2, 3)), tt, cond)
    moved = torch.roll(prior.eps(x, tt, cond), (dy, dx), (2, 3))
    # Pixels whose neighbourhood lies inside the image both before and after the shift.
    inner = (slice(None), slice(None), slice(dy + h, 16 - h), slice(dx + h, 16 - h))
    torch.testing.assert_close(shifted[inner], moved[inner], rtol=0, atol=1e-10)
    assert not torch.allclose(shifted, moved, atol=1e-6)  # the borders (reflect padding) do differ


@pytest.mark.numerics
def test_mixed_timesteps_and_prompts_equal_per_sample_calls():
    prior, _ = tiny_prior(res=8)
    ts = torch.tensor([900, 40, 500, 499, 900])
    prompts = ["a", "", "b", "a", ""]
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    cond = torch.cat([prior.encode_prompt(p) for p in prompts])
    batch = prior.eps(x, ts, cond)
    single = torch.cat([prior.eps(x[i : i + 1], ts[i : i + 1], cond[i : i + 1]) for i in range(5)])
    # float64, grouped by patch size or one by one: patch sums of <= 75 terms, 2 gamma_75 ~ 2e-14 relative
    torch.testing.assert_close(batch, single, rtol=0, atol=1e-12)
    assert prior.patch_size(ts).tolist() == [5, 3, 5, 3, 5]


def test_float32_compute_is_close_to_float64():
    exact, _ = tiny_prior(res=8)
    fast, _ = tiny_prior(res=8, compute_dtype=torch.float32)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t, cond = torch.tensor([50, 400, 900]), exact.encode_prompt("a").expand(3, -1)
    x0 = fast.posterior_mean(x, t, cond)
    assert x0.dtype == torch.float64
    torch.testing.assert_close(x0, exact.posterior_mean(x, t, cond), rtol=0, atol=1e-4)


def test_unconditional_weights_are_an_equal_mix_of_prompts():
    prior, _ = tiny_prior(res=8, patches_per_prompt=5)  # 5 of the 32 and 16 patches that fit
    w = prior.encode_prompt("").exp()[0]
    assert prior.bank_size == 10 and bool((w > 0).all())
    for p in range(2):
        assert float(w[prior.bank_labels == p].sum()) == pytest.approx(0.5, abs=1e-15)


@pytest.fixture(scope="module")
def builtin():
    return PatchPrior()


def test_builtin_eps_contract(builtin):
    b = 3
    x = torch.randn(b, *builtin.latent_shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for prompt in ("brick", "", "Cat "):
        eps = builtin.eps(x, torch.tensor([999, 500, 0]), builtin.encode_prompt(prompt).expand(b, -1))
        assert eps.shape == x.shape and eps.dtype == torch.float64 and torch.isfinite(eps).all()
    info = builtin.describe()
    assert info["class"] == "PatchPrior" and info["latent_shape"] == [3, 32, 32]
    assert set(info["bank_sizes"].values()) == {512} and builtin.default_cfg == 1.0
    assert torch.equal(builtin.bank_where, PatchPrior().bank_where)  # the bank is deterministic


def test_builtin_float32(builtin):
    prior = PatchPrior(dtype=torch.float32)
    x = torch.randn(2, *prior.latent_shape, generator=torch.Generator().manual_seed(5))
    eps = prior.eps(x, torch.tensor([20, 980]), prior.encode_prompt("grass").expand(2, -1))
    assert eps.dtype == torch.float32 and torch.isfinite(eps).all()


def test_bad_inputs(builtin):
    with pytest.raises(PromptError, match="brick"):
        builtin.encode_prompt("a spaceship")
    x, t, cond = torch.zeros(1, 3, 32, 32, dtype=torch.float64), torch.tensor([10]), builtin.encode_prompt("cat")
    with pytest.raises(InputError, match=r"\[1, 3, 16, 16\]"):
        builtin.eps(torch.zeros(1, 3, 16, 16, dtype=torch.float64), t, cond)
    with pytest.raises(InputError, match="cond"):
        builtin.eps(x, t, cond[:, :10])
    with pytest.raises(InputError, match="t must be"):
        builtin.eps(x, torch.tensor([10, 20]), cond)
    with pytest.raises(InputError, match="odd"):
        PatchPrior.from_images(torch.zeros(1, 3, 8, 8), torch.zeros(1), ["a"], patch_sizes=((0, 4),))
    with pytest.raises(InputError, match="one of them 0"):
        PatchPrior.from_images(torch.zeros(1, 3, 8, 8), torch.zeros(1), ["a"], patch_sizes=((10, 3),))
