"""Today's backbones through the same command-line paths as Stable Diffusion: a tiny random folder of each layout
(SD3, SDXL, FLUX.1-dev, FLUX.2 klein) runs 2 steps of compare-2d and of gen-3d, takes its backbone's 3D profile, and a damaged
folder is one error line with nothing written."""
import json
import shutil

import pytest
from typer.testing import CliRunner

from cli import app

PROFILE = {"tiny_sd3_path": ("sd3", 100.0), "tiny_sdxl_path": ("sdxl", 71.0), "tiny_flux_path": ("flux", 3.5),
           "tiny_flux2_klein_path": ("flux", 4.0)}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("fixture", list(PROFILE))
def test_compare_2d_and_gen_3d_run_on_each_layout(fixture, request, tmp_path):
    folder = request.getfixturevalue(fixture)
    res = invoke("compare-2d", "--model", folder, "--steps", "2", "--seeds", "0-1", "--prompt", "a cat",
                 "--out", tmp_path / "2d", "--no-progress")
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "2d" / "metrics.json").read_text())
    assert metrics["methods"]["fsd-exact"]["mean_psnr_to_ddim"] > 40  # Proposition 1, through the VAE
    res = invoke("gen-3d", "--model", folder, "--steps", "2", "--seeds", "0-1", "--prompt", "a cat",
                 "--resolution", "16", "--out", tmp_path / "3d", "--no-progress")
    assert res.exit_code == 0, res.output
    run = json.loads((tmp_path / "3d" / "run.json").read_text())
    assert (run["profile"], run["train_resolved"]["cfg"]) == PROFILE[fixture]
    assert (tmp_path / "3d" / "seed_1" / "gaussians.ply").is_file()


@pytest.mark.parametrize("fixture,part", [("tiny_sd3_path", "text_encoder_2"), ("tiny_sdxl_path", "unet"),
                                          ("tiny_flux_path", "transformer"),
                                          ("tiny_flux2_klein_path", "text_encoder")])
def test_a_folder_missing_a_part_is_one_line_and_nothing_written(fixture, part, request, tmp_path):
    folder = shutil.copytree(request.getfixturevalue(fixture), tmp_path / "broken")
    shutil.rmtree(folder / part)
    for command in ("compare-2d", "gen-3d"):
        res = invoke(command, "--model", folder, "--steps", "2", "--out", tmp_path / command, "--no-progress")
        assert res.exit_code == 2 and f"no '{part}' subfolder" in res.stderr, res.output
        assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / command).exists()


@pytest.mark.parametrize("command,flag,method", [("compare-2d", "--methods", "fsd,csd"), ("gen-3d", "--method", "ism")])
def test_family_rules_on_embedded_guidance_are_one_line_and_nothing_written(tiny_flux_path, tmp_path, command, flag,
                                                                              method):
    """FLUX.1-dev embeds its guidance scale: a rule that needs the unconditional model (CSD, NFSD, ISM, SDI) is
    refused before any step runs, in one line, and nothing is written; SDS's rule (ddim, fsd, sds) runs (above)."""
    res = invoke(command, "--model", tiny_flux_path, flag, method, "--steps", "2", "--seeds", "0",
                 "--out", tmp_path / "out", "--no-progress")
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "embeds its guidance scale" in lines[0] and method.split(",")[-1] in lines[0], lines
    assert not (tmp_path / "out").exists()
