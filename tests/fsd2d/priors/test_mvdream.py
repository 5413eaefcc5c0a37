"""MVDream (fsd2d/priors/mvdream.py, fsd3d/mvdream_prior.py) on a tiny random model in the published folder layout.

Where the published layout comes from: bytedance/MVDream mvdream/configs/sd-v2-base.yaml (hyper-parameters) and
openaimodel.py / attention.py (ldm names), the same names ashawkey/mvdream_diffusers' convert script saves
under unet/. The tests check it two independent ways: the full-size network has exactly Stable Diffusion 2.1
base's UNet parameters plus the camera MLP, and diffusers' own ldm -> diffusers converter
(diffusers.loaders.single_file_utils.convert_ldm_unet_checkpoint) maps every one of our names onto a
diffusers UNet2DConditionModel that then computes the same function (one view, camera MLP zeroed).
"""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from cli import app
from fsd2d.guidance import Guidance, predict_eps
from fsd2d.priors.base import ModelError
from fsd2d.priors.load import load_prior
from fsd2d.priors.mvdream import (
    MultiViewUNet,
    MultiViewUNetConfig,
    MVDreamPrior,
    load_mvdream,
    orbit_viewmats,
    viewmats_to_mvdream,
)

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_thread")
SEEDS = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def tiny_mvdream_path(tmp_path_factory):
    from fsd2d.priors.random_sd import build_random_mvdream

    return build_random_mvdream(tmp_path_factory.mktemp("tiny_mvdream"), "tiny")


@pytest.fixture(scope="module")
def prior(tiny_mvdream_path) -> MVDreamPrior:
    return load_mvdream(tiny_mvdream_path)


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


# ------------------------------------------------------------------------------------------ published layout
# (name, shape) of SD 2.1-base MVDream, derived by hand from sd-v2-base.yaml: model_channels 320 (time embedding
# 1280), channel_mult 1 2 4 4, 2 res blocks per level, attention at downsampling 1, 2, 4 (levels 0-2), heads of
# 64 channels, context 1024, camera_dim 16; input_blocks 0 conv | 1 2 level 0 | 3 down | 4 5 | 6 down | 7 8 | 9 down
# | 10 11 level 3 (no attention); output_blocks 0-2 level 3 (2: upsample at .1), 3-5 level 2 (5: upsample at .2) ...
PUBLISHED = {
    "time_embed.0.weight": [1280, 320], "time_embed.2.weight": [1280, 1280],
    "camera_embed.0.weight": [1280, 16], "camera_embed.0.bias": [1280], "camera_embed.2.weight": [1280, 1280],
    "input_blocks.0.0.weight": [320, 4, 3, 3],
    "input_blocks.1.0.in_layers.0.weight": [320], "input_blocks.1.0.in_layers.2.weight": [320, 320, 3, 3],
    "input_blocks.1.0.emb_layers.1.weight": [320, 1280], "input_blocks.1.0.out_layers.3.weight": [320, 320, 3, 3],
    "input_blocks.1.1.norm.weight": [320], "input_blocks.1.1.proj_in.weight": [320, 320],
    "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight": [320, 320],
    "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [320, 1024],
    "input_blocks.1.1.transformer_blocks.0.attn2.to_out.0.bias": [320],
    "input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight": [2560, 320],
    "input_blocks.1.1.transformer_blocks.0.ff.net.2.weight": [320, 1280],
    "input_blocks.1.1.transformer_blocks.0.norm3.weight": [320], "input_blocks.1.1.proj_out.weight": [320, 320],
    "input_blocks.3.0.op.weight": [320, 320, 3, 3],
    "input_blocks.4.0.skip_connection.weight": [640, 320, 1, 1],
    "input_blocks.10.0.in_layers.2.weight": [1280, 1280, 3, 3],
    "middle_block.1.transformer_blocks.0.attn1.to_v.weight": [1280, 1280], "middle_block.2.emb_layers.1.bias": [1280],
    "output_blocks.0.0.in_layers.0.weight": [2560], "output_blocks.2.1.conv.weight": [1280, 1280, 3, 3],
    "output_blocks.3.1.transformer_blocks.0.attn2.to_k.weight": [1280, 1024],
    "output_blocks.5.2.conv.weight": [1280, 1280, 3, 3], "output_blocks.11.0.skip_connection.weight": [320, 640, 1, 1],
    "out.0.weight": [320], "out.2.weight": [4, 320, 3, 3],
}
ABSENT = ("input_blocks.10.1.norm.weight", "output_blocks.0.1.norm.weight", "input_blocks.0.0.op.weight")


