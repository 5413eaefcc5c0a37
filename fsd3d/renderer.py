"""Render 3D Gaussians: gsplat on CUDA, a dense pure-PyTorch reference everywhere.

Inputs (where they enter the library; camera conventions are in `fsd3d.cameras`):
    means      [N, 3]  world positions
    quats      [N, 4]  rotations, (w, x, y, z) order as gsplat, need not be normalised
    scales     [N, 3]  standard deviations along the rotated axes (already exp'd, > 0)
    opacities  [N]     in (0, 1) (already sigmoid'ed)
    colors     [N, 3] (or [C, N, 3] per camera)  RGB >= 0 (already evaluated; no SH here); as 3DGS, not capped at 1
    viewmats   [C, 4, 4] OpenCV world-to-camera;  Ks [C, 3, 3] pinhole intrinsics (pixels)
    background [3] or [C, 3] RGB in [0, 1], or None (= black)
Output: `RenderOutput` with channels-first images (rgb [C, 3, H, W] feeds the fsd2d priors,
which take [B, 3, H, W]).

The maths of `render_reference` is gsplat's default ("classic", packed or not) rasterisation:
    1. Sigma = R S S^T R^T, R from the normalised quaternion, S = diag(scales).
    2. Camera space: t = V mu + v, Sigma_c = V Sigma V^T (V, v: rotation, translation of viewmat).
       Gaussians with t_z <= near are dropped.
    3. Screen mean: (K t)_{xy} / t_z. EWA: Sigma_2d = J Sigma_c J^T + 0.3 I (gsplat eps2d = 0.3), with
       J = [[fx/tz, 0, -fx tx'/tz^2], [0, fy/tz, -fy ty'/tz^2]], where tx'/tz and ty'/tz are clamped to
       [-(cx/fx + 0.3 tan_x), (W - cx)/fx + 0.3 tan_x] (and likewise in y), tan_x = 0.5 W / fx:
       i.e. 1.3 x the half-fov tangent for a centred principal point.
    4. Per pixel centre p = (j + 0.5, i + 0.5): alpha_i = min(0.999, o_i exp(-0.5 d^T Sigma_2d^-1 d)),
       d = p - mean_i; contributions with alpha_i < 1/255 are skipped.
    5. Front-to-back in camera z: T_i = prod_{j<i} (1 - alpha_j) (as exp of a running sum of logs), w_i = alpha_i T_i,
       rgb = sum_i w_i c_i + T_final * bg, alpha = sum_i w_i = 1 - T_final,
       depth = sum_i w_i z_i / max(alpha, 1e-10) (gsplat's "ED" expected depth; 0 where alpha = 0).
    6. Early stop, as gsplat's rasterize_to_pixels kernel: a pixel is done at the first Gaussian k whose
       T_k (1 - alpha_k) <= 1e-4; k itself is NOT composited, nor anything behind it, and T_final = T_k.
       (In log space: a Gaussian is dropped when the inclusive running sum of log(1 - alpha) over its pixel is
       <= log 1e-4; the sum never increases, so that marks exactly the trigger and everything after it.)
       The stop can change a pixel a lot (two Gaussians of alpha 0.999: the second one's 1e-3 is dropped;
       alpha 0.95 then 0.999: the second one's 0.05), so the reference keeps it; the mask is not differentiated.
Known differences from gsplat's CUDA kernels (tests/fsd3d/test_renderer.py compares the two where CUDA is present):
    * The stop test: gsplat multiplies T in float32 and compares to 1e-4f; the reference compares a float64
      sum of float32-or-float64 logs to log(1e-4). A pixel whose T lands within rounding of 1e-4 can stop one
      Gaussian earlier or later on one side (rare; it changes that pixel by up to the dropped weight).
    * gsplat only visits Gaussians whose screen box (tile-granular) touches a pixel's tile and culls
      Gaussians whose box misses the image. Versions that size the box at 3 sigma regardless of
      opacity miss alpha in [1/255, 0.011 o] beyond 3 sigma, which the dense reference keeps;
      versions that size it from the opacity and the 1/255 cut agree with the reference.
    * gsplat's kernels are float32 only; the reference runs in any float dtype (float64 for gradcheck).
Gradients: the reference's backward gives the same bits on every run at any thread count (gsplat's CUDA backward,
which adds with atomics, does not). Its gathers are `index_select`, whose backward (index_add) sums each source
row's entries in index order, never `x[idx]`: that one's backward, index_put_(accumulate=True), adds float32 values
with atomics in whatever order the threads get there once it has >= 32768 elements and > 1 thread, and
densification thresholds the summed screen gradients (a resumed or batched seed must decide as the seed alone).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from fsd2d.errors import InputError

__all__ = ["Backend", "RenderOutput", "quat_to_rotmat", "render", "render_gsplat", "render_reference"]

Backend = Literal["auto", "reference", "gsplat"]

EPS2D = 0.3  # gsplat's low-pass added to the 2D covariance (pixels^2)
ALPHA_MIN = 1.0 / 255.0  # contributions below are skipped
ALPHA_MAX = 0.999  # per-Gaussian alpha clamp
DEPTH_EPS = 1e-10  # expected depth = accumulated depth / max(alpha, DEPTH_EPS), as gsplat
FOV_CLAMP = 0.3  # the off-centre clamp of x/z, y/z in the Jacobian: tan_half_fov * (1 + 0.3)
T_STOP = 1e-4  # gsplat's early stop: a pixel is done at the first Gaussian that would bring T to <= T_STOP
LOG_T_STOP = math.log(T_STOP)


@dataclass
class RenderOutput:
    """Rendered images, channels-first, one per camera."""

    rgb: torch.Tensor  # [C, 3, H, W] in [0, 1] for colours in [0, 1] (above 1 where colours are), background composited
    alpha: torch.Tensor  # [C, 1, H, W] in [0, 1], accumulated opacity 1 - T_final
    depth: torch.Tensor  # [C, 1, H, W] expected camera-space z (0 where alpha = 0)
    # What gsplat's densification strategies read (fsd3d.densify), in gsplat's meta layout:
    means2d: torch.Tensor | None = None  # [C, N, 2] screen-space means (pixels), in the graph: .grad after backward
    radii: torch.Tensor | None = None  # [C, N, 2] int32 screen extents (pixels); 0 = not visible in that camera


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] from quaternions [..., 4] in (w, x, y, z) order (normalised here)."""
    w, x, y, z = F.normalize(quats, p=2, dim=-1).unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return R.reshape(quats.shape[:-1] + (3, 3))


