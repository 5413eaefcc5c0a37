"""The trained tiny models (fsd train-prior, fsd2d.priors.trained): shipped names load through the diffusers
code paths and run end to end; training lowers the loss and resumes to the same bits after kill -9; a damaged
file is one line; Proposition 1 holds on a trained network."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from fsd2d.priors.trained import CARD, TrainedModel, read_card, trained_folder

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")
TRAINED = [m.value for m in TrainedModel]


def one_error_line(res) -> str:
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


# ------------------------------------------------------------------------------------------ the shipped models
@pytest.mark.parametrize("name", TRAINED)
def test_shipped_model_matches_its_card_and_fits_the_budget(name):
    folder = trained_folder(name)
    card = read_card(folder)  # every file against its sha256
    assert card["dataset"] == {"tiny-sd": "imageset", "tiny-sd-objects": "objects", "tiny-mvdream": "objects-mv"}[name]
    assert card["files"] and all((folder / f).is_file() for f in card["files"])
    assert not (folder / ".train").exists()  # no training leftovers shipped
    total = sum(p.stat().st_size for m in TRAINED for p in trained_folder(m).rglob("*") if p.is_file())
    assert total <= 25 * 2**20, total


def test_stable_diffusion_names_load_through_diffusers_unchanged():
    """No special case: diffusers' own pipeline loads the folder, and its UNet is the one our prior calls."""
    from diffusers import StableDiffusionPipeline

    from fsd2d.priors.diffusers_prior import StableDiffusionPrior
    from fsd2d.priors.load import load_prior

    for name in ("tiny-sd", "tiny-sd-objects"):
        prior = load_prior(name, "cpu")
        assert isinstance(prior, StableDiffusionPrior) and prior.resolution == 32 and prior.latent_shape == (4, 8, 8)
        pipe = StableDiffusionPipeline.from_pretrained(str(trained_folder(name)), dtype=torch.float32)
        caption = prior.card["prompts"][0] + (f", {prior.card['view_suffixes'][0]}" if prior.card["view_suffixes"] else "")
        z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        t = torch.tensor([100, 700])
        ids = pipe.tokenizer(caption, padding="max_length", max_length=77, return_tensors="pt").input_ids
        with torch.no_grad():
            ctx = pipe.text_encoder(ids).last_hidden_state.expand(2, -1, -1)
            theirs = pipe.unet(z, t, encoder_hidden_states=ctx).sample
            ours = prior.eps(z, t, prior.encode_prompt(caption).expand(2, -1, -1))
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)  # the same modules on the same inputs


def test_mvdream_name_loads_in_mvdream_layout():
    from fsd2d.priors.load import load_prior
    from fsd2d.priors.mvdream import MVDreamPrior, is_mvdream_folder

    assert is_mvdream_folder(trained_folder("tiny-mvdream"))
    prior = load_prior("tiny-mvdream", "cpu")
    assert isinstance(prior, MVDreamPrior) and prior.view.resolution == 32 and prior.latent_shape == (16, 8, 8)


def test_prompts_lists_a_trained_model_and_unknown_prompts_are_refused(tmp_path):
    res = runner.invoke(app, ["prompts", "--model", "tiny-sd-objects"])
    assert res.exit_code == 0 and "mushroom" in res.output and "side view" in res.output
    line = one_error_line(runner.invoke(app, ["compare-2d", "--model", "tiny-sd", "--prompt", "a dragon", "--steps",
                                              "2", "--seeds", "0", "--no-progress", "--out", str(tmp_path / "o")]))
    assert "tiny-sd knows: cat" in line and not (tmp_path / "o").exists()
    line = one_error_line(runner.invoke(app, ["gen-3d", "--model", "tiny-sd", "--prompt", "cat", "--steps", "2",
                                              "--seeds", "0", "--no-progress", "--out", str(tmp_path / "g")]))
    assert "trained on 2D imageset" in line and not (tmp_path / "g").exists()


