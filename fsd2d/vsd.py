"""VSD (ProlificDreamer, Wang et al. 2023) and ESD (Wang et al. 2024): score distillation against a learned critic.

The critic eps_lora(x_t | y, t, c) is the prior's own denoiser with a LoRA (peft) on its attention projections and a
small camera MLP whose output is added to the time embedding. It is trained, one step per distillation step, on the
current particles (detached renders), so it tracks the distribution of the particles; the particles follow

    grad = eps_hat(x_t | y, t) - eps_lora_sL(x_t | y, t),   x_t = alpha_t theta + sigma_t eps (fresh eps)
           eps_lora_sL = eps_lora(x_t | y, t, 0) + s_L (eps_lora(x_t | y, t, c) - eps_lora(x_t | y, t, 0))

[ProlificDreamer Eq. 9 / Alg. 1 with w(t) = 1; eps_hat is the pretrained model with the run's CFG (fsd2d.guidance)].
s_L is the camera CFG of the critic: 1 for VSD (threestudio's guidance_scale_lora), 1 - lambda for ESD, whose
entropy weight lambda pulls the critic towards the camera-free distribution of all views [Wang et al. 2024, Eq. 11;
VITA-Group/3D-Mode-Collapse, README: guidance_scale_lora 0.5, i.e. lambda = 0.5].
Particles [ProlificDreamer Sec. 3.2]: the P particles of one run share one critic; a run's particles are P rows.

Two facts the maths promises (tests/fsd2d/test_vsd.py):
  - a critic equal to the pretrained model (its LoRA and camera MLP at their zero start) gives
    grad = eps_s - eps_1 = (s - 1)(eps_c - eps_u): CSD's classifier term at scale s - 1, zero without CFG;
  - a critic that has learned one particle exactly (eps_lora = (x_t - alpha_t theta) / sigma_t) gives SDS's
    gradient: single-particle VSD tends to SDS, as ESD points out.
In 2D there are no cameras: c = 0 for every row, so ESD equals VSD there.

Defaults (threestudio configs/prolificdreamer.yaml and guidance/stable_diffusion_vsd_guidance.py): LoRA rank 4 on
to_q, to_k, to_v, to_out.0 (scale 1, up-projection zero), AdamW lr 1e-4 betas (0.9, 0.99), camera MLP
TimestepEmbedding(16, D) on the flattened 4x4 camera-to-world matrix, camera replaced by zeros with probability 0.1
in training, critic training t ~ U{0..T-1} with MSE to the noise. Ours differs in two places, both so that the critic
starts as the pretrained model: the MLP's last layer starts at zero (threestudio's starts random, an offset on the
time embedding before any training), and the MSE is on eps for every prediction type (threestudio's on the model's
own target).

Tensors: theta, x_t [B, C, h, w] in the prior's working space; cameras [B, 16] (row-major c2w; None in 2D: c = 0);
B = critics x rows per critic, contiguous: rows k*n..(k+1)*n-1 belong to critic k.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from fsd2d import updates
from fsd2d.errors import InputError
from fsd2d.guidance import Guidance, cfg_combine, expand, predict_eps
from fsd2d.priors.base import Prior
from fsd2d.seeds import stream_seed

__all__ = ["Critic", "Critics", "critic_parameters", "vsd_gradient", "denoiser_of", "CAMERA_DIM"]

LORA_RANK = 4  # threestudio's LoRAAttnProcessor rank
LORA_LR = 1e-4  # prolificdreamer.yaml optimizer.params.guidance.lr
LORA_BETAS = (0.9, 0.99)  # prolificdreamer.yaml optimizer.args.betas (AdamW)
LORA_EPS = 1e-15  # prolificdreamer.yaml optimizer.args.eps (AdamW's weight decay: torch's default 0.01, as theirs)
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections
CAMERA_DROPOUT = 0.1  # stable_diffusion_vsd_guidance.py: camera_condition zeroed w.p. 0.1 in train_lora
ESD_LAMBDA = 0.5  # VITA-Group/3D-Mode-Collapse README: guidance_scale_lora = 1 - lambda = 0.5
CAMERA_DIM = 16  # the flattened 4x4 camera-to-world matrix
FLAGS = "_fsd_requires_grad"  # the denoiser's attribute holding its weights' requires_grad while critics exist
TIME_EMBEDDINGS = ("time_embedding", "time_text_embed", "time_embed")  # UNet2D / SD3, Flux / our MVDream UNet


def denoiser_of(prior: Prior) -> nn.Module:
    """The prior's denoiser network (a UNet or a transformer), which the critic copies by a LoRA; an InputError on a
    prior without one (the embedded analytic priors are closed-form scores: nothing to fine-tune)."""
    net = getattr(prior, "unet", None)
    if net is None and hasattr(prior, "view"):  # MVDream's 2D prior: the 4-view set of one view prior
        net = getattr(prior.view, "unet", None)
    if not isinstance(net, nn.Module):
        name = prior.describe().get("model", type(prior).__name__)
        raise InputError(f"vsd and esd fine-tune a LoRA of the prior's denoiser network, and {name} is a closed-form "
                         "score with no network (its exact score needs no critic: the critic of one particle is its "
                         "point mass, which makes VSD SDS); use a trained model (--model tiny-sd) or a diffusers one")
    return net


def time_embedding_of(net: nn.Module) -> tuple[nn.Module, int]:
    """(the module whose output is the time embedding [B, D], D): the camera MLP's output is added there."""
    for name in TIME_EMBEDDINGS:
        module = getattr(net, name, None)
        if isinstance(module, nn.Module):
            linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
            if linears:
                return module, linears[-1].out_features
    raise InputError(f"the denoiser {type(net).__name__} has no time embedding the critic knows "
                     f"({', '.join(TIME_EMBEDDINGS)}): vsd and esd cannot condition it on the camera")


