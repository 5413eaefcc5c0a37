"""The `fsd` command line: outputs of compare-2d, and one clear line with exit code 2 for bad input."""
import json
import shutil
import subprocess
import sys

import pytest
from PIL import Image
from typer.testing import CliRunner

from cli import app
from fsd2d.flags import parse_seeds
from fsd2d.errors import InputError

runner = CliRunner()
SMALL = ["--steps", "30", "--seeds", "0-2", "--no-progress"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_parse_seeds():
    assert parse_seeds("0-3") == (0, 1, 2, 3)
    assert parse_seeds("0,2,5") == (0, 2, 5)
    assert parse_seeds("4-5,1,4") == (4, 5, 1)
    for bad in ("", "a", "3-1", "-1", "1,,2"):
        with pytest.raises(InputError):
            parse_seeds(bad)


def test_pyproject_names_modules_that_exist():
    """The comments beside the dependencies name the module that uses each one (e.g. viser: fsdbatch.viewer)."""
    import importlib.util
    import re
    from pathlib import Path

    text = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    named = set(re.findall(r"\b(?:fsd2d|fsd3d|fsdbatch|fsdtrain)(?:\.\w+)+", text))
    assert named and all(importlib.util.find_spec(m) is not None for m in named), named


def test_compare_2d_writes_every_output(tmp_path):
    out = tmp_path / "run"
    res = invoke("compare-2d", *SMALL, "--methods", "fsd,sds,sds-annealed", "--prompt", "coffee", "--out", out)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "images", "metrics.json", "run.json"]
    pngs = sorted(p.name for p in (out / "images").iterdir())
    assert pngs == sorted(f"{m}_seed{s}.png" for m in ("ddim", "fsd", "sds", "sds-annealed") for s in range(3))
    assert Image.open(out / "images" / "fsd_seed0.png").size == (32, 32)
    grid = Image.open(out / "grid.png")
    assert grid.size[1] > grid.size[0] > 300  # 3 columns x 4 rows of images, readable
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["methods"]) == ["ddim", "fsd", "sds", "sds-annealed"]
    ddim = m["methods"]["ddim"]
    assert ddim["mean_ssim_to_ddim"] == 1.0 and ddim["per_seed"][0]["psnr_to_ddim"] == 100.0  # PSNR_CAP_DB
    assert ddim["modes_reached"] >= 2 and ddim["set_size"] == 64
    for entry in m["methods"].values():
        assert len(entry["per_seed"]) == 3 and 0 <= entry["diversity"] <= 2
        assert {"psnr_to_ddim", "ssim_to_ddim", "nearest_set_image", "nearest_psnr"} <= set(entry["per_seed"][0])
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["seeds"] == [0, 1, 2] and run["config"]["methods"] == ["fsd", "sds", "sds-annealed"]
    assert run["versions"]["torch"] and "git_commit" in run and run["prior"]["class"] == "ImageSetPrior"
    assert "modes reached" in res.stdout


def test_rerun_replaces_only_on_success(tmp_path):
    out = tmp_path / "run"
    assert invoke("compare-2d", *SMALL, "--methods", "fsd", "--out", out).exit_code == 0
    before = (out / "metrics.json").read_text()
    res = invoke("compare-2d", *SMALL, "--prompt", "dragon", "--out", out)
    assert res.exit_code == 2
    assert (out / "metrics.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temp folders left behind


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--prompt", "a dragon"], "unknown prompt 'a dragon'"),
        (["--methods", "ddim,prolific"], "allowed: ddim, fsd, fsd-exact, sds, sds-annealed"),
        (["--model", "no such model"], "unknown model"),
        (["--model", "./missing/folder"], "does not exist"),
        (["--steps", "0"], "steps must be >= 1"),
        (["--beta", "1.5"], "beta must be in [0, 1]"),
        (["--beta", "-0.1"], "beta must be in [0, 1]"),
        (["--cfg", "-1"], "CFG scale must be >= 0"),
        (["--seeds", "3-1"], "bad --seeds '3-1': the range 3-1 is reversed; write it '1-3'"),
        (["--seeds", "0,9-2"], "the range 9-2 is reversed"),
        (["--anneal", "cosine"], "allowed: linear, sqrt, piecewise"),
        (["--t-min", "990"], "t_min <= t_max"),
        (["--resolution", "4"], "8..128"),
        (["--dtype", "float8"], "unknown dtype"),
        (["--device", "cuda:7"] if not __import__("torch").cuda.is_available() else ["--device", "tpu"], "device"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, args, needle):
    out = tmp_path / "out"
    res = invoke("compare-2d", *SMALL, *args, "--out", out)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.stderr
    assert "Traceback" not in res.output
    assert list(tmp_path.iterdir()) == []


def test_stable_diffusion_errors(tiny_sd_path, tmp_path):
    res = invoke("compare-2d", *SMALL, "--model", tiny_sd_path, "--resolution", "10", "--out", tmp_path / "o")
    assert res.exit_code == 2 and "multiple of 4" in res.stderr
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd_path, broken)
    for f in (broken / "unet").glob("*.safetensors"):
        f.unlink()
    res = invoke("compare-2d", *SMALL, "--model", broken, "--out", tmp_path / "o")
    assert res.exit_code == 2 and "safetensors" in res.stderr and "unet" in res.stderr
    assert not (tmp_path / "o").exists()


