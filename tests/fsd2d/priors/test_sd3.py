"""Stable Diffusion 3 (a rectified-flow model) as a Prior, on a tiny random SD3-layout folder: loaded like a user's
model, checked against diffusers' own pipeline and scheduler; Proposition 1 on a flow model."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from safetensors.torch import load_file

from fsd2d.errors import InputError
from fsd2d.guidance import Guidance
from fsd2d.priors.diffusers_prior import ModelError, unpack_cond
from fsd2d.priors.load import load_prior
from fsd2d.priors.sd3 import SD3Prior, load_sd3
from fsd2d.sampling import DistillConfig, Method, ddim_sample, initial_noise, sample
from fsd2d.schedule import Prediction, flow_schedule, flux_mu, timesteps, to_eps

SEEDS = [0, 1, 2]


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def prior64(tiny_sd3_path) -> SD3Prior:
    return load_sd3(str(tiny_sd3_path), dtype=torch.float64)


@pytest.fixture(scope="module")
def pipe64(tiny_sd3_path):
    from diffusers import DiffusionPipeline

    from fsd2d.priors.diffusers_prior import quiet_libraries

    with quiet_libraries():
        return DiffusionPipeline.from_pretrained(str(tiny_sd3_path)).to(torch.float64)  # plain: no dtype argument


def test_flow_schedule_is_diffusers_flow_match_scheduler():
    """sigma_t = shift((t + 1) / T) as FlowMatchEulerDiscreteScheduler's training sigmas (static shift), and Flux's
    resolution-dependent shift as its set_timesteps(mu=...) (float32 there, float64 here)."""
    for shift in (1.0, 3.0):
        ours = flow_schedule(shift=shift)
        theirs = FlowMatchEulerDiscreteScheduler(shift=shift).sigmas.flip(0).double()  # ascending in t
        torch.testing.assert_close(ours.sigmas, theirs, rtol=0, atol=1e-6)
        torch.testing.assert_close(ours.alphas + ours.sigmas, torch.ones(1000, dtype=torch.float64), rtol=0, atol=0)
    dynamic = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    mu = flux_mu(4096)  # a 1024 px Flux image: (1024 / 16)^2 tokens -> max_shift
    assert mu == pytest.approx(1.15)
    grid = torch.tensor([998, 700, 300, 0])
    dynamic.set_timesteps(sigmas=((grid + 1) / 1000).tolist(), mu=mu)
    torch.testing.assert_close(flow_schedule(mu=mu).sigmas[grid], dynamic.sigmas[:-1].double(), rtol=0, atol=1e-6)


def test_flow_velocity_converts_to_eps_exactly():
    g = torch.Generator().manual_seed(0)
    x0, eps = (torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64) for _ in range(2))
    s = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64).view(-1, 1, 1, 1)  # alpha = 0 included
    x_t, v = (1 - s) * x0 + s * eps, eps - x0
    torch.testing.assert_close(to_eps(Prediction.FLOW, v, x_t, 1 - s, s), eps, rtol=0, atol=1e-14)


def test_prompt_encoding_is_the_pipelines(prior64, pipe64):
    """CLIP-L + CLIP-G penultimate states padded to the T5 width, then T5's; pooled: both text_embeds."""
    ours = prior64.encode_prompt("a cat")
    theirs, _, pooled, _ = pipe64.encode_prompt("a cat", "a cat", "a cat", do_classifier_free_guidance=False)
    tokens, ours_pooled = unpack_cond(ours, prior64.pooled_size)
    torch.testing.assert_close(tokens, theirs, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours_pooled, pooled, rtol=0, atol=0)
    assert ours.shape == (1, 77 + 256 + 1, 64)  # CLIP tokens + max_sequence_length + the pooled row


