"""`fsd batch` / `fsd gather`: grid expansion, folder names, resumable in-process runs, shards, gathering."""
from __future__ import annotations

import csv
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from fsd2d.errors import InputError
from fsdbatch import commands as batch_commands
from fsdbatch.gather import gather
from fsdbatch.runner import Shard, parse_shard, resolve_shard, run_sweep
from fsdbatch.sweep import SLUG_MAX, Run, load_sweep
from numerics import TEST_THREADS

SHARD_ENV = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX",
             "SLURM_ARRAY_TASK_STEP", "RANK", "WORLD_SIZE")

TINY_2D = """\
command: compare-2d
params:
  steps: 5
  seeds: "0-1"
  methods: fsd
  prompt: [cat, coffee]
  beta: [0.5, 1]
"""
TINY_3D = """\
command: gen-3d
params:
  steps: 3
  resolution: 16
  num_gaussians: 100
  seeds: "0"
  checkpoint-every: 1
  method: [fsd, sds]
"""


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Tiny tensors run much faster single-threaded; no shard variables leak in from the environment."""
    threads = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    for name in SHARD_ENV:
        monkeypatch.delenv(name, raising=False)
    yield
    torch.set_num_threads(threads)


def sweep_file(folder: Path, text: str, name: str = "sweep") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def load(folder: Path, text: str, out: Path | None = None):
    return load_sweep(sweep_file(folder, text), out or folder / "out")


@pytest.fixture
def calls(monkeypatch):
    """The output folder of every run the runner starts (each command's library call, fsdbatch.commands)."""
    return spy_runs(monkeypatch, lambda out: None)


def spy_runs(monkeypatch, before) -> list[Path]:
    """Wrap every command's run: `before(out)` is called first, then the real run; returns the outs seen."""
    seen: list[Path] = []
    for name, command in list(batch_commands.COMMANDS.items()):
        def spy(config, out, progress, real=command.run):
            seen.append(Path(out))
            before(Path(out))
            return real(config, out, progress)

        monkeypatch.setitem(batch_commands.COMMANDS, name, replace(command, run=spy))
    return seen


def out_of(args: list[str]) -> Path:
    return Path(args[args.index("--out") + 1])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The 4-run compare-2d sweep (prompt [cat, coffee] x beta [0.5, 1]), run once; tests work on copies."""
    threads = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    folder = tmp_path_factory.mktemp("finished")
    sweep = load(folder, TINY_2D)
    result = run_sweep(sweep)
    torch.set_num_threads(threads)
    assert result.failed == [] and len(result.finished) == 4
    return sweep


def copy_of(sweep, tmp_path: Path):
    """The finished sweep's folder copied to tmp_path/out (mtimes kept), and the sweep pointing there."""
    shutil.copytree(sweep.out, tmp_path / "out")
    return load(tmp_path, TINY_2D)


def test_sweep_expands_the_grid_in_order(finished, tmp_path):
    runs = finished.runs
    assert [r.swept_values() for r in runs] == [
        {"prompt": "cat", "beta": 0.5}, {"prompt": "cat", "beta": 1},
        {"prompt": "coffee", "beta": 0.5}, {"prompt": "coffee", "beta": 1}]
    assert runs[0].folder.startswith("prompt=cat_beta=0.5-") and len(runs[0].folder.rsplit("-", 1)[1]) == 8
    assert runs[0].args == ("--steps", "5", "--seeds", "0-1", "--methods", "fsd", "--prompt", "cat", "--beta", "0.5")
    for r in runs:
        done = json.loads((finished.out / r.folder / "done.json").read_text())
        assert done["params"] == r.params and done["output"] == "result" and done["seconds"] > 0
        assert done["args"][0] == "compare-2d" and out_of(done["args"]) == finished.out / r.folder / "result"
        assert (finished.out / r.folder / "result" / "metrics.json").exists()
    by_hand = tmp_path / "by-hand"  # a run of the batch is exactly the command run by hand
    res = CliRunner().invoke(app, ["compare-2d", *runs[0].args, "--out", str(by_hand), "--no-progress"])
    assert res.exit_code == 0, res.output
    batch_metrics = json.loads((finished.out / runs[0].folder / "result" / "metrics.json").read_text())
    assert json.loads((by_hand / "metrics.json").read_text())["methods"] == batch_metrics["methods"]
    snapshot = json.loads((finished.out / "sweep.json").read_text())
    assert snapshot["swept"] == ["prompt", "beta"] and [r["folder"] for r in snapshot["runs"]] == [
        r.folder for r in runs]


def test_second_run_does_nothing(finished, tmp_path, calls, capsys):
    sweep = copy_of(finished, tmp_path)
    stamps = {r.folder: (sweep.out / r.folder / "done.json").stat().st_mtime_ns for r in sweep.runs}
    result = run_sweep(sweep)
    assert calls == [] and result.skipped == 4 and result.finished == []
    assert "skipping 4 done" in capsys.readouterr().out
    assert stamps == {r.folder: (sweep.out / r.folder / "done.json").stat().st_mtime_ns for r in sweep.runs}


def test_deleting_done_json_or_folder_reruns_only_that_run(finished, tmp_path, calls):
    sweep = copy_of(finished, tmp_path)
    a, b = sweep.runs[1], sweep.runs[3]
    (sweep.out / a.folder / "done.json").unlink()
    shutil.rmtree(sweep.out / b.folder)
    untouched = {r.folder: (sweep.out / r.folder / "done.json").stat().st_mtime_ns for r in (sweep.runs[0], sweep.runs[2])}
    result = run_sweep(sweep)
    assert [c.parent.name for c in calls] == [a.folder, b.folder]
    assert result.finished == [a.folder, b.folder] and result.skipped == 2
    assert all((sweep.out / r.folder / "done.json").exists() for r in sweep.runs)
    assert untouched == {f: (sweep.out / f / "done.json").stat().st_mtime_ns for f in untouched}


def test_interrupted_sweep_loses_and_repeats_nothing(tmp_path, monkeypatch):
    sweep = load(tmp_path, TINY_2D.replace("beta: [0.5, 1]", "beta: [0.5, 0.75, 1]").replace(
        "prompt: [cat, coffee]", "prompt: cat"))
    kill = [True]

    def killed_on_second(out):
        if len(started) == 2 and kill[0]:
            raise KeyboardInterrupt  # Ctrl-C (or a job time limit) while the second run is working

    started = spy_runs(monkeypatch, killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep)
    first, second, third = (sweep.out / r.folder for r in sweep.runs)
    assert (first / "done.json").exists()
    assert not (second / "done.json").exists() and not (second / "failed.json").exists()
    assert not third.exists()

    started.clear()
    kill[0] = False
    result = run_sweep(sweep)
    assert [s.parent.name for s in started] == [second.name, third.name] and result.skipped == 1 and result.failed == []
    assert all((sweep.out / r.folder / "done.json").exists() for r in sweep.runs)


def test_gen3d_interrupted_after_a_checkpoint_resumes_from_it(tmp_path, monkeypatch, calls):
    import fsd3d.train

    sweep = load(tmp_path, TINY_3D)
    real_save = fsd3d.train.save_checkpoint
    saved: list[tuple[str, int]] = []

    def save(path, state, *args, **kwargs):
        real_save(path, state, *args, **kwargs)
        saved.append((Path(path).parts[-4], state.step))  # (run folder, step)
        if len(saved) == 1 and kill:
            raise KeyboardInterrupt  # killed right after the first checkpoint

    monkeypatch.setattr(fsd3d.train, "save_checkpoint", save)
    kill = True
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep)
    fsd_run, sds_run = (sweep.out / r.folder for r in sweep.runs)
    assert (fsd_run / "result" / "seed_0" / "checkpoint.pt").exists() and not (fsd_run / "done.json").exists()

    kill, saved[:] = False, []
    result = run_sweep(sweep)
    assert result.failed == [] and len(result.finished) == 2
    # the interrupted run went on from its checkpoint (step 1), the other started at step 0
    assert saved == [(fsd_run.name, 2), (fsd_run.name, 3), (sds_run.name, 1), (sds_run.name, 2), (sds_run.name, 3)]
    ckpt = torch.load(fsd_run / "result" / "seed_0" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 3
    g = gather(sweep.out, plots=False)
    assert [r["method"] for r in g.rows] == ["fsd", "sds"]
    assert all(isinstance(r["references_reached"], int) for r in g.rows)
    assert {"diversity", "references_reached"} <= set(g.columns)


def test_shards_cover_the_grid_exactly_once(tmp_path):
    sweep = load(tmp_path, TINY_2D.replace("beta: [0.5, 1]", "beta: [0, 0.25, 0.5, 0.75, 1]").replace(
        "[cat, coffee]", "[cat, coffee, dragon]"))
    assert len(sweep.runs) == 15
    owned = [[r.index for r in sweep.runs if parse_shard(f"{i}/3").owns(r)] for i in range(3)]
    assert sorted(i for part in owned for i in part) == list(range(15))
    assert owned[1] == [1, 4, 7, 10, 13]
    res = CliRunner().invoke(app, ["batch", str(sweep.source), "--out", str(sweep.out), "--shard", "1/3", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "15 runs in the grid; shard 1/3 owns 5" in res.stdout and not sweep.out.exists()


@pytest.mark.parametrize("env,expected", [
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0"}, (2, 4, "SLURM array")),
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3"}, (2, 3, "SLURM array")),
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "3", "SLURM_ARRAY_TASK_MAX": "6"}, (2, 4, "SLURM array")),
    ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}, (0, 4, "SLURM array")),
    ({"RANK": "1", "WORLD_SIZE": "2"}, (1, 2, "torchrun")),
    ({}, (0, 1, "default")),
])
def test_shard_from_environment(monkeypatch, env, expected):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = resolve_shard(None)
    assert (s.index, s.count, s.source) == expected
    explicit = resolve_shard("0/5")
    assert (explicit.index, explicit.count, explicit.source) == (0, 5, "--shard")  # --shard wins


