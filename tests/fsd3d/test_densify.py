"""Seeds batched in one prior call, densification with gsplat's strategies on the CPU reference renderer."""
import math
from dataclasses import replace

import pytest
import torch

from fsd2d.errors import InputError
from fsd3d.cameras import orbit_camera, stack_cameras
from fsd3d.densify import Densify, DensifyConfig, relocation_reference
from fsd3d.gaussians import GaussianScene
from fsd3d.config import Gen3DConfig
from fsd3d.run import load_scene_prior
from fsd3d.renderer import render_reference
from fsd3d.config import NoiseKind, Train3DConfig
from fsd3d.checkpoint import initial_state, load_checkpoint
from fsd3d.settings import resolve
from fsd3d.train import train_seeds
from numerics import RENDER_F32_ATOL

pytestmark = pytest.mark.usefixtures("one_thread")

# 16 px, 200 Gaussians; refinements at steps 3, 6, 9 (start 2, every 3, stop 10)
DENSE = DensifyConfig(start=2, stop=10, every=3, grad_threshold=0.2, cap=400)


def small(strategy: Densify, method: NoiseKind = NoiseKind.FSD, steps: int = 12) -> Gen3DConfig:
    return Gen3DConfig(resolution=16, train=Train3DConfig(
        steps=steps, num_gaussians=200, method=method, checkpoint_every=4, densify=replace(DENSE, strategy=strategy)))


def resolved(train: Train3DConfig, prior) -> Train3DConfig:
    """`train` resolved on the embedded prior (its profile, the prior's own choices)."""
    return resolve(Gen3DConfig(train=train), prior).train


@pytest.fixture(scope="module")
def mushroom_prior():
    return load_scene_prior(small(Densify.NONE))


def same_scene(a: GaussianScene, b: GaussianScene) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


class RowByRow:
    """A scene prior whose view priors evaluate eps one sample at a time: the same kernels on the same shapes
    whatever the batch. The batched call rounds a sample differently at another batch size (MKL's x [B, D] @ y^T
    [D, K]: measured 1e-15 relative on eps in float64, which can move a float32 gradient by an ulp now and then)
    and matches sample by sample to that rounding (test_references.py, test_batched_eps_equals_camera_by_camera)."""

    def __init__(self, scene_prior):
        self.inner = scene_prior

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def view_batch(self, cameras, scale):
        prior, guidance = self.inner.view_batch(cameras, scale)
        return _EpsRowByRow(prior), guidance


class _EpsRowByRow:
    def __init__(self, prior):
        self.inner = prior

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def eps(self, x_t, t, cond):  # [B, C, h, w], [B], [B, ...]
        return torch.cat([self.inner.eps(x_t[i : i + 1], t[i : i + 1], cond[i : i + 1]) for i in range(len(x_t))])


@pytest.mark.parametrize("strategy,method", [(Densify.DEFAULT, NoiseKind.FSD), (Densify.MCMC, NoiseKind.SDS),
                                             (Densify.NONE, NoiseKind.FSD)])
@pytest.mark.numerics
def test_batched_seeds_equal_seeds_run_alone(mushroom_prior, strategy, method):
    """3 seeds advancing together give each seed the same bits as it gets alone (shared cameras, CPU, embedded
    prior, any thread count): the same densification statistics, hence the same Gaussians and parameters.

    Exact by construction: each seed renders, back-propagates through its renderer (the same bits on every run,
    tests/fsd3d/test_renderer.py), steps its Adams and runs its strategy on its own tensors; the prior is evaluated sample
    by sample (`RowByRow`), so the one product whose rounding depends on the batch size is out of the comparison.
    No tolerance would do: a screen gradient one ulp either side of grow_grad2d splits a Gaussian in one run only,
    and Adam's normalised steps grow ulps to ~1e-5 in 12 steps (measured with 2 threads while the renderer's
    backward added with atomics in thread order: 1.1e-5 apart on one quaternion, failing the atol 1e-5 this test
    had about once in 16 runs). A seed mix-up moves the parameters by > 0.1 (the seeds' difference, below)."""
    prior = RowByRow(mushroom_prior)
    train = resolve(small(strategy, method), prior).train
    alone = {s: train_seeds(prior, train, [initial_state(train, s)])[0] for s in (0, 1, 2)}
    batched = train_seeds(prior, train, [initial_state(train, s) for s in (2, 0, 1)])
    for state in batched:
        a = alone[state.seed]
        assert len(state.scene) == len(a.scene), state.seed
        for (name, x), y in zip(a.scene.named_parameters(), state.scene.parameters()):
            assert torch.equal(y, x), (state.seed, name, float((y - x).abs().max()))
        for key, value in (a.densify_state or {}).items():  # the default strategy's grad2d and count: its decisions
            if isinstance(value, torch.Tensor):
                assert torch.equal(state.densify_state[key], value), (state.seed, key)
    assert not same_scene(batched[0].scene, batched[1].scene)  # and the seeds really differ
    assert max((x - y).abs().max() for x, y in zip(batched[0].scene.parameters(), batched[1].scene.parameters())) > 0.1


