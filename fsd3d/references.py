"""Reference 3D objects made of Gaussians: the ground truth behind the embedded reference prior.

Each prompt (mushroom, snowman, cactus, tree) names a kind of object with 5 variants that differ visibly
in silhouette and colour, so that "diversity across seeds" can be measured as reaching different variants
(fsd3d.metrics3d). `python benchmarks/reference_sheet.py` draws them all on one contact sheet.

Conventions (those of `fsd3d.cameras`): world right-handed, +z up, object centred at the origin
(bounding box centre at 0) and inside the ball of radius `MAX_RADIUS` = 0.47; at the default cameras
(radius 1.55-1.75, fov 40-46 deg) an object fills about 70 % of the frame and stays whole. The front of
an object faces +x (azimuth 0):
the snowman's carrot nose, eyes and buttons point to +x, so its front and back views differ.

Construction (deterministic, no randomness): every part is a surface (ellipsoid zone, frustum/cylinder,
disc, torus) filled with Fibonacci / sunflower points; each point becomes one flat Gaussian: std-devs
(s, s, 0.35 s) with the thin axis along the surface normal, s = 0.6 x the mean distance to its 3 nearest
neighbours in the part; on ellipsoids, a flat disc on the unit sphere mapped by the ellipsoid's axes (so
flat caps and tall bells stay gap-free); narrower across a part's rim so that edges stay crisp. Opacity
0.95, degree-0 SH colour, ~230-490 Gaussians per object. Colours are baked with a fixed Lambert light
(`LIGHT_DIR`, ambient `AMBIENT`), so shapes read as 3D and views differ.

Background: references are rendered on WHITE by default (`DEFAULT_BACKGROUND`); a scene compared
with them, or optimised against the reference prior, must be rendered on the same background.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from fsd2d.errors import InputError
from fsd2d.priors.base import match_prompt
from fsd3d.cameras import Camera, stack_cameras
from fsd3d.gaussians import GaussianScene, rgb_to_sh0
from fsd3d.render import RenderOutput, render

__all__ = [
    "DEFAULT_BACKGROUND",
    "MAX_RADIUS",
    "REFERENCE_PROMPTS",
    "ReferenceSet",
    "reference_scene",
]

F64 = torch.float64
DEFAULT_BACKGROUND = (1.0, 1.0, 1.0)  # white
MAX_RADIUS = 0.47  # every Gaussian centre lies within this distance of the origin
OPACITY = 0.95
FLATNESS = 0.35  # std-dev along the normal / std-dev along the surface
SPACING_TO_STD = 0.6  # s = 0.6 x mean distance to the 3 nearest neighbours
LIGHT_DIR = (0.6, 0.35, 1.0)  # towards the light (normalised below): above, front (+x), a bit to +y
AMBIENT = 0.5  # colour = base * (AMBIENT + (1 - AMBIENT) * max(0, n . light))
GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))

RGB = tuple[float, float, float]


# ----------------------------------------------------------------------------------- variant specs
@dataclass(frozen=True)
class MushroomSpec:
    """Stem (cylinder) under a cap (upper half of an ellipsoid) with a gill disc underneath."""

    description: str
    cap_rgb: RGB
    stem_rgb: RGB
    cap_radius: float  # horizontal semi-axis of the cap
    cap_height: float  # vertical semi-axis of the cap
    stem_radius: float
    stem_height: float
    dots_rgb: RGB | None = None  # round spots on the cap


@dataclass(frozen=True)
class SnowmanSpec:
    """Stacked snow balls (bottom to top; the last is the head) with a carrot nose towards +x."""

    description: str
    balls: tuple[tuple[float, float], ...]  # (centre z, radius), bottom to top, before centring
    scarf_rgb: RGB | None = None
    hat: Literal["none", "top", "beanie"] = "none"  # top hat, or a tall knitted cap with a pompom
    hat_rgb: RGB = (0.1, 0.1, 0.1)
    stick_arms: bool = False  # brown twigs out of the middle ball, along +-y


@dataclass(frozen=True)
class CactusSpec:
    """A column cactus with arms, or a barrel cactus in a pot, optionally with a flower on top."""

    description: str
    body_rgb: RGB
    body: Literal["column", "barrel"] = "column"
    arms: tuple[tuple[float, float, float], ...] = ()  # (side +-1 along y, z of the elbow, z of the tip)
    flower_rgb: RGB | None = None
    pot_rgb: RGB | None = None
    column_radius: float = 0.095
    column_top: float = 0.25  # z of the top of the column's cylinder (bottom at -0.45), before centring


@dataclass(frozen=True)
class TreeSpec:
    """A trunk (frustum) under a crown: a ball (ellipsoid), or stacked cones (a conifer); optional fruit."""

    description: str
    trunk_rgb: RGB
    crown_rgb: RGB
    crown: Literal["ball", "cones"] = "ball"
    crown_radius: float = 0.3  # horizontal semi-axis of the ball / radius of the lowest cone
    crown_height: float = 0.28  # vertical semi-axis of the ball / height of the cone stack
    trunk_radius: float = 0.06
    trunk_height: float = 0.35
    fruit_rgb: RGB | None = None  # small round fruit on the crown


SNOW: RGB = (0.93, 0.95, 1.0)
CARROT: RGB = (1.0, 0.45, 0.05)
COAL: RGB = (0.08, 0.08, 0.08)

# prompt -> variant -> spec (descriptions say what each variant looks like).
REFERENCE_PROMPTS: dict[str, dict[str, MushroomSpec | SnowmanSpec | CactusSpec | TreeSpec]] = {
    "mushroom": {
        "red": MushroomSpec("domed red cap with white dots on a white stem", (0.85, 0.08, 0.06),
                            (0.95, 0.93, 0.85), 0.32, 0.2, 0.075, 0.38, dots_rgb=(1.0, 1.0, 1.0)),
        "brown": MushroomSpec("wide flat brown cap on a short thick beige stem", (0.45, 0.27, 0.12),
                              (0.85, 0.75, 0.55), 0.42, 0.09, 0.11, 0.3),
        "blue": MushroomSpec("tall blue bell-shaped cap on a thin pale stem", (0.12, 0.3, 0.85),
                             (0.8, 0.85, 0.9), 0.2, 0.36, 0.05, 0.42),
        "puffball": MushroomSpec("round yellow ball cap on a stubby stem", (0.95, 0.8, 0.15),
                                 (0.9, 0.85, 0.6), 0.3, 0.3, 0.12, 0.14),
        "parasol": MushroomSpec("small purple disc cap high on a very tall thin stem", (0.55, 0.15, 0.7),
                                (0.75, 0.65, 0.8), 0.26, 0.07, 0.035, 0.6),
    },
    "snowman": {
        "red_scarf": SnowmanSpec("three balls, red scarf, no hat", ((0.0, 0.17), (0.26, 0.13), (0.47, 0.1)),
                                 scarf_rgb=(0.85, 0.05, 0.05)),
        "top_hat": SnowmanSpec("two balls, blue scarf, black top hat", ((0.0, 0.2), (0.31, 0.14)),
                               scarf_rgb=(0.1, 0.25, 0.9), hat="top"),
        "beanie": SnowmanSpec("three plump balls, stick arms, green scarf, tall yellow beanie with pompom",
                              ((0.0, 0.185), (0.28, 0.14), (0.49, 0.1)), scarf_rgb=(0.05, 0.6, 0.15),
                              hat="beanie", hat_rgb=(0.95, 0.8, 0.05), stick_arms=True),
        "tall": SnowmanSpec("four small balls, purple scarf, stick arms, no hat",
                            ((0.0, 0.13), (0.21, 0.11), (0.39, 0.09), (0.55, 0.08)),
                            scarf_rgb=(0.55, 0.1, 0.75), stick_arms=True),
        "squat": SnowmanSpec("one big ball and a small head, orange scarf, red top hat", ((0.0, 0.27), (0.35, 0.11)),
                             scarf_rgb=(1.0, 0.5, 0.0), hat="top", hat_rgb=(0.8, 0.05, 0.05)),
    },
    "cactus": {
        "saguaro": CactusSpec("tall green column with two arms", (0.2, 0.6, 0.2), arms=((1, -0.1, 0.12), (-1, 0.02, 0.24))),
        "barrel": CactusSpec("round barrel cactus in a terracotta pot with a pink flower", (0.15, 0.45, 0.25),
                             body="barrel", flower_rgb=(1.0, 0.35, 0.7), pot_rgb=(0.75, 0.35, 0.2)),
        "flowering": CactusSpec("short thick dark green column with one arm and a yellow flower", (0.1, 0.38, 0.15),
                                arms=((-1, -0.2, 0.0),), flower_rgb=(1.0, 0.85, 0.1), column_radius=0.14,
                                column_top=0.05),
        "potted": CactusSpec("thin pale blue-green column without arms in a blue pot", (0.45, 0.7, 0.65),
                             pot_rgb=(0.15, 0.25, 0.8), column_radius=0.075, column_top=0.3),
        "globe": CactusSpec("big yellow-green ball on the ground with a red flower", (0.55, 0.7, 0.1),
                            body="barrel", flower_rgb=(0.9, 0.05, 0.1)),
    },
    "tree": {
        "pine": TreeSpec("dark green conifer of three stacked cones on a short brown trunk", (0.4, 0.25, 0.12),
                         (0.05, 0.35, 0.15), crown="cones", crown_radius=0.3, crown_height=0.7, trunk_height=0.18),
        "oak": TreeSpec("round green crown on a thick brown trunk", (0.45, 0.3, 0.15), (0.25, 0.6, 0.15),
                        crown_radius=0.36, crown_height=0.3, trunk_radius=0.08, trunk_height=0.32),
        "autumn": TreeSpec("wide flat orange crown on a dark trunk", (0.25, 0.15, 0.1), (0.95, 0.45, 0.05),
                           crown_radius=0.38, crown_height=0.16, trunk_radius=0.06, trunk_height=0.4),
        "birch": TreeSpec("small tall pale yellow-green crown on a tall white trunk", (0.92, 0.92, 0.88),
                          (0.7, 0.85, 0.3), crown_radius=0.18, crown_height=0.24, trunk_radius=0.045,
                          trunk_height=0.46),
        "apple": TreeSpec("round dark green crown with red apples on a brown trunk", (0.45, 0.3, 0.15),
                          (0.1, 0.4, 0.1), crown_radius=0.3, crown_height=0.32, trunk_height=0.3,
                          fruit_rgb=(0.9, 0.05, 0.05)),
    },
}


# ----------------------------------------------------------------------------------- surfaces
@dataclass
class _Part:
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


def _ellipsoid(center, radii, n: int, color: RGB, z_range=(-1.0, 1.0)) -> _Part:
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
    return _Part(torch.tensor(center, dtype=F64) + u @ A, normals, _rgb(color, n), cov=A @ cov_unit @ A)


def _edge_std(s, dist: torch.Tensor) -> torch.Tensor:
    """Std-dev across a boundary at distance `dist` (same units as s): at most dist / 1.5, at least 0.3 s."""
    return torch.minimum(torch.as_tensor(s, dtype=F64), (dist / 1.5).clamp_min(0.0)).clamp_min(0.3 * torch.as_tensor(s))


def _frustum(base, r0: float, r1: float, height: float, n: int, color: RGB) -> _Part:
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
    return _Part(means, normals, _rgb(color, n), edge=(along, slant * torch.minimum(s, 1.0 - s)))


def _disc(center, radius: float, n: int, color: RGB, up: bool) -> _Part:
    """Sunflower points on a horizontal disc, normal +z (up) or -z."""
    i = torch.arange(n, dtype=F64) + 0.5
    r = radius * (i / n).sqrt()
    phi = i * GOLDEN_ANGLE
    means = torch.tensor(center, dtype=F64) + torch.stack([r * torch.cos(phi), r * torch.sin(phi), 0 * r], 1)
    normals = torch.tensor([0.0, 0.0, 1.0 if up else -1.0], dtype=F64).expand(n, 3).clone()
    radial = torch.stack([torch.cos(phi), torch.sin(phi), 0 * r], 1)  # [n, 3] across the rim
    return _Part(means, normals, _rgb(color, n), edge=(radial, radius - r))


def _torus(center, major: float, minor: float, n: int, color: RGB) -> _Part:
    """A horizontal torus (a scarf): n points on a golden-angle grid."""
    i = torch.arange(n, dtype=F64) + 0.5
    theta = 2 * math.pi * i / n  # around the ring
    phi = i * GOLDEN_ANGLE * 7.0  # around the tube
    d = torch.stack([torch.cos(theta), torch.sin(theta), torch.zeros_like(theta)], 1)  # [n, 3]
    normals = d * torch.cos(phi)[:, None] + torch.tensor([0.0, 0.0, 1.0], dtype=F64) * torch.sin(phi)[:, None]
    means = torch.tensor(center, dtype=F64) + major * d + minor * normals
    return _Part(means, normals, _rgb(color, n))


def _rotate(part: _Part, axis_to: tuple[float, float, float], pivot) -> _Part:
    """Rotate a part about `pivot` by the rotation that takes +z to `axis_to`."""
    R = _rotation_z_to(torch.tensor(axis_to, dtype=F64))
    p = torch.tensor(pivot, dtype=F64)
    cov = None if part.cov is None else R @ part.cov @ R.T
    edge = None if part.edge is None else (part.edge[0] @ R.T, part.edge[1])
    return _Part((part.means - p) @ R.T + p, part.normals @ R.T, part.colors, part.std, part.shaded, cov, edge)


def _rotation_z_to(a: torch.Tensor) -> torch.Tensor:
    """[3, 3] rotation taking +z to the unit vector along a (Rodrigues)."""
    a = F.normalize(a, dim=0)
    z = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    v, c = torch.linalg.cross(z, a), float(z @ a)
    if c < -1.0 + 1e-12:
        return torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=F64))
    vx = torch.tensor([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]], dtype=F64)
    return torch.eye(3, dtype=F64) + vx + vx @ vx / (1.0 + c)


def _blob(center, radius: float, color: RGB, n: int = 1, shaded: bool = False) -> _Part:
    """A small decoration (eye, button, pompom): n points on a tiny sphere, or one Gaussian."""
    if n == 1:
        return _Part(torch.tensor([center], dtype=F64), torch.tensor([[1.0, 0.0, 0.0]]).to(F64),
                     _rgb(color, 1), std=radius, shaded=shaded)
    part = _ellipsoid(center, (radius, radius, radius), n, color)
    part.shaded = shaded
    return part


# ----------------------------------------------------------------------------------- objects
def _mushroom(s: MushroomSpec) -> list[_Part]:
    stem = _frustum((0.0, 0.0, -s.stem_height), s.stem_radius * 1.15, s.stem_radius, s.stem_height, 70, s.stem_rgb)
    foot = _disc((0.0, 0.0, -s.stem_height), s.stem_radius * 1.15, 12, s.stem_rgb, up=False)
    cap = _ellipsoid((0.0, 0.0, 0.0), (s.cap_radius, s.cap_radius, s.cap_height), 170, s.cap_rgb, (0.0, 1.0))
    if s.dots_rgb is not None:
        # 10 spots spread over the cap (Fibonacci directions on the upper half), angular radius 0.28 rad
        k = torch.arange(10, dtype=F64) + 0.5
        zc = 0.95 - 0.75 * k / 10
        rc = (1 - zc**2).sqrt()
        centres = torch.stack([rc * torch.cos(k * GOLDEN_ANGLE), rc * torch.sin(k * GOLDEN_ANGLE), zc], 1)
        u = F.normalize((cap.means / torch.tensor([s.cap_radius, s.cap_radius, s.cap_height], dtype=F64)), dim=1)
        spotted = ((u @ centres.T) > math.cos(0.28)).any(dim=1)
        cap.colors[spotted] = torch.tensor(s.dots_rgb, dtype=F64)
    gills = _disc((0.0, 0.0, 0.0), s.cap_radius * 0.98, 60, tuple(0.6 * c + 0.3 for c in s.stem_rgb), up=False)
    return [stem, foot, cap, gills]


def _snowman(s: SnowmanSpec) -> list[_Part]:
    parts = []
    for z, r in s.balls:
        n = round(230 * r * r / sum(b[1] ** 2 for b in s.balls))  # ~230 Gaussians of snow in all
        parts.append(_ellipsoid((0.0, 0.0, z), (r, r, r), max(n, 40), SNOW))
    hz, hr = s.balls[-1]
    # carrot nose: a cone along +x from inside the head
    nose = _frustum((0.0, 0.0, -0.2 * hr), 0.28 * hr, 0.02, 1.5 * hr, 24, CARROT)
    parts.append(_rotate(nose, (1.0, 0.0, 0.0), (0.0, 0.0, 0.0)))
    parts[-1].means += torch.tensor([0.7 * hr, 0.0, hz], dtype=F64)
    for side in (-1.0, 1.0):  # eyes
        d = F.normalize(torch.tensor([1.0, 0.38 * side, 0.35], dtype=F64), dim=0)
        parts.append(_blob(tuple((torch.tensor([0.0, 0.0, hz]) + 1.02 * hr * d).tolist()), 0.14 * hr, COAL))
    bz, br = s.balls[-2]
    for dz in (-0.35, 0.05, 0.45):  # buttons on the ball under the head
        d = F.normalize(torch.tensor([1.0, 0.0, dz], dtype=F64), dim=0)
        parts.append(_blob(tuple((torch.tensor([0.0, 0.0, bz]) + 1.02 * br * d).tolist()), 0.1 * br, COAL))
    if s.scarf_rgb is not None:
        neck = hz - 0.82 * hr
        parts.append(_torus((0.0, 0.0, neck), 0.62 * hr, 0.28 * hr, 60, s.scarf_rgb))
        tail = _frustum((0.0, 0.0, 0.0), 0.22 * hr, 0.2 * hr, 1.3 * hr, 16, s.scarf_rgb)  # hanging end, at the back-left
        tail = _rotate(tail, (0.0, 0.0, -1.0), (0.0, 0.0, 0.0))
        tail.means += torch.tensor([-0.25 * hr, 0.65 * hr, neck], dtype=F64)
        parts.append(tail)
    if s.stick_arms:
        for side in (-1.0, 1.0):
            arm = _frustum((0.0, 0.0, 0.0), 0.03, 0.016, 0.2, 30, (0.4, 0.25, 0.1))
            arm = _rotate(arm, (0.0, side, 0.7), (0.0, 0.0, 0.0))
            arm.means += torch.tensor([0.0, side * 0.8 * br, bz + 0.3 * br], dtype=F64)
            parts.append(arm)
    if s.hat == "top":
        top = hz + 0.85 * hr
        parts.append(_disc((0.0, 0.0, top), 1.45 * hr, 30, s.hat_rgb, up=True))
        parts.append(_disc((0.0, 0.0, top - 0.01), 1.45 * hr, 30, s.hat_rgb, up=False))
        parts.append(_frustum((0.0, 0.0, top), 0.85 * hr, 0.85 * hr, 1.1 * hr, 50, s.hat_rgb))
        parts.append(_disc((0.0, 0.0, top + 1.1 * hr), 0.85 * hr, 16, s.hat_rgb, up=True))
    elif s.hat == "beanie":
        parts.append(_ellipsoid((0.0, 0.0, hz + 0.15 * hr), (1.1 * hr, 1.1 * hr, 1.5 * hr), 70, s.hat_rgb, (0.0, 1.0)))
        parts.append(_blob((0.0, 0.0, hz + 1.75 * hr), 0.35 * hr, (1.0, 1.0, 1.0), n=12, shaded=True))
    return parts


def _cactus(s: CactusSpec) -> list[_Part]:
    parts = []
    if s.body == "column":
        r, bottom, top = s.column_radius, -0.45, s.column_top
        if s.pot_rgb is not None:  # a pot around the column's foot
            parts += _pot(-0.45, 0.18, 0.14, 0.18, s.pot_rgb)
            bottom = -0.3
        parts.append(_frustum((0.0, 0.0, bottom), r, r, top - bottom, 140, s.body_rgb))
        parts.append(_ellipsoid((0.0, 0.0, top), (r, r, r), 30, s.body_rgb, (0.0, 1.0)))
        for side, z_elbow, z_tip in s.arms:
            ra, reach = 0.065, r + 0.1
            arm = _frustum((0.0, 0.0, 0.0), ra, ra, reach, 30, s.body_rgb)
            arm = _rotate(arm, (0.0, side, 0.0), (0.0, 0.0, 0.0))
            arm.means += torch.tensor([0.0, 0.0, z_elbow], dtype=F64)
            parts.append(arm)
            parts.append(_ellipsoid((0.0, side * reach, z_elbow), (ra, ra, ra), 20, s.body_rgb))
            parts.append(_frustum((0.0, side * reach, z_elbow), ra, ra, z_tip - z_elbow, 40, s.body_rgb))
            parts.append(_ellipsoid((0.0, side * reach, z_tip), (ra, ra, ra), 14, s.body_rgb, (0.0, 1.0)))
        flower_z, flower_r = top + r, 0.6 * r + 0.015
    else:
        if s.pot_rgb is not None:
            pot_bottom, pot_h = -0.3, 0.22
            parts += _pot(pot_bottom, pot_h, 0.17, 0.23, s.pot_rgb)
            parts.append(_ellipsoid((0.0, 0.0, pot_bottom + pot_h + 0.1), (0.22, 0.22, 0.2), 170, s.body_rgb,
                                    (-0.5, 1.0)))
            flower_z, flower_r = pot_bottom + pot_h + 0.3, 0.09
        else:  # a big ball on the ground (its flat foot hidden below)
            parts.append(_ellipsoid((0.0, 0.0, 0.0), (0.33, 0.33, 0.3), 230, s.body_rgb, (-0.8, 1.0)))
            flower_z, flower_r = 0.3, 0.11
    if s.flower_rgb is not None:
        for k in range(6):  # petals around a yellow-white centre
            a = 2 * math.pi * k / 6
            parts.append(_blob((0.6 * flower_r * math.cos(a), 0.6 * flower_r * math.sin(a), flower_z),
                               0.4 * flower_r, s.flower_rgb, shaded=False))
        parts.append(_blob((0.0, 0.0, flower_z + 0.01), 0.3 * flower_r, (1.0, 0.95, 0.7)))
    return parts


def _pot(bottom: float, height: float, r_bottom: float, r_top: float, color: RGB) -> list[_Part]:
    """A flower pot: a widening frustum, its floor and a rolled rim."""
    return [_frustum((0.0, 0.0, bottom), r_bottom, r_top, height, 110, color),
            _disc((0.0, 0.0, bottom), r_bottom, 20, color, up=False),
            _torus((0.0, 0.0, bottom + height), r_top, 0.025, 50, color)]


def _tree(s: TreeSpec) -> list[_Part]:
    base = -0.45
    parts = [_frustum((0.0, 0.0, base), s.trunk_radius * 1.3, s.trunk_radius, s.trunk_height, 60, s.trunk_rgb),
             _disc((0.0, 0.0, base), s.trunk_radius * 1.3, 10, s.trunk_rgb, up=False)]
    top = base + s.trunk_height
    if s.crown == "cones":  # three overlapping cones, each narrower and higher
        h = s.crown_height / 2.0
        for i in range(3):
            r = s.crown_radius * (1.0 - 0.27 * i)
            z = top + i * s.crown_height / 4.0
            parts.append(_frustum((0.0, 0.0, z), r, 0.01, h, 110 - 25 * i, s.crown_rgb))
            parts.append(_disc((0.0, 0.0, z), r, 40 - 8 * i, tuple(0.7 * c for c in s.crown_rgb), up=False))
        return parts
    centre = (0.0, 0.0, top + 0.8 * s.crown_height)
    crown = _ellipsoid(centre, (s.crown_radius, s.crown_radius, s.crown_height), 230, s.crown_rgb)
    parts.append(crown)
    if s.fruit_rgb is not None:  # 12 apples on the crown's upper two thirds
        k = torch.arange(12, dtype=F64) + 0.5
        zc = 0.8 - 1.1 * k / 12
        rc = (1 - zc**2).sqrt()
        u = torch.stack([rc * torch.cos(k * GOLDEN_ANGLE), rc * torch.sin(k * GOLDEN_ANGLE), zc], 1)
        axes = torch.tensor([s.crown_radius, s.crown_radius, s.crown_height], dtype=F64)
        for d in u:
            parts.append(_blob(tuple((torch.tensor(centre, dtype=F64) + 1.02 * axes * d).tolist()), 0.035,
                               s.fruit_rgb))
    return parts


_BUILDERS = {MushroomSpec: _mushroom, SnowmanSpec: _snowman, CactusSpec: _cactus, TreeSpec: _tree}


# ----------------------------------------------------------------------------------- scenes
def _check(prompt: str, variant: str) -> str:
    """The reference prompt `prompt` names (the one rule: fsd2d.priors.base.match_prompt), if `variant` is one of it."""
    prompt = match_prompt(prompt, list(REFERENCE_PROMPTS), empty=False, known_by="the references")
    if variant not in REFERENCE_PROMPTS[prompt]:
        raise InputError(f"unknown variant {variant!r} of {prompt!r}; known: {', '.join(REFERENCE_PROMPTS[prompt])}")
    return prompt


def _covariance(p: _Part) -> torch.Tensor:
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


def _assemble(parts: list[_Part]) -> GaussianScene:
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


def reference_scene(prompt: str, variant: str) -> GaussianScene:
    """The reference object `prompt`/`variant` (see REFERENCE_PROMPTS) as a degree-0 GaussianScene. Deterministic."""
    prompt = _check(prompt, variant)
    spec = REFERENCE_PROMPTS[prompt][variant]
    return _assemble(_BUILDERS[type(spec)](spec))


# ----------------------------------------------------------------------------------- the set
@dataclass(frozen=True)
class _Activated:
    means: torch.Tensor  # [N, 3]
    quats: torch.Tensor  # [N, 4]
    scales: torch.Tensor  # [N, 3]
    opacities: torch.Tensor  # [N]
    colors: torch.Tensor  # [N, 3]


class ReferenceSet:
    """All variants of all reference prompts: K = sum of variants, in REFERENCE_PROMPTS order.

    names   [K] "prompt/variant";  labels [K] index into `prompts`;  prompts: the reference prompts.
    """

    def __init__(self):
        self.prompts: list[str] = list(REFERENCE_PROMPTS)
        self.names: list[str] = [f"{p}/{v}" for p in self.prompts for v in REFERENCE_PROMPTS[p]]
        self.labels = torch.tensor([i for i, p in enumerate(self.prompts) for _ in REFERENCE_PROMPTS[p]])  # [K]
        self.scenes: list[GaussianScene] = [reference_scene(*n.split("/")) for n in self.names]
        self._activated: dict[tuple, list[_Activated]] = {}  # per (device, dtype); independent of the cameras

    def __len__(self) -> int:
        return len(self.names)

    def _tensors(self, device: torch.device, dtype: torch.dtype) -> list[_Activated]:
        key = (str(device), dtype)
        if key not in self._activated:
            with torch.no_grad():
                self._activated[key] = [
                    _Activated(*(t.detach().to(device, dtype) for t in (
                        s.means, s.normalized_quats(), s.scales(), s.opacities(), s.colors())))
                    for s in self.scenes
                ]
        return self._activated[key]

    def render(
        self,
        cameras: list[Camera],
        resolution: int | None = None,
        background: tuple[float, float, float] = DEFAULT_BACKGROUND,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ) -> RenderOutput:
        """The K references at the C cameras: rgb [K, C, 3, R, R] in [0, 1], alpha and depth [K, C, 1, R, R].

        Cameras must be square and share one size; `resolution` (optional) re-renders them at R x R
        pixels by scaling their intrinsics (same fov). One render call (over all C cameras) per reference:
        references are never composited together. Background: RGB in [0, 1], white by default.
        dtype None: float32 (gsplat on CUDA; on CPUs the reference renderer is ~2x faster in float32 than
        in float64 now that it clamps exp()'s argument away from subnormals).
        """
        viewmats, Ks = stack_cameras(cameras)  # [C, 4, 4], [C, 3, 3]
        w, h = cameras[0].width, cameras[0].height
        if w != h:
            raise InputError(f"reference renders are square; got cameras of {w} x {h} pixels")
        if resolution is not None and resolution != w:
            if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution <= 0:
                raise InputError(f"resolution must be a positive int, got {resolution!r}")
            Ks = Ks.clone()
            Ks[:, :2] *= resolution / w  # fx, fy, cx, cy scale with the image side
            w = h = resolution
        device = torch.device(device)
        dtype = dtype or torch.float32
        viewmats, Ks = viewmats.to(device, dtype), Ks.to(device, dtype)
        bg = torch.tensor(background, dtype=dtype, device=device)
        if bg.shape != (3,):
            raise InputError(f"background must be one RGB triple, got {background!r}")
        with torch.no_grad():
            outs = [render(a.means, a.quats, a.scales, a.opacities, a.colors, viewmats, Ks, w, h, bg)
                    for a in self._tensors(device, dtype)]
        return RenderOutput(
            rgb=torch.stack([o.rgb for o in outs]),  # [K, C, 3, R, R]
            alpha=torch.stack([o.alpha for o in outs]),  # [K, C, 1, R, R]
            depth=torch.stack([o.depth for o in outs]),  # [K, C, 1, R, R]
        )
