"""Every notebook in notebooks/ runs top to bottom (tiny settings: FSD_NOTEBOOK_SMALL=1) and draws inline.

The notebooks are executed with nbclient through notebooks/run_all.py (the same code as
`python notebooks/run_all.py --small`), with a kernel spec registered on the fly for this interpreter
(a fresh `pip install -e ".[test]"` need not have a `python3` kernel spec), in a temporary working directory.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
CELL_TIMEOUT_S = 600


def _load_runner():
    spec = importlib.util.spec_from_file_location("fsd_notebooks_run_all", NOTEBOOKS / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_all = _load_runner()


@pytest.fixture(scope="module")
def kernel_name():
    with run_all.python_kernel() as name:
        yield name


def test_every_figure_has_a_notebook():
    names = {p.stem for p in PATHS}
    assert {"fig3_same_seed", "fig4_xgt_consistency", "fig5_shuffled_noise", "fig6_constant_vs_worldmap",
            "fig7_sds_vs_fsd_3d", "fig8_beta", "theta_ablation", "table1"} <= names


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs before committing"
    assert 'os.environ.get("FSD_NOTEBOOK_SMALL") == "1"' in code[0].source, "first code cell must define SMALL"
    assert nb.cells[0].cell_type == "markdown", "start with what the figure shows"


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_runs(path, kernel_name, tmp_path):
    nb = nbformat.read(path, as_version=4)
    run_all.execute(nb, kernel_name, tmp_path, small=True, timeout=CELL_TIMEOUT_S)  # raises if a cell raises
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no inline figure"
    assert not list(tmp_path.iterdir()), "notebooks must not write into the working directory"


PRIVATE_PIPELINE = ("fsd3d.train import", "fsd3d.gen3d import", "initial_state", "train_seeds", "resolve(")


def code_of(path: Path) -> str:
    return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_on_the_public_api(path):
    """A notebook builds configs and calls run_3d (3D) / the fsd2d API; it carries no copy of the pipeline."""
    code = code_of(path)
    assert not [p for p in PRIVATE_PIPELINE if p in code], "use fsd3d.run_3d, not the loop's pieces"


def test_no_helper_copied_between_notebooks():
    """A helper two notebooks need lives in one figures module (fsd2d.figures, fsd3d.figures3d), not in both."""
    import re

    where: dict[str, list[str]] = {}
    for path in PATHS:
        for name in set(re.findall(r"^\s*def (\w+)\(", code_of(path), flags=re.M)):
            where.setdefault(name, []).append(path.stem)
    assert {n: p for n, p in where.items() if len(p) > 1} == {}
