"""Randomly initialised models of today's backbones in their diffusers folder layouts, built offline (nothing may be
downloaded): Stable Diffusion 3 / 3.5 here (Flux and SDXL beside it as they land). As fsd2d.priors.random_sd:

- "tiny" (tests): one-layer transformers on 4 x 8 x 8 latents with the tiny VAE of factor 2 (16 px images) and
  the tiny byte-level CLIP text encoders (width 32), sized like diffusers' own pipeline tests;
- "sd35m" (GPU benchmarks): the architecture of SD3.5 medium (24 MMDiT-X layers of 1536, dual attention in the first
  13, QK RMS-norm, patch 2, 16 latent channels, SD3's VAE); random weights cost what real ones do.

The folders load through `fsd --model DIR` and through a plain `DiffusionPipeline.from_pretrained(DIR)`.
"""
from __future__ import annotations

import json
from pathlib import Path

import diffusers
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from fsd2d.priors.random_sd import MAX_LENGTH, save_text_encoder, write_tokenizer

SD3_SHIFT = 3.0  # stabilityai/stable-diffusion-3(.5)-medium scheduler/scheduler_config.json
SD3_VAE = dict(shift_factor=0.0609, scaling_factor=1.5305)  # SD3's VAE config (vae/config.json)


def tiny_clip_with_projection(tokenizer, hidden: int = 32, projection: int = 32) -> CLIPTextModelWithProjection:
    """A 2-layer random CLIP text encoder with a text projection (SD3's and SDXL's second encoder kind)."""
    return CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=len(tokenizer), max_position_embeddings=MAX_LENGTH, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, hidden_size=hidden,
        intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, projection_dim=projection))


def flow_scheduler(shift: float = SD3_SHIFT) -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)


def build_random_sd3(folder: Path, size: str = "tiny", seed: int = 0, t5: bool = True) -> Path:
    """Save a deterministic random SD3-layout model of `size` ("tiny" or "sd35m") to `folder` (safetensors):
    transformer/ vae/ text_encoder(_2, _3)/ tokenizer(_2, _3)/ scheduler/ and model_index.json. `t5=False`: no
    T5 (model_index.json says null for it, as for a folder saved with text_encoder_3=None). Returns `folder`."""
    if size not in ("tiny", "sd35m"):
        raise ValueError(f"unknown size {size!r}; allowed: tiny, sd35m")
    folder = Path(folder)
    tokenizer = write_tokenizer(folder / "tokenizer")
    torch.manual_seed(seed)
    if size == "tiny":
        transformer = SD3Transformer2DModel(
            sample_size=8, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=4,
            caption_projection_dim=32, joint_attention_dim=64, pooled_projection_dim=64, out_channels=4,
            pos_embed_max_size=16)
        vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                            norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, sample_size=16, use_quant_conv=False,
                            use_post_quant_conv=False, **SD3_VAE)
        clip_l, clip_g = tiny_clip_with_projection(tokenizer), tiny_clip_with_projection(tokenizer)
        t5_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=64, d_ff=37, d_kv=8, num_layers=1,
                                             num_heads=4)) if t5 else None
    else:  # SD3.5 medium (stabilityai/stable-diffusion-3.5-medium transformer/config.json)
        transformer = SD3Transformer2DModel(
            sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
            num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
            pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=384,
            dual_attention_layers=tuple(range(13)), qk_norm="rms_norm")
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), latent_channels=16, sample_size=1024,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            layers_per_block=2, use_quant_conv=False, use_post_quant_conv=False, **SD3_VAE)
        clip_l = tiny_clip_with_projection(tokenizer, 768, 768)  # CLIP-L and -G widths, 2 layers each: their
        clip_g = tiny_clip_with_projection(tokenizer, 1280, 1280)  # cost is paid once per prompt, not per step
        t5_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=4096, d_ff=64, d_kv=64,
                                             num_layers=1, num_heads=64)) if t5 else None
    return save_sd3(folder, transformer, vae, (clip_l, clip_g, t5_encoder), tokenizer, flow_scheduler())


