"""MVDream (Shi et al. 2023): Stable Diffusion 2.1-base fine-tuned to denoise 4 views of one object, as a `Prior`.

Written here from the public description and configuration (no code copied). Where each piece comes from:
- architecture and parameter names: bytedance/MVDream `mvdream/ldm/modules/diffusionmodules/openaimodel.py`
  (`MultiViewUNetModel`) and `mvdream/ldm/modules/attention.py` (`SpatialTransformer3D`), the same layout as
  ashawkey/mvdream_diffusers `mvdream/models.py` / `mvdream/attention.py`, whose `convert_mvdream_to_diffusers.py`
  writes the diffusers-format folder (`unet/` holds the ldm-style state dict and the ldm `unet_config`
  params as `config.json`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`, `model_index.json`);
- hyper-parameters: bytedance/MVDream `mvdream/configs/sd-v2-base.yaml` (model_channels 320, channel_mult
  [1, 2, 4, 4], num_res_blocks 2, attention_resolutions [4, 2, 1], num_head_channels 64, transformer_depth 1,
  context_dim 1024, camera_dim 16; eps prediction, scaled-linear betas 0.00085..0.012);
- camera convention: bytedance/MVDream `mvdream/camera_utils.py` and bytedance/MVDream-threestudio
  `threestudio/models/guidance/multiview_diffusion_guidance.py` (see `viewmats_to_mvdream` below).

The network (`MultiViewUNet`), state-dict names as published:
    time_embed.{0,2}            Linear(mc, 4mc), Linear(4mc, 4mc) on the sinusoidal embedding of t (cos | sin)
                                (diffusers' get_timestep_embedding; attention and GEGLU feed-forward are diffusers'
                                Attention and FeedForward, whose parameter names are ldm's)
    camera_embed.{0,2}          Linear(16, 4mc), Linear(4mc, 4mc) on the flattened 4x4 camera; added to time_embed
    input_blocks.0.0            Conv2d(in, mc, 3)
    input_blocks.k.0            ResBlock: in_layers.{0 GroupNorm(32), 2 Conv3x3}, emb_layers.1 Linear,
                                out_layers.{0 GroupNorm(32), 3 Conv3x3}, skip_connection (Conv1x1 if channels change)
    input_blocks.k.1            SpatialTransformer3D: norm GroupNorm(32, eps 1e-6), proj_in Linear,
                                transformer_blocks.d.{attn1, attn2}.{to_q, to_k, to_v (no bias), to_out.0},
                                transformer_blocks.d.ff.net.{0.proj (GEGLU), 2}, transformer_blocks.d.norm{1,2,3},
                                proj_out Linear (attention levels only)
    input_blocks.k.0.op         Conv2d(ch, ch, 3, stride 2) between levels
    middle_block.{0,1,2}        ResBlock, SpatialTransformer3D, ResBlock
    output_blocks.k.{0,1,2}     ResBlock (on [h, skip]), SpatialTransformer3D (attention levels), Upsample .conv
    out.{0,2}                   GroupNorm(32), Conv2d(mc, out, 3)
The multi-view part: in each transformer block's SELF-attention the tokens of the V = 4 views of one object
form one sequence ([N, L, C] -> [N/V, V*L, C]); cross-attention to the prompt is per view. A batch is a stack
of whole 4-view sets (views of one set consecutive).

Two priors share it:
- `MVDreamViewPrior`: the working space is ONE view's VAE latent [4, R/8, R/8] (R = 256 by default); its eps
  needs the views' cameras, bound with `bind(cameras [V, 16])` (3D binds the cameras of each step);
- `MVDreamPrior`: the 2D studies' prior. One sample is one 4-view set at fixed cameras, MVDream's own
  get_camera default (elevation 15, MVDream's azimuths 0, 90, 180, 270 = ours -90, 0, 90, 180 in fsd3d.cameras'
  convention): working space [16, R/8, R/8] (4 views x 4 channels, view-major), images are the 2 x 2 mosaic [3, 2R, 2R] (views 0 1 / 2 3), so fsd2d.sampling,
  compare and the metrics run on it unchanged.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import get_timestep_embedding
from torch import nn

from fsd2d.priors.base import ModelError, Prior
from fsd2d.priors.diffusers_prior import LatentPrior, check_resolution
from fsd2d.priors.layouts import MVDREAM_UNET_CLASS, Backbone

VIEWS = 4  # views per object the published model denoises together
GROUPS = 32  # GroupNorm groups everywhere in the published network
UNET_CLASS = MVDREAM_UNET_CLASS  # `_class_name` of unet/config.json in the published conversion
PIPELINE_CLASS = Backbone.MVDREAM.value  # `_class_name` of model_index.json
# the 2D studies' fixed cameras: MVDream's text-to-image default, `get_camera(4, elevation=15, azimuth_start=0)`:
# elevation 15, MVDream's azimuths 0, 90, 180, 270, which are ours minus 90 (MVDream's azimuth 0 is our -90:
# see viewmats_to_mvdream)
SET_ELEVATION = 15.0
SET_AZIMUTHS = (-90.0, 0.0, 90.0, 180.0)


# ------------------------------------------------------------------------------------------------ cameras
def viewmats_to_mvdream(viewmats: torch.Tensor) -> torch.Tensor:
    """Our cameras -> MVDream's camera condition: [N, 4, 4] OpenCV world-to-camera -> [N, 16].

    Ours (fsd3d.cameras): world +z up, azimuth 0 on +x; camera x right, y down, z forward (looking at the
    object). MVDream-threestudio feeds threestudio's camera-to-world matrices, which live in the same world
    (+z up, azimuth 0 on +x, "already blender coordinate system") with OpenGL camera axes (x right, y up,
    z backward), and `normalize_camera` puts the camera centre on the unit sphere. So:
        c2w = inverse(viewmat) = [R^T | -R^T t];  c2w[:3, :3] <- c2w[:3, :3] diag(1, -1, -1)  (OpenCV -> OpenGL axes);
        c2w[:3, 3] <- c2w[:3, 3] / |c2w[:3, 3]|;  flattened row-major (16 values, last row 0 0 0 1).
    Check by hand (tests): our camera at elevation 0, azimuth -90 (centre on -y) gives
    [[1, 0, 0, 0], [0, 0, -1, -1], [0, 1, 0, 0], [0, 0, 0, 1]], which is MVDream's `get_camera(1, elevation=0,
    azimuth_start=0)` (its y-up OpenGL camera at +z turned into the z-up world by flip_yz).
    """
    if viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4):
        raise ValueError(f"viewmats must be [N, 4, 4] world-to-camera matrices, got {list(viewmats.shape)}")
    vm = viewmats.to(torch.float64)
    rot_t = vm[:, :3, :3].transpose(1, 2)  # [N, 3, 3] columns: camera axes in world coordinates
    centre = -(rot_t @ vm[:, :3, 3:4])[..., 0]  # [N, 3]
    flip = torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64, device=vm.device)
    c2w = torch.zeros_like(vm)
    c2w[:, :3, :3] = rot_t * flip  # scale columns: y down -> up, z forward -> backward
    c2w[:, :3, 3] = centre / centre.norm(dim=1, keepdim=True).clamp_min(1e-12)
    c2w[:, 3, 3] = 1.0
    return c2w.reshape(-1, 16).to(viewmats.dtype)


def orbit_viewmats(elevation: float, azimuths: tuple[float, ...]) -> torch.Tensor:
    """[V, 4, 4] OpenCV world-to-camera of unit-distance cameras looking at the origin, in fsd3d.cameras'
    convention (centre (cos e cos a, cos e sin a, sin e), right (-sin a, cos a, 0), image up ~ +z); fsd2d may not
    import fsd3d, so the 2D fixed cameras are built here and agree with fsd3d.cameras.orbit_camera (tests)."""
    mats = []
    e = math.radians(elevation)
    for azimuth in azimuths:
        a = math.radians(azimuth)
        centre = torch.tensor([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)], dtype=torch.float64)
        forward = -centre
        right = torch.tensor([-math.sin(a), math.cos(a), 0.0], dtype=torch.float64)
        down = torch.linalg.cross(forward, right)
        rot = torch.stack([right, down, forward])  # [3, 3] rows: camera axes
        vm = torch.eye(4, dtype=torch.float64)
        vm[:3, :3], vm[:3, 3] = rot, -rot @ centre
        mats.append(vm)
    return torch.stack(mats)


# ------------------------------------------------------------------------------------------------ network
@dataclass(frozen=True)
class MultiViewUNetConfig:
    """The published `unet/config.json` (the ldm `unet_config` params of sd-v2-base.yaml). Defaults: SD 2.1 base."""

    image_size: int = 32  # latent side the model was trained at (256 px / VAE factor 8)
    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    attention_resolutions: tuple[int, ...] = (4, 2, 1)  # downsampling factors with a transformer
    num_res_blocks: int = 2
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_head_channels: int = 64  # head width (-1: use num_heads)
    num_heads: int = -1
    transformer_depth: int = 1
    context_dim: int = 1024
    camera_dim: int = 16

    # config keys of the published conversion that we accept only with their default value
    _FIXED = {"use_scale_shift_norm": False, "resblock_updown": False, "num_classes": None, "ip_dim": 0, "dims": 2,
              "num_attention_blocks": None, "adm_in_channels": None, "n_embed": None, "conv_resample": True}

    @classmethod
    def from_dict(cls, config: dict) -> "MultiViewUNetConfig":
        """From unet/config.json; a ModelError names what this module does not implement."""
        for key, value in cls._FIXED.items():
            if config.get(key, value) != value:
                raise ModelError(f"unet/config.json sets {key}={config[key]!r}, which this MVDream module does not "
                                 f"implement (only {value!r})")
        if config.get("camera_dim") in (None, 0):
            raise ModelError("unet/config.json has no camera_dim: not a camera-conditioned multi-view UNet")
        kwargs = {}
        for name in cls.__dataclass_fields__:
            if name in config:
                value = config[name]
                kwargs[name] = tuple(value) if isinstance(value, list) else value
        try:
            out = cls(**kwargs)
            out.validate()
        except (TypeError, ValueError) as e:
            raise ModelError(f"unet/config.json is not a usable MVDream UNet config: {e}") from None
        return out

    def validate(self) -> None:
        ints = ("image_size", "in_channels", "out_channels", "model_channels", "num_res_blocks", "transformer_depth",
                "context_dim", "camera_dim")
        for name in ints:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if not self.channel_mult or any(not isinstance(m, int) or m < 1 for m in self.channel_mult):
            raise ValueError(f"channel_mult must be positive ints, got {self.channel_mult!r}")
        for mult in self.channel_mult:
            ch = mult * self.model_channels
            if ch % GROUPS:
                raise ValueError(f"channels {ch} are not a multiple of the {GROUPS} GroupNorm groups")
            if self.heads(ch) < 1 or ch % self.heads(ch):
                raise ValueError(f"channels {ch} do not split into attention heads")

    def heads(self, channels: int) -> int:
        return channels // self.num_head_channels if self.num_head_channels > 0 else self.num_heads

    def to_json(self) -> dict:
        """config.json as the published conversion writes it (ldm names, plus the class name)."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        return {"_class_name": UNET_CLASS, **out, "use_checkpoint": False}


class ResBlock(nn.Module):
    def __init__(self, channels: int, emb_channels: int, out_channels: int):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(GROUPS, channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(nn.GroupNorm(GROUPS, out_channels), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # x [N, C, h, w], emb [N, E]
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class TransformerBlock3D(nn.Module):
    """Self-attention across the views of one object, cross-attention per view, GEGLU feed-forward (pre-norm)."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int):
        super().__init__()
        self.attn1 = Attention(dim, heads=heads, dim_head=head_dim)
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.attn2 = Attention(dim, cross_attention_dim=context_dim, heads=heads, dim_head=head_dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, views: int) -> torch.Tensor:
        n, length, c = x.shape  # [N, L, C], N = sets * views
        joint = x.reshape(n // views, views * length, c)  # [N/V, V*L, C]: one sequence per object
        x = (self.attn1(self.norm1(joint)) + joint).reshape(n, length, c)  # back to [N, L, C]
        x = self.attn2(self.norm2(x), context) + x  # context [N, T, Dc]
        return self.ff(self.norm3(x)) + x


class SpatialTransformer3D(nn.Module):
    def __init__(self, channels: int, heads: int, head_dim: int, context_dim: int, depth: int):
        super().__init__()
        inner = heads * head_dim
        self.norm = nn.GroupNorm(GROUPS, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [TransformerBlock3D(inner, heads, head_dim, context_dim) for _ in range(depth)])
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor, views: int) -> torch.Tensor:
        n, c, h, w = x.shape
        y = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))  # [N, h*w, inner]
        for block in self.transformer_blocks:
            y = block(y, context, views)
        return x + self.proj_out(y).transpose(1, 2).reshape(n, c, h, w)


class Stage(nn.ModuleList):
    """One entry of input_blocks / middle_block / output_blocks: its layers applied in order."""

    def forward(self, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, views: int) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, SpatialTransformer3D):
                h = layer(h, context, views)
            else:
                h = layer(h)
        return h


class MultiViewUNet(nn.Module):
    """eps(x_t | context, t, camera) for batches of whole V-view sets, in the published parameter layout."""

    def __init__(self, config: MultiViewUNetConfig):
        super().__init__()
        self.config = config
        mc = config.model_channels
        emb = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.camera_embed = nn.Sequential(nn.Linear(config.camera_dim, emb), nn.SiLU(), nn.Linear(emb, emb))

        def transformer(ch: int) -> SpatialTransformer3D:
            heads = config.heads(ch)
            return SpatialTransformer3D(ch, heads, ch // heads, config.context_dim, config.transformer_depth)

        self.input_blocks = nn.ModuleList([Stage([nn.Conv2d(config.in_channels, mc, 3, padding=1)])])
        skips, ch, ds = [mc], mc, 1
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers = [ResBlock(ch, emb, mult * mc)]
                ch = mult * mc
                if ds in config.attention_resolutions:
                    layers.append(transformer(ch))
                self.input_blocks.append(Stage(layers))
                skips.append(ch)
            if level != len(config.channel_mult) - 1:
                self.input_blocks.append(Stage([Downsample(ch)]))
                skips.append(ch)
                ds *= 2
        self.middle_block = Stage([ResBlock(ch, emb, ch), transformer(ch), ResBlock(ch, emb, ch)])
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), emb, mult * mc)]
                ch = mult * mc
                if ds in config.attention_resolutions:
                    layers.append(transformer(ch))
                if level and i == config.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(Stage(layers))
        self.out = nn.Sequential(nn.GroupNorm(GROUPS, ch), nn.SiLU(), nn.Conv2d(mc, config.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, camera: torch.Tensor,
                views: int = VIEWS) -> torch.Tensor:
        """x [N, C, h, w], t [N], context [N, T, Dc], camera [N, camera_dim] -> [N, C_out, h, w]; N = sets * views,
        the views of one set consecutive. h and w must be multiples of 2^(levels - 1)."""
        n = x.shape[0]
        if n % views or t.shape != (n,) or context.shape[0] != n or camera.shape != (n, self.config.camera_dim):
            raise ValueError(f"MultiViewUNet expects x [N, C, h, w] with N a multiple of {views}, t [N], context "
                             f"[N, T, D], camera [N, {self.config.camera_dim}]; got {list(x.shape)}, "
                             f"{list(t.shape)}, {list(context.shape)}, {list(camera.shape)}")
        # ldm's sinusoidal embedding of t: (cos(t f_k), sin(t f_k)), f_k = 10000^(-k / (mc/2)), in float32
        t_emb = get_timestep_embedding(t, self.config.model_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        emb = self.time_embed(t_emb.to(x.dtype))
        emb = emb + self.camera_embed(camera.to(x.dtype))  # [N, 4 mc]
        skips, h = [], x
        for stage in self.input_blocks:
            h = stage(h, emb, context, views)
            skips.append(h)
        h = self.middle_block(h, emb, context, views)
        for stage in self.output_blocks:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb, context, views)
        return self.out(h)


# ------------------------------------------------------------------------------------------------ priors
class MVDreamViewPrior(LatentPrior):
    """eps of MVDream for batches of whole 4-view sets; working space: one view's latent [4, R/f, R/f].

    The cameras are not part of `cond` (the CLIP states [B, 77, D]); they are bound: `bind(cameras [V, 16])`
    returns this prior (same networks) whose eps takes x_t [B, 4, h, w] with B a multiple of V (V a multiple of
    4) and uses camera b mod V for sample b, so predict_eps' stacked [uncond; cond] batch (2V) sees the same
    cameras twice.
    """

    views = VIEWS
    cuda_graphs = False  # plain torch.compile of the UNet (its view reshapes are untested under CUDA graphs)
    channels_last_unet = False  # only the VAE goes channels-last (the views' attention reshapes the activations)
    model_label, resolution_per = "MVDream", " per view"

    def __init__(self, unet: MultiViewUNet, vae, text_encoder, tokenizer, scheduler_config: dict,
                 resolution: int | None = None, name: str = ""):
        self._setup(unet, vae, text_encoder, tokenizer, scheduler_config, resolution, name,
                    sample_size=unet.config.image_size, latent_multiple=2 ** (len(unet.config.channel_mult) - 1))
        self.cameras: torch.Tensor | None = None  # [V, camera_dim], see bind

    def bind(self, cameras: torch.Tensor) -> "MVDreamViewPrior":
        """This prior with its eps conditioned on these cameras [V, camera_dim] (MVDream's convention, see
        viewmats_to_mvdream); V a multiple of 4, each group of 4 consecutive cameras one object's views."""
        if cameras.ndim != 2 or cameras.shape[1] != self.unet.config.camera_dim or cameras.shape[0] % self.views:
            raise ValueError(f"bind expects cameras [V, {self.unet.config.camera_dim}] with V a multiple of "
                             f"{self.views}, got {list(cameras.shape)}")
        bound = copy.copy(self)  # shares the networks
        bound.cameras = cameras.to(device=self.device, dtype=self.dtype)
        return bound

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x_t [B, 4, h, w], t [B], cond [B, 77, D] -> eps [B, 4, h, w] in x_t's dtype (cameras from `bind`)."""
        if self.cameras is None:
            raise ValueError("MVDreamViewPrior.eps needs cameras: use prior.bind(cameras) first")
        b, v = x_t.shape[0], self.cameras.shape[0]
        if x_t.ndim != 4 or t.shape != (b,) or cond.shape[0] != b or b % v:
            raise ValueError(f"eps expects x_t [B, C, h, w] with B a multiple of the {v} bound cameras, t [B], "
                             f"cond [B, 77, D]; got {list(x_t.shape)}, {list(t.shape)}, {list(cond.shape)}")
        camera = self.cameras.repeat(b // v, 1)  # [B, 16]: sample b gets camera b mod V
        out = self._unet(x_t.to(self.dtype), t.to(self.device), cond.to(self.dtype), camera,
                         self.views).to(x_t.dtype)  # [B, 4, h, w]
        return self._as_eps(out, x_t, t)

    def describe(self) -> dict:
        return super().describe() | {"views": self.views}


class MVDreamPrior(Prior):
    """The 2D prior: one sample = one 4-view set at fixed cameras; working space [4 * 4, h, w] (view-major
    channels: view k is channels 4k..4k+3), images the 2 x 2 mosaic [3, 2R, 2R] of the views (0 1 / 2 3)."""

    def __init__(self, view_prior: MVDreamViewPrior, elevation: float = SET_ELEVATION,
                 azimuths: tuple[float, ...] = SET_AZIMUTHS):
        if len(azimuths) != view_prior.views:
            raise ValueError(f"MVDream denoises {view_prior.views} views together, got {len(azimuths)} azimuths")
        self.elevation, self.azimuths = float(elevation), tuple(float(a) for a in azimuths)
        self.view = view_prior.bind(viewmats_to_mvdream(orbit_viewmats(elevation, self.azimuths)))
        self.schedule, self.device, self.dtype = view_prior.schedule, view_prior.device, view_prior.dtype

    @property
    def views(self) -> int:
        return self.view.views

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        c, h, w = self.view.latent_shape
        return (self.views * c, h, w)

    @property
    def resolution(self) -> int:
        return 2 * self.view.resolution

    def encode_prompt(self, prompt: str) -> torch.Tensor:
        return self.view.encode_prompt(prompt)

    def _split(self, z: torch.Tensor) -> torch.Tensor:
        """[B, V*C, h, w] -> [B*V, C, h, w] (the views of one sample consecutive)."""
        b, _, h, w = z.shape
        return z.reshape(b * self.views, -1, h, w)

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x_t [B, 16, h, w], t [B], cond [B, 77, D] -> eps [B, 16, h, w]; one UNet call on the B*4 views."""
        b = x_t.shape[0]
        if x_t.ndim != 4 or x_t.shape[1:] != self.latent_shape or t.shape != (b,) or cond.shape[0] != b:
            raise ValueError(f"eps expects x_t [B, {', '.join(map(str, self.latent_shape))}], t [B], cond [B, 77, D]; "
                             f"got {list(x_t.shape)}, {list(t.shape)}, {list(cond.shape)}")
        v = self.views
        out = self.view.eps(self._split(x_t), t.repeat_interleave(v), cond.repeat_interleave(v, dim=0))
        return out.reshape(x_t.shape)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """[B, 16, h, w] -> the mosaic [B, 3, 2R, 2R] in [0, 1] (views 0 1 / 2 3)."""
        views = self.view.decode(self._split(z))  # [B*4, 3, R, R]
        b, r = z.shape[0], views.shape[-1]
        grid = views.reshape(b, 2, 2, 3, r, r).permute(0, 3, 1, 4, 2, 5)  # [B, 3, row, R, col, R]
        return grid.reshape(b, 3, 2 * r, 2 * r)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The mosaic [B, 3, 2R, 2R] in [0, 1] -> [B, 16, h, w] (differentiable)."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] % 2 or images.shape[3] % 2:
            raise ValueError(f"encode expects 2 x 2 mosaics [B, 3, 2R, 2R] in [0, 1], got {list(images.shape)}")
        b, _, hh, ww = images.shape
        views = images.reshape(b, 3, 2, hh // 2, 2, ww // 2).permute(0, 2, 4, 1, 3, 5)  # [B, row, col, 3, R, R]
        z = self.view.encode(views.reshape(b * 4, 3, hh // 2, ww // 2))  # [B*4, 4, h, w]
        return z.reshape(b, -1, *z.shape[2:])

    def speed_up(self, compile: bool = False) -> None:
        self.view.speed_up(compile)

    def describe(self) -> dict:
        return super().describe() | self.view.describe() | {
            "class": type(self).__name__, "view_resolution": self.view.resolution,
            "resolution": self.resolution, "latent_shape": list(self.latent_shape),
            "cameras": {"elevation": self.elevation, "azimuths": list(self.azimuths)}}


# ------------------------------------------------------------------------------------------------ loading
def _unet_weights(unet_dir: Path) -> dict[str, torch.Tensor]:
    """The UNet's state dict from unet/*.safetensors (one file, or the shards of an index); .bin is refused."""
    from safetensors.torch import load_file

    index = sorted(unet_dir.glob("*.safetensors.index.json"))
    if index:
        shards = sorted(set(json.loads(index[0].read_text())["weight_map"].values()))
        files = [unet_dir / s for s in shards]
    else:
        files = sorted(unet_dir.glob("*.safetensors"))
        plain = [f for f in files if f.name == "diffusion_pytorch_model.safetensors"]
        files = plain or files
        if len(files) > 1:
            raise ModelError(f"{unet_dir} holds several safetensors files ({', '.join(f.name for f in files)}) and "
                             "no index; keep one")
    if not files:
        raise ModelError(f"{unet_dir} has no safetensors weights (only .safetensors is loaded; convert .bin first)")
    state = {}
    for f in files:
        try:
            state |= load_file(f)
        except Exception as e:  # noqa: BLE001 - a broken file is one line for the user
            raise ModelError(f"could not read {f}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return state


def load_unet(unet_dir: Path, device: torch.device, dtype: torch.dtype) -> MultiViewUNet:
    """MultiViewUNet from unet/config.json and unet/*.safetensors, strict: every published name, every shape."""
    try:
        raw = json.loads((unet_dir / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{unet_dir / 'config.json'} is missing or unreadable ({type(e).__name__})") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{unet_dir / 'config.json'} is not a JSON object")
    config = MultiViewUNetConfig.from_dict(raw)
    state = _unet_weights(unet_dir)
    with torch.device("meta"):
        unet = MultiViewUNet(config)
    expected = unet.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {list(state[k].shape)} (expected {list(v.shape)})" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    for what, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            more = f" and {len(items) - 1} more" if len(items) > 1 else ""
            raise ModelError(f"{unet_dir} weights do not fit its config.json: {what}: {items[0]}{more}")
    unet.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state.items()}, strict=True, assign=True)
    return unet


def load_mvdream(model: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                 resolution: int | None = None) -> MVDreamPrior:
    """The 2D MVDream prior from a local folder in the published diffusers-format layout (safetensors only;
    float16 on CUDA, float32 on the CPU by default). `resolution` is the side of ONE view (default 256)."""
    from fsd2d.priors.diffusers_prior import _check_folder, _pick_dtype, load_codec

    device = torch.device(device)
    dtype = _pick_dtype(device, dtype)
    check_resolution(resolution, MVDreamViewPrior.model_label, MVDreamViewPrior.resolution_per)
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise ModelError(f"MVDream model folder {folder} does not exist")
    _check_folder(folder)
    unet = load_unet(folder / "unet", device, dtype)
    vae, text_encoder, tokenizer, scheduler_config = load_codec(str(folder), dtype, local=True)
    view = MVDreamViewPrior(unet, vae.to(device), text_encoder.to(device), tokenizer, scheduler_config, resolution,
                            name=str(folder))
    return MVDreamPrior(view)