def test_bad_shards(monkeypatch):
    for bad in ("3/3", "1", "a/b", "-1/2", "0/0", "1/2/3", ""):
        with pytest.raises(InputError, match="bad --shard"):
            parse_shard(bad)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "x")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    with pytest.raises(InputError, match="SLURM_ARRAY_TASK_ID"):
        resolve_shard(None)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    res = CliRunner().invoke(app, ["batch", "nothing.yaml", "--shard", "2/2"])
    assert res.exit_code == 2 and res.stderr.strip().splitlines() == ["error: sweep file nothing.yaml does not exist"]
    assert Shard(1, 2).owns(Run(3, "x", {}, (), (), "f"))


def test_long_prompts_give_safe_distinct_folders(tmp_path):
    long = "a typewriter made out of vegetables, on a wooden/oak desk; 35mm photo " * 3
    text = f"""\
command: compare-2d
params:
  steps: 5
  prompt: ["{long}", "{long} at night", "über café ☕", "cat"]
  negative-prompt: ["{long}", ""]
  t_min: [20, 30]
  seeds: [["0", "1"], "0-1", "0"]
"""
    sweep = load(tmp_path, text)
    folders = [r.folder for r in sweep.runs]
    assert len(folders) == 4 * 2 * 2 * 3 == len(set(folders))  # same slug, different configuration: new hash
    for f in folders:
        slug, digest = f.rsplit("-", 1)
        assert len(slug) <= SLUG_MAX and re.fullmatch(r"[0-9a-f]{8}", digest)
        assert re.fullmatch(r"[A-Za-z0-9._=-]+", f) and not f.startswith(".")
    assert folders[0].startswith("prompt=a-typewriter-made-out-of-vege")
    assert sweep.runs[0].params["seeds"] == "0,1" and "0,1" in sweep.runs[0].args
    # the hash covers fixed parameters too; the same file always gives the same folders
    other = load(tmp_path, text.replace("steps: 5", "steps: 6"))
    assert [r.folder.rsplit("-", 1)[0] for r in other.runs] == [f.rsplit("-", 1)[0] for f in folders]
    assert not {r.folder for r in other.runs} & set(folders)
    assert [r.folder for r in load(tmp_path, text).runs] == folders