def test_eps_is_the_transformers_velocity_converted(prior64):
    x = torch.randn(2, *prior64.latent_shape, dtype=torch.float64)
    t = torch.tensor([5, 990])
    cond = prior64.encode_prompt("a cat").expand(2, -1, -1)
    tokens, pooled = unpack_cond(cond, prior64.pooled_size)
    with torch.no_grad():
        v = prior64.unet(hidden_states=x, encoder_hidden_states=tokens, pooled_projections=pooled,
                         timestep=prior64.schedule.sigmas[t] * 1000).sample
        alpha, sigma = prior64.schedule.alpha_sigma(t, torch.float64, "cpu")
        torch.testing.assert_close(prior64.eps(x, t, cond), x + alpha * v, rtol=0, atol=1e-13)
    assert prior64.describe()["prediction_type"] == "flow" and prior64.schedule.describe()["shift"] == "shift 3"


def test_fsd_exact_is_ddim_is_diffusers_flow_euler(prior64, pipe64):
    """Proposition 1 on a rectified-flow model in float64: fsd-exact = our DDIM (to 1e-13), and our DDIM = the
    pipeline's FlowMatchEulerDiscreteScheduler from the same x_{t_0} = sigma_{t_0} eps~ on the same grid (its
    sigmas: (t + 1) / 1000, shifted by the scheduler itself). diffusers keeps sigmas in float32 and upcasts the
    sample to float32 in each step: 1e-7 is its rounding (8.7e-8 on the sigmas alone)."""
    g = Guidance(prior64.encode_prompt("a cat"), prior64.encode_prompt(""), 4.0)
    base = DistillConfig(steps=10, t_min=0, t_max=990)
    exact = sample(prior64, g, Method.FSD_EXACT, SEEDS, base)
    ddim = sample(prior64, g, Method.DDIM, SEEDS, base)
    assert exact.dtype == torch.float64 and ddim.abs().max() > 0.1
    assert rel_err(exact, ddim) <= 1e-13
    grid = timesteps(10, 0, 990)
    noise = initial_noise(prior64, SEEDS)
    _, sigma0 = prior64.schedule.alpha_sigma(grid[:1], torch.float64, "cpu")
    theirs = pipe64(prompt="a cat", negative_prompt="", num_inference_steps=10, sigmas=((grid + 1) / 1000).tolist(),
                    guidance_scale=4.0, num_images_per_prompt=len(SEEDS), latents=sigma0 * noise, height=16, width=16,
                    output_type="latent").images
    assert rel_err(ddim, theirs) <= 1e-6
    assert rel_err(ddim, ddim_sample(prior64, g, initial_noise(prior64, [7, 8, 9]), grid)) > 0.1  # not a constant


def test_codec_shifts_and_scales_as_sd3(prior64):
    images = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    vae = prior64.vae
    with torch.no_grad():
        mean = vae.encode(2 * images - 1).latent_dist.mean
        z = prior64.encode(images)
        torch.testing.assert_close(z, (mean - 0.0609) * 1.5305, rtol=0, atol=1e-12)
        raw = vae.decode(z / 1.5305 + 0.0609).sample
    torch.testing.assert_close(prior64.decode(z), ((raw.float() + 1) / 2).clamp(0, 1))


def test_pure_noise_t_max_is_refused_in_one_line(prior64):
    g = Guidance(prior64.encode_prompt("a cat"), prior64.encode_prompt(""), 1.0)
    for method in (Method.DDIM, Method.FSD):
        with pytest.raises(InputError, match="t_max 999 is pure noise on this model.*t_max <= 998"):
            sample(prior64, g, method, [0], DistillConfig(steps=2, t_min=0, t_max=999))


def test_without_t5_the_pipelines_zeros_take_its_place(tiny_sd3_path, tmp_path):
    folder = shutil.copytree(tiny_sd3_path, tmp_path / "no_t5")
    shutil.rmtree(folder / "text_encoder_3")
    shutil.rmtree(folder / "tokenizer_3")
    prior = load_sd3(str(folder), max_sequence_length=8)
    cond = prior.encode_prompt("a cat")
    assert cond.shape == (1, 77 + 8 + 1, 64) and not prior.describe()["t5"]
    assert cond[0, 77:85].abs().max() == 0  # T5's place: zeros, as StableDiffusion3Pipeline(text_encoder_3=None)