def _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, background) -> None:
    """Shape, dtype and size checks shared by both backends; messages print the actual shapes."""
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise InputError(f"image {name} must be a positive int, got {v!r}")
    if means.ndim != 2 or means.shape[-1] != 3:
        raise InputError(f"means must be [N, 3], got {tuple(means.shape)}")
    N = means.shape[0]
    expected = {"quats": (N, 4), "scales": (N, 3), "opacities": (N,), "colors": (N, 3)}
    for name, t in (("quats", quats), ("scales", scales), ("opacities", opacities), ("colors", colors)):
        if tuple(t.shape) != expected[name] and not (name == "colors" and tuple(t.shape) == (viewmats.shape[0], N, 3)):
            extra = " or [C, N, 3] (per camera)" if name == "colors" else ""
            raise InputError(f"{name} must be {list(expected[name])}{extra} for N={N} means, got {tuple(t.shape)}")
    if viewmats.ndim != 3 or viewmats.shape[-2:] != (4, 4):
        raise InputError(f"viewmats must be [C, 4, 4], got {tuple(viewmats.shape)}")
    C = viewmats.shape[0]
    if tuple(Ks.shape) != (C, 3, 3):
        raise InputError(f"Ks must be [C, 3, 3] with C={C} viewmats, got {tuple(Ks.shape)}")
    if background is not None and tuple(background.shape) not in ((3,), (C, 3)):
        raise InputError(f"background must be [3] or [C, 3] with C={C}, got {tuple(background.shape)}")
    if not means.is_floating_point():
        raise InputError(f"means must be a floating-point tensor, got {means.dtype}")
    tensors = [quats, scales, opacities, colors, viewmats, Ks] + ([background] if background is not None else [])
    for t in tensors:
        if t.dtype != means.dtype or t.device != means.device:
            raise InputError(
                f"all tensors must share means' dtype and device ({means.dtype}, {means.device}), "
                f"got {t.dtype} on {t.device}"
            )


