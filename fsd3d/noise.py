"""The noise functions eps(c) of Section 4 (FSD paper): one contract for SDS, the constant design, world-map.

Every noise function is called the same way (a k-diffusion-like uniform contract):

    noise = eps(elevation_deg, azimuth_deg, opacity, generator)    # [C, D, h, w]

    elevation_deg  [C]           degrees, 0 = horizon, +90 = top (+z), in [-90, 90]
    azimuth_deg    [C]           degrees, 0 on +x, 90 on +y; any real value (wraps mod 360)
    opacity        [C, 1, H, W]  rendered opacity in [0, 1], or None (all foreground)
    generator      torch.Generator on the CPU for the fresh noise eps of this step (None: global RNG)
    noise          [C, D, h, w]  in the prior's space (SD: the 4 x 64 x 64 latent), N(0, 1) per element

and returns Eq. 16's blend sqrt(beta) * deterministic(c) + sqrt(1 - beta) * fresh through
fsd2d.updates.blend_noise, the project's one noise blend (beta = 1: FSD, beta = 0: SDS).
All noise, fixed and fresh, is drawn on the CPU in float32 and then moved to the requested
device/dtype (non-blocking copies: the 3D loop never waits for the GPU), so a run is reproducible
across devices. The fixed buffers come from a
torch.Generator seeded at construction; `renoise(gamma)` implements the authors' optional
re-noising buf <- sqrt(1 - gamma) buf + sqrt(gamma) N(0, I) (gamma = 0: fixed, the default).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F

from fsd2d.errors import InputError
from fsd2d.updates import blend_noise, check_beta

_MAX_MAP_ELEMENTS = 1 << 28  # 1 GiB of float32: a world map beyond this is a typo in theta_deg
_ELEVATION_TOL = 1e-6


class NoiseFunction(ABC):
    """eps(c): noise [C, D, h, w] for C cameras; subclasses give the deterministic part (`fixed`)."""

    def __init__(self, channels: int = 4, height: int = 64, width: int = 64, beta: float = 1.0, seed: int = 0):
        for name, v in (("channels", channels), ("height", height), ("width", width)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"noise {name} must be a positive int, got {v!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise InputError(f"noise seed must be an int, got {seed!r}")
        check_beta(beta)
        self.channels, self.height, self.width = channels, height, width
        self.beta = float(beta)
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)  # draws the fixed buffers, then re-noising

    @property
    def shape(self) -> tuple[int, int, int]:
        """(D, h, w) of one camera's noise."""
        return (self.channels, self.height, self.width)

    def __call__(
        self,
        elevation_deg: torch.Tensor,  # [C]
        azimuth_deg: torch.Tensor,  # [C]
        opacity: torch.Tensor | None = None,  # [C, 1, H, W] in [0, 1]
        generator: torch.Generator | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        points: torch.Tensor | None = None,  # [C, H, W, 3] object-frame surface points (`surface_points`)
    ) -> torch.Tensor:
        """Eq. 16: sqrt(beta) * fixed(c) + sqrt(1 - beta) * eps, eps ~ N(0, I) fresh. -> [C, D, h, w].

        device defaults to opacity's, else elevation's (CPU for non-tensors). The fresh noise is
        drawn even when beta = 1, so `generator` advances the same way for every beta. `points` is read
        only by the noise functions that `needs_points` (SurfaceNoise).
        """
        el, az = _cameras(elevation_deg, azimuth_deg)
        _check_opacity(opacity, el.shape[0])
        if generator is not None and (not isinstance(generator, torch.Generator) or generator.device.type != "cpu"):
            raise InputError("generator must be a CPU torch.Generator (noise is drawn on the CPU for reproducibility)")
        device = _device(device, opacity, elevation_deg)
        fresh = torch.randn(el.shape[0], *self.shape, generator=generator).to(device, non_blocking=True)  # [C, D, h, w]
        fixed = self._fixed(el, az, opacity, device, points) if self.beta > 0.0 else fresh
        return blend_noise(fixed, fresh, self.beta).to(dtype)

    def fixed(
        self,
        elevation_deg: torch.Tensor,  # [C]
        azimuth_deg: torch.Tensor,  # [C]
        opacity: torch.Tensor | None = None,  # [C, 1, H, W]
        *,
        device: torch.device | str | None = None,
        points: torch.Tensor | None = None,  # [C, H, W, 3]
    ) -> torch.Tensor:
        """The deterministic part of eps(c) (what beta = 1 returns), float32 [C, D, h, w]."""
        el, az = _cameras(elevation_deg, azimuth_deg)
        _check_opacity(opacity, el.shape[0])
        return self._fixed(el, az, opacity, _device(device, opacity, elevation_deg), points)

    needs_points = False  # True: the caller passes the render's surface points (`surface_points`)

    @abstractmethod
    def _fixed(self, el: torch.Tensor, az: torch.Tensor, opacity: torch.Tensor | None, device,
               points: torch.Tensor | None = None) -> torch.Tensor:
        """el, az: checked float64 CPU [C]; opacity: checked or None. -> float32 [C, D, h, w] on device."""

    def _buffers(self) -> list[torch.Tensor]:
        """The fixed noise buffers (CPU float32), re-noised in place by renoise()."""
        return []

    def renoise(self, gamma: float, generator: torch.Generator | None = None) -> None:
        """buf <- sqrt(1 - gamma) buf + sqrt(gamma) N(0, I) for every fixed buffer (the authors' rate gamma).

        Keeps unit variance. gamma = 0 leaves the noise fixed (the paper's FSD); gamma = 1 redraws it.
        generator defaults to the one seeded at construction.
        """
        if not 0.0 <= gamma <= 1.0:
            raise InputError(f"re-noising rate gamma must be in [0, 1] (0 = fixed noise), got {gamma}")
        g = self._generator if generator is None else generator
        if gamma == 0.0:
            return
        for buf in self._buffers():
            buf.mul_(math.sqrt(1.0 - gamma)).add_(math.sqrt(gamma) * torch.randn(buf.shape, generator=g))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, beta={self.beta}, seed={self.seed})"


