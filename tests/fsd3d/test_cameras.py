"""Orbit cameras (fsd3d.cameras): positions and rigidity, the pole, intrinsics, sampling in range, bad input."""
from __future__ import annotations

import math

import pytest
import torch

from fsd2d.errors import InputError
from fsd3d.cameras import CameraRanges, intrinsics, orbit_camera, sample_cameras, stack_cameras

F64 = torch.float64


@pytest.mark.parametrize(
    "elevation, azimuth, radius", [(0.0, 0.0, 2.0), (30.0, 45.0, 1.5), (-20.0, 200.0, 3.0), (90.0, 10.0, 1.0)]
)
def test_orbit_camera_position_and_rigidity(elevation, azimuth, radius):
    cam = orbit_camera(elevation, azimuth, radius, 50.0, 32, 24, dtype=F64)
    e, a = math.radians(elevation), math.radians(azimuth)
    expected = radius * torch.tensor([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)], dtype=F64)
    torch.testing.assert_close(cam.position, expected, atol=1e-12, rtol=0)
    R = cam.viewmat[:3, :3]
    torch.testing.assert_close(R @ R.T, torch.eye(3, dtype=F64), atol=1e-12, rtol=0)
    assert torch.linalg.det(R).item() == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(cam.viewmat[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=F64))
    # The origin sits straight ahead of the camera at depth = radius.
    origin_cam = cam.viewmat @ torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=F64)
    torch.testing.assert_close(origin_cam[:3], torch.tensor([0.0, 0.0, radius], dtype=F64), atol=1e-12, rtol=0)
    assert (cam.elevation, cam.azimuth, cam.radius, cam.fov) == (elevation, azimuth, radius, 50.0)


def test_orbit_camera_pole_is_continuous():
    at_pole = orbit_camera(90.0, 30.0, 2.0, 50.0, 16, 16, dtype=F64).viewmat
    near_pole = orbit_camera(90.0 - 1e-7, 30.0, 2.0, 50.0, 16, 16, dtype=F64).viewmat
    assert torch.isfinite(at_pole).all()
    torch.testing.assert_close(at_pole, near_pole, atol=1e-7, rtol=0)


def test_intrinsics():
    K = intrinsics(60.0, 64, 48, dtype=F64)
    f = 0.5 * 48 / math.tan(math.radians(30.0))
    torch.testing.assert_close(K, torch.tensor([[f, 0, 32.0], [0, f, 24.0], [0, 0, 1.0]], dtype=F64))


def test_sample_cameras_deterministic_and_in_range():
    ranges = CameraRanges(elevation=(-10.0, 40.0), azimuth=(-180.0, 180.0), radius=(1.5, 2.0), fov=(40.0, 65.0))
    a = sample_cameras(16, ranges, torch.Generator().manual_seed(3), 32, 32)
    b = sample_cameras(16, ranges, torch.Generator().manual_seed(3), 32, 32)
    c = sample_cameras(16, ranges, torch.Generator().manual_seed(4), 32, 32)

    def params(cams):
        return [(x.elevation, x.azimuth, x.radius, x.fov) for x in cams]

    assert params(a) == params(b)
    for x, y in zip(a, b):
        assert torch.equal(x.viewmat, y.viewmat) and torch.equal(x.K, y.K)
    assert [x.azimuth for x in a] != [x.azimuth for x in c]
    for cam in a:
        assert -10.0 <= cam.elevation <= 40.0 and -180.0 <= cam.azimuth <= 180.0
        assert 1.5 <= cam.radius <= 2.0 and 40.0 <= cam.fov <= 65.0
        assert cam.viewmat.dtype == torch.float32 and (cam.width, cam.height) == (32, 32)
    viewmats, Ks = stack_cameras(a)
    assert viewmats.shape == (16, 4, 4) and Ks.shape == (16, 3, 3)
    fixed = sample_cameras(2, CameraRanges(fov=(50.0, 50.0)), torch.Generator().manual_seed(0), 8, 8)
    assert all(cam.fov == 50.0 for cam in fixed)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"elevation": (40.0, 0.0)},  # inverted
        {"azimuth": (0.0,)},  # not a pair
        {"radius": (0.0, 1.0)},
        {"radius": (-1.0, 1.0)},
        {"fov": (0.0, 60.0)},
        {"fov": (40.0, 180.0)},
        {"elevation": (0.0, 91.0)},
        {"fov": (float("nan"), 60.0)},
    ],
)
def test_camera_ranges_reject_bad_values(kwargs):
    with pytest.raises(InputError):
        CameraRanges(**kwargs)


def test_camera_input_errors():
    with pytest.raises(InputError):
        orbit_camera(0.0, 0.0, 0.0, 50.0, 8, 8)
    with pytest.raises(InputError):
        orbit_camera(0.0, 0.0, 2.0, 180.0, 8, 8)
    with pytest.raises(InputError):
        orbit_camera(95.0, 0.0, 2.0, 50.0, 8, 8)
    with pytest.raises(InputError):
        sample_cameras(-1, CameraRanges(), torch.Generator(), 8, 8)
    with pytest.raises(InputError):
        stack_cameras([])
    with pytest.raises(InputError):
        stack_cameras([orbit_camera(0, 0, 2, 50, 8, 8), orbit_camera(0, 0, 2, 50, 16, 8)])