def _to_camera(means, quats, scales, viewmats):
    """Steps 1-2: camera-space means [C, N, 3] and covariances [C, N, 3, 3]."""
    R = quat_to_rotmat(quats)  # [N, 3, 3]
    M = R * scales[:, None, :]  # [N, 3, 3] = R S
    covars = M @ M.transpose(-1, -2)  # [N, 3, 3]
    Rw = viewmats[:, :3, :3]  # [C, 3, 3]
    tw = viewmats[:, :3, 3]  # [C, 3]
    means_c = torch.einsum("cij,nj->cni", Rw, means) + tw[:, None, :]  # [C, N, 3]
    covars_c = torch.einsum("cij,njk,clk->cnil", Rw, covars, Rw)  # [C, N, 3, 3]
    return means_c, covars_c


def _screen_space(means_c, covars_c, Ks, width, height, near):
    """Step 3: (valid [C, N], depth [C, N], means2d [C, N, 2], conics [C, N, 2, 2], radii [C, N, 2] int32)."""
    tx, ty, tz = means_c.unbind(-1)  # [C, N]
    valid = tz > near  # [C, N]
    # Dropped Gaussians get a harmless stand-in depth so no NaN/inf reaches the gradients.
    tz_s = torch.where(valid, tz, torch.ones_like(tz))  # [C, N]
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]  # [C, 1]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy  # [C, 1]
    lim_x_pos, lim_x_neg = (width - cx) / fx + FOV_CLAMP * tan_x, cx / fx + FOV_CLAMP * tan_x
    lim_y_pos, lim_y_neg = (height - cy) / fy + FOV_CLAMP * tan_y, cy / fy + FOV_CLAMP * tan_y
    txc = tz_s * torch.maximum(torch.minimum(tx / tz_s, lim_x_pos), -lim_x_neg)  # [C, N]
    tyc = tz_s * torch.maximum(torch.minimum(ty / tz_s, lim_y_pos), -lim_y_neg)  # [C, N]
    zero = torch.zeros_like(tz_s)
    J = torch.stack(
        [fx / tz_s, zero, -fx * txc / tz_s**2, zero, fy / tz_s, -fy * tyc / tz_s**2], dim=-1
    ).reshape(tz.shape + (2, 3))  # [C, N, 2, 3]
    cov2d = J @ covars_c @ J.transpose(-1, -2)  # [C, N, 2, 2]
    cov2d = cov2d + EPS2D * torch.eye(2, dtype=cov2d.dtype, device=cov2d.device)
    a, b, c = cov2d[..., 0, 0], 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0]), cov2d[..., 1, 1]  # [C, N]
    det = (a * c - b * b).clamp(min=1e-10)  # [C, N]
    conics = torch.stack([c / det, -b / det, -b / det, a / det], dim=-1).reshape(tz.shape + (2, 2))
    # Screen means use the unclamped camera-space mean, with the full K (skew included).
    uv = torch.einsum("cij,cnj->cni", Ks[:, :2, :3], means_c) / tz_s[..., None]  # [C, N, 2]
    return valid, tz, uv, conics, _radii(cov2d.detach(), uv.detach(), valid & (det > 0), width, height)


def _radii(cov2d, uv, valid, width, height):
    """Screen extents [C, N, 2] int32 as gsplat's projection reports them (its PyTorch reference,
    cuda/_torch_impl.py): ceil(3.33 sqrt(Sigma_2d diagonal)) per axis, 0 for Gaussians behind the near
    plane or whose box misses the image."""
    radius = torch.ceil(3.33 * torch.sqrt(torch.stack([cov2d[..., 0, 0], cov2d[..., 1, 1]], dim=-1)))  # [C, N, 2]
    inside = ((uv[..., 0] + radius[..., 0] > 0) & (uv[..., 0] - radius[..., 0] < width)
              & (uv[..., 1] + radius[..., 1] > 0) & (uv[..., 1] - radius[..., 1] < height))  # [C, N]
    return torch.where((valid & inside)[..., None], radius, torch.zeros_like(radius)).int()


