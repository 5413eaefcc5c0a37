"""Flux.1 (diffusers folder layout, FluxPipeline: FLUX.1-dev, FLUX.1-schnell) as a `Prior`: a rectified-flow model.

Working space: the UNPACKED VAE latent z = scaling * (E(2 image - 1) - shift), [B, 16, res/8, res/8] (Flux's VAE:
shift 0.1159, scaling 0.3611; `LatentPrior`'s codec). The transformer works on tokens: `eps` packs the latent 2 x 2
into [B, (h/2)(w/2), 64] exactly as FluxPipeline._pack_latents, with the pipeline's image ids (row, column of each
token: _prepare_latent_image_ids) and text ids (zeros), and unpacks its output (_unpack_latents). So everything
that lives in the working space (the seeds' noise, FSD's world-map noise, 3D surface noise, the family's updates)
is made and kept in the unpacked latent space, where neighbouring latents are neighbouring pixels; the packing is
a private detail of one network call.

Schedule: the scheduler config's rectified flow (FlowMatchEulerDiscreteScheduler); FLUX.1-dev shifts it by
resolution (use_dynamic_shifting: mu = fsd2d.schedule.flux_mu of the image's token count (res / 16)^2, the
pipeline's image_seq_len = packed latents' length), FLUX.1-schnell not at all (shift 1). The transformer predicts
the velocity v = eps - x_0 at timestep sigma_t (the pipeline passes its timestep / 1000), converted to eps in the
one place (fsd2d.schedule.to_eps). So DDIM here is FluxPipeline's Euler sampler, and every method runs unchanged.

Conditioning, as FluxPipeline.encode_prompt builds it for one prompt (prompt_2 = prompt): T5's last hidden state
[1, max_sequence_length (512), 4096] and CLIP-L's pooled output [1, 768], packed into one tensor (`pack_cond`):
[1, 512 + 1, 4096]. The empty prompt is encoded like any text (the pipeline's negative prompt "" is).

Guidance. FLUX.1-dev is guidance-distilled: the pipeline calls the transformer ONCE per step, with the prompt and
the guidance scale as an input (`guidance`, embedded like the timestep; guidance_scale 3.5 by default); real
classifier-free guidance (two calls, a negative prompt: the pipeline's `true_cfg_scale` > 1) is optional and off by
default. Here the same, through the one CFG helper (fsd2d.guidance.predict_eps): a prior whose `embeds_guidance`
is true is called once, with the conditional prompt and the run's guidance scale as `eps(..., guidance=scale)`;
so `--cfg 3.5` on FLUX.1-dev is the pipeline's guidance_scale 3.5, and `default_cfg` is 3.5. With
`load_flux(..., true_cfg=True)` the scale is a real CFG scale (the pipeline's true_cfg_scale with a negative
prompt; standard form, as ours) and the embedded value stays at `embedded_guidance` (3.5). A model without the
embedding (FLUX.1-schnell) takes real CFG, default 1 (one conditional call, the pipeline's own step).

Prompt encodings are computed once per prompt and kept; `release_text_encoders()` frees the encoders (T5-XXL alone is
~9 GB in 16 bits) once a run has encoded its prompts, and the loader can keep them on the CPU (`text_device`).
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel
from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

from fsd2d.priors.base import ModelError
from fsd2d.priors.diffusers_prior import (
    EncoderCache,
    LatentPrior,
    ReleasableText,
    _pick_dtype,
    check_resolution,
    clip_encode,
    load_parts,
    locate_model,
    pack_cond,
    scheduler_config_of,
    text_placement,
    unpack_cond,
)
from fsd2d.schedule import Prediction

PIPELINE_CLASS = "FluxPipeline"
COMPONENTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
WEIGHTED = ("transformer", "vae", "text_encoder", "text_encoder_2")
DEFAULT_T5_TOKENS = 512  # FluxPipeline's max_sequence_length (and its maximum)
DEFAULT_GUIDANCE = 3.5  # FluxPipeline's guidance_scale: the embedded guidance of FLUX.1-dev
DEFAULT_SAMPLE_SIZE = 128  # FluxPipeline.default_sample_size (latents): 1024 px with Flux's VAE


class FluxPrior(ReleasableText, LatentPrior):
    """eps of a Flux.1 transformer (flow velocity converted, latents packed 2 x 2 inside), its CLIP and T5 text
    encoders and its VAE, all frozen. Guidance: module docstring."""

    model_label, denoiser_label = "Flux", "transformer"
    cuda_graphs = False  # plain torch.compile of the transformer
    channels_last_unet = False  # a transformer: no convolutions to lay out

    def __init__(self, transformer: FluxTransformer2DModel, vae: AutoencoderKL, text_encoders: tuple,
                 tokenizers: tuple, scheduler_config: dict, resolution: int | None = None, name: str = "",
                 max_sequence_length: int = DEFAULT_T5_TOKENS, true_cfg: bool = False,
                 embedded_guidance: float = DEFAULT_GUIDANCE):
        """text_encoders: (CLIPTextModel, T5EncoderModel); tokenizers: their two tokenizers."""
        if transformer.config.in_channels != 4 * vae.config.latent_channels:
            raise ModelError(f"{name}: the transformer takes {transformer.config.in_channels} channels, not the "
                             f"2 x 2 packed {vae.config.latent_channels}-channel latents of a text-to-image Flux")
        if not 0 < max_sequence_length <= DEFAULT_T5_TOKENS:
            raise ModelError(f"max_sequence_length must be in 1..{DEFAULT_T5_TOKENS} (FluxPipeline's limit), got "
                             f"{max_sequence_length}")
        self._setup(transformer, vae, None, None, scheduler_config, resolution, name,
                    sample_size=DEFAULT_SAMPLE_SIZE, latent_multiple=2, text_encoders=tuple(text_encoders))
        if self.prediction_type is not Prediction.FLOW:
            raise ModelError(f"{name}: a Flux transformer needs a flow-matching scheduler, the folder's predicts "
                             f"{self.prediction_type.value}")
        self.text_encoders, self.tokenizers = list(text_encoders), list(tokenizers)
        self.max_sequence_length = max_sequence_length
        self.pooled_size = transformer.config.pooled_projection_dim
        self.true_cfg = bool(true_cfg)
        self.guidance_input = bool(transformer.config.guidance_embeds)  # the network takes a guidance value
        self.embeds_guidance = self.guidance_input and not self.true_cfg  # predict_eps passes the scale (docstring)
        self.embedded_guidance: float | None = float(embedded_guidance) if self.guidance_input else None
        self.prompts = EncoderCache()
        self._ids: dict[tuple, torch.Tensor] = {}  # position ids per shape (_image_ids, _text_ids)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self._resolution // self.vae_factor
        return (self.unet.config.in_channels // 4, side, side)  # unpacked: the pipeline's num_channels_latents

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """Packed conditioning [1, max_sequence_length + pooled rows, joint_attention_dim] (module docstring)."""
        return self.prompts.get(self.known_prompt(prompt), self._encode)

    def _encode(self, prompt: str) -> torch.Tensor:
        tokens, pooled = flux_condition(self.text_encoders, self.tokenizers, prompt, self.max_sequence_length)
        return pack_cond(tokens.to(self.device, self.dtype), pooled.to(self.device, self.dtype))


    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
            guidance: float | None = None) -> torch.Tensor:
        """x_t [B, C, h, w] unpacked, t [B] long, cond [B, L, D] packed -> eps [B, C, h, w] in x_t's dtype;
        `guidance`: the embedded guidance value (None: `embedded_guidance`; ignored by a model without one)."""
        if x_t.ndim != 4 or t.shape != x_t.shape[:1] or cond.shape[0] != x_t.shape[0] or x_t.shape[-1] % 2 \
                or x_t.shape[-2] % 2:
            raise ValueError(f"eps expects x_t [B, C, h, w] (h, w even), t [B], cond [B, L, D]; got "
                             f"{list(x_t.shape)}, {list(t.shape)}, {list(cond.shape)}")
        b, _, h, w = x_t.shape
        tokens, pooled = unpack_cond(cond.to(self.dtype), self.pooled_size)
        sigma = (self.schedule.network_timesteps(t) / self.schedule.num_timesteps).to(self.device, self.dtype)
        embedded = None
        if self.guidance_input:
            value = self.embedded_guidance if guidance is None else guidance
            embedded = torch.full((b,), value, device=self.device, dtype=self.dtype)
        v = self._unet(hidden_states=pack_latents(x_t.to(self.dtype)), timestep=sigma, guidance=embedded,
                       pooled_projections=pooled, encoder_hidden_states=tokens,
                       txt_ids=self._text_ids(tokens.shape[1]),
                       img_ids=self._image_ids(h, w)).sample
        return self._as_eps(unpack_latents(v, h, w).to(x_t.dtype), x_t, t)

    def _text_ids(self, length: int) -> torch.Tensor:
        """The text tokens' position ids (zeros [length, 3], the pipeline's text_ids), made once per length."""
        if ("text", length) not in self._ids:
            self._ids[("text", length)] = torch.zeros(length, 3, device=self.device, dtype=self.dtype)
        return self._ids[("text", length)]

    def _image_ids(self, h: int, w: int) -> torch.Tensor:
        """The packed tokens' position ids for an h x w latent, made once per shape."""
        if (h, w) not in self._ids:
            self._ids[(h, w)] = latent_image_ids(h // 2, w // 2, self.device, self.dtype)
        return self._ids[(h, w)]

    @property
    def default_cfg(self) -> float:
        """FluxPipeline's defaults: guidance_scale 3.5 where it is embedded, else true_cfg_scale 1 (one call)."""
        return DEFAULT_GUIDANCE if self.embeds_guidance else 1.0

    def describe(self) -> dict:
        return super().describe() | {"schedule": self.schedule.describe(), "max_sequence_length":
                                     self.max_sequence_length, "embedded_guidance": self.embedded_guidance,
                                     "true_cfg": self.true_cfg}


def pack_latents(z: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> tokens [B, (h/2)(w/2), 4C]: FluxPipeline._pack_latents (2 x 2 patches, channel-major)."""
    b, c, h, w = z.shape
    return z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """`pack_latents` undone: tokens [B, (h/2)(w/2), 4C] -> [B, C, h, w] (FluxPipeline._unpack_latents)."""
    b, _, channels = tokens.shape
    return tokens.view(b, h // 2, w // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(
        b, channels // 4, h, w)


def latent_image_ids(rows: int, cols: int, device, dtype) -> torch.Tensor:
    """[rows * cols, 3] position ids of the packed tokens, (0, row, column): FluxPipeline._prepare_latent_image_ids."""
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3).to(device=device, dtype=dtype)


@torch.no_grad()
def flux_condition(encoders, tokenizers, prompt: str, max_sequence_length: int):
    """(T5 states [1, max_sequence_length, D], CLIP pooled [1, P]) of one prompt, as FluxPipeline.encode_prompt
    builds them; `encoders` (CLIPTextModel, T5EncoderModel), `tokenizers` the same."""
    (clip, t5), (tok_clip, tok_t5) = encoders, tokenizers
    _, pooled = clip_encode(tok_clip, clip, prompt)
    ids = tok_t5(prompt, padding="max_length", max_length=max_sequence_length, truncation=True,
                 return_tensors="pt").input_ids
    return t5(ids.to(t5.device))[0], pooled.to(t5.device)


def load_flux(model: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
              resolution: int | None = None, max_sequence_length: int = DEFAULT_T5_TOKENS,
              text_device: str | torch.device | None = None, true_cfg: bool = False,
              embedded_guidance: float = DEFAULT_GUIDANCE) -> FluxPrior:
    """A Flux.1 model from a local diffusers folder or a hub id (safetensors only; bfloat16 on CUDA, as Flux is
    published and run, float32 on the CPU by default). `true_cfg`: the user's guidance scale is a real CFG scale
    (FluxPipeline's true_cfg_scale), not the embedded guidance (module docstring). `text_device`: where the text
    encoders run (default: `device`; "cpu" keeps them off the GPU, in float32)."""
    device = torch.device(device)
    dtype = _pick_dtype(device, torch.bfloat16 if dtype is None and device.type == "cuda" else dtype)
    check_resolution(resolution, FluxPrior.model_label)
    model, source, local = locate_model(model, COMPONENTS, WEIGHTED)
    text_dev, text_dtype = text_placement(device, dtype, text_device)
    parts = load_parts(model, source, local, {"transformer": FluxTransformer2DModel, "vae": AutoencoderKL}, dtype)
    text = load_parts(model, source, local, {"text_encoder": CLIPTextModel, "text_encoder_2": T5EncoderModel,
                                             "tokenizer": AutoTokenizer, "tokenizer_2": AutoTokenizer}, text_dtype)
    return FluxPrior(parts["transformer"].to(device), parts["vae"].to(device),
                     (text["text_encoder"].to(text_dev), text["text_encoder_2"].to(text_dev)),
                     (text["tokenizer"], text["tokenizer_2"]), scheduler_config_of(model, source, local), resolution,
                     name=model, max_sequence_length=max_sequence_length, true_cfg=true_cfg,
                     embedded_guidance=embedded_guidance)
