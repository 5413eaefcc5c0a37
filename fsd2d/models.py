"""The one registry of the models that `--model` knows by name: every built-in and trained model, its kind and its
prompt list, read by `fsd prompts`, fsd2d.priors.load (load_prior, check_prompts) and gen-3d.

    name               kind        source    world       what it is
    imageset           2d          embedded  imageset    exact posterior mean of crops of 8 scikit-image pictures
    patches            2d          embedded  imageset    local patch posterior mean over the same pictures
    references         3d          embedded  references  view-conditioned exact prior of the 20 reference objects
    references-local   3d          embedded  references  the same references, a local patch denoiser per camera
    tiny-sd            2d          trained   imageset    Stable Diffusion trained here on the pictures' crops
    tiny-sd-objects    2d          trained   references  Stable Diffusion trained here on the references' renders
    tiny-mvdream       multi-view  trained   references  MVDream trained here on 4-view sets of the references
    tiny-sd3           2d          trained   imageset    Stable Diffusion 3 (rectified flow) trained here on the crops
    tiny-sd3-objects   2d          trained   references  Stable Diffusion 3 (rectified flow) trained on the renders

`kind` says what one sample is (one image; a view-conditioned scene prior; 4 views); `world` what the model knows
(the card's "world" of fsd2d.priors.trained): the 2D pictures, used by the 2D studies, or the 3D references, used by
gen-3d (`dimension`: "2D" / "3D"). tiny-sd-objects is a plain Stable Diffusion (kind 2d) whose world is 3D.

Importing this module loads nothing heavy: prompt lists are read when asked for (scikit-image's picture list,
fsd3d.references, a trained model's card `fsd_model.json`).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from fsd2d.errors import InputError
from fsd2d.priors.trained import CARD, TrainedModel, read_card, trained_folder

__all__ = [
    "BuiltinPrior", "IMAGESET", "MODELS", "ModelInfo", "ModelKind", "PATCHES", "PromptInfo", "PromptList",
    "REFERENCES", "REFERENCES_LOCAL", "Source", "TrainedModel", "find_prompt_list", "model_info", "model_names",
    "models_summary", "prompt_list",
]


class ModelKind(str, enum.Enum):
    """What one sample of the model is."""

    IMAGE = "2d"  # one image per sample (the 2D studies; Stable Diffusion also lifted by gen-3d)
    SCENE = "3d"  # an embedded view-conditioned 3D prior: gen-3d only
    MULTI_VIEW = "multi-view"  # 4 views per sample, MVDream layout


class Source(str, enum.Enum):
    EMBEDDED = "embedded"  # in the code: no weights, exact ground truth
    TRAINED = "trained"  # a folder inside the package (fsd2d/priors/trained/<name>/) made by `fsd train-prior`


class BuiltinPrior(str, enum.Enum):
    """Priors embedded in the package: no download, exact ground truth."""

    IMAGESET = "imageset"  # exact posterior mean of scikit-image picture sets (priors/imageset.py)
    PATCHES = "patches"  # local patch posterior mean over the same pictures (priors/patches.py)
    REFERENCES = "references"  # view-conditioned analytic prior of the reference objects (fsd3d.reference_prior)
    REFERENCES_LOCAL = "references-local"  # the same references, a local patch denoiser per camera (fsd3d.local_prior)


# The names code compares --model with (plain strings: they go into run.json as they are).
IMAGESET, PATCHES = BuiltinPrior.IMAGESET.value, BuiltinPrior.PATCHES.value
REFERENCES, REFERENCES_LOCAL = BuiltinPrior.REFERENCES.value, BuiltinPrior.REFERENCES_LOCAL.value
IMAGESET_WORLD, REFERENCES_WORLD = "imageset", "references"  # a model card's "world"


@dataclass(frozen=True)
class PromptInfo:
    """One prompt of a closed list: what it shows ('' where nothing is known) and, for the references, its variants
    (variant name, what it looks like)."""

    name: str
    description: str = ""
    variants: tuple[tuple[str, str], ...] = ()

    def lines(self) -> list[str]:
        head = f"  {self.name:<10} {self.description}" if self.description else f"  {self.name}"
        return [head] + [f"    {variant:<12} {text}" for variant, text in self.variants]


@dataclass(frozen=True)
class PromptList:
    """A model's closed list of prompts: `fsd prompts` prints `lines()`, check_prompts matches by the one rule
    (fsd2d.priors.base.match_prompt) against `names()` and `suffixes`."""

    title: str  # the first line `fsd prompts` prints
    prompts: tuple[PromptInfo, ...]
    suffixes: tuple[str, ...] = ()  # view suffixes of a trained objects model's captions ('<prompt>, side view')
    known_by: str = "this prior"  # how a prompt error names the model

    def names(self) -> list[str]:
        return [p.name for p in self.prompts]

    def lines(self) -> list[str]:
        return [self.title] + [line for p in self.prompts for line in p.lines()]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: ModelKind
    source: Source
    world: str  # IMAGESET_WORLD (the 2D pictures) or REFERENCES_WORLD (the 3D reference objects)
    description: str  # one line

    @property
    def dimension(self) -> str:
        """'2D' (the 2D studies) or '3D' (gen-3d), from the world the model knows."""
        return "2D" if self.world == IMAGESET_WORLD else "3D"

    def prompt_list(self) -> PromptList:
        """The prompt list, read now (a trained model: its card, checked against its files; ModelError if damaged)."""
        if self.source is Source.TRAINED:
            return card_prompt_list(self.name, read_card(trained_folder(self.name)))
        if self.kind is ModelKind.SCENE:
            from fsd3d.references import REFERENCE_PROMPTS  # lazy: fsd3d imports fsd2d

            return PromptList(
                f"prompts of the built-in 3D '{self.name}' prior (each with several variants):",
                tuple(PromptInfo(name, variants=tuple((v, spec.description) for v, spec in variants.items()))
                      for name, variants in REFERENCE_PROMPTS.items()),
                known_by="the reference prior")
        from fsd2d.priors.imageset import DEFAULT_CROPS, PROMPTS

        return PromptList(
            f"prompts of the built-in '{self.name}' prior ({DEFAULT_CROPS} crops each; '' = all of them):",
            tuple(PromptInfo(name, f"{src.description}  [skimage.data.{src.loader}]") for name, src in PROMPTS.items()),
            known_by=f"the built-in '{self.name}'")

    def prompts(self) -> tuple[PromptInfo, ...]:
        return self.prompt_list().prompts


MODELS: tuple[ModelInfo, ...] = (
    ModelInfo(IMAGESET, ModelKind.IMAGE, Source.EMBEDDED, IMAGESET_WORLD,
              "exact posterior mean of crops of 8 scikit-image pictures"),
    ModelInfo(PATCHES, ModelKind.IMAGE, Source.EMBEDDED, IMAGESET_WORLD,
              "local patch posterior mean over the same pictures"),
    ModelInfo(REFERENCES, ModelKind.SCENE, Source.EMBEDDED, REFERENCES_WORLD,
              "view-conditioned exact prior of the 20 reference objects (4 prompts x 5 variants)"),
    ModelInfo(REFERENCES_LOCAL, ModelKind.SCENE, Source.EMBEDDED, REFERENCES_WORLD,
              "the same references with a local patch denoiser per camera"),
    ModelInfo(TrainedModel.TINY_SD.value, ModelKind.IMAGE, Source.TRAINED, IMAGESET_WORLD,
              "Stable Diffusion trained here on the pictures' crops"),
    ModelInfo(TrainedModel.TINY_SD_OBJECTS.value, ModelKind.IMAGE, Source.TRAINED, REFERENCES_WORLD,
              "Stable Diffusion trained here on the references' renders (captions with view suffixes)"),
    ModelInfo(TrainedModel.TINY_MVDREAM.value, ModelKind.MULTI_VIEW, Source.TRAINED, REFERENCES_WORLD,
              "MVDream trained here on 4-view sets of the references"),
    ModelInfo(TrainedModel.TINY_SD3.value, ModelKind.IMAGE, Source.TRAINED, IMAGESET_WORLD,
              "Stable Diffusion 3 (rectified flow) trained here on the pictures' crops"),
    ModelInfo(TrainedModel.TINY_SD3_OBJECTS.value, ModelKind.IMAGE, Source.TRAINED, REFERENCES_WORLD,
              "Stable Diffusion 3 (rectified flow) trained here on the references' renders"),
)


def model_info(name: str) -> ModelInfo | None:
    """The registered model of that exact name, None for any other string (a folder, a hub id)."""
    return next((m for m in MODELS if m.name == name), None)


def model_names(source: Source | None = None, kinds: tuple[ModelKind, ...] = tuple(ModelKind)) -> list[str]:
    """The registered names, in MODELS' order, of one source (None: both) and of the given kinds."""
    return [m.name for m in MODELS if (source is None or m.source is source) and m.kind in kinds]


