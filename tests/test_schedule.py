"""Noise schedule and timestep schedules."""
import math

import pytest
import torch
from diffusers import DDIMScheduler

from fsd2d.errors import InputError
from fsd2d.schedule import Anneal, scaled_linear_schedule, timesteps


def test_scaled_linear_matches_diffusers():
    ours = scaled_linear_schedule().alphas_cumprod
    ref = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod
    assert torch.allclose(ours, ref.double(), atol=1e-6)
    assert ours.dtype == torch.float64 and torch.all(ours[1:] < ours[:-1])


def test_alpha_sigma_variance_preserving_and_clean_end():
    s = scaled_linear_schedule()
    t = torch.tensor([-1, 0, 500, 999])
    a, sig = s.alpha_sigma(t, torch.float64, "cpu")
    assert a.shape == (4, 1, 1, 1)
    assert torch.allclose(a**2 + sig**2, torch.ones_like(a))
    assert a[0].item() == 1.0 and sig[0].item() == 0.0  # t = -1 is the clean end of a DDIM grid
    assert s.snr_ratio(torch.tensor([-1])).item() == 0.0
    r = s.snr_ratio(torch.arange(1000))
    assert torch.all(r[1:] > r[:-1])  # sigma/alpha grows with t


@pytest.mark.parametrize("kind", list(Anneal))
def test_annealing_is_monotone_with_endpoints(kind):
    t = timesteps(50, 20, 980, kind)
    assert t.dtype == torch.long and t.shape == (50,)
    assert t[0].item() == 980 and t[-1].item() == 20
    assert torch.all(t[1:] <= t[:-1])


def test_sqrt_anneals_faster_early_than_linear():
    lin, sq = timesteps(101, 0, 1000 - 1, Anneal.LINEAR), timesteps(101, 0, 999, Anneal.SQRT)
    assert sq[25] < lin[25]  # sqrt(0.25) = 0.5 of the range gone at a quarter of the run
    assert sq[25].item() == round(999 - 999 * math.sqrt(0.25))


def test_bad_ranges_are_input_errors():
    with pytest.raises(InputError, match="steps"):
        timesteps(0, 20, 980)
    with pytest.raises(InputError, match="t_min"):
        timesteps(10, 500, 100)
    with pytest.raises(InputError, match="t_max"):
        timesteps(10, 0, 1000)
