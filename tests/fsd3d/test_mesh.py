"""Mesh export (fsd3d.mesh, `fsd export-mesh`, `gen-3d --mesh`): density, silhouette IoU on the references, files."""
import json
import math
import re

import fast_simplification
import numpy as np
import pytest
import torch
import trimesh
from typer.testing import CliRunner

from cli import app
from fsd2d.errors import InputError
from fsd3d import mesh as meshing
from fsd2d.io import run_record, write_json
from fsd3d.cameras import CameraRanges, orbit_camera
from fsd3d.config import Gen3DConfig
from fsd3d.config import Train3DConfig
from fsd3d.gaussians import GaussianScene
from fsd3d.mesh import (
    MESH_EVAL_PX,
    WORLD_TO_GLTF,
    EmptyMeshError,
    density_grid,
    extract_mesh,
    mesh_silhouette_iou,
    simplify_mesh,
    write_mesh,
)
from fsd3d.ply import save_ply
from fsd3d.references import REFERENCE_PROMPTS, reference_scene
from fsd3d.renderer import quat_to_rotmat

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
    iou = mesh_silhouette_iou(mesh, scene, CameraRanges().evaluation_cameras(MESH_EVAL_PX))
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
        np.testing.assert_allclose(back.vertices, mesh.vertices @ WORLD_TO_GLTF[:3, :3].T, atol=1e-5)  # glTF frame
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
    mesh.apply_transform(WORLD_TO_GLTF.T)  # back to the world frame of the cameras (a rotation: inverse = transpose)
    assert len(mesh.faces) > 1000
    m = json.loads((d / "metrics.json").read_text())
    assert m["mesh_iou"] >= 0.9 and m["watertight"] is True
    from fsd3d.ply import load_ply

    iou = mesh_silhouette_iou(mesh, load_ply(d / "gaussians.ply"), CameraRanges().evaluation_cameras(MESH_EVAL_PX))
    assert iou["mean_iou"] == pytest.approx(m["mesh_iou"], abs=0.02)


def test_decimation_keeps_the_silhouette_the_surface_closed_and_the_colours():
    """Quadric decimation (simplify_mesh) to a tenth of the faces: at most max_faces faces, still watertight,
    the silhouette within 0.02 IoU of the full mesh's at every view, vertex colours still from the Gaussians."""
    scene = reference_scene("snowman", "red_scarf")
    cams = CameraRanges().evaluation_cameras(MESH_EVAL_PX)
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



def _fake_decimation(monkeypatch, results: dict):
    """fast_simplification.simplify replaced: aggression -> the mesh it returns; returns the aggressions asked."""
    calls = []

    def fake(points, triangles, target_count, agg):
        calls.append(agg)
        return np.asarray(results[agg].vertices), np.asarray(results[agg].faces)

    monkeypatch.setattr(fast_simplification, "simplify", fake)
    return calls


def test_decimation_keeps_the_cap_and_prefers_a_closed_result(monkeypatch):
    full = trimesh.creation.icosphere(subdivisions=3)  # 1280 faces, watertight
    closed = trimesh.creation.icosphere(subdivisions=1)  # 80 faces, watertight
    opened = trimesh.Trimesh(closed.vertices, closed.faces[:-1], process=False)  # 79 faces: not watertight
    too_many = trimesh.Trimesh(full.vertices, full.faces[:-1], process=False)  # 1279 faces: above any cap here
    first, second, third, last = meshing.DECIMATION_AGGRESSION
    calls = _fake_decimation(monkeypatch, {first: opened, second: too_many, third: closed, last: opened})
    small = simplify_mesh(full, 100)
    assert len(small.faces) == 80 and small.is_watertight  # the first closed result within the cap
    assert calls[0] == first and calls[-1] == third and second in calls and last not in calls
    calls = _fake_decimation(monkeypatch, {first: too_many, second: opened, third: too_many, last: opened})
    small = simplify_mesh(full, 100)  # none closed: the first within the cap, open (the cap is a promise)
    assert len(small.faces) == 79 and not small.is_watertight
    calls = _fake_decimation(monkeypatch, {a: too_many for a in meshing.DECIMATION_AGGRESSION})
    with pytest.raises(InputError, match="stops at 1279 faces, above the cap of 100"):
        simplify_mesh(full, 100)  # never more faces than asked: an error rather than the mesh over the cap