def test_gather_one_row_per_run_and_method(finished, tmp_path):
    sweep = copy_of(finished, tmp_path)
    g = gather(sweep.out)
    assert len(g.rows) == 8 and g.missing == ()  # 4 runs x (ddim, fsd)
    with open(sweep.out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["prompt"], r["beta"], r["method"]) for r in rows] == [
        (p, b, m) for p in ("cat", "coffee") for b in ("0.5", "1") for m in ("ddim", "fsd")]
    for r in rows:
        assert {"mean_psnr_to_ddim", "mean_ssim_to_ddim", "diversity", "modes_reached"} <= set(r)
        assert 0 <= float(r["diversity"]) <= 2 and r["run"].startswith(f"prompt={r['prompt']}_")
    assert rows[0]["mean_ssim_to_ddim"] == "1.0" and float(rows[0]["mean_psnr_to_ddim"]) == 100.0  # PSNR_CAP_DB
    metrics = json.loads((sweep.out / sweep.runs[1].folder / "result" / "metrics.json").read_text())
    assert float(rows[3]["mean_psnr_to_ddim"]) == pytest.approx(metrics["methods"]["fsd"]["mean_psnr_to_ddim"])
    names = {p.name for p in g.plots}
    assert {"summary_diversity.png", "summary_mean_psnr_to_ddim.png"} <= names
    assert all(p.exists() and p.stat().st_size > 1000 for p in g.plots)

    # a partly finished sweep: only the runs with done.json
    (sweep.out / sweep.runs[2].folder / "done.json").unlink()
    shutil.rmtree(sweep.out / sweep.runs[3].folder)
    res = CliRunner().invoke(app, ["gather", str(sweep.out)])
    assert res.exit_code == 0, res.output
    assert "gathered 2 of 4 runs (4 rows)" in res.stdout and "2 run(s) not finished" in res.stdout
    with open(sweep.out / "results.csv") as f:
        assert [r["prompt"] for r in csv.DictReader(f)] == ["cat"] * 4


