"""Randomly initialised Stable Diffusion and MVDream models in the diffusers folder layout, built offline.

- "tiny" (tests): configs as diffusers' own pipeline tests: a 2-level UNet on 8x8 latents, a VAE with
  scale factor 2 (16x16 images <-> 4x8x8 latents) and a 2-layer CLIP text encoder with hidden size 32;
- "sd21" (benchmarks): the architecture of Stable Diffusion 2.1 base (865M-parameter UNet, VAE with
  scale factor 8, 23-layer OpenCLIP-H text encoder); random weights cost exactly what the real ones do.
The CLIP tokenizer is a byte-level vocabulary with no merges, written here because nothing may be
downloaded. Random weights generate noise: these are for tests and timings, not for pictures.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import diffusers
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

MAX_LENGTH = 77
# The dtype a plain `from_pretrained(DIR)` (no torch_dtype) gives every component: diffusers loads the UNet and
# the VAE in float32 whatever their weights' dtype, transformers 5 the text encoder in its config's `dtype`.
PLAIN_LOAD_DTYPE = torch.float32
# model_index.json of a Stable Diffusion folder, as StableDiffusionPipeline.save_pretrained writes it for our
# components (no safety checker, feature extractor or image encoder), `_diffusers_version` added when written
SD_MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline", "feature_extractor": [None, None], "image_encoder": [None, None],
    "requires_safety_checker": False, "safety_checker": [None, None], "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
}


def _byte_level_chars() -> list[str]:
    """The 256 printable characters that GPT-2/CLIP byte-level BPE uses for the bytes 0..255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def write_tokenizer(folder: Path, max_length: int = MAX_LENGTH) -> CLIPTokenizer:
    """vocab.json (each byte char, alone and with "</w>", plus the two specials) and a merges.txt header; prompts
    are padded (truncated) to `max_length` tokens."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_level_chars()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)


def build_random_sd(folder: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Save a deterministic random SD model (safetensors) of `size` "tiny" or "sd21" to `folder`: unet/ vae/
    text_encoder/ tokenizer/ scheduler/ and model_index.json, readable by our loader and by
    StableDiffusionPipeline.from_pretrained.  Returns `folder`."""
    if size not in ("tiny", "sd21"):
        raise ValueError(f"unknown size {size!r}; allowed: tiny, sd21")
    folder = Path(folder)
    tokenizer = write_tokenizer(folder / "tokenizer")  # vocab.json/merges.txt stay beside the saved files
    torch.manual_seed(seed)
    if size == "tiny":
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32, norm_num_groups=8,
        )
    else:  # Stable Diffusion 2.1 base
        unet = UNet2DConditionModel(
            sample_size=64, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
        )
    vae, text_encoder, scheduler = random_codec(size, tokenizer)
    return save_stable_diffusion(folder, unet, vae, text_encoder, tokenizer, scheduler)


def save_stable_diffusion(folder: Path, unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoder: CLIPTextModel,
                          tokenizer: CLIPTokenizer, scheduler: DDIMScheduler) -> Path:
    """Write a Stable Diffusion model in the diffusers layout (safetensors): the files
    StableDiffusionPipeline.save_pretrained writes (tested byte for byte), but for text_encoder/config.json's
    `dtype` (save_text_encoder), so that a plain StableDiffusionPipeline.from_pretrained(DIR) runs whatever the
    weights' dtype; readable by our loader. The pipeline class itself is not imported (importing it makes
    transformers warn about torchvision). Returns `folder`."""
    folder = Path(folder)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    save_text_encoder(folder / "text_encoder", text_encoder)
    tokenizer.save_pretrained(folder / "tokenizer")
    scheduler.save_pretrained(folder / "scheduler")
    index = SD_MODEL_INDEX | {"_diffusers_version": diffusers.__version__}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")  # ConfigMixin's form
    return folder


def save_text_encoder(folder: Path, text_encoder: CLIPTextModel) -> None:
    """text_encoder.save_pretrained(folder) (weights in their dtype), with config.json's `dtype` PLAIN_LOAD_DTYPE.

    transformers 5 loads a model in its config's `dtype` when from_pretrained is given none, and save_pretrained
    writes the weights' dtype there; diffusers loads the UNet and the VAE in float32. So float16 weights with a
    float16 config make a plain StableDiffusionPipeline.from_pretrained(DIR) mix float16 and float32 ("mat1 and mat2
    must have the same dtype" on the CPU). With `dtype` float32 every component loads in float32 (float16 weights
    are cast on load, as diffusers casts the UNet's), and a torch_dtype given to from_pretrained still wins. The
    config is rewritten by transformers' own serialisation: only the `dtype` value differs."""
    text_encoder.save_pretrained(folder, safe_serialization=True)
    config = copy.deepcopy(text_encoder.config)
    config.dtype = PLAIN_LOAD_DTYPE
    config.save_pretrained(folder)


