"""`fsd train-prior`: train a tiny Stable Diffusion or MVDream on an embedded world, in the layouts real ones use.

Two stages, one process, one seed:
    1. VAE (fsdtrain.models.tiny_vae): images x in [-1, 1] -> posterior q(z | x) -> a sample z -> decoder;
       loss |x^ - x|_1 + |x^ - x|^2 (pixel means) + kl_weight KL(q || N(0, I)) per pixel; AdamW. Then the latent
       scaling factor, as SD's 0.18215: 1 / std of the posterior means over SCALE_IMAGES fixed images.
    2. UNet (tiny_sd_unet, or tiny_mvdream_unet for objects-mv): z_0 = scaling * E[q(z | x)] (frozen VAE),
       t ~ U{0..999} (one t per 4-view set), eps ~ N(0, I), z_t = alpha_t z_0 + sigma_t eps on SD's
       scaled-linear schedule (fsd2d.schedule, the one the priors read back from the scheduler config);
       loss |eps_theta(z_t, t, c) - eps|^2 (DDPM's simple loss, the epsilon prediction SD uses); the caption c
       is replaced by '' with probability prompt_dropout (so classifier-free guidance has an unconditional
       model); AdamW with linear warm-up and cosine decay to 10 %; an exponential moving average of the
       weights (decay ema, warmed up as (1 + n) / (10 + n)) is what ships.
With `--arch sd3` (fsdtrain.models.Arch.SD3) stage 2 trains SD3's layout instead: a transformer predicting the flow
velocity v = eps - z_0 at z_t = (1 - s) z_0 + s eps, with SD3's timestep sampling (a logit-normal u = sigmoid(n),
n ~ N(0, 1), indexing the rectified-flow schedule's sigmas, as diffusers' train_dreambooth_sd3.py with
weighting_scheme logit_normal: weight 1), loss |v_theta(z_t, s, c) - (eps - z_0)|^2; the VAE's latents are
shifted and scaled as SD3's (shift_factor = their mean, scaling 1 / their std).
The text encoder is the tiny random CLIP (fsdtrain.models), frozen (SD3: the three tiny encoders, frozen). The weights are written in float16 (half
the size; the loaders cast to the working dtype, a plain diffusers from_pretrained to float32: random_sd's
save_text_encoder), with the model card (fsd2d.priors.trained) listing each file's
sha256, DDIM samples of every prompt (samples.png, drawn from the written files) and nothing else.

Checkpoints (atomic) every `checkpoint_every` steps to OUT/.train/checkpoint.pt: both stages' weights, their
optimisers, the EMA, the data and noise generators and the loss log, so a run killed at any moment (kill -9)
continues with `--resume` to the same bits as an uninterrupted one (same machine, same thread count). The
objects' render pool is cached beside it (OUT/.train/pool.safetensors: tensors and a JSON key, nothing that
executes; a damaged or foreign cache is rendered again). On success OUT is replaced in one rename by the finished
model.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from fsd2d.errors import InputError, check_finite
from fsd2d.folders import TRAIN_PRIOR, claim
from fsd2d.io import atomic_output_dir, atomic_path, check_output_dir, jsonable, usual_mode, versions
from fsd2d.priors.trained import CARD, folder_files
from fsd2d.schedule import flow_schedule, scaled_linear_schedule
from fsdtrain import models
from fsdtrain.models import Arch
from fsdtrain.datasets import Dataset, ImageCrops, ObjectPool, build_dataset

WORK = ".train"  # OUT/.train/: checkpoint.pt and POOL_CACHE while training
POOL_CACHE = "pool.safetensors"  # the objects' render pool (load_pool)
SCALE_IMAGES = 1024  # images whose latents set the scaling factor
SCALE_SEED = 12345
LOG_EVERY = 100  # steps per entry of the loss log
# Caps no real training reaches (a typo beyond them); the distillation runs' step cap is fsd2d.sampling.MAX_STEPS.
MAX_TRAIN_STEPS = 1_000_000  # optimiser steps of a stage, and checkpoint_every (the shipped models: 8000 and 1500)
MAX_BATCH = 65_536  # images per step
MAX_THREADS = 1024  # torch threads
DEFAULT_POOL = {Dataset.OBJECTS: 2048, Dataset.OBJECTS_MV: 512}  # cameras (4-view sets) rendered per object
SAMPLE_SEEDS = 8  # DDIM samples per prompt in samples.png
SAMPLE_STEPS = 50
SAMPLE_CFG = 3.0
# The settings that make the shipped models, per arch. SD3's transformer step at batch 64 costs 0.58 s on imageset
# (0.36 s of it the transformer; the UNet's whole step 0.17 s) on our 2-core machine with one thread: batch 32 and
# fewer VAE steps keep its training under an hour (docs/guides/train-prior.md, benchmarks/bench_train_prior.py).
ARCH_DEFAULTS = {Arch.SD: {"steps": 8000, "vae_steps": 1500, "lr": 5e-4, "batch": 64},
                 Arch.SD3: {"steps": 6000, "vae_steps": 1000, "lr": 7e-4, "batch": 32}}


@dataclass(frozen=True)
class TrainPriorConfig:
    """Everything that decides the trained weights (and so the shipped files): see the module docstring."""

    dataset: Dataset
    steps: int | None = None  # denoiser steps (stage 2); None: the arch's (ARCH_DEFAULTS)
    vae_steps: int | None = None  # VAE steps (stage 1); None: the arch's
    batch: int | None = None  # images (views) per denoiser step (objects-mv: 16 sets of 4); None: the arch's
    vae_batch: int = 32  # images per VAE step
    lr: float | None = None  # the denoiser's peak learning rate; None: the arch's
    vae_lr: float = 1e-3
    warmup: int = 200  # steps of linear warm-up (each stage)
    ema: float = 0.999
    kl_weight: float = 1e-5
    prompt_dropout: float = 0.1
    pool: int | None = None  # objects: cameras per object (objects-mv: 4-view sets); None: DEFAULT_POOL
    seed: int = 0
    checkpoint_every: int = 250
    threads: int = 1  # torch threads: the bits depend on it (docs/guides/train-prior.md)
    arch: Arch = Arch.SD  # the layout trained (objects-mv: MVDream's, whatever this says)

    def __post_init__(self):  # the arch's defaults for what was not given (the shipped models' settings)
        for name, value in ARCH_DEFAULTS[self.arch].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)

    @property
    def views(self) -> int:
        return self.dataset.views

    @property
    def pool_size(self) -> int:
        return self.pool if self.pool is not None else DEFAULT_POOL.get(self.dataset, 0)

    def validate(self) -> None:
        for flag, value in (("--lr", self.lr), ("--vae-lr", self.vae_lr), ("--prompt-dropout", self.prompt_dropout)):
            if isinstance(value, float):  # inf / NaN first, named by the flag: what `fsd train-prior` has always said
                check_finite(flag, value)
        caps = {"steps": MAX_TRAIN_STEPS, "vae_steps": MAX_TRAIN_STEPS, "checkpoint_every": MAX_TRAIN_STEPS,
                "batch": MAX_BATCH, "vae_batch": MAX_BATCH, "threads": MAX_THREADS}
        for name, cap in caps.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= cap:
                raise InputError(f"{name.replace('_', '-')} must be an integer in [1, {cap}], got {v!r}")
        if self.batch % self.views or self.vae_batch % self.views:
            raise InputError(f"{self.dataset.value} trains on sets of {self.views} views: batch and vae-batch must "
                             f"be multiples of {self.views}")
        for name in ("lr", "vae_lr"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 < v <= 1):
                raise InputError(f"{name.replace('_', '-')} must be in (0, 1], got {v!r}")
        if not 0.0 <= self.prompt_dropout < 1.0:
            raise InputError(f"prompt-dropout must be in [0, 1), got {self.prompt_dropout}")
        if not 0.0 <= self.ema < 1.0 or not 0.0 <= self.kl_weight <= 1.0:
            raise InputError("ema must be in [0, 1) and kl-weight in [0, 1]")
        if self.dataset is not Dataset.IMAGESET and not 1 <= self.pool_size <= 100_000:
            raise InputError(f"pool must be in [1, 100000] cameras per object, got {self.pool_size}")
        if not 0 <= self.seed < 2**31:
            raise InputError(f"seed must be in [0, 2**31), got {self.seed}")
        if self.arch is Arch.SD3 and self.views > 1:
            raise InputError(f"{self.dataset.value} trains MVDream's layout; --arch sd3 takes imageset or objects")

    @property
    def flow(self) -> bool:
        """Whether stage 2 trains a rectified-flow transformer (SD3's layout)."""
        return self.arch is Arch.SD3

    @property
    def denoiser(self) -> str:
        """The stage-2 network's name in the card and the progress bar."""
        return "transformer" if self.flow else "unet"

    def fingerprint(self) -> dict:
        """What a checkpoint must match to be continued (the cadence and the threads may change)."""
        return {k: v for k, v in jsonable(dataclasses.asdict(self)).items() if k not in ("checkpoint_every",)}


# --------------------------------------------------------------------------------------------- the pieces
def build_networks(config: TrainPriorConfig):
    """(tokenizer, text encoder, VAE, denoiser), each initialised from torch's generator seeded by the config's seed
    in this order (deterministic); SD3: the text encoder is the tuple (CLIP-L, CLIP-G, T5). The tokenizer is written
    to a temporary folder by random_sd."""
    import tempfile

    from fsd2d.priors.random_sd import MAX_LENGTH, random_text_encoder, write_tokenizer

    with tempfile.TemporaryDirectory(prefix="fsd-tokenizer-") as folder:  # read into memory: the folder may go
        tokenizer = write_tokenizer(Path(folder), models.SD3_CLIP_TOKENS if config.flow else MAX_LENGTH)
    torch.manual_seed(config.seed)
    if config.flow:
        text_encoder = tuple(e.requires_grad_(False).eval() for e in models.tiny_sd3_text_encoders(tokenizer))
        return tokenizer, text_encoder, models.tiny_vae(quant_convs=False), models.tiny_sd3_transformer()
    text_encoder = random_text_encoder("tiny", tokenizer).requires_grad_(False).eval()
    vae = models.tiny_vae()
    unet = models.tiny_mvdream_unet() if config.views > 1 else models.tiny_sd_unet()
    return tokenizer, text_encoder, vae, unet


def caption_encoder(config: TrainPriorConfig, tokenizer, text_encoder) -> "CaptionEncoder":
    """The frozen conditioning of a caption [1, ...]: CLIP's last hidden state (SD, MVDream), or SD3's packed
    tokens and pooled vector (fsd2d.priors.sd3.sd3_condition, as the SD3 prior encodes at sampling time)."""
    if not config.flow:
        def encode(caption: str) -> torch.Tensor:
            ids = tokenizer(caption, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids
            return text_encoder(ids).last_hidden_state  # [1, 77, D]
        return CaptionEncoder(encode)
    from fsd2d.priors.diffusers_prior import pack_cond
    from fsd2d.priors.sd3 import sd3_condition

    tokenizers = (tokenizer,) * 3
    return CaptionEncoder(lambda c: pack_cond(*sd3_condition(text_encoder, tokenizers, c, models.SD3_WIDTH,
                                                             models.SD3_T5_TOKENS)))


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay from `peak` to 10 % of it at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


class CaptionEncoder:
    """Frozen conditioning [1, ...] per caption (`encode`), computed once each (there are only a few captions)."""

    def __init__(self, encode: Callable[[str], torch.Tensor]):
        self.encode, self.cache = encode, {}

    @torch.no_grad()
    def __call__(self, captions: list[str]) -> torch.Tensor:
        for c in set(captions) - set(self.cache):
            self.cache[c] = self.encode(c)
        return torch.cat([self.cache[c] for c in captions])  # [B, ...]


def vae_loss(vae, x: torch.Tensor, generator: torch.Generator, kl_weight: float) -> torch.Tensor:
    """Stage 1's loss on images x [N, 3, R, R] in [-1, 1] (module docstring)."""
    posterior = vae.encode(x).latent_dist
    z = posterior.sample(generator=generator)
    rec = vae.decode(z).sample
    kl = posterior.kl().mean() / x[0].numel()  # nats per pixel
    return (rec - x).abs().mean() + ((rec - x) ** 2).mean() + kl_weight * kl


@torch.no_grad()
def latents(vae, images: torch.Tensor, scaling: float, shift: float = 0.0) -> torch.Tensor:
    """images [N, 3, R, R] in [0, 1] -> scaling * (posterior mean - shift) [N, 4, R/4, R/4] (LatentPrior.encode)."""
    out = [vae.encode(2.0 * images[i:i + 256] - 1.0).latent_dist.mean for i in range(0, len(images), 256)]
    return (torch.cat(out) - shift) * scaling


def unet_loss(unet, z0: torch.Tensor, ctx: torch.Tensor, cameras: torch.Tensor | None, views: int,
              generator: torch.Generator, schedule) -> torch.Tensor:
    """Stage 2's loss on latents z0 [N, 4, h, w] (sets of `views` consecutive), CLIP states ctx [N, 77, D],
    cameras [N, 16] or None (module docstring)."""
    n = z0.shape[0]
    t = torch.randint(schedule.num_timesteps, (n // views,), generator=generator).repeat_interleave(views)  # [N]
    eps = torch.randn(z0.shape, generator=generator)
    alpha, sigma = schedule.alpha_sigma(t, torch.float32, "cpu")  # [N, 1, 1, 1]
    z_t = alpha * z0 + sigma * eps
    if cameras is None:
        pred = unet(z_t, t, encoder_hidden_states=ctx).sample
    else:
        pred = unet(z_t, t, ctx, cameras, views)
    return ((pred - eps) ** 2).mean()


def flow_loss(transformer, z0: torch.Tensor, ctx: torch.Tensor, generator: torch.Generator, schedule) -> torch.Tensor:
    """Stage 2's loss for SD3's layout (module docstring): z0 [N, 4, h, w], ctx [N, L + 1, D] packed (tokens and
    the pooled vector, fsd2d.priors.diffusers_prior.pack_cond); `schedule` the rectified flow."""
    from fsd2d.priors.diffusers_prior import unpack_cond

    n = z0.shape[0]
    u = torch.sigmoid(torch.randn(n, generator=generator, dtype=torch.float64))  # logit-normal(0, 1)
    t = (u * schedule.num_timesteps).long().clamp(max=schedule.num_timesteps - 1)  # [N] index of sigma_t
    eps = torch.randn(z0.shape, generator=generator)
    alpha, sigma = schedule.alpha_sigma(t, torch.float32, "cpu")  # 1 - s, s
    tokens, pooled = unpack_cond(ctx, 2 * models.CONTEXT_DIM)
    v = transformer(hidden_states=alpha * z0 + sigma * eps, encoder_hidden_states=tokens, pooled_projections=pooled,
                    timestep=schedule.network_timesteps(t).float()).sample
    return ((v - (eps - z0)) ** 2).mean()


def ema_update(ema: dict[str, torch.Tensor], model: torch.nn.Module, decay: float, updates: int) -> None:
    d = min(decay, (1.0 + updates) / (10.0 + updates))
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if p.dtype.is_floating_point:
                ema[name].mul_(d).add_(p, alpha=1.0 - d)
            else:
                ema[name].copy_(p)


# --------------------------------------------------------------------------------------------- checkpoints
@dataclass
class TrainState:
    stage: str  # "vae", "unet" or "done"
    step: int  # steps done in the current stage
    vae: torch.nn.Module
    unet: torch.nn.Module
    vae_opt: torch.optim.Optimizer
    unet_opt: torch.optim.Optimizer
    ema: dict[str, torch.Tensor]
    data_gen: torch.Generator
    noise_gen: torch.Generator
    scaling: float | None
    shift: float  # the VAE latents' shift factor (SD3's layout; 0 for SD's)
    log: dict  # {"vae": [mean loss per LOG_EVERY steps], "unet": [...]}
    seconds: float
    window: list[float]  # the losses of the current LOG_EVERY-step window (checkpointed: the log resumes too)


def initial_state(config: TrainPriorConfig, vae, unet) -> TrainState:
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    return TrainState("vae", 0, vae, unet, torch.optim.AdamW(vae.parameters(), config.vae_lr, weight_decay=0.0),
                      torch.optim.AdamW(unet.parameters(), config.lr, weight_decay=0.0), ema,
                      torch.Generator().manual_seed(config.seed + 1), torch.Generator().manual_seed(config.seed + 2),
                      None, 0.0, {"vae": [], "unet": []}, 0.0, [])


def save_checkpoint(path: Path, state: TrainState, config: TrainPriorConfig) -> None:
    payload = {"fingerprint": config.fingerprint(), "stage": state.stage, "step": state.step,
               "vae": state.vae.state_dict(), "unet": state.unet.state_dict(),
               "vae_opt": state.vae_opt.state_dict(), "unet_opt": state.unet_opt.state_dict(), "ema": state.ema,
               "data_gen": state.data_gen.get_state(), "noise_gen": state.noise_gen.get_state(),
               "scaling": state.scaling, "shift": state.shift, "log": state.log, "seconds": state.seconds, "window": state.window}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, config: TrainPriorConfig, state: TrainState) -> TrainState:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a broken file is one line for the user
        raise InputError(f"{path} is not a readable checkpoint ({type(e).__name__}); delete it to start over") from None
    if payload.get("fingerprint") != config.fingerprint():
        raise InputError(f"{path} was made with other settings than these; resume with the same ones, or use "
                         "another --out")
    state.vae.load_state_dict(payload["vae"])
    state.unet.load_state_dict(payload["unet"])
    state.vae_opt.load_state_dict(payload["vae_opt"])
    state.unet_opt.load_state_dict(payload["unet_opt"])
    state.ema = payload["ema"]
    state.data_gen.set_state(payload["data_gen"])
    state.noise_gen.set_state(payload["noise_gen"])
    state.stage, state.step, state.scaling = payload["stage"], payload["step"], payload["scaling"]
    state.shift = payload.get("shift", 0.0)
    state.log, state.seconds, state.window = payload["log"], payload["seconds"], payload["window"]
    return state


def load_pool(path: Path, config: TrainPriorConfig, progress: bool) -> ObjectPool:
    """The objects' render pool: from the cache `path` if it holds the pool of these settings, else rendered and
    cached there. The cache is a safetensors file (the pool's tensors, the settings as JSON metadata): reading it
    runs nothing, and a damaged, foreign or other-settings file is rendered again and replaced."""
    from safetensors.torch import save_file

    key = json.dumps({"dataset": config.dataset.value, "pool": config.pool_size, "seed": config.seed,
                      "resolution": models.RESOLUTION}, sort_keys=True)
    pool = read_pool_cache(path, key, config.views)
    if pool is not None:
        return pool
    total = config.pool_size * config.views
    with tqdm(total=total, desc="rendering the camera pool", unit="cam", disable=not progress, leave=False) as bar:
        pool = build_dataset(config.dataset, models.RESOLUTION, config.pool_size, config.seed,
                             progress=bar.update)
    with atomic_path(path) as tmp:
        save_file(pool.tensors(), str(tmp), metadata={"key": key})
    return pool


def read_pool_cache(path: Path, key: str, views: int) -> ObjectPool | None:
    """The pool cached at `path` if the file is a safetensors pool whose metadata key is `key`, else None."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("key") != key:
                return None
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not iterable)
        return ObjectPool.from_tensors(tensors, models.RESOLUTION, views)
    except (OSError, ValueError, SafetensorError):  # damaged or not a pool: rendered again
        return None


# --------------------------------------------------------------------------------------------- the run
Callback = Callable[[TrainState], None]


def train_prior(config: TrainPriorConfig, out: Path, resume: bool = False, progress: bool = False,
                callback: Callback | None = None) -> dict:
    """Train (or continue) the model of `config` and write it to `out` (replaced in one rename on success).
    `callback(state)` runs after every step, after any checkpoint of that step. Returns the model card."""
    config.validate()
    out = Path(out)
    claim(out, TRAIN_PRIOR)
    check_output_dir(out)
    work = out / WORK
    ckpt = work / "checkpoint.pt"
    if ckpt.exists() and not resume:
        raise InputError(f"{ckpt} exists: pass --resume to continue it, or choose another --out")
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train(config, out, work, ckpt, progress, callback)
    finally:
        torch.set_num_threads(threads)


def _train(config: TrainPriorConfig, out: Path, work: Path, ckpt: Path, progress: bool,
           callback: Callback | None) -> dict:
    tokenizer, text_encoder, vae, unet = build_networks(config)
    state = initial_state(config, vae, unet)
    if ckpt.exists():
        state = load_checkpoint(ckpt, config, state)
    work.mkdir(parents=True, exist_ok=True)
    data = ImageCrops(models.RESOLUTION) if config.dataset is Dataset.IMAGESET else \
        load_pool(work / POOL_CACHE, config, progress)
    captions = caption_encoder(config, tokenizer, text_encoder)
    schedule = flow_schedule(shift=models.SD3_FLOW_SHIFT) if config.flow else scaled_linear_schedule()
    views = config.views
    start = time.perf_counter() - state.seconds

    def checkpoint_and_report(total: int, loss: float, key: str) -> None:
        state.step += 1
        state.seconds = time.perf_counter() - start
        state.window.append(loss)
        if state.step % LOG_EVERY == 0 or state.step == total:
            state.log[key].append(sum(state.window) / len(state.window))
            state.window = []
        if state.step % config.checkpoint_every == 0 or state.step == total:
            if state.step == total:  # the next stage starts from step 0
                state.stage, state.step = {"vae": "unet", "unet": "done"}[state.stage], 0
            save_checkpoint(ckpt, state, config)
        if callback is not None:
            callback(state)

    if state.stage == "vae":
        vae.train()
        bar = tqdm(range(state.step, config.vae_steps), initial=state.step, total=config.vae_steps,
                   desc="VAE", disable=not progress, leave=False)
        for step in bar:
            for group in state.vae_opt.param_groups:
                group["lr"] = lr_at(step, config.vae_steps, config.vae_lr, config.warmup)
            batch = data.sample(config.vae_batch // views, state.data_gen)
            loss = vae_loss(vae, 2.0 * batch.images.flatten(0, 1) - 1.0, state.noise_gen, config.kl_weight)
            state.vae_opt.zero_grad(set_to_none=True)
            loss.backward()
            state.vae_opt.step()
            bar.set_postfix(loss=f"{loss.item():.4f}")
            checkpoint_and_report(config.vae_steps, loss.item(), "vae")
    vae.eval().requires_grad_(False)
    if state.scaling is None:
        fixed = data.sample(SCALE_IMAGES // views, torch.Generator().manual_seed(SCALE_SEED))
        raw = latents(vae, fixed.images.flatten(0, 1), 1.0)
        state.shift = float(raw.mean()) if config.flow else 0.0  # SD3's shift_factor; SD's VAE has none
        state.scaling = float(1.0 / (raw - state.shift).std())
    pool_latents = None
    if isinstance(data, ObjectPool):  # the whole pool, encoded once: [K, P, V, 4, h, w]
        k, p = data.images.shape[:2]
        flat = data.images.flatten(0, 2).float() / 255.0
        pool_latents = latents(vae, flat, state.scaling, state.shift)
        pool_latents = pool_latents.reshape(k, p, views, *pool_latents.shape[1:])
    if state.stage == "unet":
        unet.train()
        bar = tqdm(range(state.step, config.steps), initial=state.step, total=config.steps, desc=config.denoiser,
                   disable=not progress, leave=False)
        for step in bar:
            for group in state.unet_opt.param_groups:
                group["lr"] = lr_at(step, config.steps, config.lr, config.warmup)
            z0, batch = sample_latents(data, pool_latents, vae, state, config)
            keep = torch.rand(len(batch.captions), generator=state.noise_gen) >= config.prompt_dropout
            ctx = captions([c if k else "" for c, k in zip(batch.captions, keep.tolist())])
            ctx = ctx.repeat_interleave(views, dim=0)  # [N, 77, D]
            cams = None if batch.cameras is None else batch.cameras.flatten(0, 1)  # [N, 16]
            if config.flow:
                loss = flow_loss(unet, z0, ctx, state.noise_gen, schedule)
            else:
                loss = unet_loss(unet, z0, ctx, cams, views, state.noise_gen, schedule)
            state.unet_opt.zero_grad(set_to_none=True)
            loss.backward()
            state.unet_opt.step()
            ema_update(state.ema, unet, config.ema, step)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            checkpoint_and_report(config.steps, loss.item(), "unet")
    unet.load_state_dict(state.ema)
    return write_model(config, out, tokenizer, text_encoder, vae, unet, state)


def sample_latents(data, pool_latents, vae, state: TrainState, config: TrainPriorConfig):
    """(z0 [N, 4, h, w], batch) for one UNet step: from the encoded pool, or fresh crops encoded now."""
    n = config.batch // config.views
    if pool_latents is None:
        batch = data.sample(n, state.data_gen)
        return latents(vae, batch.images.flatten(0, 1), state.scaling, state.shift), batch
    obj, cam = data.draw(n, state.data_gen)
    return pool_latents[obj, cam].flatten(0, 1), data.batch(obj, cam, images=False)


def write_model(config: TrainPriorConfig, out: Path, tokenizer, text_encoder, vae, unet, state: TrainState) -> dict:
    """The finished model in its layout (float16 weights), its samples and its card, replacing `out`."""
    from fsd2d.priors.diffusers_prior import quiet_libraries
    from fsd2d.priors.random_sd import ddim_scheduler, save_mvdream, save_stable_diffusion

    vae.register_to_config(scaling_factor=state.scaling, **({"shift_factor": state.shift} if config.flow else {}))
    encoders = text_encoder if config.flow else (text_encoder,)
    with quiet_libraries():  # diffusers' note on casting with to(): nothing of these must stay in float32
        for module in (*encoders, vae, unet):
            module.to(torch.float16)
    text_parameters = sum(models.parameters(e) for e in encoders)
    losses = {{"unet": config.denoiser}.get(k, k): [round(v, 5) for v in vals] for k, vals in state.log.items()}
    card = {"dataset": config.dataset.value, "world": config.dataset.world,
            "prompts": list(data_prompts(config.dataset)), "view_suffixes": list(config.dataset.view_suffixes),
            "views": config.views, "resolution": models.RESOLUTION,
            "parameters": {config.denoiser: models.parameters(unet), "vae": models.parameters(vae),
                           "text_encoder": text_parameters},
            "training": {"config": jsonable(dataclasses.asdict(config)), "seconds": round(state.seconds, 1),
                         "loss_every": LOG_EVERY, "loss": losses,
                         "scaling_factor": state.scaling, "versions": versions(),
                         "command": command_line(config)}}
    if config.flow:  # what the SD3 prior (and a plain pipeline call) must be given: the T5 tokens it was trained on
        card |= {"arch": config.arch.value, "max_sequence_length": models.SD3_T5_TOKENS}
        card["training"]["shift_factor"] = state.shift
    with atomic_output_dir(out, TRAIN_PRIOR) as tmp:
        with quiet_libraries():
            if config.flow:
                from fsd2d.priors.random_backbones import flow_scheduler, save_sd3

                save_sd3(tmp, unet, vae, text_encoder, tokenizer, flow_scheduler(models.SD3_FLOW_SHIFT))
            elif config.views > 1:
                save_mvdream(tmp, unet, vae, text_encoder, tokenizer, ddim_scheduler())
            else:
                save_stable_diffusion(tmp, unet, vae, text_encoder, tokenizer, ddim_scheduler())
        write_samples(tmp, card)
        for path in tmp.rglob("*"):  # the usual permissions (safetensors writes 0600)
            path.chmod(usual_mode(folder=path.is_dir()))
        card["files"] = folder_files(tmp)
        (tmp / CARD).write_text(json.dumps(card, indent=2) + "\n")
    return card


def data_prompts(dataset: Dataset) -> list[str]:
    from fsd2d.priors.imageset import PROMPTS
    from fsd3d.references import REFERENCE_PROMPTS

    return list(PROMPTS) if dataset is Dataset.IMAGESET else list(REFERENCE_PROMPTS)


def command_line(config: TrainPriorConfig) -> str:
    """The `fsd train-prior` command that makes this config (non-default options only)."""
    default = TrainPriorConfig(config.dataset, arch=config.arch)  # the arch's defaults are not repeated
    args = [f"--{k.replace('_', '-')} {getattr(v, 'value', v)}" for k, v in dataclasses.asdict(config).items()
            if k not in ("dataset", "arch") and v != getattr(default, k)]
    args += [f"--arch {config.arch.value}"] if config.arch is not Arch.SD else []
    return " ".join(["fsd train-prior", config.dataset.value, *args])


def write_samples(folder: Path, card: dict) -> None:
    """samples.png: DDIM (SAMPLE_STEPS steps, CFG SAMPLE_CFG) from the files just written, SAMPLE_SEEDS seeds per
    prompt (objects: with the front-view suffix; MVDream: the 2 x 2 mosaic of a 4-view set)."""
    from fsd2d import metrics
    from fsd2d.figures import image_grid
    from fsd2d.guidance import Guidance
    from fsd2d.priors.load import load_prior
    from fsd2d.sampling import ddim_sample, initial_noise
    from fsd2d.schedule import timesteps

    prior = load_prior(str(folder), "cpu", "float32")
    rows, labels = [], []
    for prompt in card["prompts"]:
        caption = f"{prompt}, {card['view_suffixes'][0]}" if card["view_suffixes"] else prompt
        g = Guidance(prior.encode_prompt(caption), prior.encode_prompt(""), SAMPLE_CFG)
        seeds = list(range(SAMPLE_SEEDS))
        with torch.no_grad():
            z = ddim_sample(prior, g, initial_noise(prior, seeds), timesteps(SAMPLE_STEPS, 20, 980))
            rows.append(metrics.to_hwc(prior.decode(z)))
        labels.append(caption)
    image_grid(folder / "samples.png", rows, labels, [f"seed {s}" for s in range(SAMPLE_SEEDS)],
               title=f"DDIM samples ({SAMPLE_STEPS} steps, CFG {SAMPLE_CFG:g}) of the trained {card['dataset']} model")
