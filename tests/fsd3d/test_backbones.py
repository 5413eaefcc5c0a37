"""Per-backbone defaults (fsd3d/backbones.py): which profile a model takes, what a default run resolves to, and
that each setting does what it says (weighting, means LR decay, backgrounds, clamping, the large-Gaussian prune,
relative camera radii, the initial ball's foreground)."""
import math
from dataclasses import replace

import pytest
import torch
from fsd3d.backbones import (MVDREAM, MVDREAM_NEGATIVE, SD_NEGATIVE, STABLE_DIFFUSION, Background, Profile, Weighting,
                             spacing_scale)
from fsd3d.cameras import CameraRanges, sample_cameras
from fsd3d.densify import Densify, DensifyConfig
from fsd3d.gaussians import GaussianScene
from fsd3d.config import Gen3DConfig
from fsd3d.run import load_scene_prior
from fsd3d.settings import model_profile
from fsd3d.renderer import render_scene
from fsd3d.config import Train3DConfig
from fsd3d.checkpoint import initial_state
from fsd3d.train import means_lr, step_weights, train_seeds, view_backgrounds
from fsd3d.settings import resolve
from fsd2d.schedule import Anneal

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_mvdream_path(tmp_path_factory):
    from fsd2d.priors.random_sd import build_random_mvdream

    return build_random_mvdream(tmp_path_factory.mktemp("tiny_mvdream"), "tiny")


def scene_prior_of(path, **kw):
    return load_scene_prior(Gen3DConfig(model=str(path), prompt="a cat", **kw))


def resolved(model, train, prior):
    """The resolved training settings of `train` on `model` (its profile, its world) with `prior` loaded."""
    return resolve(Gen3DConfig(model=str(model), prompt="a cat" if model != "references" else "mushroom", train=train),
                   prior).train


def test_each_model_takes_its_backbones_profile(tiny_sd_path, tiny_mvdream_path):
    assert model_profile("references") == (Profile.EMBEDDED, {})
    assert model_profile(str(tiny_sd_path))[0] is Profile.STABLE_DIFFUSION
    assert model_profile(str(tiny_mvdream_path))[0] is Profile.MVDREAM
    profile, world = model_profile("tiny-sd-objects")  # trained here: the embedded profile, its own world
    assert profile is Profile.EMBEDDED and world["cfg"] == 7.5 and world["background"] is Background.WHITE
    assert model_profile("tiny-sd-objects", Profile.STABLE_DIFFUSION) == (Profile.STABLE_DIFFUSION, world)


def test_a_default_sd_run_resolves_to_the_authors_and_dreamgaussians_settings(tiny_sd_path):
    prior = scene_prior_of(tiny_sd_path)
    train = resolved(tiny_sd_path, Train3DConfig(), prior)
    assert (train.steps, train.num_gaussians, train.init_radius, train.init_opacity) == (500, 5000, 0.5, 0.1)
    assert train.init_scale == pytest.approx(0.0943, abs=1e-4)  # the mean spacing of 5000 points in a ball
    assert train.cfg == 71.0 and train.adam_betas == (0.9, 0.99) and train.weighting is Weighting.SIGMA_ALPHA
    assert train.anneal is Anneal.AUTHORS_SD and train.background is Background.RANDOM and train.clamp_renders
    assert (train.lr.means, train.means_lr_final) == (1e-2, 0.02)
    assert train.cameras.fov == (40.0, 65.0) and train.cameras.radius == (1.3, 1.5)
    assert train.densify.strategy is Densify.MCMC and train.densify.prune_scale3d == 0.1
    assert prior.negative_prompt == SD_NEGATIVE
    state = initial_state(train, 0)
    assert all(opt.defaults["betas"] == (0.9, 0.99) for opt in state.optimizers.values())
    # a flag given wins over the profile; --defaults embedded gives the old settings on the same model
    assert resolved(tiny_sd_path, Train3DConfig(steps=7, cfg=7.5), prior).steps == 7
    old = resolved(tiny_sd_path, Train3DConfig(profile=Profile.EMBEDDED), prior)
    assert (old.steps, old.num_gaussians, old.adam_betas, old.cfg) == (150, 1000, (0.0, 0.99), 71.0)


