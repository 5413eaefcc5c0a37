"""VSD / ESD / DSD in gen-3d: each seed's critic and particles are checkpointed and a run killed with SIGKILL resumes
to the same bits; the critic leaves the prior when training ends; the cost counts its evaluations and parameters; the
methods that cannot run refuse in one line."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from fsd3d.config import Gen3DConfig, NoiseKind, Train3DConfig
from fsd3d.run import load_scene_prior
from fsd3d.settings import resolve
from resume import assert_resume_is_bit_for_bit

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["--model", "tiny-sd-objects", "--prompt", "mushroom", "--steps", "6", "--num-gaussians", "60",
        "--checkpoint-every", "2", "--no-progress"]

KILLER = """
import os, signal, sys
from pathlib import Path
import torch
import fsd3d.train as training
from fsd3d.config import Gen3DConfig

torch.set_num_threads(int(sys.argv[3]))  # the test's: float reductions depend on the thread count
from fsd3d.gen3d import gen_3d

step = training.train_step

def killing_step(loop, active, i, with_loss):
    out = step(loop, active, i, with_loss)
    if i == 2:  # step 3 done, one after the checkpoint at step 2
        os.kill(os.getpid(), signal.SIGKILL)
    return out

training.train_step = killing_step
config = Gen3DConfig.from_flags(model="tiny-sd-objects", prompt="mushroom", steps=6, num_gaussians=60,
                                checkpoint_every=2, method=sys.argv[2], seeds="0", particles=int(sys.argv[4]))
gen_3d(config, Path(sys.argv[1]))
"""


@pytest.mark.parametrize("method, particles", [("vsd", 2), ("dsd", 1)])
def test_killed_with_sigkill_resumes_to_the_same_bits(tmp_path, method, particles):
    """gen-3d killed by SIGKILL after its step-2 checkpoint, then --resume: the same gaussians.ply bytes as the run
    uninterrupted, for the seed and each of its particles (VSD: the critic's LoRA, camera MLP, AdamW and generator
    and every particle's scene, Adams and generators come back from the seed's one checkpoint)."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    flags = [*TINY, "--method", method, "--seeds", "0", "--particles", str(particles)]
    res = runner.invoke(app, ["gen-3d", *flags, "--out", str(whole)])
    assert res.exit_code == 0, res.output
    proc = subprocess.run([sys.executable, "-c", KILLER, str(killed), method, str(torch.get_num_threads()),
                           str(particles)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    ckpt = torch.load(killed / "seed_0" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 2 and len(ckpt["particles"]) == particles - 1
    if method == "vsd":
        assert ckpt["critic"]["steps"] == 2 and len(ckpt["critic"]["lora"]) > 0
    else:
        assert ckpt["critic"] is None
    res = runner.invoke(app, ["gen-3d", *flags, "--out", str(killed), "--resume"])
    assert res.exit_code == 0, res.output
    plys = ["seed_0/gaussians.ply", *(f"seed_0/particle_{k}/gaussians.ply" for k in range(1, particles))]
    for ply in plys:
        assert (killed / ply).read_bytes() == (whole / ply).read_bytes(), ply
    if particles > 1:  # the particles are other scenes
        assert (whole / plys[0]).read_bytes() != (whole / plys[1]).read_bytes()
        assert json.loads((whole / "metrics.json").read_text())["particle_diversity"] > 0


def test_in_process_resume_and_the_critic_leaves_the_prior(tmp_path):
    """ESD killed in process and resumed equals the run uninterrupted; afterwards the denoiser has no adapter left
    configured and gives the prior's own predictions."""
    config = Gen3DConfig(model="tiny-sd-objects", prompt="mushroom",
                         train=Train3DConfig(steps=6, num_gaussians=60, checkpoint_every=2, method=NoiseKind.ESD))
    scene_prior = load_scene_prior(config)
    prior = scene_prior.prior
    x = torch.randn(1, *prior.latent_shape, generator=torch.Generator().manual_seed(0))
    cond = prior.encode_prompt("mushroom")
    before = prior.eps(x, torch.tensor([500]), cond)
    assert_resume_is_bit_for_bit(scene_prior, resolve(config, scene_prior).train, 2, tmp_path / "c.pt", kill_step=3,
                                 checkpoint_step=2)
    assert not getattr(prior.unet, "peft_config", {})
    assert torch.equal(prior.eps(x, torch.tensor([500]), cond), before)


def test_cost_counts_the_critic(tmp_path):
    """VSD at CFG 7.5 with 2 cameras per step: 2 x (2 guided + 1 critic + 1 critic training) = 8 evaluations per step
    and seed; the critic's parameters are the cost's trained parameters."""
    out = tmp_path / "run"
    res = runner.invoke(app, ["gen-3d", *TINY, "--method", "vsd", "--seeds", "0,1", "--cfg", "7.5",
                              "--cameras-per-step", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    cost = json.loads((out / "metrics.json").read_text())["cost"]
    assert cost["prior_evaluations_per_step"] == 8.0 and cost["trained_parameters"] > 0


@pytest.mark.parametrize("args, needle", [
    (["--method", "vsd"], "closed-form score"),  # the embedded references: no network
    (["--model", "tiny-sd-objects", "--method", "fsd", "--particles", "2"], "needs --method vsd or esd"),
])
def test_rivals_refused_in_one_line(tmp_path, args, needle):
    out = tmp_path / "run"
    res = runner.invoke(app, ["gen-3d", "--steps", "2", "--no-progress", *args, "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert needle in res.output and not out.exists()
