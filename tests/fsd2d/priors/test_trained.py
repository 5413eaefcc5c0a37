"""The trained tiny models (fsd train-prior, fsd2d.priors.trained): shipped names load through the diffusers
code paths and run end to end; training lowers the loss and resumes to the same bits after kill -9; a damaged
file is one line; Proposition 1 holds on a trained network."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
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
    assert card["dataset"] == {"tiny-sd": "imageset", "tiny-sd-objects": "objects", "tiny-mvdream": "objects-mv",
                               "tiny-sd3": "imageset", "tiny-sd3-objects": "objects"}[name]
    assert card.get("arch", "sd") == ("sd3" if name.startswith("tiny-sd3") else "sd")
    assert card["files"] and all((folder / f).is_file() for f in card["files"])
    assert not (folder / ".train").exists()  # no training leftovers shipped
    total = sum(p.stat().st_size for m in TRAINED for p in trained_folder(m).rglob("*") if p.is_file())
    assert total <= 25 * 2**20, total


def first_caption(card: dict) -> str:
    return card["prompts"][0] + (f", {card['view_suffixes'][0]}" if card["view_suffixes"] else "")


def assert_runs_with_plain_diffusers(folder: Path) -> None:
    """What the docs (guides/train-prior.md) promise a folder made by `fsd train-prior`: the pipeline class its model_index.json names,
    from_pretrained(DIR) with no dtype, then a call, on the CPU. MVDream's layout names MVDreamPipeline, which
    diffusers does not have: then its VAE, text encoder, tokenizer and scheduler load plainly, all float32."""
    import diffusers
    from transformers import CLIPTextModel, CLIPTokenizer

    from fsd2d.priors.mvdream import PIPELINE_CLASS

    name = json.loads((folder / "model_index.json").read_text())["_class_name"]
    caption = first_caption(read_card(folder))
    if name == PIPELINE_CLASS:
        assert not hasattr(diffusers, name)  # the docs say so: if diffusers gains it, test it here
        vae = diffusers.AutoencoderKL.from_pretrained(folder, subfolder="vae")
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
        diffusers.DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
        assert vae.dtype == text_encoder.dtype == torch.float32
        ids = tokenizer(caption, padding="max_length", max_length=77, return_tensors="pt").input_ids
        with torch.no_grad():
            ctx = text_encoder(ids).last_hidden_state  # [1, 77, D]
            image = vae.decode(torch.zeros(1, 4, 8, 8)).sample  # [1, 3, 32, 32]
        assert ctx.isfinite().all() and image.shape == (1, 3, 32, 32) and image.isfinite().all()
        return
    pipe = getattr(diffusers, name).from_pretrained(folder)  # exactly the docs' call: no dtype
    denoiser = pipe.transformer if hasattr(pipe, "transformer") else pipe.unet
    assert denoiser.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.float32
    pipe.set_progress_bar_config(disable=True)
    extra = {"max_sequence_length": read_card(folder)["max_sequence_length"]} if hasattr(pipe, "transformer") else {}
    images = pipe(caption, height=32, width=32, num_inference_steps=2, output_type="np",
                  generator=torch.Generator().manual_seed(0), **extra).images
    assert images.shape == (1, 32, 32, 3) and np.isfinite(images).all()


@pytest.mark.parametrize("name", TRAINED)
def test_shipped_models_run_with_plain_diffusers(name):
    assert_runs_with_plain_diffusers(trained_folder(name))


@pytest.mark.parametrize("name", TRAINED)
def test_shipped_files_are_what_the_writer_writes_from_their_weights(tmp_path, name):
    """`fsd train-prior` writes the shipped files from the same weights (the docs' bit-for-bit claim): the
    writer applied to the shipped weights gives the same weights, tokenizer and configs (but for the library
    versions they record; samples.png depends on the CPU's kernels, docs/guides/train-prior.md)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    from fsd2d.priors.mvdream import load_unet
    from fsd2d.priors.random_sd import ddim_scheduler, save_mvdream, save_stable_diffusion, write_tokenizer
    from fsdtrain.datasets import Dataset
    from fsdtrain.train import TrainPriorConfig, caption_encoder

    folder, half = trained_folder(name), {"torch_dtype": torch.float16}
    card = read_card(folder)
    out = tmp_path / name
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **half)
    tokenizer = write_tokenizer(tmp_path / "tokenizer")
    # as training leaves it: tokenizer.json records the padding and truncation of the tokenizer's last call
    caption_encoder(TrainPriorConfig(Dataset.IMAGESET), tokenizer, lambda ids: SimpleNamespace(last_hidden_state=ids))([""])
    if card.get("arch") == "sd3":
        write_sd3_again(folder, out, vae, tmp_path)
    elif card["views"] > 1:
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=torch.float16)
        save_mvdream(out, load_unet(folder / "unet", torch.device("cpu"), torch.float16), vae, text_encoder,
                     tokenizer, ddim_scheduler())
    else:
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=torch.float16)
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **half)
        save_stable_diffusion(out, unet, vae, text_encoder, tokenizer, ddim_scheduler())
    versions = ("transformers_version", "_diffusers_version", "_name_or_path")  # the last: from from_pretrained
    for rel in card["files"]:
        if rel == "samples.png":
            continue
        ours, shipped = out / rel, folder / rel
        if rel.endswith("config.json") or rel == "model_index.json":
            ours_json, shipped_json = (json.loads(f.read_text()) for f in (ours, shipped))
            assert {k: v for k, v in ours_json.items() if k not in versions} == \
                {k: v for k, v in shipped_json.items() if k not in versions}, rel
        else:
            assert ours.read_bytes() == shipped.read_bytes(), rel
    assert json.loads((folder / "text_encoder" / "config.json").read_text())["dtype"] == "float32"


