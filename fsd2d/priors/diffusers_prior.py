"""Stable Diffusion 1.x / 2.x (diffusers folder layout) as a `Prior`.

Working space: the VAE latent z = scaling_factor * E(2 * image - 1), [B, 4, res/f, res/f] with f the VAE
scale factor (8 for SD).  The noise schedule is rebuilt from the scheduler config with our own
`fsd2d.schedule` functions, so alpha_t and sigma_t have one source of truth.  v-prediction models
(SD 2.x 768) are wrapped so that `eps` always returns the noise prediction.

Only the four components are loaded (no pipeline, no safety checker), safetensors only, weights frozen.
`LatentPrior` (CLIP prompt encoding, VAE codec) and `load_codec` (VAE, text encoder, tokenizer, scheduler
config) are shared with MVDream (fsd2d/priors/mvdream.py).
"""
from __future__ import annotations

import contextlib
import gc
import os
import warnings
from pathlib import Path
from typing import Literal, get_args

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from fsd2d.priors.base import ModelError, Prior, match_prompt
from fsd2d.priors.layouts import Backbone, backbone_named, backbone_of, folder_index, looks_like_path
from fsd2d.schedule import (
    NoiseSchedule,
    Prediction,
    flow_schedule,
    flux_mu,
    linear_schedule,
    scaled_linear_schedule,
    to_eps,
)

BetaSchedule = Literal["scaled_linear", "linear"]
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler",)  # scheduler classes of rectified-flow models
WEIGHTED_COMPONENTS = ("unet", "vae", "text_encoder")
ALL_COMPONENTS = (*WEIGHTED_COMPONENTS, "tokenizer", "scheduler")
HALF_DTYPES = (torch.float16, torch.bfloat16)
ALLOWED_DTYPES = (torch.float64, torch.float32, *HALF_DTYPES)  # float64: exact checks (Proposition 1) on the CPU
MAX_RESOLUTION = 4096  # pixels; SD 1.x/2.x work at 512-768, and 4096 already means a 512 x 512 latent


def is_flow_config(config: dict) -> bool:
    """Whether a scheduler config is a rectified-flow one (SD3, Flux: FlowMatchEulerDiscreteScheduler)."""
    return config.get("_class_name") in FLOW_SCHEDULERS


# FlowMatchEulerDiscreteScheduler fields that change its sigmas in ways the flow schedule here does not follow
FLOW_UNSUPPORTED = ("invert_sigmas", "shift_terminal", "use_karras_sigmas", "use_exponential_sigmas",
                    "use_beta_sigmas", "stochastic_sampling")


def schedule_from_config(config: dict, image_tokens: int | None = None) -> NoiseSchedule:
    """Our NoiseSchedule from a diffusers scheduler config: a VP one (beta_start, beta_end, beta_schedule, T) or,
    for FlowMatchEulerDiscreteScheduler, the rectified-flow one with its shift (static `shift`; with
    use_dynamic_shifting, Flux's mu for `image_tokens` latent tokens, fsd2d.schedule.flux_mu)."""
    if is_flow_config(config):
        unsupported = [k for k in FLOW_UNSUPPORTED if config.get(k)]
        if unsupported:
            raise ModelError(f"the flow-matching scheduler config sets {', '.join(unsupported)}, which is not "
                             "supported (only the plain shifted sigmas)")
        if config.get("use_dynamic_shifting", False):
            if image_tokens is None:
                raise ValueError("a dynamically shifted schedule needs the image's token count")
            mu = flux_mu(image_tokens, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                         config.get("base_shift", 0.5), config.get("max_shift", 1.15))
            return flow_schedule(config.get("num_train_timesteps", 1000), mu=mu,
                                 time_shift_type=config.get("time_shift_type", "exponential"))
        return flow_schedule(config.get("num_train_timesteps", 1000), shift=config.get("shift", 1.0))
    if config.get("trained_betas") is not None or config.get("rescale_betas_zero_snr", False):
        raise ModelError("scheduler config uses trained_betas or rescale_betas_zero_snr, which are not supported")
    kind = config.get("beta_schedule", "linear")
    args = (config.get("beta_start", 0.0001), config.get("beta_end", 0.02), config.get("num_train_timesteps", 1000))
    if kind == "scaled_linear":
        return scaled_linear_schedule(*args)
    if kind == "linear":
        return linear_schedule(*args)
    raise ModelError(
        f"unsupported beta_schedule {kind!r} in the scheduler config; allowed: {list(get_args(BetaSchedule))}"
    )