class RandomNoise(NoiseFunction):
    """SDS: fresh N(0, I) at every call for every camera, no deterministic part (beta = 0)."""

    def __init__(self, channels: int = 4, height: int = 64, width: int = 64):
        super().__init__(channels, height, width, beta=0.0, seed=0)

    def _fixed(self, el, az, opacity, device, points=None) -> torch.Tensor:
        return torch.zeros(el.shape[0], *self.shape, device=device)  # no deterministic part

    def __repr__(self) -> str:
        return f"RandomNoise(shape={self.shape})"


class ConstantNoise(NoiseFunction):
    """The paper's vanilla design eps(c) = eps~ (Sec. 4.1, Fig. 6): one noise for every view.

    `noise` [D, h, w] is drawn once from `seed`; the opacity is accepted (uniform contract) and ignored.
    """

    def __init__(self, channels: int = 4, height: int = 64, width: int = 64, beta: float = 1.0, seed: int = 0):
        super().__init__(channels, height, width, beta, seed)
        self.noise = torch.randn(self.shape, generator=self._generator)  # [D, h, w]

    def _buffers(self) -> list[torch.Tensor]:
        return [self.noise]

    def _fixed(self, el, az, opacity, device, points=None) -> torch.Tensor:
        return self.noise.to(device, non_blocking=True).repeat(el.shape[0], 1, 1, 1)  # [C, D, h, w], a copy: never aliases the buffer


