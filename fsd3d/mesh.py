"""A coloured triangle mesh from a Gaussian scene, as DreamGaussian does (Tang et al. 2023, Sec. 3.3).

Steps:
    1. Density on a grid (`density_grid`): d(x) = sum_i o_i exp(-0.5 (x - mu_i)^T Sigma_i^-1 (x - mu_i)),
       Sigma_i = R_i S_i^2 R_i^T (fsd3d.renderer's step 1), each Gaussian summed over the voxels of its cutoff
       ellipsoid (Mahalanobis distance <= CUTOFF_SIGMA); Gaussians are processed in chunks of at most CHUNK_ELEMENTS
       (Gaussian, voxel) pairs, so memory stays bounded whatever the grid and the scene.
    2. Surface: marching cubes (skimage, Lewiner) at `level` on that grid, its faces wound counter-clockwise seen
       from outside (outward normals, positive volume: glTF's front faces; viewers cull the others).
    2b. Simplification (`simplify_mesh`): quadric edge-collapse decimation (Garland & Heckbert 1997, by the
       fast-simplification library) down to at most `max_faces` faces, always; watertight when the mesh was and
       some aggression keeps it so (a thin part collapsed to an edge shared by 4 faces opens it otherwise).
    3. Vertex colours, at the (simplified) mesh's vertices: the density-weighted mean of the Gaussians' degree-0
       colours, sum_i w_i(x) c_i / d(x) (accumulated on the same grid, trilinearly interpolated at the vertices),
       clipped to [0, 1].
    4. Check (`mesh_silhouette_iou`): the mesh's silhouette from cameras (triangles rasterised at pixel centres)
       against the splat's opacity mask (render alpha > 0.5): IoU per view.
    5. Files (`write_mesh`, `export_mesh`): mesh.glb and mesh.obj in glTF's frame (below); a mesh with no face
       is an `EmptyMeshError` and nothing is written; each file replaces the previous one atomically.

Conventions are those of fsd3d.gaussians and fsd3d.cameras (world right-handed, +z up, object at the origin, its
front towards +x, the azimuth-0 camera; OpenCV world-to-camera viewmats, pixel (i, j) centred at (j + 0.5,
i + 0.5)). The grid is cell-vertex: grid[i, j, k] is the density at lo + (i, j, k) * spacing,
spacing = (hi - lo) / (R - 1), axes (x, y, z). Meshes in memory (`extract_mesh`) are in these world coordinates.

Files are in glTF 2.0's frame, right-handed, +Y up, the front towards +Z (a glTF viewer's default view):
(X, Y, Z) = (y, z, x), a rotation (WORLD_TO_GLTF; its inverse, the transpose, maps a loaded file back). So the
viewer's default front view shows what the azimuth-0 camera sees, world +z up and world +y to the right. The OBJ
(a format with no convention) holds the same coordinates: Blender's OBJ importer (forward -Z, up Y) and most tools
read it as Y-up too, and GLB and OBJ of one export load identically.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import trimesh

from fsd2d.errors import InputError, check_finite
from fsd2d.io import atomic_path
from fsd3d.cameras import Camera, stack_cameras
from fsd3d.gaussians import SH_C0, GaussianScene
from fsd3d.metrics3d import ALPHA_SOLID
from fsd3d.renderer import quat_to_rotmat, render_scene

__all__ = ["DEFAULT_GRID", "DEFAULT_LEVEL", "DEFAULT_MAX_FACES", "MESH_EVAL_PX", "WORLD_TO_GLTF", "EmptyMeshError",
           "density_grid", "export_mesh", "extract_mesh", "mesh_silhouette", "mesh_silhouette_iou", "scene_bounds",
           "simplify_mesh", "write_mesh"]

DEFAULT_GRID = 96  # voxels per axis
# Density level of the surface, chosen on the 9 reference objects (tests/fsd3d/test_mesh.py): at 0.3 the mesh's
# silhouette matches the splat's alpha > 0.5 mask at the 8 evaluation cameras (rendered at MESH_EVAL_PX) with
# IoU 0.977-0.989 on a 48^3 grid and 0.976-0.995 on 64^3 (0.94-0.976 at level 0.5); every mesh watertight.
DEFAULT_LEVEL = 0.3
# Image size of the silhouette check. At the 32 px of the embedded prior the objects are ~10 px wide and the
# renderer's 0.3 px^2 low-pass (EPS2D) dilates the splat's mask by about a pixel all round, a third of the
# object's area, whatever the geometry (IoU 0.70-0.80 at level 0.5, 0.81-0.90 at 0.05); at 128 px it does not.
MESH_EVAL_PX = 128
CUTOFF_SIGMA = 3.0  # a Gaussian adds nothing beyond Mahalanobis distance 3 from its mean (o e^-4.5 < 0.011 o)
CHUNK_ELEMENTS = 1 << 22  # (Gaussian, voxel) or (triangle, pixel) pairs per chunk: ~100 MB of temporaries
MAX_GRID = 512
# Faces kept by the decimation (step 2b). At the default 96^3 grid marching cubes gives 47k-89k faces on the 20
# reference objects; decimated to 20k every mesh stays watertight, the silhouette IoU (min over the 8 views)
# moves by at most 0.002 and a GLB shrinks from 0.95-1.79 MB to 0.40 MB. None: no decimation.
DEFAULT_MAX_FACES = 20_000
# fast-simplification's aggressiveness, tried in turn (each call repeated on its own result, at most
# DECIMATION_ROUNDS times, while it still removes faces and is above the cap). The first result within the cap that
# is watertight wins (on the 20 references at 20k faces, 3 keeps it on 19 and 2 on the last; 7, the library's
# default, opens 7 with a few edges shared by 4 faces; 1 stops short of the cap on some meshes); when none keeps a
# watertight mesh watertight (a generated scene's thin parts), the first result within the cap does: the cap is a
# promise, watertightness is reported. The library is called directly: trimesh's wrapper rebuilds the result with
# process=True, whose merging of nearby vertices opens the surface on most references.
DECIMATION_AGGRESSION = (3, 2, 1, 7)
DECIMATION_ROUNDS = 8
# Files are in glTF 2.0's frame (module docstring): (X, Y, Z) = (y, z, x), world +z up -> +Y up, the front (+x,
# the azimuth-0 camera) -> +Z. A cyclic permutation of the axes: a rotation (det +1), so windings and normals keep
# their sense.
WORLD_TO_GLTF = np.array([[0.0, 1.0, 0.0, 0.0],
                          [0.0, 0.0, 1.0, 0.0],
                          [1.0, 0.0, 0.0, 0.0],
                          [0.0, 0.0, 0.0, 1.0]])  # [4, 4] homogeneous: file = WORLD_TO_GLTF @ world
WORLD_TO_GLTF.setflags(write=False)


class EmptyMeshError(InputError):
    """The surface has no face (the density never crosses the level on the grid): nothing to export."""

def scene_bounds(scene: GaussianScene, pad_sigma: float = CUTOFF_SIGMA) -> torch.Tensor:
    """[2, 3] (lo, hi) corners of a box holding every Gaussian's centre +- pad_sigma of its largest std-dev."""
    with torch.no_grad():
        pad = pad_sigma * scene.scales().amax(dim=-1, keepdim=True)  # [N, 1]
        lo = (scene.means - pad).amin(dim=0)  # [3]
        hi = (scene.means + pad).amax(dim=0)  # [3]
    return torch.stack([lo, hi]).detach().cpu().double()