def render_reference(
    means: torch.Tensor,  # [N, 3]
    quats: torch.Tensor,  # [N, 4] (w, x, y, z)
    scales: torch.Tensor,  # [N, 3]
    opacities: torch.Tensor,  # [N]
    colors: torch.Tensor,  # [N, 3] or [C, N, 3] (per camera)
    viewmats: torch.Tensor,  # [C, 4, 4]
    Ks: torch.Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    background: torch.Tensor | None = None,  # [3] or [C, 3]
    near: float = 0.01,
    *,
    dense: bool = False,
) -> RenderOutput:
    """Pure-PyTorch rasterisation, differentiable w.r.t. every Gaussian parameter.

    Same maths as gsplat's default rasterisation (module docstring, steps 1-6), its T <= 1e-4 early stop
    included. Each Gaussian is composited over the pixels of its opacity-aware box (`_composite_boxes`):
    O(N log N + sum of box areas) per camera. `dense=True` composites every (Gaussian, pixel) pair instead,
    O(N * H * W), the reference the box version is tested against (same images to rounding).
    """
    _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, background)
    C = viewmats.shape[0]
    dtype, device = means.dtype, means.device

    means_c, covars_c = _to_camera(means, quats, scales, viewmats)
    valid, depth, uv, conics, radii = _screen_space(means_c, covars_c, Ks, width, height, near)

    if background is None:
        bg = torch.zeros(C, 3, dtype=dtype, device=device)
    else:
        bg = background.expand(C, 3)  # [C, 3]

    composite = _composite_dense if dense else _composite_boxes
    rgbs, alphas, depths = [], [], []
    for ci in range(C):
        # 5a. front-to-back order of the Gaussians in front of the near plane (order not differentiated)
        order = torch.argsort(depth[ci].detach())  # [N]
        order = order[valid[ci, order]]  # [M] (M <= N)
        # gathers as index_select: backward index_add, summed in index order (module docstring, "Gradients")
        mu, con = uv[ci].index_select(0, order), conics[ci].index_select(0, order)  # [M, 2], [M, 2, 2]
        col = (colors if colors.dim() == 2 else colors[ci]).index_select(0, order)  # [M, 3]
        z, o = depth[ci].index_select(0, order), opacities.index_select(0, order)  # [M], [M]
        acc, log_t_final = composite(mu, con, o, torch.cat([col, z[:, None], torch.ones_like(z)[:, None]], dim=1),
                                     width, height)  # [P, 5] = (sum w c, sum w z, sum w), [P]
        rgb = acc[:, :3] + torch.exp(log_t_final)[:, None] * bg[ci][None, :]  # [P, 3]
        alpha_img = acc[:, 4]  # [P] = 1 - T_final
        dep = acc[:, 3] / alpha_img.clamp(min=DEPTH_EPS)  # [P]
        rgbs.append(rgb.transpose(0, 1).reshape(3, height, width))
        alphas.append(alpha_img.reshape(1, height, width))
        depths.append(dep.reshape(1, height, width))
    return RenderOutput(rgb=torch.stack(rgbs), alpha=torch.stack(alphas), depth=torch.stack(depths), means2d=uv,
                        radii=radii)


def _alphas(o, a, b, c, dx, dy):
    """Step 4: alpha = min(0.999, o exp(-0.5 d^T conic d)), 0 below 1/255, conic = [[a, b], [b, c]];
    o, a, b, c and d broadcast.

    The power is clamped at 30 before exp: o * exp(-30) < ALPHA_MIN is zeroed anyway, and exp of larger powers
    yields subnormal floats, ~10x slower on CPUs (results and gradients are unchanged)."""
    power = 0.5 * a * dx * dx + 0.5 * c * dy * dy + b * dx * dy
    alpha = torch.clamp(o * torch.exp(-power.clamp(max=30.0)), max=ALPHA_MAX)
    return torch.where(alpha >= ALPHA_MIN, alpha, torch.zeros_like(alpha))


