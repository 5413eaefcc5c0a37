"""FluxPrior on tiny random Flux.1 folders (FLUX.1-dev's layout with the guidance embedding and the dynamic shift,
FLUX.1-schnell's without either; fsd2d.priors.random_backbones.build_random_flux), checked against diffusers' own
FluxPipeline loaded from the same folders."""
from __future__ import annotations

import shutil

import pytest
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline, calculate_shift
from safetensors.torch import load_file

from fsd2d.guidance import Guidance
from fsd2d.priors.base import ModelError
from fsd2d.priors.diffusers_prior import quiet_libraries, unpack_cond
from fsd2d.priors.flux import FluxPrior, latent_image_ids, load_flux, pack_latents, unpack_latents
from fsd2d.priors.random_backbones import build_random_flux
from fsd2d.sampling import DistillConfig, Method, ddim_sample, initial_noise, sample
from fsd2d.schedule import flux_mu, timesteps

RES = 16  # tiny VAE factor 2 -> latent [4, 8, 8] -> 16 tokens of 16
SEEDS = (0, 1)
TOKENS = 64  # T5 tokens in these tests (the pipeline's default is 512; any length up to it is the same code)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {"dev": build_random_flux(tmp_path_factory.mktemp("tiny_flux_dev")),
            "schnell": build_random_flux(tmp_path_factory.mktemp("tiny_flux_schnell"), guidance_embeds=False)}


def load(folder, **kwargs) -> FluxPrior:
    return load_flux(str(folder), dtype=torch.float64, resolution=RES, max_sequence_length=TOKENS, **kwargs)


@pytest.fixture(scope="module")
def prior(folders) -> FluxPrior:
    return load(folders["dev"])


@pytest.fixture(scope="module")
def pipes(folders):
    out = {}
    for kind, folder in folders.items():
        with quiet_libraries():
            out[kind] = DiffusionPipeline.from_pretrained(folder).to(torch.float64)
        out[kind].set_progress_bar_config(disable=True)
    return out


def test_folders_are_plain_flux_pipelines(pipes, prior, folders):
    assert all(type(p).__name__ == "FluxPipeline" for p in pipes.values())
    assert prior.latent_shape == (4, 8, 8) and prior.resolution == RES
    assert prior.default_cfg == 3.5 and prior.embedded_guidance == 3.5 and not prior.true_cfg
    schnell = load(folders["schnell"])
    assert not schnell.embeds_guidance and schnell.embedded_guidance is None and schnell.default_cfg == 1.0
    assert prior.describe()["embedded_guidance"] == 3.5


def test_packing_is_the_pipelines():
    z = torch.randn(3, 4, 8, 6, dtype=torch.float64)
    packed = pack_latents(z)
    assert torch.equal(packed, FluxPipeline._pack_latents(z, 3, 4, 8, 6))
    assert torch.equal(unpack_latents(packed, 8, 6), z)
    assert torch.equal(unpack_latents(packed, 8, 6), FluxPipeline._unpack_latents(packed, 8 * 2, 6 * 2, 2))
    assert torch.equal(latent_image_ids(4, 3, "cpu", torch.float64),
                       FluxPipeline._prepare_latent_image_ids(3, 4, 3, "cpu", torch.float64))


