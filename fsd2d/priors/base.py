"""The prior interface: one small contract that every backend (analytic, local, Stable Diffusion) implements.

Tensors that enter here:
    x_t  [B, C, h, w]  noisy sample in the prior's working space (pixels in [-1, 1] scaled by alpha_t plus
                       noise for analytic priors; the VAE latent for Stable Diffusion), channels-first.
    t    [B]           integer timesteps in {0, ..., T-1} of `prior.schedule`.
    cond [B, ...]      prompt embeddings from `prior.encode_prompt` (first dim 1 per prompt, expanded per sample).
    images             [B, 3, H, W] RGB in [0, 1], channels-first (what `decode` returns, `encode` takes).
"""
from __future__ import annotations

import abc
from collections.abc import Sequence

import torch

from fsd2d.errors import InputError, ModelError  # noqa: F401 (ModelError: re-exported)
from fsd2d.schedule import NoiseSchedule


class PromptError(InputError):
    """A prompt the prior does not know (the message lists the ones it does)."""


def _prompt_key(text: str) -> str:
    return text.strip().casefold()


def match_prompt(prompt: str, prompts: Sequence[str], view_suffixes: Sequence[str] = (), *, empty: bool = True,
                 known_by: str = "this prior") -> str:
    """THE prompt rule of every prior with a closed list of prompts (imageset, patches, references,
    references-local, the trained models; Stable Diffusion and MVDream folders without a card take any text).

    A prompt is a known one when the two are equal once surrounding whitespace is stripped and case is ignored
    (str.casefold): 'Cat', ' cat ' and 'CAT' are 'cat'; 'a cat' and 'cats' are not. Where `empty`, '' (or only
    whitespace) is the unconditional prompt. With `view_suffixes` (a trained objects model's captions
    '<prompt>, <suffix>'), a prompt may also end in ',' and a suffix, each part matched by the same rule
    ('Mushroom , Front View' is 'mushroom, front view').
    Returns the known spelling ('cat', 'mushroom, front view'; '' for the unconditional prompt). Anything else is
    a PromptError that quotes the prompt as it was given (gen-3d checks its prompt before adding view suffixes,
    fsd3d.priors3d) and lists what `known_by` knows."""
    known = {_prompt_key(p): p for p in prompts}
    head, comma, tail = prompt.rpartition(",")
    suffixes = {_prompt_key(s): s for s in view_suffixes}
    if comma and _prompt_key(tail) in suffixes:
        if _prompt_key(head) in known:
            return f"{known[_prompt_key(head)]}, {suffixes[_prompt_key(tail)]}"
        unknown = prompt
    elif _prompt_key(prompt) in known:
        return known[_prompt_key(prompt)]
    elif empty and _prompt_key(prompt) == "":
        return ""
    else:
        unknown = prompt
    quoted = [f"', {s}'" for s in view_suffixes]  # ', front view', ', side view' or ', back view'
    either = ", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else "".join(quoted)
    views = f", each alone or with {either}" if quoted else ""
    unconditional = " (and '' = unconditional)" if empty else ""
    raise PromptError(f"unknown prompt {unknown!r}; {known_by} knows: {', '.join(prompts)}{views}{unconditional}")


class Prior(abc.ABC):
    """A text-conditioned noise predictor eps_phi(x_t | y, t) with its schedule and codec."""

    schedule: NoiseSchedule
    device: torch.device
    dtype: torch.dtype  # the working dtype of x_t and eps
    card: dict | None = None  # a trained model's card (fsd2d.priors.trained: dataset, world, prompts), else None
    # a guidance-distilled model (FLUX.1-dev): the guidance scale is an input of one conditional call,
    # eps(x_t, t, cond, guidance=scale), not classifier-free guidance (fsd2d.guidance.predict_eps)
    embeds_guidance: bool = False

    @property
    @abc.abstractmethod
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the working space for this prior's resolution."""

    @property
    @abc.abstractmethod
    def resolution(self) -> int:
        """Side of the square RGB images that `decode` returns."""

    @property
    def default_cfg(self) -> float:
        """The guidance scale used when the user gives none (standard form, see guidance.cfg_combine)."""
        return 7.5

    @abc.abstractmethod
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """Conditioning for one prompt, [1, ...]. The empty prompt is the unconditional model."""

    @abc.abstractmethod
    def eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Unguided noise prediction eps_phi(x_t | cond, t): [B, C, h, w] from x_t [B, C, h, w], t [B], cond [B, ...]."""

    @abc.abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Working space [B, C, h, w] -> RGB images [B, 3, H, W] in [0, 1] (clamped)."""

    @abc.abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """RGB images [B, 3, H, W] in [0, 1] -> working space [B, C, h, w]."""

    def speed_up(self, compile: bool = False) -> None:
        """Switch on the backend's GPU fast paths (channels-last, torch.compile) where it has any; none here."""

    def describe(self) -> dict:
        """What run.json records about this prior."""
        return {"class": type(self).__name__, "resolution": self.resolution, "latent_shape": list(self.latent_shape)}


class PixelPrior(Prior):
    """An embedded prior whose working space is the image itself: pixels in [-1, 1], [B, 3, R, R].

    Subclasses set `_resolution`. Analytic priors need no guidance to produce their prompts' images, so
    the default CFG scale is 1 (the plain conditional model).
    """

    _resolution: int

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (3, self._resolution, self._resolution)

    @property
    def resolution(self) -> int:
        return self._resolution

    @property
    def default_cfg(self) -> float:
        return 1.0

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return ((z + 1.0) / 2.0).clamp(0.0, 1.0)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images * 2.0 - 1.0