def _composite_dense(mu, con, o, feats, width, height):
    """Step 5 over every (Gaussian, pixel) pair: the O(M * H * W) reference of `_composite_boxes`.

    mu [M, 2], con [M, 2, 2], o [M], feats [M, F] in front-to-back order -> (sum_i w_i feats_i [P, F],
    log T_final [P]), T_i = prod_{j<i} (1 - alpha_j) = exp of a running sum of log(1 - alpha) (>= log 0.001),
    with the early stop (step 6): weights from a pixel's trigger Gaussian on are 0 and T_final is T before it.
    """
    P = height * width
    xs = torch.arange(width, dtype=mu.dtype, device=mu.device) + 0.5  # [W] pixel-centre x
    ys = torch.arange(height, dtype=mu.dtype, device=mu.device) + 0.5  # [H] pixel-centre y
    dx = (xs[None, :] - mu[:, 0, None])[:, None, :]  # [M, 1, W]
    dy = (ys[None, :] - mu[:, 1, None])[:, :, None]  # [M, H, 1]
    cc = con[:, None, None]  # [M, 1, 1, 2, 2]
    alpha = _alphas(o[:, None, None], cc[..., 0, 0], cc[..., 0, 1], cc[..., 1, 1], dx, dy)
    alpha = alpha.reshape(-1, P)  # [M, P], row-major pixels
    log1m = torch.log1p(-alpha)  # [M, P]
    with torch.no_grad():  # the early stop: drop the trigger and all after it (float64, as _composite_boxes)
        keep = torch.cumsum(log1m.double(), dim=0) > LOG_T_STOP  # [M, P], a prefix of each column
    log1m = torch.where(keep, log1m, torch.zeros_like(log1m))  # [M, P]
    zeros = torch.zeros(1, P, dtype=mu.dtype, device=mu.device)
    log_t = torch.cumsum(torch.cat([zeros, log1m], dim=0), dim=0)  # [M + 1, P]: log T before each, then T_final
    w = torch.where(keep, alpha * torch.exp(log_t[:-1]), torch.zeros_like(alpha))  # [M, P] blending weights
    return w.transpose(0, 1) @ feats, log_t[-1]


