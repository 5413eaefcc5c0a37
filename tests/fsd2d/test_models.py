"""The model registry (fsd2d.models): one list of the names `--model` knows, with their kinds and prompt lists, read
by `fsd prompts`, load_prior and check_prompts alike."""
from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cli import app
from fsd2d.errors import InputError
from fsd2d.models import (MODELS, REFERENCES, REFERENCES_LOCAL, BuiltinPrior, ModelKind, Source, TrainedModel,
                          model_info, model_names, prompt_list)
from fsd2d.priors.base import ModelError, PromptError
from fsd2d.priors.load import check_prompts, load_prior
from fsd2d.priors.trained import CARD, TRAINED_DIR, read_card

runner = CliRunner()
NAMES = [m.name for m in MODELS]


def prompts_error(model: str) -> str:
    """`fsd prompts --model MODEL`'s one line on stderr (exit code 2)."""
    res = runner.invoke(app, ["prompts", "--model", model])
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.output
    return res.stderr.strip()


def test_the_registry_lists_each_name_once_from_its_enums():
    assert len(set(NAMES)) == len(NAMES) == 9
    assert model_names(Source.EMBEDDED) == [b.value for b in BuiltinPrior]
    assert model_names(Source.TRAINED) == [m.value for m in TrainedModel]
    shipped = sorted(p.name for p in TRAINED_DIR.iterdir() if (p / CARD).is_file())
    assert shipped == sorted(model_names(Source.TRAINED))  # every folder inside the package, and only those
    assert model_info("nope") is None and model_info("IMAGESET") is None  # exact names only


def test_the_kinds_and_worlds_are_right():
    kinds = {m.name: m.kind for m in MODELS}
    assert kinds == {"imageset": ModelKind.IMAGE, "patches": ModelKind.IMAGE, "references": ModelKind.SCENE,
                     "references-local": ModelKind.SCENE, "tiny-sd": ModelKind.IMAGE,
                     "tiny-sd-objects": ModelKind.IMAGE, "tiny-mvdream": ModelKind.MULTI_VIEW,
                     "tiny-sd3": ModelKind.IMAGE, "tiny-sd3-objects": ModelKind.IMAGE}
    assert [m.kind.value for m in MODELS[:3]] == ["2d", "2d", "3d"] and model_info("tiny-mvdream").kind == "multi-view"
    assert [m.name for m in MODELS if m.dimension == "2D"] == ["imageset", "patches", "tiny-sd", "tiny-sd3"]
    for name in model_names(Source.TRAINED):  # the registry agrees with each shipped card
        info, card = model_info(name), read_card(TRAINED_DIR / name)
        assert card["world"] == info.world and (card["views"] == 4) == (info.kind is ModelKind.MULTI_VIEW), name


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_name_has_its_prompt_list_and_fsd_prompts_prints_it(name):
    listing = model_info(name).prompt_list()
    assert listing.names() == [p.name for p in model_info(name).prompts()] and len(listing.names()) >= 4
    res = runner.invoke(app, ["prompts", "--model", name])
    assert res.exit_code == 0 and res.output.splitlines() == listing.lines(), res.output
    assert all(f"  {p}" in res.output for p in listing.names())
    if model_info(name).kind is ModelKind.SCENE:
        assert "mushroom" in listing.names() and dict(listing.prompts[0].variants)["red"].startswith("domed red cap")


def test_fsd_prompts_takes_the_registered_names_and_no_other():
    help_text = " ".join(runner.invoke(app, ["prompts", "--help"], terminal_width=400).output.split())
    assert all(name in help_text for name in NAMES)
    line = prompts_error("nope")
    listed = line.split("have a prompt list (")[1].split(", or a folder")[0].split(", ")
    assert listed == NAMES  # the error names exactly the registry
    for other in ("Imageset", "tiny_sd", "sd", "mvdream", "reference", "org/name"):
        assert prompts_error(other) == (
            f"error: --model {other!r}: only built-in priors and trained models have a prompt list "
            f"({', '.join(NAMES)}, or a folder made by `fsd train-prior`)")
    with pytest.raises(InputError, match="only built-in priors and trained models have a prompt list"):
        prompt_list("nope")


def test_an_unknown_model_is_one_line_naming_the_registered_ones():
    with pytest.raises(ModelError) as err:
        load_prior("no such model", "cpu")
    message = str(err.value)
    assert "\n" not in message and message.startswith("unknown model 'no such model'")
    assert all(name in message for name in NAMES)
    with pytest.raises(ModelError, match="'references' is a 3D prior: only `fsd gen-3d --model references`"):
        load_prior(REFERENCES, "cpu")


def test_check_prompts_reads_the_registry():
    check_prompts("imageset", " Cat", None)
    check_prompts("tiny-sd-objects", "Mushroom , Side View")
    check_prompts("org/name", "anything")  # a hub id takes any text
    check_prompts(REFERENCES_LOCAL, "anything")  # gen-3d checks the references' prompts itself
    with pytest.raises(PromptError, match="unknown prompt 'dog'; the built-in 'patches' knows: cat"):
        check_prompts("patches", "dog")
    with pytest.raises(PromptError, match="the trained tiny-mvdream knows: mushroom"):
        check_prompts("tiny-mvdream", "mushroom", "dog")


def test_importing_the_registry_loads_nothing_heavy():
    code = ("import sys, fsd2d.models; "
            "print(sorted(m for m in ('torch', 'numpy', 'skimage', 'diffusers', 'fsd3d') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"
