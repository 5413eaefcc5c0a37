"""Autograd bytes per view of the 3D loop's encoder (what `--seed-batch`'s default on CUDA counts, fsd3d/memory.py)
for the SD 2.1-sized VAE encoder (random weights: the bytes do not depend on them), and the seeds that fit in a
card's memory for a default Stable Diffusion run (2 views per seed); then the same projection for each backbone
gen-3d runs at 512 px (SD 2.1 base, SD3.5 medium, SDXL base 1.0, FLUX.1-dev) in the dtype a GPU run uses.

    python benchmarks/bench_seed_memory.py [--resolutions 64,128] [--dtypes float32,bfloat16] [--target 512]
        [--backbones sd21,sd35m,sdxl,flux-dev] [--backbone-resolution 128] [--half-check 32] [--scaling-check 256]

The encoder's saved activations grow with the pixels (convolutions and GroupNorms; its one attention runs as a
fused kernel, which saves no N x N matrix), so the bytes at `--target` are extrapolated from the largest measured
resolution by the pixel ratio; the rows at two resolutions show the growth (x4 per doubling). A 512 px encoder
forward takes minutes on a CPU core, hence the small sizes. bfloat16 stands for float16 (the same 2 bytes; CPU
float16 convolutions are slow). Prints GiB per view and per seed, and seeds at a time on 24, 40 and 80 GB cards
with SD 2.1 loaded in that dtype (UNet 866 M + VAE 84 M + text encoder 340 M parameters). `--dtypes` is float32
alone by default: on a CPU without native 16-bit arithmetic a half-precision encoder forward is some 200x slower
(249 s for one 128 px view in bfloat16 on the 2-core development machine, against 1.1 s in float32), and its
bytes are exactly half the float32 ones (measured: 159.92 against 319.84 MiB saved for one 128 px view, weights
included; the backbone table below checks the ratio again at a small size).

Per backbone (the closing markdown table; `--backbones ""` skips it):
- bytes per 512 px view: the backbone's VAE (its real architecture, random weights: AutoencoderKL with SD 2.1's,
  SD3.5 medium's, SDXL base's or FLUX.1-dev's config) measured with the same saved-tensor probe in float32 at
  `--backbone-resolution` px, x (512 / that)^2, x the ratio of the run dtype's bytes to float32's measured on the
  same VAE at `--half-check` px (1/2 for float16 and bfloat16: the CPU's half convolutions are too slow at 128 px).
  The run dtype is the prior's on CUDA: float16 (SD, SD3.5), bfloat16 (Flux), float32 for SDXL's VAE (its
  force_upcast: fsd2d/priors/sdxl.py) under a float16 UNet. `--scaling-check` measures the first backbone's VAE
  once more at that size: its bytes over the `--backbone-resolution` ones should be the pixel ratio (x4 at 256);
- weights resident during a 3D run: the denoiser (parameters and buffers: SD3's 226 M-value position table) and
  the VAE in their dtypes, counted on the meta device from the real configs (nothing allocated), plus the text
  encoders where the prior keeps them (SD 1 / 2: no `release_text_encoders`; SD3, SDXL and Flux release theirs on
  CUDA once the prompts are encoded, fsd3d.priors3d.StableDiffusionScenePrior: shown below the table, with the
  peak while they are loaded);
- the projected peak of a default gen-3d run (StableDiffusionScenePrior.cameras_per_step views per seed) with 1 and
  4 seeds together: weights + seeds x views x bytes per view + the fixed 1 GiB of fsd3d.memory's reserve;
- the seeds fsd3d.memory.seeds_that_fit lets advance together (capped at 64) on an 80 GB H100 and a 141 GB H200:
  free = the card's total as nvidia-smi reports it (81559 and 143771 MiB) - a 0.5 GiB CUDA context - the weights.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

import torch

from fsd2d.priors.random_sd import random_codec, write_tokenizer
from fsd3d.memory import GIB, saved_bytes, seeds_that_fit

SD21_PARAMS = 866e6 + 84e6 + 340e6  # UNet, VAE, OpenCLIP-H text encoder of SD 2.1 base

# --- per backbone ------------------------------------------------------------------------------------------------

CARDS = (("80 GB", 81559 * 2**20), ("141 GB", 143771 * 2**20))  # H100 80 GB HBM3, H200: nvidia-smi's totals
CUDA_CONTEXT = GIB // 2  # what the CUDA context takes before the model loads (roughly)
RESERVE_FIXED = GIB  # the fixed part of fsd3d.memory's reserve (0.15 x free + 1 GiB)
MAX_SEEDS = 64
CLIP_VOCAB, T5_VOCAB = 49408, 32128
ENCODER_BLOCKS = dict(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                      block_out_channels=(128, 256, 512, 512), layers_per_block=2)


def sd_vae(**extra):
    """SD 1 / 2's VAE architecture (latent 4, quant convs), as fsd2d.priors.random_sd.random_codec("sd21")."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(latent_channels=4, **ENCODER_BLOCKS, **extra)


