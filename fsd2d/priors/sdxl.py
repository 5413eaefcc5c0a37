"""Stable Diffusion XL (diffusers folder layout, StableDiffusionXLPipeline) as a `Prior`: a VP (epsilon or v) UNet.

Working space: the VAE latent z = scaling * E(2 image - 1), [B, 4, res/8, res/8] (SDXL's VAE: scaling 0.13025, no
shift). The schedule is the VP one of the scheduler config (EulerDiscreteScheduler's scaled-linear betas for SDXL
base; `schedule_from_config`), v-prediction models are converted to eps in the one place (`LatentPrior._as_eps`).

Conditioning, as StableDiffusionXLPipeline.encode_prompt builds it for one prompt (prompt_2 = prompt): CLIP-L's
(text_encoder) and OpenCLIP-G's (text_encoder_2) penultimate hidden states side by side [1, 77, 768 + 1280], and
text_encoder_2's projected pooled output (text_embeds) [1, 1280], packed into one tensor (`pack_cond`):
[1, 77 + 1, 2048]. The micro-conditioning time ids (original size, crop top-left, target size) =
(res, res, 0, 0, res, res) depend only on the prior's resolution: `eps` builds them, as the pipeline's
`_get_add_time_ids` does for height = width = res.

The empty prompt. The pipeline (model_index.json `force_zeros_for_empty_prompt`, true for SDXL base) guides with
ZEROS in place of the negative prompt's embeddings (tokens and pooled) when no negative prompt is given, which is
how SDXL was trained to be unconditional (its text dropout zeroes the embeddings); an explicit negative prompt,
even "", is encoded. Here "" (or only whitespace) is THE unconditional model (fsd2d.priors.base), so with that
flag set `encode_prompt("")` is zeros: guidance with the negative prompt "" is exactly the pipeline's default call
`pipe(prompt, guidance_scale=s)` (negative_prompt None), and the null model of ISM / NFSD is the trained
unconditional one. Without the flag, "" is encoded like any other text (the pipeline's behaviour then too).
A non-empty negative prompt is encoded, as the pipeline does.

The VAE runs in float32 when the prior's dtype is a half one (float16 or bfloat16) and the VAE config sets
`force_upcast` (SDXL's VAE overflows to NaN in float16: the pipeline's upcast); `decode` / `encode` cast in and out,
so callers see the prior's conventions (decode: float32 images; encode: latents in the images' dtype). A float64
prior keeps a float64 VAE (exact checks).

Prompt encodings are computed once per prompt and kept (`EncoderCache`); `release_text_encoders()` frees the
encoders once a run has encoded its prompts; the loader can keep them on the CPU (`text_device`).
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from fsd2d.priors.base import ModelError
from fsd2d.priors.diffusers_prior import (
    EncoderCache,
    HALF_DTYPES,
    LatentPrior,
    ReleasableText,
    _pick_dtype,
    check_resolution,
    clip_encode,
    load_parts,
    locate_model,
    model_index,
    pack_cond,
    scheduler_config_of,
    text_placement,
    unpack_cond,
)

PIPELINE_CLASS = "StableDiffusionXLPipeline"
COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
WEIGHTED = ("unet", "vae", "text_encoder", "text_encoder_2")
TIME_IDS = 6  # original (h, w), crop (top, left), target (h, w): StableDiffusionXLPipeline._get_add_time_ids


class SDXLPrior(ReleasableText, LatentPrior):
    """eps of an SDXL UNet (v converted), its two CLIP text encoders and its VAE, all frozen."""

    model_label = "Stable Diffusion XL"

    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoders: tuple, tokenizers: tuple,
                 scheduler_config: dict, resolution: int | None = None, name: str = "",
                 force_zeros_for_empty_prompt: bool = True):
        """text_encoders: (CLIPTextModel, CLIPTextModelWithProjection); tokenizers: their two tokenizers."""
        if unet.config.addition_embed_type != "text_time":
            raise ModelError(f"{name}: not an SDXL UNet (addition_embed_type is "
                             f"{unet.config.addition_embed_type!r}, SDXL's is 'text_time')")
        for key in ("latents_mean", "latents_std"):
            if getattr(vae.config, key, None) is not None:
                raise ModelError(f"{name}: the VAE config sets {key} (per-channel latent statistics), which is not "
                                 "supported (only scaling_factor)")
        self._setup(unet, vae, None, None, scheduler_config, resolution, name, sample_size=unet.config.sample_size,
                    latent_multiple=2 ** (len(unet.config.down_block_types) - 1), text_encoders=tuple(text_encoders))
        self.text_encoders, self.tokenizers = list(text_encoders), list(tokenizers)
        self.pooled_size = text_encoders[1].config.projection_dim
        expected = unet.add_embedding.linear_1.in_features
        passed = unet.config.addition_time_embed_dim * TIME_IDS + self.pooled_size
        if expected != passed:  # the pipeline's own check (_get_add_time_ids)
            raise ModelError(f"{name}: the UNet expects an added embedding of {expected} values, the text encoder's "
                             f"projection ({self.pooled_size}) and {TIME_IDS} time ids make {passed}")
        self.width = unet.config.cross_attention_dim  # 768 + 1280
        self.text_tokens = tokenizers[0].model_max_length  # 77
        self.zero_empty = bool(force_zeros_for_empty_prompt)
        half = self.dtype in HALF_DTYPES and getattr(vae.config, "force_upcast", True)
        self.vae.to(torch.float32 if half else self.dtype)  # LatentPrior's codec runs in the VAE's dtype
        res = self._resolution
        self.time_ids = torch.tensor([[res, res, 0, 0, res, res]], dtype=torch.float64)  # [1, 6]
        self.prompts = EncoderCache()

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """Packed conditioning [1, 77 + pooled rows, 768 + 1280] (module docstring; "" is zeros where the folder
        says force_zeros_for_empty_prompt)."""
        prompt = self.known_prompt(prompt)
        if self.zero_empty and prompt.strip() == "":  # no encoder needed, also after release_text_encoders
            return pack_cond(torch.zeros(1, self.text_tokens, self.width, device=self.device, dtype=self.dtype),
                             torch.zeros(1, self.pooled_size, device=self.device, dtype=self.dtype))
        return self.prompts.get(prompt, self._encode)

    def _encode(self, prompt: str) -> torch.Tensor:
        tokens, pooled = sdxl_condition(self.text_encoders, self.tokenizers, prompt)
        return pack_cond(tokens.to(self.device, self.dtype), pooled.to(self.device, self.dtype))


    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x_t [B, C, h, w], t [B] long, cond [B, L, D] packed -> eps [B, C, h, w] in x_t's dtype."""
        if x_t.ndim != 4 or t.shape != x_t.shape[:1] or cond.shape[0] != x_t.shape[0]:
            raise ValueError(f"eps expects x_t [B, C, h, w], t [B], cond [B, L, D]; got {list(x_t.shape)}, "
                             f"{list(t.shape)}, {list(cond.shape)}")
        tokens, pooled = unpack_cond(cond.to(self.dtype), self.pooled_size)
        time_ids = self.time_ids.to(self.device, self.dtype).expand(x_t.shape[0], -1)
        out = self._unet(x_t.to(self.dtype), t.to(self.device), encoder_hidden_states=tokens,
                         added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample.to(x_t.dtype)
        return self._as_eps(out, x_t, t)

    @property
    def default_cfg(self) -> float:
        return 5.0  # StableDiffusionXLPipeline's guidance_scale (the standard form, as ours)

    def describe(self) -> dict:
        return super().describe() | {"vae_dtype": str(self.vae_dtype).removeprefix("torch."),
                                     "empty_prompt": "zeros" if self.zero_empty else "encoded"}


@torch.no_grad()
def sdxl_condition(encoders, tokenizers, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [1, 77, D_1 + D_2], pooled [1, P]) of one prompt as StableDiffusionXLPipeline.encode_prompt builds
    them: both encoders' penultimate hidden states side by side, the second encoder's text_embeds."""
    (clip_l, clip_g), (tok_l, tok_g) = encoders, tokenizers
    states_l, _ = clip_encode(tok_l, clip_l, prompt, penultimate=True)
    states_g, pooled = clip_encode(tok_g, clip_g, prompt, penultimate=True)
    return torch.cat([states_l, states_g.to(states_l.device)], dim=-1), pooled


def load_sdxl(model: str, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
              resolution: int | None = None, text_device: str | torch.device | None = None) -> SDXLPrior:
    """An SDXL model from a local diffusers folder or a hub id (safetensors only; float16 on CUDA, float32 on the
    CPU by default; the VAE upcast to float32 under a half dtype). `text_device`: where the text encoders run
    (default: `device`; "cpu" keeps them off the GPU, in float32)."""
    device = torch.device(device)
    dtype = _pick_dtype(device, dtype)
    check_resolution(resolution, SDXLPrior.model_label)
    model, source, local = locate_model(model, COMPONENTS, WEIGHTED)
    text_dev, text_dtype = text_placement(device, dtype, text_device)
    unet = load_parts(model, source, local, {"unet": UNet2DConditionModel}, dtype)["unet"]
    # a half prior's VAE is read in float32 (not rounded to 16 bits and back); SDXLPrior sets its dtype
    vae = load_parts(model, source, local, {"vae": AutoencoderKL},
                     torch.float32 if dtype in HALF_DTYPES else dtype)["vae"]
    text = load_parts(model, source, local, {"text_encoder": CLIPTextModel,
                                             "text_encoder_2": CLIPTextModelWithProjection,
                                             "tokenizer": CLIPTokenizer, "tokenizer_2": CLIPTokenizer}, text_dtype)
    zeros = model_index(source).get("force_zeros_for_empty_prompt", True)
    return SDXLPrior(unet.to(device), vae.to(device),
                     (text["text_encoder"].to(text_dev), text["text_encoder_2"].to(text_dev)),
                     (text["tokenizer"], text["tokenizer_2"]), scheduler_config_of(model, source, local),
                     resolution, name=model, force_zeros_for_empty_prompt=zeros)