def test_per_seed_cameras_are_independent_streams(mushroom_prior):
    train = resolved(replace(small(Densify.NONE).train, shared_cameras=False), mushroom_prior)
    a, b = initial_state(train, 0), initial_state(train, 1)
    assert not torch.equal(a.camera_gen.get_state(), b.camera_gen.get_state())
    shared = resolve(small(Densify.NONE), mushroom_prior).train
    assert shared.shared_cameras and torch.equal(initial_state(shared, 0).camera_gen.get_state(),
                                                 initial_state(shared, 1).camera_gen.get_state())


@pytest.mark.parametrize("strategy", [Densify.DEFAULT, Densify.MCMC])
def test_resume_with_densification_is_exact(mushroom_prior, tmp_path, strategy):
    config = small(strategy)
    train = resolve(config, mushroom_prior).train
    full = train_seeds(mushroom_prior, train, [initial_state(train, s) for s in (0, 1)])
    ckpts = {s: tmp_path / f"{s}.pt" for s in (0, 1)}

    def kill(state, log):
        if log.step == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_seeds(mushroom_prior, train, [initial_state(train, s) for s in (0, 1)], ckpts, callback=kill)
    states = [load_checkpoint(ckpts[s], train, torch.device("cpu")) for s in (0, 1)]
    assert [s.step for s in states] == [8, 8]
    assert len(states[0].scene) != train.num_gaussians  # the checkpoint holds a densified scene ...
    assert states[0].densify_state  # ... and the strategy's state
    resumed = train_seeds(mushroom_prior, train, states, ckpts)
    for a, b in zip(full, resumed):
        assert same_scene(a.scene, b.scene), a.seed
        for name in a.optimizers:
            sa, sb = a.optimizers[name].state_dict()["state"][0], b.optimizers[name].state_dict()["state"][0]
            assert all(torch.equal(sa[k], sb[k]) for k in sa), name


def test_seeds_at_different_steps_join_when_the_loop_reaches_them(mushroom_prior):
    train = resolve(small(Densify.DEFAULT), mushroom_prior).train
    full = {s: train_seeds(mushroom_prior, train, [initial_state(train, s)])[0] for s in (0, 1)}
    ahead = initial_state(train, 1)

    def stop(state, log):
        if log.step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_seeds(mushroom_prior, train, [ahead], callback=stop)
    assert ahead.step == 5
    both = train_seeds(mushroom_prior, train, [initial_state(train, 0), ahead])
    assert all(same_scene(s.scene, full[s.seed].scene) for s in both)


def test_default_strategy_grows_prunes_and_respects_its_cap(mushroom_prior):
    train = resolve(small(Densify.DEFAULT), mushroom_prior).train
    counts = []
    state = initial_state(train, 0)
    train_seeds(mushroom_prior, train, [state], callback=lambda s, log: counts.append(len(s.scene)))
    assert counts[0] == 200 and max(counts) > 200  # grew ...
    assert max(counts) <= DENSE.cap  # ... within the cap
    changes = [k + 1 for k in range(1, len(counts)) if counts[k] != counts[k - 1]]
    assert set(changes) <= {3, 6, 9}  # only at refinement steps (start 2 < k < stop 10, k % 3 == 0)
    capped = resolved(replace(train, densify=replace(train.densify, grad_threshold=1e-9, cap=230)), mushroom_prior)
    s = train_seeds(mushroom_prior, capped, [initial_state(capped, 0)])[0]
    assert len(s.scene) == 230  # everything wants to grow; the least opaque are pruned back to the cap
    for opt_name, opt in s.optimizers.items():  # Adam's state follows the parameters
        assert opt.state_dict()["state"][0]["exp_avg"].shape[0] == 230, opt_name