def write_sd3_again(folder: Path, out: Path, vae, tmp_path: Path) -> None:
    """fsdtrain's SD3 writer (random_backbones.save_sd3) applied to a shipped SD3-layout model's weights, with the
    tokenizer as training leaves it (its last call: the T5 slot's, SD3_T5_TOKENS tokens)."""
    from diffusers import SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection, T5EncoderModel

    from fsd2d.priors.random_backbones import flow_scheduler, save_sd3
    from fsd2d.priors.random_sd import write_tokenizer
    from fsdtrain import models

    tokenizer = write_tokenizer(tmp_path / "tokenizer", models.SD3_CLIP_TOKENS)
    tokenizer("", padding="max_length", max_length=models.SD3_T5_TOKENS, truncation=True, add_special_tokens=True,
              return_tensors="pt")
    # cast as training casts (module.to(float16)): from_pretrained keeps T5's `wo` layers in float32
    transformer = SD3Transformer2DModel.from_pretrained(folder, subfolder="transformer").to(torch.float16)
    encoders = tuple(cls.from_pretrained(folder, subfolder=sub).to(torch.float16) for cls, sub in (
        (CLIPTextModelWithProjection, "text_encoder"), (CLIPTextModelWithProjection, "text_encoder_2"),
        (T5EncoderModel, "text_encoder_3")))
    save_sd3(out, transformer, vae, encoders, tokenizer, flow_scheduler(models.SD3_FLOW_SHIFT))


def test_stable_diffusion_names_load_through_diffusers_unchanged():
    """No special case: diffusers' own pipeline loads the folder, and its UNet is the one our prior calls."""
    from diffusers import StableDiffusionPipeline

    from fsd2d.priors.diffusers_prior import StableDiffusionPrior
    from fsd2d.priors.load import load_prior

    for name in ("tiny-sd", "tiny-sd-objects"):
        prior = load_prior(name, "cpu")
        assert isinstance(prior, StableDiffusionPrior) and prior.resolution == 32 and prior.latent_shape == (4, 8, 8)
        pipe = StableDiffusionPipeline.from_pretrained(str(trained_folder(name)))  # the docs' call: no dtype
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
    from fsd2d.priors.layouts import is_mvdream_folder
    from fsd2d.priors.mvdream import MVDreamPrior

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


@pytest.mark.parametrize("name", ["tiny-sd", "tiny-sd3"])
def test_compare_2d_runs_on_tiny_sd_and_scores_pictures(tmp_path, name):
    out = tmp_path / "c"
    res = runner.invoke(app, ["compare-2d", "--model", name, "--prompt", "brick", "--steps", "10", "--seeds",
                              "0,1", "--methods", "ddim,fsd,sds", "--cfg", "3", "--no-progress", "--out", str(out)])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    for method in ("ddim", "fsd", "sds"):
        entry = m["methods"][method]
        assert 0.0 <= entry["prompt_accuracy"] <= 1.0 and len(entry["per_seed"]) == 2
        assert all(s["nearest_picture"] in ("cat", "astronaut", "coffee", "rocket", "galaxy", "brick", "grass",
                                            "gravel") and s["exact_set_psnr"] > 0 for s in entry["per_seed"])
    assert (out / "grid.png").is_file()


