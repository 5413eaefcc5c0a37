"""From a `--model` string to a Prior: a built-in name, a local diffusers folder (Stable Diffusion, or MVDream's
conversion, recognised by its model_index.json / unet/config.json), or a hub id."""
from __future__ import annotations

from pathlib import Path

import torch

from fsd2d.models import BuiltinPrior, ModelKind, Source, find_prompt_list, model_info, model_names, models_summary
from fsd2d.priors.base import ModelError, Prior, match_prompt
from fsd2d.priors.layouts import Backbone
from fsd2d.priors.trained import card_captions, read_card, trained_folder

DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda if available else cpu; anything else must name an available device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ModelError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for, but this machine has no CUDA GPU; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ModelError(f"unsupported device {device!r}; use auto, cpu, cuda or cuda:N")
    return dev


def resolve_dtype(dtype: str) -> torch.dtype | None:
    """'auto' -> None (the prior picks); otherwise one of DTYPES."""
    if dtype == "auto":
        return None
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; allowed: auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def check_prompts(model: str, *prompts: str | None) -> None:
    """Refuse, without loading any weights, a prompt that a prior with a closed list of prompts would refuse when it
    loads (the built-in imageset / patches, a trained model by name or folder: its card; fsd2d.models), by the one
    rule (fsd2d.priors.base.match_prompt); other models take any text, None is "not given". So a sweep with a
    misspelt prompt fails before its first run (fsdbatch.sweep.check_runs builds and validates every run's config). The 3D
    references are gen-3d's, which checks their prompts itself (fsd3d.reference_prior)."""
    info = model_info(model)
    listing = None if info is not None and info.kind is ModelKind.SCENE else find_prompt_list(model)
    if listing is None:
        return
    for prompt in prompts:
        if prompt is not None:
            match_prompt(prompt, listing.names(), listing.suffixes, known_by=listing.known_by)


def load_prior(model: str, device: str = "auto", dtype: str = "auto", resolution: int | None = None) -> Prior:
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    info = model_info(model)
    if info is not None and info.source is Source.EMBEDDED and info.kind is ModelKind.IMAGE:  # imageset, patches
        from fsd2d.priors.imageset import DEFAULT_RESOLUTION, ImageSetPrior
        from fsd2d.priors.patches import PatchPrior

        builtin = ImageSetPrior if model == BuiltinPrior.IMAGESET else PatchPrior
        res = DEFAULT_RESOLUTION if resolution is None else resolution  # 0 is an error, not the default
        return builtin(res, device=dev, dtype=dt or torch.float64)
    trained = trained_folder(model)  # a built-in trained model: a folder inside the package, loaded as any other
    name, model = model, str(trained) if trained is not None else model
    card = read_card(Path(model).expanduser()) if Path(model).expanduser().is_dir() else None  # sha256 first
    if not Path(model).expanduser().exists() and "mvdream" in model.lower():  # an MVDream hub id: refused by name
        raise ModelError(f"'{model}' looks like an MVDream hub id: MVDream loads from a local folder only (its "
                         "diffusers-format conversion, e.g. downloaded with `huggingface-cli download`), here "
                         "--model /path/to/that/folder")
    if Path(model).exists() or "/" in model or "\\" in model or model.startswith((".", "~")):  # folder or hub id
        return attach_card(load_backbone(model, dev, dt, resolution, card), card, name)
    if info is not None:  # the embedded 3D references: gen-3d builds them from the prompt (fsd3d.gen3d)
        raise ModelError(f"'{model}' is a 3D prior: only `fsd gen-3d --model {model}` takes it; the 2D studies take "
                         f"{', '.join(model_names(kinds=(ModelKind.IMAGE, ModelKind.MULTI_VIEW)))}, a local diffusers "
                         "folder, or a hub id like 'org/name'")
    raise ModelError(f"unknown model {model!r}: use a registered name ({models_summary()}), a local diffusers folder, "
                     "or a hub id like 'org/name'")


def load_backbone(model: str, device: torch.device, dtype: torch.dtype | None, resolution: int | None,
                  card: dict | None = None) -> Prior:
    """The prior of a diffusers folder or hub id, by its backbone (fsd2d.priors.layouts): each loader checks its
    own layout and says in one line what is missing. A trained model's card may fix how prompts are encoded
    (SD3: the T5 tokens it was trained with)."""
    from fsd2d.priors.diffusers_prior import backbone_of_model  # diffusers: only when a diffusers folder is loaded

    backbone = backbone_of_model(model)
    if backbone is Backbone.MVDREAM:  # MVDream's diffusers-format conversion (priors/mvdream.py)
        from fsd2d.priors.mvdream import load_mvdream

        return load_mvdream(model, device=device, dtype=dtype, resolution=resolution)
    if backbone is Backbone.SD3:
        from fsd2d.priors.sd3 import load_sd3

        from fsd2d.priors.sd3 import DEFAULT_T5_TOKENS

        tokens = (card or {}).get("max_sequence_length", DEFAULT_T5_TOKENS)
        return load_sd3(model, device=device, dtype=dtype, resolution=resolution, max_sequence_length=tokens)
    if backbone is Backbone.SDXL:
        from fsd2d.priors.sdxl import load_sdxl

        return load_sdxl(model, device=device, dtype=dtype, resolution=resolution)
    if backbone is Backbone.FLUX:
        from fsd2d.priors.flux import DEFAULT_T5_TOKENS as FLUX_T5_TOKENS, load_flux

        tokens = (card or {}).get("max_sequence_length", FLUX_T5_TOKENS)
        return load_flux(model, device=device, dtype=dtype, resolution=resolution, max_sequence_length=tokens)
    if backbone is Backbone.FLUX2_KLEIN:
        from fsd2d.priors.flux2 import DEFAULT_TOKENS as KLEIN_TOKENS, load_flux2_klein

        tokens = (card or {}).get("max_sequence_length", KLEIN_TOKENS)
        return load_flux2_klein(model, device=device, dtype=dtype, resolution=resolution, max_sequence_length=tokens)
    from fsd2d.priors.diffusers_prior import load_stable_diffusion

    return load_stable_diffusion(model, device=device, dtype=dtype, resolution=resolution)


def attach_card(prior: Prior, card: dict | None, name: str) -> Prior:
    """A trained model's card on its prior (`prior.card`), and its captions as the only prompts it takes."""
    if card is not None:
        prior.card = card
        for latent in (prior, getattr(prior, "view", None)):  # MVDream's 2D prior encodes through its view prior
            if latent is not None:
                latent.card, latent.captions, latent.model_label = card, card_captions(card), name
    return prior
