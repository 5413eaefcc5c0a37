"""A hub id with no network (fsd2d.priors.diffusers_prior.resolve_hub_id): one line at once, or the cached copy.

No test here touches the network: the hub's endpoint is http://127.0.0.1:9 (the discard port, nothing listens,
so a connection is refused at once) and the Hugging Face cache is a fresh temporary folder.
"""
from __future__ import annotations

import shutil
import time

import huggingface_hub.constants as hub_constants
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from fsd2d.priors.diffusers_prior import ModelError, load_stable_diffusion

runner = CliRunner()
UNREACHABLE = "http://127.0.0.1:9"
FAST_S = 5.0  # a refused connection answers in milliseconds; diffusers' retries took 23 s in process, 29 s in all
HUB_ID = "fsd-test-nobody/no-such-model"


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """An unreachable hub and an empty cache (HF_HUB_OFFLINE unset); returns the cache folder."""
    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "ENDPOINT", UNREACHABLE)
    monkeypatch.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        UNREACHABLE + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    return cache


def _compare_2d(model: str, out):
    start = time.monotonic()
    res = runner.invoke(app, ["compare-2d", "--model", model, "--steps", "2", "--seeds", "0", "--out", str(out)])
    return res, time.monotonic() - start


def test_unreachable_hub_is_one_error_line_at_once(no_hub, tmp_path):
    res, seconds = _compare_2d(HUB_ID, tmp_path / "out")
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "hub cannot be reached" in lines[0] and "Connection refused" in lines[0], lines[0]
    assert "local cache has no copy" in lines[0] and "pass that folder" in lines[0], lines[0]  # what to do
    assert "config.json" not in lines[0] and "Retrying" not in res.output
    assert seconds < FAST_S, seconds


def test_offline_mode_with_nothing_cached_is_one_error_line(no_hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res, seconds = _compare_2d(HUB_ID, tmp_path / "out")
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "HF_HUB_OFFLINE is set" in lines[0] and "local cache has no copy" in lines[0], lines[0]
    assert "config.json" not in lines[0]
    assert seconds < FAST_S, seconds


@pytest.mark.parametrize("model, needle", [
    ("fsd test/bad id", "not a hub id owner/name"),  # a space: neither a folder nor a valid id; no request made
])
def test_invalid_hub_id_is_one_line(no_hub, model, needle):
    with pytest.raises(ModelError, match=needle):
        load_stable_diffusion(model)


def _cache_copy(cache, repo_id: str, folder) -> None:
    """`folder` as the cached snapshot of `repo_id`, in huggingface_hub's cache layout."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_unreachable_hub_loads_the_cached_copy_without_retries(no_hub, tiny_sd_path):
    start = time.monotonic()
    from_folder = load_stable_diffusion(str(tiny_sd_path))
    folder_seconds = time.monotonic() - start
    repo_id = "fsd-test/tiny-sd"
    _cache_copy(no_hub, repo_id, tiny_sd_path)
    start = time.monotonic()
    prior = load_stable_diffusion(repo_id)
    assert time.monotonic() - start < folder_seconds + FAST_S  # no retries (23 s before)
    assert prior.describe()["model"] == repo_id  # named by the id the user gave, not the cache path
    for a, b in zip(prior.unet.state_dict().values(), from_folder.unet.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_partial_cached_copy_says_so(no_hub, tiny_sd_path, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(tiny_sd_path, partial)
    shutil.rmtree(partial / "vae")
    _cache_copy(no_hub, "fsd-test/partial", partial)
    with pytest.raises(ModelError, match=r"hub cannot be reached .*copy in the local cache is incomplete.*'vae'"):
        load_stable_diffusion("fsd-test/partial")


def test_a_cached_hub_id_loads_by_its_own_pipeline_class(no_hub, tiny_sd3_path):
    """A hub id of a flow model (here SD3's layout) is recognised by its model_index.json, from the cached copy
    when the hub cannot be reached: it loads as SD3 and takes the sd3 profile, not Stable Diffusion's loader (which
    asked for a unet/)."""
    from fsd2d.priors.diffusers_prior import backbone_of_model
    from fsd2d.priors.layouts import Backbone
    from fsd2d.priors.load import load_prior
    from fsd2d.priors.sd3 import SD3Prior
    from fsd3d.backbones import Profile
    from fsd3d.settings import model_profile

    repo_id = "fsd-test/tiny-sd3"
    _cache_copy(no_hub, repo_id, tiny_sd3_path)
    assert backbone_of_model(repo_id) is Backbone.SD3
    assert model_profile(repo_id)[0] is Profile.SD3
    prior = load_prior(repo_id, "cpu")
    assert isinstance(prior, SD3Prior) and prior.describe()["model"] == repo_id


def test_a_hub_id_the_hub_answers_for_is_read_from_its_downloaded_model_index(no_hub, tiny_sd3_path, monkeypatch):
    """When the hub answers, model_index.json alone is downloaded to tell the backbone (no weights fetched)."""
    import huggingface_hub

    from fsd2d.priors.diffusers_prior import backbone_of_model
    from fsd2d.priors.layouts import Backbone

    asked = []
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, repo, timeout=None: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, filename, **kw: asked.append(
        (repo, filename)) or str(tiny_sd3_path / filename))
    assert backbone_of_model("fsd-test/answered") is Backbone.SD3
    assert asked == [("fsd-test/answered", "model_index.json")]
