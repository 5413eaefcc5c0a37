"""Tiny gen-3d runs and sweeps for the report / viewer / browser tests, made with the real CLI.

The scenes start from an embedded reference (`--init`, the red mushroom) and take 1 step, so every seed is a
clearly visible object in a few seconds; the sweep runs FSD and SDS on seeds 0-1.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from fsd3d.ply import save_ply
from fsd3d.references import reference_scene
from numerics import TEST_THREADS

REFERENCE = ("mushroom", "red")


def reference_ply(folder: Path) -> Path:
    path = folder / "mushroom_red.ply"
    if not path.exists():
        save_ply(path, reference_scene(*REFERENCE))
    return path


def make_run(folder: Path, mesh: bool = False) -> Path:
    """A gen-3d run folder with seed_0 and seed_1 (turntable.mp4, views.png, gaussians.ply; mesh.glb with mesh)."""
    out = folder / "run"
    args = ["gen-3d", "--init", str(reference_ply(folder)), "--steps", "1", "--seeds", "0-1", "--out", str(out),
            "--no-progress"] + (["--mesh"] if mesh else [])
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return out


def make_sweep(folder: Path) -> Path:
    """A `fsd batch` sweep folder: gen-3d with method [fsd, sds], seeds 0-1 each (gathered: report.html too)."""
    spec = folder / "sweep.yaml"
    spec.write_text(f"command: gen-3d\nparams:\n  init: {reference_ply(folder)}\n  steps: 1\n  seeds: \"0-1\"\n"
                    "  method: [fsd, sds]\n")
    out = folder / "sweep"
    res = CliRunner().invoke(app, ["batch", str(spec), "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


# Fixtures (a pytest plugin of conftest.py): each test module that asks for `run` or `sweep` gets its own,
# made once per module with one thread; a module's own fixture of the same name takes precedence.
@contextlib.contextmanager
def single_thread():
    """Tiny tensors run faster single-threaded, and immune to other processes on a 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A 2-seed gen-3d run folder with meshes (`make_run`)."""
    with single_thread():
        return make_run(tmp_path_factory.mktemp("tiny_run"), mesh=True)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A gen-3d sweep folder, FSD and SDS on seeds 0-1 (`make_sweep`)."""
    with single_thread():
        return make_sweep(tmp_path_factory.mktemp("tiny_sweep"))
