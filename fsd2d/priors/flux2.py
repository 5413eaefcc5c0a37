"""FLUX.2 klein (diffusers folder layout, Flux2KleinPipeline: FLUX.2-klein-base-4B / -9B, and the step-distilled
FLUX.2-klein-4B / -9B) as a `Prior`: a rectified-flow model.

Working space: the pipeline's own noise space, x = (patchify(E(2 image - 1)) - m) / s, [B, 4 C, res/16, res/16]
(C = 32 latent channels of FLUX.2's VAE, AutoencoderKLFlux2: 128 channels at a sixteenth of the side): the VAE's
latent [B, C, res/8, res/8] cut into 2 x 2 patches stacked on the channels (Flux2KleinPipeline._patchify_latents)
and normalised per channel by the VAE's batch-norm statistics (m = vae.bn.running_mean, s = sqrt(running_var +
batch_norm_eps): the pipeline's latents_bn_mean / latents_bn_std). Flux2KleinPipeline draws its noise there (its
`latents` argument is such a tensor) and only undoes the normalisation and the patching after the last step, so
this is where the seeds' noise, FSD's world-map noise, 3D surface noise and the family's updates must live for our
DDIM to be the pipeline's sampler; `decode` / `encode` do the normalisation and the patching (`vae_latent` gives
the VAE's latent itself). Neighbouring latents are neighbouring 16-pixel patches. The transformer works on tokens:
`eps` flattens the latent row-major into [B, (res/16)^2, 4 C] exactly as the pipeline's _pack_latents, with its
4-axis position ids (t, row, column, layer) = (0, row, column, 0) for the image and (0, 0, 0, index) for the text,
and unflattens the output.

Schedule: the scheduler config's rectified flow (FlowMatchEulerDiscreteScheduler), shifted by resolution
(use_dynamic_shifting), but with FLUX.2's mu, not Flux.1's: the pipeline computes
compute_empirical_mu(image_seq_len, num_inference_steps) (fsd2d.schedule.flux2_mu here: a fit in the token count
AND the number of sampling steps). Our schedule is one table for every run, so the prior fixes the step count mu is
taken at: `mu_steps`, by default the pipeline's num_inference_steps default 50 (klein base's 50-step sampling), and
4 for a step-distilled klein (its published 4-step sampling: black-forest-labs/flux2 README, "[klein] ... 4
steps"). So DDIM here, with any grid, is the pipeline's Euler sampler called with num_inference_steps=mu_steps and
that grid's sigmas. The transformer predicts the velocity v = eps - x_0 at
timestep sigma_t (the pipeline passes its timestep / 1000), converted to eps in the one place
(fsd2d.schedule.to_eps), so every method runs unchanged.

Conditioning, as Flux2KleinPipeline.encode_prompt builds it for one prompt: the prompt as the one user message of
the tokenizer's (Qwen3) chat template with the generation prompt and thinking off, padded (truncated) to
max_sequence_length (512) tokens with its attention mask, through the Qwen3 causal LM; the hidden states of layers
9, 18 and 27 (`TEXT_LAYERS`; index 0 is the embeddings) side by side per token: [1, 512, 3 x hidden] (7680 for
klein 4B). The empty prompt is encoded like any text (the pipeline's negative prompt "" is).

Guidance. klein base is not guidance-distilled (no guidance embedding; the pipeline passes guidance=None): the
pipeline runs real classifier-free guidance, the negative prompt always "" (its encoding), noise_pred = neg + g
(cond - neg): the standard form, as ours, guidance_scale 4.0 by default, one conditional call where g <= 1. Here
the same formula through the one CFG helper (fsd2d.guidance.predict_eps): `embeds_guidance` is false, `default_cfg`
4.0, and any negative prompt may be given; the one conditional call is at g = 1 only (g < 1 is CFG's formula, which
the pipeline does not run). A step-distilled klein (model_index.json's is_distilled true) ignores the scale in the
pipeline (one conditional call at any g): `default_cfg` is then 1.0, the same one call; a --cfg above 1 there is
real CFG, which the pipeline would not run.

Prompt encodings are computed once per prompt and kept; `release_text_encoders()` frees the Qwen3 encoder (8 GB
for klein 4B's Qwen3-4B in 16 bits) once a run has encoded its prompts, and the loader can keep it on the CPU
(`text_device`).
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel
from transformers import AutoTokenizer, Qwen3ForCausalLM

from fsd2d.priors.base import ModelError
from fsd2d.priors.diffusers_prior import (
    EncoderCache,
    LatentPrior,
    ReleasableText,
    _pick_dtype,
    check_resolution,
    load_parts,
    locate_model,
    model_index,
    scheduler_config_of,
    text_placement,
)
from fsd2d.schedule import Prediction, flow_schedule, flux2_mu

PIPELINE_CLASS = "Flux2KleinPipeline"
COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
WEIGHTED = ("transformer", "vae", "text_encoder")
DEFAULT_TOKENS = 512  # Flux2KleinPipeline's max_sequence_length
TEXT_LAYERS = (9, 18, 27)  # Flux2KleinPipeline's text_encoder_out_layers: hidden states stacked per token
DEFAULT_GUIDANCE = 4.0  # Flux2KleinPipeline's guidance_scale (real CFG, klein base)
DEFAULT_SAMPLE_SIZE = 128  # Flux2KleinPipeline.default_sample_size (VAE latents): 1024 px with FLUX.2's VAE
MU_STEPS = 50  # Flux2KleinPipeline's num_inference_steps default: the step count our fixed schedule's mu is taken at
DISTILLED_MU_STEPS = 4  # a step-distilled klein's sampling steps (black-forest-labs/flux2 README: 4-step distilled)


class Flux2KleinPrior(ReleasableText, LatentPrior):
    """eps of a FLUX.2 klein transformer (flow velocity converted, latents flattened into tokens inside), its Qwen3
    text encoder and its VAE (with the latents' batch-norm statistics), all frozen. Guidance: module docstring."""

    model_label, denoiser_label = "FLUX.2 klein", "transformer"
    cuda_graphs = False  # plain torch.compile of the transformer
    channels_last_unet = False  # a transformer: no convolutions to lay out
    embeds_guidance = False  # klein takes no guidance value: real CFG (module docstring)

    def __init__(self, transformer: Flux2Transformer2DModel, vae: AutoencoderKLFlux2, text_encoder: Qwen3ForCausalLM,
                 tokenizer, scheduler_config: dict, resolution: int | None = None, name: str = "",
                 max_sequence_length: int = DEFAULT_TOKENS, distilled: bool = False, mu_steps: int | None = None):
        """`distilled`: the folder's model_index.json is_distilled (the pipeline then ignores the CFG scale);
        `mu_steps`: the sampling step count whose mu shifts the schedule (None: 50, 4 when distilled; module
        docstring)."""
        mu_steps = (DISTILLED_MU_STEPS if distilled else MU_STEPS) if mu_steps is None else mu_steps
        channels = vae.config.latent_channels * 4
        if transformer.config.in_channels != channels or vae.bn.num_features != channels:
            raise ModelError(f"{name}: the transformer takes {transformer.config.in_channels} channels and the VAE "
                             f"normalises {vae.bn.num_features}, not the 2 x 2 patchified {channels} of its "
                             f"{vae.config.latent_channels}-channel latents, as a text-to-image FLUX.2 klein does")
        layers, width = text_encoder.config.num_hidden_layers, text_encoder.config.hidden_size
        if layers < max(TEXT_LAYERS) or transformer.config.joint_attention_dim != len(TEXT_LAYERS) * width:
            raise ModelError(f"{name}: the text encoder ({layers} layers of {width}) does not give the "
                             f"transformer's {transformer.config.joint_attention_dim}-wide tokens from its hidden "
                             f"layers {', '.join(map(str, TEXT_LAYERS))}")
        if max_sequence_length < 1 or mu_steps < 1:
            raise ModelError(f"max_sequence_length and mu_steps must be positive, got {max_sequence_length} and "
                             f"{mu_steps}")
        self._setup(transformer, vae, None, None, scheduler_config, resolution, name,
                    sample_size=DEFAULT_SAMPLE_SIZE, latent_multiple=2, text_encoders=(text_encoder,))
        if self.prediction_type is not Prediction.FLOW:
            raise ModelError(f"{name}: a FLUX.2 transformer needs a flow-matching scheduler, the folder's predicts "
                             f"{self.prediction_type.value}")
        self.mu_steps = int(mu_steps)
        self.mu: float | None = None
        if scheduler_config.get("use_dynamic_shifting", False):  # FLUX.2's mu, not _setup's Flux.1 one
            self.mu = flux2_mu(self.latent_shape[1] * self.latent_shape[2], self.mu_steps)
            self.schedule = flow_schedule(scheduler_config.get("num_train_timesteps", 1000), mu=self.mu,
                                          time_shift_type=scheduler_config.get("time_shift_type", "exponential"))
        self.text_encoders, self.tokenizers = [text_encoder], [tokenizer]
        self.max_sequence_length = int(max_sequence_length)
        self.distilled = bool(distilled)
        self.prompts = EncoderCache()
        self._ids: dict[tuple, torch.Tensor] = {}

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self._resolution // (2 * self.vae_factor)
        return (self.unet.config.in_channels, side, side)  # patchified: the pipeline's latents

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """Conditioning [1, max_sequence_length, 3 x hidden] (module docstring)."""
        return self.prompts.get(self.known_prompt(prompt), self._encode)

    def _encode(self, prompt: str) -> torch.Tensor:
        states = klein_condition(self.text_encoders[0], self.tokenizers[0], prompt, self.max_sequence_length)
        return states.to(self.device, self.dtype)


    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x_t [B, C, h, w] (the patchified, normalised latent), t [B] long, cond [B, L, D] -> eps [B, C, h, w] in
        x_t's dtype."""
        if x_t.ndim != 4 or t.shape != x_t.shape[:1] or cond.ndim != 3 or cond.shape[0] != x_t.shape[0]:
            raise ValueError(f"eps expects x_t [B, C, h, w], t [B], cond [B, L, D]; got {list(x_t.shape)}, "
                             f"{list(t.shape)}, {list(cond.shape)}")
        _, _, h, w = x_t.shape
        sigma = (self.schedule.network_timesteps(t) / self.schedule.num_timesteps).to(self.device, self.dtype)
        v = self._unet(hidden_states=pack_latents(x_t.to(self.dtype)), encoder_hidden_states=cond.to(self.dtype),
                       timestep=sigma, img_ids=self._position_ids("image", h, w),
                       txt_ids=self._position_ids("text", cond.shape[1]), guidance=None).sample
        return self._as_eps(unpack_latents(v, h, w).to(x_t.dtype), x_t, t)

    def _position_ids(self, kind: str, *size: int) -> torch.Tensor:
        """The tokens' 4-axis position ids (long, as the pipeline's), made once per shape."""
        if (kind, *size) not in self._ids:
            ids = latent_ids(*size) if kind == "image" else text_ids(*size)
            self._ids[(kind, *size)] = ids.to(self.device)
        return self._ids[(kind, *size)]

    def _latent_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) [1, 4 C, 1, 1] in the VAE's dtype: the pipeline's latents_bn_mean and latents_bn_std."""
        bn = self.vae.bn
        mean = bn.running_mean.view(1, -1, 1, 1).to(self.vae_dtype)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + self.vae.config.batch_norm_eps).to(self.vae_dtype)
        return mean, std

    def vae_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Working space [B, 4 C, h, w] -> the VAE's latent [B, C, 2 h, 2 w] in the VAE's dtype, as the pipeline
        hands it to vae.decode (its output_type="latent"): unnormalised, then unpatchified."""
        mean, std = self._latent_stats()
        return unpatchify(z.to(self.vae_dtype) * std + mean)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Working-space latent [B, 4 C, h, w] -> RGB [B, 3, 16 h, 16 w] float32 in [0, 1] (clamped)."""
        images = self.vae.decode(self.vae_latent(z)).sample  # [-1, 1]
        return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)

    def _vae_mean(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images [B, 3, H, W] in the VAE's dtype -> the working space [B, 4 C, H/16, W/16]: the posterior
        mean (the pipeline's argmax), patchified and normalised as Flux2KleinPipeline._encode_vae_image."""
        mean, std = self._latent_stats()
        return (patchify(self.vae.encode(x).latent_dist.mean) - mean) / std

    @property
    def default_cfg(self) -> float:
        """Flux2KleinPipeline's default guidance_scale 4.0 (real CFG); 1.0 (one call) for a step-distilled klein."""
        return 1.0 if self.distilled else DEFAULT_GUIDANCE

    def describe(self) -> dict:
        return super().describe() | {"schedule": self.schedule.describe(), "max_sequence_length":
                                     self.max_sequence_length, "distilled": self.distilled,
                                     "mu_steps": self.mu_steps}


