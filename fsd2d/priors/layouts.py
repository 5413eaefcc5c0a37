"""Which backbone a model folder holds, read from its model_index.json (the pipeline class diffusers saved) without
loading any weights: the one place where a folder's layout is recognised, used by the loader (fsd2d.priors.load)
and by gen-3d's choice of profile (fsd3d.settings.model_profile), and the one reader of model_index.json
(`model_index`: also the pipeline flags the loaders read, SDXL's force_zeros_for_empty_prompt, klein's is_distilled)."""
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


def model_index(model: str) -> dict:
    """The model_index.json of a local diffusers folder or of a hub id, as a dict; {} where there is none (or it is
    not a JSON object). A hub id is resolved first (fsd2d.priors.diffusers_prior.resolve_hub_id: its cached copy
    when the hub cannot be reached, a one-line ModelError when neither; else the one file is downloaded)."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        from fsd2d.priors.diffusers_prior import _hub_offline, quiet_libraries, resolve_hub_id

        cached = resolve_hub_id(model, components=None)  # a ModelError (one line): an invalid id, or not reachable
        # nor cached; a cached copy is checked by the backbone's loader against its own components
        if cached is not None:
            folder = Path(cached)
        else:
            try:
                from huggingface_hub import hf_hub_download

                with quiet_libraries():
                    folder = Path(hf_hub_download(model, "model_index.json", local_files_only=_hub_offline())).parent
            except Exception:  # noqa: BLE001 - the hub has no model_index.json for it: the loader says what is missing
                return {}
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def backbone_of(folder: Path) -> Backbone:
    """The backbone of a local diffusers folder: its model_index.json's pipeline class; MVDream also by its UNet
    config (fsd2d.priors.mvdream.is_mvdream_folder); Stable Diffusion for anything else (the loader then says what
    is missing). A pipeline class this toolkit does not run is a ModelError naming the ones it does."""
    from fsd2d.priors.mvdream import is_mvdream_folder

    if is_mvdream_folder(folder):
        return Backbone.MVDREAM
    return backbone_named(model_index(str(folder)).get("_class_name"), str(folder))


def backbone_named(name: str | None, model: str) -> Backbone:
    """The Backbone of pipeline class `name` (None: Stable Diffusion, a folder without model_index.json); a ModelError
    naming the ones this toolkit runs for any other."""
    from fsd2d.errors import ModelError

    if name is None:
        return Backbone.STABLE_DIFFUSION
    try:
        return Backbone(name)
    except ValueError:
        known = ", ".join(b.value for b in Backbone)
        raise ModelError(f"model {model} holds a {name}, which this toolkit does not run; it runs {known}") \
            from None


def backbone_of_model(model: str) -> Backbone:
    """The backbone of a --model string: a local folder (`backbone_of`) or a hub id, by its model_index.json (the
    cached copy when the hub cannot be reached, else downloaded: `model_index`)."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return backbone_of(folder)
    if "/" not in model or looks_like_path(model):  # a name, a missing folder: the loader says what is wrong
        return Backbone.STABLE_DIFFUSION
    return backbone_named(model_index(model).get("_class_name"), model)


def looks_like_path(model: str) -> bool:
    """Whether a --model string that is no folder was meant as one (absolute, ./, ~, or more than one /), not as a
    hub id owner/name."""
    return Path(model).is_absolute() or model.startswith((".", "~")) or model.count("/") > 1