def _check_grid(resolution: int, bounds: torch.Tensor) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or not 2 <= resolution <= MAX_GRID:
        raise InputError(f"grid resolution must be an int in [2, {MAX_GRID}], got {resolution!r}")
    if tuple(bounds.shape) != (2, 3) or not torch.isfinite(bounds).all() or not (bounds[1] > bounds[0]).all():
        raise InputError(f"bounds must be finite [2, 3] (lo, hi) corners with hi > lo, got {bounds.tolist()}")


def _splat_grid(scene: GaussianScene, resolution: int, bounds: torch.Tensor, with_color: bool):
    """(density [R, R, R], colour sum [R, R, R, 3] or None): step 1 (and the numerator of step 3).

    Each Gaussian i is evaluated on the voxel box around its centre voxel c_i that holds its cutoff ellipsoid
    (half-extents CUTOFF_SIGMA sqrt(Sigma_aa) per axis a). With b_i = x(c_i) - mu_i and a voxel offset u (world
    units) the Mahalanobis distance is a quadratic in u,
        (b_i + u)^T P_i (b_i + u) = b_i^T P_i b_i + 2 (P_i b_i) . u + u^T P_i u,     P_i = Sigma_i^-1 = R S^-2 R^T,
    i.e. one product F_i . phi(u) of 10 numbers (phi = 1, u_x, u_y, u_z, u_x^2, u_y^2, u_z^2, 2 u_x u_y, 2 u_x u_z,
    2 u_y u_z): a chunk of G Gaussians and K offsets is one [G, 10] x [10, K] matrix product (float64, so the
    cutoff test maha <= CUTOFF_SIGMA^2 decides as the exact formula does)."""
    bounds = torch.as_tensor(bounds, dtype=torch.float64).cpu()
    _check_grid(resolution, bounds)
    R = resolution
    with torch.no_grad():
        device = scene.means.device
        mu = scene.means.detach().double()  # [N, 3]
        s = scene.scales().detach().double()  # [N, 3]
        rot = quat_to_rotmat(scene.quats.detach().double())  # [N, 3, 3], columns: the Gaussian's axes
        o = scene.opacities().detach().float()  # [N]
        rgb = torch.clamp_min(SH_C0 * scene.sh0.detach().float() + 0.5, 0.0)  # [N, 3] degree-0 colour
        lo = bounds[0].to(device)  # [3]
        spacing = ((bounds[1] - bounds[0]) / (R - 1)).to(device)  # [3]
        axes = rot / s[:, None, :]  # [N, 3, 3]: column j is axis j / s_j
        prec = axes @ axes.transpose(1, 2)  # [N, 3, 3] P = R S^-2 R^T
        std_axis = ((rot * s[:, None, :]) ** 2).sum(-1).sqrt()  # [N, 3] sqrt(Sigma_aa), Sigma = R S^2 R^T
        half = torch.ceil(CUTOFF_SIGMA * std_axis / spacing).clamp(max=R).long()  # [N, 3] half box per axis
        centre = torch.round((mu - lo) / spacing).long()  # [N, 3] centre voxel
        b = lo + centre.double() * spacing - mu  # [N, 3] b_i: the centre voxel's offset from the mean
        pb = (prec @ b[..., None])[..., 0]  # [N, 3]
        feats = torch.cat([(b * pb).sum(-1, keepdim=True), 2.0 * pb, prec.diagonal(dim1=1, dim2=2),
                           prec[:, 0, 1:2], prec[:, 0, 2:3], prec[:, 1, 2:3]], dim=-1)  # [N, 10] F_i
        centre_flat = (centre[:, 0] * R + centre[:, 1]) * R + centre[:, 2]  # [N]
        order = torch.argsort(half.amax(dim=-1), descending=True)  # a chunk's first cube holds all its boxes
        density = torch.zeros(R**3, device=device)  # flat [R^3]
        color = torch.zeros(R**3, 3, device=device) if with_color else None
        start = 0
        while start < len(order):
            g = max(1, CHUNK_ELEMENTS // (2 * int(half[order[start]].max()) + 1) ** 3)
            idx = order[start : start + g]  # [G]
            start += g
            k = half[idx].amax(dim=0)  # [3] the chunk's box: the largest half-extent per axis
            grids = [torch.arange(-int(k[a]), int(k[a]) + 1, device=device) for a in range(3)]
            off = torch.stack(torch.meshgrid(*grids, indexing="ij"), dim=-1).reshape(-1, 3)  # [K, 3] voxels
            u = off.double() * spacing  # [K, 3] world units
            phi = torch.cat([torch.ones_like(u[:, :1]), u, u**2, 2.0 * u[:, 0:1] * u[:, 1:2],
                             2.0 * u[:, 0:1] * u[:, 2:3], 2.0 * u[:, 1:2] * u[:, 2:3]], dim=-1)  # [K, 10]
            maha = feats[idx] @ phi.T  # [G, K]
            keep = maha <= CUTOFF_SIGMA**2  # [G, K] within the cutoff ellipsoid
            flat = centre_flat[idx, None] + ((off[:, 0] * R + off[:, 1]) * R + off[:, 2])[None]  # [G, K]
            cross = torch.nonzero(((centre[idx] < k) | (centre[idx] + k >= R)).any(dim=1)).flatten()  # [X] rows
            if len(cross):  # rows whose box crosses the grid's side: mask the voxels outside
                vox = [centre[idx[cross], a, None] + off[None, :, a] for a in range(3)]  # 3 x [X, K]
                inside = ((vox[0] >= 0) & (vox[0] < R) & (vox[1] >= 0) & (vox[1] < R) & (vox[2] >= 0)
                          & (vox[2] < R))
                keep[cross] &= inside
                flat[cross] = torch.where(inside, flat[cross], 0)  # outside the grid: weight 0 added at voxel 0
            flat = flat.reshape(-1)
            w = torch.where(keep, o[idx][:, None] * torch.exp(-0.5 * maha.float()), 0.0)  # [G, K]
            density.index_add_(0, flat, w.reshape(-1))
            if color is not None:
                color.index_add_(0, flat, (w[:, :, None] * rgb[idx][:, None, :]).reshape(-1, 3))
    density = density.reshape(R, R, R).cpu()
    return density, (None if color is None else color.reshape(R, R, R, 3).cpu())


def density_grid(scene: GaussianScene, resolution: int, bounds: torch.Tensor) -> torch.Tensor:
    """[R, R, R] float32 density sum_i o_i exp(-0.5 d^T Sigma_i^-1 d) at the grid points (axes x, y, z).

    bounds: [2, 3] (lo, hi) world corners; grid[i, j, k] lies at lo + (i, j, k) (hi - lo) / (R - 1).
    """
    return _splat_grid(scene, resolution, bounds, with_color=False)[0]


def simplify_mesh(mesh: trimesh.Trimesh, max_faces: int) -> trimesh.Trimesh:
    """At most `max_faces` faces by quadric decimation (step 2b), without colours; the mesh as is when it has no
    more. Each aggression of DECIMATION_AGGRESSION is tried in turn: the first result within the cap that is
    watertight is returned (or the first within the cap when the mesh was open already or none stays closed).
    Raises an InputError when no aggression gets down to the cap (not seen: the library's own 7 reaches it)."""
    if isinstance(max_faces, bool) or not isinstance(max_faces, int) or max_faces < 4:
        raise InputError(f"max faces must be an int >= 4, got {max_faces!r}")
    if len(mesh.faces) <= max_faces:
        return mesh
    closed = mesh.is_watertight
    fewest, first_open = len(mesh.faces), None
    for aggression in DECIMATION_AGGRESSION:
        verts, faces = _decimate(np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64),
                                 max_faces, aggression)
        fewest = min(fewest, len(faces))
        if len(faces) > max_faces:
            continue
        small = trimesh.Trimesh(vertices=verts, faces=faces, process=False)
        if small.is_watertight or not closed:
            return small
        if first_open is None:
            first_open = small
    if first_open is not None:
        return first_open
    raise InputError(f"the decimation stops at {fewest} faces, above the cap of {max_faces}: give a larger max "
                     "faces (--max-faces), or 0 to keep every face")