def test_compare_2d_runs_on_tiny_sd_and_scores_pictures(tmp_path):
    out = tmp_path / "c"
    res = runner.invoke(app, ["compare-2d", "--model", "tiny-sd", "--prompt", "brick", "--steps", "10", "--seeds",
                              "0,1", "--methods", "ddim,fsd,sds", "--cfg", "3", "--no-progress", "--out", str(out)])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    for method in ("ddim", "fsd", "sds"):
        entry = m["methods"][method]
        assert 0.0 <= entry["prompt_accuracy"] <= 1.0 and len(entry["per_seed"]) == 2
        assert all(s["nearest_picture"] in ("cat", "astronaut", "coffee", "rocket", "galaxy", "brick", "grass",
                                            "gravel") and s["exact_set_psnr"] > 0 for s in entry["per_seed"])
    assert (out / "grid.png").is_file()


@pytest.mark.parametrize("name, cameras", [("tiny-sd-objects", 2), ("tiny-mvdream", 1)])
def test_gen_3d_runs_on_the_trained_objects_models_with_ground_truth(tmp_path, name, cameras):
    out = tmp_path / "g"
    res = runner.invoke(app, ["gen-3d", "--model", name, "--prompt", "mushroom", "--steps", "4", "--seeds", "0,1",
                              "--num-gaussians", "200", "--no-progress", "--out", str(out)])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert "references_reached" in m and m["per_seed"]["0"]["majority"].startswith(("mushroom/", "snowman/",
                                                                                      "cactus/", "tree/"))
    run = json.loads((out / "run.json").read_text())
    assert run["train_resolved"]["cameras_per_step"] == cameras


# ------------------------------------------------------------------------------------------ damaged files
def copy_model(tmp_path: Path, name: str = "tiny-sd") -> Path:
    dst = tmp_path / name
    shutil.copytree(trained_folder(name), dst)
    return dst


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "delete", "add a file", "break the card"])
def test_a_damaged_or_altered_model_is_one_error_line_and_nothing_written(tmp_path, damage):
    folder = copy_model(tmp_path)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    if damage == "flip a byte":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0x01
        weights.write_bytes(bytes(data))
    elif damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "delete":
        weights.unlink()
    elif damage == "add a file":
        (folder / "unet" / "extra.safetensors").write_bytes(b"x")
    else:
        (folder / CARD).write_text("{not json")
    out = tmp_path / "out"
    line = one_error_line(runner.invoke(app, ["compare-2d", "--model", str(folder), "--prompt", "cat", "--steps", "2",
                                              "--seeds", "0", "--no-progress", "--out", str(out)]))
    assert ("sha256" in line or "missing" in line or "not listed" in line or "damaged" in line), line
    assert not out.exists()


# ------------------------------------------------------------------------------------------ Proposition 1
def test_proposition_1_on_the_trained_network_in_float64():
    """fsd-exact = DDIM on tiny-sd (float64 on the CPU), as on the exact prior: to 1e-10 relative."""
    from fsd2d.guidance import Guidance
    from fsd2d.priors.load import load_prior
    from fsd2d.sampling import DistillConfig, Method, ddim_sample, distill, initial_noise
    from fsd2d.schedule import timesteps

    prior = load_prior("tiny-sd", "cpu", "float64")
    assert prior.dtype == torch.float64
    g = Guidance.from_prompts(prior, "astronaut", "", 3.0)
    seeds, steps = (0, 1, 2), 30
    x_ddim = ddim_sample(prior, g, initial_noise(prior, seeds), timesteps(steps, 20, 980))
    x_fsd = distill(prior, g, Method.FSD_EXACT.config(DistillConfig(steps=steps)), seeds)
    assert x_ddim.dtype == torch.float64
    assert ((x_fsd - x_ddim).norm() / x_ddim.norm()).item() <= 1e-10
    x_other = distill(prior, g, Method.FSD_EXACT.config(DistillConfig(steps=steps)), (7, 8, 9))
    assert ((x_other - x_ddim).norm() / x_ddim.norm()).item() > 1e-2  # not a constant output