class CameraMLP(nn.Module):
    """TimestepEmbedding(16, D) as threestudio's camera embedding: Linear, SiLU, Linear; the last layer zero."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear_1, self.act, self.linear_2 = nn.Linear(CAMERA_DIM, dim), nn.SiLU(), nn.Linear(dim, dim)
        nn.init.zeros_(self.linear_2.weight)
        nn.init.zeros_(self.linear_2.bias)

    def forward(self, camera: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(camera)))


class Critic:
    """One run's critic: a LoRA adapter (named `name`) in the prior's denoiser, a camera MLP, their AdamW and the
    generator of its training draws. Several critics (one per seed) share a denoiser, each its own adapter.

    Outside `eps` and `train_step` every adapter is off, so the prior's own predictions are unchanged bit for bit.
    `close()` (or `with Critic(...)`) deletes the adapter and the hook. State for checkpoints: `state_dict()`.
    """

    def __init__(self, prior: Prior, name: str, seed: int, rank: int = LORA_RANK, lr: float = LORA_LR,
                 camera_dropout: float = CAMERA_DROPOUT):
        from peft import LoraConfig, inject_adapter_in_model

        self.name, self.camera_dropout = name, camera_dropout
        self.net = denoiser_of(prior)
        embedding, dim = time_embedding_of(self.net)
        start = stream_seed(seed, "critic")  # the critic's own stream, apart from every seed's draws
        if not hasattr(self.net, FLAGS):  # the first critic on this net: its weights' own requires_grad, for close()
            setattr(self.net, FLAGS, {n: p.requires_grad for n, p in self.net.named_parameters()})
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():  # init from the seed, not the global RNG
            torch.random.default_generator.manual_seed(start)  # the CPU generator only (fork_rng restores it)
            warnings.simplefilter("ignore", UserWarning)  # several critics (one per seed) are several adapters
            inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(LORA_TARGETS)), self.net,
                                    adapter_name=name)
            camera_mlp = CameraMLP(dim)
        self.layers = [m for m in self.net.modules() if _is_lora_layer(m)]
        if not self.layers:
            raise InputError(f"the denoiser {type(self.net).__name__} has no attention projections "
                             f"({', '.join(LORA_TARGETS)}) for the critic's LoRA")
        self._switch(None)
        device = next(self.net.parameters()).device
        # float32 weights on a half-precision model (AdamW's steps underflow in float16; peft's forward casts its input
        # to the adapter's dtype and its output back), float64 on a float64 one
        dtype = torch.float64 if next(self.net.parameters()).dtype == torch.float64 else torch.float32
        self.camera_mlp = camera_mlp.to(device=device, dtype=dtype)
        self.lora_params = [p for m in self.layers for n, p in m.named_parameters() if f".{name}." in f".{n}."]
        for p in self.lora_params:
            p.data = p.data.to(dtype)
        self.optimizer = torch.optim.AdamW([*self.lora_params, *self.camera_mlp.parameters()], lr=lr,
                                           betas=LORA_BETAS, eps=LORA_EPS)
        self.generator = torch.Generator().manual_seed(start)
        self._camera: torch.Tensor | None = None
        self._on = False
        self._hook = embedding.register_forward_hook(self._add_camera)
        self.steps = 0

    @property
    def trained_parameters(self) -> int:
        return sum(p.numel() for p in self.lora_params) + sum(p.numel() for p in self.camera_mlp.parameters())

    def _add_camera(self, module, args, output):
        if not self._on:
            return None
        camera = self._camera if self._camera is not None else \
            output.new_zeros(output.shape[0], CAMERA_DIM, dtype=self.camera_mlp.linear_1.weight.dtype)
        return output + self.camera_mlp(camera).to(output.dtype)

    def _switch(self, adapter: str | None) -> None:
        """Turn this adapter on in every LoRA layer (`adapter` = its name), or all adapters off (None)."""
        for layer in self.layers:
            if adapter is None:
                layer.enable_adapters(False)
            else:
                layer.enable_adapters(True)
                layer.set_adapter(adapter)

    @contextlib.contextmanager
    def active(self, cameras: torch.Tensor | None):
        """The denoiser as this critic (its adapter on, `cameras` [B, 16] into the time embedding; None: no camera,
        c = 0 for every row) for the block."""
        self._switch(self.name)
        self._camera = None if cameras is None else cameras.to(self.camera_mlp.linear_1.weight)
        self._on = True
        try:
            yield
        finally:
            self._on, self._camera = False, None
            self._switch(None)

    def eps(self, prior: Prior, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
            cameras: torch.Tensor | None, scale: float = 1.0) -> torch.Tensor:
        """eps_lora with camera CFG s_L = `scale`: eps(c=0) + s_L (eps(c) - eps(c=0)), one call ([zeros; cameras]
        stacked) unless s_L = 1 or there are no cameras (None, 2D: c = 0, so the CFG is the identity).
        x_t [B, C, h, w], t [B], cond [1 or B, ...], cameras [B, 16] or None. `prior`: the one this critic was made
        on, or a view of it for these rows (3D MVDream: bound to their cameras; the same denoiser)."""
        b = x_t.shape[0]
        cond = expand(cond, b)
        if scale == 1.0 or cameras is None:
            with self.active(cameras):
                return prior.eps(x_t, t, cond)
        with self.active(torch.cat([torch.zeros_like(cameras), cameras])):
            eps_0, eps_c = prior.eps(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, cond])).chunk(2)
        return cfg_combine(eps_0, eps_c, scale)

    def train_step(self, prior: Prior, x0: torch.Tensor, cond: torch.Tensor,
                   cameras: torch.Tensor | None) -> torch.Tensor:
        """One AdamW step of the critic on the particles x0 [B, C, h, w] (detached): t ~ U{0..T-1}, fresh noise, the
        camera zeroed with probability camera_dropout, loss = mean ||eps_lora(x_t | y, t, c) - eps||^2. Returns the
        loss (0-dim, detached). Draws come from the critic's generator (CPU), so they do not depend on the batch."""
        b, schedule = x0.shape[0], prior.schedule
        t = torch.randint(0, schedule.num_timesteps, (b,), generator=self.generator)
        noise = torch.randn(tuple(x0.shape), generator=self.generator, dtype=torch.float32).to(x0)
        keep = (torch.rand(b, generator=self.generator) >= self.camera_dropout).to(x0.device)  # drawn in 2D too
        alpha, sigma = schedule.alpha_sigma(t, x0.dtype, x0.device)
        x_t = updates.add_noise(x0.detach(), noise, alpha, sigma)
        with torch.enable_grad(), self.active(None if cameras is None else cameras * keep.to(cameras).view(-1, 1)):
            pred = prior.eps(x_t, t.to(x0.device), expand(cond, b))
            loss = (pred.float() - noise.float()).pow(2).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        self.optimizer.step()
        self.steps += 1
        return loss.detach()

    def state_dict(self) -> dict:
        """A copy of the critic's trainable weights, its optimiser, its generator and its step count (a checkpoint's
        part; plain tensors, numbers and lists: torch.load(weights_only=True) reads it)."""
        return copy.deepcopy({"lora": [p.detach() for p in self.lora_params],
                              "camera_mlp": self.camera_mlp.state_dict(), "optimizer": self.optimizer.state_dict(),
                              "generator": self.generator.get_state(), "steps": self.steps})

    def load_state_dict(self, state: dict) -> None:
        if len(state["lora"]) != len(self.lora_params) or any(
                a.shape != b.shape for a, b in zip(state["lora"], self.lora_params)):
            raise InputError("the checkpoint's critic does not fit this model's LoRA (another model or rank)")
        with torch.no_grad():
            for p, saved in zip(self.lora_params, state["lora"]):
                p.copy_(saved)
        self.camera_mlp.load_state_dict(state["camera_mlp"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.steps = int(state["steps"])

    def close(self) -> None:
        """Delete the adapter and the camera hook; with the last critic gone, the denoiser is the prior's again: the
        LoRA wrappers replaced by their layers, peft's config removed, every weight's requires_grad as it was."""
        self._hook.remove()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            for layer in self.layers:
                if self.name in layer.lora_A:
                    layer.delete_adapter(self.name)
                layer.enable_adapters(False)
        configs = getattr(self.net, "peft_config", None)
        if isinstance(configs, dict):
            configs.pop(self.name, None)
        if not any(len(layer.lora_A) for layer in self.layers):
            unwrap(self.net)

    def __enter__(self) -> "Critic":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def critic_parameters(prior: Prior, rank: int = LORA_RANK) -> int:
    """The parameters one critic trains on `prior`, counted without building it: rank (in + out) per targeted
    projection, plus the camera MLP (16 D + D + D D + D)."""
    net = denoiser_of(prior)
    _, dim = time_embedding_of(net)
    targets = [getattr(m, "base_layer", m) for name, m in net.named_modules()  # a critic's LoRA wraps the layer
               if any(name == k or name.endswith("." + k) for k in LORA_TARGETS)]
    lora = sum(rank * (m.in_features + m.out_features) for m in targets if isinstance(m, nn.Linear))
    return lora + CAMERA_DIM * dim + dim + dim * dim + dim


def unwrap(net: nn.Module) -> None:
    """Undo the adapters' traces once none is left: each LoRA wrapper back to the layer it wraps, no peft config, and
    the weights' requires_grad as the first critic found them."""
    wrapped = [(name, m) for name, m in net.named_modules() if _is_lora_layer(m)]
    for name, layer in wrapped:
        parent, _, child = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, child, layer.get_base_layer())
    if hasattr(net, "peft_config"):
        del net.peft_config
    flags = getattr(net, FLAGS, None)
    if flags is not None:
        for n, p in net.named_parameters():
            p.requires_grad_(flags.get(n, p.requires_grad))
        delattr(net, FLAGS)


def _is_lora_layer(module: nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return isinstance(module, LoraLayer)


def rows_of(tensor: torch.Tensor | None, k: int, n: int) -> torch.Tensor | None:
    """Rows k n .. (k + 1) n - 1 (critic k's), or None."""
    return None if tensor is None else tensor[k * n:(k + 1) * n]


@dataclass(frozen=True)
class Critics:
    """The critics of one step's rows: critic k owns rows k n .. (k + 1) n - 1 (n = B / len(critics))."""

    critics: Sequence[Critic]
    priors: Sequence[Prior] | None = None  # per critic, the prior its rows are evaluated with; None: the step's
    cameras: torch.Tensor | None = None  # [B, 16] flattened camera-to-world per row; None (2D): no camera, c = 0

    def prior_of(self, k: int, prior: Prior) -> Prior:
        return prior if self.priors is None else self.priors[k]

    def eps(self, prior: Prior, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
        """Each critic's eps on its own rows, one call per critic: [B, C, h, w]."""
        n = x_t.shape[0] // len(self.critics)
        cond = expand(cond, x_t.shape[0])
        return torch.cat([c.eps(self.prior_of(k, prior), rows_of(x_t, k, n), rows_of(t, k, n), rows_of(cond, k, n),
                                rows_of(self.cameras, k, n), scale) for k, c in enumerate(self.critics)])

    def train(self, prior: Prior, x0: torch.Tensor, cond: torch.Tensor) -> None:
        """One training step of each critic on its own rows of x0 [B, C, h, w] (detached particles or renders)."""
        n = x0.shape[0] // len(self.critics)
        cond = expand(cond, x0.shape[0])
        for k, c in enumerate(self.critics):
            c.train_step(self.prior_of(k, prior), rows_of(x0, k, n), rows_of(cond, k, n), rows_of(self.cameras, k, n))


def vsd_gradient(prior: Prior, critics: Critics, guidance: Guidance, theta: torch.Tensor, t: torch.Tensor,
                 noise: torch.Tensor, lora_scale: float) -> updates.Estimate:
    """VSD / ESD's gradient (module docstring) at theta [B, C, h, w]: the pretrained branch with the run's CFG in
    one batched call, each critic on its rows with camera CFG `lora_scale` (VSD 1, ESD 1 - lambda). No critic step
    here: the loop trains the critics after the particles' step (`Critics.train`)."""
    if theta.shape[0] % len(critics.critics):
        raise ValueError(f"{theta.shape[0]} rows do not split among {len(critics.critics)} critics")
    alpha, sigma = prior.schedule.alpha_sigma(t, theta.dtype, theta.device)
    x_t = updates.add_noise(theta, noise, alpha, sigma)
    td = t.to(theta.device, non_blocking=True)
    eps_hat = predict_eps(prior, x_t, td, guidance)
    eps_lora = critics.eps(prior, x_t, td, guidance.cond, lora_scale).to(eps_hat.dtype)
    return updates.Estimate(eps_hat - eps_lora, x_t, eps_hat, noise)