class WorldMapNoise(NoiseFunction):
    """The world-map noise function of Eq. 16 (FSD paper, Sec. 4.1).

        eps(c) = sqrt(beta) ((1 - M) eps_b + M W_c(eps_p)) + sqrt(1 - beta) eps

    Symbols -> names:
        Theta             theta_deg (degrees, > 0; 180 as the authors)
        eps_p, H x W      world_map [D, Hb, Wb], Hb = round(h 180/Theta), Wb = round(w 360/Theta)
        eps_b             background [D, h, w]
        M                 avg-pool of opacity down to h x w, >= alpha0 (pooled == alpha0 is foreground, as the
                          authors' code, where background is pooled < alpha0)
        W_c(eps_p)        patch(elevation, azimuth) [C, D, h, w]

    The patch is the h x w window CENTRED (as the paper's text says) at
        row_c = round(Hb (90 - elevation) / 180)   in [0, Hb]: the top pole is row 0, the horizon Hb/2
        col_c = round(Wb azimuth / 360) mod Wb
    rows row_c - h//2 .. row_c - h//2 + h - 1, columns (col_c - w//2 + j) mod Wb, j < w.
    Columns wrap (the map is continuous across the azimuth seam); rows do not: the map is stored
    padded with h//2 rows above and h - h//2 rows below, drawn from N(0, I) once with the map
    (`padded_map` [D, Hb + h, Wb]), so patches near the poles stay full-size and unit-variance;
    the top pole's patch and the bottom pole's patch share no cells.
    Positions are rounded to whole cells (round half up), so eps(c) is deterministic for a camera.

    Differences from the authors' code (REFERENCE.md): there (row, col) is the patch's top-left
    corner, with row = int((-elevation Hb / 180) mod Hb) (rows wrap, the horizon on row 0) and
    truncating int() in place of rounding; Hb and Wb use int() where we round.
    """

    def __init__(
        self,
        channels: int = 4,
        height: int = 64,
        width: int = 64,
        beta: float = 1.0,
        seed: int = 0,
        theta_deg: float = 180.0,
        alpha0: float = 0.5,
    ):
        super().__init__(channels, height, width, beta, seed)
        if not (isinstance(theta_deg, (int, float)) and math.isfinite(theta_deg) and theta_deg > 0):
            raise InputError(f"world-map theta_deg (the paper's Theta) must be a finite angle > 0 degrees, got {theta_deg}")
        if not 0.0 <= alpha0 <= 1.0:
            raise InputError(f"foreground threshold alpha0 must be in [0, 1], got {alpha0}")
        self.theta_deg, self.alpha0 = float(theta_deg), float(alpha0)
        self.map_height = max(1, _round_half_up(height * 180.0 / theta_deg))  # Hb
        self.map_width = max(1, _round_half_up(width * 360.0 / theta_deg))  # Wb
        if self.map_width < width:  # the patch would wrap round the map: the same noise twice in one view
            raise InputError(f"theta_deg = {theta_deg:g} gives a world map {self.map_width} cells wide, narrower than "
                             f"the {width}-cell latent view, which would repeat its noise within one view; use "
                             f"theta <= {360.0 * width / (width - 0.5):.0f} degrees (the authors use 180)")
        n = channels * (self.map_height + height) * self.map_width
        if n > _MAX_MAP_ELEMENTS:
            raise InputError(
                f"theta_deg = {theta_deg} gives a {self.map_height} x {self.map_width} world map "
                f"({n} values), too large; use a larger theta_deg (the authors use 180)"
            )
        self.padded_map = torch.randn(channels, self.map_height + height, self.map_width, generator=self._generator)
        self.background = torch.randn(self.shape, generator=self._generator)  # eps_b [D, h, w]

    @property
    def world_map(self) -> torch.Tensor:
        """eps_p [D, Hb, Wb], a view of padded_map without the pole padding."""
        top = self.height // 2
        return self.padded_map[:, top : top + self.map_height]

    def _buffers(self) -> list[torch.Tensor]:
        return [self.padded_map, self.background]

    def patch_index(self, elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> rows [C, h] into padded_map, cols [C, w] into padded_map / world_map (long, CPU)."""
        el, az = _cameras(elevation_deg, azimuth_deg)
        return self._index(el, az)

    def _index(self, el: torch.Tensor, az: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hb, wb, h, w = self.map_height, self.map_width, self.height, self.width
        row_c = torch.floor(hb * (90.0 - el) / 180.0 + 0.5).long().clamp(0, hb)  # [C] centre row of world_map
        col_c = torch.floor(wb * torch.remainder(az, 360.0) / 360.0 + 0.5).long()  # [C] centre column
        # world_map row r is padded_map row r + h//2, so the window's first padded row is row_c.
        rows = row_c[:, None] + torch.arange(h)  # [C, h]
        cols = torch.remainder(col_c[:, None] - w // 2 + torch.arange(w), wb)  # [C, w]
        return rows, cols

    def patch(self, elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor) -> torch.Tensor:
        """W_c(eps_p): the world-map window of each camera, float32 CPU [C, D, h, w]."""
        el, az = _cameras(elevation_deg, azimuth_deg)
        return self._patch(el, az)

    def _patch(self, el: torch.Tensor, az: torch.Tensor) -> torch.Tensor:
        rows, cols = self._index(el, az)
        p = self.padded_map[:, rows[:, :, None], cols[:, None, :]]  # [D, C, h, w]
        return p.permute(1, 0, 2, 3).contiguous()  # [C, D, h, w]

    def foreground(self, opacity: torch.Tensor) -> torch.Tensor:
        """M = avg_pool(opacity to h x w) >= alpha0: bool [C, 1, h, w] on opacity's device (the authors'
        background is pooled < alpha0)."""
        _check_opacity(opacity, None)
        return F.adaptive_avg_pool2d(opacity.detach().float(), (self.height, self.width)) >= self.alpha0

    def _fixed(self, el, az, opacity, device, points=None) -> torch.Tensor:
        patch = self._patch(el, az).to(device, non_blocking=True)  # [C, D, h, w]
        if opacity is None:
            return patch
        mask = self.foreground(opacity).to(device)  # [C, 1, h, w]
        return torch.where(mask, patch, self.background.to(device, non_blocking=True))

    def __repr__(self) -> str:
        return (f"WorldMapNoise(shape={self.shape}, beta={self.beta}, seed={self.seed}, theta_deg={self.theta_deg}, "
                f"alpha0={self.alpha0}, map={self.map_height}x{self.map_width})")


def surface_points(depth: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor) -> torch.Tensor:
    """Step 1 of SurfaceNoise: the object-frame point each pixel centre sees at its expected depth.

    depth [C, 1, H, W] (camera-space z), viewmats [C, 4, 4] OpenCV world-to-camera (x_cam = R x + t), Ks [C, 3, 3]
    -> [C, H, W, 3]: x = R^T (z K^-1 (u + 1/2, v + 1/2, 1) - t), in depth's dtype. Where alpha = 0 the depth is 0
    and the point is the camera centre: callers mask those pixels by opacity.
    """
    c, _, h, w = depth.shape
    v, u = torch.meshgrid(torch.arange(h, device=depth.device, dtype=depth.dtype) + 0.5,
                          torch.arange(w, device=depth.device, dtype=depth.dtype) + 0.5, indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # [H, W, 3]
    rays = torch.einsum("cij,hwj->chwi", torch.linalg.inv(Ks.to(depth.dtype)), pix)  # [C, H, W, 3], z = 1
    cam = rays * depth[:, 0, :, :, None]  # [C, H, W, 3] camera-space points
    rot, t = viewmats[:, :3, :3].to(depth.dtype), viewmats[:, :3, 3].to(depth.dtype)
    return torch.einsum("cji,chwj->chwi", rot, cam - t[:, None, None, :])  # R^T (x_cam - t)


def cube_texels(points: torch.Tensor, texels: int, shells: int, shell_width: float) -> torch.Tensor:
    """Step 2 of SurfaceNoise: the texel of each point, long [...] in [0, shells * 6 * texels^2).

    Six axis projections: the point's largest |coordinate| picks the face (+x, -x, +y, -y, +z, -z) and the point is
    projected onto that face's plane: its two other coordinates, in [-1, 1] for the unit ball, are cut into
    `texels` x `texels` square texels of side 2 / texels, the same size everywhere on the object (a latent cell's
    footprint by default: SurfaceNoise). Along the projection axis the point's |coordinate| picks a shell,
    floor(|major| / shell_width) clipped to [0, shells - 1]: surfaces one behind the other on the same side get
    independent noise (the successor's depth-peeled shells). id = ((shell * 6 + face) * texels + row) * texels + col.
    """
    p = points.to(torch.float64)
    axis = p.abs().argmax(dim=-1)  # [...] 0, 1, 2
    major = p.gather(-1, axis[..., None])[..., 0]  # [...] signed largest coordinate
    face = 2 * axis + (major < 0).long()  # 0..5: +x, -x, +y, -y, +z, -z
    others = torch.tensor([[1, 2], [0, 2], [0, 1]], device=p.device)[axis]  # [..., 2] the two other axes
    ab = p.gather(-1, others)  # [..., 2] the point on the face's plane
    cell = ((ab + 1.0) * (0.5 * texels)).floor().long().clamp(0, texels - 1)  # [..., 2]
    shell = (major.abs() / shell_width).floor().long().clamp(0, shells - 1)
    return ((shell * 6 + face) * texels + cell[..., 0]) * texels + cell[..., 1]


def texel_noise(ids: torch.Tensor, valid: torch.Tensor, textures: torch.Tensor, h: int, w: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 3 of SurfaceNoise: each latent cell's noise, the sum of the distinct texels its pixels see divided by
    sqrt(their count), so a cell is N(0, 1) whatever its number of texels (and one texel's value when it sees one).

    ids [C, H, W] texel per pixel (H = k h, W = k w), valid [C, H, W] bool, textures [n_texels, D]
    -> (noise [C, D, h, w], counts [C, 1, h, w] distinct texels per cell, 0 where no pixel is valid).
    """
    c, hh, ww = ids.shape
    n_tex, d = textures.shape
    ky, kx = hh // h, ww // w
    rows = torch.arange(hh, device=ids.device) // ky
    cols = torch.arange(ww, device=ids.device) // kx
    cell = (torch.arange(c, device=ids.device)[:, None, None] * h + rows[None, :, None]) * w + cols[None, None, :]
    keys = torch.unique(cell[valid] * n_tex + ids[valid])  # distinct (cell, texel) pairs
    where, tex = keys // n_tex, keys % n_tex
    sums = torch.zeros(c * h * w, d, device=ids.device, dtype=textures.dtype).index_add_(0, where, textures[tex])
    counts = torch.zeros(c * h * w, device=ids.device, dtype=textures.dtype).index_add_(
        0, where, torch.ones_like(where, dtype=textures.dtype))
    noise = sums / counts.clamp_min(1.0).sqrt()[:, None]
    return noise.view(c, h, w, d).permute(0, 3, 1, 2).contiguous(), counts.view(c, 1, h, w)


class SurfaceNoise(NoiseFunction):
    """Noise fixed on the object's surface (the authors' successor design, Consistent Flow Distillation's
    triplane noise generator, on 3D Gaussians; written from its description, not its code):

        eps(c) = sqrt(beta) ((1 - M) eps_b + M S_c) + sqrt(1 - beta) eps

    1. surface points: each rendered pixel's expected depth unprojected to the object frame (`surface_points`);
    2. texels: six axis projections (the face of the point's largest coordinate), the point's two other
       coordinates cut into square texels of one size, and shells along the projection axis, each (shell, face)
       with its own fixed N(0, I) texture of `texels` x `texels` x D (`cube_texels`);
    3. S_c: per latent cell, the sum of the distinct texels its pixels with opacity >= alpha0 see, over sqrt of
       their count: unit variance, the same texels (so the same noise) for the same surface seen from another
       camera, independent noise for distinct texels (`texel_noise`);
    4. M: the world map's foreground mask (pooled opacity >= alpha0) and cells whose pixels see texels; elsewhere
       eps_b [D, h, w], one fixed background noise, as the world map's.
    Differences from the successor (written from its description): the face is picked by the point's position,
    not its normal, and the texels are planar (one size everywhere) in place of its sphere-to-square warp (whose
    texels would shrink towards the centre, the thin stems and inner parts, and decorrelate neighbouring views
    there: on 4 embedded mushroom scenes the noise of views 10 degrees apart, warped by depth, correlates 0.58 with
    these texels, 0.38 with warped ones of about that size, 0.03 with 4x finer warped ones); shells are bins of
    the coordinate along the projection axis in place of depth peeling; the surface is the Gaussians' expected
    depth, the scatter is PyTorch's (no nvdiffrast). texels defaults to round(1.5 h): a texel of
    2 / texels = 1.3 / h, a latent cell's footprint at the default framing (the frame ~1.3 units high at the object
    over h cells), so that a view 10 degrees away finds mostly the same texels even with one pixel per cell (the
    embedded priors); shells to 16 of 1/16 (the objects lie in the unit ball).
    """

    needs_points = True

    def __init__(self, channels: int = 4, height: int = 64, width: int = 64, beta: float = 1.0, seed: int = 0,
                 alpha0: float = 0.5, texels: int | None = None, shells: int = 16, shell_width: float = 1.0 / 16):
        super().__init__(channels, height, width, beta, seed)
        if not 0.0 <= alpha0 <= 1.0:
            raise InputError(f"foreground threshold alpha0 must be in [0, 1], got {alpha0}")
        self.alpha0 = float(alpha0)
        self.texels = max(1, round(1.5 * height)) if texels is None else int(texels)
        self.shells, self.shell_width = int(shells), float(shell_width)
        n = self.shells * 6 * self.texels**2 * channels
        if not (self.texels >= 1 and self.shells >= 1 and shell_width > 0) or n > _MAX_MAP_ELEMENTS:
            raise InputError(f"surface noise of {self.shells} shells x 6 faces x {self.texels}^2 texels: "
                             "need texels, shells >= 1, shell width > 0 and at most 2^28 values")
        self.textures = torch.randn(self.shells * 6 * self.texels**2, channels, generator=self._generator)
        self.background = torch.randn(self.shape, generator=self._generator)  # eps_b [D, h, w]
        self._on: dict[torch.device, torch.Tensor] = {}  # textures moved to a device once

    def _buffers(self) -> list[torch.Tensor]:
        return [self.textures, self.background]

    def renoise(self, gamma: float, generator: torch.Generator | None = None) -> None:
        super().renoise(gamma, generator)
        self._on.clear()

    def foreground(self, opacity: torch.Tensor) -> torch.Tensor:
        """M as the world map's: avg_pool(opacity to h x w) >= alpha0, bool [C, 1, h, w]."""
        return F.adaptive_avg_pool2d(opacity.detach().float(), (self.height, self.width)) >= self.alpha0

    def _fixed(self, el, az, opacity, device, points=None) -> torch.Tensor:
        if points is None or opacity is None:
            raise InputError("surface noise needs the render's opacity and surface points (fsd3d.noise.surface_points)")
        if points.shape[:3] != (opacity.shape[0], *opacity.shape[2:]) or points.shape[-1] != 3:
            raise InputError(f"points must be [C, H, W, 3] as opacity [C, 1, H, W], got {tuple(points.shape)}")
        if opacity.shape[2] % self.height or opacity.shape[3] % self.width:
            raise InputError(f"surface noise needs renders of a multiple of {self.height} x {self.width} pixels")
        device = torch.device(device)
        textures = self._on.get(device)
        if textures is None:
            textures = self._on[device] = self.textures.to(device)
        ids = cube_texels(points.detach().to(device), self.texels, self.shells, self.shell_width)
        valid = opacity.detach().to(device)[:, 0] >= self.alpha0  # [C, H, W] pixels on the surface
        surface, counts = texel_noise(ids, valid, textures, self.height, self.width)
        mask = self.foreground(opacity).to(device) & (counts > 0)
        return torch.where(mask, surface, self.background.to(device, non_blocking=True))

    def __repr__(self) -> str:
        return (f"SurfaceNoise(shape={self.shape}, beta={self.beta}, seed={self.seed}, alpha0={self.alpha0}, "
                f"texels={self.texels}, shells={self.shells}x{self.shell_width:g})")


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _cameras(elevation_deg, azimuth_deg) -> tuple[torch.Tensor, torch.Tensor]:
    """Check and convert the camera angles to float64 CPU [C]."""
    try:
        el = torch.as_tensor(elevation_deg).detach().to("cpu", torch.float64)
        az = torch.as_tensor(azimuth_deg).detach().to("cpu", torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise InputError(f"camera elevation/azimuth must be numbers [C]: {e}") from None
    if el.dim() != 1 or az.shape != el.shape or el.shape[0] == 0:
        raise InputError(f"elevation_deg and azimuth_deg must both be [C] with C >= 1, got {tuple(el.shape)} and {tuple(az.shape)}")
    if not (torch.isfinite(el).all() and torch.isfinite(az).all()):
        raise InputError("camera elevation/azimuth must be finite")
    if el.abs().max() > 90.0 + _ELEVATION_TOL:
        raise InputError(f"elevation must be in [-90, 90] degrees, got {el.abs().max().item():g} in absolute value")
    return el, az


def _check_opacity(opacity, c: int | None) -> None:
    """opacity: None or [C, 1, H, W] (any C when c is None)."""
    if opacity is None:
        return
    if not isinstance(opacity, torch.Tensor) or opacity.dim() != 4 or opacity.shape[1] != 1 or c not in (None, opacity.shape[0]):
        shape = tuple(opacity.shape) if isinstance(opacity, torch.Tensor) else type(opacity).__name__
        raise InputError(f"opacity must be [C, 1, H, W]{'' if c is None else f' with C = {c} cameras'}, got {shape}")


def _device(device, opacity, elevation_deg) -> torch.device:
    if device is not None:
        return torch.device(device)
    if opacity is not None:
        return opacity.device
    return elevation_deg.device if isinstance(elevation_deg, torch.Tensor) else torch.device("cpu")
