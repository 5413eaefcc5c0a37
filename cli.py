"""The `fsd` command line (typer). Bad input: one line on stderr, exit code 2, nothing written."""
from __future__ import annotations

import contextlib
import functools
import shlex
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from fsd2d.errors import InputError
from fsd2d.flags import parse_enum
from fsd2d.models import models_summary

app = typer.Typer(
    help="Flow Score Distillation toolkit: DDIM vs FSD vs SDS in 2D, FSD/SDS on 3D Gaussian Splatting; "
    "embedded exact priors (no download) or Stable Diffusion.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

MODEL_HELP = ("Prior: built-in 'imageset' or 'patches' (no download), the trained 'tiny-sd' (Stable Diffusion trained "
              "here on the pictures' crops), a local diffusers folder (Stable Diffusion, "
              "or MVDream's conversion: one sample = 4 views), or a hub id (honours HF_HUB_OFFLINE).")


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


@contextlib.contextmanager
def resume_hint(command: str, checkpoints: Callable[[], list[Path]], cadence: str):
    """Ctrl-C inside `command`: say where the checkpoints are (`checkpoints()` lists them when the interrupt comes)
    and how to continue (the command line with --resume when `fsd command` was typed; `fsd batch`, which calls the
    command itself, resumes its runs by itself), then exit with 130."""
    try:
        yield
    except KeyboardInterrupt:
        found = checkpoints()
        where = (f"{len(found)} checkpoint(s), written {cadence}: {', '.join(map(str, found[:4]))}"
                 + (", ..." if len(found) > 4 else "")) if found else f"no checkpoint yet (they are written {cadence})"
        if sys.argv[1:2] == [command]:
            args = sys.argv[1:] + ([] if "--resume" in sys.argv else ["--resume"])
            again = f"continue with: fsd {shlex.join(args)}"
        else:
            again = "continue with the same command (`fsd batch` resumes its runs by itself)"
        typer.echo(f"interrupted: {where}; {again}" if found else f"interrupted: {where}", err=True)
        raise typer.Exit(130) from None


@app.command()
@user_errors
def prompts(model: str = typer.Option("imageset", help=f"A registered model ({models_summary()}), or a folder made "
                                                        "by `fsd train-prior`.")):
    """List the prompts of a built-in prior or a trained model (Stable Diffusion takes any text). Prompts match
    ignoring case and surrounding spaces ('Cat ' is 'cat')."""
    from fsd2d.models import prompt_list

    for line in prompt_list(model).lines():
        typer.echo(line)


# Options shared by the 2D studies: declared once, used by every command below.
Prompt = Annotated[str, typer.Option(help="Text prompt (see `fsd prompts` for the built-in priors).")]
NegativePrompt = Annotated[str, typer.Option(help="Negative prompt for CFG ('' = unconditional).")]
Seeds = Annotated[str, typer.Option(help="Seeds, like '0-3' or '0,2,5'. The same seed gives the same noise.")]
Steps = Annotated[int, typer.Option(help="Optimisation steps (= DDIM steps).")]
Cfg = Annotated[Optional[float], typer.Option(help="CFG scale, standard form (1 = none). Default: 1 analytic, 7.5 SD.")]
Beta = Annotated[float, typer.Option(help="FSD noise blend sqrt(b)*fixed + sqrt(1-b)*fresh, in [0, 1].")]
TMin = Annotated[int, typer.Option(help="Smallest timestep of the schedule.")]
TMax = Annotated[int, typer.Option(help="Largest timestep of the schedule.")]
AnnealOpt = Annotated[str, typer.Option("--anneal", help="Shape of t(tau): linear, sqrt (HiFA), piecewise (ours: half the "
                                                    "range in the first fifth), dreamtime (DreamTime's time-prioritised "
                                                    "W(t)), authors-sd or authors-mvdream (the authors' 3D schedules: "
                                                    "knots 0.3 / 0.6 / 0.8, t ends at 212).")]
Lr = Annotated[Optional[float], typer.Option(help="Adam learning rate (default 2.5 / steps, as the authors' 2.5e-3 x 1000).")]
Model = Annotated[str, typer.Option(help=MODEL_HELP)]
Resolution = Annotated[Optional[int], typer.Option(
    help="Image side in pixels (default: the prior's own, 32 analytic; MVDream: one view's side, 256).")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
Dtype = Annotated[str, typer.Option(help="auto (float64 analytic; fp16 CUDA / fp32 CPU for SD), float64, float32, ...")]
Progress = Annotated[bool, typer.Option(help="Show progress bars.")]


def config_options(values: dict) -> dict:
    """A command's options by their Python names, less out, resume and progress: what its config's `from_flags`
    takes (it parses and types them; the config validates them). Call as `config_options(locals())`, the command's
    first statement."""
    return {name: value for name, value in values.items() if name not in ("out", "resume", "progress")}


# Options of the score-distillation family (fsd2d.family): compare-2d and gen-3d.
IsmInterval = Annotated[int, typer.Option(help="ISM: interval t - s between its two points (LucidDreamer: 25).")]
IsmStride = Annotated[int, typer.Option(help="ISM: timesteps per DDIM inversion step from 0 up to s.")]
IsmInversionSteps = Annotated[int, typer.Option(help="ISM: most DDIM inversion steps up to s (start = max(s - n*stride, 0)).")]
SdiInversionSteps = Annotated[int, typer.Option(help="SDI: DDIM inversion grid of 1000/n timesteps from the clean image to t.")]
SdiInversionCfg = Annotated[Optional[float], typer.Option(
    help="SDI: CFG of the inversion, standard form, may be negative (SDI paper: -7.5). Default: --cfg.")]
SdiEta = Annotated[float, typer.Option(help="SDI: DDIM-eta noise per inversion step, in [0, 1] (threestudio: 0.3).")]
# The diversity rivals (fsd2d.vsd, fsd2d.dsd)
Particles = Annotated[int, typer.Option(help="VSD / ESD: particles per seed sharing one LoRA critic (ProlificDreamer's "
                                             "particles; each seed is its own run).")]
LoraRank = Annotated[int, typer.Option(help="VSD / ESD: LoRA rank of the critic (threestudio: 4).")]
LoraLr = Annotated[float, typer.Option(help="VSD / ESD: the critic's AdamW learning rate (threestudio: 1e-4).")]
EsdLambda = Annotated[float, typer.Option(help="ESD: entropy weight lambda in [0, 1]; the critic's camera CFG is "
                                               "1 - lambda (ESD's README: 0.5).")]
DsdPoints = Annotated[int, typer.Option(help="DSD: points of its coarse ODE grid linspace(999, 0, n) (theirs: 11).")]


@app.command("compare-2d")
@user_errors
def compare_2d(
    prompt: Prompt = "cat",
    negative_prompt: NegativePrompt = "",
    seeds: Seeds = "0-7",
    methods: Annotated[str, typer.Option(
        help="Comma list from ddim, fsd, fsd-exact, sds, sds-annealed, the family ism, sdi, csd, nfsd and the "
             "diversity rivals vsd, esd, dsd (ddim always runs).")] = "ddim,fsd,fsd-exact,sds",
    steps: Steps = 300, cfg: Cfg = None, beta: Beta = 1.0, t_min: TMin = 20, t_max: TMax = 980,
    anneal: AnnealOpt = "linear", lr: Lr = None, model: Model = "imageset", resolution: Resolution = None,
    device: Device = "auto", dtype: Dtype = "auto",
    out: Annotated[Path, typer.Option(help="Output folder (replaced only when the run succeeds).")] = Path(
        "outputs/compare-2d"),
    ism_interval: IsmInterval = 25, ism_stride: IsmStride = 200, ism_inversion_steps: IsmInversionSteps = 5,
    sdi_inversion_steps: SdiInversionSteps = 10, sdi_inversion_cfg: SdiInversionCfg = None, sdi_eta: SdiEta = 0.3,
    particles: Particles = 1, lora_rank: LoraRank = 4, lora_lr: LoraLr = 1e-4, esd_lambda: EsdLambda = 0.5,
    dsd_points: DsdPoints = 11,
    progress: Progress = True,
):
    """Same seeds through DDIM, FSD and SDS (paper Fig. 3), or ISM/SDI/CSD/NFSD and VSD/ESD/DSD: grid.png, images/,
    metrics.json (with particles: particles_<method>.png)."""
    options = config_options(locals())
    from fsd2d.compare import Compare2DConfig
    from fsd2d.study import run_study

    summary = run_study(Compare2DConfig.from_flags(**options), out, progress)
    print_summary(summary)
    typer.echo(f"wrote {out}/ (grid.png, images/, metrics.json, run.json) in {summary['seconds']:.1f} s")


@app.command("shuffle-noise")
@user_errors
def shuffle_noise(
    prompt: Prompt = "brick",
    negative_prompt: NegativePrompt = "",
    seeds: Seeds = "0-3",
    grid: Annotated[int, typer.Option(help="Cut the noise into grid x grid patches (must divide its size).")] = 4,
    permutation: Annotated[str, typer.Option(help="random, reverse, transpose or shift.")] = "random",
    perm_seed: Annotated[int, typer.Option(help="Seed of the random permutation.")] = 0,
    frames: Annotated[int, typer.Option(help="Corresponding patches framed in colour in the figure (0 = none).")] = 4,
    steps: Steps = 300, cfg: Cfg = None, beta: Beta = 1.0, t_min: TMin = 20, t_max: TMax = 980,
    anneal: AnnealOpt = "linear", lr: Lr = None, model: Model = "patches", resolution: Resolution = None,
    device: Device = "auto", dtype: Dtype = "auto",
    out: Annotated[Path, typer.Option(help="Output folder (replaced only when the run succeeds).")] = Path(
        "outputs/shuffle-noise"),
    progress: Progress = True,
):
    """FSD from a noise and from a patch-shuffled copy (paper Fig. 5): shuffle.png, metrics.json, run.json."""
    options = config_options(locals())
    from fsd2d.shuffle_study import ShuffleConfig
    from fsd2d.study import run_study

    s = run_study(ShuffleConfig.from_flags(**options), out, progress)
    typer.echo(f"{'seed':>6}{'corr permuted':>15}{'corr control':>14}")
    for p in s["per_seed"]:
        typer.echo(f"{p['seed']:>6}{p['corr_permuted']:>15.3f}{p['corr_control']:>14.3f}")
    typer.echo(f"{'mean':>6}{s['mean_corr_permuted']:>15.3f}{s['mean_corr_control']:>14.3f}")
    typer.echo(f"wrote {out}/ (shuffle.png, metrics.json, run.json) in {s['seconds']:.1f} s")


@app.command("consistency")
@user_errors
def consistency(
    prompt: Prompt = "cat",
    negative_prompt: NegativePrompt = "",
    seeds: Seeds = "0-7",
    window: Annotated[int, typer.Option(help="Consecutive steps shown, centred on the middle of the run.")] = 6,
    show_seed: Annotated[Optional[int], typer.Option(help="Seed shown in the strip (default: the first).")] = None,
    steps: Steps = 300, cfg: Cfg = None, beta: Beta = 1.0, t_min: TMin = 20, t_max: TMax = 980,
    anneal: AnnealOpt = "linear", lr: Lr = None, model: Model = "imageset", resolution: Resolution = None,
    device: Device = "auto", dtype: Dtype = "auto",
    out: Annotated[Path, typer.Option(help="Output folder (replaced only when the run succeeds).")] = Path(
        "outputs/consistency"),
    progress: Progress = True,
):
    """How much x_gt moves per step under FSD vs SDS (paper Fig. 4): strip.png, curve.png, metrics.json."""
    options = config_options(locals())
    from fsd2d.consistency import ConsistencyConfig
    from fsd2d.study import run_study

    s = run_study(ConsistencyConfig.from_flags(**options), out, progress)
    typer.echo(f"{'method':<14}{'x_gt RMSE/step, window':>24}{'whole run':>12}")
    for name, m in s["methods"].items():
        typer.echo(f"{name:<14}{m['mean_consecutive_rmse_window']:>24.3g}{m['mean_consecutive_rmse_run']:>12.3g}")
    typer.echo(f"wrote {out}/ (strip.png, curve.png, metrics.json, run.json) in {s['seconds']:.1f} s")


@app.command("beta-sweep")
@user_errors
def beta_sweep(
    prompt: Prompt = "cat",
    negative_prompt: NegativePrompt = "",
    seeds: Seeds = "0-7",
    betas: Annotated[str, typer.Option(help="Comma list of beta values in [0, 1].")] = "0,0.25,0.5,0.75,1",
    steps: Steps = 300, cfg: Cfg = None, t_min: TMin = 20, t_max: TMax = 980,
    anneal: AnnealOpt = "linear", lr: Lr = None, model: Model = "imageset", resolution: Resolution = None,
    device: Device = "auto", dtype: Dtype = "auto",
    out: Annotated[Path, typer.Option(help="Output folder (replaced only when the run succeeds).")] = Path(
        "outputs/beta-sweep"),
    progress: Progress = True,
):
    """FSD with noise blend beta (paper Fig. 8 in 2D): beta_sweep.png, grid.png, table.csv, metrics.json."""
    options = config_options(locals())
    from fsd2d.beta_sweep import BetaSweepConfig
    from fsd2d.study import run_study

    s = run_study(BetaSweepConfig.from_flags(**options), out, progress)
    has_modes = "modes_reached" in s["rows"][0]
    typer.echo(f"{'beta':>6}{'diversity':>11}{'PSNR vs DDIM':>14}{'SSIM vs DDIM':>14}" + ("  modes" if has_modes else ""))
    for r in s["rows"]:
        line = f"{r['beta']:>6g}{r['diversity']:>11.3f}{r['mean_psnr_to_ddim']:>14.2f}{r['mean_ssim_to_ddim']:>14.3f}"
        typer.echo(line + (f"{r['modes_reached']:>7d}" if has_modes else ""))
    typer.echo(f"wrote {out}/ (beta_sweep.png, grid.png, table.csv, metrics.json, run.json) in {s['seconds']:.1f} s")


@app.command("train-prior", help=(
    "Train a tiny Stable Diffusion (or MVDream, for objects-mv; or Stable Diffusion 3 with --arch sd3) on an "
    "embedded world, in the diffusers layout.\n\n"
    "The defaults make the shipped built-in models: `fsd train-prior imageset --out DIR` writes tiny-sd's "
    "weights, `objects` tiny-sd-objects' and `objects-mv` tiny-mvdream's, and with `--arch sd3` imageset and "
    "objects write tiny-sd3's and tiny-sd3-objects', bit for bit on one machine with one thread. A killed run "
    "continues with --resume to the same bits."))
@user_errors
def train_prior(
    dataset: Annotated[str, typer.Argument(help="imageset (crops of the 8 pictures: tiny-sd), objects (reference "
                                                "renders with view captions: tiny-sd-objects) or objects-mv (4-view "
                                                "sets with cameras: tiny-mvdream).")],
    out: Annotated[Path, typer.Option(help="Model folder to write (replaced when training ends; its .train/ holds "
                                           "the checkpoint meanwhile).")],
    steps: Annotated[Optional[int], typer.Option(help="Denoiser (UNet, transformer) training steps; default 8000 "
                                                       "(sd3: 6000).")] = None,
    vae_steps: Annotated[Optional[int], typer.Option(help="VAE training steps (first stage); default 1500 (sd3: "
                                                          "1000).")] = None,
    batch: Annotated[Optional[int], typer.Option(help="Images (views) per denoiser step; default 64 (sd3: 32).")] = None,
    vae_batch: Annotated[int, typer.Option(help="Images per VAE step.")] = 32,
    lr: Annotated[Optional[float], typer.Option(help="Denoiser AdamW peak learning rate (warm-up, cosine decay to "
                                                     "10 %); default 5e-4 (sd3: 7e-4).")] = None,
    vae_lr: Annotated[float, typer.Option(help="VAE AdamW peak learning rate.")] = 1e-3,
    prompt_dropout: Annotated[float, typer.Option(help="Probability that a caption is replaced by '' (CFG's "
                                                       "unconditional model).")] = 0.1,
    pool: Annotated[Optional[int], typer.Option(help="objects: cameras rendered per object (objects-mv: 4-view "
                                                     "sets); default 2048 (512 sets).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the weights' initialisation, the data and the noise.")] = 0,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints (OUT/.train/checkpoint.pt).")] = 250,
    threads: Annotated[int, typer.Option(help="torch threads; the trained bits depend on it (the shipped models: "
                                              "1).")] = 1,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/.train/checkpoint.pt (same settings).")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    arch: Annotated[str, typer.Option(help="sd (Stable Diffusion's UNet, eps, VP schedule) or sd3 (Stable "
                                           "Diffusion 3's transformer, flow velocity, rectified flow); objects-mv "
                                           "trains MVDream's layout.")] = "sd",
):
    from fsdtrain.datasets import Dataset
    from fsdtrain.models import Arch
    from fsdtrain.train import WORK, TrainPriorConfig, train_prior as train

    config = TrainPriorConfig(parse_enum(dataset, Dataset, "DATASET"), steps=steps, vae_steps=vae_steps, batch=batch,
                              vae_batch=vae_batch, lr=lr, vae_lr=vae_lr, prompt_dropout=prompt_dropout, pool=pool,
                              seed=seed, checkpoint_every=checkpoint_every, threads=threads,
                              arch=parse_enum(arch, Arch, "--arch"))
    with resume_hint("train-prior", lambda: [p for p in [out / WORK / "checkpoint.pt"] if p.is_file()],
                     f"every {checkpoint_every} steps"):
        card = train(config, out, resume=resume, progress=progress)
    denoiser = config.denoiser  # "unet" or "transformer"
    loss = card["training"]["loss"][denoiser]
    typer.echo(f"wrote {out}/ ({card['dataset']}: {'UNet' if denoiser == 'unet' else 'transformer'} "
               f"{card['parameters'][denoiser]:,} parameters, final loss {loss[-1]:.4f}; samples.png, fsd_model.json) "
               f"in {card['training']['seconds']:.0f} s")


@app.command("gen-3d")
@user_errors
def gen_3d(
    prompt: Annotated[str, typer.Option(help="Text prompt (`fsd prompts --model references` for the embedded prior).")] = "mushroom",
    negative_prompt: Annotated[Optional[str], typer.Option(
        help="Negative prompt for CFG ('' = unconditional; default: the profile's, '' embedded, trained and Flux, "
             "the authors' on SD, SDXL and MVDream, RFDS' on SD3).")] = None,
    defaults: Annotated[Optional[str], typer.Option(
        "--defaults", help="Whose defaults fill the options not given: embedded (tuned on the 32 px embedded prior), "
                           "sd or mvdream (DreamGaussian's and the authors' settings), sd3, sdxl or flux (RFDS' and "
                           "the pipelines' settings; fsd3d/backbones.py). Default: the model's, read from its folder "
                           "(embedded for the embedded and trained models).")] = None,
    method: Annotated[str, typer.Option(
        help="fsd (world-map noise, annealed t), sds (fresh noise, t uniform: DreamFusion), sds-annealed (fresh noise, "
             "annealed t: differs from fsd in the noise only), a noise function on fsd's annealed t: worldmap (= fsd), "
             "constant, random (= sds-annealed), surface (noise fixed on the object's surface, the authors' "
             "successor), the family ism, sdi, csd, nfsd (fresh noise, their own gradient and timesteps), or the "
             "diversity rivals vsd, esd (a LoRA critic per seed, fresh noise, t uniform) and dsd (the seed's DDIM "
             "trajectory, one fixed noise, sqrt-annealed t). Each name means what compare-2d's does.")] = "fsd",
    seeds: Seeds = "0-7",
    steps: Annotated[Optional[int], typer.Option(help="Optimisation steps per seed (default: the profile's: 150 "
                                                      "embedded, 500 SD / MVDream).")] = None,
    beta: Annotated[float, typer.Option(help="Noise blend of world-map/constant noise with fresh noise, in [0, 1].")] = 1.0,
    theta: Annotated[float, typer.Option(help="World-map size Theta in degrees (map = h*180/Theta x w*360/Theta).")] = 180.0,
    alpha0: Annotated[float, typer.Option(help="Foreground threshold on pooled opacity for world-map noise.")] = 0.5,
    cfg: Annotated[Optional[float], typer.Option(help="CFG scale, standard form (1 = none). Default: the profile's: 1 "
                                                     "embedded, 7.5 trained, 71 SD, 50 MVDream.")] = None,
    t_min: TMin = 20, t_max: TMax = 980,
    anneal: Annotated[Optional[str], typer.Option(
        help="Shape of t(tau): linear, sqrt, piecewise, dreamtime, authors-sd, authors-mvdream (default: the "
             "profile's: linear embedded, the authors' on SD / MVDream).")] = None,
    weighting: Annotated[Optional[str], typer.Option(
        help="w(t) of the gradient: one or sigma-alpha (sigma_t / alpha_t). Default: the profile's: one embedded and "
             "MVDream, sigma-alpha SD.")] = None,
    background: Annotated[Optional[str], typer.Option(
        help="white, black or random (white or black per view). Default: white embedded and trained, random on SD / "
             "MVDream (DreamGaussian).")] = None,
    t_sampling: Annotated[Optional[str], typer.Option(
        help="annealed (t decreases) or uniform (t random every step). Default: the method's own, as in compare-2d: "
             "uniform for sds, ism, csd, nfsd; annealed for fsd, sds-annealed, sdi and the noise functions (only "
             "these last may change it).")] = None,
    cameras_per_step: Annotated[Optional[int], typer.Option(
        help="Cameras sampled per seed and step, all in one prior batch (default: 2; MVDream: 1, i.e. its "
             "4-view set).")] = None,
    elevation: Annotated[Optional[str], typer.Option(
        help="Camera elevation range 'lo,hi' in degrees (default: the profile's: 0,40; MVDream 0,30).")] = None,
    radius: Annotated[Optional[str], typer.Option(
        help="Camera distance range 'lo,hi' (default: the profile's: 1.55,1.75 embedded, 1.3,1.5 SD; MVDream 0.8,1.0 "
             "relative: the distance is r / tan(fov / 2)).")] = None,
    fov: Annotated[Optional[str], typer.Option(
        help="Vertical field of view range 'lo,hi' in degrees (default: the profile's: 40,46 embedded, 40,65 SD, "
             "15,60 MVDream).")] = None,
    num_gaussians: Annotated[Optional[int], typer.Option(
        help="Gaussians in the initial ball (default: the profile's: 1000 embedded, 5000 SD / MVDream).")] = None,
    init_radius: Annotated[Optional[float], typer.Option(
        help="Radius of the initial ball (default: the profile's: 0.4 embedded, 0.5 SD / MVDream).")] = None,
    init_opacity: Annotated[Optional[float], typer.Option(help="Opacity of the initial Gaussians (default 0.1).")] = None,
    init: Annotated[Optional[Path], typer.Option(help="Start every seed from this PLY instead of a random ball.")] = None,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 50,
    model: Annotated[str, typer.Option(
        help="'references' (embedded analytic prior, no download), 'references-local' (the same references, a local "
             "patch denoiser per camera: Fig. 6), the trained 'tiny-sd-objects' / 'tiny-mvdream' (Stable Diffusion / "
             "MVDream trained here on the references' renders), a local SD or MVDream folder, or a hub id.")] = "references",
    resolution: Annotated[Optional[int], typer.Option(help="Render size in pixels (default: the model's, 32 embedded and "
                                                           "trained, 512 SD 2.1, 256 MVDream).")] = None,
    device: Device = "auto", dtype: Dtype = "auto",
    out: Annotated[Path, typer.Option(help="Output folder (one sub-folder per seed).")] = Path("outputs/gen-3d"),
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoints in --out.")] = False,
    densify: Annotated[Optional[str], typer.Option(
        help="Densification and pruning with gsplat's strategies: default (3DGS), mcmc (3DGS-MCMC) or none "
             "(default: default on the embedded prior, mcmc on SD).")] = None,
    densify_from: Annotated[Optional[int], typer.Option(help="First refinement after this step (default: 10% of --steps).")] = None,
    densify_until: Annotated[Optional[int], typer.Option(help="No refinement from this step on (default: 70% of --steps).")] = None,
    densify_every: Annotated[Optional[int], typer.Option(help="Steps between refinements (default: --steps / 15).")] = None,
    densify_grad: Annotated[Optional[float], typer.Option(
        help="Screen-gradient threshold to split/duplicate (--densify default; default: the prior's).")] = None,
    densify_cap: Annotated[Optional[int], typer.Option(
        help="Most Gaussians per scene (default: 4 x --num-gaussians).")] = None,
    shared_cameras: Annotated[Optional[bool], typer.Option(
        "--shared-cameras/--per-seed-cameras",
        help="One camera sequence for all seeds (default: shared on the embedded prior, per seed on SD).")] = None,
    seed_batch: Annotated[Optional[int], typer.Option(
        help="Seeds advancing together in one prior call (default: all on the CPU; on CUDA as many as fit in the free "
             "GPU memory, counted by a probe of one view: fsd3d/memory.py).")] = None,
    compile: Annotated[bool, typer.Option(
        help="torch.compile Stable Diffusion's UNet (CUDA graphs) and VAE encoder; the first steps compile.")] = False,
    ism_interval: IsmInterval = 25, ism_stride: IsmStride = 200, ism_inversion_steps: IsmInversionSteps = 5,
    sdi_inversion_steps: SdiInversionSteps = 10, sdi_inversion_cfg: SdiInversionCfg = None, sdi_eta: SdiEta = 0.3,
    particles: Particles = 1, lora_rank: LoraRank = 4, lora_lr: LoraLr = 1e-4, esd_lambda: EsdLambda = 0.5,
    dsd_points: DsdPoints = 11,
    turntable: Annotated[str, typer.Option(help="Turntable video format: mp4 (H.264) or gif.")] = "mp4",
    mesh: Annotated[bool, typer.Option(help="Also write seed_*/mesh.glb (marching cubes on the density) and its "
                                            "silhouette IoU and watertightness in the seed's metrics.json.")] = False,
    progress: Progress = True,
):
    """Text-to-3D Gaussian Splatting with FSD or SDS: per seed gaussians.ply, turntable.mp4, views.png."""
    options = config_options(locals())
    from fsd3d.config import Gen3DConfig
    from fsd3d.gen3d import gen_3d as run

    config = Gen3DConfig.from_flags(**options)
    with resume_hint("gen-3d", lambda: sorted(out.glob("seed_*/checkpoint.pt")),
                     f"every {config.train.checkpoint_every} steps"):
        summary = run(config, out, resume=resume, progress=progress)
    print_3d_summary(summary)
    typer.echo(f"wrote {out}/ (seed_*/gaussians.ply, {config.turntable.filename}, views.png{', mesh.glb' if mesh else ''}; summary.png, "
               f"metrics.json) in {summary['seconds']:.1f} s")


@app.command("export-mesh")
@user_errors
def export_mesh(
    seed_dir: Annotated[Path, typer.Argument(help="A gen-3d seed folder (RUN/seed_S) holding gaussians.ply.")],
    grid: Annotated[int, typer.Option(help="Voxels per axis of the density grid.")] = 96,
    level: Annotated[float, typer.Option(help="Density level of the surface (sum of opacity-weighted Gaussians).")] = 0.3,
    max_faces: Annotated[int, typer.Option(help="Decimate the surface to at most this many faces (quadric "
                                                "edge collapse); 0 keeps every face.")] = 20000,
):
    """Mesh of a generated scene: marching cubes on the Gaussians' density, decimation, vertex colours from the
    Gaussians; writes mesh.glb and mesh.obj (glTF's frame: +Y up, the front, azimuth 0, towards +Z) and mesh.json
    (counts, watertight, silhouette IoU against the splat). An empty surface is an error and writes nothing."""
    from fsd3d.gen3d import export_seed_mesh

    m = export_seed_mesh(seed_dir, grid, level, max_faces)
    typer.echo(f"wrote {seed_dir}/mesh.glb, mesh.obj, mesh.json: {m['vertices']} vertices, {m['faces']} faces "
               f"(of {m['marching_cubes_faces']} from marching cubes), "
               f"watertight {m['watertight']}, silhouette IoU mean {m['mean_iou']:.3f} "
               f"(min {min(m['iou_per_view']):.3f}) over {len(m['iou_per_view'])} views at {m['eval_px']} px")


def print_3d_summary(summary: dict) -> None:
    rows = [(seed, m) for seed, m in summary["per_seed"].items() if "majority" in m]
    if rows:
        typer.echo(f"{'seed':>6}  {'nearest reference':<20}{'agreement':>10}{'PSNR':>8}{'holes':>8}")
        for seed, m in rows:
            typer.echo(f"{seed:>6}  {m['majority']:<20}{m['agreement']:>10.2f}{m['majority_psnr']:>8.2f}"
                       f"{m['holes']:>8.3f}")
    line = f"method {summary['method']}: diversity (1 - SSIM, matched views) {summary['diversity']:.3f}"
    if "particle_diversity" in summary:
        line += f" across seeds, {summary['particle_diversity']:.3f} across a seed's particles"
    if "references_reached" in summary:
        line += (f", distinct references reached {summary['references_reached']} / {len(summary['seeds'])} seeds"
                 f" (PSNR >= {summary['threshold_db']:.0f} dB)")
    cost = summary.get("cost")  # fsd2d.cost; None when every seed was finished before
    if cost:
        line += (f"; cost: {cost['prior_evaluations_per_step']:.2f} prior evaluations per step and seed, "
                 f"{cost['seconds_per_step']:.3f} s per step")
    typer.echo(line)


def print_summary(summary: dict) -> None:
    has_modes = "reached_psnr_db" in summary  # analytic priors only
    head = f"{'method':<13}{'PSNR vs DDIM':>13}{'SSIM vs DDIM':>13}{'diversity':>11}"
    has_pictures = "prompt_accuracy" in next(iter(summary["methods"].values()))  # a model trained on the pictures
    head += f"{'modes reached':>15}" if has_modes else ""
    head += f"{'prompt picture':>16}{'its PSNR':>10}" if has_pictures else ""
    cost = summary.get("cost", {})  # fsd2d.cost: denoiser evaluations per step and seed, seconds per step
    head += f"{'evals/step':>12}{'s/step':>9}" if cost else ""
    typer.echo(head)
    for name, m in summary["methods"].items():
        line = f"{name:<13}{m['mean_psnr_to_ddim']:>13.2f}{m['mean_ssim_to_ddim']:>13.3f}{m['diversity']:>11.3f}"
        if has_modes:
            line += f"{m['modes_reached']:>9d} / {len(summary['seeds'])}"
        if has_pictures:
            hits = round(m["prompt_accuracy"] * len(summary["seeds"])) if m["prompt_accuracy"] == m["prompt_accuracy"] else 0
            line += f"{hits:>10d} / {len(summary['seeds']):<3d}{m['mean_picture_psnr']:>10.2f}"
        if name in cost:
            line += f"{cost[name]['prior_evaluations_per_step']:>12.2f}{cost[name]['seconds_per_step']:>9.4f}"
        typer.echo(line)


@app.command("batch")
@user_errors
def batch(
    sweep: Annotated[Path, typer.Argument(help="Sweep file (YAML): command, params (a scalar is fixed, a list is "
                                               "swept), optional name and out.")],
    out: Annotated[Optional[Path], typer.Option(
        help="Sweep folder (default: the file's out:, else outputs/batch/<name or file stem>).")] = None,
    shard: Annotated[Optional[str], typer.Option(
        help="Run only the runs whose index % n == i, as 'i/n'. Default: from a SLURM job array "
             "(SLURM_ARRAY_TASK_*) or torchrun (RANK, WORLD_SIZE), else all.")] = None,
    dry_run: Annotated[bool, typer.Option(help="List this shard's runs and their folders; run nothing.")] = False,
    gather: Annotated[bool, typer.Option(help="Write results.csv and summary_*.png when the shard ends.")] = True,
    progress: Annotated[bool, typer.Option(
        help="Progress bars inside each run (the bar over runs is always shown).")] = False,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a parameter, KEY=VALUE (YAML value; repeatable), e.g. --set model=/path/to/sd.")] = None,
    max_runs: Annotated[int, typer.Option(help="Refuse a sweep whose grid has more runs than this.")] = 10000,
):
    """Run a grid of one fsd command from a YAML sweep: one folder per run, resumable, shardable."""
    from fsdbatch.runner import DONE, resolve_shard, run_sweep
    from fsdbatch.sweep import load_sweep, parse_overrides

    spec = load_sweep(sweep, out, parse_overrides(set_ or []), max_runs=max_runs)
    part = resolve_shard(shard)
    if dry_run:
        owned = [r for r in spec.runs if part.owns(r)]
        typer.echo(f"{spec.command}: {len(spec.runs)} runs in the grid; shard {part} owns {len(owned)}")
        for r in owned:
            state = "done" if (spec.out / r.folder / DONE).exists() else "todo"
            typer.echo(f"  [{r.index}] {state}  {spec.out / r.folder}")
        return
    result = run_sweep(spec, part, progress=progress)
    if gather:
        print_gather(spec.out)
    line = (f"shard {part}: {len(result.finished)} run(s) finished, {result.skipped} skipped (done before), "
            f"{len(result.failed)} failed, of {result.owned} owned ({result.total} in the grid)")
    if result.failed:
        for folder, error in result.failed:
            typer.echo(f"failed: {spec.out / folder}: {error}", err=True)
        typer.echo(f"error: {line}", err=True)
        raise typer.Exit(1)
    typer.echo(line)


@app.command("table1")
@user_errors
def table1(
    outs: Annotated[list[Path], typer.Argument(help="Batch folders of compare-2d and/or gen-3d sweeps.")],
    clip_model: Annotated[Optional[str], typer.Option(help="Local transformers CLIP folder (for CLIP score).")] = None,
    inception_weights: Annotated[Optional[str], typer.Option(
        help="torch-fidelity Inception weights file pt_inception-2015-12-05-6726825d.pth (IS, CROSS-FID).")] = None,
    out: Annotated[Path, typer.Option(help="Where table1.md and table1.csv go.")] = Path("outputs/table1"),
):
    """Table 1: DDIM images vs SDS vs FSD over prompts x seeds, from finished batch runs."""
    from fsdbatch.table1 import table1 as build, to_markdown, write_table

    rows, note = build(outs, clip_model, inception_weights, out=out)
    write_table(out, rows, note)
    typer.echo(to_markdown(rows), nl=False)
    if note:
        typer.echo(note)
    typer.echo(f"wrote {out}/table1.md and table1.csv")


@app.command("gather", help=(
    "Collect a sweep's finished runs (done.json) into results.csv, summary_<metric>.png and report.html.\n\n"
    "Partial and damaged sweeps are gathered as far as they go, by design: unfinished runs are listed, and a "
    "damaged run (a truncated done.json or metrics.json) is skipped with one `warning:` line on stderr while the "
    "exit code stays 0, so that a sweep still running or partly broken can be looked at. A damaged sweep.json "
    "(nothing to gather) is one `error:` line and exit code 2. `fsd table1` refuses a damaged run instead (an "
    "average over fewer prompts would mislead)."))
@user_errors
def gather(out: Annotated[Path, typer.Argument(help="Sweep folder written by `fsd batch`.")]):
    print_gather(out)


def print_gather(out: Path) -> None:
    from fsdbatch.gather import gather as collect

    g = collect(out)
    typer.echo(f"gathered {len(g.finished)} of {g.total} runs ({len(g.rows)} rows) -> {g.csv}"
               + (f", {len(g.plots)} summary plots" if g.plots else ""))
    if g.missing:
        shown = ", ".join(g.missing[:3]) + (", ..." if len(g.missing) > 3 else "")
        typer.echo(f"{len(g.missing)} run(s) not finished yet: {shown}")
    if g.report is not None:
        typer.echo(f"report: {g.report}")


@app.command("report")
@user_errors
def report(
    out: Annotated[Path, typer.Argument(help="A run folder (run.json, e.g. gen-3d's --out) or a sweep folder "
                                             "(sweep.json, from `fsd batch`).")],
    link_media: Annotated[bool, typer.Option("--link-media", help="Reference figures and videos relatively "
                                            "instead of embedding them (a small page that must stay in OUT).")] = False,
):
    """Write OUT/report.html: settings, metrics, figures, turntables and PLY/GLB links on one page that opens
    from disk with no server and no network."""
    from fsdbatch.report import Media, write_report

    path = write_report(out, Media.LINK if link_media else Media.EMBED)
    size = path.stat().st_size
    typer.echo(f"wrote {path} ({size / 1e6:.1f} MB)" if size >= 1e6 else f"wrote {path} ({size / 1e3:.0f} kB)")


@app.command("view")
@user_errors
def view(
    run: Annotated[Path, typer.Argument(help="A gen-3d run folder or a sweep folder of gen-3d runs.")],
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 lets other machines connect.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on (the next free one if taken; 0: any free port).")] = 8080,
):
    """Serve the seeds' Gaussian splats in the browser (viser): seed and method selectors, FSD beside SDS for a
    sweep, the run's camera orbit. Prints the URL on one line; Ctrl-C stops."""
    from fsdbatch.viewer import serve

    serve(run, host, port)


def main() -> None:
    """The console script: click/typer usage errors become one `error:` line too (exit code 2)."""
    try:
        code = app(prog_name="fsd", standalone_mode=False)
    except Exception as e:  # typer bundles its own click: recognise its exceptions by their interface
        if type(e).__name__ == "NoArgsIsHelpError":
            typer.echo(e.format_message())
            sys.exit(2)
        if hasattr(e, "format_message") and getattr(e, "exit_code", None) == 2:
            ctx = getattr(e, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            typer.echo(f"error: {' '.join(e.format_message().split())}{hint}", err=True)
            sys.exit(2)
        if type(e).__name__ == "Abort":
            typer.echo("aborted", err=True)
            sys.exit(130)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    sys.exit(main())