def test_encode_prompt_is_the_pipelines(pipes, prior):
    """T5 states and CLIP's pooled output as FluxPipeline.encode_prompt's (float64; the T5 states differ by
    ~1e-14 relative: two loads of the same float64 weights take different SDPA paths)."""
    for prompt in ("a cat", ""):
        pe, pooled_pipe, text_ids = pipes["dev"].encode_prompt(prompt, device=torch.device("cpu"),
                                                                max_sequence_length=TOKENS)
        tokens, pooled = unpack_cond(prior.encode_prompt(prompt), prior.pooled_size)
        assert tokens.shape == pe.shape == (1, TOKENS, 32) and pooled.shape == pooled_pipe.shape == (1, 32)
        torch.testing.assert_close(tokens, pe, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(pooled, pooled_pipe, rtol=1e-12, atol=1e-12)
        assert text_ids.shape == (TOKENS, 3) and text_ids.abs().max() == 0


@pytest.mark.parametrize("case", ["dev", "dev-user-scale", "dev-true-cfg", "schnell"])
def test_ddim_is_the_pipelines_sampler(folders, pipes, case):
    """Our DDIM from the same start = FluxPipeline's Euler loop given our grid's unshifted sigmas (t + 1) / 1000
    (it shifts them with mu from the packed latents' length) and latents sigma_0 * noise packed, float64. Cases:
    dev as the pipeline runs it by default (embedded 3.5, one call), dev with a user's scale 5 (predict_eps passes
    it as the embedded value, one call), dev with true CFG 2.5 and the negative "" (embedded 3.5), schnell (no
    embedding, CFG 1).
    Measured: 2.2e-7 (dev), 5.6e-8 (schnell) relative, from diffusers' float32 sigmas and its Euler step, which
    casts the sample to float32 every step."""
    kind = case.split("-")[0]
    prior = load(folders[kind], true_cfg=case == "dev-true-cfg")
    user = {"dev-user-scale": 5.0, "dev-true-cfg": 2.5, "schnell": 1.0}.get(case)  # "dev": no scale given
    scale = prior.default_cfg if user is None else user
    embedded = {"dev": 3.5, "dev-user-scale": 5.0, "dev-true-cfg": 3.5}.get(case)
    assert prior.embeds_guidance == (case in ("dev", "dev-user-scale"))
    assert prior.default_cfg == (3.5 if prior.embeds_guidance else 1.0)
    steps = 6
    grid = timesteps(steps, 0, 990)
    noise = initial_noise(prior, SEEDS)
    ours = ddim_sample(prior, Guidance.from_prompts(prior, "a cat", "", scale), noise, grid)
    _, sigma = prior.schedule.alpha_sigma(grid[:1], torch.float64, "cpu")
    extra = dict(negative_prompt="", true_cfg_scale=scale) if case == "dev-true-cfg" else {}
    theirs = pipes[kind]("a cat", num_inference_steps=steps, sigmas=((grid.double() + 1) / 1000).tolist(),
                         guidance_scale=embedded or 0.0, num_images_per_prompt=len(SEEDS),
                         latents=pack_latents(sigma * noise), max_sequence_length=TOKENS, height=RES, width=RES,
                         output_type="latent", **extra).images
    assert theirs.dtype == torch.float64
    torch.testing.assert_close(pipes[kind].scheduler.sigmas[:-1].double(), prior.schedule.sigmas[grid],
                               rtol=1e-6, atol=0)
    assert rel_err(ours, unpack_latents(theirs, 8, 8)) < 1e-6


def test_fsd_exact_equals_ddim(prior):
    g = Guidance.from_prompts(prior, "a cat", "", prior.default_cfg)
    base = DistillConfig(steps=4, t_min=0, t_max=990)
    ddim = sample(prior, g, Method.DDIM, SEEDS, base)
    assert rel_err(sample(prior, g, Method.FSD_EXACT, SEEDS, base), ddim) <= 1e-12
    assert ddim.abs().max() > 0.1  # not a trivial match


def test_schedule_is_the_schedulers(folders, prior):
    """Our 1000 sigmas are the scheduler's set for every training timestep: FLUX.1-dev's shifted with mu from the
    image's token count (the pipeline's image_seq_len), schnell's unshifted; float32 there, so 1e-6 relative."""
    tokens = pack_latents(torch.zeros(1, *prior.latent_shape)).shape[1]
    assert tokens == (RES // 4) ** 2
    all_sigmas = (torch.arange(1000, 0, -1, dtype=torch.float64) / 1000).tolist()
    for kind, shifted in (("dev", True), ("schnell", False)):
        p = prior if kind == "dev" else load(folders[kind])
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(folders[kind], subfolder="scheduler")
        assert scheduler.config.use_dynamic_shifting == shifted
        mu = calculate_shift(tokens, 256, 4096, 0.5, 1.15)
        assert mu == pytest.approx(flux_mu(tokens), rel=1e-12)
        scheduler.set_timesteps(sigmas=all_sigmas, mu=mu)
        torch.testing.assert_close(p.schedule.sigmas, scheduler.sigmas[:-1].double().flip(0), rtol=1e-6, atol=0)
        assert p.schedule.describe().get("shift", "").startswith("mu") == shifted


def test_bad_folders_are_one_line(folders, tmp_path):
    no_transformer = shutil.copytree(folders["dev"], tmp_path / "no_transformer")
    shutil.rmtree(no_transformer / "transformer")
    bin_only = shutil.copytree(folders["dev"], tmp_path / "bin_only")
    for weights in (bin_only / "transformer").glob("*.safetensors"):
        torch.save(load_file(weights), weights.with_suffix(".bin"))
        weights.unlink()
    for bad, message in ((no_transformer, "no 'transformer' subfolder"),
                         (bin_only, "no safetensors weights for 'transformer'")):
        with pytest.raises(ModelError, match=message) as error:
            load_flux(str(bad))
        assert "\n" not in str(error.value)
    with pytest.raises(ModelError, match="max_sequence_length must be in 1..512"):
        load_flux(str(folders["dev"]), resolution=RES, max_sequence_length=513)
