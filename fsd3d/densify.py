"""Densification and pruning with gsplat's strategies (`gsplat.strategy`), on either renderer.

gsplat's `DefaultStrategy` (3DGS: duplicate / split Gaussians with large screen-space gradients, prune
transparent ones) and `MCMCStrategy` (3DGS as MCMC: relocate dead Gaussians onto live ones, add new ones,
jitter positions) work on a dict of parameters and a dict of optimisers, one Adam per parameter, under
gsplat's names. Our `GaussianScene` keeps its own names; the mapping (`GSPLAT_NAMES`) is

    gsplat      scene attribute    what gsplat does with it
    means       means              [N, 3]
    scales      log_scales         [N, 3], exp() -> std-devs
    quats       quats              [N, 4] (w, x, y, z)
    opacities   opacity_logits     [N], sigmoid() -> opacity
    sh0         sh0                [N, 3]
    shN         sh_rest            [N, 3, 3] (SH degree 1 only)

What the strategies read from the renderer, `RenderOutput.means2d` ([C, N, 2] screen means whose .grad
the backward fills) and `.radii` ([C, N, 2], 0 = not visible), both backends return, so the same
strategy code runs with gsplat on CUDA and with our PyTorch reference renderer on a CPU.

Differences from calling gsplat's strategies directly, all deliberate:
* `DefaultStrategy`'s running statistics are accumulated with masks instead of `torch.where` indices, the
  same sums without a host-device synchronisation per step (`_DefaultNoSync`).
* Every call runs under `torch.random.fork_rng`, seeded from the seed's own generator (`SeedState.densify_gen`
  in fsd3d.train): splits and MCMC draws are reproducible, independent of other seeds, and resumable.
* A cap on the number of Gaussians holds for both strategies (MCMC's `cap_max`; for the default strategy
  the least opaque Gaussians are pruned down to the cap after a refinement).
* On CPU tensors, MCMC's two CUDA kernels are replaced by PyTorch references: `relocation_reference` (Eq. 9
  of the MCMC paper, as gsplat's kernel computes it) and gsplat's own `_quat_scale_to_covar_preci`.
"""
from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass, replace

import torch

from fsd2d.errors import InputError, check_finite, check_int_range

MAX_GAUSSIANS = 10**7  # Gaussians a scene starts with at most (--num-gaussians); 3DGS scenes hold 1-6 million
MAX_CAP = 4 * MAX_GAUSSIANS  # --densify-cap at most: the default cap (4x the start) of the largest start

GSPLAT_NAMES = {"means": "means", "scales": "log_scales", "quats": "quats", "opacities": "opacity_logits",
                "sh0": "sh0", "shN": "sh_rest"}


class Densify(str, enum.Enum):
    """--densify: which gsplat strategy grows and prunes the Gaussians."""

    NONE = "none"
    DEFAULT = "default"  # gsplat.strategy.DefaultStrategy (3DGS)
    MCMC = "mcmc"  # gsplat.strategy.MCMCStrategy (3DGS as Markov chain Monte Carlo)


