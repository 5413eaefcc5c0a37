"""`fsd table1`: Table 1 from finished compare-2d and gen-3d batch runs."""
import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


def test_table1_from_batch_runs(tmp_path):
    s2 = tmp_path / "t2.yaml"
    s2.write_text("command: compare-2d\nparams:\n  prompt: [cat, brick]\n  seeds: '0-3'\n  methods: 'ddim,fsd,sds'\n"
                  "  steps: 8\n")
    s3 = tmp_path / "t3.yaml"
    s3.write_text("command: gen-3d\nparams:\n  method: [sds, fsd]\n  prompt: mushroom\n  seeds: '0-3'\n  steps: 2\n"
                  "  resolution: 16\n  num_gaussians: 60\n")
    for s in (s2, s3):
        res = runner.invoke(app, ["batch", str(s), "--out", str(tmp_path / s.stem), "--no-gather"])
        assert res.exit_code == 0, res.output
    out = tmp_path / "table"
    res = runner.invoke(app, ["table1", str(tmp_path / "t2"), str(tmp_path / "t3"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    md = (out / "table1.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| 2D") or line.startswith("| 3D")]
    assert [r.split("|")[1:3] for r in rows] == [[" 2D ", " ddim "], [" 2D ", " fsd "], [" 2D ", " sds "],
                                                  [" 3D ", " fsd "], [" 3D ", " sds "]]
    ddim = rows[0].split("|")
    assert ddim[3].strip() == "2" and float(ddim[5]) == pytest.approx(100.0)  # DDIM returns exact set images
    assert "CLIP, IS and CROSS-FID skipped" in res.stdout and "--clip-model" in res.stdout
    assert (out / "table1.csv").read_text().splitlines()[0].startswith("space,method,prompts,coverage")
    res = runner.invoke(app, ["table1", str(tmp_path / "t2"), "--clip-model", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "not a folder" in res.stderr
    res = runner.invoke(app, ["table1", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "not a folder" in res.stderr