def test_mcmc_strategy_adds_up_to_its_cap(mushroom_prior):
    train = resolve(small(Densify.MCMC), mushroom_prior).train
    s = train_seeds(mushroom_prior, train, [initial_state(train, 0)])[0]
    assert len(s.scene) == math.floor(1.05 * math.floor(1.05 * math.floor(1.05 * 200)))  # +5 % at steps 3, 6, 9
    capped = resolved(replace(train, densify=replace(train.densify, cap=205)), mushroom_prior)
    assert len(train_seeds(mushroom_prior, capped, [initial_state(capped, 0)])[0].scene) == 205


def test_defaults_resolve_from_the_run(mushroom_prior):
    train = resolved(Train3DConfig(), mushroom_prior)
    assert train.densify.strategy is Densify.DEFAULT and train.densify.grad_threshold == 0.3 and train.shared_cameras
    d = DensifyConfig().resolved(steps=150, num_gaussians=1000, grad_threshold=0.3, strategy=Densify.MCMC)
    assert (d.strategy, d.start, d.stop, d.every, d.grad_threshold, d.cap) == (Densify.MCMC, 15, 105, 10, 0.3, 4000)
    d = DensifyConfig(strategy=Densify.NONE, every=7, cap=50).resolved(150, 1000, 0.3, Densify.MCMC)
    assert (d.strategy, d.every, d.cap) == (Densify.NONE, 7, 50)
    from fsd3d.priors3d import StableDiffusionScenePrior

    assert StableDiffusionScenePrior.default_densify is Densify.MCMC  # no measured gradient scale on SD
    with pytest.raises(InputError, match="densify-every"):
        DensifyConfig(every=0).validate()
    with pytest.raises(InputError, match="densify-grad"):
        DensifyConfig(grad_threshold=0.0).validate()