def save_sd3(folder: Path, transformer: SD3Transformer2DModel, vae: AutoencoderKL, encoders: tuple, tokenizer,
             scheduler: FlowMatchEulerDiscreteScheduler) -> Path:
    """Write an SD3-layout folder: the files StableDiffusion3Pipeline.save_pretrained writes for these components
    (the one byte-level tokenizer in all three tokenizer slots; text encoders' config `dtype` float32, as
    random_sd.save_text_encoder), so our loader and a plain DiffusionPipeline.from_pretrained(DIR) read it."""
    folder = Path(folder)
    transformer.save_pretrained(folder / "transformer", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    names = ("text_encoder", "text_encoder_2", "text_encoder_3")
    index = {"_class_name": "StableDiffusion3Pipeline", "_diffusers_version": diffusers.__version__,
             "feature_extractor": [None, None], "image_encoder": [None, None],
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
             "transformer": ["diffusers", "SD3Transformer2DModel"], "vae": ["diffusers", "AutoencoderKL"]}
    for i, (name, encoder) in enumerate(zip(names, encoders)):
        tok = "tokenizer" + ("" if i == 0 else f"_{i + 1}")
        if encoder is None:
            index[name], index[tok] = [None, None], [None, None]
            continue
        save_text_encoder(folder / name, encoder)
        tokenizer.save_pretrained(folder / tok)
        index[name], index[tok] = ["transformers", type(encoder).__name__], ["transformers", "CLIPTokenizer"]
    scheduler.save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return folder


# --- Stable Diffusion XL -------------------------------------------------------------------------------------------

SDXL_VAE_SCALING = 0.13025  # stabilityai/stable-diffusion-xl-base-1.0 vae/config.json


def sdxl_scheduler():
    """SDXL base's scheduler (scheduler/scheduler_config.json): Euler on scaled-linear betas 0.00085..0.012, eps."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  prediction_type="epsilon", steps_offset=1, timestep_spacing="leading",
                                  interpolation_type="linear", use_karras_sigmas=False)


def build_random_sdxl(folder: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Save a deterministic random SDXL-layout model (size "tiny": a 2-level UNet with SDXL's text-time added
    embedding on 4 x 8 x 8 latents, the tiny VAE of factor 2 (16 px images), CLIP and CLIP-with-projection text
    encoders of width 32, as diffusers' own SDXL pipeline tests) to `folder`: unet/ vae/ text_encoder(_2)/
    tokenizer(_2)/ scheduler/ and model_index.json (StableDiffusionXLPipeline, force_zeros_for_empty_prompt
    true). Returns `folder`."""
    from diffusers import UNet2DConditionModel

    from fsd2d.priors.random_sd import random_text_encoder

    if size != "tiny":
        raise ValueError(f"unknown size {size!r}; allowed: tiny")
    folder = Path(folder)
    tokenizer = write_tokenizer(folder / "tokenizer")
    torch.manual_seed(seed)
    clip_l, clip_g = random_text_encoder("tiny", tokenizer), tiny_clip_with_projection(tokenizer)
    time_dim = 8
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=time_dim, transformer_layers_per_block=(1, 2), norm_num_groups=8,
        projection_class_embeddings_input_dim=6 * time_dim + clip_g.config.projection_dim,
        cross_attention_dim=clip_l.config.hidden_size + clip_g.config.hidden_size)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, sample_size=16, scaling_factor=SDXL_VAE_SCALING,
                        force_upcast=True)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    index = {"_class_name": "StableDiffusionXLPipeline", "_diffusers_version": diffusers.__version__,
             "feature_extractor": [None, None], "force_zeros_for_empty_prompt": True, "image_encoder": [None, None],
             "scheduler": ["diffusers", "EulerDiscreteScheduler"], "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"]}
    for name, tok, encoder in (("text_encoder", "tokenizer", clip_l), ("text_encoder_2", "tokenizer_2", clip_g)):
        save_text_encoder(folder / name, encoder)
        tokenizer.save_pretrained(folder / tok)
        index[name], index[tok] = ["transformers", type(encoder).__name__], ["transformers", "CLIPTokenizer"]
    sdxl_scheduler().save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return folder


# --- Flux.1 --------------------------------------------------------------------------------------------------------

FLUX_VAE = dict(shift_factor=0.1159, scaling_factor=0.3611)  # black-forest-labs/FLUX.1-dev vae/config.json
# scheduler/scheduler_config.json of FLUX.1-dev (resolution-dependent shift) and FLUX.1-schnell (no shift)
FLUX_DEV_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                          max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
FLUX_SCHNELL_SCHEDULER = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False, base_shift=0.5,
                              max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)