def patchify(z: torch.Tensor) -> torch.Tensor:
    """The VAE's latent [B, C, H, W] -> [B, 4 C, H/2, W/2], channel c's 2 x 2 patch at channels 4c..4c+3
    (Flux2KleinPipeline._patchify_latents)."""
    b, c, h, w = z.shape
    return z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)


def unpatchify(z: torch.Tensor) -> torch.Tensor:
    """`patchify` undone: [B, 4 C, h, w] -> [B, C, 2 h, 2 w] (Flux2KleinPipeline._unpatchify_latents)."""
    b, c, h, w = z.shape
    return z.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, h * 2, w * 2)


def pack_latents(z: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> tokens [B, h w, C], row-major (Flux2KleinPipeline._pack_latents)."""
    b, c, h, w = z.shape
    return z.reshape(b, c, h * w).permute(0, 2, 1)


def unpack_latents(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """`pack_latents` undone: tokens [B, h w, C] -> [B, C, h, w] (the pipeline's _unpack_latents_with_ids for
    its own row-major ids)."""
    b, _, c = tokens.shape
    return tokens.permute(0, 2, 1).reshape(b, c, h, w)


def latent_ids(rows: int, cols: int) -> torch.Tensor:
    """[rows * cols, 4] long position ids (0, row, column, 0) of the packed image tokens
    (Flux2KleinPipeline._prepare_latent_ids)."""
    return torch.cartesian_prod(torch.arange(1), torch.arange(rows), torch.arange(cols), torch.arange(1))


def text_ids(length: int) -> torch.Tensor:
    """[length, 4] long position ids (0, 0, 0, index) of the text tokens (Flux2KleinPipeline._prepare_text_ids)."""
    return torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(length))


@torch.no_grad()
def klein_condition(encoder, tokenizer, prompt: str, max_sequence_length: int,
                    layers: tuple[int, ...] = TEXT_LAYERS) -> torch.Tensor:
    """[1, max_sequence_length, len(layers) x hidden] of one prompt, as Flux2KleinPipeline._get_qwen3_prompt_embeds
    builds it (module docstring), in the encoder's dtype and on its device. The causal LM's head is skipped (its
    logits are not used; the hidden states are the base model's own)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True, enable_thinking=False)
    inputs = tokenizer(text, return_tensors="pt", padding="max_length", truncation=True,
                       max_length=max_sequence_length)
    device = next(encoder.parameters()).device
    out = getattr(encoder, "model", encoder)(input_ids=inputs["input_ids"].to(device),
                                             attention_mask=inputs["attention_mask"].to(device),
                                             output_hidden_states=True, use_cache=False)
    states = torch.stack([out.hidden_states[k] for k in layers], dim=1)  # [1, layers, L, hidden]
    b, n, length, width = states.shape
    return states.permute(0, 2, 1, 3).reshape(b, length, n * width)


def load_flux2_klein(model: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                     resolution: int | None = None, max_sequence_length: int = DEFAULT_TOKENS,
                     text_device: str | torch.device | None = None, mu_steps: int | None = None) -> Flux2KleinPrior:
    """A FLUX.2 klein model from a local diffusers folder or a hub id (safetensors only; bfloat16 on CUDA, as klein
    is published and run, float32 on the CPU by default). `text_device`: where the Qwen3 encoder runs (default:
    `device`; "cpu" keeps it off the GPU, in float32). `mu_steps`: the step count of the schedule's shift (None: 50,
    or 4 for a step-distilled klein; module docstring)."""
    device = torch.device(device)
    dtype = _pick_dtype(device, torch.bfloat16 if dtype is None and device.type == "cuda" else dtype)
    check_resolution(resolution, Flux2KleinPrior.model_label)
    model, source, local = locate_model(model, COMPONENTS, WEIGHTED)
    text_dev, text_dtype = text_placement(device, dtype, text_device)
    parts = load_parts(model, source, local, {"transformer": Flux2Transformer2DModel, "vae": AutoencoderKLFlux2},
                       dtype)
    text = load_parts(model, source, local, {"text_encoder": Qwen3ForCausalLM, "tokenizer": AutoTokenizer},
                      text_dtype)
    return Flux2KleinPrior(parts["transformer"].to(device), parts["vae"].to(device),
                           text["text_encoder"].to(text_dev), text["tokenizer"],
                           scheduler_config_of(model, source, local), resolution, name=model,
                           max_sequence_length=max_sequence_length,
                           distilled=bool(model_index(source).get("is_distilled", False)), mu_steps=mu_steps)