# ------------------------------------------------------------------------------------------ training
SMALL = dict(steps=6, vae_steps=4, batch=8, vae_batch=8, checkpoint_every=2, pool=4, warmup=2)


def test_a_few_training_steps_lower_the_loss(tmp_path, monkeypatch):
    import fsdtrain.train as training
    from fsdtrain.datasets import Dataset
    from fsdtrain.train import TrainPriorConfig, train_prior

    monkeypatch.setattr(training, "LOG_EVERY", 10)
    monkeypatch.setattr(training, "SAMPLE_SEEDS", 1)
    config = TrainPriorConfig(Dataset.IMAGESET, steps=60, vae_steps=60, batch=16, vae_batch=16, warmup=5, lr=2e-3)
    card = train_prior(config, tmp_path / "m")
    for stage in ("vae", "unet"):
        loss = card["training"]["loss"][stage]
        assert len(loss) == 6 and loss[-1] < 0.8 * loss[0], (stage, loss)
    assert read_card(tmp_path / "m")["files"] == card["files"]


KILLER = """
import os, signal, sys
from pathlib import Path
from fsdtrain.datasets import Dataset
from fsdtrain.train import TrainPriorConfig, train_prior
import fsdtrain.train as training
training.SAMPLE_SEEDS = 1

def kill(state):
    if state.stage == "unet" and state.step == 3:  # one step after the UNet's checkpoint at step 2
        os.kill(os.getpid(), signal.SIGKILL)

train_prior(TrainPriorConfig(Dataset(sys.argv[1]), **{small}), Path(sys.argv[2]), callback=kill)
"""


@pytest.mark.parametrize("dataset", ["objects", "objects-mv"])
def test_train_prior_killed_with_sigkill_resumes_to_the_same_bits(tmp_path, monkeypatch, dataset):
    import fsdtrain.train as training
    from fsdtrain.datasets import Dataset
    from fsdtrain.train import TrainPriorConfig, train_prior

    monkeypatch.setattr(training, "SAMPLE_SEEDS", 1)
    config = TrainPriorConfig(Dataset(dataset), **SMALL)
    whole = train_prior(config, tmp_path / "whole")
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLER.replace("{small}", repr(SMALL)), dataset, str(killed)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]  # really killed (SIGKILL), after a checkpoint
    ckpt = torch.load(killed / ".train" / "checkpoint.pt", weights_only=True)
    assert (ckpt["stage"], ckpt["step"]) == ("unet", 2)
    res = runner.invoke(app, ["train-prior", dataset, "--out", str(killed), "--steps", "6", "--vae-steps", "4"])
    assert res.exit_code == 2 and "--resume" in res.stderr  # an existing checkpoint is never dropped silently
    resumed = train_prior(config, killed, resume=True)
    assert resumed["files"] == whole["files"]  # every file, weights and samples, bit for bit
    assert resumed["training"]["loss"] == whole["training"]["loss"]  # and the loss log
    assert not (killed / ".train").exists()


@pytest.mark.parametrize("args, needle", [
    (["dragons"], "allowed: imageset, objects, objects-mv"),
    (["objects", "--steps", "0"], "steps must be an integer"),
    (["objects-mv", "--batch", "30"], "multiples of 4"),
    (["imageset", "--lr", "nan"], "--lr must be a finite number"),
    (["imageset", "--prompt-dropout", "1"], "prompt-dropout must be in [0, 1)"),
    (["objects", "--pool", "0"], "pool must be in [1, 100000]"),
    (["imageset", "--threads", "0"], "threads must be an integer"),
])
def test_train_prior_bad_input_is_one_line_and_writes_nothing(tmp_path, args, needle):
    out = tmp_path / "m"
    line = one_error_line(runner.invoke(app, ["train-prior", *args, "--out", str(out)]))
    assert needle in line, line
    assert not out.exists()


def test_train_prior_refuses_an_out_below_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    line = one_error_line(runner.invoke(app, ["train-prior", "imageset", "--out", str(tmp_path / "f" / "m")]))
    assert "f" in line and (tmp_path / "f").read_text() == "x"
