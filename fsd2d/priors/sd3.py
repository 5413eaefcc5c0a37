"""Stable Diffusion 3 / 3.5 (diffusers folder layout, StableDiffusion3Pipeline) as a `Prior`: a rectified-flow model.

Working space: the VAE latent z = scaling * (E(2 image - 1) - shift), [B, 16, res/8, res/8] (SD3's VAE: shift
0.0609, scaling 1.5305; fsd2d.priors.diffusers_prior.LatentPrior's codec). The schedule is the rectified flow of
the scheduler config (FlowMatchEulerDiscreteScheduler, shift 3.0 for SD3 / SD3.5; fsd2d.schedule.flow_schedule),
the transformer predicts the velocity v = eps - x_0 at timestep sigma_t * 1000, converted to eps in the one place
(fsd2d.schedule.to_eps): eps = x_t + alpha_t v. So DDIM here is diffusers' flow-matching Euler sampler, and every
method runs unchanged.

Conditioning, as StableDiffusion3Pipeline.encode_prompt builds it for one prompt: CLIP-L's and CLIP-G's penultimate
hidden states side by side [1, 77, 768 + 1280], zero-padded to the T5 width (joint_attention_dim, 4096) and followed
by T5's states [1, max_sequence_length (256), 4096] (zeros when the folder has no T5, as the pipeline allows); the
pooled vector is CLIP-L's and CLIP-G's text_embeds side by side [1, 2048]. Both travel as one tensor
(`pack_cond`): [1, 77 + 256 + 1, 4096].

Prompt encodings are computed once per prompt and kept; `release_text_encoders()` frees the encoders (T5-XXL alone
is ~9 GB in float16) once a run has encoded its prompts, and the loader can keep them on the CPU (`text_device`).
"""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, SD3Transformer2DModel
from transformers import AutoTokenizer, CLIPTextModelWithProjection, T5EncoderModel

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

PIPELINE_CLASS = "StableDiffusion3Pipeline"
COMPONENTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
WEIGHTED = ("transformer", "vae", "text_encoder", "text_encoder_2")
T5_PARTS = ("text_encoder_3", "tokenizer_3")  # optional, as the pipeline allows
DEFAULT_T5_TOKENS = 256  # StableDiffusion3Pipeline's max_sequence_length


class SD3Prior(ReleasableText, LatentPrior):
    """eps of an SD3 / SD3.5 transformer (flow velocity converted), its three text encoders and its VAE, all frozen."""

    model_label, denoiser_label = "Stable Diffusion 3", "transformer"
    cuda_graphs = False  # plain torch.compile of the transformer
    channels_last_unet = False  # a transformer: no convolutions to lay out

    def __init__(self, transformer: SD3Transformer2DModel, vae: AutoencoderKL, text_encoders: tuple, tokenizers: tuple,
                 scheduler_config: dict, resolution: int | None = None, name: str = "",
                 max_sequence_length: int = DEFAULT_T5_TOKENS):
        """text_encoders: (CLIP-L, CLIP-G, T5 or None); tokenizers: the same three (None with no T5)."""
        self._setup(transformer, vae, None, None, scheduler_config, resolution, name,
                    sample_size=transformer.config.sample_size, latent_multiple=transformer.config.patch_size,
                    text_encoders=tuple(e for e in text_encoders if e is not None))
        if self.prediction_type is not Prediction.FLOW:
            raise ModelError(f"{name}: an SD3 transformer needs a flow-matching scheduler, the folder's predicts "
                             f"{self.prediction_type.value}")
        self.text_encoders, self.tokenizers = list(text_encoders), list(tokenizers)
        self.max_sequence_length = max_sequence_length
        self.t5 = text_encoders[2] is not None
        self.pooled_size = transformer.config.pooled_projection_dim
        self.prompts = EncoderCache()

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """Packed conditioning [1, 77 + T5 tokens + pooled rows, joint_attention_dim] (module docstring)."""
        return self.prompts.get(self.known_prompt(prompt), self._encode)

    def _encode(self, prompt: str) -> torch.Tensor:
        tokens, pooled = sd3_condition(self.text_encoders, self.tokenizers, prompt,
                                       self.unet.config.joint_attention_dim, self.max_sequence_length)
        return pack_cond(tokens.to(self.device, self.dtype), pooled.to(self.device, self.dtype))

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x_t [B, C, h, w], t [B] long, cond [B, L, D] packed -> eps [B, C, h, w] in x_t's dtype."""
        if x_t.ndim != 4 or t.shape != x_t.shape[:1] or cond.shape[0] != x_t.shape[0]:
            raise ValueError(f"eps expects x_t [B, C, h, w], t [B], cond [B, L, D]; got {list(x_t.shape)}, "
                             f"{list(t.shape)}, {list(cond.shape)}")
        tokens, pooled = unpack_cond(cond.to(self.dtype), self.pooled_size)
        # sigma_t * 1000 in at least float32, as the pipeline's scheduler gives it (float16 would round 993.24 to
        # 993.0); the transformer casts its sinusoidal embedding to its own dtype
        timestep = self.schedule.network_timesteps(t).to(self.device, torch.promote_types(self.dtype, torch.float32))
        v = self._unet(hidden_states=x_t.to(self.dtype), encoder_hidden_states=tokens, pooled_projections=pooled,
                       timestep=timestep).sample.to(x_t.dtype)
        return self._as_eps(v, x_t, t)

    @property
    def default_cfg(self) -> float:
        return 7.0  # StableDiffusion3Pipeline's guidance_scale (the standard form, as ours)

    def describe(self) -> dict:
        return super().describe() | {"schedule": self.schedule.describe(), "t5": self.t5,
                                     "max_sequence_length": self.max_sequence_length}