@pytest.mark.parametrize("name, cameras", [("tiny-sd-objects", 2), ("tiny-mvdream", 1), ("tiny-sd3-objects", 2)])
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
@pytest.mark.parametrize("name", ["tiny-sd", "tiny-sd3"])
def test_proposition_1_on_the_trained_network_in_float64(name):
    """fsd-exact = DDIM on tiny-sd and on the rectified-flow tiny-sd3 (where DDIM is the Euler sampler), float64 on
    the CPU, as on the exact prior: to 1e-10 relative."""
    from fsd2d.guidance import Guidance
    from fsd2d.priors.load import load_prior
    from fsd2d.sampling import DistillConfig, Method, ddim_sample, distill, initial_noise
    from fsd2d.schedule import timesteps

    prior = load_prior(name, "cpu", "float64")
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


@pytest.mark.parametrize("arch", ["sd", "sd3"])
def test_a_few_training_steps_lower_the_loss(tmp_path, monkeypatch, arch):
    import fsdtrain.train as training
    from fsdtrain.datasets import Dataset
    from fsdtrain.models import Arch
    from fsdtrain.train import TrainPriorConfig, train_prior

    monkeypatch.setattr(training, "LOG_EVERY", 10)
    monkeypatch.setattr(training, "SAMPLE_SEEDS", 1)
    config = TrainPriorConfig(Dataset.IMAGESET, steps=60, vae_steps=60, batch=16, vae_batch=16, warmup=5, lr=2e-3,
                              arch=Arch(arch))
    card = train_prior(config, tmp_path / "m")
    for stage in ("vae", "unet" if arch == "sd" else "transformer"):
        loss = card["training"]["loss"][stage]
        assert len(loss) == 6 and loss[-1] < 0.8 * loss[0], (stage, loss)
    assert read_card(tmp_path / "m")["files"] == card["files"]


KILLER = """
import os, signal, sys
from pathlib import Path
from fsdtrain.datasets import Dataset
from fsdtrain.models import Arch
from fsdtrain.train import TrainPriorConfig, train_prior
import fsdtrain.train as training
training.SAMPLE_SEEDS = 1

def kill(state):
    if state.stage == "unet" and state.step == 3:  # one step after the UNet's checkpoint at step 2
        os.kill(os.getpid(), signal.SIGKILL)

train_prior(TrainPriorConfig(Dataset(sys.argv[1]), **{small}, arch=Arch(sys.argv[3])), Path(sys.argv[2]),
            callback=kill)
"""


@pytest.mark.parametrize("dataset, arch", [("objects", "sd"), ("objects-mv", "sd"), ("objects", "sd3")])
def test_train_prior_killed_with_sigkill_resumes_to_the_same_bits(tmp_path, monkeypatch, dataset, arch):
    import fsdtrain.train as training
    from fsdtrain.datasets import Dataset
    from fsdtrain.models import Arch
    from fsdtrain.train import TrainPriorConfig, train_prior

    monkeypatch.setattr(training, "SAMPLE_SEEDS", 1)
    config = TrainPriorConfig(Dataset(dataset), **SMALL, arch=Arch(arch))
    whole = train_prior(config, tmp_path / "whole")
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILLER.replace("{small}", repr(SMALL)), dataset, str(killed), arch],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]  # really killed (SIGKILL), after a checkpoint
    ckpt = torch.load(killed / ".train" / "checkpoint.pt", weights_only=True)
    assert (ckpt["stage"], ckpt["step"]) == ("unet", 2)
    res = runner.invoke(app, ["train-prior", dataset, "--out", str(killed), "--steps", "6", "--vae-steps", "4",
                              "--arch", arch])
    assert res.exit_code == 2 and "--resume" in res.stderr  # an existing checkpoint is never dropped silently
    resumed = train_prior(config, killed, resume=True)
    assert resumed["files"] == whole["files"]  # every file, weights and samples, bit for bit
    assert resumed["training"]["loss"] == whole["training"]["loss"]  # and the loss log
    assert not (killed / ".train").exists()
    assert_runs_with_plain_diffusers(killed)  # what train-prior writes loads plainly (objects, objects-mv, sd3)


