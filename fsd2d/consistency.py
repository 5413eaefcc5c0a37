"""`fsd consistency`: how much the one-step estimate x_gt (Eq. 8) moves between consecutive steps
under FSD and under SDS with the same linear annealing and CFG (the paper's Fig. 4).

FSD keeps its noise, so x_gt evolves smoothly; SDS draws a new noise every step, so x_gt jumps.
Distances are RMSE in the prior's working space (pixels in [-1, 1] for analytic priors, latents for SD).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from fsd2d import metrics  # noqa: E402
from fsd2d.errors import InputError  # noqa: E402
from fsd2d.figures import image_grid, save_figure  # noqa: E402
from fsd2d.io import atomic_output_dir, run_record, write_json  # noqa: E402
from fsd2d.folders import CONSISTENCY, Layout, claim  # noqa: E402
from fsd2d.priors.base import Prior  # noqa: E402
from fsd2d.sampling import Method, StepInfo, sample  # noqa: E402
from fsd2d.study import StudyConfig  # noqa: E402

__all__ = ["ConsistencyConfig", "x_gt_consistency"]

METHODS = (Method.FSD, Method.SDS_ANNEALED)  # same annealing, optimiser and CFG: only the noise differs


@dataclass(frozen=True)
class ConsistencyConfig(StudyConfig):
    LAYOUT: ClassVar[Layout] = CONSISTENCY

    window: int = 6  # consecutive steps shown in the strip, centred on the middle of the run
    show_seed: int | None = None  # which seed the strip shows (default: the first)

    def write_study(self, prior: Prior, out: Path, progress: bool = False) -> dict:
        return x_gt_consistency(prior, self, out, progress=progress)

    def validate(self) -> None:
        super().validate()
        if not 2 <= self.window <= self.steps:
            raise InputError(f"window must be in [2, steps={self.steps}], got {self.window}")
        if self.show_seed is not None and self.show_seed not in self.seeds:
            raise InputError(f"show-seed {self.show_seed} is not among the seeds {list(self.seeds)}")

    def window_steps(self) -> range:
        start = max(0, self.steps // 2 - self.window // 2)
        return range(start, start + self.window)


@dataclass
class Trace:
    """Per step: RMSE [B] between x_gt and the previous step's x_gt; the window's x_gt and theta."""

    step_rmse: list[torch.Tensor]
    x_gt: list[torch.Tensor]
    theta: list[torch.Tensor]


def trace_method(prior: Prior, config: ConsistencyConfig, method: Method, progress: bool) -> Trace:
    trace, prev = Trace([], [], []), {}
    window = config.window_steps()

    def record(s: StepInfo) -> None:
        if "x" in prev:
            trace.step_rmse.append((s.x_gt - prev["x"]).flatten(1).pow(2).mean(1).sqrt().cpu())
        prev["x"] = s.x_gt
        if s.step in window:
            trace.x_gt.append(s.x_gt.cpu())
            trace.theta.append(s.theta.cpu())

    sample(prior, config.guidance(prior), method, config.seeds, config.distill_base(), callback=record,
           progress=progress)
    return trace


def x_gt_consistency(prior: Prior, config: ConsistencyConfig, out: Path, progress: bool = False) -> dict:
    """Run FSD and SDS-annealed, write strip.png, curve.png, metrics.json and run.json to `out`."""
    config.validate()
    claim(out, CONSISTENCY)
    start = time.perf_counter()
    traces = {m: trace_method(prior, config, m, progress) for m in METHODS}
    window = config.window_steps()
    summary = {"seeds": list(config.seeds), "window_steps": list(window), "methods": {}}
    for m, tr in traces.items():
        rmse = torch.stack(tr.step_rmse)  # [steps - 1, B]; row i: step i+1 vs step i
        in_window = rmse[window.start : window.stop - 1]  # consecutive pairs inside the window
        summary["methods"][m.value] = {
            "mean_consecutive_rmse_window": float(in_window.mean()),
            "mean_consecutive_rmse_run": float(rmse.mean()),
            "per_seed_window": [{"seed": s, "rmse": float(v)} for s, v in zip(config.seeds, in_window.mean(0))],
        }
    fsd, sds = (summary["methods"][m.value]["mean_consecutive_rmse_window"] for m in METHODS)
    summary["ratio_sds_over_fsd"] = sds / fsd if fsd > 0 else float("inf")
    summary["seconds"] = time.perf_counter() - start

    b = config.seeds.index(config.show_seed) if config.show_seed is not None else 0
    with torch.no_grad():
        rows, labels = [], []
        for m, tr in traces.items():
            for name, seq in (("result", tr.theta), ("x_gt", tr.x_gt)):
                rows.append(metrics.to_hwc(prior.decode(torch.stack([x[b] for x in seq]).to(prior.device)).float()))
                labels.append(f"{m.value}\n{name}")
    with atomic_output_dir(out, CONSISTENCY) as tmp:
        image_grid(tmp / "strip.png", rows, labels, [f"step {i}" for i in window],
                   title=f"'{config.prompt}', seed {config.seeds[b]}: results and x_gt at consecutive steps")
        plot_curves(tmp / "curve.png", traces, window)
        write_json(tmp / "metrics.json", summary)
        write_json(tmp / "run.json", run_record("consistency", config, config.run_extras(
            prior, {m.value: m.config(config.distill_base()) for m in METHODS})))
    return summary


def plot_curves(path: Path, traces: dict[Method, Trace], window: range) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for m, tr in traces.items():
        rmse = torch.stack(tr.step_rmse)  # [steps - 1, B]
        steps = range(1, rmse.shape[0] + 1)
        ax.plot(steps, rmse.mean(1), label=m.value)
        ax.fill_between(steps, rmse.min(1).values, rmse.max(1).values, alpha=0.2)
    ax.axvspan(window.start, window.stop - 1, color="grey", alpha=0.15, label="strip window")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("RMSE(x_gt[step], x_gt[step - 1])")
    ax.set_title("How far x_gt moves per step (mean over seeds, band = min..max)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
