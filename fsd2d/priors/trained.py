"""The trained tiny models shipped in the package, by name (registered in fsd2d.models), and the model card every
trained folder carries.

`fsd train-prior` (fsdtrain) trains small Stable Diffusion, MVDream and Stable Diffusion 3 models here, on 2 CPU
cores, on the embedded worlds, and writes them in the diffusers layout (Stable Diffusion, SD3) or MVDream's published
layout, so they load through the same `--model PATH` code as any real model, with no special case. Beside the
weights it writes `fsd_model.json`, the model card:

    dataset                       "imageset", "objects" or "objects-mv" (fsd train-prior DATASET)
    world                         "imageset" (2D pictures) or "references" (the 3D reference objects)
    prompts                       the prompts it was trained on (captions: below)
    view_suffixes                 the view suffixes of its captions ("<prompt>, side view"), [] for none
    views, resolution             views per sample (MVDream: 4), image side in pixels
    parameters                    per network
    training                      the settings of `fsd train-prior` that made it, the seconds it took, the loss
    files                         {relative path: sha256} of every other file of the folder

Loading a folder that has a card checks every file against its sha256 first: a damaged or altered file is one
line (a ModelError) naming it, and nothing runs. The built-in names are folders inside the package
(`fsd2d/priors/trained/<name>/`), made by `fsd train-prior <dataset> --out <folder>` with the default settings.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import enum

from fsd2d.errors import ModelError

CARD = "fsd_model.json"
TRAINED_DIR = Path(__file__).parent / "trained"


class TrainedModel(str, enum.Enum):
    """Trained tiny models in the package (fsd2d/priors/trained/), made by `fsd train-prior`."""

    TINY_SD = "tiny-sd"  # Stable Diffusion layout, trained on `imageset` (crops of the 8 pictures): 2D
    TINY_SD_OBJECTS = "tiny-sd-objects"  # Stable Diffusion layout, trained on `objects` (reference renders): 3D
    TINY_MVDREAM = "tiny-mvdream"  # MVDream layout, trained on `objects-mv` (4-view sets of the references): 3D
    TINY_SD3 = "tiny-sd3"  # Stable Diffusion 3 layout (rectified flow), trained on `imageset`: 2D
    TINY_SD3_OBJECTS = "tiny-sd3-objects"  # Stable Diffusion 3 layout, trained on `objects`: 3D


def trained_folder(name: str) -> Path | None:
    """The package folder of a built-in trained model's name (fsd2d.models), None for other strings."""
    if name not in {m.value for m in TrainedModel}:
        return None
    folder = TRAINED_DIR / name
    if not (folder / CARD).is_file():
        raise ModelError(f"the built-in model '{name}' is missing from this installation ({folder}); reinstall the "
                         f"package, or rebuild it with `fsd train-prior` (docs/guides/train-prior.md)")
    return folder


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_files(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file of a model folder but the card (and hidden training files)."""
    folder = Path(folder)
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel != CARD and not any(part.startswith(".") for part in rel.split("/")):
            out[rel] = sha256_file(path)
    return out


def read_card(folder: Path) -> dict | None:
    """The folder's model card checked against its files, or None when it has none. ModelError (one line) for a
    card that cannot be read, a file missing, added or changed since training."""
    path = Path(folder) / CARD
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text())
        files = card["files"]
        if not isinstance(card, dict) or not isinstance(files, dict) or not isinstance(card.get("prompts"), list):
            raise ValueError("not a model card")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{path} is damaged ({type(e).__name__}): reinstall the model or retrain it") from None
    actual = folder_files(Path(folder))
    for rel, digest in files.items():
        if rel not in actual:
            raise ModelError(f"{Path(folder) / rel} is missing (listed in {CARD}): reinstall the model or retrain it")
        if actual[rel] != digest:
            raise ModelError(f"{Path(folder) / rel} does not match its sha256 in {CARD} (damaged or altered): "
                             "reinstall the model or retrain it")
    extra = sorted(set(actual) - set(files))
    if extra:
        raise ModelError(f"{Path(folder) / extra[0]} is not listed in {CARD} (a file added since training): remove it")
    return card


def card_captions(card: dict) -> list[str]:
    """Every caption the model was trained on: the prompts, and each with each view suffix ('' is the dropout)."""
    prompts = [str(p) for p in card["prompts"]]
    return prompts + [f"{p}, {s}" for p in prompts for s in card.get("view_suffixes", [])]
