"""What a method costs, measured where it runs, so that diversity is always read against cost (the paper's claim:
FSD's diversity at SDS's cost; VSD's cost grows with its particles).

A `Cost` is one method's run on B rows (seeds) for N steps:
    prior evaluations   samples the denoiser evaluated (a batched call of n samples counts n; CFG's [uncond; cond]
                        stack counts 2 per row): counted at the prior's `eps`, whatever called it (`counted`);
    seconds             wall time of the run (with CUDA, synchronised at the end), and per step the median time
                        between consecutive steps (`tick`, a step callback): one-time costs (the optimiser's
                        first use, lazy imports) count in the total, not in the step;
    peak memory         CUDA's peak allocated bytes during the run; None on the CPU (not measured there);
    trained parameters  network parameters the method trains beside its image or scene (0 for every method that
                        only reads the prior; a LoRA's for VSD).
`metered(device)` times a block, `counted(prior, meter)` counts the evaluations inside it (in 3D, of each step's
view prior). In 3D a 4-view MVDream set is one sample of its multi-view prior.
`record()` gives metrics.json's per-step form: evaluations per step and row, seconds per step.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Iterator

import torch

from fsd2d.priors.base import Prior

GIB = 2**30


@dataclass
class Meter:
    """Counts filled in while `metered` is open; `cost(steps, rows)` reads them once it has closed."""

    evaluations: int = 0
    seconds: float = 0.0
    peak_memory_bytes: int | None = None
    ticks: list[float] = field(default_factory=list)  # perf_counter() at the end of each step (`tick`)
    seed_steps: int = 0  # steps times the rows they advanced, where a loop counts them (3D: a resumed seed joins late)

    def tick(self, *_) -> None:
        """Call at the end of each step (it takes and ignores a callback's argument, fsd2d.sampling.StepInfo)."""
        self.ticks.append(time.perf_counter())

    def cost(self, steps: int, rows: int, trained_parameters: int = 0) -> "Cost":
        """The Cost of `steps` steps of `rows` rows (seed_steps, where a loop counted them, replaces steps x rows);
        `trained_parameters`: what each row's run trains besides its image or scene (VSD's critic)."""
        gaps = sorted(b - a for a, b in zip(self.ticks, self.ticks[1:]))
        step = gaps[len(gaps) // 2] if gaps else self.seconds / steps  # the median step, else the mean
        return Cost(self.evaluations, self.seconds, steps, rows, self.peak_memory_bytes, step,
                    self.seed_steps or steps * rows, trained_parameters)


@dataclass(frozen=True)
class Cost:
    """One method's run: its totals over `steps` steps of `rows` rows (module docstring)."""

    evaluations: int
    seconds: float
    steps: int
    rows: int
    peak_memory_bytes: int | None
    seconds_per_step: float  # the median step (Meter.tick), else seconds / steps
    seed_steps: int  # rows x steps actually advanced (steps x rows unless a resumed seed joined late)
    trained_parameters: int = 0  # per run (seed), besides its image or scene: VSD / ESD's critic

    def record(self) -> dict:
        """metrics.json's form: per step (and per row for the evaluations), memory in GiB (None on the CPU)."""
        return {
            "prior_evaluations_per_step": self.evaluations / self.seed_steps,
            "seconds_per_step": self.seconds_per_step,
            "seconds": self.seconds,
            "peak_memory_gib": None if self.peak_memory_bytes is None else self.peak_memory_bytes / GIB,
            "trained_parameters": self.trained_parameters,
        }


@contextlib.contextmanager
def metered(device: torch.device, meter: Meter | None = None) -> Iterator[Meter]:
    """Time the block (and its CUDA peak memory on a CUDA `device`, synchronised at both ends) into a new Meter, or
    add to `meter` (its seconds summed, its peak the larger); evaluations are counted where the prior is called
    (`counted`)."""
    meter = Meter() if meter is None else meter
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        yield meter
    finally:
        if cuda:
            torch.cuda.synchronize(device)
            meter.peak_memory_bytes = max(meter.peak_memory_bytes or 0, int(torch.cuda.max_memory_allocated(device)))
        meter.seconds += time.perf_counter() - start


@contextlib.contextmanager
def counted(prior: Prior, meter: Meter) -> Iterator[Meter]:
    """Add `prior`'s evaluations in the block to `meter.evaluations`: `prior.eps` is wrapped for the block's
    duration (an instance attribute over the class's method, removed on exit, so the prior is as before; nested
    counts each count). Nothing waits for the device."""
    inner = prior.__dict__.get("eps")  # an outer count's wrapper, or None: the class's method

    def counting_eps(x_t: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        meter.evaluations += int(x_t.shape[0])
        return (inner or type(prior).eps.__get__(prior))(x_t, *args, **kwargs)

    prior.eps = counting_eps
    try:
        yield meter
    finally:
        if inner is None:
            del prior.eps
        else:
            prior.eps = inner
