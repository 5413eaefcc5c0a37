"""Surfaces made of flat Gaussians: the primitives the reference objects (fsd3d.shapes) are built from.

Each primitive (ellipsoid zone, frustum/cylinder, disc, torus, blob) is a surface filled with Fibonacci /
sunflower points, deterministic, no randomness; `assemble` turns a list of them into one GaussianScene.
Each point becomes one flat Gaussian: std-devs (s, s, 0.35 s) with the thin axis along the surface normal,
s = 0.6 x the mean distance to its 3 nearest neighbours in the part; on ellipsoids, a flat disc on the unit
sphere mapped by the ellipsoid's axes (so flat caps and tall bells stay gap-free); narrower across a part's
rim so that edges stay crisp. Opacity 0.95, degree-0 SH colour. Colours are baked with a fixed Lambert light
(`LIGHT_DIR`, ambient `AMBIENT`), so shapes read as 3D and views differ.

Conventions (those of `fsd3d.cameras`): world right-handed, +z up; float64 while building.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fsd3d.gaussians import GaussianScene, rgb_to_sh0

__all__ = ["GOLDEN_ANGLE", "RGB", "Part", "assemble", "blob", "disc", "ellipsoid", "frustum", "rotate", "torus"]

F64 = torch.float64
OPACITY = 0.95
FLATNESS = 0.35  # std-dev along the normal / std-dev along the surface
SPACING_TO_STD = 0.6  # s = 0.6 x mean distance to the 3 nearest neighbours
LIGHT_DIR = (0.6, 0.35, 1.0)  # towards the light (normalised below): above, front (+x), a bit to +y
AMBIENT = 0.5  # colour = base * (AMBIENT + (1 - AMBIENT) * max(0, n . light))
GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))

RGB = tuple[float, float, float]


# ----------------------------------------------------------------------------------- surfaces
@dataclass
class Part:
    """Points on one surface: means [n, 3], unit normals [n, 3], base colours [n, 3]; std-dev s or auto."""

    means: torch.Tensor
    normals: torch.Tensor
    colors: torch.Tensor
    std: float | None = None  # None: from the point spacing (or `cov`)
    shaded: bool = True
    cov: torch.Tensor | None = None  # [n, 3, 3] full covariances (ellipsoids), overrides std
    edge: tuple[torch.Tensor, torch.Tensor] | None = None  # (tangent across the rim [n, 3], distance to it [n])


def _rgb(color: RGB, n: int) -> torch.Tensor:
    return torch.tensor(color, dtype=F64).expand(n, 3).clone()  # [n, 3]


def ellipsoid(center, radii, n: int, color: RGB, z_range=(-1.0, 1.0)) -> Part:
    """Fibonacci points on the zone z_range (unit-sphere z) of an axis-aligned ellipsoid."""
    i = torch.arange(n, dtype=F64) + 0.5
    z = z_range[1] - (z_range[1] - z_range[0]) * i / n  # uniform in z: uniform in area on a sphere
    r = (1.0 - z * z).clamp_min(0.0).sqrt()
    phi = i * GOLDEN_ANGLE
    u = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=1)  # [n, 3] on the unit sphere
    m = torch.stack([-z * torch.cos(phi), -z * torch.sin(phi), r], dim=1)  # [n, 3] unit, along the meridian
    # Gaussians on the unit sphere: std s = 0.65 sqrt(area per point) in the tangent plane, FLATNESS s along u,
    # narrower across a rim of the zone; then mapped by A: they stretch with the surface, so flat or tall
    # ellipsoids stay gap-free.
    s = 0.65 * math.sqrt(2.0 * math.pi * (z_range[1] - z_range[0]) / n)
    lat = torch.asin(z.clamp(-1.0, 1.0))
    rim = torch.full_like(z, math.inf)
    if z_range[0] > -1.0:
        rim = torch.minimum(rim, lat - math.asin(z_range[0]))
    if z_range[1] < 1.0:
        rim = torch.minimum(rim, math.asin(z_range[1]) - lat)
    s_m = _edge_std(s, rim)  # [n]
    uu, mm = (v[:, :, None] * v[:, None, :] for v in (u, m))  # [n, 3, 3]
    eye = torch.eye(3, dtype=F64)
    cov_unit = s**2 * (eye - uu - mm) + s_m[:, None, None] ** 2 * mm + (FLATNESS * s) ** 2 * uu
    A = torch.diag(torch.tensor(radii, dtype=F64))  # the ellipsoid is the unit sphere mapped by A
    normals = F.normalize(u @ torch.linalg.inv(A), dim=1)
    return Part(torch.tensor(center, dtype=F64) + u @ A, normals, _rgb(color, n), cov=A @ cov_unit @ A)


def _edge_std(s, dist: torch.Tensor) -> torch.Tensor:
    """Std-dev across a boundary at distance `dist` (same units as s): at most dist / 1.5, at least 0.3 s."""
    return torch.minimum(torch.as_tensor(s, dtype=F64), (dist / 1.5).clamp_min(0.0)).clamp_min(0.3 * torch.as_tensor(s))


def frustum(base, r0: float, r1: float, height: float, n: int, color: RGB) -> Part:
    """Side of a vertical frustum (cylinder if r0 == r1) from z = base[2] (radius r0) up by height (r1)."""
    i = torch.arange(n, dtype=F64) + 0.5
    s = i / n
    r = r0 + (r1 - r0) * s
    phi = i * GOLDEN_ANGLE
    means = torch.tensor(base, dtype=F64) + torch.stack([r * torch.cos(phi), r * torch.sin(phi), height * s], 1)
    normals = F.normalize(
        torch.stack([torch.cos(phi), torch.sin(phi), torch.full_like(phi, (r0 - r1) / height)], 1), dim=1
    )
    slant = math.hypot(r1 - r0, height)
    along = torch.stack([(r1 - r0) / slant * torch.cos(phi), (r1 - r0) / slant * torch.sin(phi),
                         torch.full_like(phi, height / slant)], 1)  # [n, 3] up the side, across both rims
    return Part(means, normals, _rgb(color, n), edge=(along, slant * torch.minimum(s, 1.0 - s)))


def disc(center, radius: float, n: int, color: RGB, up: bool) -> Part:
    """Sunflower points on a horizontal disc, normal +z (up) or -z."""
    i = torch.arange(n, dtype=F64) + 0.5
    r = radius * (i / n).sqrt()
    phi = i * GOLDEN_ANGLE
    means = torch.tensor(center, dtype=F64) + torch.stack([r * torch.cos(phi), r * torch.sin(phi), 0 * r], 1)
    normals = torch.tensor([0.0, 0.0, 1.0 if up else -1.0], dtype=F64).expand(n, 3).clone()
    radial = torch.stack([torch.cos(phi), torch.sin(phi), 0 * r], 1)  # [n, 3] across the rim
    return Part(means, normals, _rgb(color, n), edge=(radial, radius - r))


def torus(center, major: float, minor: float, n: int, color: RGB) -> Part:
    """A horizontal torus (a scarf): n points on a golden-angle grid."""
    i = torch.arange(n, dtype=F64) + 0.5
    theta = 2 * math.pi * i / n  # around the ring
    phi = i * GOLDEN_ANGLE * 7.0  # around the tube
    d = torch.stack([torch.cos(theta), torch.sin(theta), torch.zeros_like(theta)], 1)  # [n, 3]
    normals = d * torch.cos(phi)[:, None] + torch.tensor([0.0, 0.0, 1.0], dtype=F64) * torch.sin(phi)[:, None]
    means = torch.tensor(center, dtype=F64) + major * d + minor * normals
    return Part(means, normals, _rgb(color, n))


def rotate(part: Part, axis_to: tuple[float, float, float], pivot) -> Part:
    """Rotate a part about `pivot` by the rotation that takes +z to `axis_to`."""
    R = _rotation_z_to(torch.tensor(axis_to, dtype=F64))
    p = torch.tensor(pivot, dtype=F64)
    cov = None if part.cov is None else R @ part.cov @ R.T
    edge = None if part.edge is None else (part.edge[0] @ R.T, part.edge[1])
    return Part((part.means - p) @ R.T + p, part.normals @ R.T, part.colors, part.std, part.shaded, cov, edge)


def _rotation_z_to(a: torch.Tensor) -> torch.Tensor:
    """[3, 3] rotation taking +z to the unit vector along a (Rodrigues)."""
    a = F.normalize(a, dim=0)
    z = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    v, c = torch.linalg.cross(z, a), float(z @ a)
    if c < -1.0 + 1e-12:
        return torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=F64))
    vx = torch.tensor([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]], dtype=F64)
    return torch.eye(3, dtype=F64) + vx + vx @ vx / (1.0 + c)


def blob(center, radius: float, color: RGB, n: int = 1, shaded: bool = False) -> Part:
    """A small decoration (eye, button, pompom): n points on a tiny sphere, or one Gaussian."""
    if n == 1:
        return Part(torch.tensor([center], dtype=F64), torch.tensor([[1.0, 0.0, 0.0]]).to(F64),
                     _rgb(color, 1), std=radius, shaded=shaded)
    part = ellipsoid(center, (radius, radius, radius), n, color)
    part.shaded = shaded
    return part


# ----------------------------------------------------------------------------------- scenes
def _covariance(p: Part) -> torch.Tensor:
    """[n, 3, 3] covariances: given (ellipsoids), isotropic (decorations) or flat discs sized by the spacing."""
    if p.cov is not None:
        return p.cov
    eye = torch.eye(3, dtype=F64)
    if p.std is not None:
        return (p.std**2 * eye).expand(len(p.means), 3, 3)
    k = min(3, len(p.means) - 1)
    d = torch.cdist(p.means, p.means).topk(k + 1, largest=False).values[:, 1:]  # [n, k] nearest neighbours
    s = SPACING_TO_STD * d.mean(dim=1)  # [n]
    nn = p.normals[:, :, None] * p.normals[:, None, :]  # [n, 3, 3]
    cov = s[:, None, None] ** 2 * (eye - nn + FLATNESS**2 * nn)
    if p.edge is not None:  # narrower across the rim (the edge direction is a tangent: an eigenvector)
        e, dist = p.edge
        cut = s**2 - _edge_std(s, dist) ** 2  # [n] >= 0
        cov = cov - cut[:, None, None] * (e[:, :, None] * e[:, None, :])
    return cov


def _quat_from_rotmat(R: torch.Tensor) -> torch.Tensor:
    """[N, 4] wxyz unit quaternions of rotation matrices R [N, 3, 3] (the largest-component branch, as scipy)."""
    m = R
    tr = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    choice = torch.stack([m[:, 0, 0], m[:, 1, 1], m[:, 2, 2], tr], dim=1).argmax(dim=1)  # [N]
    q = torch.empty(len(R), 4, dtype=R.dtype)  # (x, y, z, w) while building
    for i in range(3):
        j, k = (i + 1) % 3, (i + 2) % 3
        sel = choice == i
        q[sel, i] = 1.0 - tr[sel] + 2.0 * m[sel, i, i]
        q[sel, j] = m[sel, j, i] + m[sel, i, j]
        q[sel, k] = m[sel, k, i] + m[sel, i, k]
        q[sel, 3] = m[sel, k, j] - m[sel, j, k]
    sel = choice == 3
    q[sel, 0] = m[sel, 2, 1] - m[sel, 1, 2]
    q[sel, 1] = m[sel, 0, 2] - m[sel, 2, 0]
    q[sel, 2] = m[sel, 1, 0] - m[sel, 0, 1]
    q[sel, 3] = 1.0 + tr[sel]
    return F.normalize(q[:, [3, 0, 1, 2]], dim=1)


def assemble(parts: list[Part]) -> GaussianScene:
    """Gaussians from the parts: covariance -> (rotation, std-devs), baked Lambert shading, centred in z."""
    light = F.normalize(torch.tensor(LIGHT_DIR, dtype=F64), dim=0)
    means = torch.cat([p.means for p in parts])  # [N, 3]
    cov = torch.cat([_covariance(p) for p in parts])  # [N, 3, 3]
    colors = torch.cat([
        p.colors * (AMBIENT + (1.0 - AMBIENT) * (p.normals @ light).clamp_min(0.0))[:, None] if p.shaded else p.colors
        for p in parts
    ])  # [N, 3]
    evals, V = torch.linalg.eigh(cov)  # [N, 3], [N, 3, 3] (columns: principal axes)
    V[:, :, 2] *= torch.linalg.det(V).sign()[:, None]  # a proper rotation
    scales = evals.clamp_min(1e-12).sqrt()  # [N, 3] std-devs along V's columns
    means = means - torch.tensor([0.0, 0.0, float(means[:, 2].amin() + means[:, 2].amax()) / 2], dtype=F64)
    n = len(means)
    logit = math.log(OPACITY / (1.0 - OPACITY))
    return GaussianScene(means, scales.log(), _quat_from_rotmat(V), torch.full((n,), logit),
                         rgb_to_sh0(colors.clamp(0.0, 1.0)))
