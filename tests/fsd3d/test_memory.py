"""--seed-batch's default on CUDA (fsd3d/memory.py): the autograd bytes it counts, and the seeds it lets through."""
import pytest
import torch

from fsd3d.cameras import CameraRanges, sample_cameras
from fsd3d.config import Gen3DConfig
from fsd3d.run import load_scene_prior, seed_batch
from fsd3d.memory import GIB, saved_bytes, seeds_that_fit, view_bytes
from fsd3d.config import Train3DConfig
from fsd3d.checkpoint import initial_state
from fsd3d.settings import resolve


def test_saved_bytes_counts_each_saved_storage_once():
    x = torch.rand(1000, dtype=torch.float64, requires_grad=True)
    y = torch.rand(1000, dtype=torch.float64, requires_grad=True)
    w = torch.rand(1000, dtype=torch.float64)
    assert saved_bytes(lambda: x * y) == 2 * 8000  # mul saves each operand for the other's gradient
    assert saved_bytes(lambda: x * w) == 8000  # only w: nothing needs the gradient of w
    assert saved_bytes(lambda: (x * y) * y) == 3 * 8000  # x, y (saved twice, counted once) and the product
    with torch.no_grad():
        assert saved_bytes(lambda: x * y) == 0


def test_seeds_that_fit_keeps_the_reserve_and_stays_in_range():
    assert seeds_that_fit(24 * GIB, 2 * GIB, 8) == 8  # (0.85 x 24 - 1) / 2 = 9.7, capped at the 8 seeds
    assert seeds_that_fit(24 * GIB, 3 * GIB, 8) == 6  # (0.85 x 24 - 1) / 3 = 6.47
    assert seeds_that_fit(2 * GIB, 3 * GIB, 8) == 1  # never 0: one seed always runs
    assert seeds_that_fit(80 * GIB, 0, 5) == 5


def test_a_views_bytes_add_up_and_leave_the_scene_untouched(tiny_sd_path):
    prior = load_scene_prior(Gen3DConfig(model=str(tiny_sd_path), prompt="a cat", resolution=32))
    train = resolve(Gen3DConfig(model=str(tiny_sd_path), prompt="a cat", train=Train3DConfig(num_gaussians=200)),
                    prior).train
    scene = initial_state(train, 0).scene
    cams = sample_cameras(1, CameraRanges(), torch.Generator().manual_seed(0), 32, 32)
    bg = torch.ones(3)
    per_view = view_bytes(prior, scene, cams, bg, clamp=True)
    assert per_view > 32 * 32 * 3 * 4  # at least the render itself, in float32
    from fsd3d.renderer import render_scene

    def views(k):
        return prior.prior.encode(render_scene(scene, cams * k, bg).rgb.clamp(0, 1))

    # linear in the views to 2 %: the few saved tensors sized by the Gaussians, not the views, change little
    assert saved_bytes(lambda: views(4)) - saved_bytes(lambda: views(1)) == pytest.approx(3 * per_view, rel=0.02)
    assert all(p.grad is None for p in scene.parameters())


def test_the_cpu_runs_every_seed_together_unless_told(tiny_sd_path):
    prior = load_scene_prior(Gen3DConfig(model=str(tiny_sd_path), prompt="a cat", resolution=16))
    config = Gen3DConfig(seeds=(0, 1, 2), train=Train3DConfig(num_gaussians=50))
    train = resolve(config, prior).train
    states = {s: initial_state(train, s) for s in config.seeds}
    assert seed_batch(prior, config, train, states) == 3
    assert seed_batch(prior, Gen3DConfig(seeds=(0, 1, 2), seed_batch=2), train, states) == 2