def test_full_size_has_the_published_names_and_shapes():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        ours = MultiViewUNet(MultiViewUNetConfig())
        sd21 = UNet2DConditionModel(sample_size=64, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                                    use_linear_projection=True)
    state = ours.state_dict()
    for name, shape in PUBLISHED.items():
        assert list(state[name].shape) == shape, name
    assert not any(name in state for name in ABSENT)
    camera = sum(p.numel() for p in ours.camera_embed.parameters())
    assert camera == 16 * 1280 + 1280 + 1280 * 1280 + 1280
    # the SD 2.1-base UNet plus the camera MLP: same parameter count, 4 more tensors
    assert sum(p.numel() for p in ours.parameters()) - camera == sum(p.numel() for p in sd21.parameters())
    assert len(state) == len(sd21.state_dict()) + 4


def test_one_view_without_camera_is_stable_diffusions_unet():
    """diffusers' converter maps every ldm name of ours to a diffusers UNet with the same config; with one view
    per set and the camera MLP's last layer zeroed, both compute the same function (same timestep embedding,
    attention and feed-forward code: equal to float64 rounding)."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    torch.manual_seed(0)
    config = MultiViewUNetConfig(image_size=8, model_channels=32, attention_resolutions=(1, 2), num_res_blocks=1,
                                 channel_mult=(1, 2), num_head_channels=16, context_dim=32)
    ours = MultiViewUNet(config).double()
    theirs = UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
        down_block_types=("CrossAttnDownBlock2D",) * 2, up_block_types=("CrossAttnUpBlock2D",) * 2,
        attention_head_dim=(2, 4), use_linear_projection=True).double()
    converted = convert_ldm_unet_checkpoint({f"model.diffusion_model.{k}": v for k, v in ours.state_dict().items()},
                                            dict(theirs.config))
    theirs.load_state_dict(converted, strict=True)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 4, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([1, 200, 500, 999])
    context = torch.randn(4, 7, 32, generator=g, dtype=torch.float64)
    camera = torch.randn(4, 16, generator=g, dtype=torch.float64)
    with torch.no_grad():
        ours.camera_embed[2].weight.zero_()
        ours.camera_embed[2].bias.zero_()
        ref = theirs(x, t, encoder_hidden_states=context).sample
        assert rel_err(ours(x, t, context, camera, views=1), ref) < 1e-12
        assert rel_err(ours(x, t, context, camera, views=4), ref) > 1e-2  # 4 views attend to each other


def test_tiny_folder_loads_strict_with_published_names(tiny_mvdream_path, prior):
    state = load_file(tiny_mvdream_path / "unet" / "diffusion_pytorch_model.safetensors")
    assert set(state) == set(prior.view.unet.state_dict())
    assert "camera_embed.0.weight" in state and "middle_block.1.transformer_blocks.0.attn1.to_q.weight" in state
    config = json.loads((tiny_mvdream_path / "unet" / "config.json").read_text())
    assert config["_class_name"] == "MultiViewUNetModel" and config["camera_dim"] == 16
    assert json.loads((tiny_mvdream_path / "model_index.json").read_text())["_class_name"] == "MVDreamPipeline"
    for name, value in state.items():
        assert torch.equal(prior.view.unet.state_dict()[name], value), name
    assert isinstance(load_prior(str(tiny_mvdream_path), "cpu"), MVDreamPrior)  # the same --model PATH as SD


# ------------------------------------------------------------------------------------------------- cameras
def test_camera_conversion_on_a_known_camera():
    """Our camera at elevation 0, azimuth -90 (centre on -y) is MVDream's get_camera(1, elevation=0,
    azimuth_start=0, blender_coord=True): by hand, its y-up OpenGL camera at +z (identity rotation) turned
    into the z-up world by flip_yz = [[1,0,0],[0,0,-1],[0,1,0]] gives rows (1 0 0 0) (0 0 -1 -1) (0 1 0 0)."""
    from fsd3d.cameras import orbit_camera

    cam = orbit_camera(0.0, -90.0, 2.5, 50.0, 16, 16, dtype=torch.float64)
    expected = torch.tensor([[1, 0, 0, 0], [0, 0, -1, -1], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.float64)
    got = viewmats_to_mvdream(cam.viewmat[None])
    torch.testing.assert_close(got, expected.reshape(1, 16), atol=1e-12, rtol=0)


@pytest.mark.parametrize("elevation,azimuth,radius", [(15.0, 0.0, 1.0), (30.0, 123.0, 1.8), (-20.0, -170.0, 3.0)])
def test_camera_conversion_is_opengl_camera_to_world_on_the_unit_sphere(elevation, azimuth, radius):
    from fsd3d.cameras import orbit_camera

    cam = orbit_camera(elevation, azimuth, radius, 50.0, 16, 16, dtype=torch.float64)
    m = viewmats_to_mvdream(cam.viewmat[None]).reshape(4, 4)
    e, a = math.radians(elevation), math.radians(azimuth)
    centre = torch.tensor([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)], dtype=torch.float64)
    torch.testing.assert_close(m[:3, 3], centre, atol=1e-12, rtol=0)  # unit distance
    torch.testing.assert_close(m[:3, 2], centre, atol=1e-12, rtol=0)  # OpenGL z points away from the object
    torch.testing.assert_close(m[:3, :3].T @ m[:3, :3], torch.eye(3, dtype=torch.float64), atol=1e-12, rtol=0)
    assert torch.linalg.det(m[:3, :3]) > 0 and m[2, 1] > 0  # right-handed, camera up towards world +z
    # the 2D prior's own cameras agree with fsd3d.cameras
    unit = orbit_camera(elevation, azimuth, 1.0, 50.0, 16, 16, dtype=torch.float64)
    torch.testing.assert_close(orbit_viewmats(elevation, (azimuth,))[0], unit.viewmat, atol=1e-12, rtol=0)


# --------------------------------------------------------------------------------------------- the network
def test_views_interact_and_sets_do_not(prior):
    view = prior.view
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, *view.latent_shape, generator=g)  # two 4-view sets
    t = torch.full((8,), 500)
    cond = prior.encode_prompt("a cat").expand(8, -1, -1)
    x2 = x.clone()
    x2[2] += 1.0  # view 2 of set 0
    with torch.no_grad():
        a, b = view.eps(x, t, cond), view.eps(x2, t, cond)
    assert (a[1] - b[1]).abs().max() > 1e-4  # view 1 sees view 2 (unlike four independent SD calls)
    assert torch.equal(a[4:], b[4:])  # the other object is untouched


def test_camera_embedding_changes_the_output(prior):
    view = prior.view
    x = torch.randn(4, *view.latent_shape, generator=torch.Generator().manual_seed(4))
    t, cond = torch.full((4,), 300), prior.encode_prompt("a cat").expand(4, -1, -1)
    other = view.bind(viewmats_to_mvdream(orbit_viewmats(40.0, (10.0, 100.0, 190.0, 280.0))))
    with torch.no_grad():
        assert (prior.view.eps(x, t, cond) - other.eps(x, t, cond)).abs().max() > 1e-4
    with pytest.raises(ValueError, match="needs cameras"):
        _unbound(view).eps(x, t, cond)


def _unbound(view):
    import copy

    out = copy.copy(view)
    out.cameras = None
    return out


@pytest.mark.numerics
def test_set_prior_is_the_view_prior_on_its_views(prior):
    """The 2D prior's [B, 16, h, w] sample is 4 views of [4, h, w]: eps, decode (2 x 2 mosaic) and encode agree."""
    g = torch.Generator().manual_seed(5)
    z = torch.randn(2, *prior.latent_shape, generator=g)
    t, cond = torch.tensor([100, 700]), prior.encode_prompt("a dog").expand(2, -1, -1)
    views = z.reshape(8, 4, *z.shape[2:])
    with torch.no_grad():
        torch.testing.assert_close(prior.eps(z, t, cond).reshape(8, 4, *z.shape[2:]),
                                   prior.view.eps(views, t.repeat_interleave(4), cond.repeat_interleave(4, 0)))
        mosaic, tiles = prior.decode(z), prior.view.decode(views)
    r = prior.view.resolution
    assert mosaic.shape == (2, 3, 2 * r, 2 * r) and prior.resolution == 2 * r
    for k, (row, col) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        torch.testing.assert_close(mosaic[1, :, row * r:(row + 1) * r, col * r:(col + 1) * r], tiles[4 + k])
    with torch.no_grad():
        torch.testing.assert_close(prior.encode(mosaic).reshape(8, 4, *z.shape[2:]), prior.view.encode(tiles))


