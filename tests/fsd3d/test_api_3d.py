"""The 3D public API (fsd3d.__all__): run_3d gives in memory what `fsd gen-3d` writes, save_run writes what it
writes, a run.json loads back into its config, the flags build the same config in Python as on the command line,
and bad input is the same one-line InputError through both."""
import json
from dataclasses import replace

import pytest
import typer
from typer.testing import CliRunner

import fsd3d
from cli import app
from fsd2d.errors import InputError
from fsd2d.io import jsonable, read_object
from fsd3d import Gen3DConfig, NoiseKind, Train3DConfig, run_3d, save_run
from fsd3d.config import FLAGS

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = Gen3DConfig(seeds=(0, 1), resolution=16, train=Train3DConfig(steps=6, num_gaussians=60))
CLI_SMALL = ["--seeds", "0-1", "--resolution", "16", "--steps", "6", "--num-gaussians", "60", "--no-progress"]


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("seconds", "seed_batch", "cost")}


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "cli"
    res = CliRunner().invoke(app, ["gen-3d", *CLI_SMALL, "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def api_run():
    return run_3d(SMALL)


def test_run_3d_gives_the_numbers_gen_3d_writes(cli_run, api_run):
    written = json.loads((cli_run / "metrics.json").read_text())
    assert json.loads(json.dumps(api_run.summary)) == without_timing(written)
    assert list(api_run.scenes) == [0, 1] and api_run.renders[0].rgb.shape == (8, 3, 16, 16)
    assert "references_reached" in api_run.summary and api_run.per_seed[0]["majority"]


def test_save_run_writes_what_gen_3d_writes(cli_run, api_run, tmp_path):
    out = save_run(api_run, tmp_path / "saved")
    for seed in (0, 1):
        assert (out / f"seed_{seed}" / "gaussians.ply").read_bytes() == \
            (cli_run / f"seed_{seed}" / "gaussians.ply").read_bytes()
        assert (out / f"seed_{seed}" / "turntable.mp4").is_file() and (out / f"seed_{seed}" / "checkpoint.pt").is_file()
    assert without_timing(read_object(out / "metrics.json")) == without_timing(read_object(cli_run / "metrics.json"))
    # the saved folder is a gen-3d run: a seed more goes on from its checkpoints
    res = CliRunner().invoke(app, ["gen-3d", *CLI_SMALL[2:], "--seeds", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert read_object(out / "run.json")["config"]["seeds"] == [0, 1, 2]


def test_a_run_json_loads_back_into_its_config(cli_run, api_run):
    record = read_object(cli_run / "run.json")
    assert Gen3DConfig.from_record(record) == SMALL
    assert Gen3DConfig.from_record({"command": "gen-3d", "config": json.loads(json.dumps(jsonable(api_run.config)))}) \
        == SMALL
    with pytest.raises(InputError, match="not a gen-3d run record"):
        Gen3DConfig.from_record({"command": "compare-2d", "config": {}})
    with pytest.raises(InputError, match="unknown field"):
        Gen3DConfig.from_record({"command": "gen-3d", "config": {"promt": "mushroom"}})


def test_the_command_lines_defaults_are_the_configs():
    """Every gen-3d option maps onto the config, and its default on the command line builds the default config."""
    command = typer.main.get_command(app).commands["gen-3d"]
    options = {p.name: p.default for p in command.params if p.name not in ("out", "resume", "progress")}
    assert set(options) == set(FLAGS)
    assert Gen3DConfig.from_flags(**options) == Gen3DConfig.from_flags() == Gen3DConfig()


def test_flags_take_the_command_lines_text():
    config = Gen3DConfig.from_flags(seeds="0-2,5", method="sds-annealed", elevation="0,30", anneal="sqrt",
                                    densify="mcmc", densify_cap=300, sdi_eta=0.1, turntable="gif")
    assert config.seeds == (0, 1, 2, 5) and config.train.method is NoiseKind.SDS_ANNEALED
    assert config.train.elevation == (0.0, 30.0) and config.train.densify.cap == 300
    assert config.train.family.sdi_eta == 0.1 and config.turntable.value == "gif"


@pytest.mark.parametrize("flags,args", [
    ({"prompt": "unicorn"}, ["--prompt", "unicorn"]),
    ({"beta": 1.5}, ["--beta", "1.5"]),
    ({"elevation": "30,0"}, ["--elevation", "30,0"]),
    ({"method": "fsdd"}, ["--method", "fsdd"]),
    ({"model": "imageset"}, ["--model", "imageset"]),
    ({"compile": True}, ["--compile"]),
])
def test_bad_input_is_the_same_one_line_error_in_python_and_on_the_command_line(flags, args, tmp_path):
    res = CliRunner().invoke(app, ["gen-3d", *args, "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and res.stderr.startswith("error: ")
    with pytest.raises(InputError) as caught:
        Gen3DConfig.from_flags(**flags).validate()
    assert res.stderr.strip() == f"error: {caught.value}"
    assert not (tmp_path / "out").exists()


def test_run_3d_validates_its_config():
    with pytest.raises(InputError, match="theta must be > 0"):
        run_3d(replace(SMALL, train=replace(SMALL.train, theta=-1.0)))


def test_the_settings_are_resolved_once_per_run(monkeypatch, tmp_path):
    calls = []
    real = fsd3d.settings.resolve
    monkeypatch.setattr(fsd3d.run, "resolve", lambda *a: calls.append(1) or real(*a))
    fsd3d.gen_3d(replace(SMALL, seeds=(0,), seed_batch=1), tmp_path / "run")
    assert len(calls) == 1


def test_the_loop_takes_only_resolved_settings():
    from fsd3d.checkpoint import initial_state

    with pytest.raises(TypeError, match="resolve"):
        initial_state(Train3DConfig(steps=3), 0)


def test_a_callback_sees_every_step_of_every_seed():
    seen = []
    run_3d(replace(SMALL, train=replace(SMALL.train, steps=3)), callback=lambda s, log: seen.append((s.seed, log.step)))
    assert sorted(seen) == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]


def test_a_prior_serves_only_the_runs_it_was_loaded_for():
    prior = fsd3d.load_scene_prior(SMALL)
    with pytest.raises(InputError, match='prompt: "mushroom" there, "snowman" here'):
        run_3d(replace(SMALL, prompt="snowman"), prior)


def test_numbers_count_by_value_not_by_how_they_were_typed():
    """theta 45 (a sweep's YAML int), '45' (text) and 45.0 (the command line) are one setting and one fingerprint."""
    configs = [Gen3DConfig.from_flags(theta=v, beta=b) for v, b in ((45, 1), ("45", "1"), (45.0, 1.0))]
    assert configs[0] == configs[1] == configs[2] and isinstance(configs[0].train.theta, float)
    prior = fsd3d.load_scene_prior(SMALL)
    direct = fsd3d.resolve(replace(SMALL, train=replace(SMALL.train, beta=1)), prior).train
    assert direct.fingerprint() == fsd3d.resolve(SMALL, prior).train.fingerprint()
    with pytest.raises(InputError, match="expected int, got 'abc'"):
        Gen3DConfig.from_flags(steps="abc")
