"""StableDiffusionPrior on a tiny random SD model, loaded through load_stable_diffusion like a user's model."""
from __future__ import annotations

import json
import shutil
import time

import pytest
import torch
from diffusers import DDIMScheduler
from safetensors.torch import load_file

from fsd2d.priors.diffusers_prior import (
    ModelError,
    StableDiffusionPrior,
    load_stable_diffusion,
    schedule_from_config,
)
from fsd2d.schedule import Prediction, to_eps

RES = 16  # tiny VAE factor 2 -> latent [4, 8, 8]


@pytest.fixture(scope="module")
def prior(tiny_sd_path) -> StableDiffusionPrior:
    return load_stable_diffusion(str(tiny_sd_path), resolution=RES)


def _noisy(prior: StableDiffusionPrior, b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, *prior.latent_shape, generator=torch.Generator().manual_seed(seed))  # [b, 4, 8, 8]


def test_shapes_and_describe(prior):
    assert prior.latent_shape == (4, 8, 8)
    assert prior.resolution == RES
    assert prior.dtype == torch.float32 and prior.device == torch.device("cpu")
    info = prior.describe()
    assert info["prediction_type"] == "epsilon" and info["dtype"] == "float32" and info["latent_shape"] == [4, 8, 8]
    assert all(not p.requires_grad for m in (prior.unet, prior.vae, prior.text_encoder) for p in m.parameters())


def test_encode_prompt_shape(prior):
    cond = prior.encode_prompt("a cat")
    assert cond.shape == (1, 77, 32)
    assert not torch.equal(cond, prior.encode_prompt(""))


def test_eps_shape_dtype_and_dependence(prior):
    x = _noisy(prior)
    t = torch.tensor([500, 500])
    cat, dog = prior.encode_prompt("a cat"), prior.encode_prompt("a dog")
    with torch.no_grad():
        eps_cat = prior.eps(x, t, cat.expand(2, -1, -1))
        eps_dog = prior.eps(x, t, dog.expand(2, -1, -1))
        eps_cat_t = prior.eps(x, torch.tensor([100, 100]), cat.expand(2, -1, -1))
    assert eps_cat.shape == x.shape and eps_cat.dtype == x.dtype
    assert torch.isfinite(eps_cat).all()
    assert (eps_cat - eps_dog).abs().max() > 1e-6  # depends on the prompt
    assert (eps_cat - eps_cat_t).abs().max() > 1e-6  # depends on t
    with torch.no_grad():  # a float64 input comes back as float64
        assert prior.eps(x.double(), t, cat.expand(2, -1, -1)).dtype == torch.float64


def test_eps_rejects_mismatched_batch(prior):
    with pytest.raises(ValueError, match="eps expects"):
        prior.eps(_noisy(prior), torch.tensor([1]), prior.encode_prompt("").expand(2, -1, -1))


@pytest.mark.numerics
def test_encode_decode_shapes_and_ranges(prior):
    images = torch.rand(2, 3, RES, RES, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z = prior.encode(images)
        decoded = prior.decode(z)
    assert z.shape == (2, *prior.latent_shape) and torch.isfinite(z).all()
    assert decoded.shape == (2, 3, RES, RES) and decoded.dtype == torch.float32
    assert decoded.min() >= 0.0 and decoded.max() <= 1.0
    # per-sample (no batch mixing; float32 convolutions at another batch size round differently: 1e-5 ~
    # probable_atol of the tiny VAE's 3x3x64 = 576-term sums), and decode maps the VAE's [-1, 1] to [0, 1]
    with torch.no_grad():
        torch.testing.assert_close(prior.encode(images[1:]), z[1:], rtol=1e-5, atol=1e-5)
        raw = prior.vae.decode(z / prior.vae.config.scaling_factor).sample  # [-1, 1]
    torch.testing.assert_close(decoded, ((raw + 1.0) / 2.0).clamp(0.0, 1.0))


def test_encode_is_differentiable(prior):
    images = torch.rand(1, 3, RES, RES, requires_grad=True)
    prior.encode(images).square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_schedule_matches_diffusers(prior, tiny_sd_path):
    config = DDIMScheduler.load_config(str(tiny_sd_path), subfolder="scheduler")
    reference = DDIMScheduler.from_config(config).alphas_cumprod.double()
    assert prior.schedule.num_timesteps == reference.shape[0] == 1000
    assert torch.allclose(prior.schedule.alphas_cumprod, reference, atol=1e-6, rtol=0)


def test_v_prediction_to_eps_is_exact():
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    abar = torch.tensor([0.9, 0.5, 0.01], dtype=torch.float64).view(-1, 1, 1, 1)
    a, s = abar.sqrt(), (1 - abar).sqrt()
    x_t, v = a * x0 + s * eps, a * eps - s * x0
    assert torch.allclose(to_eps(Prediction.V, v, x_t, a, s), eps, atol=1e-12, rtol=0)


def test_v_prediction_model_returns_converted_eps(tiny_sd_path, tmp_path):
    folder = shutil.copytree(tiny_sd_path, tmp_path / "v_model")
    config_file = folder / "scheduler" / "scheduler_config.json"
    config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"prediction_type": "v_prediction"}))
    prior = load_stable_diffusion(str(folder), resolution=RES)
    assert prior.describe()["prediction_type"] == "v_prediction"
    x, t = _noisy(prior), torch.tensor([10, 900])
    cond = prior.encode_prompt("a cat").expand(2, -1, -1)
    with torch.no_grad():
        v = prior.unet(x, t, encoder_hidden_states=cond).sample
        alpha, sigma = prior.schedule.alpha_sigma(t, dtype=x.dtype, device=x.device)
        assert torch.allclose(prior.eps(x, t, cond), alpha * v + sigma * x, atol=1e-6)


