"""Nothing of a user's is lost (fsd2d.folders): every writer replaces or extends only its own earlier output, and
refuses anything else at --out with one `error:` line and exit code 2, touching nothing."""
import json
from dataclasses import replace
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from fsd2d.errors import InputError
from fsd2d.folders import BATCH, COMPARE_2D, GEN_3D, TABLE1, TRAIN_PRIOR, Claim, claim, whose
from test_bad_input import COMMANDS_2D, TINY, snapshot

runner = CliRunner()
TINY_GEN = ["--steps", "4", "--resolution", "16", "--num-gaussians", "60", "--checkpoint-every", "2", "--no-progress"]

pytestmark = pytest.mark.usefixtures("one_thread")


def invoke(args) -> tuple[int, list[str]]:
    res = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in res.output, res.output
    return res.exit_code, res.stderr.strip().splitlines()


def refused(root: Path, args, needle: str) -> None:
    """`fsd args`: exit 2, one `error:` line holding needle, nothing under root changed."""
    before = snapshot(root)
    code, lines = invoke(args)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert snapshot(root) == before


def users_folder(root: Path) -> Path:
    """The issue's folder: outputs/run1/notes.txt and outputs/paper.tex."""
    (root / "outputs" / "run1").mkdir(parents=True)
    (root / "outputs" / "run1" / "notes.txt").write_text("my notes\n")
    (root / "outputs" / "paper.tex").write_text("\\documentclass{article}\n")
    return root / "outputs"


@pytest.mark.parametrize("command", [*COMMANDS_2D, "gen-3d"])
def test_a_users_folder_is_refused_and_kept(tmp_path, command):
    outputs = users_folder(tmp_path)
    refused(tmp_path, [command, *TINY[command], "--out", outputs], "files fsd did not write (paper.tex, run1)")
    refused(tmp_path, [command, *TINY[command], "--out", outputs / "run1"], "notes.txt")


