"""The figures shared by the notebooks (fsd2d.figures' notebook helpers, fsd3d.figures3d) on a tiny run."""
from __future__ import annotations

import pytest


def test_markdown_table():
    from fsd2d.figures import markdown_table

    assert markdown_table(["a", "b"], [[1.0, "x"], [2, 0.12345]], digits=2) == (
        "| a | b |\n|---|---|\n| 1.00 | x |\n| 2 | 0.12 |")


def test_figures3d_show_a_run(monkeypatch):
    """The 3D figures and tables of one tiny run: one image per figure, the tables' numbers are the run's own."""
    import IPython.display

    from fsd2d.errors import InputError
    from fsd3d import Gen3DConfig, Train3DConfig, figures3d, load_scene_prior, run_3d

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append(obj))
    config = Gen3DConfig(prompt="mushroom", seeds=(0, 1), resolution=16, eval_views=4, train=Train3DConfig(steps=1))
    prior = load_scene_prior(config)
    runs = {"fsd": run_3d(config, prior)}
    run = runs["fsd"]
    for show in (lambda: figures3d.show_views(runs), lambda: figures3d.show_channels(runs, 0),
                 lambda: figures3d.show_references(prior, run), lambda: figures3d.show_strip(runs, views=(0, 1))):
        shown.clear()
        show()
        assert [type(o).__name__ for o in shown] == ["Image"] and shown[0].data.startswith(b"\x89PNG")
    assert figures3d.view_labels(run) == ["az 0", "az 90", "az 180", "az 270"]
    row = figures3d.summary_row(run)
    assert row["diversity"] == run.summary["diversity"]
    assert row["reached"] == f"{run.summary['references_reached']} of 2 seeds"
    assert row["psnr"] == pytest.approx(sum(m["majority_psnr"] for m in run.per_seed.values()) / 2)
    assert figures3d.seed_rows(runs) == [["fsd", s, m["majority"], m["majority_psnr"], m["agreement"], m["holes"]]
                                         for s, m in run.per_seed.items()]
    shown.clear()
    figures3d.show_summary_table(runs, columns=("reached", "diversity"))
    assert shown[0]["text/markdown"].splitlines()[0] == "| method | references reached | diversity (1 - SSIM) |"
    with pytest.raises(InputError, match="unknown columns"):
        figures3d.show_summary_table(runs, columns=("nope",))
