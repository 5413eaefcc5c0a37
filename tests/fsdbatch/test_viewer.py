"""`fsd view` (fsdbatch.viewer): which splats it finds, what it sends to viser, what it shows, where it listens."""
import json
import math
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from fsd2d.errors import InputError
from fsd3d.gaussians import GaussianScene
from fsdbatch.viewer import SIDE_BY_SIDE, Viewer, find_splats, splat_arrays

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_thread")


def test_splat_arrays_are_the_gaussians_covariances_colours_and_opacities():
    g = torch.Generator().manual_seed(0)
    scene = GaussianScene(torch.randn(6, 3, generator=g), math.log(0.1) + 0.5 * torch.randn(6, 3, generator=g),
                          torch.randn(6, 4, generator=g), torch.randn(6, generator=g),
                          3 * torch.randn(6, 3, generator=g))  # sh0 this large puts colours beyond [0, 1]
    a = splat_arrays(scene)
    assert a["centers"].shape == (6, 3) and a["covariances"].shape == (6, 3, 3)
    assert a["rgbs"].shape == (6, 3) and a["opacities"].shape == (6, 1)
    cov = a["covariances"].astype(np.float64)
    np.testing.assert_allclose(cov, cov.transpose(0, 2, 1), atol=1e-9)
    # Sigma = R S^2 R^T: its eigenvalues are the squared std-devs, whatever the rotation
    eig = np.sort(np.linalg.eigvalsh(cov), axis=-1)
    np.testing.assert_allclose(eig, np.sort(scene.scales().detach().double().numpy() ** 2, axis=-1), rtol=1e-4)
    assert (a["rgbs"] >= 0).all() and (a["rgbs"] <= 1).all() and (a["rgbs"] == 0).any()  # clipped, not rescaled
    np.testing.assert_allclose(a["opacities"][:, 0], torch.sigmoid(scene.opacity_logits).detach().numpy(), rtol=1e-6)


@pytest.mark.slow
def test_find_splats_of_a_run_and_of_a_sweep(run, sweep):
    entries = find_splats(run)
    assert [(e.seed, e.method, e.settings) for e in entries] == [(0, "fsd", ""), (1, "fsd", "")]
    assert all(e.ply.is_file() for e in entries)
    entries = find_splats(sweep)
    assert sorted((e.method, e.seed) for e in entries) == [("fsd", 0), ("fsd", 1), ("sds", 0), ("sds", 1)]
    assert {e.settings for e in entries} == {""}  # only the method is swept
    assert all(e.ply == e.run_dir / f"seed_{e.seed}" / "gaussians.ply" for e in entries)


@pytest.mark.parametrize("runs, message", [
    ([{"index": 0, "params": {}}], "runs[0] has no str 'folder'"),
    ([{"folder": "../up", "index": 0, "params": {}}], "is not a folder name"),
])
def test_view_of_a_malformed_sweep_is_one_error_line(tmp_path, runs, message):
    (tmp_path / "sweep.json").write_text(json.dumps({"command": "gen-3d", "swept": ["method"], "runs": runs}))
    res = CliRunner().invoke(app, ["view", str(tmp_path)])
    assert res.exit_code == 2 and message in res.stderr, res.output
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.output


def test_view_refuses_a_done_json_whose_output_leaves_the_run(tmp_path):
    (tmp_path / "sweep.json").write_text(json.dumps(
        {"command": "gen-3d", "swept": [], "runs": [{"folder": "r0", "index": 0, "params": {}}]}))
    (tmp_path / "r0").mkdir()
    (tmp_path / "r0" / "done.json").write_text(json.dumps({"output": "../.."}))
    with pytest.raises(InputError, match="'output' should name a folder inside the run"):
        find_splats(tmp_path)


@pytest.mark.slow
def test_viewer_shows_fsd_beside_sds_along_the_cameras_right_vector(sweep):
    viewer = Viewer(find_splats(sweep), port=0)
    try:
        assert viewer.url.startswith("http://127.0.0.1:")  # localhost unless told otherwise
        with urllib.request.urlopen(viewer.url, timeout=10) as r:
            assert r.status == 200 and b"<html" in r.read(2000).lower()
        shown = viewer.show(1, SIDE_BY_SIDE)
        assert [(e.seed, e.method) for e in shown] == [(1, "fsd"), (1, "sds")]
        splats = [n for n in viewer._nodes if "/splats/" in n.name]
        pos = np.stack([np.asarray(n.position) for n in splats])  # [2, 3]
        right = viewer.start.viewmat[0, :3].double().numpy()
        np.testing.assert_allclose(pos.sum(0), 0.0, atol=1e-9)  # centred on the origin
        d = pos[1] - pos[0]
        assert np.dot(d, right) > 0.5 and np.allclose(d, np.dot(d, right) * right)  # left to right on screen
        shown = viewer.show(0, "sds")
        assert [(e.seed, e.method) for e in shown] == [(0, "sds")]
        assert len([n for n in viewer._nodes if "/splats/" in n.name]) == 1
    finally:
        viewer.stop()


@pytest.mark.slow
def test_fsd_view_prints_one_line_with_the_url(run):
    proc = subprocess.Popen([sys.executable, "-m", "cli", "view", str(run), "--port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"viewing 2 splat(s) of {run} at http://127.0.0.1:"), line
        url = line.split(" at ", 1)[1].split()[0]
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert out == ""  # nothing else on stdout: viser's own banner is kept off it


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "nothing", "is not a folder"),
    (lambda p: p, "holds no seed_*/gaussians.ply"),
])
def test_view_bad_folder_is_one_error_line(tmp_path, make, message):
    res = CliRunner().invoke(app, ["view", str(make(tmp_path))])
    assert res.exit_code == 2 and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_view_on_an_address_of_another_machine_is_one_error_line(run):
    res = CliRunner().invoke(app, ["view", str(run), "--host", "192.0.2.1"])  # TEST-NET-1: never this machine
    assert res.exit_code == 2 and "cannot listen on --host '192.0.2.1'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
