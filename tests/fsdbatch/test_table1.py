"""`fsd table1`: Table 1 from finished compare-2d and gen-3d batch runs."""
import pytest
import torch
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


def test_table1_from_batch_runs(tmp_path, monkeypatch):
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
    # the backbone columns, with stand-in networks (real weights cannot be had here)
    from fsdbatch import table1 as t1

    class Feature(torch.nn.Module):
        def forward(self, x):  # uint8 [N, 3, H, W] -> [N, 4]
            return torch.stack([x.float().mean((1, 2, 3)), x.float().std((1, 2, 3)),
                                x[:, 0].float().mean((1, 2)), x[:, 2].float().mean((1, 2))], 1) / 255

    calls = []
    monkeypatch.setattr(t1.bm, "missing", lambda c, i: [])
    monkeypatch.setattr(t1.bm, "inception_feature", lambda w, kind: Feature())
    monkeypatch.setattr(t1.bm, "clip_score", lambda ims, prompts, m: calls.append((len(ims), prompts[0])) or 25.0)
    rows, note = t1.table1([tmp_path / "t2", tmp_path / "t3"], "clip", "weights")
    assert note is None
    by = {(r["space"], r["method"]): r for r in rows}
    assert all(r["clip"] == 25.0 and r["inception_score"] >= 1.0 for r in rows)
    assert by[("2D", "fsd")]["cross_fid"] is None  # one image per seed: no CROSS-FID in 2D
    assert by[("3D", "fsd")]["cross_fid"] is not None and by[("3D", "fsd")]["cross_fid"] >= 0
    assert (4 * 8, "mushroom") in calls and (4, "cat") in calls  # 3D: 4 seeds x 8 views; 2D: 4 seeds
    monkeypatch.undo()
    res = runner.invoke(app, ["table1", str(tmp_path / "t3"), str(tmp_path / "t3")])
    assert res.exit_code == 2 and "two runs give 3D" in res.stderr
    res = runner.invoke(app, ["table1", str(tmp_path / "t2"), "--clip-model", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "not a folder" in res.stderr
    res = runner.invoke(app, ["table1", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "not a folder" in res.stderr


def test_exact_copies_stored_as_inf_count_as_the_cap(tmp_path):
    """metrics.json stores PSNR = inf (DDIM on the exact prior returns set images) as the string "inf"."""
    import json

    from fsdbatch.table1 import PSNR_CAP_DB, collect

    run = tmp_path / "run-x"
    (run / "result").mkdir(parents=True)
    (run / "done.json").write_text("{}")
    (tmp_path / "sweep.json").write_text(json.dumps({"command": "compare-2d", "runs": [{"folder": "run-x"}]}))
    (run / "result" / "run.json").write_text(json.dumps({"command": "compare-2d", "config": {"prompt": "cat"}}))
    per_seed = [{"seed": 0, "nearest_psnr": "inf"}, {"seed": 1, "nearest_psnr": 40.0}]
    (run / "result" / "metrics.json").write_text(
        json.dumps({"methods": {"ddim": {"per_seed": per_seed, "modes_reached": 2, "diversity": 0.5}}}))
    result = collect([tmp_path])[("2D", "ddim")]["cat"]
    assert result.psnr == (PSNR_CAP_DB + 40.0) / 2 and result.coverage == 1.0
