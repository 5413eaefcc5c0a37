"""Issue 3: patch-shuffled noise (Fig. 5), x_gt consistency (Fig. 4), the beta sweep (Fig. 8 in 2D)."""
import json

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from fsd2d.beta_sweep import BetaSweepConfig, beta_sweep
from fsd2d.consistency import ConsistencyConfig, x_gt_consistency
from fsd2d.errors import InputError
from fsd2d.priors.imageset import ImageSetPrior
from fsd2d.priors.patches import PatchPrior
from fsd2d.shuffle import Permutation, make_permutation, pearson, permute_patches
from fsd2d.shuffle_study import ShuffleConfig, shuffle_noise

runner = CliRunner()


@pytest.mark.parametrize("kind", list(Permutation))
def test_permutations_move_whole_patches(kind):
    grid = 4
    perm = make_permutation(kind, grid, seed=3)
    assert sorted(perm.tolist()) == list(range(16)) and not torch.equal(perm, torch.arange(16))
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float64).view(2, 3, 8, 8)
    y = permute_patches(x, grid, perm)
    for j in range(16):  # patch j of y is patch perm[j] of x
        r, c = divmod(j, grid)
        pr, pc = divmod(int(perm[j]), grid)
        assert torch.equal(y[..., 2 * r : 2 * r + 2, 2 * c : 2 * c + 2], x[..., 2 * pr : 2 * pr + 2, 2 * pc : 2 * pc + 2])
    inverse = torch.argsort(perm)
    assert torch.equal(permute_patches(y, grid, inverse), x)


def test_pearson():
    a = torch.randn(3, 50, dtype=torch.float64)
    assert torch.allclose(pearson(a, 2 * a + 1), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(pearson(a, -a), -torch.ones(3, dtype=torch.float64))


def test_shuffled_noise_shuffles_the_result_on_the_local_prior(tmp_path):
    prior = PatchPrior()
    config = ShuffleConfig(seeds=(0, 1), steps=120, grid=4)
    s = shuffle_noise(prior, config, tmp_path / "out")
    for p in s["per_seed"]:
        assert p["corr_permuted"] > p["corr_control"] + 0.25
        assert p["corr_permuted"] > p["corr_unpermuted"] + 0.25
    assert s["mean_corr_permuted"] > 0.35
    assert (tmp_path / "out" / "shuffle.png").exists() and (tmp_path / "out" / "run.json").exists()


def test_bad_shuffle_input(tmp_path):
    prior = ImageSetPrior()
    with pytest.raises(InputError, match="does not divide"):
        shuffle_noise(prior, ShuffleConfig(model="imageset", seeds=(0,), steps=5, grid=5), tmp_path / "o")
    assert not (tmp_path / "o").exists()
    for args, needle in [(["--grid", "3"], "does not divide"), (["--permutation", "spiral"], "allowed: random"),
                         (["--grid", "1"], "at least 2"), (["--frames", "-1"], "--frames")]:
        res = runner.invoke(app, ["shuffle-noise", "--steps", "5", "--no-progress", "--out", str(tmp_path / "o"), *args])
        assert res.exit_code == 2 and needle in res.stderr, (args, res.output)
        assert not (tmp_path / "o").exists()


def test_x_gt_moves_less_under_fsd_than_sds(tmp_path):
    prior = ImageSetPrior()
    config = ConsistencyConfig(seeds=(0, 1, 2), steps=60, window=4, cfg=3.0)
    s = x_gt_consistency(prior, config, tmp_path / "c")
    fsd, sds = s["methods"]["fsd"], s["methods"]["sds-annealed"]
    assert fsd["mean_consecutive_rmse_run"] < 0.5 * sds["mean_consecutive_rmse_run"]
    assert fsd["mean_consecutive_rmse_window"] < sds["mean_consecutive_rmse_window"]
    for f, g in zip(fsd["per_seed_window"], sds["per_seed_window"]):
        assert f["rmse"] < g["rmse"]
    assert {p.name for p in (tmp_path / "c").iterdir()} == {"strip.png", "curve.png", "metrics.json", "run.json"}
    with pytest.raises(InputError, match="window"):
        ConsistencyConfig(steps=10, window=20).validate()


def test_beta_sweep_endpoints(tmp_path):
    """beta = 1 is FSD (close to DDIM), beta = 0 is SDS-annealed (far from it, fewer modes)."""
    prior = ImageSetPrior()
    config = BetaSweepConfig(seeds=tuple(range(8)), steps=150, betas=(0.0, 1.0))
    s = beta_sweep(prior, config, tmp_path / "b")
    sds, fsd = s["rows"]
    assert fsd["mean_psnr_to_ddim"] > sds["mean_psnr_to_ddim"] + 10
    assert fsd["modes_reached"] > sds["modes_reached"]
    table = (tmp_path / "b" / "table.csv").read_text().splitlines()
    assert table[0] == "beta,diversity,mean_psnr_to_ddim,mean_ssim_to_ddim,modes_reached" and len(table) == 3
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["rows"][1]["beta"] == 1.0
    res = runner.invoke(app, ["beta-sweep", "--betas", "0,2", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "beta must be in [0, 1]" in res.stderr
