"""A 3D Gaussian Splatting scene: raw learnable parameters and their activations (Kerbl et al. 2023).

Conventions (once, here): world right-handed, +z up, object at the origin, unit scale.
Raw parameters (what the optimiser sees)             activated accessor
    means           [N, 3]     world positions          means (as is)
    log_scales      [N, 3]     log of std-devs          scales()            [N, 3] > 0
    quats           [N, 4]     (w, x, y, z), any norm    normalized_quats()  [N, 4] unit
    opacity_logits  [N]        logit of opacity          opacities()         [N] in (0, 1)
    sh0             [N, 3]     degree-0 SH, RGB          colors(view_dirs)   RGB >= 0 (not capped at 1)
    sh_rest         [N, 3, 3]  degree-1 SH [N, K=3, RGB] (only when sh_degree == 1)
The SH constants and signs are those of the 3DGS code (utils/sh_utils.py, eval_sh), so a scene
saved with fsd3d.ply opens with the colours it has here in any standard splat viewer. Colours are
clamped at 0 only, as 3DGS (`torch.clamp_min(sh2rgb + 0.5, 0.0)`) and gsplat's rasterization
(`torch.clamp_min(colors + 0.5, 0.0)`): an SH colour above 1 stays above 1, and so can the render.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fsd2d.errors import InputError

SH_C0 = 0.28209479177387814  # Y_0^0
SH_C1 = 0.4886025119029199  # |Y_1^m| for m = -1, 0, 1
SH_REST = {0: 0, 1: 3}  # sh_degree -> K, the number of non-DC coefficients per channel


def rgb_to_sh0(rgb: float | torch.Tensor) -> float | torch.Tensor:
    """Inverse of the degree-0 colour map: sh0 = (rgb - 0.5) / C0."""
    return (rgb - 0.5) / SH_C0


class GaussianScene(torch.nn.Module):
    """N anisotropic Gaussians with degree-0 (default) or degree-1 spherical-harmonic colour."""

    def __init__(
        self,
        means: torch.Tensor,  # [N, 3]
        log_scales: torch.Tensor,  # [N, 3]
        quats: torch.Tensor,  # [N, 4] wxyz, unnormalised
        opacity_logits: torch.Tensor,  # [N]
        sh0: torch.Tensor,  # [N, 3]
        sh_rest: torch.Tensor | None = None,  # [N, 3, 3] when sh_degree == 1
    ):
        super().__init__()
        _check_raw(means, log_scales, quats, opacity_logits, sh0, sh_rest)
        self.sh_degree = 0 if sh_rest is None else 1
        p = lambda t: torch.nn.Parameter(t.detach().to(torch.float32).clone())  # noqa: E731
        self.means = p(means)
        self.log_scales = p(log_scales)
        self.quats = p(quats)
        self.opacity_logits = p(opacity_logits)
        self.sh0 = p(sh0)
        self.sh_rest = None if sh_rest is None else p(sh_rest)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_tensors(
        cls,
        means: torch.Tensor,  # [N, 3]
        log_scales: torch.Tensor,  # [N, 3]
        quats: torch.Tensor,  # [N, 4] wxyz
        opacity_logits: torch.Tensor,  # [N]
        sh0: torch.Tensor,  # [N, 3]
        sh_rest: torch.Tensor | None = None,  # [N, 3, 3]
    ) -> GaussianScene:
        """Rebuild a scene from raw (pre-activation) arrays; they are copied to float32 parameters."""
        return cls(means, log_scales, quats, opacity_logits, sh0, sh_rest)

    @classmethod
    def init_ball(
        cls,
        n: int,
        radius: float,
        generator: torch.Generator,
        sh_degree: int = 0,
        *,
        scale: float = 0.03,
        opacity: float = 0.1,
        color: float = 0.5,
    ) -> GaussianScene:
        """n Gaussians uniform in the ball of `radius` at the origin.

        Isotropic std-dev `scale * radius`, opacity `opacity`, grey `color`, identity rotation,
        zero sh_rest. Deterministic given `generator` (a CPU generator; draws are float32).
        """
        _check_init(n, radius, generator, sh_degree, scale, opacity, color)
        d = F.normalize(torch.randn(n, 3, generator=generator), dim=-1)  # [N, 3] unit directions
        r = radius * torch.rand(n, 1, generator=generator) ** (1.0 / 3.0)  # [N, 1] uniform in volume
        return cls._isotropic(d * r, radius, sh_degree, scale, opacity, color)

    @classmethod
    def init_sphere(
        cls,
        n: int,
        radius: float,
        generator: torch.Generator,
        sh_degree: int = 0,
        *,
        scale: float = 0.03,
        opacity: float = 0.1,
        color: float = 0.5,
    ) -> GaussianScene:
        """n Gaussians uniform on the sphere of `radius` at the origin; other defaults as init_ball."""
        _check_init(n, radius, generator, sh_degree, scale, opacity, color)
        d = F.normalize(torch.randn(n, 3, generator=generator), dim=-1)  # [N, 3]
        return cls._isotropic(d * radius, radius, sh_degree, scale, opacity, color)

    @classmethod
    def _isotropic(cls, means, radius, sh_degree, scale, opacity, color) -> GaussianScene:
        n = means.shape[0]
        log_scales = torch.full((n, 3), math.log(scale * radius))
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1.0
        logits = torch.full((n,), math.log(opacity / (1.0 - opacity)))
        sh0 = torch.full((n, 3), rgb_to_sh0(color))
        sh_rest = torch.zeros(n, SH_REST[sh_degree], 3) if sh_degree > 0 else None
        return cls(means, log_scales, quats, logits, sh0, sh_rest)

    # ---- activated accessors ------------------------------------------------------------------
    def __len__(self) -> int:
        return self.means.shape[0]

    def scales(self) -> torch.Tensor:
        """[N, 3] std-devs along the Gaussian's local axes, exp(log_scales) > 0."""
        return torch.exp(self.log_scales)

    def opacities(self) -> torch.Tensor:
        """[N] in (0, 1), sigmoid(opacity_logits)."""
        return torch.sigmoid(self.opacity_logits)

    def normalized_quats(self) -> torch.Tensor:
        """[N, 4] unit quaternions, (w, x, y, z)."""
        return F.normalize(self.quats, dim=-1)

    def colors(self, view_dirs: torch.Tensor | None = None) -> torch.Tensor:
        """RGB >= 0: clamp_min(0.5 + SH(view_dirs), 0), as 3DGS and gsplat (no upper clamp: values above 1 stay).

        view_dirs: [N, 3] or [C, N, 3], directions from the camera centre to each Gaussian (3DGS's
        `means - campos`); normalised here. Degree 0 ignores them and returns [N, 3]; degree 1
        needs them and returns their leading shape + [3].
        """
        rgb = SH_C0 * self.sh0  # [N, 3]
        if self.sh_degree == 0:
            return torch.clamp_min(rgb + 0.5, 0.0)
        if view_dirs is None:
            raise InputError("colors() of an SH degree-1 scene needs view_dirs [N, 3] or [C, N, 3]")
        if view_dirs.shape[-2:] != (len(self), 3) or view_dirs.dim() not in (2, 3):
            raise InputError(f"view_dirs must be [N, 3] or [C, N, 3] with N = {len(self)}, got {tuple(view_dirs.shape)}")
        d = F.normalize(view_dirs.to(rgb.dtype), dim=-1)  # [..., N, 3]
        x, y, z = d[..., 0:1], d[..., 1:2], d[..., 2:3]  # [..., N, 1]
        s = self.sh_rest  # [N, 3, 3]: coefficient m in (-1, 0, 1) order = (y, z, x)
        rgb = rgb - SH_C1 * y * s[:, 0] + SH_C1 * z * s[:, 1] - SH_C1 * x * s[:, 2]  # [..., N, 3]
        return torch.clamp_min(rgb + 0.5, 0.0)

    def extra_repr(self) -> str:
        return f"n={len(self)}, sh_degree={self.sh_degree}"