def test_compare_2d_on_tiny_stable_diffusion(tiny_sd_path, tmp_path):
    out = tmp_path / "sd"
    res = invoke("compare-2d", *SMALL, "--model", tiny_sd_path, "--resolution", "16", "--prompt", "a cat", "--out", out)
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert "modes_reached" not in m["methods"]["fsd"]  # no ground truth for a real network
    assert m["methods"]["fsd-exact"]["mean_psnr_to_ddim"] > 40  # Proposition 1, through decode
    assert Image.open(out / "images" / "fsd_seed0.png").size == (16, 16)


def test_console_script_and_prompts():
    res = subprocess.run([sys.executable, "-m", "cli", "prompts"], capture_output=True, text=True)
    assert res.returncode == 0 and "cat" in res.stdout and "brick" in res.stdout
    res = subprocess.run([sys.executable, "-m", "cli", "compare-2d", "--steps", "0"], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip() == "error: steps must be >= 1, got 0"
    for args in (["compare-2d", "--steps", "abc"], ["compare-2d", "--nope"], ["nope"]):  # click's own errors
        res = subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args, res.stderr)


def test_gather_help_says_a_damaged_run_is_a_warning_with_exit_code_0():
    res = CliRunner().invoke(app, ["gather", "--help"], terminal_width=200)
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "skipped with one `warning:` line" in text and "exit code stays 0" in text and "error:" in text


def test_ctrl_c_in_gen_3d_says_where_the_checkpoints_are_and_how_to_continue(tmp_path, monkeypatch):
    """A KeyboardInterrupt mid-run: one line naming the checkpoints and the command with --resume; exit 130."""
    import sys

    import fsd3d.gen3d

    out = tmp_path / "run"

    def interrupted(config, out, resume=False, progress=False):
        for s in config.seeds:
            (out / f"seed_{s}").mkdir(parents=True, exist_ok=True)
            (out / f"seed_{s}" / "checkpoint.pt").write_bytes(b"")
        raise KeyboardInterrupt

    monkeypatch.setattr(fsd3d.gen3d, "gen_3d", interrupted)
    args = ["gen-3d", "--steps", "5", "--seeds", "0-1", "--out", str(out), "--no-progress"]
    monkeypatch.setattr(sys, "argv", ["fsd", *args])
    res = runner.invoke(app, args)
    assert res.exit_code == 130, res.output
    line = res.stderr.strip()
    assert line.startswith("interrupted: 2 checkpoint(s), written every 50 steps: ") and "\n" not in line
    assert f"{out}/seed_0/checkpoint.pt" in line and f"{out}/seed_1/checkpoint.pt" in line
    assert line.endswith(f"continue with: fsd gen-3d --steps 5 --seeds 0-1 --out {out} --no-progress --resume")


def test_ctrl_c_before_any_checkpoint_says_so(tmp_path, monkeypatch):
    import fsdtrain.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fsdtrain.train, "train_prior", interrupted)
    res = runner.invoke(app, ["train-prior", "imageset", "--out", str(tmp_path / "m"), "--no-progress"])
    assert res.exit_code == 130
    assert res.stderr.strip() == "interrupted: no checkpoint yet (they are written every 250 steps)"