def _pieces_scene(n=200, seed=1) -> GaussianScene:
    """200 random Gaussians: a marching-cubes surface of 4294 faces in 14 watertight pieces (grid 32), which no
    aggression decimates below ~3850 faces while keeping it watertight (a generated scene's floaters and thin
    parts do the same: `export-mesh --max-faces` was ignored on such scenes)."""
    g = torch.Generator().manual_seed(seed)
    return GaussianScene(0.3 * torch.randn(n, 3, generator=g), math.log(0.06) + 0.6 * torch.randn(n, 3, generator=g),
                         torch.randn(n, 4, generator=g), 2 + torch.randn(n, generator=g), torch.randn(n, 3, generator=g))


@pytest.mark.parametrize("scene", ["mushroom", "pieces"])
def test_decimation_honours_every_cap_on_a_real_surface(scene):
    scene = reference_scene("mushroom", "red") if scene == "mushroom" else _pieces_scene()
    full = extract_mesh(scene, 32, max_faces=None)
    assert 3000 < len(full.faces) < 8000 and full.is_watertight
    for cap in (2000, 1000, 300, 100, 30):
        small = simplify_mesh(full, cap)
        assert cap // 2 <= len(small.faces) <= cap, (cap, len(small.faces))
    if scene == "mushroom":  # here some aggression keeps the surface closed: that one is taken
        assert simplify_mesh(full, 2000).is_watertight


