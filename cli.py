"""The `fsd` command line (typer). Bad input: one line on stderr, exit code 2, nothing written."""
from __future__ import annotations

import functools
import re
import sys
from pathlib import Path
from typing import Callable

import typer

from fsd2d.errors import InputError

app = typer.Typer(
    help="Flow Score Distillation toolkit: DDIM vs FSD vs SDS in 2D, on an embedded exact prior or Stable Diffusion.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

MODEL_HELP = "Prior: built-in 'imageset' (no download), a local diffusers folder, or a hub id (honours HF_HUB_OFFLINE)."


def user_errors(fn: Callable) -> Callable:
    """Turn InputError into `error: ...` on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0-3' -> (0, 1, 2, 3); '0,2,5' -> (0, 2, 5); mixes like '0-3,8' too. Order kept, repeats dropped."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise InputError(f"bad --seeds {text!r}: use non-negative integers like '0-3', '0,2,5' or '0-3,8'")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        seeds.extend(range(lo, hi + 1))
    return tuple(dict.fromkeys(seeds))


def parse_enum(text: str, enum_cls, flag: str):
    """One value of a str Enum, or an InputError listing the allowed values."""
    allowed = [e.value for e in enum_cls]
    if text.strip() not in allowed:
        raise InputError(f"unknown {flag} value {text.strip()!r}; allowed: {', '.join(allowed)}")
    return enum_cls(text.strip())


def parse_enum_list(text: str, enum_cls, flag: str) -> tuple:
    return tuple(parse_enum(part, enum_cls, flag) for part in text.split(","))


@app.command()
@user_errors
def prompts(model: str = typer.Option("imageset", help="Built-in prior whose prompts to list.")):
    """List the prompts of a built-in prior (Stable Diffusion takes any text)."""
    from fsd2d.priors.load import BuiltinPrior

    if model != BuiltinPrior.IMAGESET.value:
        raise InputError(f"--model {model!r}: only built-in priors have a prompt list ({BuiltinPrior.IMAGESET.value})")
    from fsd2d.priors.imageset import DEFAULT_CROPS, PROMPTS

    typer.echo(f"prompts of the built-in '{model}' prior ({DEFAULT_CROPS} crops each; '' = all of them):")
    for name, src in PROMPTS.items():
        typer.echo(f"  {name:<10} {src.description}  [skimage.data.{src.loader}]")


@app.command("compare-2d")
@user_errors
def compare_2d(
    prompt: str = typer.Option("cat", help="Text prompt (see `fsd prompts` for the built-in prior)."),
    negative_prompt: str = typer.Option("", help="Negative prompt for CFG ('' = unconditional)."),
    seeds: str = typer.Option("0-7", help="Seeds, like '0-3' or '0,2,5'. Same seeds in every row."),
    methods: str = typer.Option(
        "ddim,fsd,fsd-exact,sds", help="Comma list from ddim, fsd, fsd-exact, sds, sds-annealed (ddim always runs)."
    ),
    steps: int = typer.Option(300, help="Optimisation steps (= DDIM steps)."),
    cfg: float = typer.Option(None, help="CFG scale, standard form (1 = none). Default: 1 analytic, 7.5 SD."),
    beta: float = typer.Option(1.0, help="FSD noise blend sqrt(b)*fixed + sqrt(1-b)*fresh, in [0, 1]."),
    t_min: int = typer.Option(20, help="Smallest timestep of the schedule."),
    t_max: int = typer.Option(980, help="Largest timestep of the schedule."),
    anneal: str = typer.Option("linear", help="Shape of t(tau): linear, sqrt or piecewise."),
    lr: float = typer.Option(None, help="Adam learning rate (default 2.5 / steps, as the authors' 2.5e-3 x 1000)."),
    model: str = typer.Option("imageset", help=MODEL_HELP),
    resolution: int = typer.Option(None, help="Image side in pixels (default: the prior's own, 32 analytic)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    dtype: str = typer.Option("auto", help="auto (float64 analytic; fp16 CUDA / fp32 CPU for SD), float64, float32, ..."),
    out: Path = typer.Option(Path("outputs/compare-2d"), help="Output folder (replaced only when the run succeeds)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
):
    """Same seeds through DDIM, FSD and SDS (paper Fig. 3): grid.png, images/, metrics.json, run.json."""
    from fsd2d.compare import Compare2DConfig, compare_2d as run
    from fsd2d.priors.load import load_prior
    from fsd2d.sampling import Method
    from fsd2d.schedule import Anneal

    config = Compare2DConfig(
        prompt=prompt,
        negative_prompt=negative_prompt,
        seeds=parse_seeds(seeds),
        methods=parse_enum_list(methods, Method, "--methods"),
        steps=steps,
        cfg=cfg,
        beta=beta,
        t_min=t_min,
        t_max=t_max,
        anneal=parse_enum(anneal, Anneal, "--anneal"),
        lr=lr,
        model=model,
        device=device,
        dtype=dtype,
        resolution=resolution,
    )
    config.distill_base()  # check steps, beta, t range and lr before loading anything
    if cfg is not None:
        from fsd2d.guidance import check_cfg

        check_cfg(cfg)
    prior = load_prior(model, device, dtype, resolution)
    summary = run(prior, config, out, progress=progress)
    print_summary(summary)
    typer.echo(f"wrote {out}/ (grid.png, images/, metrics.json, run.json) in {summary['seconds']:.1f} s")


def print_summary(summary: dict) -> None:
    has_modes = "reached_psnr_db" in summary  # analytic priors only
    head = f"{'method':<13}{'PSNR vs DDIM':>13}{'SSIM vs DDIM':>13}{'diversity':>11}"
    head += f"{'modes reached':>15}" if has_modes else ""
    typer.echo(head)
    for name, m in summary["methods"].items():
        line = f"{name:<13}{m['mean_psnr_to_ddim']:>13.2f}{m['mean_ssim_to_ddim']:>13.3f}{m['diversity']:>11.3f}"
        if has_modes:
            line += f"{m['modes_reached']:>9d} / {len(summary['seeds'])}"
        typer.echo(line)


def main() -> None:
    app(prog_name="fsd")


if __name__ == "__main__":
    sys.exit(main())
