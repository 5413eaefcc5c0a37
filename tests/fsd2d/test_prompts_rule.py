"""One prompt rule for every prior with a closed list of prompts (fsd2d.priors.base.match_prompt): a prompt is a
known one once surrounding whitespace is stripped and case ignored, on the embedded 2D priors, the references
(exact and local), the reference scenes and the trained models alike; anything else is refused everywhere with a
message that quotes what the user typed."""
from __future__ import annotations

import pytest
import torch

from fsd2d.priors.base import PromptError, match_prompt
from fsd2d.priors.load import load_prior

pytestmark = pytest.mark.usefixtures("one_thread")
SUFFIXES = ("front view", "side view", "back view")


@pytest.mark.parametrize("typed, known", [
    ("cat", "cat"), ("Cat", "cat"), ("  CAT \t", "cat"), ("", ""), ("   ", ""),
    ("mushroom, front view", "mushroom, front view"), ("Mushroom , Front View ", "mushroom, front view"),
    ("mushroom,side view", "mushroom, side view"),
])
def test_the_rule_strips_and_ignores_case(typed, known):
    assert match_prompt(typed, ["cat", "mushroom"], SUFFIXES) == known


@pytest.mark.parametrize("typed, quoted", [
    ("a cat", "a cat"), ("cats", "cats"), ("mushroom, top view", "mushroom, top view"),
    ("Dragon , front view", "Dragon , front view"),  # as typed (gen-3d checks its prompt before adding a suffix)
])
def test_the_rule_refuses_anything_else_quoting_it(typed, quoted):
    with pytest.raises(PromptError) as err:
        match_prompt(typed, ["cat", "mushroom"], SUFFIXES)
    assert str(err.value).startswith(f"unknown prompt {quoted!r}; this prior knows: cat, mushroom")
    with pytest.raises(PromptError):
        match_prompt("  ", ["cat"], empty=False)  # where '' is not a prompt, neither is whitespace


def embedded_2d(name: str):
    from fsd2d.priors.imageset import ImageSetPrior
    from fsd2d.priors.patches import PatchPrior

    if name == "imageset":
        return ImageSetPrior(16, crops_per_prompt=2)
    return PatchPrior(16, patches_per_prompt=8, crops_per_prompt=2)


@pytest.mark.parametrize("name", ["imageset", "patches", "tiny-sd"])
def test_every_2d_prior_takes_cat_as_cat_and_refuses_the_same_prompts(name):
    prior = embedded_2d(name) if name != "tiny-sd" else load_prior("tiny-sd", "cpu")
    cat = prior.encode_prompt("cat")
    for typed in ("Cat", " cat ", "CAT"):
        assert torch.equal(prior.encode_prompt(typed), cat), typed
    assert torch.equal(prior.encode_prompt("  "), prior.encode_prompt(""))
    for typed in ("a cat", "cats"):
        with pytest.raises(PromptError, match=f"unknown prompt '{typed}'"):
            prior.encode_prompt(typed)


def test_the_trained_objects_models_match_captions_by_the_rule():
    sd = load_prior("tiny-sd-objects", "cpu")
    assert torch.equal(sd.encode_prompt("Mushroom , Front View"), sd.encode_prompt("mushroom, front view"))
    assert torch.equal(sd.encode_prompt("SNOWMAN"), sd.encode_prompt("snowman"))
    mv = load_prior("tiny-mvdream", "cpu")
    assert torch.equal(mv.encode_prompt(" Tree"), mv.encode_prompt("tree"))
    for prior in (sd, mv):
        with pytest.raises(PromptError, match="unknown prompt 'a tree'"):
            prior.encode_prompt("a tree")


def test_the_references_take_the_same_prompts():
    from fsd3d.local_prior import LocalReferencePrior
    from fsd3d.reference_prior import ReferencePrior
    from fsd3d.references import reference_scene

    assert ReferencePrior(" Mushroom", negative_prompt="TREE ", resolution=16).prompt == "mushroom"
    assert LocalReferencePrior("Snowman", resolution=16).prompt == "snowman"
    a, b = reference_scene("Cactus ", "barrel"), reference_scene("cactus", "barrel")
    assert torch.equal(a.means, b.means) and torch.equal(a.sh0, b.sh0)
    for make in (lambda p: ReferencePrior(p, resolution=16), lambda p: LocalReferencePrior(p, resolution=16),
                 lambda p: reference_scene(p, "red")):
        with pytest.raises(PromptError, match="unknown prompt 'a mushroom'"):
            make("a mushroom")


@pytest.mark.parametrize("typed", ["dragon", "Dragon , top view"])
def test_gen_3d_quotes_the_prompt_typed_not_the_caption_it_asked_for(tmp_path, typed):
    """gen-3d adds ', front view' (and side, back) to the prompt on a trained objects model: the error names the
    prompt the user typed."""
    from test_bad_input import assert_refused

    assert_refused(tmp_path, "gen-3d", ["--model", "tiny-sd-objects", "--prompt", typed],
                   f"error: unknown prompt {typed!r}; the trained tiny-sd-objects knows: mushroom")


@pytest.mark.parametrize("typed", ["dragon, front view", "Dragon , Side View"])
def test_compare_2d_quotes_a_view_suffixed_prompt_whole(tmp_path, typed):
    """A caption typed with a known view suffix but an unknown prompt is quoted as typed, suffix and all."""
    from test_bad_input import assert_refused

    assert_refused(tmp_path, "compare-2d", ["--model", "tiny-sd-objects", "--prompt", typed],
                   f"error: unknown prompt {typed!r}; the trained tiny-sd-objects knows: mushroom")


def test_prompt_accuracy_reads_the_prompt_as_the_prior_does():
    """'Cat' on tiny-sd is the prompt 'cat': its images' nearest picture counts as the prompt's."""
    from fsd2d.crop_match import picture_scores
    from fsd2d.priors.imageset import ImageSetPrior

    images = ImageSetPrior(32).set_images("cat")[:2]  # [2, 3, 32, 32] in [0, 1]: crops of the cat picture
    assert picture_scores(images, "Cat")["prompt_accuracy"] == picture_scores(images, "cat")["prompt_accuracy"] == 1.0