def build_random_flux(folder: Path, size: str = "tiny", seed: int = 0, guidance_embeds: bool = True) -> Path:
    """Save a deterministic random Flux.1-layout model (size "tiny": one double and one single stream block of
    width 32, as diffusers' own Flux pipeline tests, on 4-channel latents packed 2 x 2 into 16-wide tokens; the
    tiny VAE of factor 2 with Flux's shift and scaling; a CLIP text encoder (pooled output) and a T5 encoder of
    width 32) to `folder`: transformer/ vae/ text_encoder(_2)/ tokenizer(_2)/ scheduler/ and model_index.json
    (FluxPipeline). `guidance_embeds`: FLUX.1-dev's guidance-distilled embedding and scheduler (dynamic shift);
    False: FLUX.1-schnell's (no guidance embedding, no shift). Returns `folder`."""
    from diffusers import FluxTransformer2DModel

    from fsd2d.priors.random_sd import random_text_encoder

    if size != "tiny":
        raise ValueError(f"unknown size {size!r}; allowed: tiny")
    folder = Path(folder)
    tokenizer = write_tokenizer(folder / "tokenizer")
    torch.manual_seed(seed)
    latent_channels, width = 4, 32
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4 * latent_channels, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=width, pooled_projection_dim=width, axes_dims_rope=(4, 4, 8),
        guidance_embeds=guidance_embeds)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=latent_channels,
                        norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, sample_size=16, use_quant_conv=False,
                        use_post_quant_conv=False, **FLUX_VAE)
    clip = random_text_encoder("tiny", tokenizer)  # hidden 32: its pooler output is the pooled projection's input
    t5 = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=width, d_ff=37, d_kv=8, num_layers=1,
                                 num_heads=4))
    transformer.save_pretrained(folder / "transformer", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    index = {"_class_name": "FluxPipeline", "_diffusers_version": diffusers.__version__,
             "feature_extractor": [None, None], "image_encoder": [None, None],
             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
             "transformer": ["diffusers", "FluxTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"]}
    for name, tok, encoder in (("text_encoder", "tokenizer", clip), ("text_encoder_2", "tokenizer_2", t5)):
        save_text_encoder(folder / name, encoder)
        tokenizer.save_pretrained(folder / tok)
        index[name], index[tok] = ["transformers", type(encoder).__name__], ["transformers", "CLIPTokenizer"]
    config = FLUX_DEV_SCHEDULER if guidance_embeds else FLUX_SCHNELL_SCHEDULER
    FlowMatchEulerDiscreteScheduler(**config).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return folder


# --- FLUX.2 klein --------------------------------------------------------------------------------------------------

# scheduler/scheduler_config.json of FLUX.2 (klein): a dynamically shifted flow; Flux2KleinPipeline computes its mu
# itself (fsd2d.schedule.flux2_mu), so only use_dynamic_shifting and time_shift_type matter here
FLUX2_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                       max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096, time_shift_type="exponential")
# Qwen3's chat template cut to what Flux2KleinPipeline renders (one user message, the generation prompt, thinking
# off): "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n", as Qwen3's own
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}{%- endif %}")
QWEN3_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")


def write_qwen_tokenizer(folder: Path):
    """A byte-level Qwen2 tokenizer (transformers' Qwen2Tokenizer, the class Flux2KleinPipeline names
    Qwen2TokenizerFast) with no merges: one token per byte, Qwen's specials after the 256 bytes, and the chat
    template above; saved to `folder` (tokenizer.json, tokenizer_config.json with the template) and returned."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    from fsd2d.priors.random_sd import _byte_level_chars

    chars = _byte_level_chars()
    vocab = {c: i for i, c in enumerate(chars)} | {s: len(chars) + i for i, s in enumerate(QWEN3_SPECIALS)}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], additional_special_tokens=list(QWEN3_SPECIALS[1:3]))
    tokenizer.add_tokens([AddedToken(t, special=False) for t in QWEN3_SPECIALS[3:]])  # Qwen3's: one token each
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_random_flux2_klein(folder: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Save a deterministic random FLUX.2 klein base model (size "tiny": one double and one single stream block of
    width 32 on 4-channel latents patchified 2 x 2 into 16-channel tokens, no guidance embedding; the Flux2 VAE of
    factor 2 with random batch-norm statistics; a 28-layer Qwen3 causal LM of width 32, enough for the pipeline's
    hidden layers 9, 18, 27, so the transformer reads 3 x 32 = 96-wide text tokens; the byte-level Qwen tokenizer
    with a chat template) to `folder`: transformer/ vae/ text_encoder/ tokenizer/ scheduler/ and model_index.json
    (Flux2KleinPipeline, is_distilled false: real CFG). Returns `folder`."""
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from fsd2d.priors.random_sd import save_text_encoder

    if size != "tiny":
        raise ValueError(f"unknown size {size!r}; allowed: tiny")
    folder = Path(folder)
    tokenizer = write_qwen_tokenizer(folder / "tokenizer")
    torch.manual_seed(seed)
    latent_channels, width, layers = 4, 32, 28
    text_encoder = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=64, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=1024,
        tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None))
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=4 * latent_channels, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=3 * width, timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4), guidance_embeds=False)
    vae = AutoencoderKLFlux2(block_out_channels=(32, 64), in_channels=3, out_channels=3,
                             latent_channels=latent_channels, norm_num_groups=8, layers_per_block=1,
                             down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                             sample_size=16)
    with torch.no_grad():  # the latents' batch-norm statistics (a trained VAE's; identity if left at 0 and 1)
        vae.bn.running_mean.copy_(0.3 * torch.randn_like(vae.bn.running_mean))
        vae.bn.running_var.copy_(0.5 + torch.rand_like(vae.bn.running_var))
    transformer.save_pretrained(folder / "transformer", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    save_text_encoder(folder / "text_encoder", text_encoder)
    FlowMatchEulerDiscreteScheduler(**FLUX2_SCHEDULER).save_pretrained(folder / "scheduler")
    index = {"_class_name": "Flux2KleinPipeline", "_diffusers_version": diffusers.__version__,
             "is_distilled": False, "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
             "text_encoder": ["transformers", "Qwen3ForCausalLM"], "tokenizer": ["transformers", "Qwen2TokenizerFast"],
             "transformer": ["diffusers", "Flux2Transformer2DModel"], "vae": ["diffusers", "AutoencoderKLFlux2"]}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return folder