def _composite_boxes(mu, con, o, feats, width, height):
    """Step 5 over the pixels each Gaussian can reach: same contract and result as `_composite_dense`
    (up to rounding), in O(sum of box areas) instead of O(M * H * W); falls back to the dense pass where the
    boxes cover more than a quarter of all (Gaussian, pixel) pairs.

    A Gaussian has alpha >= 1/255 only where 0.5 d^T conic d <= ln(255 o), an ellipse whose bounding box has
    half-sides sqrt(2 ln(255 o) Sigma_xx), sqrt(2 ln(255 o) Sigma_yy) (Sigma = conic^-1): gsplat's opacity-aware
    extent. Every (Gaussian, pixel) pair in those boxes becomes one entry; entries are sorted by (pixel, depth
    rank), and T before each entry is exp of the running sum of log(1 - alpha) within its pixel (float64, so
    the sum's offsets cancel exactly enough), accumulated per pixel with index_add. Early stop (step 6): entries
    whose inclusive within-pixel sum is <= log 1e-4 (the trigger and all behind it) get weight 0 and are left out
    of log T_final.
    """
    P, dtype, device = height * width, mu.dtype, mu.device
    M = mu.shape[0]
    with torch.no_grad():
        det = (con[:, 0, 0] * con[:, 1, 1] - con[:, 0, 1] * con[:, 1, 0]).clamp(min=1e-30)  # [M] det(conic)
        r2 = 2.0 * torch.log((255.0 * o).clamp(min=1.0))  # [M] squared Mahalanobis radius of the 1/255 cut
        hx = torch.sqrt(r2 * con[:, 1, 1] / det) * 1.0001 + 1e-4  # [M] half-sides, a hair wider than exact
        hy = torch.sqrt(r2 * con[:, 0, 0] / det) * 1.0001 + 1e-4
        # pixel j has centre j + 0.5: j in [ceil(mu - h - 0.5), floor(mu + h - 0.5)], clipped to the image
        x0 = torch.ceil(mu[:, 0] - hx - 0.5).clamp(0, width).long()
        x1 = torch.floor(mu[:, 0] + hx - 0.5).clamp(-1, width - 1).long()
        y0 = torch.ceil(mu[:, 1] - hy - 0.5).clamp(0, height).long()
        y1 = torch.floor(mu[:, 1] + hy - 0.5).clamp(-1, height - 1).long()
        nx, ny = (x1 - x0 + 1).clamp(min=0), (y1 - y0 + 1).clamp(min=0)  # [M]
        counts = torch.where(r2 > 0, nx * ny, 0)  # [M] pixels in each box
    if int(counts.sum()) > M * P // 4:  # boxes cover much of the image: the dense pass is faster
        return _composite_dense(mu, con, o, feats, width, height)
    with torch.no_grad():
        g = torch.repeat_interleave(torch.arange(M, device=device), counts)  # [E] Gaussian (depth rank) of entries
        k = torch.arange(g.shape[0], device=device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        boxes = torch.stack([x0, y0, nx.clamp(min=1)], 1)[g]  # [E, 3] one gather: box corner and width
        q, r = torch.div(k, boxes[:, 2], rounding_mode="floor"), k % boxes[:, 2]
        pix = (boxes[:, 1] + q) * width + boxes[:, 0] + r  # [E] row-major pixel index
        perm = torch.argsort(pix * M + g)  # [E]: by pixel, then front to back
        g, pix = g[perm], pix[perm]
        px, py = pix % width, torch.div(pix, width, rounding_mode="floor")  # [E]
        first = torch.ones_like(pix, dtype=torch.bool)
        first[1:] = pix[1:] != pix[:-1]  # [E] first entry of each pixel's run
        run = torch.cumsum(first.long(), 0) - 1  # [E] index of each entry's run
    # one gather of everything an entry needs from its Gaussian: mean (2), conic (a, b, c), opacity, features
    # (index_select, not [g]: its backward sums each Gaussian's entries in entry order, module docstring)
    packed = torch.cat([mu, con[:, 0, 0, None], con[:, 0, 1, None], con[:, 1, 1, None], o[:, None], feats],
                       1).index_select(0, g)  # [E, 6 + F]
    dx = px.to(dtype) + 0.5 - packed[:, 0]  # [E]
    dy = py.to(dtype) + 0.5 - packed[:, 1]
    alpha = _alphas(packed[:, 5], packed[:, 2], packed[:, 3], packed[:, 4], dx, dy)  # [E]
    log1m = torch.log1p(-alpha).double()  # [E]
    incl = torch.cumsum(log1m, 0)  # [E] running sum over all entries
    excl = incl - log1m  # [E] sum before each entry
    start = excl[first].index_select(0, run)  # [E] the running sum where the entry's pixel starts
    with torch.no_grad():  # the early stop: the trigger (inclusive sum <= log 1e-4) and all after it
        keep = (incl - start) > LOG_T_STOP  # [E]
    log1m = torch.where(keep, log1m, torch.zeros_like(log1m))  # [E]
    log_t = (excl - start).to(dtype)  # [E] log T before the entry, within its pixel (exact where kept)
    w = torch.where(keep, alpha * torch.exp(log_t), torch.zeros_like(alpha))  # [E] blending weights
    acc = torch.zeros(P, feats.shape[1], dtype=dtype, device=device).index_add(0, pix, w[:, None] * packed[:, 6:])
    log_t_final = torch.zeros(P, dtype=torch.float64, device=device).index_add(0, pix, log1m).to(dtype)
    return acc, log_t_final


def _gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def render_gsplat(
    means: torch.Tensor,  # [N, 3]
    quats: torch.Tensor,  # [N, 4] (w, x, y, z)
    scales: torch.Tensor,  # [N, 3]
    opacities: torch.Tensor,  # [N]
    colors: torch.Tensor,  # [N, 3] or [C, N, 3] (per camera)
    viewmats: torch.Tensor,  # [C, 4, 4]
    Ks: torch.Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    background: torch.Tensor | None = None,  # [3] or [C, 3]
    near: float = 0.01,
) -> RenderOutput:
    """gsplat's CUDA rasterisation (float32 CUDA tensors), returned in our channels-first layout.

    Calls `gsplat.rasterization(..., render_mode="RGB+ED", packed=False, eps2d=0.3,
    rasterize_mode="classic")`, which returns colors [C, H, W, 4] (RGB, then expected depth) and
    alphas [C, H, W, 1]; gsplat adds backgrounds [C, 3] as bg * (1 - alpha) to RGB only.
    """
    _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, background)
    try:
        import gsplat
    except ImportError as exc:
        raise InputError(f"backend 'gsplat' needs the gsplat package (pip install gsplat): {exc}") from exc
    if not means.is_cuda:
        raise InputError(f"backend 'gsplat' needs CUDA tensors, got tensors on {means.device}")
    if means.dtype != torch.float32:
        raise InputError(f"backend 'gsplat' needs float32 tensors, got {means.dtype}")
    C = viewmats.shape[0]
    backgrounds = None if background is None else background.expand(C, 3).contiguous()  # [C, 3]
    render_colors, render_alphas, meta = gsplat.rasterization(
        means,
        quats,
        scales,
        opacities,
        colors,
        viewmats,
        Ks,
        width,
        height,
        near_plane=near,
        eps2d=EPS2D,
        sh_degree=None,
        packed=False,
        backgrounds=backgrounds,
        render_mode="RGB+ED",
        rasterize_mode="classic",
    )  # [C, H, W, 4], [C, H, W, 1]
    rgb = render_colors[..., :3].permute(0, 3, 1, 2).contiguous()  # [C, 3, H, W]
    depth = render_colors[..., 3:4].permute(0, 3, 1, 2).contiguous()  # [C, 1, H, W]
    alpha = render_alphas.permute(0, 3, 1, 2).contiguous()  # [C, 1, H, W]
    return RenderOutput(rgb=rgb, alpha=alpha, depth=depth, means2d=meta["means2d"], radii=meta["radii"])