# ----------------------------------------------------------------------------------------------------- 2D
@pytest.mark.slow
def test_fsd_exact_equals_ddim_on_tiny_mvdream(prior):
    """Proposition 1 on the 4-view set (float32, as tests/fsd2d/test_proposition1.py does for tiny SD)."""
    from fsd2d.sampling import DistillConfig, Method, ddim_sample, distill, initial_noise
    from fsd2d.schedule import timesteps

    g = Guidance.from_prompts(prior, "a photo of a cat", "", 7.5)
    x_ddim = ddim_sample(prior, g, initial_noise(prior, SEEDS), timesteps(25, 20, 980))
    x_fsd = distill(prior, g, Method.FSD_EXACT.config(DistillConfig(steps=25)), SEEDS)
    assert x_ddim.shape == (4, 16, 8, 8)
    assert rel_err(x_fsd, x_ddim) <= 1e-4
    x_other = distill(prior, g, Method.FSD_EXACT.config(DistillConfig(steps=25)), (10, 11, 12, 13))
    assert rel_err(x_other, x_ddim) > 1e-2


def test_compare_2d_end_to_end(tiny_mvdream_path, tmp_path):
    out = tmp_path / "cmp"
    res = runner.invoke(app, ["compare-2d", "--model", str(tiny_mvdream_path), "--seeds", "0,1", "--steps", "5",
                              "--prompt", "a cat", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["methods"]["fsd-exact"]["per_seed"][0]["psnr_to_ddim"] > 60
    run = json.loads((out / "run.json").read_text())
    assert run["prior"]["class"] == "MVDreamPrior" and run["prior"]["latent_shape"] == [16, 8, 8]
    import imageio.v3 as iio

    assert iio.imread(out / "images" / "ddim_seed0.png").shape[:2] == (32, 32)  # the 2 x 2 mosaic of 16 px views


# ----------------------------------------------------------------------------------------------------- 3D
def test_expand_cameras_and_view_batch(tiny_mvdream_path):
    from fsd3d.cameras import orbit_camera
    from fsd3d.config import Gen3DConfig
    from fsd3d.run import load_scene_prior
    from fsd3d.mvdream_prior import MVDreamScenePrior

    scene_prior = load_scene_prior(Gen3DConfig(model=str(tiny_mvdream_path), prompt="a cat", device="cpu"))
    assert isinstance(scene_prior, MVDreamScenePrior) and scene_prior.resolution == 16
    assert scene_prior.default_cfg == 50.0 and scene_prior.views_per_camera == 4
    from fsd3d.config import Train3DConfig
    from fsd3d.settings import resolve

    run = lambda train: Gen3DConfig(model=str(tiny_mvdream_path), prompt="a cat", train=train)  # noqa: E731
    assert resolve(run(Train3DConfig()), scene_prior).train.cameras_per_step == 1  # one 4-view set per step
    assert resolve(run(Train3DConfig(cameras_per_step=3)), scene_prior).train.cameras_per_step == 3
    cams = [orbit_camera(20.0, 170.0, 1.8, 50.0, 16, 16), orbit_camera(5.0, -30.0, 1.6, 45.0, 16, 16)]
    views = scene_prior.expand_cameras(cams)
    assert [round(v.azimuth, 6) for v in views] == [170.0, -100.0, -10.0, 80.0, -30.0, 60.0, 150.0, -120.0]
    assert all(v.elevation == c.elevation and v.radius == c.radius and v.fov == c.fov
               for i, v in enumerate(views) for c in [cams[i // 4]])
    bound, guidance = scene_prior.view_batch(views, 50.0)
    torch.testing.assert_close(bound.cameras, viewmats_to_mvdream(torch.stack([v.viewmat for v in views])))
    x = torch.randn(8, *bound.latent_shape, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():  # [uncond; cond] doubles the batch: the bound cameras repeat
        eps = predict_eps(bound, x, torch.full((8,), 400), guidance)
    assert eps.shape == x.shape and torch.isfinite(eps).all()
    with torch.no_grad():  # the stacked call is two calls on the same 8 cameras, combined in standard form (s = 50)
        eps_u, eps_c = (bound.eps(x, torch.full((8,), 400), c.expand(8, -1, -1))
                        for c in (guidance.uncond, guidance.cond))
    torch.testing.assert_close(eps, eps_u + 50.0 * (eps_c - eps_u), rtol=1e-4, atol=1e-4)
    assert scene_prior.view_batch(views, 50.0)[1].cond is guidance.cond  # prompts encoded once, not per step
    with pytest.raises(Exception, match="whole sets of 4"):
        scene_prior.view_batch(views[:3], 50.0)


def test_the_views_of_a_camera_share_t_and_seeds_share_one_call(tiny_mvdream_path):
    """Uniform t: one draw per camera, shared by its 4 views; 2 seeds x 2 cameras x 4 views in ONE guided call."""
    from fsd3d.config import Gen3DConfig
    from fsd3d.run import load_scene_prior
    from fsd3d.mvdream_prior import MVDreamScenePrior
    from fsd3d.config import NoiseKind, Train3DConfig
    from fsd3d.checkpoint import initial_state
    from fsd3d.settings import resolve
    from fsd3d.train import train_seeds

    config = Gen3DConfig(model=str(tiny_mvdream_path), prompt="a cat", device="cpu",
                         train=Train3DConfig(steps=2, num_gaussians=100, cameras_per_step=2,
                                             method=NoiseKind.SDS))  # SDS: uniform t, as in 2D
    scene_prior = load_scene_prior(config)
    calls = []

    def spy(cameras, scale):
        bound, guidance = MVDreamScenePrior.view_batch(scene_prior, cameras, scale)

        def eps(x_t, t, cond):
            calls.append((len(cameras), t.clone()))
            return type(bound).eps(bound, x_t, t, cond)

        bound.eps = eps
        return bound, guidance

    scene_prior.view_batch = spy
    train = resolve(config, scene_prior).train
    train_seeds(scene_prior, train, [initial_state(train, s) for s in (0, 1)])
    assert len(calls) == 2  # one prior call per step
    for n_cameras, t in calls:
        assert n_cameras == 16 and t.shape == (32,)  # [uncond; cond] of 2 seeds x 2 cameras x 4 views
        per_camera = t[:16].view(4, 4)
        assert (per_camera == per_camera[:, :1]).all() and torch.equal(t[:16], t[16:])
        assert len(set(per_camera[:, 0].tolist())) > 1  # but cameras draw their own t


@pytest.mark.slow
def test_gen_3d_end_to_end(tiny_mvdream_path, tmp_path):
    """Two seeds, 2 cameras (8 views) per seed and step, densification on, then --resume of the finished run."""
    out = tmp_path / "run"
    args = ["gen-3d", "--model", str(tiny_mvdream_path), "--prompt", "a cat", "--seeds", "0,1", "--steps", "6",
            "--num-gaussians", "150", "--cameras-per-step", "2", "--densify", "default", "--densify-from", "1",
            "--densify-every", "2", "--checkpoint-every", "3", "--no-progress", "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    run = json.loads((out / "run.json").read_text())
    assert run["prior"]["class"] == "MVDreamScenePrior" and run["prior"]["views_per_camera"] == 4
    assert run["prior"]["prior"]["resolution"] == 16
    before = torch.load(out / "seed_1" / "checkpoint.pt", weights_only=True)
    assert before["step"] == 6 and before["scene"]["means"].shape[0] != 150  # densification split / cloned
    res = runner.invoke(app, [*args, "--resume"])
    assert res.exit_code == 0, res.output
    after = torch.load(out / "seed_1" / "checkpoint.pt", weights_only=True)
    for name, value in before["scene"].items():
        assert torch.equal(value, after["scene"][name]), name


def test_resume_continues_bit_for_bit(tiny_mvdream_path, tmp_path):
    from fsd3d.config import Gen3DConfig
    from fsd3d.run import load_scene_prior
    from fsd3d.config import Train3DConfig
    from fsd3d.settings import resolve
    from resume import assert_resume_is_bit_for_bit

    config = Gen3DConfig(model=str(tiny_mvdream_path), prompt="a cat", device="cpu",
                         train=Train3DConfig(steps=6, num_gaussians=150, checkpoint_every=3, cameras_per_step=1))
    prior = load_scene_prior(config)
    train = resolve(config, prior).train
    assert_resume_is_bit_for_bit(prior, train, 2, tmp_path / "checkpoint.pt", kill_step=4, checkpoint_step=3)


# ------------------------------------------------------------------------------------------------ bad folders
def _copy(src, dst):
    return shutil.copytree(src, dst)


def _cli_error(folder, tmp_path, command="compare-2d"):
    out = tmp_path / "never"
    args = [command, "--model", str(folder), "--out", str(out), "--no-progress", "--steps", "2", "--seeds", "0"]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert not out.exists()
    return lines[0]


def test_missing_unet_config_is_one_line(tiny_mvdream_path, tmp_path):
    folder = _copy(tiny_mvdream_path, tmp_path / "no_config")
    (folder / "unet" / "config.json").unlink()
    assert "config.json is missing" in _cli_error(folder, tmp_path)
    assert "config.json is missing" in _cli_error(folder, tmp_path, "gen-3d")


def test_wrong_shapes_are_one_line(tiny_mvdream_path, tmp_path):
    folder = _copy(tiny_mvdream_path, tmp_path / "wrong_shape")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    state["camera_embed.0.weight"] = torch.zeros(128, 12)
    save_file(state, str(weights))
    assert "wrong shape: camera_embed.0.weight [128, 12]" in _cli_error(folder, tmp_path)
    state.pop("camera_embed.0.weight")
    save_file(state, str(weights))
    assert "missing: camera_embed.0.weight" in _cli_error(folder, tmp_path)
    with pytest.raises(ModelError, match="missing: camera_embed.0.weight"):
        load_mvdream(folder)


def test_bin_weights_are_one_line(tiny_mvdream_path, tmp_path):
    folder = _copy(tiny_mvdream_path, tmp_path / "bin")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(weights), weights.with_suffix(".bin"))
    weights.unlink()
    assert "no safetensors weights for 'unet'" in _cli_error(folder, tmp_path)


def test_unsupported_config_is_one_line(tiny_mvdream_path, tmp_path):
    folder = _copy(tiny_mvdream_path, tmp_path / "ip")
    path = folder / "unet" / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"ip_dim": 16}))
    assert "ip_dim=16" in _cli_error(folder, tmp_path)


def test_bad_resolution(tiny_mvdream_path):
    with pytest.raises(ModelError, match="resolution 18 is not a positive multiple of 4.*try 16"):
        load_mvdream(tiny_mvdream_path, resolution=18)


def test_the_2d_set_starts_at_mvdreams_own_azimuth_zero(prior):
    """The 2D studies' set is MVDream's get_camera(4, elevation=15, azimuth_start=0): its first view is MVDream's
    azimuth 0, whose matrix at elevation 0 is worked out by hand in the test above ((1 0 0 0) (0 0 -1 -1) ...)."""
    from fsd2d.priors.mvdream import SET_AZIMUTHS, MVDreamPrior

    assert SET_AZIMUTHS == (-90.0, 0.0, 90.0, 180.0)
    level = MVDreamPrior(prior.view, elevation=0.0)
    expected = torch.tensor([[1, 0, 0, 0], [0, 0, -1, -1], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=level.view.cameras.dtype)
    torch.testing.assert_close(level.view.cameras[0], expected.reshape(16), atol=1e-6, rtol=0)


def test_an_mvdream_hub_id_is_refused_by_name(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    res = CliRunner().invoke(app, ["compare-2d", "--model", "ashawkey/mvdream-sd2.1-diffusers", "--steps", "2",
                                   "--seeds", "0", "--no-progress", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "MVDream loads from a local folder only" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