def test_a_default_mvdream_run_resolves_to_mvdream_threestudios_settings(tiny_mvdream_path):
    prior = scene_prior_of(tiny_mvdream_path)
    train = resolved(tiny_mvdream_path, Train3DConfig(), prior)
    assert train.cfg == 50.0 and train.weighting is Weighting.ONE and train.anneal is Anneal.AUTHORS_MVDREAM
    assert train.cameras.relative_radius and train.cameras.fov == (15.0, 60.0)
    assert train.cameras.elevation == (0.0, 30.0)
    assert prior.negative_prompt == MVDREAM_NEGATIVE


def test_trained_models_keep_their_world_under_any_profile():
    prior = load_scene_prior(Gen3DConfig(model="tiny-sd-objects", train=Train3DConfig(profile=Profile.STABLE_DIFFUSION)))
    train = resolved("tiny-sd-objects", Train3DConfig(profile=Profile.STABLE_DIFFUSION), prior)
    assert train.num_gaussians == 5000 and train.weighting is Weighting.SIGMA_ALPHA  # the profile's ...
    assert train.cfg == 7.5 and train.cameras == CameraRanges() and train.background is Background.WHITE  # the world's
    assert prior.negative_prompt == ""  # it never saw the authors' negative prompt's words


@pytest.mark.parametrize("model,fraction", [("sd", 0.5), ("mvdream", 0.25)])
def test_a_default_run_starts_with_foreground_world_map_noise(tiny_sd_path, tiny_mvdream_path, model, fraction):
    """Step 0 of a default run: every latent cell inside the initial ball's silhouette is foreground (pooled
    opacity >= alpha0), so world-map noise starts on the object: measured 100 % of the silhouette, 55 % (SD) and
    28 % (MVDream's relative radius) of the frame at 64 and 256 px. The settings before the profiles (1000
    Gaussians of std 0.012 at opacity 0.1: peak alpha ~0.6) left every cell background: the constant noise of
    Fig. 6."""
    path = tiny_sd_path if model == "sd" else tiny_mvdream_path
    prior = scene_prior_of(path, resolution=64)
    for profile, least in ((None, fraction), (Profile.EMBEDDED, None)):
        train = resolved(path, Train3DConfig(profile=profile), prior)
        if profile is Profile.EMBEDDED:  # the old settings, on this backbone's cameras
            train = replace(train, cameras=resolved(path, Train3DConfig(), prior).cameras)
        scene = initial_state(train, 0).scene
        cams = sample_cameras(8, train.cameras, torch.Generator().manual_seed(0), 64, 64)
        with torch.no_grad():
            alpha = render_scene(scene, cams, torch.ones(3)).alpha  # [8, 1, 64, 64]
        noise = train.method.noise_function((4, 8, 8), train.beta, 0, train.theta, train.alpha0)
        fg = noise.foreground(alpha).float().mean().item()
        if least is None:
            assert fg == 0.0
        else:
            assert fg >= least, (model, fg)


