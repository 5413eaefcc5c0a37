"""Flux2KleinPrior on a tiny random FLUX.2 klein base folder (fsd2d.priors.random_backbones.build_random_flux2_klein:
real CFG, the dynamic shift, random batch-norm statistics of the VAE's latents), checked against diffusers' own
Flux2KleinPipeline loaded from the same folder."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux2.pipeline_flux2_klein import Flux2KleinPipeline, compute_empirical_mu

from fsd2d.guidance import Guidance
from fsd2d.priors.base import ModelError
from fsd2d.priors.diffusers_prior import quiet_libraries
from fsd2d.priors.flux2 import (
    Flux2KleinPrior,
    latent_ids,
    load_flux2_klein,
    pack_latents,
    patchify,
    text_ids,
    unpack_latents,
    unpatchify,
)
from fsd2d.priors.random_backbones import build_random_flux2_klein
from fsd2d.sampling import DistillConfig, Method, ddim_sample, initial_noise, sample
from fsd2d.schedule import flux2_mu, timesteps

RES = 16  # tiny VAE factor 2 -> VAE latent [4, 8, 8] -> working space [16, 4, 4] -> 16 tokens of 16
SEEDS = (0, 1)
TOKENS = 64  # text tokens in these tests (the pipeline's default is 512; any length is the same code)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_random_flux2_klein(tmp_path_factory.mktemp("tiny_flux2_klein"))


def load(folder, **kwargs) -> Flux2KleinPrior:
    return load_flux2_klein(str(folder), dtype=torch.float64, resolution=RES, max_sequence_length=TOKENS, **kwargs)


@pytest.fixture(scope="module")
def prior(folder) -> Flux2KleinPrior:
    return load(folder)


def pipeline(folder, dtype=torch.float64) -> Flux2KleinPipeline:
    with quiet_libraries():
        pipe = DiffusionPipeline.from_pretrained(folder).to(dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe(folder) -> Flux2KleinPipeline:
    return pipeline(folder)


def test_folder_is_a_plain_klein_pipeline(folder, prior):
    """A plain from_pretrained loads it and runs (the pipeline's first argument is `image`: the prompt by name)."""
    plain = pipeline(folder, torch.float32)
    assert type(plain).__name__ == "Flux2KleinPipeline" and not plain.config.is_distilled
    images = plain(prompt="a cat", num_inference_steps=2, height=RES, width=RES, output_type="np").images
    assert images.shape == (1, RES, RES, 3)
    assert prior.latent_shape == (16, 4, 4) and prior.resolution == RES
    assert prior.default_cfg == 4.0 and not prior.embeds_guidance and not prior.distilled
    assert prior.describe()["mu_steps"] == 50 and prior.describe()["schedule"]["shift"].startswith("mu")


def test_layouts_are_the_pipelines(pipe, prior):
    """Patching, token packing and position ids as the pipeline's; `encode` is its _encode_vae_image (patchified,
    normalised posterior mean) and `vae_latent` undoes it as the pipeline does before decoding."""
    z = torch.randn(3, 4, 8, 6, dtype=torch.float64)
    assert torch.equal(patchify(z), Flux2KleinPipeline._patchify_latents(z))
    assert torch.equal(unpatchify(patchify(z)), z)
    x = patchify(z)
    packed = pack_latents(x)
    assert torch.equal(packed, Flux2KleinPipeline._pack_latents(x))
    ids = Flux2KleinPipeline._prepare_latent_ids(x)
    assert torch.equal(latent_ids(4, 3), ids[0])
    assert torch.equal(unpack_latents(packed, 4, 3), Flux2KleinPipeline._unpack_latents_with_ids(packed, ids, 4, 3))
    assert torch.equal(text_ids(5), Flux2KleinPipeline._prepare_text_ids(torch.zeros(1, 5, 2))[0])
    images = torch.rand(2, 3, RES, RES, dtype=torch.float64)
    ours = prior.encode(images)
    assert ours.shape == (2, *prior.latent_shape)
    torch.testing.assert_close(ours, pipe._encode_vae_image(2 * images - 1, generator=None), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(patchify(prior.vae_latent(ours)), pipe._patchify_latents(
        pipe.vae.encode(2 * images - 1).latent_dist.mean), rtol=1e-12, atol=1e-12)
    assert prior.decode(ours).shape == (2, 3, RES, RES)


def test_encode_prompt_is_the_pipelines(pipe, prior):
    """Qwen3's hidden layers 9, 18, 27 of the chat-templated prompt, side by side, as Flux2KleinPipeline's prompt
    embeddings (float64; the same weights and the same calls, so to the last bit here)."""
    for prompt in ("a cat", ""):
        embeds, ids = pipe.encode_prompt(prompt, device=torch.device("cpu"), max_sequence_length=TOKENS)
        ours = prior.encode_prompt(prompt)
        assert ours.shape == embeds.shape == (1, TOKENS, 96)
        torch.testing.assert_close(ours, embeds, rtol=1e-12, atol=1e-12)
        assert torch.equal(ids[0], text_ids(TOKENS))
    assert not torch.equal(prior.encode_prompt("a cat"), prior.encode_prompt(""))


@pytest.mark.parametrize("case", ["base", "base-cfg1-mu6", "distilled"])
def test_ddim_is_the_pipelines_sampler(folder, pipe, prior, tmp_path, case):
    """Our DDIM from the same start = Flux2KleinPipeline's Euler loop given our grid's unshifted sigmas (t + 1) /
    1000 and latents sigma_0 * noise (our working space is its `latents` layout), float64, compared in the VAE's
    latent (its output_type="latent"). The pipeline shifts the sigmas with compute_empirical_mu(tokens,
    num_inference_steps): called with num_inference_steps = the prior's mu_steps. Cases: klein base with its
    default real CFG 4 (negative ""), base with CFG 1 (one call) and mu taken at 6 steps, and a step-distilled
    klein (is_distilled: the pipeline ignores its guidance_scale 4; ours defaults to 1, the same one call; mu at its
    4 steps by default).
    Measured: 1.26e-7 (base), 1.05e-7 (base-cfg1-mu6), 1.23e-7 (distilled) relative, from diffusers' float32
    sigmas and its Euler step, which casts the sample to float32 every step (float32's 6e-8 over six steps)."""
    mu_steps = {"base": 50, "base-cfg1-mu6": 6, "distilled": 4}[case]  # distilled: its default, its 4 steps
    if case == "distilled":
        folder = shutil.copytree(folder, tmp_path / "distilled")
        index = json.loads((folder / "model_index.json").read_text()) | {"is_distilled": True}
        (folder / "model_index.json").write_text(json.dumps(index))
        ours_prior, theirs_pipe = load(folder), pipeline(folder)
        assert ours_prior.distilled and ours_prior.default_cfg == 1.0 and theirs_pipe.config.is_distilled
        assert ours_prior.mu_steps == 4 and ours_prior.mu is not None
    else:
        ours_prior = prior if mu_steps == 50 else load(folder, mu_steps=mu_steps)
        theirs_pipe = pipe
    scale = 1.0 if case == "base-cfg1-mu6" else ours_prior.default_cfg
    steps = 6
    grid = timesteps(steps, 0, 990)
    noise = initial_noise(ours_prior, SEEDS)
    ours = ddim_sample(ours_prior, Guidance.from_prompts(ours_prior, "a cat", "", scale), noise, grid)
    _, sigma = ours_prior.schedule.alpha_sigma(grid[:1], torch.float64, "cpu")
    theirs = theirs_pipe(prompt="a cat", num_inference_steps=mu_steps, sigmas=((grid.double() + 1) / 1000).tolist(),
                         guidance_scale=4.0 if case == "distilled" else scale, num_images_per_prompt=len(SEEDS),
                         latents=sigma * noise, max_sequence_length=TOKENS, height=RES, width=RES,
                         output_type="latent").images
    assert theirs.dtype == torch.float64 and theirs.shape == (len(SEEDS), 4, 8, 8)
    torch.testing.assert_close(theirs_pipe.scheduler.sigmas[:-1].double(), ours_prior.schedule.sigmas[grid],
                               rtol=1e-6, atol=0)
    assert rel_err(ours_prior.vae_latent(ours), theirs) < 1e-6
    assert ours.abs().max() > 0.1  # not a trivial match


def test_fsd_exact_equals_ddim(prior):
    g = Guidance.from_prompts(prior, "a cat", "", prior.default_cfg)
    base = DistillConfig(steps=4, t_min=0, t_max=990)
    ddim = sample(prior, g, Method.DDIM, SEEDS, base)
    assert rel_err(sample(prior, g, Method.FSD_EXACT, SEEDS, base), ddim) <= 1e-12
    assert ddim.abs().max() > 0.1  # not a trivial match


def test_schedule_is_the_schedulers(folder, prior):
    """Our 1000 sigmas are the scheduler's set for every training timestep, shifted with FLUX.2's empirical mu of
    the image's token count (the pipeline's image_seq_len) at the pipeline's 50 steps; float32 there, so 1e-6."""
    tokens = pack_latents(torch.zeros(1, *prior.latent_shape)).shape[1]
    assert tokens == (RES // 4) ** 2
    for n, steps in ((tokens, 50), (tokens, 4), (4096, 50), (4500, 28)):  # 4500: beyond the fit's 4300 tokens
        assert flux2_mu(n, steps) == pytest.approx(compute_empirical_mu(n, steps), rel=1e-14)
    assert prior.mu == flux2_mu(tokens, 50)
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler")
    assert scheduler.config.use_dynamic_shifting
    scheduler.set_timesteps(sigmas=(torch.arange(1000, 0, -1, dtype=torch.float64) / 1000).tolist(), mu=prior.mu)
    torch.testing.assert_close(prior.schedule.sigmas, scheduler.sigmas[:-1].double().flip(0), rtol=1e-6, atol=0)


def test_bad_folders_are_one_line(folder, tmp_path):
    no_transformer = shutil.copytree(folder, tmp_path / "no_transformer")
    shutil.rmtree(no_transformer / "transformer")
    with pytest.raises(ModelError, match="no 'transformer' subfolder") as error:
        load_flux2_klein(str(no_transformer))
    assert "\n" not in str(error.value)
    with pytest.raises(ModelError, match="max_sequence_length and mu_steps must be positive"):
        load_flux2_klein(str(folder), resolution=RES, max_sequence_length=0)