@torch.no_grad()
def sd3_condition(encoders, tokenizers, prompt: str, width: int, max_sequence_length: int):
    """(tokens [1, L_clip + max_sequence_length, width], pooled [1, P_l + P_g]) of one prompt, as
    StableDiffusion3Pipeline.encode_prompt builds them (module docstring): `encoders` (CLIP-L, CLIP-G, T5 or None),
    `tokenizers` the same; `width` the transformer's joint_attention_dim. Shared with `fsd train-prior --arch sd3`."""
    (clip_l, clip_g, t5), (tok_l, tok_g, tok_t5) = encoders, tokenizers
    states_l, pooled_l = clip_encode(tok_l, clip_l, prompt, penultimate=True)
    states_g, pooled_g = clip_encode(tok_g, clip_g, prompt, penultimate=True)
    clip = torch.cat([states_l, states_g], dim=-1)  # [1, L_clip, 768 + 1280]
    clip = torch.nn.functional.pad(clip, (0, width - clip.shape[-1]))
    if t5 is None:
        t5_states = torch.zeros(1, max_sequence_length, width, dtype=clip.dtype, device=clip.device)
    else:
        ids = tok_t5(prompt, padding="max_length", max_length=max_sequence_length, truncation=True,
                     add_special_tokens=True, return_tensors="pt").input_ids
        t5_states = t5(ids.to(t5.device))[0].to(clip.device)
    return torch.cat([clip, t5_states.to(clip.dtype)], dim=1), torch.cat([pooled_l, pooled_g], dim=-1)


def has_t5(folder: Path) -> bool:
    """Whether a local SD3 folder has its T5 encoder (model_index.json may set it to null)."""
    return all((folder / part).is_dir() for part in T5_PARTS)


def load_sd3(model: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
             resolution: int | None = None, max_sequence_length: int = DEFAULT_T5_TOKENS, t5: bool = True,
             text_device: str | torch.device | None = None) -> SD3Prior:
    """An SD3 / SD3.5 model from a local diffusers folder or a hub id (safetensors only; float16 on CUDA, float32
    on the CPU by default). `t5=False`, or a folder without text_encoder_3: no T5, zeros in its place (the pipeline's
    text_encoder_3=None). `text_device`: where the text encoders run (default: `device`; "cpu" keeps them off the
    GPU, in float32)."""
    device = torch.device(device)
    dtype = _pick_dtype(device, dtype)
    check_resolution(resolution, SD3Prior.model_label)
    model, source, local = locate_model(model, COMPONENTS, WEIGHTED)
    use_t5 = t5 and (has_t5(Path(source)) if Path(source).is_dir() else True)
    text_dev, text_dtype = text_placement(device, dtype, text_device)
    parts = load_parts(model, source, local, {"transformer": SD3Transformer2DModel, "vae": AutoencoderKL}, dtype)
    texts = {"text_encoder": CLIPTextModelWithProjection, "text_encoder_2": CLIPTextModelWithProjection,
             "tokenizer": AutoTokenizer, "tokenizer_2": AutoTokenizer}
    if use_t5:
        texts |= {"text_encoder_3": T5EncoderModel, "tokenizer_3": AutoTokenizer}
    text = load_parts(model, source, local, texts, text_dtype)
    encoders = tuple(text[k].to(text_dev) if k in text else None for k in ("text_encoder", "text_encoder_2",
                                                                           "text_encoder_3"))
    tokenizers = (text["tokenizer"], text["tokenizer_2"], text.get("tokenizer_3"))
    return SD3Prior(parts["transformer"].to(device), parts["vae"].to(device), encoders, tokenizers,
                    scheduler_config_of(model, source, local), resolution, name=model,
                    max_sequence_length=max_sequence_length)