def test_files_are_in_gltf_frame_as_the_cameras_define_it():
    """The azimuth-0 camera (the object's front, fsd3d.cameras) sees what a glTF viewer's default camera sees:
    its right -> +X, its up -> +Y (glTF's up), its direction towards the viewer -> +Z; a proper rotation."""
    cam = orbit_camera(0.0, 0.0, 2.0, 40.0, 64, 64, dtype=torch.float64)
    rows = cam.viewmat[:3, :3].numpy()  # OpenCV: rows are the camera's x (right), y (down), z (forward) in world
    right, up, towards_viewer = rows[0], -rows[1], -rows[2]
    rot = WORLD_TO_GLTF[:3, :3]
    np.testing.assert_allclose(rot @ right, [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(rot @ up, [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(rot @ towards_viewer, [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    np.testing.assert_array_equal(WORLD_TO_GLTF[3], [0, 0, 0, 1])
    top = orbit_camera(90.0, 0.0, 2.0, 40.0, 64, 64, dtype=torch.float64).position.numpy()  # straight above
    np.testing.assert_allclose(rot @ (top / np.linalg.norm(top)), [0, 1, 0], atol=1e-12)


def _figure() -> GaussianScene:
    """A tall stack of Gaussians along world z (up) with a nose high at the front (+x, towards the azimuth-0
    camera) and an arm low on the right of that camera's image (+y)."""
    stack = [(0.0, 0.0, z) for z in np.linspace(-0.45, 0.45, 10)]
    means = torch.tensor(stack + [(0.2, 0.0, 0.3), (0.0, 0.2, -0.15)])  # [12, 3]
    scales = torch.tensor([0.07] * 10 + [0.05, 0.05]).log()[:, None].expand(-1, 3)
    quats = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(12, 4)
    return GaussianScene(means, scales, quats, torch.full((12,), 3.0), torch.zeros(12, 3))


@pytest.mark.parametrize("name", ["mesh.glb", "mesh.obj"])
def test_exported_figure_stands_up_facing_plus_z(tmp_path, name):
    """Loaded as any tool loads it: tallest along +Y; the nose (high, front) at +Z and +Y; the arm (low, the
    viewer's right) at +X and -Y; faces wound outwards (positive volume, the top face's normal up)."""
    seed = tmp_path / "run" / "seed_0"
    seed.mkdir(parents=True)
    save_ply(seed / "gaussians.ply", _figure())
    res = runner.invoke(app, ["export-mesh", str(seed), "--grid", "48"])
    assert res.exit_code == 0, res.output
    back = trimesh.load(seed / name, force="mesh", process=False)
    v = np.asarray(back.vertices)
    extent = np.ptp(v, axis=0)
    assert np.argmax(extent) == 1 and extent[1] > 2 * max(extent[0], extent[2]), extent
    nose, arm = v[np.argmax(v[:, 2])], v[np.argmax(v[:, 0])]  # the farthest points towards +Z and towards +X
    assert nose[2] > 0.25 and nose[1] > 0.2 and abs(nose[0]) < 0.05, nose
    assert arm[0] > 0.25 and arm[1] < -0.1 and abs(arm[2]) < 0.05, arm
    assert -v[:, 2].min() < 0.15 and -v[:, 0].min() < 0.15  # nothing sticks out at the back or on the left
    assert back.is_watertight and back.volume > 0  # counter-clockwise seen from outside, as glTF's front faces
    top = np.argmax(back.triangles_center[:, 1])
    assert back.face_normals[top][1] > 0.9


def _good_export(tmp_path):
    seed = tmp_path / "run" / "seed_0"
    seed.mkdir(parents=True)
    write_json(seed.parent / "run.json", run_record("gen-3d", Gen3DConfig(), {  # a gen-3d run: its mesh.* are its own
        "train_resolved": Train3DConfig(cameras=CameraRanges())}))
    save_ply(seed / "gaussians.ply", reference_scene("cactus", "barrel"))
    res = runner.invoke(app, ["export-mesh", str(seed), "--grid", "32"])
    assert res.exit_code == 0, res.output
    return seed, {p.name: p.read_bytes() for p in seed.iterdir()}


@pytest.mark.parametrize("args, needle", [
    (["--level", "50"], r"reaches at most [0-9.]+, never the level 50; give a lower level \(--level, below"),
    (["--grid", "3"], r"on the 3\^3 grid .*give a finer grid \(--grid"),
])
def test_export_mesh_of_an_empty_surface_is_one_error_and_overwrites_nothing(tmp_path, args, needle):
    seed, before = _good_export(tmp_path)
    res = runner.invoke(app, ["export-mesh", str(seed), *args])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no surface to export"), res.stderr
    assert re.search(needle, lines[0]), lines[0]
    assert {p.name: p.read_bytes() for p in seed.iterdir()} == before  # byte-identical, no temporaries


def test_an_empty_surface_raises_before_writing(tmp_path):
    with pytest.raises(EmptyMeshError, match="no surface to export"):
        meshing.export_mesh(tmp_path, reference_scene("cactus", "barrel"), CameraRanges().evaluation_cameras(32),
                            resolution=32, level=1e6)
    assert list(tmp_path.iterdir()) == []


def test_an_error_while_writing_the_files_leaves_the_previous_ones(tmp_path, monkeypatch):
    """Every file is encoded before the first replaces its predecessor: an OBJ that fails to encode leaves the
    previous mesh.glb (which encoded fine), mesh.obj and mesh.json as they were."""
    seed, before = _good_export(tmp_path)
    export = trimesh.Trimesh.export

    def failing(self, file_obj=None, file_type=None, **kwargs):
        if file_type == "obj":
            raise OSError("disk full")
        return export(self, file_obj, file_type, **kwargs)

    monkeypatch.setattr(trimesh.Trimesh, "export", failing)
    res = runner.invoke(app, ["export-mesh", str(seed), "--grid", "24"])  # a different mesh than before
    assert res.exit_code != 0 and isinstance(res.exception, OSError)
    assert {p.name: p.read_bytes() for p in seed.iterdir()} == before


def test_gen_3d_mesh_of_an_empty_surface_warns_and_records_no_mesh(tmp_path):
    """A scene too faint for the level: the run completes; the seed's metrics say `mesh: null` and why, one
    `warning:` line says so, and no mesh.glb is written."""
    faint = reference_scene("mushroom", "red")
    with torch.no_grad():
        faint.opacity_logits.fill_(-6.0)  # o = 0.0025 each: the density stays far below the level 0.3
    init = tmp_path / "faint.ply"
    save_ply(init, faint)
    out = tmp_path / "run"
    res = runner.invoke(app, ["gen-3d", "--resolution", "16", "--init", str(init), "--steps", "2", "--seeds", "0",
                              "--densify", "none", "--no-progress", "--mesh", "--out", str(out)])
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "no surface to export" in warnings[0], res.stderr
    m = json.loads((out / "seed_0" / "metrics.json").read_text())
    assert m["mesh"] is None and "no surface to export" in m["mesh_error"]
    assert not (out / "seed_0" / "mesh.glb").exists()