def test_sigma_alpha_weighting_scales_the_gradient_by_sigma_over_alpha(tiny_sd_path):
    """Adam's first moment after one step is (1 - beta1) g: with w = sigma_t / alpha_t it is w(t) times the one of
    w = 1, for every parameter (no regularisers, no densification)."""
    from diffusers import DDIMScheduler

    prior = scene_prior_of(tiny_sd_path, resolution=16)
    c = DDIMScheduler.from_pretrained(tiny_sd_path, subfolder="scheduler").config  # scaled_linear, in float64 here
    assert c.beta_schedule == "scaled_linear"
    betas = torch.linspace(c.beta_start ** 0.5, c.beta_end ** 0.5, c.num_train_timesteps, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)
    weights = step_weights(prior.prior.schedule, torch.arange(1000), torch.zeros(1, dtype=torch.float64)).flatten()
    torch.testing.assert_close(weights, ((1 - abar) / abar).sqrt(), rtol=1e-10, atol=0)
    base = Train3DConfig(steps=1, num_gaussians=100, opacity_reg=0.0, scale_reg=0.0, background=Background.WHITE,
                         densify=DensifyConfig(strategy=Densify.NONE), anneal=Anneal.LINEAR, t_min=500, t_max=500)
    moments = {}
    for w in Weighting:
        train = resolved(tiny_sd_path, replace(base, weighting=w), prior)
        state = train_seeds(prior, train, [initial_state(train, 0)])[0]
        moments[w] = {k: opt.state_dict()["state"][0]["exp_avg"] for k, opt in state.optimizers.items()}
    w = float(weights[500])
    for k, m in moments[Weighting.ONE].items():  # float32 backward: w scales each term before the renderer's sums,
        # so an entry that is a cancelling sum keeps only an absolute accuracy of ~u x its terms (1e-5 of the largest)
        torch.testing.assert_close(moments[Weighting.SIGMA_ALPHA][k], m * w, rtol=1e-4, atol=1e-5 * w * float(m.abs().max()))


def test_the_means_learning_rate_decays_exponentially_to_its_final_fraction():
    train = replace(Train3DConfig(), steps=11, lr=STABLE_DIFFUSION.lr, means_lr_final=0.02)
    lrs = [means_lr(train, i) for i in range(11)]
    assert lrs[0] == 1e-2 and lrs[-1] == pytest.approx(2e-4, rel=1e-12)
    assert all(b / a == pytest.approx(0.02 ** 0.1, rel=1e-12) for a, b in zip(lrs, lrs[1:]))  # geometric
    assert means_lr(replace(train, means_lr_final=1.0), 7) == 1e-2


def test_a_run_leaves_the_means_adam_at_the_last_steps_learning_rate():
    prior = load_scene_prior(Gen3DConfig(resolution=16))
    train = resolved("references", Train3DConfig(steps=4, num_gaussians=50, means_lr_final=0.1,
                                                 profile=Profile.EMBEDDED), prior)
    state = train_seeds(prior, train, [initial_state(train, 0)])[0]
    assert state.optimizers["means"].param_groups[0]["lr"] == pytest.approx(0.1 * train.lr.means, rel=1e-12)
    assert state.optimizers["sh0"].param_groups[0]["lr"] == train.lr.sh0  # the others stay constant


def test_random_backgrounds_are_white_or_black_per_view_and_reproducible():
    draw = lambda seed: view_backgrounds(Background.RANDOM, torch.ones(3), 64, torch.Generator().manual_seed(seed),  # noqa: E731
                                         torch.device("cpu"))
    a = draw(0)
    assert a.shape == (64, 3) and set(a[:, 0].tolist()) == {0.0, 1.0} and (a == a[:, :1]).all()
    assert 16 < a[:, 0].sum() < 48  # about half white
    assert torch.equal(a, draw(0)) and not torch.equal(a, draw(1))
    assert torch.equal(view_backgrounds(Background.BLACK, torch.zeros(3), 4, torch.Generator(), "cpu"), torch.zeros(3))


def test_renders_reach_the_encoder_clamped_when_the_profile_says_so(tiny_sd_path):
    prior = scene_prior_of(tiny_sd_path, resolution=16)
    seen = []
    encode = prior.prior.encode
    prior.prior.encode = lambda x: (seen.append(float(x.detach().max())), encode(x))[1]
    try:
        for clamp in (True, False):
            bright = GaussianScene.init_ball(100, 0.5, torch.Generator().manual_seed(0), scale=0.3, opacity=0.9)
            with torch.no_grad():
                bright.sh0.fill_(5.0)  # colour 0.5 + 0.28 x 5 = 1.9 (SH degree 0)
            train = resolved(tiny_sd_path, Train3DConfig(steps=1, num_gaussians=100, clamp_renders=clamp,
                                                         background=Background.WHITE, densify=DensifyConfig(strategy=Densify.NONE)), prior)
            train_seeds(prior, train, [initial_state(train, 0, init=bright)])
    finally:
        prior.prior.encode = encode
    assert seen[0] <= 1.0 < seen[1]