def flow_vae(shift_scale: dict):
    """SD3's and Flux's VAE (stabilityai/stable-diffusion-3.5-medium, black-forest-labs/FLUX.1-dev vae/config.json):
    16 latent channels, no quant convs; they differ only in shift and scaling."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(latent_channels=16, use_quant_conv=False, use_post_quant_conv=False, sample_size=1024,
                         **ENCODER_BLOCKS, **shift_scale)


def clip(hidden: int, layers: int, heads: int, projection: int | None, act: str):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=CLIP_VOCAB, max_position_embeddings=77, hidden_size=hidden,
                            intermediate_size=4 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
                            hidden_act=act, projection_dim=projection or 512)
    return (CLIPTextModel if projection is None else CLIPTextModelWithProjection)(config)


def t5_xxl():
    """The T5 v1.1 XXL encoder of SD3 and Flux (text_encoder_3 / text_encoder_2)."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=T5_VOCAB, d_model=4096, d_ff=10240, d_kv=64, num_heads=64,
                                   num_layers=24, feed_forward_proj="gated-gelu", is_encoder_decoder=False))


def sd21_unet():  # as fsd2d.priors.random_sd.build_random_sd(.., "sd21")
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=64, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                                use_linear_projection=True)


def sd35m_transformer():  # stabilityai/stable-diffusion-3.5-medium transformer/config.json
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(
        sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64, num_attention_heads=24,
        joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
        pos_embed_max_size=384, dual_attention_layers=tuple(range(13)), qk_norm="rms_norm")


def sdxl_unet():  # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(5, 10, 20),
        transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)


def flux_dev_transformer():  # black-forest-labs/FLUX.1-dev transformer/config.json
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
                                  attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                                  pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56))


@dataclass(frozen=True)
class BackboneSpec:
    label: str
    prior: str  # "module:Class" of its fsd prior (does it release its text encoders on CUDA?)
    dtype: torch.dtype  # the denoiser's (and text encoders') dtype on CUDA
    vae_dtype: torch.dtype  # the VAE encoder's
    denoiser: Callable
    vae: Callable
    text_encoders: tuple[tuple[str, Callable], ...]


def _sd3_vae():
    from fsd2d.priors.random_backbones import SD3_VAE

    return flow_vae(SD3_VAE)


def _flux_vae():
    from fsd2d.priors.random_backbones import FLUX_VAE

    return flow_vae(FLUX_VAE)


def _sdxl_vae():
    from fsd2d.priors.random_backbones import SDXL_VAE_SCALING

    return sd_vae(sample_size=1024, scaling_factor=SDXL_VAE_SCALING, force_upcast=True)


CLIP_L = ("CLIP-L", lambda: clip(768, 12, 12, None, "quick_gelu"))
CLIP_L_PROJ = ("CLIP-L", lambda: clip(768, 12, 12, 768, "quick_gelu"))
CLIP_G_PROJ = ("CLIP-G", lambda: clip(1280, 32, 20, 1280, "gelu"))
BACKBONES = {
    "sd21": BackboneSpec("SD 2.1 base", "fsd2d.priors.diffusers_prior:StableDiffusionPrior", torch.float16,
                         torch.float16, sd21_unet, lambda: sd_vae(sample_size=768),
                         (("OpenCLIP-H", lambda: clip(1024, 23, 16, None, "gelu")),)),
    "sd35m": BackboneSpec("SD3.5 medium", "fsd2d.priors.sd3:SD3Prior", torch.float16, torch.float16,
                          sd35m_transformer, _sd3_vae, (CLIP_L_PROJ, CLIP_G_PROJ, ("T5-XXL", t5_xxl))),
    "sdxl": BackboneSpec("SDXL base 1.0", "fsd2d.priors.sdxl:SDXLPrior", torch.float16, torch.float32, sdxl_unet,
                         _sdxl_vae, (CLIP_L, CLIP_G_PROJ)),
    "flux-dev": BackboneSpec("FLUX.1-dev", "fsd2d.priors.flux:FluxPrior", torch.bfloat16, torch.bfloat16,
                             flux_dev_transformer, _flux_vae, (CLIP_L, ("T5-XXL", t5_xxl))),
}