def test_layout_reads_what_the_runner_wrote(finished, tmp_path):
    """fsdbatch.layout, the one reader of a sweep folder: the runs of sweep.json in grid order, the finished ones with
    their done.json and outputs; every path it names is one the batch layout (fsd2d.folders.BATCH) lets `claim` keep."""
    from pathlib import PurePosixPath

    from fsd2d.folders import BATCH
    from fsdbatch.layout import RESULTS, SweepFolder, summary_plot_file

    sweep = copy_of(finished, tmp_path)
    folder = SweepFolder.open(sweep.out)
    assert folder.command == "compare-2d"
    assert [(r.index, r.folder, r.params) for r in folder.runs] == [(r.index, r.folder, r.params) for r in sweep.runs]
    (folder.runs[1].path / "done.json").unlink()
    done = list(folder.finished())
    assert [r.folder for r, _ in done] == [sweep.runs[i].folder for i in (0, 2, 3)]
    assert folder.runs[1].done() is None and folder.runs[1].outputs() == sweep.out / sweep.runs[1].folder / "result"
    kept = lambda p: BATCH.holds(PurePosixPath(p.relative_to(sweep.out).as_posix()))  # noqa: E731
    for run, record in done:
        assert record.outputs == run.outputs() == sweep.out / run.folder / "result"
        assert record.record["params"] == run.params and record.metrics.is_file() and record.run_record.is_file()
        assert kept(record.metrics) and kept(record.run_record) and kept(run.path / "done.json")
    assert kept(sweep.out / RESULTS) and kept(summary_plot_file(sweep.out, "psnr (dB)"))
    (folder.runs[0].path / "done.json").write_text('{"output": "../elsewhere"}')
    with pytest.raises(InputError, match="'output' should name a folder inside the run"):
        folder.runs[0].done()


def test_failed_runs_are_recorded_and_the_sweep_goes_on(tmp_path):
    path = sweep_file(tmp_path, TINY_2D.replace("beta: [0.5, 1]", "beta: [1.5, 1]").replace(
        "prompt: [cat, coffee]", "prompt: cat"))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["batch", str(path), "--out", str(out)])
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines()[-1] == (
        "error: shard 0/1: 1 run(s) finished, 0 skipped (done before), 1 failed, of 2 owned (2 in the grid)")
    bad, good = next(out.glob("beta=1.5-*")), next(out.glob("beta=1-*"))
    failed = json.loads((bad / "failed.json").read_text())
    assert failed["error"].startswith("beta must be in [0, 1]") and "\n" not in failed["error"]
    assert not (bad / "done.json").exists() and (good / "done.json").exists()
    assert (out / "results.csv").exists()