def test_the_default_strategy_prunes_gaussians_larger_than_its_scene_fraction():
    """gsplat's prune_scale3d, which gsplat itself applies only after an opacity reset (never, here)."""
    from fsd3d.densify import Densifier

    cfg = DensifyConfig(strategy=Densify.DEFAULT, start=0, stop=10, every=1, grad_threshold=1e9, cap=100)
    scene = GaussianScene.init_ball(20, 0.4, torch.Generator().manual_seed(0), opacity=0.5)
    with torch.no_grad():
        scene.log_scales[0] = math.log(0.5)  # one Gaussian of std 0.5: 0.3 of a scene scale of 1.65
    kept = {}
    for prune in (0.1, 0.0):
        s = GaussianScene.from_tensors(*(p.detach().clone() for p in (scene.means, scene.log_scales, scene.quats,
                                                                        scene.opacity_logits, scene.sh0)))
        opts = {n: torch.optim.Adam([p], lr=1e-3) for n, p in s.named_parameters()}
        d = Densifier(replace(cfg, prune_scale3d=prune), 1.65, 1e-3)
        state = d.initial_state()
        cams = sample_cameras(1, CameraRanges(), torch.Generator().manual_seed(0), 16, 16)
        d.pre_backward(out := render_scene(s, cams, torch.ones(3)))
        out.rgb.sum().backward()
        d.post_backward(s, opts, state, 1, out, torch.Generator().manual_seed(0))
        kept[prune] = len(s)
    assert kept == {0.1: 19, 0.0: 20}


def test_relative_radius_puts_the_frame_half_height_at_the_object():
    ranges = CameraRanges(radius=(0.8, 1.0), fov=(15.0, 60.0), relative_radius=True)
    for cam in sample_cameras(16, ranges, torch.Generator().manual_seed(0), 8, 8):
        half_height = cam.radius * math.tan(math.radians(cam.fov) / 2)
        assert 0.8 - 1e-9 <= half_height <= 1.0 + 1e-9
        assert cam.viewmat[:3, 3].norm().item() == pytest.approx(cam.radius, rel=1e-6)
    assert MVDREAM.cameras.relative_radius and not STABLE_DIFFUSION.cameras.relative_radius


def test_spacing_scale_is_the_mean_nearest_neighbour_spacing_order():
    """(4 pi / 3 n)^(1/3) of the radius: the mean nearest-neighbour distance of n uniform points is 0.55 of it."""
    pts = GaussianScene.init_ball(5000, 1.0, torch.Generator().manual_seed(0)).means.detach()
    nn = torch.cdist(pts, pts).fill_diagonal_(float("inf")).min(dim=1).values.mean().item()
    assert 0.4 < nn / spacing_scale(5000) < 0.7


def test_an_sd3_folder_takes_rfds_settings_at_512_px(tiny_sd3_path):
    """An SD3 folder is recognised by its pipeline class (no weights loaded) and takes the SD3 profile: RFDS' SD3
    guidance, negative prompt, cameras and 512 px renders, the FSD authors' annealing; a flag still wins."""
    from fsd3d.backbones import SD3, SD3_NEGATIVE

    assert model_profile(str(tiny_sd3_path)) == (Profile.SD3, {})
    prior = load_scene_prior(Gen3DConfig(model=str(tiny_sd3_path), prompt="a cat", resolution=16))
    train = resolved(tiny_sd3_path, Train3DConfig(), prior)
    assert train.cfg == 100.0 and train.anneal is Anneal.AUTHORS_SD and train.weighting is Weighting.ONE
    assert train.cameras.elevation == (-10.0, 45.0) and train.cameras.fov == (40.0, 70.0)
    assert prior.negative_prompt == SD3_NEGATIVE and SD3.resolution == 512
    assert prior.resolution == 16  # --resolution wins over the profile's 512
    assert resolved(tiny_sd3_path, Train3DConfig(cfg=7.0), prior).cfg == 7.0