def _check_raw(means, log_scales, quats, opacity_logits, sh0, sh_rest) -> int:
    for name, t in (("means", means), ("log_scales", log_scales), ("quats", quats),
                    ("opacity_logits", opacity_logits), ("sh0", sh0), ("sh_rest", sh_rest)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise InputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if means.dim() != 2 or means.shape[1] != 3:
        raise InputError(f"means must be [N, 3], got {tuple(means.shape)}")
    n = means.shape[0]
    want = {"log_scales": (log_scales, (n, 3)), "quats": (quats, (n, 4)),
            "opacity_logits": (opacity_logits, (n,)), "sh0": (sh0, (n, 3))}
    if sh_rest is not None:
        want["sh_rest"] = (sh_rest, (n, SH_REST[1], 3))
    for name, (t, shape) in want.items():
        if tuple(t.shape) != shape:
            raise InputError(f"{name} must be {list(shape)} for N = {n} Gaussians, got {tuple(t.shape)}")
    return n


def _check_init(n, radius, generator, sh_degree, scale, opacity, color) -> None:
    if not isinstance(n, int) or n < 1:
        raise InputError(f"number of Gaussians must be a positive int, got {n!r}")
    if not radius > 0:
        raise InputError(f"radius must be > 0, got {radius}")
    if sh_degree not in SH_REST:
        raise InputError(f"sh_degree must be one of {sorted(SH_REST)}, got {sh_degree!r}")
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise InputError("generator must be a CPU torch.Generator (scenes are drawn on the CPU for reproducibility)")
    if not scale > 0:
        raise InputError(f"scale must be > 0 (a fraction of the radius), got {scale}")
    if not 0.0 < opacity < 1.0:
        raise InputError(f"opacity must be in (0, 1), got {opacity}")
    if not 0.0 <= color <= 1.0:
        raise InputError(f"color must be in [0, 1], got {color}")
