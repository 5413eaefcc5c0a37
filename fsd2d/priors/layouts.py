"""Which backbone a model folder holds, read from its model_index.json (the pipeline class diffusers saved) without
loading any weights: the one place where a folder's layout is recognised, used by the loader (fsd2d.priors.load)
and by gen-3d's choice of profile (fsd3d.settings.model_profile)."""
from __future__ import annotations

import enum
import json
from pathlib import Path


class Backbone(str, enum.Enum):
    """A model family, by the pipeline class of its diffusers folder (model_index.json's `_class_name`)."""

    STABLE_DIFFUSION = "StableDiffusionPipeline"  # SD 1.x / 2.x (also a folder with no model_index.json)
    MVDREAM = "MVDreamPipeline"  # MVDream's diffusers-format conversion (fsd2d.priors.mvdream)
    SD3 = "StableDiffusion3Pipeline"  # SD3 / SD3.5: rectified flow (fsd2d.priors.sd3)
    SDXL = "StableDiffusionXLPipeline"  # SDXL: VP UNet, two CLIP encoders, size conditions (fsd2d.priors.sdxl)
    FLUX = "FluxPipeline"  # Flux.1 dev / schnell: rectified flow, embedded guidance (fsd2d.priors.flux)
    FLUX2_KLEIN = "Flux2KleinPipeline"  # FLUX.2 klein (base: real CFG; step-distilled): rectified flow (fsd2d.priors.flux2)


def backbone_of(folder: Path) -> Backbone:
    """The backbone of a local diffusers folder: its model_index.json's pipeline class; MVDream also by its UNet
    config (fsd2d.priors.mvdream.is_mvdream_folder); Stable Diffusion for anything else (the loader then says what
    is missing). A pipeline class this toolkit does not run is a ModelError naming the ones it does."""
    from fsd2d.errors import ModelError
    from fsd2d.priors.mvdream import is_mvdream_folder

    if is_mvdream_folder(folder):
        return Backbone.MVDREAM
    try:
        name = json.loads((folder / "model_index.json").read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return Backbone.STABLE_DIFFUSION
    if name is None:
        return Backbone.STABLE_DIFFUSION
    try:
        return Backbone(name)
    except ValueError:
        known = ", ".join(b.value for b in Backbone)
        raise ModelError(f"model folder {folder} holds a {name}, which this toolkit does not run; it runs {known}") \
            from None


def backbone_of_model(model: str) -> Backbone:
    """The backbone of a --model string that is a local folder (`backbone_of`) or a hub id: read from the copy of
    its model_index.json in the local Hugging Face cache when there is one (no network), else Stable Diffusion."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return backbone_of(folder)
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "model_index.json")
    except Exception:  # noqa: BLE001 - not a valid id: the loader says so in its own words
        cached = None
    return backbone_of(Path(cached).parent) if isinstance(cached, str) else Backbone.STABLE_DIFFUSION