def models_summary() -> str:
    """'built-in: imageset, patches (2D), references, references-local (3D); trained: tiny-sd (2D), ...' for help
    texts and error messages."""
    def group(source: Source) -> str:
        dims = dict.fromkeys(m.dimension for m in MODELS if m.source is source)
        return ", ".join(", ".join(m.name for m in MODELS if m.source is source and m.dimension == d) + f" ({d})"
                         for d in dims)

    return f"built-in: {group(Source.EMBEDDED)}; trained: {group(Source.TRAINED)}"


def card_prompt_list(label: str, card: dict) -> PromptList:
    """The prompt list of a trained model's card (fsd2d.priors.trained), named `label` (its name or folder)."""
    suffixes = [str(s) for s in card.get("view_suffixes", [])]
    return PromptList(f"prompts of the trained '{label}' ({card['dataset']} world, {card['views']} view(s) per sample"
                      + (f"; captions '<prompt>, {'|'.join(suffixes)}'" if suffixes else "") + "; '' = unconditional):",
                      tuple(PromptInfo(str(p)) for p in card["prompts"]), tuple(suffixes), f"the trained {label}")


def find_prompt_list(model: str) -> PromptList | None:
    """The prompt list of a `--model` value: a registered name (which wins over a folder of the same name), else a
    folder made by `fsd train-prior` (its card); None for a model that takes any text (a folder without a card, a
    hub id, anything unknown). ModelError for a trained model whose files do not match its card."""
    info = model_info(model)
    if info is not None:
        return info.prompt_list()
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return None

    card = read_card(folder)
    return None if card is None else card_prompt_list(model, card)


def prompt_list(model: str) -> PromptList:
    """As find_prompt_list, but a model without a prompt list is an InputError (one line) saying why."""
    listing = find_prompt_list(model)
    if listing is not None:
        return listing
    if Path(model).expanduser().is_dir():

        raise InputError(f"--model {model}: this folder has no model card ({CARD}), so no prompt list: only "
                         "built-in priors and folders made by `fsd train-prior` have one (Stable Diffusion takes "
                         "any text)")
    raise InputError(f"--model {model!r}: only built-in priors and trained models have a prompt list "
                     f"({', '.join(model_names())}, or a folder made by `fsd train-prior`)")