DENSE_LIMIT = 5 * 10**7  # N * H * W above which the reference renderer is refused on CUDA (use gsplat)


def render(
    means: torch.Tensor,  # [N, 3]
    quats: torch.Tensor,  # [N, 4] (w, x, y, z)
    scales: torch.Tensor,  # [N, 3]
    opacities: torch.Tensor,  # [N]
    colors: torch.Tensor,  # [N, 3] or [C, N, 3] (per camera)
    viewmats: torch.Tensor,  # [C, 4, 4]
    Ks: torch.Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    background: torch.Tensor | None = None,  # [3] or [C, 3]
    near: float = 0.01,
    backend: Backend = "auto",
) -> RenderOutput:
    """Render with the chosen backend. "auto": gsplat when the tensors are float32 on CUDA and gsplat
    imports, otherwise the PyTorch reference."""
    allowed = get_args(Backend)
    if backend not in allowed:
        raise InputError(f"unknown render backend {backend!r}; allowed: {', '.join(allowed)}")
    if backend == "auto":
        use_gsplat = means.is_cuda and means.dtype == torch.float32 and _gsplat_available()
        backend = "gsplat" if use_gsplat else "reference"
        dense = means.shape[0] * width * height  # elements of each [N, H*W] tensor of the reference renderer
        if means.is_cuda and not use_gsplat and dense > DENSE_LIMIT:
            raise InputError(
                f"{means.shape[0]} Gaussians at {width}x{height} on CUDA need gsplat (the dense reference renderer "
                f"would hold ~{dense * 4 * 8 / 2**30:.0f} GiB); install it with pip install gsplat")
    fn = render_gsplat if backend == "gsplat" else render_reference
    return fn(means, quats, scales, opacities, colors, viewmats, Ks, width, height, background, near)


def render_scene(scene, cameras, background: torch.Tensor | None = None, backend: Backend = "auto") -> RenderOutput:
    """Render a GaussianScene (fsd3d.gaussians) at a list of cameras of one image size.

    One call for all cameras: degree-0 colours are view independent [N, 3]; degree 1 evaluates the SH per
    camera (view directions from each camera centre) into colours [C, N, 3].
    """
    from fsd3d.cameras import stack_cameras  # local: cameras imports nothing from here, keep it that way

    viewmats, Ks = stack_cameras(cameras)
    w, h = cameras[0].width, cameras[0].height
    args = (scene.means, scene.normalized_quats(), scene.scales(), scene.opacities())
    if scene.sh_degree == 0:
        return render(*args, scene.colors(), viewmats, Ks, w, h, background, backend=backend)
    centres = torch.stack([cam.position.to(scene.means) for cam in cameras])  # [C, 3]
    colors = scene.colors(scene.means[None] - centres[:, None])  # [C, N, 3]
    return render(*args, colors, viewmats, Ks, w, h, background, backend=backend)
