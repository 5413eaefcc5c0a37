"""Records that tell the truth: one meaning per method name in 2D and 3D, run.json with the values used, valid JSON
(no inf / NaN), and one definition of a run's evaluation cameras."""
import json
import math

import pytest
from typer.testing import CliRunner

from cli import app
from fsd2d.errors import InputError
from fsd2d.sampling import Method, TimestepSampling
from fsd3d.config import NoiseKind, Train3DConfig

runner = CliRunner()
TINY_2D = ["--steps", "4", "--resolution", "16", "--no-progress"]
TINY_3D = ["--steps", "2", "--resolution", "16", "--num-gaussians", "40", "--seeds", "0", "--no-progress"]

pytestmark = pytest.mark.usefixtures("one_thread")


def strict_json(path) -> dict:
    """The file as JSON that any parser takes: NaN, Infinity and the old "inf" / "nan" strings are errors."""
    def refuse(name):
        raise AssertionError(f"{path} holds {name}")

    doc = json.loads(path.read_text(), parse_constant=refuse)

    def walk(v):
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        else:
            assert v not in ("inf", "-inf", "nan"), path
    walk(doc)
    return doc


def test_a_method_name_means_one_algorithm_in_2d_and_3d():
    shared = [m for m in Method if m.value in {k.value for k in NoiseKind}]
    assert {m.value for m in shared} >= {"fsd", "sds", "sds-annealed", "ism", "sdi", "csd", "nfsd"}
    for m in shared:
        assert NoiseKind(m.value).sampling is m.sampling, m
    assert NoiseKind.SDS.sampling is TimestepSampling.UNIFORM  # DreamFusion's, as compare-2d's sds
    assert NoiseKind.SDS_ANNEALED.sampling is NoiseKind.FSD.sampling is TimestepSampling.ANNEALED
    with pytest.raises(InputError, match="that is --method sds-annealed"):
        Train3DConfig(method=NoiseKind.SDS, sampling=TimestepSampling.ANNEALED).validate()
    Train3DConfig(method=NoiseKind.CONSTANT, sampling=TimestepSampling.UNIFORM).validate()  # a 3D-only ablation may


@pytest.mark.parametrize("method,sampling", [("sds", "uniform"), ("sds-annealed", "annealed"), ("ism", "uniform"),
                                             ("fsd", "annealed")])
