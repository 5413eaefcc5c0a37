"""Reference 3D objects made of Gaussians: the ground truth behind the embedded reference prior.

Each prompt (mushroom, snowman, cactus, tree) names a kind of object with 5 variants that differ visibly
in silhouette and colour, so that "diversity across seeds" can be measured as reaching different variants
(fsd3d.metrics3d). `python benchmarks/reference_sheet.py` draws them all on one contact sheet. This module
holds the catalogue (`REFERENCE_PROMPTS`: prompt -> variant -> spec), the scenes it names and the set
rendered together (`ReferenceSet`); the geometry that turns a spec into Gaussians is `fsd3d.shapes` (the
objects) on `fsd3d.surfaces` (the flat-Gaussian surfaces they are made of).

Conventions (those of `fsd3d.cameras`): world right-handed, +z up, object centred at the origin
(bounding box centre at 0) and inside the ball of radius `MAX_RADIUS` = 0.47; at the default cameras
(radius 1.55-1.75, fov 40-46 deg) an object fills about 70 % of the frame and stays whole. The front of
an object faces +x (azimuth 0):
the snowman's carrot nose, eyes and buttons point to +x, so its front and back views differ.

Construction (fsd3d.surfaces): deterministic, no randomness; every part is a surface filled with Fibonacci /
sunflower points, each point one flat Gaussian; opacity 0.95, degree-0 SH colour baked with a fixed Lambert
light, ~230-490 Gaussians per object.

Background: references are rendered on WHITE by default (`DEFAULT_BACKGROUND`); a scene compared
with them, or optimised against the reference prior, must be rendered on the same background.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fsd2d.errors import InputError
from fsd2d.priors.base import match_prompt
from fsd3d.cameras import Camera, stack_cameras
from fsd3d.gaussians import GaussianScene
from fsd3d.renderer import RenderOutput, render
from fsd3d.shapes import CactusSpec, MushroomSpec, SnowmanSpec, Spec, TreeSpec, build_scene

__all__ = [
    "DEFAULT_BACKGROUND",
    "MAX_RADIUS",
    "REFERENCE_PROMPTS",
    "ReferenceSet",
    "reference_scene",
]

DEFAULT_BACKGROUND = (1.0, 1.0, 1.0)  # white
MAX_RADIUS = 0.47  # every Gaussian centre lies within this distance of the origin


# prompt -> variant -> spec (descriptions say what each variant looks like).
REFERENCE_PROMPTS: dict[str, dict[str, Spec]] = {
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


# ----------------------------------------------------------------------------------- scenes
def _check(prompt: str, variant: str) -> str:
    """The reference prompt `prompt` names (the one rule: fsd2d.priors.base.match_prompt), if `variant` is one of it."""
    prompt = match_prompt(prompt, list(REFERENCE_PROMPTS), empty=False, known_by="the references")
    if variant not in REFERENCE_PROMPTS[prompt]:
        raise InputError(f"unknown variant {variant!r} of {prompt!r}; known: {', '.join(REFERENCE_PROMPTS[prompt])}")
    return prompt


def reference_scene(prompt: str, variant: str) -> GaussianScene:
    """The reference object `prompt`/`variant` (see REFERENCE_PROMPTS) as a degree-0 GaussianScene. Deterministic."""
    prompt = _check(prompt, variant)
    spec = REFERENCE_PROMPTS[prompt][variant]
    return build_scene(spec)


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