def _decimate(verts: np.ndarray, faces: np.ndarray, max_faces: int, aggression: float) -> tuple[np.ndarray, np.ndarray]:
    """fast-simplification towards `max_faces` faces at one aggression, repeated on its own result (a low
    aggression stops short of the target in one call) until within the cap, DECIMATION_ROUNDS calls, or a call
    removes less than 1% of the faces. verts [V, 3] float64, faces [F, 3] int64 -> the same, decimated."""
    from fast_simplification import simplify

    for _ in range(DECIMATION_ROUNDS):
        before = len(faces)
        verts, faces = simplify(verts, faces, target_count=max_faces, agg=aggression)
        verts, faces = np.asarray(verts, dtype=np.float64), np.asarray(faces, dtype=np.int64)
        if len(faces) <= max_faces or len(faces) > 0.99 * before:
            break
    return verts, faces


def extract_mesh(scene: GaussianScene, resolution: int = DEFAULT_GRID, level: float = DEFAULT_LEVEL,
                 bounds: torch.Tensor | None = None, max_faces: int | None = DEFAULT_MAX_FACES) -> trimesh.Trimesh:
    """The level set d(x) = level of the scene's density as a trimesh with RGBA uint8 vertex colours,
    decimated to at most `max_faces` faces (None: as marching cubes gives it).

    bounds default: `scene_bounds(scene)` (every Gaussian within its cutoff, so the surface closes inside
    the grid). A scene whose density never crosses `level` on the grid gives an empty mesh (0 vertices, 0 faces).
    mesh.metadata: "marching_cubes_faces", the face count before decimation; "density_range", the grid's
    (min, max) density.
    """
    from scipy.ndimage import map_coordinates
    from skimage.measure import marching_cubes

    if not (isinstance(level, (int, float)) and math.isfinite(level) and level > 0):
        raise InputError(f"density level must be a finite number > 0, got {level!r}")
    bounds = scene_bounds(scene) if bounds is None else torch.as_tensor(bounds, dtype=torch.float64).cpu()
    density, color = _splat_grid(scene, resolution, bounds, with_color=True)
    d = density.numpy().astype(np.float64)
    density_range = (float(d.min()), float(d.max()))
    if not (d.min() < level < d.max()):
        return trimesh.Trimesh(vertices=np.zeros((0, 3)), faces=np.zeros((0, 3), dtype=np.int64),
                               metadata={"marching_cubes_faces": 0, "density_range": density_range})
    spacing = ((bounds[1] - bounds[0]) / (resolution - 1)).numpy()
    verts, faces, _, _ = marching_cubes(d, level=level, spacing=tuple(spacing))  # verts [V, 3] in world units - lo
    faces = np.ascontiguousarray(faces[:, ::-1])  # [F, 3] wound counter-clockwise seen from outside (skimage's
    # winding on this (x, y, z) grid faces inwards: volume < 0), as glTF's front faces are; else viewers cull them
    surface = trimesh.Trimesh(vertices=verts, faces=faces, process=False)
    before = len(surface.faces)
    if max_faces is not None:
        surface = simplify_mesh(surface, max_faces)
    verts, faces = np.asarray(surface.vertices), np.asarray(surface.faces)
    coords = (verts / spacing).T  # [3, V] grid index coordinates
    num = np.stack([map_coordinates(color[..., c].numpy().astype(np.float64), coords, order=1) for c in range(3)], -1)
    den = map_coordinates(d, coords, order=1)[:, None]  # [V, 1], ~level
    rgb = np.clip(num / np.maximum(den, 1e-12), 0.0, 1.0)  # [V, 3]
    rgba = np.concatenate([np.round(rgb * 255.0), np.full((len(rgb), 1), 255.0)], -1).astype(np.uint8)
    return trimesh.Trimesh(vertices=verts + bounds[0].numpy(), faces=faces, vertex_colors=rgba, process=False,
                           metadata={"marching_cubes_faces": before, "density_range": density_range})


