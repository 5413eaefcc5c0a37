"""Bad input to `fsd batch`, `fsd gather` and `fsd table1`: one `error:` line, exit code 2, no traceback,
nothing written (the file tree is compared byte for byte). We run as root, so "unwritable" is a path under
a regular file, a path on /proc, or a folder made immutable (chattr +i)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from fsd2d.errors import InputError
from numerics import TEST_THREADS

SMALL = "command: compare-2d\nparams:\n  steps: 2\n  seeds: '0'\n  methods: fsd\n  prompt: [cat, coffee]\n"
# billion laughs: 9 levels of 9 aliases; the last list holds 9**9 strings once expanded
ANCHORS = ", ".join(["&a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + [
    f"&{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi")])


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    yield
    torch.set_num_threads(threads)


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for folders)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def invoke(args: list[str], root: Path, needle: str, code: int = 2):
    """Run `fsd args`; expect exit `code`, one stderr line holding `needle`, no traceback, root unchanged."""
    before = tree(root)
    res = CliRunner().invoke(app, [str(a) for a in args])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == code, (res.output, res.exception)
    assert len(lines) == 1 and needle in lines[0], lines
    assert lines[0].startswith("error: " if code == 2 else "warning: "), lines
    assert "Traceback" not in res.output and not isinstance(res.exception, (KeyError, TypeError, OSError))
    if code == 2:
        assert tree(root) == before
    return res


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-run compare-2d sweep (no results.csv yet); tests work on copies."""
    root = tmp_path_factory.mktemp("finished")
    (root / "s.yaml").write_text(SMALL)
    threads = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    res = CliRunner().invoke(app, ["batch", str(root / "s.yaml"), "--out", str(root / "out"), "--no-gather"])
    torch.set_num_threads(threads)
    assert res.exit_code == 0, res.output
    return root / "out"


@pytest.fixture
def sweep(finished, tmp_path) -> Path:
    shutil.copytree(finished, tmp_path / "out")
    return tmp_path / "out"


def runs(out: Path) -> list[Path]:
    return [out / r["folder"] for r in json.loads((out / "sweep.json").read_text())["runs"]]


# 1. sweep files ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    f"command: compare-2d\nparams:\n  prompt: [[{ANCHORS}]]\n",  # expanded into the message before
    "command: compare-2d\nparams:\n  steps: &s 5\n  t-min: *s\n",  # any alias
    "base: &b {steps: 5}\ncommand: compare-2d\nparams:\n  <<: *b\n",  # merge keys are aliases too
])
def test_yaml_aliases_are_refused_at_once(tmp_path, text):
    (tmp_path / "bomb.yaml").write_text(text)
    start = time.perf_counter()
    invoke(["batch", tmp_path / "bomb.yaml", "--out", tmp_path / "out", "--dry-run"], tmp_path,
           "YAML aliases are not allowed in a sweep file")
    assert time.perf_counter() - start < 1.0


def test_set_values_are_never_expanded_into_messages(tmp_path):
    """`--set` is parsed by the CLI (aliases allowed): the message shows a bounded repr of the value."""
    (tmp_path / "s.yaml").write_text(SMALL)
    start = time.perf_counter()
    res = invoke(["batch", tmp_path / "s.yaml", "--out", tmp_path / "out", "--dry-run", "--set",
                  f"prompt=[[{ANCHORS}]]"], tmp_path, "a list inside the list must hold plain values")
    assert time.perf_counter() - start < 1.0 and len(res.stderr) < 400


def test_grid_size_is_checked_before_the_grid_is_built(tmp_path):
    params = "".join(f"  {k}: [{', '.join(str(20 + i) for i in range(10))}]\n"
                     for k in ("steps", "t-min", "t-max", "lr", "cfg", "resolution"))
    (tmp_path / "huge.yaml").write_text(f"command: compare-2d\nparams:\n{params}  prompt: [{', '.join('abcdefghij')}]\n"
                                        f"  seeds: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']\n"
                                        f"  beta: [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]\n"
                                        f"  negative-prompt: [a, b, c, d, e, f, g, h, i, j]\n")
    start = time.perf_counter()
    invoke(["batch", tmp_path / "huge.yaml", "--out", tmp_path / "out", "--dry-run"], tmp_path,
           "the grid has 10,000,000,000 runs (10 x 10 x 10 x 10 x 10 x 10 x 10 x 10 x 10 x 10), more than the "
           "limit of 10,000 (--max-runs)")
    assert time.perf_counter() - start < 1.0
    from fsdbatch.sweep import load_sweep

    (tmp_path / "s.yaml").write_text(SMALL)
    with pytest.raises(InputError, match="the grid has 2 runs"):
        load_sweep(tmp_path / "s.yaml", tmp_path / "out", max_runs=1)
    assert len(load_sweep(tmp_path / "s.yaml", tmp_path / "out", max_runs=2).runs) == 2