@pytest.mark.parametrize("text,message", [
    ("command: compare-2d\nparams: {prompt: cat, bogus: [1, 2]}\n",
     "unknown parameter 'bogus' for compare-2d; allowed: prompt, negative-prompt, seeds, steps, cfg"),
    ("command: render\nparams: {prompt: cat}\n",
     "unknown command 'render'; allowed: compare-2d, shuffle-noise, consistency, beta-sweep, gen-3d"),
    ("params: {prompt: cat}\n", "no 'command:'; allowed: compare-2d"),
    ("command: compare-2d\nparams: {prompt: [cat, coffee], beta: []}\n", "params.beta is an empty list"),
    ("command: compare-2d\nparams: {prompt: [cat\n", "not valid YAML"),
    ("- compare-2d\n- cat\n", "expected a mapping with 'command:' and 'params:', got a list"),
    ("command: compare-2d\nparams: [prompt, cat]\n", "params must be a mapping"),
    ("command: gen-3d\nparams: {out: here}\n", "'out' cannot be set in a sweep"),
    ("command: compare-2d\nparams: {progress: [true, false]}\n", "'progress' cannot be set in a sweep"),
    ("command: compare-2d\nparams: {t-min: 20, t_min: 30}\n", "given twice"),
    ("command: compare-2d\nparams: {beta: [1, 1.0, 1]}\n", "lists '1' twice"),
    ("command: compare-2d\nparams: {prompt: {a: 1}}\n", "params.prompt must be a value or a list"),
    ("command: compare-2d\nparms: {prompt: cat}\n", "unknown key 'parms'"),
])
def test_malformed_sweep_files_fail_with_one_line(tmp_path, text, message):
    path = sweep_file(tmp_path, text, "bad")
    res = CliRunner().invoke(app, ["batch", str(path), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and message in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_gather_needs_a_sweep_folder(tmp_path):
    res = CliRunner().invoke(app, ["gather", str(tmp_path)])
    assert res.exit_code == 2 and res.stderr.strip() == f"error: {tmp_path} has no sweep.json: not a folder written by `fsd batch`"


def test_set_overrides_params_before_validation(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    sweep = tmp_path / "s.yaml"
    sweep.write_text("command: compare-2d\nparams:\n  prompt: [cat, coffee]\n  steps: 300\n")
    res = CliRunner().invoke(app, ["batch", str(sweep), "--out", str(tmp_path / "o"), "--dry-run",
                                   "--set", "steps=5", "--set", "t-min=30"])
    assert res.exit_code == 0, res.output
    assert len([r for r in res.stdout.splitlines() if "todo" in r]) == 2
    from fsdbatch.sweep import load_sweep

    spec = load_sweep(sweep, tmp_path / "o", {"steps": 5, "t-min": 30})
    assert [(r.params["steps"], r.params["t_min"]) for r in spec.runs] == [(5, 30), (5, 30)]
    assert "300" not in " ".join(spec.runs[0].args)
    res = CliRunner().invoke(app, ["batch", str(sweep), "--dry-run", "--set", "nonsense=1"])
    assert res.exit_code == 2 and "unknown parameter 'nonsense'" in res.stderr
    res = CliRunner().invoke(app, ["batch", str(sweep), "--dry-run", "--set", "steps"])
    assert res.exit_code == 2 and "KEY=VALUE" in res.stderr


def test_torchrun_inside_a_slurm_array_task_splits_the_task():
    from fsdbatch.runner import shard_from_env

    base = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3", "WORLD_SIZE": "4"}
    shards = {(s.index, s.count) for s in (shard_from_env({**base, "RANK": str(r)}) for r in range(4))}
    assert shards == {(8, 12), (9, 12), (10, 12), (11, 12)}  # the ranks of task 2 share its runs, no overlap
    assert (shard_from_env({**base, "RANK": "0", "WORLD_SIZE": "1"}).index,) == (2,)