def check_prediction_type(scheduler_config: dict) -> Prediction:
    """What the network predicts: FLOW for a flow-matching scheduler, else the config's prediction_type (epsilon
    by default), or a ModelError listing the allowed ones."""
    if is_flow_config(scheduler_config):
        return Prediction.FLOW
    prediction_type = scheduler_config.get("prediction_type", "epsilon")
    allowed = (Prediction.EPSILON.value, Prediction.V.value)
    if prediction_type not in allowed:
        raise ModelError(f"unsupported prediction_type {prediction_type!r} in the scheduler config; "
                         f"allowed: {list(allowed)}")
    return Prediction(prediction_type)


class EncoderCache:
    """Prompt encodings computed once per prompt by `encode(prompt) -> cond [1, ...]`, kept after the encoders are
    released (`release`): a run encodes its prompts first, then needs only the denoiser and the VAE."""

    def __init__(self):
        self.cache: dict[str, torch.Tensor] = {}
        self.released = False

    def get(self, prompt: str, encode) -> torch.Tensor:
        if prompt not in self.cache:
            if self.released:
                raise ModelError(f"the text encoders were released after encoding this run's prompts; {prompt!r} "
                                 "was not among them (load the model again to encode new prompts)")
            self.cache[prompt] = encode(prompt)
        return self.cache[prompt]