@pytest.mark.parametrize("change,needle", [
    ({"steps": "0"}, "every run would fail; run 0 (prompt='cat'): steps must be >= 1, got 0"),
    ({"beta": "2"}, "beta must be in [0, 1]"),
    ({"methods": "fsd,bogus"}, "unknown --methods value 'bogus'"),
    ({"steps": "abc"}, "option.steps: expected int, got 'abc'"),
    ({"seeds": "1.5"}, "bad --seeds 1.5"),
    ({"methods": "5"}, "unknown --methods value '5'"),
    ({"prompt": "[cat, coffee]", "t-min": "[990, 995]"}, "run 0 (prompt='cat', t_min=990)"),
    ({"command": "gen-3d", "methods": None, "method": "[bogus, nope]"}, "unknown --method value 'bogus'"),
])
def test_values_that_every_run_rejects_fail_before_any_run(tmp_path, monkeypatch, change, needle):
    from fsdbatch import runner

    doc = {"command": "compare-2d", "params": {"steps": "2", "seeds": "'0'", "methods": "fsd",
                                               "prompt": "[cat, coffee]"}}
    for key, value in change.items():
        if key == "command":
            doc["command"] = value
        elif value is None:
            doc["params"].pop(key)
        else:
            doc["params"][key] = value
    text = f"command: {doc['command']}\nparams:\n" + "".join(f"  {k}: {v}\n" for k, v in doc["params"].items())
    (tmp_path / "bad.yaml").write_text(text)
    ran = []
    monkeypatch.setattr(runner, "run_one", lambda *a, **k: ran.append(a))
    invoke(["batch", tmp_path / "bad.yaml", "--out", tmp_path / "out"], tmp_path, needle)
    assert ran == []


# 2. damaged or read-only sweep folders ----------------------------------------------------------------

@pytest.mark.parametrize("text,needle", [
    ("[1, 2]", "sweep.json should hold a JSON object, got a list"),
    ("{}", "sweep.json: no 'runs'"),
    ('{"command": "compare-2d", "swept": [], "runs": [{"fol', "sweep.json is not valid JSON"),
    ('{"command": "compare-2d", "swept": [], "runs": [{"index": 0, "params": {}}]}', "runs[0] has no str 'folder'"),
    ('{"command": "compare-2d", "swept": [], "runs": [{"folder": "../..", "index": 0, "params": {}}]}',
     "is not a folder name"),
    ('{"command": "compare-2d", "swept": [], "runs": 3}', "'runs' should be a list, got a int"),
])
@pytest.mark.parametrize("command", ["gather", "table1"])
def test_damaged_sweep_json(sweep, tmp_path, text, needle, command):
    (sweep / "sweep.json").write_text(text)
    args = [command, sweep] + (["--out", tmp_path / "table"] if command == "table1" else [])
    invoke(args, tmp_path, needle)


@pytest.mark.parametrize("name,text,needle", [
    ("done.json", '{"command": "compare-', "done.json is not valid JSON (Unterminated string"),
    ("metrics.json", '{"methods": {"fsd": {"per_seed": [', "metrics.json is not valid JSON"),
    ("metrics.json", "[]", "metrics.json should hold a JSON object, got a list"),
    ("metrics.json", '{"methods": {"fsd": 3}}', "every entry of 'methods' should be an object"),
])
def test_gather_skips_a_damaged_run_with_one_warning(sweep, tmp_path, name, text, needle):
    first, second = runs(sweep)
    (first / ("result/" if name == "metrics.json" else "") / name).write_text(text)
    res = invoke(["gather", sweep], tmp_path, needle, code=0)
    assert res.stderr.startswith(f"warning: skipping run {first.name}: {first}/")
    assert "gathered 1 of 2 runs" in res.stdout
    assert second.name in (sweep / "results.csv").read_text() and first.name not in (sweep / "results.csv").read_text()


@pytest.mark.parametrize("name,text,needle", [
    ("metrics.json", '{"methods": {"fsd": {"per_seed": [', "metrics.json is not valid JSON"),
    ("metrics.json", '{"seconds": 1}', "metrics.json has no field 'methods'; rerun that run"),
    ("metrics.json", '{"methods": {"fsd": {"per_seed": [{"seed": 0}], "modes_reached": 1, "diversity": 0}}}',
     "metrics.json has no field 'nearest_psnr'"),
    ("metrics.json", '{"methods": {"fsd": {"per_seed": [], "modes_reached": 1, "diversity": 0}}}',
     "metrics.json is malformed (ZeroDivisionError"),
    ("run.json", '{"command": "compare-2d"}', "run.json has no field 'config'"),
    ("run.json", "", "run.json is not valid JSON"),
])
def test_table1_refuses_a_damaged_run(sweep, tmp_path, name, text, needle):
    (runs(sweep)[1] / "result" / name).write_text(text)
    invoke(["table1", sweep, "--out", tmp_path / "table"], tmp_path, needle)


@pytest.fixture
def immutable():
    """Make folders unwritable even for root (chattr +i); undone afterwards."""
    made = []

    def freeze(path: Path) -> None:
        if os.geteuid() != 0:
            path.chmod(0o555)
        elif subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not available here: no way to make a folder unwritable for root")
        made.append(path)

    yield freeze
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        path.chmod(0o755)


