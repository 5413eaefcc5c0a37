"""What a method costs (fsd2d.cost), measured where it runs: the prior's evaluations are counted at its `eps`."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from fsd2d.compare import Compare2DConfig, compare_methods
from fsd2d.cost import counted, metered
from fsd2d.family import Rule, prior_calls
from fsd2d.priors.imageset import ImageSetPrior
from fsd2d.schedule import timesteps

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def prior():
    return ImageSetPrior(16)


@pytest.mark.parametrize("cfg", [1.0, 7.5])
def test_evaluations_per_step_are_the_calls_each_rule_makes(prior, cfg):
    """Per step and seed: 1 without CFG, 2 with it (one [uncond; cond] call of 2B samples), CSD's 2 at any scale,
    ISM's inversion calls on top, within what fsd2d.family.prior_calls (the formula) gives over its t range."""
    config = Compare2DConfig.from_flags(prompt="cat", methods="fsd,sds,csd,ism", seeds="0-2", steps=12, cfg=cfg)
    cost = compare_methods(prior, config).cost
    per = {m.value: c.record()["prior_evaluations_per_step"] for m, c in cost.items()}
    guided = 1.0 if cfg == 1.0 else 2.0
    assert per["ddim"] == per["fsd"] == per["sds"] == guided
    assert per["csd"] == 2.0
    bounds = [prior_calls(Rule.ISM, t, cfg, config.family) for t in range(20, 981)]
    assert min(bounds) <= per["ism"] <= max(bounds) and per["ism"] > guided  # its inversion's calls on top
    assert all(c.steps == 12 and c.rows == 3 and c.trained_parameters == 0 and c.seconds > 0 for c in cost.values())
    assert all(c.peak_memory_bytes is None for c in cost.values())  # CPU: not measured


def test_a_meter_leaves_the_prior_as_it_was_and_nested_meters_both_count(prior):
    x = torch.zeros(5, *prior.latent_shape, dtype=prior.dtype)
    t = timesteps(5, 20, 980)
    cond = prior.encode_prompt("cat").expand(5, *prior.encode_prompt("cat").shape[1:])
    with metered(prior.device) as outer, counted(prior, outer):
        prior.eps(x[:2], t[:2], cond[:2])
        with metered(prior.device) as inner, counted(prior, inner):
            prior.eps(x, t, cond)
        assert inner.evaluations == 5
    assert outer.evaluations == 7 and outer.seconds > 0
    assert "eps" not in prior.__dict__  # the class's method again
    with pytest.raises(RuntimeError), counted(prior, outer):
        raise RuntimeError("a failed run")
    assert "eps" not in prior.__dict__


def test_compare_2d_writes_the_cost_and_prints_it(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["compare-2d", "--methods", "fsd,csd", "--seeds", "0-1", "--steps", "10",
                                   "--cfg", "3", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    cost = json.loads((out / "metrics.json").read_text())["cost"]
    assert set(cost) == {"ddim", "fsd", "csd"}
    assert cost["fsd"]["prior_evaluations_per_step"] == 2.0 and cost["csd"]["prior_evaluations_per_step"] == 2.0
    assert all(c["seconds_per_step"] > 0 and c["seconds"] >= c["seconds_per_step"] and c["peak_memory_gib"] is None
               and c["trained_parameters"] == 0 for c in cost.values())
    assert "evals/step" in res.output and "s/step" in res.output


@pytest.mark.parametrize("cfg,cameras,per_step", [(1.0, 2, 2.0), (7.5, 3, 6.0)])
def test_gen_3d_writes_the_cost_of_its_training(tmp_path, cfg, cameras, per_step):
    """gen-3d's metrics.json: per step and seed one evaluation per camera, two with CFG (fsd3d.train counts each
    step's view prior); a call that adds a seed to a finished run records the cost of its training, per step and
    seed as before, and one with nothing left to train records none."""
    out = tmp_path / "run"
    args = ["gen-3d", "--prompt", "mushroom", "--steps", "4", "--cfg", str(cfg), "--cameras-per-step", str(cameras),
            "--out", str(out), "--no-progress"]
    res = CliRunner().invoke(app, [*args, "--seeds", "0-1"])
    assert res.exit_code == 0, res.output
    cost = json.loads((out / "metrics.json").read_text())["cost"]
    assert cost["prior_evaluations_per_step"] == per_step and cost["trained_parameters"] == 0
    assert 0 < cost["seconds_per_step"] <= cost["seconds"] and cost["peak_memory_gib"] is None
    assert "prior evaluations per step and seed" in res.output
    res = CliRunner().invoke(app, [*args, "--seeds", "0-2", "--resume"])  # seeds 0, 1 done: only seed 2 trains
    assert res.exit_code == 0, res.output
    assert json.loads((out / "metrics.json").read_text())["cost"]["prior_evaluations_per_step"] == per_step
    res = CliRunner().invoke(app, [*args, "--seeds", "0-2", "--resume"])  # nothing left to train: no cost
    assert res.exit_code == 0, res.output
    assert json.loads((out / "metrics.json").read_text())["cost"] is None


def test_sweep_tables_carry_the_cost_beside_each_row():
    """fsdbatch.table.flatten: compare-2d's per-method cost joins its method's row, gen-3d's its one row; the cost's
    total seconds stays out (the CSV's `seconds` is the run's, from done.json)."""
    from fsdbatch.table import flatten

    cost = {"prior_evaluations_per_step": 2.0, "seconds_per_step": 0.01, "seconds": 3.0, "peak_memory_gib": None,
            "trained_parameters": 0}
    two_d = {"seconds": 9.0, "methods": {"ddim": {"diversity": 0.9}, "fsd": {"diversity": 0.8}},
             "cost": {"ddim": {**cost, "prior_evaluations_per_step": 1.0}, "fsd": cost}}
    rows = dict((r["method"], r) for _, r in flatten(two_d))
    assert rows["fsd"]["prior_evaluations_per_step"] == 2.0 and rows["ddim"]["prior_evaluations_per_step"] == 1.0
    assert rows["fsd"]["diversity"] == 0.8 and all("seconds" not in r for r in rows.values())
    [(_, row)] = flatten({"seconds": 9.0, "diversity": 0.4, "cost": cost})
    assert row["seconds_per_step"] == 0.01 and row["trained_parameters"] == 0 and "seconds" not in row
    [(_, row)] = flatten({"diversity": 0.4, "cost": None})  # nothing trained: no cost columns
    assert row == {"diversity": 0.4}