def mesh_silhouette(mesh: trimesh.Trimesh, cameras: list[Camera], near: float = 0.01) -> np.ndarray:
    """bool [C, H, W]: pixels whose centre lies in a triangle of the mesh (both faces), per camera.

    Triangles with a vertex at camera depth <= near are skipped (our cameras look at an object well in front).
    """
    viewmats, Ks = stack_cameras(cameras)  # [C, 4, 4], [C, 3, 3]
    W, H = cameras[0].width, cameras[0].height
    masks = np.zeros((len(cameras), H, W), dtype=bool)
    if len(mesh.faces) == 0:
        return masks
    v = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float64)  # [V, 3]
    f = torch.as_tensor(np.asarray(mesh.faces), dtype=torch.long)  # [F, 3]
    for c in range(len(cameras)):
        vm, K = viewmats[c].double().cpu(), Ks[c].double().cpu()
        cam = v @ vm[:3, :3].T + vm[:3, 3]  # [V, 3]
        uv = (cam @ K.T)[:, :2] / cam[:, 2:3].clamp_min(1e-12)  # [V, 2] pixels
        tri = uv[f]  # [F, 3, 2]
        ok = (cam[f][..., 2] > near).all(dim=-1)  # [F]
        tri = tri[ok]
        # pixel centres (j + 0.5, i + 0.5) inside the triangle's box: j in [ceil(u_min - 0.5), floor(u_max - 0.5)]
        j0 = torch.ceil(tri[..., 0].amin(-1) - 0.5).clamp(0, W).long()  # [F]
        j1 = torch.floor(tri[..., 0].amax(-1) - 0.5).clamp(-1, W - 1).long()
        i0 = torch.ceil(tri[..., 1].amin(-1) - 0.5).clamp(0, H).long()
        i1 = torch.floor(tri[..., 1].amax(-1) - 0.5).clamp(-1, H - 1).long()
        bw, bh = (j1 - j0 + 1).clamp_min(0), (i1 - i0 + 1).clamp_min(0)  # [F]
        live = (bw > 0) & (bh > 0)
        tri, j0, i0, bw, bh = tri[live], j0[live], i0[live], bw[live], bh[live]
        side = torch.maximum(bw, bh)  # [F]
        order = torch.argsort(side, descending=True)  # a chunk's first triangle has its largest box side
        start = 0
        while start < len(order):
            kw = kh = int(side[order[start]])
            g = max(1, CHUNK_ELEMENTS // (kw * kh))
            idx = order[start : start + g]
            start += g
            dj, di = torch.meshgrid(torch.arange(kw), torch.arange(kh), indexing="xy")  # [kh, kw]
            jj = j0[idx][:, None] + dj.reshape(1, -1)  # [G, P]
            ii = i0[idx][:, None] + di.reshape(1, -1)
            p = torch.stack([jj + 0.5, ii + 0.5], dim=-1).double()  # [G, P, 2] pixel centres
            a, b, cc = tri[idx, 0][:, None], tri[idx, 1][:, None], tri[idx, 2][:, None]  # [G, 1, 2]
            e0, e1, e2 = _edge(a, b, p), _edge(b, cc, p), _edge(cc, a, p)  # [G, P]
            inside = ((e0 >= 0) & (e1 >= 0) & (e2 >= 0)) | ((e0 <= 0) & (e1 <= 0) & (e2 <= 0))
            inside &= (jj < W) & (ii < H) & (_edge(a, b, cc) != 0)  # in the image, not degenerate
            masks[c, ii[inside].numpy(), jj[inside].numpy()] = True
    return masks


def _edge(o: torch.Tensor, e: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """2D cross product (e - o) x (q - o) over [..., 2] points: the side of edge o -> e that q lies on."""
    return (e[..., 0] - o[..., 0]) * (q[..., 1] - o[..., 1]) - (e[..., 1] - o[..., 1]) * (q[..., 0] - o[..., 0])


def mesh_silhouette_iou(mesh: trimesh.Trimesh, scene: GaussianScene, cameras: list[Camera],
                        splat_alpha: torch.Tensor | None = None) -> dict:
    """IoU of the mesh's silhouette with the splat's opacity mask (alpha > ALPHA_SOLID) at each camera.

    splat_alpha: [C, 1, H, W] in [0, 1], the scene's alpha at `cameras` if already rendered (else rendered
    here). Returns {"iou_per_view": [C] floats, "mean_iou": float}; a view where both masks are empty counts 1.
    """
    if splat_alpha is None:
        with torch.no_grad():
            splat_alpha = render_scene(scene, [c.to(scene.means.device) for c in cameras]).alpha
    splat = (splat_alpha.detach().cpu()[:, 0] > ALPHA_SOLID).numpy()  # [C, H, W]
    sil = mesh_silhouette(mesh, cameras)  # [C, H, W]
    if splat.shape != sil.shape:
        raise InputError(f"splat_alpha must be [C, 1, H, W] = {[sil.shape[0], 1, *sil.shape[1:]]}, "
                         f"got {tuple(splat_alpha.shape)}")
    inter = (sil & splat).reshape(len(sil), -1).sum(-1)
    union = (sil | splat).reshape(len(sil), -1).sum(-1)
    iou = [float(i / u) if u else 1.0 for i, u in zip(inter, union)]
    return {"iou_per_view": iou, "mean_iou": float(np.mean(iou))}


def write_mesh(path: Path, mesh: trimesh.Trimesh) -> None:
    """Write a world-frame mesh (`extract_mesh`) atomically, in glTF's frame (+Y up, front +Z: WORLD_TO_GLTF,
    module docstring); the format (glb or obj) comes from the file's extension."""
    path = Path(path)
    _write_bytes(path, _encode(mesh, path.suffix.lower().lstrip("."), path.name))


def _encode(mesh: trimesh.Trimesh, kind: str, name: str) -> bytes:
    """The file's bytes: the mesh rotated into glTF's frame (vertices and, by trimesh, any cached normals)."""
    if kind not in ("glb", "obj"):
        raise InputError(f"mesh files are .glb or .obj, got {name}")
    file_frame = mesh.copy()
    file_frame.apply_transform(WORLD_TO_GLTF)
    data = file_frame.export(file_type=kind)
    return data if isinstance(data, bytes) else data.encode("utf-8")


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path, suffix=f".tmp{path.suffix}") as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def check_mesh_options(resolution: int, level: float, max_faces: int | None) -> None:
    """`fsd export-mesh`'s --grid, --level and --max-faces (None or 0: every face), one-line InputError each."""
    check_finite("--level", level)
    if not level > 0:
        raise InputError(f"--level must be > 0, got {level}")
    if not 2 <= resolution <= MAX_GRID:
        raise InputError(f"--grid must be in [2, {MAX_GRID}], got {resolution}")
    if max_faces not in (None, 0) and max_faces < 4:
        raise InputError(f"--max-faces must be 0 (keep every face) or >= 4, got {max_faces}")


def export_mesh(folder: Path, scene: GaussianScene, cameras: list[Camera], resolution: int = DEFAULT_GRID,
                level: float = DEFAULT_LEVEL, formats: tuple[str, ...] = ("glb", "obj"),
                max_faces: int | None = DEFAULT_MAX_FACES) -> dict:
    """Extract the scene's mesh (decimated to at most max_faces faces), check it against the splat at
    `cameras`, write folder/mesh.<format> for each format (glTF's frame, module docstring); returns the mesh's
    metrics (JSON-ready): counts (faces before and after decimation), watertight, IoU per view and mean, and the
    seconds all this took.

    Every file is encoded before the first is written, and each replaces its previous version atomically: an
    error (an `EmptyMeshError` when the surface has no face, anything else) leaves the previous files as they were.
    """
    start = time.perf_counter()
    mesh = extract_mesh(scene, resolution, level, max_faces=max_faces)
    if len(mesh.faces) == 0:
        raise EmptyMeshError(_empty_message(mesh.metadata.get("density_range", (0.0, 0.0)), resolution, level))
    iou = mesh_silhouette_iou(mesh, scene, cameras)
    files = {Path(folder) / f"mesh.{kind}": _encode(mesh, kind, f"mesh.{kind}") for kind in formats}
    for path, data in files.items():
        _write_bytes(path, data)
    iou["seconds"] = time.perf_counter() - start
    return {"vertices": len(mesh.vertices), "faces": len(mesh.faces),
            "marching_cubes_faces": int(mesh.metadata.get("marching_cubes_faces", len(mesh.faces))),
            "max_faces": max_faces, "watertight": bool(mesh.is_watertight),
            "grid": resolution, "level": float(level), "eval_px": cameras[0].width, **iou}


def _empty_message(density_range: tuple[float, float], resolution: int, level: float) -> str:
    """Why the surface is empty, and what to change: the level or the grid."""
    lo, hi = density_range
    where = f"no surface to export: the density on the {resolution}^3 grid"
    if hi <= 0.0:
        return f"{where} is 0 everywhere; give a finer grid (--grid, default {DEFAULT_GRID})"
    if hi <= level:
        return (f"{where} reaches at most {hi:.3g}, never the level {level:g}; give a lower level (--level, below "
                f"{hi:.3g}) or a finer grid (--grid, default {DEFAULT_GRID}; a coarse grid misses thin parts)")
    return f"{where} is at least {lo:.3g} everywhere, above the level {level:g}; give a higher level (--level)"