def test_unsupported_prediction_type(tiny_sd_path, tmp_path):
    folder = shutil.copytree(tiny_sd_path, tmp_path / "sample_model")
    config_file = folder / "scheduler" / "scheduler_config.json"
    config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"prediction_type": "sample"}))
    with pytest.raises(ModelError, match="prediction_type 'sample'.*allowed"):
        load_stable_diffusion(str(folder), resolution=RES)


def test_folder_without_safetensors_names_component(tiny_sd_path, tmp_path):
    folder = shutil.copytree(tiny_sd_path, tmp_path / "bin_model")
    for weights in (folder / "unet").glob("*.safetensors"):  # leave a .bin in its place
        torch.save(load_file(weights), weights.with_suffix(".bin"))
        weights.unlink()
    with pytest.raises(ModelError, match="no safetensors weights for 'unet'"):
        load_stable_diffusion(str(folder))


def test_folder_missing_component(tiny_sd_path, tmp_path):
    folder = shutil.copytree(tiny_sd_path, tmp_path / "no_vae")
    shutil.rmtree(folder / "vae")
    with pytest.raises(ModelError, match="no 'vae' subfolder"):
        load_stable_diffusion(str(folder))


def test_missing_local_folder(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_stable_diffusion(str(tmp_path / "nowhere"))


def test_bad_resolution(tiny_sd_path):
    with pytest.raises(ModelError, match="resolution 18 is not a positive multiple of 4.*try 16"):
        load_stable_diffusion(str(tiny_sd_path), resolution=18)


def test_half_on_cpu_is_refused(tiny_sd_path):
    for dtype in (torch.float16, torch.bfloat16):
        with pytest.raises(ModelError, match="use torch.float32"):
            load_stable_diffusion(str(tiny_sd_path), dtype=dtype)


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated")  # diffusers vs hub 2.x
def test_offline_unknown_hub_id_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ModelError, match="could not load model 'nobody/does-not-exist'"):
        load_stable_diffusion("nobody/does-not-exist")
    assert time.monotonic() - start < 5.0


def test_linear_schedule_matches_diffusers():
    config = {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02, "num_train_timesteps": 1000}
    reference = DDIMScheduler(**config).alphas_cumprod.double()
    assert torch.allclose(schedule_from_config(config).alphas_cumprod, reference, atol=1e-6, rtol=0)


def test_unsupported_beta_schedule():
    with pytest.raises(ModelError, match="beta_schedule 'squaredcos_cap_v2'.*allowed"):
        schedule_from_config({"beta_schedule": "squaredcos_cap_v2"})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_writer_writes_what_the_pipeline_writes_and_loads_plainly(tmp_path, tiny_sd_path, dtype):
    """save_stable_diffusion (used by build_random_sd and `fsd train-prior`) writes StableDiffusionPipeline's files
    byte for byte, but for text_encoder/config.json's `dtype`, float32 whatever the weights': so the plain
    StableDiffusionPipeline.from_pretrained(DIR) (no dtype) is float32 throughout and runs on the CPU, float16
    weights (the shipped models') included."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from fsd2d.priors.random_sd import save_stable_diffusion

    parts = {"unet": UNet2DConditionModel.from_pretrained(tiny_sd_path, subfolder="unet", torch_dtype=dtype),
             "vae": AutoencoderKL.from_pretrained(tiny_sd_path, subfolder="vae", torch_dtype=dtype),
             "text_encoder": CLIPTextModel.from_pretrained(tiny_sd_path, subfolder="text_encoder", dtype=dtype),
             "tokenizer": CLIPTokenizer.from_pretrained(tiny_sd_path, subfolder="tokenizer"),
             "scheduler": DDIMScheduler.from_pretrained(tiny_sd_path, subfolder="scheduler")}
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    save_stable_diffusion(ours, **parts)
    StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(theirs, safe_serialization=True)
    files = sorted(p.relative_to(ours).as_posix() for p in ours.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(theirs).as_posix() for p in theirs.rglob("*") if p.is_file())
    for rel in files:
        if rel != "text_encoder/config.json":
            assert (ours / rel).read_bytes() == (theirs / rel).read_bytes(), rel
    config, their_config = (json.loads((d / "text_encoder" / "config.json").read_text()) for d in (ours, theirs))
    assert config == their_config | {"dtype": "float32"}
    pipe = StableDiffusionPipeline.from_pretrained(ours)
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.float32
    pipe.set_progress_bar_config(disable=True)
    images = pipe("cat", height=RES, width=RES, num_inference_steps=2, output_type="np").images
    assert images.shape == (1, RES, RES, 3)
    assert torch.equal(load_file(ours / "unet" / "diffusion_pytorch_model.safetensors")["conv_in.weight"],
                       parts["unet"].conv_in.weight.detach())  # the weights as given (float16 stays float16)
