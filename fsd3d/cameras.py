"""Orbit cameras around an object at the origin: the one place where camera conventions enter.

Conventions (used by the renderer, the world-map noise and everything else in `fsd3d`):

World      right-handed, +z up, the object centred at the origin.
Sphere     a camera is given by
             elevation  degrees, 0 = on the horizon, +90 = straight above, -90 = straight below;
             azimuth    degrees, 0 = on the +x axis, 90 = on the +y axis (counter-clockwise seen
                        from above, i.e. from +z);
             radius     distance from the camera centre to the origin (> 0);
             fov        vertical field of view in degrees, in (0, 180).
           The camera centre is radius * (cos e cos a, cos e sin a, sin e). It looks at the origin and
           world +z projects to "up" in the image.
Matrices   `viewmat` [4, 4] is the OpenCV world-to-camera transform (camera x right, y down,
           z forward): x_cam = R x_world + t. `K` [3, 3] holds the pinhole intrinsics
           fx = fy = 0.5 * H / tan(fov / 2), cx = W / 2, cy = H / 2; pixel (i, j) has its centre at
           (j + 0.5, i + 0.5), so the image centre (W/2, H/2) is the optical axis. These are exactly
           gsplat's `viewmats` / `Ks`.
Poles      The camera's right vector is (-sin a, cos a, 0) at every elevation: the limit of
           normalize(forward x z) for |e| < 90, so at e = +-90 (where forward is parallel to z and
           the cross product vanishes) the camera keeps a stable, azimuth-dependent roll and the
           pose is continuous in elevation up to and including the poles.

Consequence worth remembering: for the azimuth-0, elevation-0 camera (on +x looking at -x),
image right is world +y and image up is world +z.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fsd2d.errors import InputError

__all__ = ["Camera", "CameraRanges", "intrinsics", "orbit_camera", "sample_cameras", "stack_cameras"]


@dataclass(frozen=True, eq=False)
class Camera:
    """One pinhole camera on the orbit sphere (see the module docstring for conventions).

    `eq=False`: cameras compare and hash by identity (tensor fields have no boolean equality).
    """

    viewmat: torch.Tensor  # [4, 4] OpenCV world-to-camera
    K: torch.Tensor  # [3, 3] pinhole intrinsics, pixels
    width: int
    height: int
    elevation: float  # degrees
    azimuth: float  # degrees
    radius: float
    fov: float  # vertical, degrees

    @property
    def position(self) -> torch.Tensor:
        """Camera centre in world coordinates [3]: -R^T t."""
        R, t = self.viewmat[:3, :3], self.viewmat[:3, 3]
        return -(R.transpose(0, 1) @ t)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Camera:
        """A copy with `viewmat` and `K` moved/cast (the spherical parameters are unchanged)."""
        return Camera(
            self.viewmat.to(device=device, dtype=dtype),
            self.K.to(device=device, dtype=dtype),
            self.width,
            self.height,
            self.elevation,
            self.azimuth,
            self.radius,
            self.fov,
        )


def _check_size(width: int, height: int) -> None:
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise InputError(f"image {name} must be a positive int, got {v!r}")


def intrinsics(fov: float, width: int, height: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """K [3, 3] for a vertical fov (degrees): fx = fy = 0.5 * H / tan(fov/2), (cx, cy) = (W/2, H/2)."""
    _check_size(width, height)
    if not (0.0 < fov < 180.0):
        raise InputError(f"fov must be in (0, 180) degrees, got {fov}")
    f = 0.5 * height / math.tan(math.radians(fov) / 2.0)
    K = [[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]]
    return torch.tensor(K, dtype=torch.float64).to(dtype=dtype, device=device, non_blocking=True)  # no host sync


def orbit_camera(
    elevation: float,
    azimuth: float,
    radius: float,
    fov: float,
    width: int,
    height: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Camera:
    """A camera at (elevation, azimuth, radius) looking at the origin, +z up in the image.

    The pose is built in float64 and cast to `dtype` at the end. Elevation must lie in
    [-90, 90]; at the poles the roll is the limit described in the module docstring.
    """
    elevation, azimuth, radius, fov = float(elevation), float(azimuth), float(radius), float(fov)
    if not all(math.isfinite(v) for v in (elevation, azimuth, radius, fov)):
        raise InputError(f"camera parameters must be finite, got elevation={elevation}, "
                         f"azimuth={azimuth}, radius={radius}, fov={fov}")
    if not (-90.0 <= elevation <= 90.0):
        raise InputError(f"elevation must be in [-90, 90] degrees, got {elevation}")
    if radius <= 0.0:
        raise InputError(f"radius must be > 0, got {radius}")
    K = intrinsics(fov, width, height, dtype=dtype, device=device)  # also checks fov, width, height

    e, a = math.radians(elevation), math.radians(azimuth)
    ce, se, ca, sa = math.cos(e), math.sin(e), math.cos(a), math.sin(a)
    position = torch.tensor([radius * ce * ca, radius * ce * sa, radius * se], dtype=torch.float64)  # [3]
    forward = torch.tensor([-ce * ca, -ce * sa, -se], dtype=torch.float64)  # [3] unit, towards the origin
    right = torch.tensor([-sa, ca, 0.0], dtype=torch.float64)  # [3] unit, = normalize(forward x z) off the poles
    down = torch.linalg.cross(forward, right)  # [3] unit, OpenCV y = z x x
    R = torch.stack([right, down, forward], dim=0)  # [3, 3] rows: camera axes in world coordinates
    viewmat = torch.eye(4, dtype=torch.float64)
    viewmat[:3, :3] = R
    viewmat[:3, 3] = -R @ position
    return Camera(viewmat.to(dtype=dtype, device=device, non_blocking=True), K, width, height, elevation, azimuth, radius, fov)


@dataclass(frozen=True)
class CameraRanges:
    """Closed intervals (lo, hi) that `sample_cameras` draws from uniformly; lo == hi fixes a value.

    Elevation and azimuth follow the authors' Stable Diffusion 2.1 setting (elevation 0-40, azimuth
    -180..180). Our scenes are objects inside a ball of radius 0.47 centred at the origin (the
    embedded references), and the defaults are chosen so that such an object fills about 70 % of the
    frame: the half-height of the frame at the origin is q = radius * tan(fov / 2), and radius 1.55-1.75
    with fov 40-46 degrees (the narrow end of the authors' 40-65) keeps q in [0.56, 0.74], 0.65 at the
    middle (1.65, 43 deg). Measured on the 20 references at the 8 evaluation views (32 px): the bounding
    box of alpha > 0.5 spans 0.67 of the image side on average (0.53 with the former 1.5-2.0, 40-65),
    and nothing reaches the border at the closest, narrowest camera (alpha <= 0.02 on the border rows and
    columns; `python benchmarks/reference_sheet.py`).
    """

    elevation: tuple[float, float] = (0.0, 40.0)
    azimuth: tuple[float, float] = (-180.0, 180.0)
    radius: tuple[float, float] = (1.55, 1.75)
    fov: tuple[float, float] = (40.0, 46.0)
    # radius relative to the fov (MVDream-threestudio's `relative_radius`): the camera sits at r / tan(fov / 2), so
    # r is the half-height of the frame at the object, whatever the fov
    relative_radius: bool = False

    def distance(self, r: float, fov: float) -> float:
        """The camera's distance to the origin for a drawn radius r and fov (degrees)."""
        return r / math.tan(math.radians(fov) / 2.0) if self.relative_radius else r

    def evaluation_cameras(self, resolution: int, n: int = 8) -> list["Camera"]:
        """The one definition of a run's evaluation views (metrics, views.png, turntable, mesh IoU, viewer): n
        cameras at azimuths 0, 360/n, ... at the middle of these ranges' elevation, radius (as a distance) and fov,
        resolution x resolution pixels. Give the run's resolved ranges (fsd3d.settings.resolve, run.json's
        train_resolved.cameras): the defaults here are the embedded prior's, not a backbone's."""
        mid = lambda rng: 0.5 * (rng[0] + rng[1])  # noqa: E731
        fov = mid(self.fov)
        return [orbit_camera(mid(self.elevation), 360.0 * i / n, self.distance(mid(self.radius), fov), fov,
                             resolution, resolution) for i in range(n)]

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise InputError for malformed, non-finite or inverted ranges, or values out of bounds."""
        for name in ("elevation", "azimuth", "radius", "fov"):
            rng = getattr(self, name)
            if not isinstance(rng, (tuple, list)) or len(rng) != 2:
                raise InputError(f"camera range {name} must be a (lo, hi) pair, got {rng!r}")
            lo, hi = rng
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise InputError(f"camera range {name} must be finite, got ({lo}, {hi})")
            if lo > hi:
                raise InputError(f"camera range {name} is inverted: lo={lo} > hi={hi}")
        if self.elevation[0] < -90.0 or self.elevation[1] > 90.0:
            raise InputError(f"elevation range must lie within [-90, 90] degrees, got {self.elevation}")
        if self.radius[0] <= 0.0:
            raise InputError(f"radius range must be > 0, got {self.radius}")
        if self.fov[0] <= 0.0 or self.fov[1] >= 180.0:
            raise InputError(f"fov range must lie within (0, 180) degrees, got {self.fov}")


def sample_cameras(
    n: int,
    ranges: CameraRanges,
    generator: torch.Generator,
    width: int,
    height: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> list[Camera]:
    """n cameras with elevation, azimuth, radius and fov each uniform in its range.

    Deterministic given the generator's state: one draw u = torch.rand(n, 4) in float64 (columns
    elevation, azimuth, radius, fov), value = lo + (hi - lo) * u (the distance: `ranges.distance(radius, fov)`).
    `generator` must be a CPU generator.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InputError(f"number of cameras must be an int >= 0, got {n!r}")
    ranges.validate()
    _check_size(width, height)
    u = torch.rand(n, 4, generator=generator, dtype=torch.float64)  # [n, 4]
    lo = torch.tensor([ranges.elevation[0], ranges.azimuth[0], ranges.radius[0], ranges.fov[0]], dtype=torch.float64)
    hi = torch.tensor([ranges.elevation[1], ranges.azimuth[1], ranges.radius[1], ranges.fov[1]], dtype=torch.float64)
    params = lo + (hi - lo) * u  # [n, 4]
    return [orbit_camera(e, a, ranges.distance(r, f), f, width, height, dtype=dtype, device=device)
            for e, a, r, f in params.tolist()]


def stack_cameras(cameras: list[Camera]) -> tuple[torch.Tensor, torch.Tensor]:
    """(viewmats [C, 4, 4], Ks [C, 3, 3]) for a non-empty list of cameras of one image size."""
    if len(cameras) == 0:
        raise InputError("stack_cameras needs at least one camera, got an empty list")
    sizes = {(c.width, c.height) for c in cameras}
    if len(sizes) != 1:
        raise InputError(f"cameras must share one image size (width, height), got {sorted(sizes)}")
    viewmats = torch.stack([c.viewmat for c in cameras], dim=0)  # [C, 4, 4]
    Ks = torch.stack([c.K for c in cameras], dim=0)  # [C, 3, 3]
    return viewmats, Ks
