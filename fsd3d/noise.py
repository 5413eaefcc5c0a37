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
    ) -> torch.Tensor:
        """Eq. 16: sqrt(beta) * fixed(c) + sqrt(1 - beta) * eps, eps ~ N(0, I) fresh. -> [C, D, h, w].

        device defaults to opacity's, else elevation's (CPU for non-tensors). The fresh noise is
        drawn even when beta = 1, so `generator` advances the same way for every beta.
        """
        el, az = _cameras(elevation_deg, azimuth_deg)
        _check_opacity(opacity, el.shape[0])
        if generator is not None and (not isinstance(generator, torch.Generator) or generator.device.type != "cpu"):
            raise InputError("generator must be a CPU torch.Generator (noise is drawn on the CPU for reproducibility)")
        device = _device(device, opacity, elevation_deg)
        fresh = torch.randn(el.shape[0], *self.shape, generator=generator).to(device, non_blocking=True)  # [C, D, h, w]
        fixed = self._fixed(el, az, opacity, device) if self.beta > 0.0 else fresh
        return blend_noise(fixed, fresh, self.beta).to(dtype)

    def fixed(
        self,
        elevation_deg: torch.Tensor,  # [C]
        azimuth_deg: torch.Tensor,  # [C]
        opacity: torch.Tensor | None = None,  # [C, 1, H, W]
        *,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """The deterministic part of eps(c) (what beta = 1 returns), float32 [C, D, h, w]."""
        el, az = _cameras(elevation_deg, azimuth_deg)
        _check_opacity(opacity, el.shape[0])
        return self._fixed(el, az, opacity, _device(device, opacity, elevation_deg))

    @abstractmethod
    def _fixed(self, el: torch.Tensor, az: torch.Tensor, opacity: torch.Tensor | None, device) -> torch.Tensor:
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

    def _fixed(self, el, az, opacity, device) -> torch.Tensor:
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

    def _fixed(self, el, az, opacity, device) -> torch.Tensor:
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

    def _fixed(self, el, az, opacity, device) -> torch.Tensor:
        patch = self._patch(el, az).to(device, non_blocking=True)  # [C, D, h, w]
        if opacity is None:
            return patch
        mask = self.foreground(opacity).to(device)  # [C, 1, h, w]
        return torch.where(mask, patch, self.background.to(device, non_blocking=True))

    def __repr__(self) -> str:
        return (f"WorldMapNoise(shape={self.shape}, beta={self.beta}, seed={self.seed}, theta_deg={self.theta_deg}, "
                f"alpha0={self.alpha0}, map={self.map_height}x{self.map_width})")


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