@dataclass(frozen=True)
class DensifyConfig:
    """When and how the Gaussians are densified. None fields are filled by `resolved` from the run.

    Refinements happen at steps start < k < stop with k % every == 0 (gsplat's convention, k = steps done).
    """

    strategy: Densify | None = None  # None: the prior's (3DGS default on the embedded prior, MCMC on SD)
    start: int | None = None  # None: 10 % of the steps
    stop: int | None = None  # None: 70 % of the steps
    every: int | None = None  # None: steps // 15 (at least 1)
    grad_threshold: float | None = None  # DefaultStrategy's grow_grad2d; None: the prior's default
    prune_opacity: float = 0.005  # Gaussians below this opacity are pruned (default) or relocated (MCMC)
    cap: int | None = None  # most Gaussians a scene may hold; None: 4 x the initial number
    # the default strategy also prunes Gaussians whose largest scale exceeds this fraction of the scene scale
    # (gsplat's prune_scale3d, which gsplat applies only after its first opacity reset, never here); 0: off;
    # None: the profile's (fsd3d.backbones.Defaults3D.prune_scale3d)
    prune_scale3d: float | None = None

    def resolved(self, steps: int, num_gaussians: int, grad_threshold: float, strategy: Densify,
                 prune_scale3d: float = 0.0) -> DensifyConfig:
        """Every None replaced by its default for a run of `steps` steps from `num_gaussians` Gaussians, with the
        prior's gradient threshold, strategy and large-Gaussian prune."""
        return replace(
            self,
            prune_scale3d=prune_scale3d if self.prune_scale3d is None else self.prune_scale3d,
            strategy=strategy if self.strategy is None else self.strategy,
            start=max(0, steps // 10) if self.start is None else self.start,
            stop=(7 * steps) // 10 if self.stop is None else self.stop,
            every=max(1, steps // 15) if self.every is None else self.every,
            grad_threshold=grad_threshold if self.grad_threshold is None else self.grad_threshold,
            cap=4 * num_gaussians if self.cap is None else self.cap,
        )

    def validate(self) -> None:
        for name in ("start", "stop"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise InputError(f"densify-{name} must be >= 0, got {v}")
        if self.every is not None and self.every < 1:
            raise InputError(f"densify-every must be >= 1, got {self.every}")
        check_finite("densify-grad", self.grad_threshold)
        if self.grad_threshold is not None and not self.grad_threshold > 0:
            raise InputError(f"densify-grad must be > 0, got {self.grad_threshold}")
        if not 0.0 <= self.prune_opacity < 1.0:
            raise InputError(f"prune opacity must be in [0, 1), got {self.prune_opacity}")
        check_finite("prune-scale3d", self.prune_scale3d)
        if self.prune_scale3d is not None and not 0.0 <= self.prune_scale3d <= 100.0:
            raise InputError(f"prune-scale3d must be in [0, 100] (a fraction of the scene scale), got {self.prune_scale3d}")
        if self.cap is not None and self.cap < 1:
            raise InputError(f"densify-cap must be >= 1, got {self.cap}")
        check_int_range("densify-cap", self.cap, 1, MAX_CAP)


def relocation_reference(
    opacities: torch.Tensor,  # [N] in (0, 1)
    scales: torch.Tensor,  # [N, 3] > 0
    ratios: torch.Tensor,  # [N] how many Gaussians share the sampled one (>= 1)
    binoms: torch.Tensor,  # [n_max, n_max] binomial coefficients
) -> tuple[torch.Tensor, torch.Tensor]:
    """PyTorch reference of `gsplat.relocation.compute_relocation` (3DGS-MCMC, Eq. 9): n Gaussians replace one.

        o_new = 1 - (1 - o)^(1/n)
        s_new = o / (sum_{i=1..n} sum_{k=0..i-1} C(i-1, k) (-1)^k / sqrt(k+1) o_new^(k+1)) * s

    Ratios are clamped to [1, n_max] as gsplat does. Computed in float64, returned in the inputs' dtype.
    """
    n_max = binoms.shape[0]
    n = ratios.clamp(1, n_max).to(torch.float64)  # [N]
    o = opacities.to(torch.float64)
    o_new = 1.0 - (1.0 - o) ** (1.0 / n)  # [N]
    i = torch.arange(1, n_max + 1, dtype=torch.float64, device=o.device)  # [I] = 1..n_max
    k = torch.arange(n_max, dtype=torch.float64, device=o.device)  # [K] = 0..n_max-1
    coef = binoms.to(torch.float64) * (-1.0) ** k / torch.sqrt(k + 1.0)  # [I, K], row i-1 holds C(i-1, k)
    coef = torch.where(k[None, :] <= i[:, None] - 1.0, coef, 0.0)  # k <= i - 1
    powers = o_new[:, None] ** (k + 1.0)  # [N, K]
    per_i = powers @ coef.T  # [N, I]: inner sums over k
    denom = torch.where(i[None, :] <= n[:, None], per_i, 0.0).sum(dim=1)  # [N]: outer sum over i <= n
    new_scales = (o / denom)[:, None] * scales.to(torch.float64)
    return o_new.to(opacities.dtype), new_scales.to(scales.dtype)


@contextlib.contextmanager
def _cpu_kernels(device: torch.device):
    """On CPU tensors, point gsplat.strategy.ops at PyTorch references of its two CUDA kernels."""
    if device.type == "cuda":
        yield
        return
    import gsplat.strategy.ops as ops
    from gsplat.cuda._torch_impl import _quat_scale_to_covar_preci

    saved = ops.compute_relocation, ops.quat_scale_to_covar_preci
    ops.compute_relocation, ops.quat_scale_to_covar_preci = relocation_reference, _quat_scale_to_covar_preci
    try:
        yield
    finally:
        ops.compute_relocation, ops.quat_scale_to_covar_preci = saved


@contextlib.contextmanager
def _seeded(generator: torch.Generator, device: torch.device):
    """Global RNG of the CPU (and `device`) seeded from `generator` inside, restored after."""
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        for d in cuda:
            torch.cuda.default_generators[d].manual_seed(seed)
        yield


def _default_no_sync():
    from gsplat.strategy import DefaultStrategy

    @dataclass
    class _DefaultNoSync(DefaultStrategy):
        """gsplat's DefaultStrategy with its per-step statistics summed under masks (no host sync)."""

        def _update_state(self, params, state, info, packed=False):
            grads = info["means2d"].grad  # [C, N, 2] d loss / d screen mean
            scale = grads.new_tensor([info["width"] / 2.0, info["height"] / 2.0]) * info["n_cameras"]
            norms = (grads * scale).norm(dim=-1)  # [C, N], gsplat's [-1, 1] screen normalisation
            visible = (info["radii"] > 0).all(dim=-1)  # [C, N]
            if state["grad2d"] is None:
                state["grad2d"] = torch.zeros(norms.shape[1], device=norms.device)
                state["count"] = torch.zeros(norms.shape[1], device=norms.device)
            state["grad2d"] += torch.where(visible, norms, 0.0).sum(dim=0)
            state["count"] += visible.sum(dim=0).float()

        @torch.no_grad()
        def _prune_gs(self, params, optimizers, state, step):
            """gsplat's pruning (transparent ones; large ones above prune_scale3d x the scene scale) without its
            condition step > reset_every: we never reset opacities, so gsplat would never prune the large ones."""
            from gsplat.strategy.ops import remove

            is_prune = torch.sigmoid(params["opacities"].flatten()) < self.prune_opa
            if self.prune_scale3d > 0:
                is_prune |= torch.exp(params["scales"]).max(dim=-1).values > self.prune_scale3d * state["scene_scale"]
            n_prune = int(is_prune.sum())
            if n_prune:
                remove(params=params, optimizers=optimizers, state=state, mask=is_prune)
            return n_prune

    return _DefaultNoSync


class Densifier:
    """One strategy for a run (stateless itself); each seed carries its own `state` dict (checkpointed)."""

    def __init__(self, config: DensifyConfig, scene_scale: float, means_lr: float):
        if any(getattr(config, f) is None for f in ("strategy", "start", "stop", "every", "grad_threshold", "cap")):
            raise ValueError("Densifier needs a resolved DensifyConfig (DensifyConfig.resolved)")
        self.config, self.scene_scale, self.means_lr = config, float(scene_scale), means_lr
        c = config
        if c.strategy is Densify.MCMC:
            from gsplat.strategy import MCMCStrategy

            self.strategy = MCMCStrategy(cap_max=c.cap, refine_start_iter=c.start, refine_stop_iter=c.stop,
                                         refine_every=c.every, min_opacity=c.prune_opacity)
        else:
            # reset_every beyond any run: resetting all opacities mid-run undoes what a short distillation built
            self.strategy = _default_no_sync()(
                prune_opa=c.prune_opacity, grow_grad2d=c.grad_threshold, refine_start_iter=c.start,
                refine_stop_iter=c.stop, refine_every=c.every, reset_every=2**62,
                prune_scale3d=c.prune_scale3d or 0.0)

    @property
    def needs_screen_gradients(self) -> bool:
        return self.config.strategy is Densify.DEFAULT

    def initial_state(self) -> dict:
        if self.config.strategy is Densify.MCMC:
            return self.strategy.initialize_state()
        return self.strategy.initialize_state(scene_scale=self.scene_scale)

    def pre_backward(self, rendered) -> None:
        """Keep the screen-space means' gradient (the default strategy reads it after the backward)."""
        if self.needs_screen_gradients and rendered.means2d.requires_grad:
            rendered.means2d.retain_grad()

    def post_backward(self, scene, optimizers: dict, state: dict, step: int, rendered, generator: torch.Generator,
                      means_lr: float | None = None) -> None:
        """Grow / prune / relocate after the optimiser step; writes the new parameters back into `scene`.
        `means_lr`: the means' learning rate at this step (MCMC's noise is lr x noise_lr, as gsplat's trainer
        passes its scheduled one); None: the constant one the Densifier was made with."""
        params = {g: getattr(scene, a) for g, a in GSPLAT_NAMES.items() if getattr(scene, a, None) is not None}
        opts = {g: optimizers[a] for g, a in GSPLAT_NAMES.items() if g in params}
        device = scene.means.device
        before = len(scene)
        with _seeded(generator, device), _cpu_kernels(device):
            if self.config.strategy is Densify.MCMC:
                self.strategy.step_post_backward(params, opts, state, step, {},
                                                 lr=self.means_lr if means_lr is None else means_lr)
            else:
                info = {"means2d": rendered.means2d, "radii": rendered.radii, "width": rendered.rgb.shape[-1],
                        "height": rendered.rgb.shape[-2], "n_cameras": rendered.rgb.shape[0], "gaussian_ids": None}
                self.strategy.step_post_backward(params, opts, state, step, info)
                n = params["means"].shape[0]
                if n > self.config.cap:
                    _prune_to_cap(params, opts, state, self.config.cap)
        for g, a in GSPLAT_NAMES.items():
            if g in params and params[g] is not getattr(scene, a):
                setattr(scene, a, params[g])
        if len(scene) != before and device.type == "cuda":
            torch.cuda.empty_cache()


def _prune_to_cap(params: dict, optimizers: dict, state: dict, cap: int) -> None:
    """Remove the least opaque Gaussians until `cap` remain (gsplat's `remove`, so Adam's state follows)."""
    from gsplat.strategy.ops import remove

    order = torch.argsort(params["opacities"].detach(), descending=True, stable=True)  # most opaque first
    mask = torch.ones(order.shape[0], dtype=torch.bool, device=order.device)
    mask[order[:cap]] = False  # True = remove
    remove(params=params, optimizers=optimizers, state=state, mask=mask)


def scene_scale(camera_radius: tuple[float, float]) -> float:
    """gsplat's `scene_scale` as 3DGS sets it: 1.1 x the camera distance to the scene centre (mid range)."""
    return 1.1 * 0.5 * (camera_radius[0] + camera_radius[1])


def state_to(state: dict, device: torch.device | str) -> dict:
    """A strategy state with its tensors moved (checkpoints hold it on the CPU)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in state.items()}