def build_random_mvdream(folder: Path, size: str = "tiny", seed: int = 0) -> Path:
    """Save a deterministic random MVDream model to `folder` in the published diffusers-format layout
    (fsd2d.priors.mvdream): unet/ (config.json with the ldm names + diffusion_pytorch_model.safetensors),
    vae/ text_encoder/ tokenizer/ scheduler/ and model_index.json naming MVDreamPipeline. `size`:
    "tiny" (tests: 2 levels of 32/64 channels with multi-view attention at both, 16 px views <-> 4 x 8 x 8
    latents, the tiny VAE and text encoder of build_random_sd) or "full" (benchmarks: MVDream's SD 2.1-base
    UNet from sd-v2-base.yaml, 256 px views, the SD 2.1 VAE and OpenCLIP-H text encoder). Returns `folder`."""
    from fsd2d.priors.mvdream import MultiViewUNet, MultiViewUNetConfig

    if size not in ("tiny", "full"):
        raise ValueError(f"unknown size {size!r}; allowed: tiny, full")
    folder = Path(folder)
    tokenizer = write_tokenizer(folder / "tokenizer")
    torch.manual_seed(seed)
    if size == "tiny":
        config = MultiViewUNetConfig(image_size=8, model_channels=32, attention_resolutions=(1, 2), num_res_blocks=1,
                                     channel_mult=(1, 2), num_head_channels=16, context_dim=32)
    else:
        config = MultiViewUNetConfig()
    unet = MultiViewUNet(config)
    vae, text_encoder, scheduler = random_codec("tiny" if size == "tiny" else "sd21", tokenizer)
    return save_mvdream(folder, unet, vae, text_encoder, tokenizer, scheduler)


def save_mvdream(folder: Path, unet, vae: AutoencoderKL, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
                 scheduler: DDIMScheduler) -> Path:
    """Write an MVDream model (`fsd2d.priors.mvdream.MultiViewUNet`) in the published diffusers-format layout:
    unet/config.json (ldm names) + unet/diffusion_pytorch_model.safetensors, vae/ text_encoder/ tokenizer/
    scheduler/ and model_index.json naming MVDreamPipeline. Returns `folder`."""
    import json

    from safetensors.torch import save_file

    from fsd2d.priors.mvdream import PIPELINE_CLASS

    folder = Path(folder)
    (folder / "unet").mkdir(parents=True, exist_ok=True)
    (folder / "unet" / "config.json").write_text(json.dumps(unet.config.to_json(), indent=2))
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()},
              str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    save_text_encoder(folder / "text_encoder", text_encoder)
    tokenizer.save_pretrained(folder / "tokenizer")
    scheduler.save_pretrained(folder / "scheduler")
    index = {"_class_name": PIPELINE_CLASS, "unet": ["mvdream", "MultiViewUNetModel"],
             "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDIMScheduler"],
             "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def random_codec(size: str, tokenizer: CLIPTokenizer) -> tuple[AutoencoderKL, CLIPTextModel, DDIMScheduler]:
    """The VAE, CLIP text encoder and DDIM scheduler of a random "tiny" or "sd21" model (Stable Diffusion 2.1
    base: VAE scale factor 8, 23-layer OpenCLIP-H text encoder), drawn from torch's global generator."""
    if size == "tiny":
        vae = AutoencoderKL(
            block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=16,
        )
    else:
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512), latent_channels=4, sample_size=768,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2,
        )
    return vae, random_text_encoder(size, tokenizer), ddim_scheduler()


def random_text_encoder(size: str, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """A random CLIP text encoder for the byte-level tokenizer: "tiny" (2 layers, hidden size 32) or "sd21"
    (OpenCLIP-H's 23 layers of 1024), drawn from torch's global generator."""
    if size == "tiny":
        text = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
    else:
        text = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                    hidden_act="gelu", projection_dim=512)
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer), max_position_embeddings=MAX_LENGTH, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **text,
        )
    )


def ddim_scheduler() -> DDIMScheduler:
    """Stable Diffusion's DDIM scheduler config: scaled-linear betas 0.00085..0.012 over 1000 steps, eps."""
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