def test_gather_into_a_read_only_folder_fails_before_reading_runs(sweep, tmp_path, immutable):
    assert CliRunner().invoke(app, ["gather", str(sweep)]).exit_code == 0  # an existing results.csv stays as is
    (runs(sweep)[0] / "done.json").write_text("{")  # would give a warning if runs were read
    immutable(sweep)
    invoke(["gather", sweep], tmp_path, f"sweep folder {sweep} is not writable")


# 3. output locations ------------------------------------------------------------------------------------

def bad_destinations(tmp_path: Path) -> list[tuple[Path, str]]:
    (tmp_path / "a_file").write_text("keep me")
    return [(tmp_path / "a_file", "exists and is not a folder"),
            (tmp_path / "a_file" / "sub", f"cannot be created: {tmp_path / 'a_file'} is not a folder"),
            (Path("/proc/fsd-no-such-folder/sub"), "cannot be created: no file can be written in /proc")]


@pytest.mark.parametrize("dry_run", [True, False])
def test_batch_output_folder_is_checked_first(tmp_path, monkeypatch, dry_run):
    from fsdbatch import sweep

    monkeypatch.setattr(sweep, "check_runs", lambda *a: pytest.fail("the runs were checked before the folder"))
    (tmp_path / "s.yaml").write_text(SMALL)
    for dest, needle in bad_destinations(tmp_path):
        invoke(["batch", tmp_path / "s.yaml", "--out", dest] + (["--dry-run"] if dry_run else []), tmp_path,
               f"sweep folder {dest} {needle}")


def test_gather_needs_an_existing_folder(tmp_path):
    (tmp_path / "a_file").write_text("keep me")
    invoke(["gather", tmp_path / "a_file"], tmp_path, "a_file is not a folder: give a folder written by `fsd batch`")
    invoke(["gather", tmp_path / "nope"], tmp_path, "nope does not exist")


def test_table1_output_folder_is_checked(sweep, tmp_path):
    for dest, needle in bad_destinations(tmp_path):
        invoke(["table1", sweep, "--out", dest], tmp_path, f"--out {dest} {needle}")


def test_table1_checks_its_output_folder_before_computing(tmp_path):
    from fsdbatch.table1 import table1

    (tmp_path / "a_file").write_text("")
    with pytest.raises(InputError, match="--out .* is not a folder"):
        table1([tmp_path / "not-a-sweep"], out=tmp_path / "a_file" / "t")


@pytest.mark.parametrize("command,params,model", [
    ("gen-3d", "  steps: 2\n  seeds: '0'\n  method: [fsd, sds-annealed]\n", "references"),
    ("compare-2d", "  steps: 2\n  seeds: '0'\n  beta: [0.5, 1]\n", "imageset"),
    ("compare-2d", "  steps: 2\n  seeds: '0'\n  beta: [0.5, 1]\n", "tiny-sd"),
    ("gen-3d", "  steps: 2\n  seeds: '0'\n  method: [fsd, sds-annealed]\n", "tiny-sd-objects"),
])
def test_a_misspelt_prompt_stops_the_sweep_before_any_run(tmp_path, command, params, model):
    """--set prompt=mushrom: one error line naming the prompt, before any run starts (nothing written)."""
    spec = tmp_path / "s.yaml"
    spec.write_text(f"command: {command}\nparams:\n{params}")
    invoke(["batch", spec, "--set", "prompt=mushrom", "--set", f"model={model}", "--out", tmp_path / "out"], tmp_path,
           "every run would fail; run 0 (")
    res = CliRunner().invoke(app, ["batch", str(spec), "--set", "prompt=mushrom", "--set", f"model={model}", "--out",
                                   str(tmp_path / "out")])
    assert "unknown prompt 'mushrom'" in res.stderr and res.stderr.count("error") == 1
    assert not (tmp_path / "out").exists()


def test_a_sweep_takes_exactly_the_commands_options():
    """fsdbatch.commands builds runs from the configs' own options: the same names as the command line's."""
    import typer

    from fsdbatch.commands import COMMANDS

    group = typer.main.get_command(app)
    for name, command in COMMANDS.items():
        on_the_command_line = {p.name for p in group.commands[name].params} - {"out", "progress", "resume"}
        assert set(command.options()) == on_the_command_line, name


def test_numbers_given_as_text_run_as_on_the_command_line(tmp_path):
    """steps: "5" and beta: "0.5" (quoted in YAML) build the config `--steps 5 --beta 0.5` builds."""
    from fsd2d.compare import Compare2DConfig
    from fsdbatch.commands import COMMANDS
    from fsdbatch.sweep import load_sweep

    (tmp_path / "s.yaml").write_text('command: compare-2d\nparams:\n  steps: "5"\n  beta: "0.5"\n  seeds: 0\n')
    run = load_sweep(tmp_path / "s.yaml", tmp_path / "out").runs[0]
    assert COMMANDS["compare-2d"].build(run.params) == Compare2DConfig.from_flags(steps=5, beta=0.5, seeds="0")
