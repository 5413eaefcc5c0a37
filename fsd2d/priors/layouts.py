"""Which backbone a local model folder holds, read from its files (model_index.json's pipeline class; MVDream also by
its UNet config) without loading any weights: the one place where a folder's layout is recognised, and the one
reader of a folder's model_index.json (`folder_index`: also the pipeline flags the loaders read, SDXL's
force_zeros_for_empty_prompt, klein's is_distilled). Imports nothing of the priors: the loaders import it. A hub id
is first resolved to a folder by fsd2d.priors.diffusers_prior (`model_index`, `backbone_of_model`)."""
from __future__ import annotations

import enum
import json
from pathlib import Path

from fsd2d.errors import ModelError

MVDREAM_UNET_CLASS = "MultiViewUNetModel"  # `_class_name` of MVDream's unet/config.json in the published conversion


class Backbone(str, enum.Enum):
    """A model family, by the pipeline class of its diffusers folder (model_index.json's `_class_name`)."""

    STABLE_DIFFUSION = "StableDiffusionPipeline"  # SD 1.x / 2.x (also a folder with no model_index.json)
    MVDREAM = "MVDreamPipeline"  # MVDream's diffusers-format conversion (fsd2d.priors.mvdream)
    SD3 = "StableDiffusion3Pipeline"  # SD3 / SD3.5: rectified flow (fsd2d.priors.sd3)
    SDXL = "StableDiffusionXLPipeline"  # SDXL: VP UNet, two CLIP encoders, size conditions (fsd2d.priors.sdxl)
    FLUX = "FluxPipeline"  # Flux.1 dev / schnell: rectified flow, embedded guidance (fsd2d.priors.flux)
    FLUX2_KLEIN = "Flux2KleinPipeline"  # FLUX.2 klein (base: real CFG; step-distilled): rectified flow (fsd2d.priors.flux2)


def folder_index(folder: Path) -> dict:
    """A local folder's model_index.json as a dict; {} where there is none, or it is not a JSON object."""
    return _json_object(Path(folder) / "model_index.json")


def _json_object(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def is_mvdream_folder(folder: Path) -> bool:
    """A local folder in MVDream's diffusers-format layout: model_index.json names MVDreamPipeline, or
    unet/config.json names the multi-view UNet or has a camera_dim."""
    unet = _json_object(Path(folder) / "unet" / "config.json")
    return folder_index(folder).get("_class_name") == Backbone.MVDREAM.value or \
        unet.get("_class_name") == MVDREAM_UNET_CLASS or "camera_dim" in unet


def backbone_of(folder: Path) -> Backbone:
    """The backbone of a local diffusers folder: its model_index.json's pipeline class; MVDream also by its UNet
    config (`is_mvdream_folder`); Stable Diffusion for anything else (the loader then says what is missing). A
    pipeline class this toolkit does not run is a ModelError naming the ones it does."""
    if is_mvdream_folder(folder):
        return Backbone.MVDREAM
    return backbone_named(folder_index(folder).get("_class_name"), str(folder))


def backbone_named(name: str | None, model: str) -> Backbone:
    """The Backbone of pipeline class `name` (None: Stable Diffusion, a folder without model_index.json); a ModelError
    naming the ones this toolkit runs for any other."""
    if name is None:
        return Backbone.STABLE_DIFFUSION
    try:
        return Backbone(name)
    except ValueError:
        known = ", ".join(b.value for b in Backbone)
        raise ModelError(f"model {model} holds a {name}, which this toolkit does not run; it runs {known}") \
            from None


def looks_like_path(model: str) -> bool:
    """Whether a --model string that is no folder was meant as one (absolute, ./, ~, or more than one /), not as a
    hub id owner/name."""
    return Path(model).is_absolute() or model.startswith((".", "~")) or model.count("/") > 1
