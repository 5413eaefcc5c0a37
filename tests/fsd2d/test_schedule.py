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
    # every schedule starts at t_max; all but the authors' 3D ones (which stop at p = 0.8) end at t_min
    end = 212 if kind in (Anneal.AUTHORS_SD, Anneal.AUTHORS_MVDREAM) else 20
    assert t[0].item() == 980 and t[-1].item() == end
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


def test_dreamtime_prior_by_hand():
    from fsd2d.schedule import DreamTimePrior

    w = DreamTimePrior()(torch.tensor([500, 650, 800, 1100, 400]))
    torch.testing.assert_close(w, torch.tensor([1.0, 1.0, 1.0, math.exp(-0.5), math.exp(-0.5)], dtype=torch.float64))


def test_dreamtime_spends_steps_in_proportion_to_its_weight():
    """t(tau) = argmin_t |sum_{t' >= t} W(t') - tau|: the share of a run's steps with t in an interval is the
    interval's share of W's mass (to one step of tau at each end), and W = sigma/alpha * W_p by Eq. 8-10."""
    from fsd2d.schedule import DreamTimePrior, dreamtime_weights

    s = scaled_linear_schedule()
    w = dreamtime_weights(s)
    abar = s.alphas_cumprod
    torch.testing.assert_close(w, ((1 - abar) / abar).sqrt() * DreamTimePrior()(torch.arange(1000)))
    # on the plateau [m2, m1] = [500, 800] W_p = 1, so W is the schedule's own sigma/alpha there (snr_ratio)
    torch.testing.assert_close(w[500:801], s.snr_ratio(torch.arange(500, 801)))
    assert torch.all(w[:800] > 0) and torch.all(w[1:501] > w[:500])  # below the plateau W grows with t
    steps = 2001
    t = timesteps(steps, 20, 980, Anneal.DREAMTIME)
    total = w[20:981].sum()
    for lo, hi in ((800, 980), (500, 799), (300, 499), (20, 299)):
        share = float(((t >= lo) & (t <= hi)).sum() / steps)
        mass = float(w[lo : hi + 1].sum() / total)
        assert abs(share - mass) < 3.0 / steps + float(w[lo] / total) + float(w[hi] / total), (lo, hi, share, mass)
    # time-prioritised: more steps on the plateau and above it than the linear schedule gives them
    lin = timesteps(steps, 20, 980)
    assert (t >= 500).sum() > (lin >= 500).sum()


def test_dreamtime_timesteps_follow_their_definition():
    """timesteps(..., DREAMTIME) against DreamTime's Eq. 11 evaluated by brute force in plain Python (no cumsum, no
    flips): step k of n takes the t in [t_min, t_max] whose share of W strictly above t is nearest tau = k / (n - 1)
    (ties: the larger t). anneal_fraction, whose p would need the range, refuses DREAMTIME rather than give a
    second schedule. On a flow model W is its own schedule's (SD3's shift 3 here), which the grid follows."""
    from fsd2d.schedule import anneal_fraction, dreamtime_weights, flow_schedule

    for schedule, given in ((scaled_linear_schedule(), None), (flow_schedule(1000, shift=3.0), "flow")):
        w = dreamtime_weights(schedule).double().tolist()
        for t_min, t_max, n in ((100, 900, 41), (20, 980, 7)):
            total = math.fsum(w[t_min : t_max + 1])
            got = timesteps(n, t_min, t_max, Anneal.DREAMTIME, schedule if given else None).tolist()
            for k, t in enumerate(got):
                dist = {u: abs(math.fsum(w[u + 1 : t_max + 1]) / total - k / (n - 1)) for u in range(t_min, t_max + 1)}
                best = min(dist.values())
                assert dist[t] <= best + 1e-12, (given, t_min, t_max, k, t, best)  # nearest (rounding: exact ties)
                assert t == max(u for u, d in dist.items() if d <= best + 1e-12), (given, k, t)  # ties: the larger t
    with pytest.raises(ValueError, match="dreamtime_timesteps"):
        anneal_fraction(torch.linspace(0.0, 1.0, 7, dtype=torch.float64), Anneal.DREAMTIME)


def test_the_authors_3d_schedules_follow_their_knots_and_stop_at_212():
    """runjie-yan/ConsistentFlowDistillation configs/cfd/{sd,mvdream}-stage1.yaml: p = 0, 0.3, 0.6, 0.8 at 0, 10 %
    (MVDream 20 %), 50 % and 100 % of the run, t% = 0.98 - 0.96 p."""
    for kind, second in ((Anneal.AUTHORS_SD, 0.1), (Anneal.AUTHORS_MVDREAM, 0.2)):
        t = timesteps(1001, 20, 980, kind)
        for tau, p in ((0.0, 0.0), (second, 0.3), (0.5, 0.6), (1.0, 0.8)):
            assert int(t[round(tau * 1000)]) == round(980 - 960 * p), (kind, tau)
        assert int(t.min()) == 212 and bool((t[1:] <= t[:-1]).all())  # never below 212, non-increasing
