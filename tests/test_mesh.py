"""Mesh export (fsd3d.mesh, `fsd export-mesh`, `gen-3d --mesh`): density, silhouette IoU on the references, files."""
import json
import math

import fast_simplification
import numpy as np
import pytest
import torch
import trimesh
from typer.testing import CliRunner

from cli import app
from fsd3d import mesh as meshing
from fsd3d.gaussians import GaussianScene
from fsd3d.gen3d import Gen3DConfig
from fsd3d.mesh import MESH_EVAL_PX, density_grid, extract_mesh, mesh_silhouette_iou, simplify_mesh, write_mesh
from fsd3d.ply import save_ply
from fsd3d.references import REFERENCE_PROMPTS, reference_scene
from fsd3d.render import quat_to_rotmat

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")
GRID = 48  # a modest grid keeps the test fast; the default 96 only sharpens the surface
NAMES = [(p, v) for p in REFERENCE_PROMPTS for v in REFERENCE_PROMPTS[p]]


def _random_scene(n=5, seed=0) -> GaussianScene:
    g = torch.Generator().manual_seed(seed)
    return GaussianScene(0.3 * torch.randn(n, 3, generator=g), math.log(0.08) + 0.5 * torch.randn(n, 3, generator=g),
                         torch.randn(n, 4, generator=g), torch.randn(n, generator=g), torch.randn(n, 3, generator=g))