@pytest.mark.parametrize("command", ["compare-2d", "gen-3d"])
def test_the_current_folder_and_home_are_refused(tmp_path, monkeypatch, command):
    """`--out .` and `--out ~` (as the shell expands it): refused whether empty or not, no temporary left."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    refused(tmp_path, [command, *TINY[command], "--out", "."], "is the current folder or holds it")
    (work / "draft.txt").write_text("keep me\n")
    refused(tmp_path, [command, *TINY[command], "--out", "."], "is the current folder or holds it")
    refused(tmp_path, [command, *TINY[command], "--out", ".."], "is the current folder or holds it")
    monkeypatch.setenv("HOME", str(work))
    refused(tmp_path, [command, *TINY[command], "--out", Path("~").expanduser()], "is the current folder")
    monkeypatch.chdir(tmp_path)
    refused(tmp_path, [command, *TINY[command], "--out", Path("~").expanduser()], "files fsd did not write (draft.txt)")


@pytest.mark.parametrize("command", COMMANDS_2D)
def test_a_2d_study_replaces_its_own_earlier_output_only(tmp_path, command):
    out = tmp_path / "out"
    code, lines = invoke([command, *TINY[command], "--out", out])
    assert code == 0, lines
    first = snapshot(out)
    code, lines = invoke([command, *TINY[command], "--seeds", "1", "--out", out])  # its own: replaced
    assert code == 0, lines
    assert json.loads((out / "run.json").read_text())["config"]["seeds"] == [1]
    if command == "compare-2d":  # the old seed's images went with the old folder
        assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f"{m}_seed1.png" for m in (
            "ddim", "fsd", "fsd-exact", "sds"))
    assert snapshot(out) != first
    (out / "notes.txt").write_text("added by hand\n")  # now also a file of the user's: refused
    refused(tmp_path, [command, *TINY[command], "--out", out], "also holds notes.txt, which " + command)
    other = next(c for c in COMMANDS_2D if c != command)  # another study's output
    refused(tmp_path, [other, *TINY[other], "--out", out], f"holds a {command} run")


def test_gen_3d_and_compare_2d_refuse_each_others_runs(tmp_path):
    two_d, three_d = tmp_path / "two_d", tmp_path / "three_d"
    assert invoke(["compare-2d", *TINY["compare-2d"], "--out", two_d])[0] == 0
    assert invoke(["gen-3d", *TINY_GEN, "--seeds", "0", "--out", three_d])[0] == 0
    refused(tmp_path, ["gen-3d", *TINY_GEN, "--seeds", "0", "--out", two_d], "holds a compare-2d run")
    refused(tmp_path, ["compare-2d", *TINY["compare-2d"], "--out", three_d], "holds a gen-3d run")


def metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_gen_3d_extends_its_run_with_more_seeds(tmp_path):
    """Seeds 0-1, then 2 into the same folder: one run of seeds 0-2, the same as running them at once."""
    extended, at_once = tmp_path / "extended", tmp_path / "at_once"
    assert invoke(["gen-3d", *TINY_GEN, "--seeds", "0-1", "--out", extended])[0] == 0
    before = (extended / "seed_0" / "gaussians.ply").read_bytes()
    assert invoke(["gen-3d", *TINY_GEN, "--seeds", "2", "--out", extended])[0] == 0
    assert invoke(["gen-3d", *TINY_GEN, "--seeds", "0-2", "--out", at_once])[0] == 0
    assert json.loads((extended / "run.json").read_text())["config"]["seeds"] == [0, 1, 2]
    assert (extended / "seed_0" / "gaussians.ply").read_bytes() == before  # the earlier seeds are kept as they were
    a, b = metrics(extended), metrics(at_once)
    assert a["seeds"] == b["seeds"] == [0, 1, 2] and list(a["per_seed"]) == ["0", "1", "2"]
    assert a["diversity"] == pytest.approx(b["diversity"], abs=1e-4)  # batching seeds changes rounding only
    for s in ("0", "1", "2"):
        assert a["per_seed"][s]["majority"] == b["per_seed"][s]["majority"]
        assert a["per_seed"][s]["majority_psnr"] == pytest.approx(b["per_seed"][s]["majority_psnr"], abs=1e-3)
    from PIL import Image

    assert Image.open(extended / "summary.png").size == Image.open(at_once / "summary.png").size  # three rows


def test_gen_3d_refuses_to_mix_settings_and_names_them(tmp_path):
    out = tmp_path / "run"
    assert invoke(["gen-3d", *TINY_GEN, "--seeds", "0", "--out", out])[0] == 0
    refused(tmp_path, ["gen-3d", *TINY_GEN, "--seeds", "1", "--prompt", "cactus", "--out", out],
            'prompt: "mushroom" there, "cactus" here')
    refused(tmp_path, ["gen-3d", *TINY_GEN, "--seeds", "1", "--beta", "0.5", "--out", out], "beta: 1.0 there, 0.5 here")
    (out / "seed_0" / "metrics.json").unlink()  # as if killed while exporting: unfinished
    refused(tmp_path, ["gen-3d", *TINY_GEN, "--seeds", "1", "--out", out], "--seeds 0 --resume")


def test_a_refused_resume_names_the_settings_that_differ(tmp_path):
    """The checkpoint carries its settings: a resume under others says which (library call, no run.json check)."""
    from fsd3d.config import Gen3DConfig
    from fsd3d.run import load_scene_prior
    from fsd3d.config import Train3DConfig
    from fsd3d.checkpoint import initial_state, load_checkpoint, save_checkpoint
    from fsd3d.settings import resolve

    config = Gen3DConfig(resolution=16, train=Train3DConfig(steps=4, num_gaussians=20))
    prior = load_scene_prior(config)
    train = resolve(config, prior).train
    save_checkpoint(tmp_path / "c.pt", initial_state(train, 0), train, config.identity())
    other = resolve(replace(config, train=Train3DConfig(steps=5, num_gaussians=20)), prior).train
    with pytest.raises(InputError, match="steps: 4 there, 5 here"):
        load_checkpoint(tmp_path / "c.pt", other, torch.device("cpu"), config.identity())


def test_claim_rules(tmp_path):
    out = tmp_path / "x"
    assert claim(out, COMPARE_2D) is Claim.NEW
    out.mkdir()
    assert claim(out, COMPARE_2D) is Claim.NEW  # empty
    (tmp_path / "link").symlink_to(out)
    with pytest.raises(InputError, match="symbolic link"):
        claim(tmp_path / "link", COMPARE_2D)
    (out / "run.json").write_text("{not json")  # a damaged record is nobody's
    assert whose(out) is None
    with pytest.raises(InputError, match="files fsd did not write"):
        claim(out, COMPARE_2D)
    (out / "run.json").write_text('{"command": "compare-2d"}')
    (out / "images").mkdir()
    (out / "images" / "ddim_seed0.png").write_bytes(b"")
    assert claim(out, COMPARE_2D) is Claim.OWN
    (out / "images" / "mine.txt").write_text("")  # inside a folder of the layout
    with pytest.raises(InputError, match="images/mine.txt"):
        claim(out, COMPARE_2D)
    os.unlink(out / "images" / "mine.txt")
    (out / "images" / "elsewhere.png").symlink_to(tmp_path / "link")  # a link is never ours to delete
    with pytest.raises(InputError, match="elsewhere.png"):
        claim(out, COMPARE_2D)
    run = tmp_path / "g"
    (run / "seed_0").mkdir(parents=True)
    (run / "run.json").write_text('{"command": "gen-3d"}')
    (run / "seed_0" / "notes.txt").write_text("")  # gen-3d adds to its run and deletes nothing: a user's file may stay
    assert claim(run, GEN_3D) is Claim.OWN
    model = tmp_path / "model"
    (model / ".train").mkdir(parents=True)  # a train-prior killed before its first checkpoint
    assert whose(model) == "train-prior" and claim(model, TRAIN_PRIOR) is Claim.OWN


def test_table1_replaces_only_its_own_table(tmp_path):
    from fsdbatch.table1 import write_table

    row = {"space": "2d", "method": "fsd", "prompts": 1, "coverage": 0.5, "agreement": None, "holes": None,
           "diversity": 0.1, "nearest_psnr": 30.0, "clip": None, "inception_score": None, "cross_fid": None}
    out = tmp_path / "table"
    write_table(out, [row], None)
    write_table(out, [row | {"method": "sds"}], "a note")  # its own: replaced
    assert "sds" in (out / "table1.md").read_text() and sorted(p.name for p in out.iterdir()) == ["table1.csv",
                                                                                                   "table1.md"]
    outputs = users_folder(tmp_path / "u")
    before = snapshot(tmp_path)
    with pytest.raises(InputError, match="files fsd did not write"):
        write_table(outputs, [row], None)
    assert snapshot(tmp_path) == before
    assert claim(out, TABLE1) is Claim.OWN


def test_a_sweep_folder_takes_only_its_own_command(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("command: compare-2d\nparams:\n  steps: 3\n  resolution: 16\n  seeds: '0'\n  methods: fsd\n")
    outputs = users_folder(tmp_path)
    refused(tmp_path, ["batch", spec, "--out", outputs, "--dry-run"], "files fsd did not write")
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text(json.dumps({"command": "gen-3d", "runs": []}))
    assert claim(sweep, BATCH) is Claim.OWN
    refused(tmp_path, ["batch", spec, "--out", sweep, "--dry-run"], "holds a sweep of gen-3d runs")


def test_report_replaces_only_its_own_page(tmp_path):
    out = tmp_path / "out"
    assert invoke(["compare-2d", *TINY["compare-2d"], "--out", out])[0] == 0
    assert invoke(["report", out])[0] == 0
    assert invoke(["report", out])[0] == 0  # its own page: replaced
    (out / "report.html").write_text("<html>my own write-up</html>\n")
    refused(tmp_path, ["report", out], "was not written by `fsd report`")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "run.json").write_text('{"command": "something else"}')
    refused(tmp_path, ["report", plain], "holds neither an fsd command's run.json nor sweep.json")


def test_train_prior_refuses_a_users_folder(tmp_path):
    outputs = users_folder(tmp_path)
    refused(tmp_path, ["train-prior", "imageset", "--steps", "1", "--vae-steps", "1", "--out", outputs],
            "files fsd did not write")


def test_export_mesh_replaces_only_a_runs_own_mesh(tmp_path):
    """In a gen-3d seed folder mesh.* are the run's own (replaced); in a folder of the user's holding a PLY, an
    existing mesh.glb is theirs: refused, nothing touched."""
    from fsd3d.ply import save_ply
    from fsd3d.references import reference_scene

    run = tmp_path / "run"
    assert invoke(["gen-3d", "--init", save_ply_at(tmp_path, reference_scene("mushroom", "red")), "--steps", "1",
                   "--seeds", "0", "--no-progress", "--out", run])[0] == 0
    args = ["export-mesh", "--grid", "24", "--max-faces", "500"]
    assert invoke([*args, run / "seed_0"])[0] == 0
    assert invoke([*args, run / "seed_0"])[0] == 0  # the run's own mesh: replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    save_ply(mine / "gaussians.ply", reference_scene("mushroom", "red"))
    assert invoke([*args, mine])[0] == 0  # new files beside a user's PLY: fine
    (mine / "mesh.json").unlink()
    refused(tmp_path, [*args, mine], "already holds mesh.glb, mesh.obj, which this would replace")


def save_ply_at(folder: Path, scene) -> Path:
    from fsd3d.ply import save_ply

    save_ply(folder / "init.ply", scene)
    return folder / "init.ply"