def resident_bytes(module: torch.nn.Module, dtype: torch.dtype) -> tuple[int, int]:
    """(parameters, bytes once `.to(device, dtype)`): floating parameters and buffers in `dtype`, others as they are."""
    params = sum(p.numel() for p in module.parameters())
    size = 0
    for t in (*module.parameters(), *module.buffers()):
        size += t.numel() * (dtype.itemsize if t.is_floating_point() else t.element_size())
    return params, size


def on_meta(build: Callable, dtype: torch.dtype) -> tuple[int, int]:
    with torch.device("meta"):
        return resident_bytes(build(), dtype)


def encoder_view_bytes(vae, res: int, dtype: torch.dtype) -> int:
    """Autograd bytes of one res x res view through `vae`'s encoder in `dtype`, as the prior's encode (the shift
    and scaling of LatentPrior._vae_mean included): saved(2 views) - saved(1 view)."""
    vae.to(dtype)
    shift = getattr(vae.config, "shift_factor", None) or 0.0

    def views(k: int):
        x = torch.rand(k, 3, res, res, dtype=dtype, requires_grad=True)
        return (vae.encode(2 * x - 1).latent_dist.mean - shift) * vae.config.scaling_factor

    return saved_bytes(lambda: views(2)) - saved_bytes(lambda: views(1))