def test_gen_3d_records_the_methods_timesteps(tmp_path, method, sampling):
    res = runner.invoke(app, ["gen-3d", *TINY_3D, "--method", method, "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    record = strict_json(tmp_path / "r" / "run.json")
    assert record["config"]["train"]["method"] == method and record["train_resolved"]["sampling"] == sampling


def test_gen_3d_refuses_a_timestep_sampling_that_renames_the_method(tmp_path):
    res = runner.invoke(app, ["gen-3d", *TINY_3D, "--method", "sds", "--t-sampling", "annealed", "--out",
                              str(tmp_path / "r")])
    assert res.exit_code == 2 and "that is --method sds-annealed" in res.stderr and not (tmp_path / "r").exists()


def test_compare_2d_records_the_values_it_used(tmp_path):
    """cfg and lr left to the prior are recorded as used (not null), with each method's timesteps and noise."""
    out = tmp_path / "r"
    res = runner.invoke(app, ["compare-2d", *TINY_2D, "--seeds", "0", "--methods", "fsd,fsd-exact,sds,sds-annealed",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    record = strict_json(out / "run.json")
    assert record["config"]["cfg"] is None and record["config"]["lr"] is None  # as given: loads back (STYLE 10)
    assert record["resolved"]["cfg"] == 1.0 and record["resolved"]["lr"] == pytest.approx(2.5 / 4)
    assert record["resolved"]["resolution"] == 16 and record["dtype"] == "float64"
    methods = record["methods"]
    assert {k: (v["sampling"], v["beta"]) for k, v in methods.items()} == {
        "fsd": ("annealed", 1.0), "fsd-exact": ("annealed", 1.0), "sds": ("uniform", 0.0),
        "sds-annealed": ("annealed", 0.0)}
    assert all(v["lr"] == pytest.approx(2.5 / 4) for v in methods.values())


def test_metrics_are_valid_json_with_identical_images_and_one_seed(tmp_path):
    """fsd-exact = DDIM gives an identical or near-identical image (PSNR capped at 100 dB, not inf); one seed has no
    diversity (null, not NaN)."""
    out = tmp_path / "r"
    res = runner.invoke(app, ["compare-2d", *TINY_2D, "--seeds", "0", "--methods", "fsd-exact", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = strict_json(out / "metrics.json")
    exact = doc["methods"]["fsd-exact"]
    assert exact["mean_psnr_to_ddim"] == 100.0 and exact["per_seed"][0]["psnr_to_ddim"] == 100.0
    assert doc["methods"]["ddim"]["per_seed"][0]["psnr_to_ddim"] == 100.0  # DDIM against itself
    assert exact["diversity"] is None


def test_psnr_is_capped_once_for_2d_and_3d():
    import numpy as np
    import torch

    from fsd2d.metrics import PSNR_CAP_DB, nearest, psnr
    from fsd3d.metrics3d import psnr_matrix

    a = np.random.default_rng(0).random((8, 8, 3))
    assert psnr(a, a) == PSNR_CAP_DB and psnr(a, a + 1e-7) == PSNR_CAP_DB and psnr(a, a * 0.5) < 20
    t = torch.from_numpy(a).permute(2, 0, 1)[None]  # [1, 3, 8, 8]
    assert float(nearest(t, t)[1][0]) == PSNR_CAP_DB
    assert float(psnr_matrix(t, t[None])[0, 0]) == PSNR_CAP_DB


def test_summary_bars_say_what_a_missing_value_is(tmp_path):
    """A metric that is undefined (null) for one run is marked n/a, not drawn as a bar of height 0."""
    from unittest import mock

    import matplotlib.axes

    from fsdbatch.gather import plot_metric

    rows = [{"method": "fsd", "diversity": 0.4}, {"method": "sds", "diversity": None},
            {"method": "old", "diversity": math.inf}]
    with mock.patch.object(matplotlib.axes.Axes, "annotate", autospec=True) as annotate:
        plot_metric(tmp_path / "p.png", rows, "diversity", None, ["method"])
    assert [c.args[1] for c in annotate.call_args_list] == ["n/a", "inf"]
    assert (tmp_path / "p.png").stat().st_size > 0


def test_a_runs_evaluation_cameras_are_its_resolved_ones(tiny_sd_path, tmp_path):
    """gen-3d on a Stable Diffusion folder scores at the SD profile's cameras (radius 1.3-1.5, fov 40-65: the middle
    1.40 / 52.5), and everything that reads the run back (export-mesh, the viewer, the report) gets the same."""
    from fsd3d.gen3d import run_config

    out = tmp_path / "sd"
    res = runner.invoke(app, ["gen-3d", "--model", str(tiny_sd_path), "--steps", "1", "--resolution", "32",
                              "--num-gaussians", "40", "--seeds", "0", "--no-progress", "--out", str(out)])
    assert res.exit_code == 0, res.output
    config, size = run_config(out / "run.json")
    views = config.train.cameras.evaluation_cameras(size, config.eval_views)
    assert size == 32 and len(views) == 8
    assert all(v.radius == pytest.approx(1.40) and v.fov == pytest.approx(52.5) for v in views)
    assert [v.azimuth for v in views] == [45.0 * i for i in range(8)]
    import fsd3d.gen3d

    assert not hasattr(fsd3d.gen3d.Gen3DConfig, "eval_cameras") and not hasattr(fsd3d.gen3d, "eval_cameras")
