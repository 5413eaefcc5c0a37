"""The 2D public API (fsd2d.__all__): the module docstring's example gives the CLI's numbers, the samplers share one
contract, configs are built from the commands' options with the commands' defaults, run.json loads back into the
config that wrote it, and a Python caller gets the command's one-line error."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

import fsd2d
from cli import app
from fsd2d.beta_sweep import BetaSweepConfig
from fsd2d.compare import Compare2DConfig
from fsd2d.consistency import ConsistencyConfig
from fsd2d.errors import InputError
from fsd2d.family import FamilyOptions
from fsd2d.io import jsonable, read_object, run_record, write_json
from fsd2d.sampling import Method, ddim_sample, distill, initial_noise, sample
from fsd2d.schedule import Anneal, timesteps
from fsd2d.shuffle import Permutation
from fsd2d.shuffle_study import ShuffleConfig
from fsd2d.study import run_study

runner = CliRunner()
STUDIES = {"compare-2d": Compare2DConfig, "shuffle-noise": ShuffleConfig, "consistency": ConsistencyConfig,
           "beta-sweep": BetaSweepConfig}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def imageset():
    return fsd2d.load_prior("imageset")  # what the commands load by default


def test_import_is_light_and_every_public_name_resolves():
    code = "import sys, fsd2d; print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
    for name in fsd2d.__all__:
        assert getattr(fsd2d, name) is not None, name
    with pytest.raises(AttributeError):
        fsd2d.no_such_name


def test_the_docstring_example_gives_the_numbers_of_compare_2d(tmp_path):
    """The README-sized example (fsd2d's docstring, run as written) == `fsd compare-2d --methods fsd,sds --seeds 0-3
    --steps 50`'s metrics.json, float for float as read back from JSON; its run.json loads back into the same config."""
    out = tmp_path / "c2d"
    res = runner.invoke(app, ["compare-2d", "--methods", "fsd,sds", "--seeds", "0-3", "--steps", "50", "--out",
                              str(out), "--no-progress"])
    assert res.exit_code == 0, res.output

    example = "\n".join(line[4:] for line in fsd2d.__doc__.splitlines() if line.startswith("    "))
    namespace = {}
    exec(example, namespace)
    config, result = namespace["config"], namespace["result"]

    written = read_object(out / "metrics.json")
    assert written.pop("seconds") > 0
    cost = written.pop("cost")  # timings differ run to run; the evaluations counted do not
    assert {m: c["prior_evaluations_per_step"] for m, c in cost.items()} == {
        m.value: c.record()["prior_evaluations_per_step"] for m, c in result.cost.items()}
    assert json.loads(json.dumps(jsonable(result.metrics))) == written
    assert list(result.images) == [Method.DDIM, Method.FSD, Method.SDS]
    assert all(im.shape == (4, 3, 32, 32) and 0 <= im.min() and im.max() <= 1 for im in result.images.values())
    assert Compare2DConfig.from_record(read_object(out / "run.json")) == config == result.config


def test_every_method_has_one_contract_and_keeps_its_bits(imageset):
    """sample(prior, guidance, method, seeds, base): any method in the same call; DDIM and each distillation give
    the bits of ddim_sample and distill as their callers have always called them."""
    guidance = fsd2d.Guidance.from_prompts(imageset, "cat", "", 1.0)
    base = fsd2d.DistillConfig(steps=12, anneal=Anneal.SQRT, beta=0.5)
    seeds = (3, 1)
    # every method the analytic prior takes (VSD / ESD train a critic of a network: tests/fsd2d/test_vsd.py)
    out = {m: sample(imageset, guidance, m, seeds, base) for m in Method if m not in (Method.VSD, Method.ESD)}
    assert all(x.shape == (2, 3, 32, 32) for x in out.values())
    grid = timesteps(base.steps, base.t_min, base.t_max, base.anneal)
    assert torch.equal(out[Method.DDIM], ddim_sample(imageset, guidance, initial_noise(imageset, seeds), grid))
    for m in (Method.FSD, Method.SDS, Method.ISM):
        assert torch.equal(out[m], distill(imageset, guidance, m.config(base), seeds)), m
    # Proposition 1 through the one entry: fsd-exact is DDIM, whatever beta the base says
    assert (out[Method.FSD_EXACT] - out[Method.DDIM]).abs().max() <= 1e-10
    # a given noise replaces eps~ for both kinds of method
    noise = initial_noise(imageset, (7, 8))
    assert torch.equal(sample(imageset, guidance, Method.DDIM, seeds, base, noise=noise),
                       ddim_sample(imageset, guidance, noise, grid))
    assert torch.equal(sample(imageset, guidance, Method.FSD, seeds, base, noise=noise),
                       distill(imageset, guidance, Method.FSD.config(base), seeds, noise=noise))


def command_defaults(name: str) -> dict:
    """The click command's option defaults by their Python names, less out and progress."""
    command = typer.main.get_command(app).commands[name]
    return {p.name: p.default for p in command.params if p.name not in ("out", "progress")}


@pytest.mark.parametrize("command", STUDIES)
def test_the_commands_defaults_are_the_configs_defaults(command):
    config_cls = STUDIES[command]
    assert config_cls.from_flags(**command_defaults(command)) == config_cls.from_flags() == config_cls()


def test_flags_as_text_or_typed_give_one_config():
    typed = Compare2DConfig(seeds=(0, 1, 2, 3, 9), methods=(Method.FSD, Method.SDS), anneal=Anneal.SQRT,
                            family=FamilyOptions(ism_interval=30, sdi_inversion_cfg=-7.5))
    assert Compare2DConfig.from_flags(seeds="0-3,9", methods="fsd,sds", anneal="sqrt", ism_interval=30,
                                      sdi_inversion_cfg=-7.5) == typed
    assert Compare2DConfig.from_flags(seeds=[0, 1, 2, 3, 9], methods=["fsd", Method.SDS], anneal=Anneal.SQRT,
                                      family=FamilyOptions(ism_interval=30, sdi_inversion_cfg=-7.5)) == typed
    assert ShuffleConfig.from_flags(permutation="reverse", seeds=5) == ShuffleConfig(
        permutation=Permutation.REVERSE, seeds=(5,))
    assert BetaSweepConfig.from_flags(betas="0,0.5") == BetaSweepConfig(betas=(0.0, 0.5))
    with pytest.raises(InputError, match="consistency has no option --windw"):
        ConsistencyConfig.from_flags(windw=3)
    assert Compare2DConfig.from_flags(steps="20", beta=1, cfg=None) == Compare2DConfig(steps=20, beta=1.0)


ROUND_TRIPS = [
    Compare2DConfig(prompt="coffee", seeds=(2, 5), steps=7, cfg=3.0, lr=0.01, anneal=Anneal.PIECEWISE,
                    methods=(Method.ISM, Method.FSD_EXACT), resolution=16,
                    family=FamilyOptions(ism_stride=100, sdi_inversion_cfg=-7.5, sdi_eta=0.0)),
    ShuffleConfig(seeds=(1,), grid=2, permutation=Permutation.TRANSPOSE, perm_seed=3, frames=0, anneal=Anneal.SQRT),
    ConsistencyConfig(seeds=(4, 6), steps=9, window=3, show_seed=6, beta=0.5, negative_prompt="blurry"),
    BetaSweepConfig(seeds=(0,), betas=(0.0, 0.3, 1.0), t_min=50, t_max=900, model="patches"),
]


@pytest.mark.parametrize("config", ROUND_TRIPS, ids=lambda c: type(c).__name__)
def test_run_json_loads_back_into_the_config_that_wrote_it(tmp_path, config):
    """What the studies write (run_record through write_json) gives the same config, nested types typed again."""
    write_json(tmp_path / "run.json", run_record(type(config).LAYOUT.command, config, {"prior": {}}))
    back = type(config).from_record(read_object(tmp_path / "run.json"))
    assert back == config
    assert all(type(a) is type(b) for a, b in zip(jsonable_fields(back), jsonable_fields(config)))


def jsonable_fields(config) -> list:
    return [getattr(config, name) for name in config.__dataclass_fields__]


def test_a_record_of_another_study_is_refused(tmp_path):
    record = run_record("shuffle-noise", ShuffleConfig())
    with pytest.raises(InputError, match="does not load into Compare2DConfig"):
        Compare2DConfig.from_record(record)
    record = run_record("compare-2d", {**jsonable(Compare2DConfig()), "colour": "red"})
    with pytest.raises(InputError, match="unknown field.s. colour for Compare2DConfig"):
        Compare2DConfig.from_record(record)


def cli_error(args: list[str]) -> str:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 2, res.output
    return res.stderr.strip().removeprefix("error: ")


def test_a_python_caller_gets_the_commands_one_line_error(tmp_path):
    from fsdtrain.datasets import Dataset
    from fsdtrain.train import TrainPriorConfig

    tiny = ["--steps", "3", "--seeds", "0", "--no-progress", "--out", tmp_path / "o"]
    cases = [
        (["shuffle-noise", "--frames", "-1", *tiny],
         lambda: run_study(ShuffleConfig(frames=-1, steps=3), tmp_path / "o")),
        (["beta-sweep", "--betas", "0,inf", *tiny], lambda: BetaSweepConfig(betas=(0.0, math.inf)).validate()),
        (["compare-2d", "--methods", "fsd,vsdd", *tiny], lambda: Compare2DConfig.from_flags(methods="fsd,vsdd")),
        (["consistency", "--window", "1", *tiny], lambda: run_study(ConsistencyConfig(window=1, steps=3, seeds=(0,)),
                                                                    tmp_path / "o")),
        (["train-prior", "imageset", "--vae-lr", "nan", "--out", tmp_path / "m"],
         lambda: TrainPriorConfig(Dataset.IMAGESET, vae_lr=math.nan).validate()),
    ]
    for args, call in cases:
        with pytest.raises(InputError) as caught:
            call()
        assert str(caught.value) == cli_error(args), args
        assert "\n" not in str(caught.value)
    assert not (tmp_path / "o").exists() and not (tmp_path / "m").exists()


def test_run_study_is_the_commands_runner(tmp_path, imageset):
    """run_study with a given prior writes what the command writes (same metrics.json less the time)."""
    args = ["--seeds", "0-1", "--steps", "8", "--window", "3", "--no-progress"]
    assert runner.invoke(app, ["consistency", *args, "--out", str(tmp_path / "cli")]).exit_code == 0
    config = ConsistencyConfig.from_flags(seeds="0-1", steps=8, window=3)
    summary = run_study(config, tmp_path / "api", prior=imageset)
    written = {p.relative_to(tmp_path / "api") for p in (tmp_path / "api").rglob("*")}
    assert written == {p.relative_to(tmp_path / "cli") for p in (tmp_path / "cli").rglob("*")}
    for folder in ("cli", "api"):
        metrics = read_object(tmp_path / folder / "metrics.json")
        metrics.pop("seconds")
        assert metrics == {k: v for k, v in json.loads(json.dumps(jsonable(summary))).items() if k != "seconds"}
    assert ConsistencyConfig.from_record(read_object(tmp_path / "api" / "run.json")) == config
    assert Path(tmp_path / "api" / "strip.png").read_bytes() == Path(tmp_path / "cli" / "strip.png").read_bytes()