@pytest.mark.parametrize("args, needle", [
    (["dragons"], "allowed: imageset, objects, objects-mv"),
    (["objects", "--steps", "0"], "steps must be an integer"),
    (["objects-mv", "--batch", "30"], "multiples of 4"),
    (["imageset", "--lr", "nan"], "--lr must be a finite number"),
    (["imageset", "--prompt-dropout", "1"], "prompt-dropout must be in [0, 1)"),
    (["objects", "--pool", "0"], "pool must be in [1, 100000]"),
    (["imageset", "--threads", "0"], "threads must be an integer"),
    (["objects-mv", "--arch", "sd3"], "--arch sd3 takes imageset or objects"),
    (["imageset", "--arch", "sd4"], "allowed: sd, sd3"),
])
def test_train_prior_bad_input_is_one_line_and_writes_nothing(tmp_path, args, needle):
    out = tmp_path / "m"
    line = one_error_line(runner.invoke(app, ["train-prior", *args, "--out", str(out)]))
    assert needle in line, line
    assert not out.exists()


@pytest.mark.parametrize("name, value", [("threads", 5000), ("batch", 10**6), ("steps", 10**6 + 1)])
def test_train_prior_caps_say_what_they_cap(name, value):
    """Training's caps are its own (named MAX_TRAIN_STEPS, MAX_BATCH, MAX_THREADS), not the sampling runs' step
    cap (fsd2d.sampling.MAX_STEPS): a training stage may take more steps than a sampling run, and threads or
    images per step have caps of their own."""
    from fsd2d.errors import InputError
    from fsd2d.sampling import MAX_STEPS, check_steps
    from fsdtrain.datasets import Dataset
    from fsdtrain.train import MAX_BATCH, MAX_THREADS, MAX_TRAIN_STEPS, TrainPriorConfig

    cap = {"threads": MAX_THREADS, "batch": MAX_BATCH, "steps": MAX_TRAIN_STEPS}[name]
    with pytest.raises(InputError, match=rf"{name} must be an integer in \[1, {cap}\], got {value}"):
        TrainPriorConfig(Dataset.IMAGESET, **{name: value}).validate()
    TrainPriorConfig(Dataset.IMAGESET, **{name: cap}).validate()
    TrainPriorConfig(Dataset.IMAGESET, steps=MAX_STEPS + 1).validate()  # beyond a sampling run's cap, not training's
    with pytest.raises(InputError):
        check_steps(MAX_STEPS + 1)


# ------------------------------------------------------------------------------------------ the pool cache
def test_pool_cache_round_trips_without_rendering(tmp_path, monkeypatch):
    import fsdtrain.train as training
    from fsdtrain.datasets import Dataset
    from fsdtrain.train import TrainPriorConfig, load_pool

    config = TrainPriorConfig(Dataset.OBJECTS_MV, pool=1)
    first = load_pool(tmp_path / "pool.safetensors", config, progress=False)
    monkeypatch.setattr(training, "build_dataset", lambda *a, **k: pytest.fail("rendered again"))
    again = load_pool(tmp_path / "pool.safetensors", config, progress=False)
    for name, tensor in first.tensors().items():
        assert torch.equal(getattr(again, name), tensor), name
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    b1, b2 = first.sample(2, g1), again.sample(2, g2)
    assert torch.equal(b1.images, b2.images) and b1.captions == b2.captions and torch.equal(b1.cameras, b2.cameras)


