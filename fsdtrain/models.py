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
  frozen: its embeddings of the few captions are distinct, and the UNet learns to read them.
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from fsd2d.priors.mvdream import MultiViewUNet, MultiViewUNetConfig

RESOLUTION = 32  # image side in pixels
VAE_FACTOR = 4  # image side / latent side
LATENT_CHANNELS = 4
CONTEXT_DIM = 32  # the tiny CLIP's hidden size (fsd2d.priors.random_sd.random_text_encoder("tiny"))


def tiny_vae() -> AutoencoderKL:
    """3 levels (factor 4): [3, 32, 32] in [-1, 1] <-> [4, 8, 8]; drawn from torch's global generator."""
    return AutoencoderKL(
        block_out_channels=(32, 64, 64), in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS,
        norm_num_groups=16, layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, sample_size=RESOLUTION,
    )


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
