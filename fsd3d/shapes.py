"""The four kinds of reference objects (mushroom, snowman, cactus, tree): a spec in, a GaussianScene out.

A spec (a frozen dataclass per kind) names the parts' sizes and colours; its builder places the parts
(fsd3d.surfaces) and `build_scene` assembles them, centred in z. The catalogue of specs, the variants
of each reference prompt, is `fsd3d.references.REFERENCE_PROMPTS`.

Conventions (those of `fsd3d.cameras`): world right-handed, +z up, lengths before centring in z; the front
of an object faces +x (azimuth 0): the snowman's carrot nose, eyes and buttons point to +x.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from fsd3d.gaussians import GaussianScene
from fsd3d.surfaces import (
    F64,
    GOLDEN_ANGLE,
    RGB,
    Part,
    assemble,
    blob,
    disc,
    ellipsoid,
    frustum,
    rotate,
    torus,
)

__all__ = ["CactusSpec", "MushroomSpec", "SnowmanSpec", "Spec", "TreeSpec", "build_scene"]


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

Spec = MushroomSpec | SnowmanSpec | CactusSpec | TreeSpec


# ----------------------------------------------------------------------------------- objects
def _mushroom(s: MushroomSpec) -> list[Part]:
    stem = frustum((0.0, 0.0, -s.stem_height), s.stem_radius * 1.15, s.stem_radius, s.stem_height, 70, s.stem_rgb)
    foot = disc((0.0, 0.0, -s.stem_height), s.stem_radius * 1.15, 12, s.stem_rgb, up=False)
    cap = ellipsoid((0.0, 0.0, 0.0), (s.cap_radius, s.cap_radius, s.cap_height), 170, s.cap_rgb, (0.0, 1.0))
    if s.dots_rgb is not None:
        # 10 spots spread over the cap (Fibonacci directions on the upper half), angular radius 0.28 rad
        k = torch.arange(10, dtype=F64) + 0.5
        zc = 0.95 - 0.75 * k / 10
        rc = (1 - zc**2).sqrt()
        centres = torch.stack([rc * torch.cos(k * GOLDEN_ANGLE), rc * torch.sin(k * GOLDEN_ANGLE), zc], 1)
        u = F.normalize((cap.means / torch.tensor([s.cap_radius, s.cap_radius, s.cap_height], dtype=F64)), dim=1)
        spotted = ((u @ centres.T) > math.cos(0.28)).any(dim=1)
        cap.colors[spotted] = torch.tensor(s.dots_rgb, dtype=F64)
    gills = disc((0.0, 0.0, 0.0), s.cap_radius * 0.98, 60, tuple(0.6 * c + 0.3 for c in s.stem_rgb), up=False)
    return [stem, foot, cap, gills]


def _snowman(s: SnowmanSpec) -> list[Part]:
    parts = []
    for z, r in s.balls:
        n = round(230 * r * r / sum(b[1] ** 2 for b in s.balls))  # ~230 Gaussians of snow in all
        parts.append(ellipsoid((0.0, 0.0, z), (r, r, r), max(n, 40), SNOW))
    hz, hr = s.balls[-1]
    # carrot nose: a cone along +x from inside the head
    nose = frustum((0.0, 0.0, -0.2 * hr), 0.28 * hr, 0.02, 1.5 * hr, 24, CARROT)
    parts.append(rotate(nose, (1.0, 0.0, 0.0), (0.0, 0.0, 0.0)))
    parts[-1].means += torch.tensor([0.7 * hr, 0.0, hz], dtype=F64)
    for side in (-1.0, 1.0):  # eyes
        d = F.normalize(torch.tensor([1.0, 0.38 * side, 0.35], dtype=F64), dim=0)
        parts.append(blob(tuple((torch.tensor([0.0, 0.0, hz]) + 1.02 * hr * d).tolist()), 0.14 * hr, COAL))
    bz, br = s.balls[-2]
    for dz in (-0.35, 0.05, 0.45):  # buttons on the ball under the head
        d = F.normalize(torch.tensor([1.0, 0.0, dz], dtype=F64), dim=0)
        parts.append(blob(tuple((torch.tensor([0.0, 0.0, bz]) + 1.02 * br * d).tolist()), 0.1 * br, COAL))
    if s.scarf_rgb is not None:
        neck = hz - 0.82 * hr
        parts.append(torus((0.0, 0.0, neck), 0.62 * hr, 0.28 * hr, 60, s.scarf_rgb))
        tail = frustum((0.0, 0.0, 0.0), 0.22 * hr, 0.2 * hr, 1.3 * hr, 16, s.scarf_rgb)  # hanging end, at the back-left
        tail = rotate(tail, (0.0, 0.0, -1.0), (0.0, 0.0, 0.0))
        tail.means += torch.tensor([-0.25 * hr, 0.65 * hr, neck], dtype=F64)
        parts.append(tail)
    if s.stick_arms:
        for side in (-1.0, 1.0):
            arm = frustum((0.0, 0.0, 0.0), 0.03, 0.016, 0.2, 30, (0.4, 0.25, 0.1))
            arm = rotate(arm, (0.0, side, 0.7), (0.0, 0.0, 0.0))
            arm.means += torch.tensor([0.0, side * 0.8 * br, bz + 0.3 * br], dtype=F64)
            parts.append(arm)
    if s.hat == "top":
        top = hz + 0.85 * hr
        parts.append(disc((0.0, 0.0, top), 1.45 * hr, 30, s.hat_rgb, up=True))
        parts.append(disc((0.0, 0.0, top - 0.01), 1.45 * hr, 30, s.hat_rgb, up=False))
        parts.append(frustum((0.0, 0.0, top), 0.85 * hr, 0.85 * hr, 1.1 * hr, 50, s.hat_rgb))
        parts.append(disc((0.0, 0.0, top + 1.1 * hr), 0.85 * hr, 16, s.hat_rgb, up=True))
    elif s.hat == "beanie":
        parts.append(ellipsoid((0.0, 0.0, hz + 0.15 * hr), (1.1 * hr, 1.1 * hr, 1.5 * hr), 70, s.hat_rgb, (0.0, 1.0)))
        parts.append(blob((0.0, 0.0, hz + 1.75 * hr), 0.35 * hr, (1.0, 1.0, 1.0), n=12, shaded=True))
    return parts


def _cactus(s: CactusSpec) -> list[Part]:
    parts = []
    if s.body == "column":
        r, bottom, top = s.column_radius, -0.45, s.column_top
        if s.pot_rgb is not None:  # a pot around the column's foot
            parts += _pot(-0.45, 0.18, 0.14, 0.18, s.pot_rgb)
            bottom = -0.3
        parts.append(frustum((0.0, 0.0, bottom), r, r, top - bottom, 140, s.body_rgb))
        parts.append(ellipsoid((0.0, 0.0, top), (r, r, r), 30, s.body_rgb, (0.0, 1.0)))
        for side, z_elbow, z_tip in s.arms:
            ra, reach = 0.065, r + 0.1
            arm = frustum((0.0, 0.0, 0.0), ra, ra, reach, 30, s.body_rgb)
            arm = rotate(arm, (0.0, side, 0.0), (0.0, 0.0, 0.0))
            arm.means += torch.tensor([0.0, 0.0, z_elbow], dtype=F64)
            parts.append(arm)
            parts.append(ellipsoid((0.0, side * reach, z_elbow), (ra, ra, ra), 20, s.body_rgb))
            parts.append(frustum((0.0, side * reach, z_elbow), ra, ra, z_tip - z_elbow, 40, s.body_rgb))
            parts.append(ellipsoid((0.0, side * reach, z_tip), (ra, ra, ra), 14, s.body_rgb, (0.0, 1.0)))
        flower_z, flower_r = top + r, 0.6 * r + 0.015
    else:
        if s.pot_rgb is not None:
            pot_bottom, pot_h = -0.3, 0.22
            parts += _pot(pot_bottom, pot_h, 0.17, 0.23, s.pot_rgb)
            parts.append(ellipsoid((0.0, 0.0, pot_bottom + pot_h + 0.1), (0.22, 0.22, 0.2), 170, s.body_rgb,
                                    (-0.5, 1.0)))
            flower_z, flower_r = pot_bottom + pot_h + 0.3, 0.09
        else:  # a big ball on the ground (its flat foot hidden below)
            parts.append(ellipsoid((0.0, 0.0, 0.0), (0.33, 0.33, 0.3), 230, s.body_rgb, (-0.8, 1.0)))
            flower_z, flower_r = 0.3, 0.11
    if s.flower_rgb is not None:
        for k in range(6):  # petals around a yellow-white centre
            a = 2 * math.pi * k / 6
            parts.append(blob((0.6 * flower_r * math.cos(a), 0.6 * flower_r * math.sin(a), flower_z),
                               0.4 * flower_r, s.flower_rgb, shaded=False))
        parts.append(blob((0.0, 0.0, flower_z + 0.01), 0.3 * flower_r, (1.0, 0.95, 0.7)))
    return parts


def _pot(bottom: float, height: float, r_bottom: float, r_top: float, color: RGB) -> list[Part]:
    """A flower pot: a widening frustum, its floor and a rolled rim."""
    return [frustum((0.0, 0.0, bottom), r_bottom, r_top, height, 110, color),
            disc((0.0, 0.0, bottom), r_bottom, 20, color, up=False),
            torus((0.0, 0.0, bottom + height), r_top, 0.025, 50, color)]


def _tree(s: TreeSpec) -> list[Part]:
    base = -0.45
    parts = [frustum((0.0, 0.0, base), s.trunk_radius * 1.3, s.trunk_radius, s.trunk_height, 60, s.trunk_rgb),
             disc((0.0, 0.0, base), s.trunk_radius * 1.3, 10, s.trunk_rgb, up=False)]
    top = base + s.trunk_height
    if s.crown == "cones":  # three overlapping cones, each narrower and higher
        h = s.crown_height / 2.0
        for i in range(3):
            r = s.crown_radius * (1.0 - 0.27 * i)
            z = top + i * s.crown_height / 4.0
            parts.append(frustum((0.0, 0.0, z), r, 0.01, h, 110 - 25 * i, s.crown_rgb))
            parts.append(disc((0.0, 0.0, z), r, 40 - 8 * i, tuple(0.7 * c for c in s.crown_rgb), up=False))
        return parts
    centre = (0.0, 0.0, top + 0.8 * s.crown_height)
    crown = ellipsoid(centre, (s.crown_radius, s.crown_radius, s.crown_height), 230, s.crown_rgb)
    parts.append(crown)
    if s.fruit_rgb is not None:  # 12 apples on the crown's upper two thirds
        k = torch.arange(12, dtype=F64) + 0.5
        zc = 0.8 - 1.1 * k / 12
        rc = (1 - zc**2).sqrt()
        u = torch.stack([rc * torch.cos(k * GOLDEN_ANGLE), rc * torch.sin(k * GOLDEN_ANGLE), zc], 1)
        axes = torch.tensor([s.crown_radius, s.crown_radius, s.crown_height], dtype=F64)
        for d in u:
            parts.append(blob(tuple((torch.tensor(centre, dtype=F64) + 1.02 * axes * d).tolist()), 0.035,
                               s.fruit_rgb))
    return parts


_BUILDERS = {MushroomSpec: _mushroom, SnowmanSpec: _snowman, CactusSpec: _cactus, TreeSpec: _tree}


def build_scene(spec: Spec) -> GaussianScene:
    """The object a spec describes as a degree-0 GaussianScene, centred in z. Deterministic."""
    return assemble(_BUILDERS[type(spec)](spec))
