"""SDXLPrior on a tiny random SDXL folder (fsd2d.priors.random_backbones.build_random_sdxl), checked against
diffusers' own StableDiffusionXLPipeline loaded from the same folder."""
from __future__ import annotations

import shutil

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline, EulerDiscreteScheduler, UNet2DConditionModel
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from fsd2d.guidance import Guidance
from fsd2d.priors.base import ModelError
from fsd2d.priors.diffusers_prior import quiet_libraries, scheduler_config_of, unpack_cond
from fsd2d.priors.random_backbones import build_random_sdxl
from fsd2d.priors.sdxl import SDXLPrior, load_sdxl
from fsd2d.sampling import DistillConfig, Method, ddim_sample, initial_noise, sample
from fsd2d.schedule import timesteps

RES = 16  # tiny VAE factor 2 -> latent [4, 8, 8]
SEEDS = (0, 1)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_random_sdxl(tmp_path_factory.mktemp("tiny_sdxl"))


@pytest.fixture(scope="module")
def prior(folder) -> SDXLPrior:
    return load_sdxl(str(folder), dtype=torch.float64, resolution=RES)


@pytest.fixture(scope="module")
def pipe(folder):
    with quiet_libraries():
        pipeline = DiffusionPipeline.from_pretrained(folder).to(torch.float64)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_folder_is_a_plain_sdxl_pipeline(pipe, prior):
    assert type(pipe).__name__ == "StableDiffusionXLPipeline" and pipe.config.force_zeros_for_empty_prompt
    assert prior.latent_shape == (4, 8, 8) and prior.resolution == RES and prior.default_cfg == 5.0
    assert prior.describe()["empty_prompt"] == "zeros" and prior.zero_empty
    # the micro-conditioning: (original size, crop top-left, target size) for height = width = RES
    time_ids = pipe._get_add_time_ids((RES, RES), (0, 0), (RES, RES), torch.float64,
                                      text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
    assert torch.equal(prior.time_ids, time_ids)


def test_encode_prompt_is_the_pipelines(pipe, prior):
    """Tokens (both penultimate states side by side) and pooled (text_embeds) exactly as the pipeline's; the
    unconditional "" is the pipeline's default negative (no negative prompt: zeros, force_zeros_for_empty_prompt);
    a negative prompt given is encoded as the pipeline encodes it."""
    cpu = torch.device("cpu")
    pe, ne, pp, npool = pipe.encode_prompt("a cat", device=cpu, do_classifier_free_guidance=True)
    tokens, pooled = unpack_cond(prior.encode_prompt("a cat"), prior.pooled_size)
    assert tokens.shape == pe.shape == (1, 77, 64) and pooled.shape == pp.shape == (1, 32)
    torch.testing.assert_close(tokens, pe, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pooled, pp, rtol=1e-12, atol=1e-12)
    empty_tokens, empty_pooled = unpack_cond(prior.encode_prompt(""), prior.pooled_size)
    assert ne.abs().max() == npool.abs().max() == 0
    assert torch.equal(empty_tokens, ne) and torch.equal(empty_pooled, npool)
    _, ne_dog, _, npool_dog = pipe.encode_prompt("a cat", device=cpu, do_classifier_free_guidance=True,
                                                 negative_prompt="a dog")
    dog_tokens, dog_pooled = unpack_cond(prior.encode_prompt("a dog"), prior.pooled_size)
    torch.testing.assert_close(dog_tokens, ne_dog, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dog_pooled, npool_dog, rtol=1e-12, atol=1e-12)


def test_ddim_is_the_pipelines_sampler(pipe, prior):
    """Our DDIM (CFG 5 with "" as the negative) from the same start = the pipeline's own loop with a DDIM scheduler
    of the folder's config (leading spacing, no offset: the grid 900, 800, ..., 0; alpha = 1 at the end), with its
    default negative (zeros), float64 throughout. Measured: 3.4e-7 relative, from diffusers' float32 tables
    (DDIMScheduler.alphas_cumprod is float32, so each step's coefficients carry ~6e-8 relative error)."""
    steps = 10
    grid = timesteps(steps, 0, 900)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, set_alpha_to_one=True, steps_offset=0,
                                               clip_sample=False, timestep_spacing="leading")
    noise = initial_noise(prior, SEEDS)
    ours = ddim_sample(prior, Guidance(prior.encode_prompt("a cat"), prior.encode_prompt(""), 5.0), noise, grid)
    _, sigma = prior.schedule.alpha_sigma(grid[:1], torch.float64, "cpu")
    theirs = pipe("a cat", num_inference_steps=steps, guidance_scale=5.0, num_images_per_prompt=len(SEEDS),
                  latents=sigma * noise, height=RES, width=RES, output_type="latent").images
    assert torch.equal(pipe.scheduler.timesteps, grid)
    assert theirs.dtype == torch.float64
    assert rel_err(ours, theirs) < 1e-6