def backbone_table(names: list[str], target: int, res: int, half_res: int, scaling_res: int) -> None:
    import importlib
    import warnings

    from fsd3d.priors3d import StableDiffusionScenePrior

    views = StableDiffusionScenePrior.cameras_per_step * StableDiffusionScenePrior.views_per_camera
    rows, notes = [], []
    for i, name in enumerate(names):
        spec = BACKBONES[name]
        module, cls = spec.prior.split(":")
        releases = hasattr(getattr(importlib.import_module(module), cls), "release_text_encoders")
        torch.manual_seed(0)
        with warnings.catch_warnings():  # diffusers' "modules that should be kept in float32" on vae.to(half)
            warnings.simplefilter("ignore")
            vae = spec.vae().requires_grad_(False)
            measured = encoder_view_bytes(vae, res, torch.float32)
            if i == 0 and scaling_res:
                big = encoder_view_bytes(vae, scaling_res, torch.float32)
                print(f"scaling check, {spec.label} VAE in float32: {measured / 2**20:.1f} MiB per view at {res} px, "
                      f"{big / 2**20:.1f} at {scaling_res} px: x{big / measured:.3f} (pixel ratio "
                      f"x{(scaling_res / res) ** 2:g})")
            ratio = 1.0
            if spec.vae_dtype != torch.float32:
                half = encoder_view_bytes(vae, half_res, spec.vae_dtype)
                full = encoder_view_bytes(vae, half_res, torch.float32)
                ratio = half / full
                print(f"{spec.label} VAE: {str(spec.vae_dtype).removeprefix('torch.')} / float32 bytes per view "
                      f"measured at {half_res} px: {half} / {full} = {ratio:.4f}")
        per_view = measured * (target / res) ** 2 * ratio
        n_params, denoiser = on_meta(spec.denoiser, spec.dtype)
        _, vae_bytes = resident_bytes(vae, spec.vae_dtype)
        texts = [(label, *on_meta(build, spec.dtype)) for label, build in spec.text_encoders]
        text_bytes = sum(b for _, _, b in texts)
        weights = denoiser + vae_bytes + (0 if releases else text_bytes)
        per_seed = views * per_view
        peaks = [weights + n * per_seed + RESERVE_FIXED for n in (1, 4)]
        fits = [seeds_that_fit(int(total - CUDA_CONTEXT - weights), int(per_seed), MAX_SEEDS) for _, total in CARDS]
        dtype = str(spec.dtype).removeprefix("torch.")
        if spec.vae_dtype != spec.dtype:
            dtype += f" (VAE {str(spec.vae_dtype).removeprefix('torch.')})"
        rows.append(f"| {spec.label} | {dtype} | {n_params / 1e9:.3f} B | {weights / GIB:.2f} | {per_view / GIB:.2f} "
                    f"| {peaks[0] / GIB:.1f} / {peaks[1] / GIB:.1f} | {fits[0]} / {fits[1]} |")
        text = " + ".join(f"{label} {p / 1e6:.0f} M" for label, p, _ in texts)
        if releases:
            notes.append(f"- {spec.label}: text encoders {text} ({text_bytes / GIB:.2f} GiB in {dtype.split()[0]}) "
                         f"released on CUDA after encoding, not counted; the peak while they are loaded is "
                         f"{(weights + text_bytes) / GIB:.1f} GiB (weights + text encoders)")
        else:
            notes.append(f"- {spec.label}: text encoder {text} ({text_bytes / GIB:.2f} GiB) kept: counted in the "
                         "weights")
    print()
    print(f"Per backbone, a default gen-3d run at {target} px ({views} views per seed), VAE bytes measured in float32 "
          f"at {res} px x {(target / res) ** 2:g}, 16-bit dtypes x the ratio measured at {half_res} px:")
    print()
    print(f"| backbone | dtype | denoiser params | weights GiB | GiB per {target} px view | projected peak GiB, "
          f"1 / 4 seeds | seeds fitting {CARDS[0][0]} / {CARDS[1][0]} |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print("\n".join(notes))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolutions", default="64,128")
    ap.add_argument("--target", type=int, default=512)
    ap.add_argument("--dtypes", default="float32")
    ap.add_argument("--views-per-seed", type=int, default=2)
    ap.add_argument("--backbones", default=",".join(BACKBONES), help=f"of {', '.join(BACKBONES)}; '' skips")
    ap.add_argument("--backbone-resolution", type=int, default=128, help="px of the backbones' float32 probe")
    ap.add_argument("--half-check", type=int, default=32, help="px of the 16-bit / float32 bytes ratio's probe")
    ap.add_argument("--scaling-check", type=int, default=256, help="px of the first backbone's second probe; 0: none")
    args = ap.parse_args()
    import tempfile
    from pathlib import Path

    torch.manual_seed(0)
    vae, _, _ = random_codec("sd21", write_tokenizer(Path(tempfile.mkdtemp())))
    encoder = lambda x: vae.encode(2 * x - 1).latent_dist.mean  # noqa: E731  (as fsd2d.priors.diffusers_prior)
    vae.requires_grad_(False)
    print(f"| dtype | measured MiB per view | GiB per {args.target} px view | GiB per seed | seeds on 24 GB | 40 GB "
          "| 80 GB |")
    print("|---|---|---|---|---|---|---|")
    for name in filter(None, args.dtypes.split(",")):
        dtype = getattr(torch, name)
        vae.to(dtype)
        measured = {}
        for res in map(int, args.resolutions.split(",")):
            def views(k: int):
                return encoder(torch.rand(k, 3, res, res, dtype=dtype, requires_grad=True))

            measured[res] = saved_bytes(lambda: views(2)) - saved_bytes(lambda: views(1))
        res = max(measured)
        per_view = measured[res] * (args.target / res) ** 2
        per_seed = args.views_per_seed * per_view
        weights = SD21_PARAMS * torch.finfo(dtype).bits / 8
        fits = [seeds_that_fit(int(gb * 1e9 - weights), int(per_seed), 64) for gb in (24, 40, 80)]
        shown = ", ".join(f"{b / 2**20:.0f} at {r} px" for r, b in measured.items())
        print(f"| {name} | {shown} | {per_view / GIB:.2f} | {per_seed / GIB:.2f} | {fits[0]} | {fits[1]} | {fits[2]} |")
    names = [n.strip() for n in args.backbones.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKBONES]
    if unknown:
        ap.error(f"unknown backbones {unknown}; known: {', '.join(BACKBONES)}")
    if names:
        print()
        backbone_table(names, args.target, args.backbone_resolution, args.half_check, args.scaling_check)


if __name__ == "__main__":
    main()