class Payload:
    """Unpickling this writes a marker file: what a tampered cache could do if it were unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "executed"))


@pytest.mark.parametrize("kind", ["pickle", "torch.save pickle", "corrupt", "empty", "truncated", "other settings",
                                  "foreign tensors"])
def test_a_tampered_damaged_or_foreign_pool_cache_is_rebuilt_never_executed(tmp_path, monkeypatch, kind):
    import pickle

    from safetensors.torch import save_file

    import fsdtrain.train as training
    from fsdtrain.datasets import Dataset
    from fsdtrain.train import TrainPriorConfig, load_pool

    config = TrainPriorConfig(Dataset.OBJECTS, pool=1)
    path, marker = tmp_path / "cache", tmp_path / "marker"  # no extension: torch.load reads *.safetensors safely
    good = load_pool(tmp_path / "good.safetensors", config, progress=False)
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"key": None, "pool": Payload(marker)}))
    elif kind == "torch.save pickle":
        torch.save({"key": None, "pool": Payload(marker)}, path)
    elif kind == "corrupt":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes((tmp_path / "good.safetensors").read_bytes()[:5000])
    elif kind == "other settings":
        load_pool(path, TrainPriorConfig(Dataset.OBJECTS, pool=1, seed=1), progress=False)
    else:
        save_file({"images": torch.zeros(2, 2)}, str(path), metadata={"key": "{}"})
    pool = load_pool(path, config, progress=False)
    assert not marker.exists()  # nothing was executed
    for name, tensor in good.tensors().items():  # rebuilt: the pool of these settings
        assert torch.equal(getattr(pool, name), tensor), name
    monkeypatch.setattr(training, "build_dataset", lambda *a, **k: pytest.fail("rendered again"))
    assert torch.equal(load_pool(path, config, progress=False).images, good.images)  # and cached: read back


def test_nothing_in_the_package_unpickles():
    """Weights and caches are read with safetensors, checkpoints with torch.load(weights_only=True)."""
    import re

    root = Path(__file__).resolve().parents[3]
    sources = [p for d in ("fsd2d", "fsd3d", "fsdbatch", "fsdtrain") for p in (root / d).rglob("*.py")]
    sources.append(root / "cli.py")
    for path in sources:
        text = path.read_text()
        assert not re.search(r"\bimport (c?pickle|dill|joblib|shelve|marshal)\b|\bpickle\.load", text), path
        assert "allow_pickle=True" not in text, path
        for call in re.findall(r"torch\.load\(.*", text):
            assert "weights_only=True" in call, (path, call)


# ------------------------------------------------------------------------------------------ train-prior's output
TRAIN_QUIETLY = """
import sys
import fsdtrain.train as training
training.SAMPLE_SEEDS = 1
from cli import app
app(sys.argv[1:], prog_name="fsd")
"""


def test_train_prior_prints_no_warning_and_its_folder_runs_with_plain_diffusers(tmp_path):
    """A fresh process (transformers warns once per process): stderr holds nothing with --no-progress."""
    out = tmp_path / "m"
    proc = subprocess.run([sys.executable, "-c", TRAIN_QUIETLY, "train-prior", "imageset", "--out", str(out),
                           "--steps", "2", "--vae-steps", "2", "--batch", "8", "--vae-batch", "8", "--no-progress"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == "", proc.stderr
    assert proc.stdout.startswith(f"wrote {out}/")
    assert_runs_with_plain_diffusers(out)


def test_samples_row_labels_fit_their_rows(tmp_path, monkeypatch):
    """samples.png's row labels ('mushroom, front view') are wrapped, or shrunk, to the height of their row; a
    label that fits is left alone."""
    from fsd2d import figures

    figs = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: figs.append(fig))
    labels = ["mushroom, front view", "snowman, front view", "tree", "aquitealongwordwithoutanyspace"]
    rows = [np.full((8, 32, 32, 3), 0.5)] * len(labels)
    figures.image_grid(tmp_path / "g.png", rows, labels, [f"seed {s}" for s in range(8)], title="samples")
    fig = figs[0]
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    rows_axes = [fig.axes[8 * r] for r in range(len(labels))]
    for ax, label in zip(rows_axes, labels):
        text, cell = ax.yaxis.label.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert cell.y0 - 0.5 <= text.y0 and text.y1 <= cell.y1 + 0.5, (label, text, cell)
        assert text.x0 >= 0, label  # inside the figure
        assert " ".join(ax.yaxis.label.get_text().split()) == label  # the words, wrapped at spaces
    assert rows_axes[2].yaxis.label.get_text() == "tree" and rows_axes[2].yaxis.label.get_fontsize() == 10


def test_prompts_lists_a_folder_made_by_train_prior(tmp_path):
    folder = copy_model(tmp_path, "tiny-sd-objects")  # what `fsd train-prior objects --out DIR` writes
    res = runner.invoke(app, ["prompts", "--model", str(folder)])
    assert res.exit_code == 0, res.output
    assert all(p in res.output.split() for p in ("mushroom", "snowman", "cactus", "tree")) and "side view" in res.output
    (folder / CARD).unlink()  # a diffusers folder without a card takes any text: no list
    line = one_error_line(runner.invoke(app, ["prompts", "--model", str(folder)]))
    assert "no model card" in line
    copy = copy_model(tmp_path / "2", "tiny-sd")
    (copy / "samples.png").write_bytes(b"x")  # altered: the card's sha256 check, as at load
    assert "sha256" in one_error_line(runner.invoke(app, ["prompts", "--model", str(copy)]))


def test_train_prior_refuses_an_out_below_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    line = one_error_line(runner.invoke(app, ["train-prior", "imageset", "--out", str(tmp_path / "f" / "m")]))
    assert "f" in line and (tmp_path / "f").read_text() == "x"
