"""The tiny architectures `fsd train-prior` trains: sized to train in minutes on 2 CPU cores and to ship.

All of them work at RESOLUTION = 32 px images, a VAE of scale factor 4 (three levels) and 4 x 8 x 8 latents, so
that a trained model's default resolution is the embedded priors' 32 px (priors/diffusers_prior.py reads it
from the configs: UNet sample_size 8 x VAE factor 4). Sizes and costs, measured on our 2-core machine with one
thread, batch 64 (docs/guides/train-prior.md):
- VAE (AutoencoderKL, block_out_channels 32/64/64, one ResNet per level, 4 latent channels): 0.95 M parameters;
- Stable Diffusion UNet (UNet2DConditionModel: 32/64 channels, cross-attention on the 4 x 4 level, CLIP width 32):
  0.99 M parameters, ~0.17 s per training step;
- MVDream UNet (fsd2d.priors.mvdream.MultiViewUNet: 32/64 channels, multi-view attention on both levels): about
  the same size, the 4 views of a set attending to each other;
- text encoder: the tiny random CLIP of fsd2d.priors.random_sd (2 layers, width 32, byte-level tokenizer), kept
  frozen: its embeddings of the few captions are distinct, and the UNet learns to read them;
- `--arch sd3` (Arch.SD3): Stable Diffusion 3's layout, a rectified-flow model: an SD3Transformer2DModel (MMDiT,
  4 joint blocks of width 96, patch 1: 64 image tokens), a VAE of the same size without quant convs and with
  SD3's shift factor, and SD3's three frozen text encoders in tiny form: CLIP-L- and CLIP-G-like encoders with
  projections (width 32 each, byte-level tokens padded to SD3_CLIP_TOKENS) and a one-layer T5 (width 64) read
  over SD3_T5_TOKENS tokens (the pipeline's max_sequence_length, recorded in the card).
"""
from __future__ import annotations

import enum

import torch
from diffusers import AutoencoderKL, SD3Transformer2DModel, UNet2DConditionModel

from fsd2d.priors.mvdream import MultiViewUNet, MultiViewUNetConfig

RESOLUTION = 32  # image side in pixels
VAE_FACTOR = 4  # image side / latent side
LATENT_CHANNELS = 4
CONTEXT_DIM = 32  # the tiny CLIP's hidden size (fsd2d.priors.random_sd.random_text_encoder("tiny"))
SD3_CLIP_TOKENS = 32  # byte-level tokens per caption for SD3's CLIPs (the longest caption, with a view, takes 20)
SD3_T5_TOKENS = 8  # T5 tokens (StableDiffusion3Pipeline's max_sequence_length; 256 there by default)
SD3_WIDTH = 64  # joint_attention_dim: CLIP-L + CLIP-G widths side by side (32 + 32) = the T5 width
SD3_FLOW_SHIFT = 1.0  # the flow schedule's shift: none at 32 px (SD3 uses 3.0 at 1024 px, Esser et al. 2024 Sec. 5.3.2)


class Arch(str, enum.Enum):
    """The layout `fsd train-prior --arch` trains (MVDream's follows from the objects-mv dataset)."""

    SD = "sd"  # Stable Diffusion 1.x / 2.x: UNet, eps prediction, scaled-linear VP schedule
    SD3 = "sd3"  # Stable Diffusion 3: MMDiT transformer, flow velocity, rectified flow


def tiny_vae(quant_convs: bool = True, shift_factor: float | None = None) -> AutoencoderKL:
    """3 levels (factor 4): [3, 32, 32] in [-1, 1] <-> [4, 8, 8]; drawn from torch's global generator. SD3's layout:
    no quant convs (`quant_convs=False`) and a shift factor (set after training)."""
    return AutoencoderKL(
        block_out_channels=(32, 64, 64), in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS,
        norm_num_groups=16, layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, sample_size=RESOLUTION,
        **({} if quant_convs else dict(use_quant_conv=False, use_post_quant_conv=False, shift_factor=shift_factor)),
    )


def tiny_sd3_transformer() -> SD3Transformer2DModel:
    """v(z_t | t, text) on [4, 8, 8] latents: 4 joint (MMDiT) blocks of width 96 (4 heads of 24), patch 1."""
    return SD3Transformer2DModel(
        sample_size=RESOLUTION // VAE_FACTOR, patch_size=1, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
        num_layers=4, attention_head_dim=16, num_attention_heads=4, joint_attention_dim=SD3_WIDTH,
        caption_projection_dim=64, pooled_projection_dim=2 * CONTEXT_DIM, pos_embed_max_size=RESOLUTION // VAE_FACTOR,
    )


def tiny_sd3_text_encoders(tokenizer) -> tuple:
    """(CLIP-L-like, CLIP-G-like, T5-like) random encoders for the byte-level tokenizer, frozen by the trainer."""
    from transformers import T5Config, T5EncoderModel

    from fsd2d.priors.random_backbones import tiny_clip_with_projection

    clip_l = tiny_clip_with_projection(tokenizer, CONTEXT_DIM, CONTEXT_DIM)
    clip_g = tiny_clip_with_projection(tokenizer, CONTEXT_DIM, CONTEXT_DIM)
    t5 = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=SD3_WIDTH, d_ff=128, d_kv=16, num_layers=1,
                                 num_heads=4))
    return clip_l, clip_g, t5


def tiny_sd_unet() -> UNet2DConditionModel:
    """eps(z_t | t, text) on [4, 8, 8] latents: levels of 32 and 64 channels, text cross-attention on the 4 x 4 one."""
    return UNet2DConditionModel(
        sample_size=RESOLUTION // VAE_FACTOR, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=16, attention_head_dim=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CONTEXT_DIM,
    )


def tiny_mvdream_unet() -> MultiViewUNet:
    """MVDream's network on [4, 8, 8] latents per view: levels of 32 and 64 channels (GroupNorm(32) needs
    multiples of 32), multi-view self-attention and text cross-attention on both levels, camera MLP on the
    flattened 4 x 4 camera-to-world matrix."""
    return MultiViewUNet(MultiViewUNetConfig(
        image_size=RESOLUTION // VAE_FACTOR, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
        model_channels=32, attention_resolutions=(1, 2), num_res_blocks=1, channel_mult=(1, 2),
        num_head_channels=16, context_dim=CONTEXT_DIM,
    ))


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