def test_released_text_encoders_keep_the_encoded_prompts(tiny_sd3_path):
    prior = load_sd3(str(tiny_sd3_path))
    kept = prior.encode_prompt("a cat")
    prior.release_text_encoders()
    assert prior.text_encoders == [None, None, None]
    torch.testing.assert_close(prior.encode_prompt("a cat"), kept, rtol=0, atol=0)
    with pytest.raises(ModelError, match="released.*'a dog' was not among them"):
        prior.encode_prompt("a dog")


@pytest.mark.parametrize("damage,needle", [
    ("no_transformer", "no 'transformer' subfolder"),
    ("bin_only", "no safetensors weights for 'transformer'"),
    ("other_pipeline", "holds a KandinskyPipeline, which this toolkit does not run"),
])
def test_bad_folders_are_one_line(tiny_sd3_path, tmp_path, damage, needle):
    folder = shutil.copytree(tiny_sd3_path, tmp_path / damage)
    if damage == "no_transformer":
        shutil.rmtree(folder / "transformer")
    elif damage == "bin_only":
        for weights in (folder / "transformer").glob("*.safetensors"):
            torch.save(load_file(weights), weights.with_suffix(".bin"))
            weights.unlink()
    else:
        index = folder / "model_index.json"
        index.write_text(json.dumps(json.loads(index.read_text()) | {"_class_name": "KandinskyPipeline"}))
    with pytest.raises(ModelError, match=needle) as error:
        load_prior(str(folder), "cpu")
    assert "\n" not in str(error.value)


def test_a_folder_loads_by_its_pipeline_class(tiny_sd3_path):
    prior = load_prior(str(tiny_sd3_path), "cpu", resolution=32)
    assert isinstance(prior, SD3Prior) and prior.latent_shape == (4, 16, 16)
    with pytest.raises(ModelError, match="resolution 17 is not a positive multiple of 2.*VAE and transformer need; try 16"):
        load_prior(str(tiny_sd3_path), "cpu", resolution=17)


def test_half_precision_keeps_t5s_float32_layers_and_float32_timesteps(tiny_sd3_path, monkeypatch):
    """Under float16 transformers keeps T5's `wo` layers in float32 (float16 overflows there); the loader leaves
    them so (it recasts only float64, which diffusers' transformers ignore). The transformer gets sigma_t * 1000 in
    float32, as from the pipeline's scheduler, not rounded to float16 (993.24 -> 993.0)."""
    from transformers import T5EncoderModel

    from fsd2d.priors.diffusers_prior import load_parts

    t5 = load_parts(str(tiny_sd3_path), str(tiny_sd3_path), True, {"text_encoder_3": T5EncoderModel},
                    torch.float16)["text_encoder_3"]
    dtypes = {name: p.dtype for name, p in t5.named_parameters()}
    assert any(".wo." in n for n in dtypes)
    assert all(d == (torch.float32 if ".wo." in n else torch.float16) for n, d in dtypes.items()), dtypes
    prior = load_sd3(str(tiny_sd3_path))
    seen = []
    monkeypatch.setattr(prior, "_unet", lambda **kw: seen.append(kw["timestep"]) or type("Out", (), {
        "sample": torch.zeros_like(kw["hidden_states"])})())
    prior.dtype = torch.float16  # as on CUDA: the network inputs in float16, the timestep not
    x = torch.randn(1, *prior.latent_shape)
    prior.eps(x, torch.tensor([990]), prior.encode_prompt("a cat").to(torch.float16))
    assert seen[0].dtype == torch.float32
    torch.testing.assert_close(seen[0].double(), prior.schedule.sigmas[[990]].double() * 1000, rtol=0, atol=1e-4)