def test_fsd_exact_equals_ddim(prior):
    g = Guidance.from_prompts(prior, "a cat", "", 5.0)
    base = DistillConfig(steps=4, t_min=0, t_max=900)
    ddim = sample(prior, g, Method.DDIM, SEEDS, base)
    assert rel_err(sample(prior, g, Method.FSD_EXACT, SEEDS, base), ddim) <= 1e-12
    assert ddim.abs().max() > 0.1  # not a trivial match


def test_schedule_is_the_schedulers(folder, prior):
    scheduler = EulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler")
    abar = scheduler.alphas_cumprod.double()  # float32 in diffusers
    torch.testing.assert_close(prior.schedule.alphas_cumprod, abar, rtol=0, atol=1e-6)
    # Euler's sigma = our sigma_t / alpha_t; diffusers' 1 - abar carries abar's float32 rounding (~6e-8) over
    # 1 - abar_0 = 8.5e-4, so its sigmas are good to ~7e-5 / 2 relative at t = 0 (measured 1.3e-5)
    euler_sigmas = torch.as_tensor(scheduler.sigmas[:-1]).double().flip(0)  # set for all 1000 steps, decreasing
    torch.testing.assert_close(prior.schedule.snr_ratio(torch.arange(1000)), euler_sigmas, rtol=4e-5, atol=0)


def test_vae_runs_in_float32_under_a_half_dtype(folder):
    """A bfloat16 prior (the only half dtype the CPU runs) decodes and encodes with a float32 VAE: inputs reach
    the VAE's convolutions in float32, results come back in the caller's conventions."""
    half = torch.bfloat16
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=half)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=half)
    texts = (CLIPTextModel.from_pretrained(folder, subfolder="text_encoder"),
             CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder_2"))
    tokenizers = tuple(CLIPTokenizer.from_pretrained(folder, subfolder=s) for s in ("tokenizer", "tokenizer_2"))
    prior = SDXLPrior(unet, vae, texts, tokenizers, scheduler_config_of(str(folder), str(folder), True), RES)
    assert prior.dtype == half and prior.vae_dtype == torch.float32 and prior.vae.dtype == torch.float32
    seen = []
    for conv in (prior.vae.encoder.conv_in, prior.vae.decoder.conv_in):
        conv.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    z = torch.randn(2, *prior.latent_shape, generator=torch.Generator().manual_seed(0)).to(half)
    images = prior.decode(z)
    latents = prior.encode(torch.rand(2, 3, RES, RES).to(half))
    assert seen == [torch.float32, torch.float32]
    assert images.dtype == torch.float32 and torch.isfinite(images).all() and images.shape == (2, 3, RES, RES)
    assert latents.dtype == half and latents.shape == (2, *prior.latent_shape)
    with torch.no_grad():
        eps = prior.eps(z, torch.tensor([500, 10]), prior.encode_prompt("a cat").expand(2, -1, -1))
    assert eps.dtype == half and torch.isfinite(eps.float()).all()
    assert load_sdxl(str(folder), resolution=RES).vae.dtype == torch.float32  # float32 prior: float32 VAE


def test_released_encoders_keep_encoded_prompts(folder):
    prior = load_sdxl(str(folder), resolution=RES)
    cat = prior.encode_prompt("a cat")
    prior.release_text_encoders()
    assert torch.equal(prior.encode_prompt("a cat"), cat)
    assert prior.encode_prompt("").abs().max() == 0  # zeros need no encoder
    with pytest.raises(ModelError, match="released"):
        prior.encode_prompt("a dog")


def test_bad_folders_are_one_line(folder, tmp_path):
    no_unet = shutil.copytree(folder, tmp_path / "no_unet")
    shutil.rmtree(no_unet / "unet")
    bin_only = shutil.copytree(folder, tmp_path / "bin_only")
    for weights in (bin_only / "unet").glob("*.safetensors"):
        torch.save(load_file(weights), weights.with_suffix(".bin"))
        weights.unlink()
    for bad, message in ((no_unet, "no 'unet' subfolder"), (bin_only, "no safetensors weights for 'unet'")):
        with pytest.raises(ModelError, match=message) as error:
            load_sdxl(str(bad))
        assert "\n" not in str(error.value)