def test_density_grid_equals_the_dense_sum_in_any_chunking(monkeypatch):
    scene = _random_scene()
    bounds = torch.tensor([[-0.8, -0.7, -0.9], [0.9, 0.8, 0.7]], dtype=torch.float64)
    R = 20
    axes = [torch.linspace(float(bounds[0, a]), float(bounds[1, a]), R, dtype=torch.float64) for a in range(3)]
    x = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)  # [P, 3]
    with torch.no_grad():
        rot = quat_to_rotmat(scene.quats.double())  # [N, 3, 3]
        local = torch.einsum("pnj,nja->pna", x[:, None] - scene.means.double(), rot) / scene.scales().double()
        maha = (local**2).sum(-1)  # [P, N]
        w = scene.opacities().double() * torch.exp(-0.5 * maha) * (maha <= meshing.CUTOFF_SIGMA**2)
    want = w.sum(-1).reshape(R, R, R)
    got = density_grid(scene, R, bounds)
    assert got.shape == (R, R, R)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    monkeypatch.setattr(meshing, "CHUNK_ELEMENTS", 50)  # one Gaussian per chunk, boxes clipped at the grid
    torch.testing.assert_close(density_grid(scene, R, bounds), got, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("prompt, variant", NAMES)
def test_mesh_silhouette_matches_the_splat_on_every_reference(prompt, variant):
    scene = reference_scene(prompt, variant)
    mesh = extract_mesh(scene, GRID)
    iou = mesh_silhouette_iou(mesh, scene, Gen3DConfig().eval_cameras(MESH_EVAL_PX))
    assert len(iou["iou_per_view"]) == 8 and min(iou["iou_per_view"]) >= 0.9, iou
    assert mesh.is_watertight
    colors = mesh.visual.vertex_colors  # [V, 4] uint8, from the Gaussians: not all one grey
    assert colors.shape == (len(mesh.vertices), 4) and np.ptp(colors[:, :3].astype(int), axis=0).max() > 50


def test_glb_and_obj_load_back_with_counts_and_colours(tmp_path):
    mesh = extract_mesh(reference_scene("mushroom", "red"), 32)
    write_mesh(tmp_path / "mesh.glb", mesh)
    write_mesh(tmp_path / "mesh.obj", mesh)
    for name in ("mesh.glb", "mesh.obj"):
        back = trimesh.load(tmp_path / name, force="mesh", process=False)
        assert (len(back.vertices), len(back.faces)) == (len(mesh.vertices), len(mesh.faces)), name
        np.testing.assert_allclose(back.vertices, mesh.vertices, atol=1e-5)
        np.testing.assert_array_equal(back.visual.vertex_colors, mesh.visual.vertex_colors)
    assert {p.name for p in tmp_path.iterdir()} == {"mesh.glb", "mesh.obj"}  # no temporaries left


def test_export_mesh_cli_writes_the_files(tmp_path):
    seed = tmp_path / "run" / "seed_0"
    seed.mkdir(parents=True)
    save_ply(seed / "gaussians.ply", reference_scene("cactus", "barrel"))
    res = runner.invoke(app, ["export-mesh", str(seed), "--grid", str(GRID)])
    assert res.exit_code == 0, res.output
    assert "watertight True" in res.output and len(res.output.strip().splitlines()) == 1
    m = json.loads((seed / "mesh.json").read_text())
    assert m["watertight"] and m["mean_iou"] >= 0.9 and len(m["iou_per_view"]) == 8 and m["eval_px"] == MESH_EVAL_PX
    back = trimesh.load(seed / "mesh.glb", force="mesh", process=False)
    assert (len(back.vertices), len(back.faces)) == (m["vertices"], m["faces"])
    assert {p.name for p in seed.iterdir()} == {"gaussians.ply", "mesh.glb", "mesh.obj", "mesh.json"}


@pytest.mark.parametrize("make, needle", [
    (lambda d: d / "missing", "is not a folder"),
    (lambda d: d, "holds no gaussians.ply"),
])
def test_export_mesh_cli_bad_path(tmp_path, make, needle):
    path = make(tmp_path)
    res = runner.invoke(app, ["export-mesh", str(path)])
    assert res.exit_code == 2, res.output
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert list(tmp_path.iterdir()) == []


def test_gen_3d_mesh_writes_glb_and_metrics(tmp_path):
    """Started from a reference object (2 steps barely move it), the per-seed mesh is a real surface whose
    silhouette matches the splat, and metrics.json reports the same IoU as the written mesh gives."""
    init = tmp_path / "mushroom.ply"
    save_ply(init, reference_scene("mushroom", "red"))
    out = tmp_path / "run"
    res = runner.invoke(app, ["gen-3d", "--resolution", "16", "--init", str(init), "--steps", "2", "--seeds", "0",
                              "--densify", "none", "--no-progress", "--mesh", "--out", str(out)])
    assert res.exit_code == 0, res.output
    d = out / "seed_0"
    mesh = trimesh.load(d / "mesh.glb", force="mesh")
    assert len(mesh.faces) > 1000
    m = json.loads((d / "metrics.json").read_text())
    assert m["mesh_iou"] >= 0.9 and m["watertight"] is True
    from fsd3d.ply import load_ply

    iou = mesh_silhouette_iou(mesh, load_ply(d / "gaussians.ply"), Gen3DConfig().eval_cameras(MESH_EVAL_PX))
    assert iou["mean_iou"] == pytest.approx(m["mesh_iou"], abs=0.02)


def test_decimation_keeps_the_silhouette_the_surface_closed_and_the_colours():
    """Quadric decimation (simplify_mesh) to a tenth of the faces: at most max_faces faces, still watertight,
    the silhouette within 0.02 IoU of the full mesh's at every view, vertex colours still from the Gaussians."""
    scene = reference_scene("snowman", "red_scarf")
    cams = Gen3DConfig().eval_cameras(MESH_EVAL_PX)
    full = extract_mesh(scene, GRID, max_faces=None)
    target = len(full.faces) // 10
    small = extract_mesh(scene, GRID, max_faces=target)
    assert small.metadata["marching_cubes_faces"] == len(full.faces) and len(small.faces) <= target
    assert full.is_watertight and small.is_watertight
    a, b = mesh_silhouette_iou(full, scene, cams), mesh_silhouette_iou(small, scene, cams)
    assert min(b["iou_per_view"]) >= 0.9
    np.testing.assert_allclose(b["iou_per_view"], a["iou_per_view"], atol=0.02)
    colors = small.visual.vertex_colors
    assert colors.shape == (len(small.vertices), 4) and np.ptp(colors[:, :3].astype(int), axis=0).max() > 50
    assert simplify_mesh(full, len(full.faces)) is full  # nothing to remove: the mesh as it is


def test_decimation_that_would_open_a_closed_mesh_tries_gentler_then_keeps_it(monkeypatch):
    full = trimesh.creation.icosphere(subdivisions=3)  # 1280 faces, watertight
    opened = trimesh.Trimesh(full.vertices, full.faces[:-1], process=False)  # one face short: not watertight
    calls = []

    def fake(points, triangles, target_count, agg):
        calls.append(agg)
        return np.asarray(opened.vertices), np.asarray(opened.faces)

    monkeypatch.setattr(fast_simplification, "simplify", fake)
    assert simplify_mesh(full, 100) is full and calls == list(meshing.DECIMATION_AGGRESSION)
    calls.clear()
    small = simplify_mesh(opened, 100)  # open already: the first decimation is kept, no retry
    assert len(small.faces) == len(opened.faces) and calls == [meshing.DECIMATION_AGGRESSION[0]]