def test_relocation_reference_is_eq9_of_3dgs_mcmc():
    """n = 1 keeps a Gaussian; otherwise n copies with (o', s') composite like the original along a ray
    through the centre: 1 - (1 - o')^n = o (opacity), and the integral of the summed profiles matches (scale)."""
    binoms = torch.tensor([[math.comb(n, k) for k in range(51)] for n in range(51)], dtype=torch.float32)
    o = torch.tensor([0.3, 0.9, 0.5, 0.05], dtype=torch.float32)
    s = torch.rand(4, 3, generator=torch.Generator().manual_seed(0)) + 0.1
    o1, s1 = relocation_reference(o, s, torch.ones(4, dtype=torch.int32), binoms)
    torch.testing.assert_close(o1, o)
    torch.testing.assert_close(s1, s)
    n = torch.tensor([2, 3, 5, 8], dtype=torch.int32)
    on, sn = relocation_reference(o, s, n, binoms)
    torch.testing.assert_close(1 - (1 - on.double()) ** n.double(), o.double(), rtol=1e-6, atol=1e-6)
    # brute force of Eq. 9's denominator: sum_i sum_k C(i-1, k) (-1)^k o'^(k+1) / sqrt(k+1)
    for j in range(4):
        denom = sum(math.comb(i - 1, k) * (-1) ** k * float(on[j]) ** (k + 1) / math.sqrt(k + 1)
                    for i in range(1, int(n[j]) + 1) for k in range(i))
        torch.testing.assert_close(sn[j].double(), (float(o[j]) / denom) * s[j].double(), rtol=1e-5, atol=1e-7)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (gsplat's relocation kernel)")
def test_relocation_reference_matches_gsplat_kernel():
    from gsplat.relocation import compute_relocation

    binoms = torch.tensor([[math.comb(n, k) for k in range(51)] for n in range(51)], dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    o = torch.rand(500, generator=g) * 0.98 + 0.01
    s = torch.rand(500, 3, generator=g) + 0.01
    n = torch.randint(1, 12, (500,), generator=g, dtype=torch.int32)
    ref = relocation_reference(o, s, n, binoms)
    out = compute_relocation(o.cuda(), s.cuda(), n.cuda().clone(), binoms.cuda())
    for a, b in zip(ref, out):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5)


def test_reference_renderer_reports_gsplats_means2d_and_radii():
    """What the strategies read, against gsplat's own PyTorch projection (gsplat/cuda/_torch_impl.py)."""
    from gsplat.cuda._torch_impl import _fully_fused_projection
    from gsplat.cuda._torch_impl import _quat_scale_to_covar_preci

    scene = GaussianScene.init_ball(300, 1.0, torch.Generator().manual_seed(2))
    cams = [orbit_camera(10, a, 1.6, 40, 40, 30) for a in (0, 120, 250)]
    viewmats, Ks = stack_cameras(cams)
    out = render_reference(scene.means, scene.normalized_quats(), scene.scales(), scene.opacities(), scene.colors(),
                           viewmats, Ks, 40, 30)
    covars, _ = _quat_scale_to_covar_preci(scene.normalized_quats(), scene.scales(), compute_preci=False)
    radii, means2d, *_ = _fully_fused_projection(scene.means, covars, viewmats, Ks, 40, 30)
    torch.testing.assert_close(out.means2d, means2d, rtol=1e-5, atol=1e-4)
    assert out.radii.shape == radii.shape == (3, 300, 2)
    assert (out.radii != radii).sum() <= 3  # ceil() of float32 values rounded differently at most a few times
    assert (radii == 0).any() and (radii > 0).any()  # the scene crosses the image border: both kinds tested


def test_bad_densify_flags_get_one_line(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    runner = CliRunner()
    for args, needle in [(["--densify", "adc"], "allowed: none, default, mcmc"),
                         (["--densify-every", "0"], "densify-every must be >= 1"),
                         (["--densify-cap", "0"], "densify-cap must be >= 1"),
                         (["--seed-batch", "0"], "seed-batch must be >= 1"),
                         (["--compile"], "--compile speeds up Stable Diffusion")]:
        out = tmp_path / "out"
        res = runner.invoke(app, ["gen-3d", "--resolution", "16", "--steps", "3", "--no-progress", *args,
                                  "--out", str(out)])
        assert res.exit_code == 2, (args, res.output)
        assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert not out.exists()


def test_sh_degree_1_scenes_densify_too(mushroom_prior):
    """Degree-1 colours are per camera ([C, N, 3] in one render call), so the screen means the strategy reads
    lie on the loss's path and sh_rest follows every split."""
    config = replace(small(Densify.DEFAULT).train, sh_degree=1)
    train = resolved(config, mushroom_prior)
    state = train_seeds(mushroom_prior, train, [initial_state(train, 0)])[0]
    assert 200 < len(state.scene) <= DENSE.cap and state.scene.sh_rest.shape == (len(state.scene), 3, 3)


@pytest.mark.numerics
def test_per_camera_colours_render_as_camera_by_camera():
    from fsd3d.renderer import render_scene

    g = torch.Generator().manual_seed(4)
    scene = GaussianScene.init_ball(200, 0.5, g, sh_degree=1, scale=0.1)
    with torch.no_grad():
        scene.sh_rest.copy_(torch.randn(200, 3, 3, generator=g))
    cams = [orbit_camera(10.0, a, 1.6, 45.0, 20, 20) for a in (0.0, 90.0, 200.0)]
    together = render_scene(scene, cams, torch.ones(3))
    for i, cam in enumerate(cams):  # float32 renders of 3 cameras in one call or 1: RENDER_F32_ATOL (numerics.py)
        alone = render_scene(scene, [cam], torch.ones(3))
        torch.testing.assert_close(together.rgb[i : i + 1], alone.rgb, rtol=0, atol=RENDER_F32_ATOL)