class ReleasableText:
    """What the priors with large text encoders (SD3's T5-XXL ~9 GB, SDXL, Flux, klein's Qwen3) share: their
    encodings cached per prompt (`prompts`, an EncoderCache) and `release_text_encoders()`, which 3D calls once the
    run's prompts are encoded (fsd3d.priors3d). A subclass sets `text_encoders` (a list) and `prompts`."""

    text_encoders: list
    prompts: EncoderCache

    def release_text_encoders(self) -> None:
        """Free the text encoders: prompts encoded so far stay usable, a new one is a ModelError."""
        self.text_encoders, self.prompts.released = [None] * len(self.text_encoders), True
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class LatentPrior(Prior):
    """What the latent text-to-image priors here share (Stable Diffusion, MVDream): the CLIP prompt encoding,
    the VAE codec, the working-space shape and the GPU fast paths. Subclasses call `_setup` from their
    constructor (it sets unet, vae, text_encoder, tokenizer, device, dtype, vae_factor, `_resolution`, and `_unet`
    and `_encode_mean`: the UNet and the VAE encoder's posterior mean, possibly compiled) and implement eps."""

    unet: torch.nn.Module  # with .config.in_channels
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    vae_factor: int
    _resolution: int
    prediction_type: Prediction
    model_label: str = "Stable Diffusion"  # names the model in error messages
    resolution_per: str = ""  # what the resolution is the side of, in error messages (" per view")
    cuda_graphs: bool = True  # compile the UNet with CUDA graphs ("reduce-overhead") on CUDA
    channels_last_unet: bool = True  # channels-last UNet weights on CUDA
    denoiser_label: str = "UNet"  # the denoiser's kind, in error messages

    def _setup(self, unet: torch.nn.Module, vae: AutoencoderKL, text_encoder: torch.nn.Module | None, tokenizer,
               scheduler_config: dict, resolution: int | None, name: str, *, sample_size: int, latent_multiple: int,
               text_encoders: tuple[torch.nn.Module, ...] = ()) -> None:
        """What the constructors share: prediction type and schedule from the scheduler config (a flow schedule
        with a dynamic shift: for this resolution's token count), the frozen components (device and dtype of the
        denoiser's weights; `text_encoders`: more to freeze), the VAE factor f, and the resolution: `sample_size`
        latents (the denoiser config's trained size) times f by default, a multiple of f `latent_multiple` (a
        UNet's 2^(levels - 1), a transformer's patch size) in any case, or a ModelError."""
        self.prediction_type = check_prediction_type(scheduler_config)
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        for module in (unet, vae, text_encoder, *text_encoders):
            if module is not None:
                module.requires_grad_(False).eval()
        param = next(unet.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.name = name
        self.vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        default = sample_size * self.vae_factor
        multiple = self.vae_factor * latent_multiple
        res = default if resolution is None else resolution
        check_resolution(res, self.model_label, self.resolution_per)
        if not (isinstance(res, int) and res > 0 and res % multiple == 0):
            raise ModelError(
                f"resolution {res} is not a positive multiple of {multiple}, which this {self.model_label} model's "
                f"VAE and {self.denoiser_label} need; try {default}"
            )
        self._resolution = res
        tokens = (res // multiple) ** 2  # the image's tokens at the patch size (Flux's shift depends on it)
        self.schedule = schedule_from_config(scheduler_config, image_tokens=tokens)
        self._unet, self._encode_mean = self.unet, self._vae_mean  # eager; `speed_up` may compile them

    def _as_eps(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The UNet's output [B, C, h, w] as a noise prediction (converted from v for v_prediction models)."""
        if self.prediction_type is Prediction.EPSILON:
            return out
        alpha, sigma = self.schedule.alpha_sigma(t, dtype=x_t.dtype, device=x_t.device)
        return to_eps(self.prediction_type, out, x_t, alpha, sigma)

    def describe(self) -> dict:
        return super().describe() | {
            "model": self.name,
            "dtype": str(self.dtype).removeprefix("torch."),
            "prediction_type": self.prediction_type.value,
        }

    def speed_up(self, compile: bool = False) -> None:
        """GPU fast paths: channels-last UNet and VAE (cuDNN's preferred layout for fp16 convolutions) and, with
        `compile`, torch.compile of the UNet call (CUDA graphs on CUDA where the class allows them: the UNet is
        launch-bound at the batch sizes of score distillation) and of the VAE encoder (forward and backward,
        inductor kernels). The first steps after compiling are slow; results match eager to fp16 rounding."""
        if self.device.type == "cuda":
            if self.channels_last_unet:
                self.unet.to(memory_format=torch.channels_last)
            self.vae.to(memory_format=torch.channels_last)
        if compile:
            unet_mode = "reduce-overhead" if self.device.type == "cuda" and self.cuda_graphs else "default"
            self._unet = torch.compile(self.unet, mode=unet_mode, dynamic=False)
            self._encode_mean = torch.compile(self._vae_mean, dynamic=False)

    @property
    def resolution(self) -> int:
        return self._resolution

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self._resolution // self.vae_factor
        return (self.unet.config.in_channels, side, side)

    captions: list[str] | None = None  # a trained model's captions (its card): the only prompts it knows; None: any

    def known_prompt(self, prompt: str) -> str:
        """The prompt as this model encodes it: a trained model (with `captions`) takes only the captions it was
        trained on and '', matched by the one rule (fsd2d.priors.base.match_prompt: case and surrounding spaces
        ignored) and encoded as trained; anything else is a PromptError listing them. Other models: as given."""
        if self.captions is None:
            return prompt
        prompts, suffixes = (self.card["prompts"], self.card.get("view_suffixes", [])) if self.card else \
            (self.captions, [])
        return match_prompt(prompt, prompts, suffixes, known_by=f"the trained {self.model_label}")

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """CLIP last hidden state [1, max_length (77), D] in the prior's dtype, of `known_prompt(prompt)`."""
        return clip_encode(self.tokenizer, self.text_encoder, self.known_prompt(prompt))[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent z [B, C, h, w] -> RGB [B, 3, H, W] float32 in [0, 1] (clamped): D(z / scaling + shift)."""
        z = z.to(self.vae_dtype) / self.vae.config.scaling_factor + self.latent_shift
        images = self.vae.decode(z).sample  # [-1, 1]
        return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """RGB [B, 3, H, W] in [0, 1] -> latent [B, C, H/f, W/f] (posterior mean), differentiable, in images' dtype."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"encode expects RGB images [B, 3, H, W] in [0, 1], got shape {list(images.shape)}")
        return self._encode_mean((2.0 * images - 1.0).to(self.vae_dtype)).to(images.dtype)

    def _vae_mean(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images [B, 3, H, W] in the VAE's dtype -> scaled posterior mean [B, C, H/f, W/f]."""
        return (self.vae.encode(x).latent_dist.mean - self.latent_shift) * self.vae.config.scaling_factor

    @property
    def vae_dtype(self) -> torch.dtype:
        """The VAE's working dtype: the prior's, unless a subclass keeps its VAE in another (SDXL: float32)."""
        return next(self.vae.parameters()).dtype

    @property
    def latent_shift(self) -> float:
        """The VAE's shift_factor (SD3, Flux: z = (E(x) - shift) * scaling), 0 where it has none (SD, SDXL)."""
        return getattr(self.vae.config, "shift_factor", None) or 0.0


class StableDiffusionPrior(LatentPrior):
    """eps_phi(z_t | y, t) of a Stable Diffusion UNet, its CLIP text encoder and its VAE codec (all frozen)."""

    def __init__(
        self,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        scheduler_config: dict,
        resolution: int | None = None,
        name: str = "",
    ):
        self._setup(unet, vae, text_encoder, tokenizer, scheduler_config, resolution, name,
                    sample_size=unet.config.sample_size, latent_multiple=2 ** (len(unet.config.down_block_types) - 1))

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x_t [B, C, h, w] latent, t [B] long, cond [B, 77, D] -> eps [B, C, h, w] in x_t's dtype.

        Not wrapped in no_grad: callers that need no graph through the UNet (SDS, FSD) use torch.no_grad()."""
        if x_t.ndim != 4 or t.shape != x_t.shape[:1] or cond.shape[0] != x_t.shape[0]:
            raise ValueError(
                f"eps expects x_t [B, C, h, w], t [B], cond [B, 77, D]; got {list(x_t.shape)}, "
                f"{list(t.shape)}, {list(cond.shape)}"
            )
        out = self._unet(
            x_t.to(self.dtype), t.to(self.device), encoder_hidden_states=cond.to(self.dtype)
        ).sample.to(x_t.dtype)  # [B, C, h, w]
        return self._as_eps(out, x_t, t)


def clip_encode(tokenizer, encoder, prompt: str, penultimate: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(states [1, L, D], pooled [1, P] or None) of a CLIP text encoder for `prompt`, padded to the tokenizer's
    model_max_length as the pipelines do: the last hidden state, or with `penultimate` the one before it (SDXL,
    SD3); pooled: a CLIPTextModelWithProjection's text_embeds, a CLIPTextModel's pooler output."""
    ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids  # [1, L]
    out = encoder(ids.to(encoder.device), output_hidden_states=penultimate)
    states = out.hidden_states[-2] if penultimate else out.last_hidden_state
    pooled = getattr(out, "text_embeds", None)
    return states, (pooled if pooled is not None else getattr(out, "pooler_output", None))


def pack_cond(tokens: torch.Tensor, *vectors: torch.Tensor) -> torch.Tensor:
    """One conditioning tensor [1, L + rows, D] from token states [1, L, D] and per-prompt vectors [1, P_i] (pooled
    text embeddings, SDXL's time ids), each zero-padded into ceil(P_i / D) rows after the tokens: so guidance, the
    seed batch and the 3D views treat every backbone's conditioning as one tensor [B, ...] (`unpack_cond`)."""
    d = tokens.shape[-1]
    rows = [torch.nn.functional.pad(v, (0, -v.shape[-1] % d)).view(v.shape[0], -1, d).to(tokens.dtype)
            for v in vectors]
    return torch.cat([tokens, *rows], dim=1)


def unpack_cond(cond: torch.Tensor, *sizes: int) -> tuple[torch.Tensor, ...]:
    """`pack_cond` undone on [B, L + rows, D]: (tokens [B, L, D], vector_1 [B, P_1], ...) for the vector sizes."""
    d = cond.shape[-1]
    counts = [-(-p // d) for p in sizes]  # rows per vector
    tokens, *rows = cond.split([cond.shape[1] - sum(counts), *counts], dim=1)
    return (tokens, *(r.flatten(1)[:, :p] for r, p in zip(rows, sizes)))


def check_resolution(resolution: int | None, model: str = "Stable Diffusion", per: str = "") -> None:
    """The cap on the side in pixels (`per` view, say; no weights needed); the multiple the model's VAE and UNet
    need is checked on loading."""
    if resolution is not None and not 0 < resolution <= MAX_RESOLUTION:
        raise ModelError(f"{model} works at 1..{MAX_RESOLUTION} pixels{per} here, got resolution {resolution}")


@contextlib.contextmanager
def quiet_libraries():
    """Silence diffusers', transformers' and huggingface_hub's warnings and progress bars (accelerate hints,
    "Loading weights" bars) while loading: the user sees our one line, or our results. Restored afterwards."""
    import diffusers.utils.logging as diffusers_logging
    import huggingface_hub.utils as hub_utils
    import transformers.utils.logging as transformers_logging

    levels = [(lib, lib.get_verbosity()) for lib in (diffusers_logging, transformers_logging)]
    bars = [(lib, lib.is_progress_bar_enabled()) for lib in (diffusers_logging, transformers_logging)]
    hub_bars = not hub_utils.are_progress_bars_disabled()
    for lib, _ in levels:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    hub_utils.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lib, level in levels:
            lib.set_verbosity(level)
        for lib, enabled in bars:
            if enabled:
                lib.enable_progress_bar()
        if hub_bars:
            hub_utils.enable_progress_bars()


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


HUB_TIMEOUT_S = 5.0  # seconds the hub has to answer the one request that tells whether it can be reached


def resolve_hub_id(model: str, components: tuple[str, ...] | None = ALL_COMPONENTS,
                   weighted: tuple[str, ...] = WEIGHTED_COMPONENTS) -> str | None:
    """Where hub id `model` ('owner/name') loads from, decided before diffusers asks the hub (which, with no
    network, retries for ~25 s, prints ten lines, then blames a missing config.json):
      - HF_HUB_OFFLINE set: its snapshot folder in the local Hugging Face cache;
      - else one request (HfApi.model_info, HUB_TIMEOUT_S): the hub answers -> None, load by id as usual (diffusers
        downloads what the cache lacks); the hub cannot be reached -> the cached snapshot folder.
    Raises a ModelError (one line: what failed and what to do) for an invalid id, an id the hub does not know,
    and a model neither reachable nor cached (or cached in part: without `components`, or safetensors in `weighted`;
    components None checks nothing in the copy, for a reader of one file such as layouts.model_index)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        RepositoryNotFoundError,
    )
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError as e:
        raise ModelError(f"could not load model '{model}': not a local folder, and not a hub id owner/name "
                         f"({str(e).splitlines()[0]})") from None
    download = f"download it where there is network (`hf download {model} --local-dir DIR`) and pass that folder"
    if _hub_offline():
        return _cached_snapshot(model, "HF_HUB_OFFLINE is set", f"unset HF_HUB_OFFLINE to download it, or {download}",
                                components, weighted)
    try:
        with quiet_libraries():
            HfApi().model_info(model, timeout=HUB_TIMEOUT_S)
    except RepositoryNotFoundError:
        raise ModelError(f"could not load model '{model}': the Hugging Face hub has no model '{model}' (or it is "
                         "private or gated: log in with `hf auth login`); check the id, or pass a local folder") \
            from None
    except HfHubHTTPError:
        return None  # the hub answers, with an error of its own: diffusers asks again and reports it
    except Exception as e:  # noqa: BLE001 - connection refused, DNS, timeout, proxy, TLS: the hub is out of reach
        detail = (str(e).strip().splitlines() or ["no detail"])[0]
        return _cached_snapshot(model, f"the Hugging Face hub cannot be reached ({type(e).__name__}: {detail})",
                                download, components, weighted)
    return None


def model_index(model: str) -> dict:
    """The model_index.json of a local diffusers folder or of a hub id, as a dict; {} where there is none
    (fsd2d.priors.layouts.folder_index). A hub id is resolved first (`resolve_hub_id`: its cached copy when the hub
    cannot be reached, a one-line ModelError when neither; the copy is checked by the backbone's loader against its
    own parts); when the hub answers, that one file is downloaded."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        cached = resolve_hub_id(model, components=None)
        if cached is None:
            try:
                from huggingface_hub import hf_hub_download

                with quiet_libraries():
                    cached = str(Path(hf_hub_download(model, "model_index.json",
                                                      local_files_only=_hub_offline())).parent)
            except Exception:  # noqa: BLE001 - the hub has no model_index.json for it: the loader says what is missing
                return {}
        folder = Path(cached)
    return folder_index(folder)


def backbone_of_model(model: str) -> Backbone:
    """The backbone of a --model string: a local folder (fsd2d.priors.layouts.backbone_of) or a hub id, by its
    model_index.json (`model_index`); a name or a missing folder is Stable Diffusion's, whose loader says what is
    wrong in its own words."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return backbone_of(folder)
    if "/" not in model or looks_like_path(model):
        return Backbone.STABLE_DIFFUSION
    return backbone_named(model_index(model).get("_class_name"), model)


def _cached_snapshot(model: str, why: str, advice: str, components: tuple[str, ...] | None,
                     weighted: tuple[str, ...]) -> str:
    """The snapshot folder of hub id `model` in the local Hugging Face cache, checked like a local folder; a
    ModelError ("could not load model: `why`, ...; `advice`") when it is not there or incomplete."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(model, local_files_only=True)
    except Exception:  # noqa: BLE001 - LocalEntryNotFoundError and kin: not in the cache
        raise ModelError(f"could not load model '{model}': {why}, and the local cache has no copy; {advice}") from None
    try:
        if components is not None:
            _check_folder(Path(folder), components, weighted)
    except ModelError as e:
        raise ModelError(f"could not load model '{model}': {why}, and its copy in the local cache is incomplete "
                         f"({e}); {advice}") from None
    return folder


def _pick_dtype(device: torch.device, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in ALLOWED_DTYPES:
        raise ModelError(f"dtype {dtype} is not supported; allowed: {[str(d) for d in ALLOWED_DTYPES]}")
    if device.type == "cpu" and dtype in HALF_DTYPES:
        raise ModelError(f"dtype {dtype} on CPU is unsupported or very slow; use torch.float32 on CPU")
    return dtype


def _check_folder(folder: Path, components: tuple[str, ...] = ALL_COMPONENTS,
                  weighted: tuple[str, ...] = WEIGHTED_COMPONENTS) -> None:
    """Fail early, naming the component, when a local model folder lacks a part or safetensors weights."""
    for component in components:
        if not (folder / component).is_dir():
            raise ModelError(
                f"model folder {folder} has no '{component}' subfolder "
                f"(expected the diffusers layout: {', '.join(c + '/' for c in components)})"
            )
    for component in weighted:
        if not any((folder / component).glob("*.safetensors")):
            raise ModelError(
                f"model folder {folder} has no safetensors weights for '{component}' "
                "(only .safetensors is loaded; convert .bin/.ckpt first)"
            )


def locate_model(model: str, components: tuple[str, ...] = ALL_COMPONENTS,
                 weighted: tuple[str, ...] = WEIGHTED_COMPONENTS) -> tuple[str, str, bool]:
    """(name, source, local) of a --model string: a local diffusers folder (checked: `components` present,
    safetensors in `weighted`), or a hub id resolved first (`resolve_hub_id`: the cache when the hub cannot be
    reached). `local`: load from disk only. Nothing touches the network for a folder or with HF_HUB_OFFLINE."""
    local = Path(model).expanduser().is_dir()
    if local:
        _check_folder(Path(model).expanduser(), components, weighted)
        model = str(Path(model).expanduser())
    elif looks_like_path(model):
        raise ModelError(f"model folder {model} does not exist (give a local diffusers folder or a hub id owner/name)")
    source = model if local else (resolve_hub_id(model, components, weighted) or model)  # the cache if hub is out
    return model, source, local or source != model


def load_parts(model: str, source: str, local: bool, parts: dict[str, type], dtype: torch.dtype) -> dict:
    """{subfolder: cls.from_pretrained(source, subfolder)} with every weight in `dtype` (safetensors only; a class
    without weights, a tokenizer, takes neither), each error one line naming `model`."""
    common = dict(local_files_only=local or _hub_offline())
    out = {}
    with quiet_libraries(), _one_line_errors(model, local):
        for sub, cls in parts.items():
            weighted = issubclass(cls, torch.nn.Module)
            extra = dict(use_safetensors=True, torch_dtype=dtype) if weighted else {}
            out[sub] = cls.from_pretrained(source, subfolder=sub, **common, **extra)
            if weighted and dtype == torch.float64 and any(p.dtype != dtype for p in out[sub].parameters()):
                out[sub] = out[sub].to(dtype)  # diffusers' transformers ignore torch_dtype=float64; in a half dtype
                # transformers keeps T5's `wo` layers in float32 (_keep_in_fp32_modules: float16 overflows there)
    return out


def text_placement(device: torch.device, dtype: torch.dtype,
                   text_device: str | torch.device | None) -> tuple[torch.device, torch.dtype]:
    """(device, dtype) of a prior's text encoders: the denoiser's by default; on another device (`text_device`
    "cpu" beside a GPU run, keeping T5 and kin off the GPU) in float32."""
    text_dev = torch.device(text_device) if text_device is not None else device
    return text_dev, (dtype if text_dev.type == device.type else torch.float32)


def scheduler_config_of(model: str, source: str, local: bool) -> dict:
    """The scheduler config of a diffusers folder (or hub id) as a dict (with its `_class_name`)."""
    common = dict(local_files_only=local or _hub_offline())
    with quiet_libraries(), _one_line_errors(model, local):
        return dict(DDIMScheduler.load_config(source, subfolder="scheduler", **common))


def load_stable_diffusion(
    model: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    resolution: int | None = None,
) -> StableDiffusionPrior:
    """Load an SD 1.x/2.x model from a local diffusers folder or a hub id (safetensors only).

    dtype defaults to float16 on CUDA and float32 elsewhere; resolution defaults to the UNet's native size.
    Nothing touches the network when `model` is a local folder or HF_HUB_OFFLINE is set; a hub id is resolved
    first (`resolve_hub_id`: the cache when the hub cannot be reached, else one line at once).
    """
    device = torch.device(device)
    dtype = _pick_dtype(device, dtype)
    check_resolution(resolution)
    model, source, local = locate_model(model)
    unet = load_parts(model, source, local, {"unet": UNet2DConditionModel}, dtype)["unet"]
    vae, text_encoder, tokenizer, scheduler_config = load_codec(source, dtype, local)
    return StableDiffusionPrior(
        unet.to(device), vae.to(device), text_encoder.to(device), tokenizer, scheduler_config, resolution, name=model
    )


@contextlib.contextmanager
def _one_line_errors(model: str, local: bool):
    """diffusers/transformers/hub raise many types while loading; the user needs one line (a ModelError)."""
    try:
        yield
    except Exception as error:
        lines = str(error).strip().splitlines() or [type(error).__name__]
        hint = " (HF_HUB_OFFLINE is set: only the local cache is searched)" if _hub_offline() and not local else ""
        raise ModelError(f"could not load model '{model}': {lines[0]}{hint}") from error


def load_codec(model: str, dtype: torch.dtype, local: bool) -> tuple[AutoencoderKL, CLIPTextModel, CLIPTokenizer, dict]:
    """The components every latent prior here shares, from a diffusers folder (or hub id): the VAE, the CLIP
    text encoder (safetensors, in `dtype`), the tokenizer and the scheduler config. Errors are one line."""
    parts = load_parts(model, model, local, {"vae": AutoencoderKL, "text_encoder": CLIPTextModel,
                                             "tokenizer": CLIPTokenizer}, dtype)
    return parts["vae"], parts["text_encoder"], parts["tokenizer"], scheduler_config_of(model, model, local)
