"""How good the trained tiny models are, measured on held-out data (the numbers of docs/results/trained-world.md).

    python benchmarks/trained_quality.py [--seeds 16] [--models tiny-sd,tiny-sd-objects,tiny-mvdream]

Per model:
- the VAE's round trip (encode, decode) PSNR on 256 held-out images of its dataset (fresh crops, or renders of
  the references from cameras the pool never held), and on the references at gen-3d's 8 evaluation views (the
  ceiling of any 3D PSNR through this VAE);
- the UNet's held-out loss |eps_hat - eps|^2 in four timestep bins;
- tiny-sd: DDIM (300 steps) from --seeds seeds per prompt at CFG 1 and 7.5: the prompt accuracy (nearest picture
  over all crops, fsd2d.crop_match), the mean PSNR to that crop, and the mean PSNR to the nearest of the exact
  prior's 64 crops (a copy of that set would score high);
- objects models: the VAE round trip of the 20 references at the 8 evaluation views (no 3D result seen through
  this VAE can beat it against a reference: the scale of the reached threshold).
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from fsd2d.guidance import Guidance
from fsd2d.priors.load import load_prior
from fsd2d.sampling import ddim_sample, initial_noise
from fsd2d.schedule import scaled_linear_schedule, timesteps
from fsdtrain import models
from fsdtrain.datasets import Dataset, ImageCrops, ObjectPool

HELD_OUT_SEED = 987_654  # never a training seed: fresh crops / cameras


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = ((a - b) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-12))


@torch.no_grad()
def vae_round_trip(prior, images: torch.Tensor) -> float:
    """Mean PSNR of decode(encode(x)) against x, images [N, 3, R, R] in [0, 1] (one view's VAE)."""
    view = getattr(prior, "view", prior)
    out = torch.cat([view.decode(view.encode(images[i:i + 64])) for i in range(0, len(images), 64)])
    return float(psnr(out, images).mean())


@torch.no_grad()
def held_out_loss(prior, dataset: Dataset, data, n: int = 256) -> dict:
    view = getattr(prior, "view", prior)
    g = torch.Generator().manual_seed(HELD_OUT_SEED)
    batch = data.sample(n // dataset.views, g)
    z0 = view.encode(batch.images.flatten(0, 1))
    schedule = scaled_linear_schedule()
    out = {}
    for lo, hi in ((0, 250), (250, 500), (500, 750), (750, 1000)):
        t = torch.randint(lo, hi, (len(batch.captions),), generator=g).repeat_interleave(dataset.views)
        eps = torch.randn(z0.shape, generator=g)
        a, s = schedule.alpha_sigma(t, torch.float32, "cpu")
        cond = torch.cat([view.encode_prompt(c) for c in batch.captions]).repeat_interleave(dataset.views, 0)
        if batch.cameras is not None:  # MVDream: each view with its own camera (sets of 4 consecutive)
            view = prior.view.bind(batch.cameras.flatten(0, 1))
        pred = view.eps(a * z0 + s * eps, t, cond)
        out[f"t{lo}-{hi - 1}"] = float(((pred - eps) ** 2).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--models", default="tiny-sd,tiny-sd-objects,tiny-mvdream")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = {}
    for name in args.models.split(","):
        prior = load_prior(name, "cpu")
        dataset = Dataset(prior.card["dataset"])
        r = models.RESOLUTION
        data = ImageCrops(r) if dataset is Dataset.IMAGESET else ObjectPool(r, 64, dataset.views, HELD_OUT_SEED)
        held = data.sample(256 // dataset.views, torch.Generator().manual_seed(HELD_OUT_SEED)).images.flatten(0, 1)
        entry = {"vae_psnr_held_out": vae_round_trip(prior, held), "loss": held_out_loss(prior, dataset, data)}
        if dataset is Dataset.IMAGESET:
            entry |= picture_study(prior, args.seeds)
        else:
            entry |= reference_study(prior)
        report[name] = entry
        print(name, json.dumps(entry, indent=1))
    if args.json:
        print(json.dumps(report))


def picture_study(prior, seeds: int) -> dict:
    from fsd2d.crop_match import nearest_picture
    from fsd2d.metrics import nearest
    from fsd2d.priors.imageset import ImageSetPrior

    exact = ImageSetPrior(prior.resolution)
    out = {}
    for cfg in (1.0, 7.5):
        acc, pic, copy = [], [], []
        for prompt in prior.card["prompts"]:
            g = Guidance.from_prompts(prior, prompt, "", cfg)
            with torch.no_grad():
                x = prior.decode(ddim_sample(prior, g, initial_noise(prior, range(seeds)), timesteps(300, 20, 980)))
            names, p = nearest_picture(x)
            acc.append(np.mean([n == prompt for n in names]))
            pic.append(float(p.mean()))
            copy.append(float(nearest(x, exact.set_images(prompt))[1].mean()))
        out[f"cfg{cfg:g}"] = {"prompt_accuracy": float(np.mean(acc)), "per_prompt_accuracy": [float(a) for a in acc],
                             "mean_picture_psnr": float(np.mean(pic)), "mean_exact_set_psnr": float(np.mean(copy))}
    return out


def reference_study(prior) -> dict:
    """The VAE's round trip of the references at the evaluation views."""
    from fsd3d.cameras import CameraRanges
    from fsd3d.references import ReferenceSet

    refs = ReferenceSet()
    views = CameraRanges().evaluation_cameras(models.RESOLUTION)
    rgb = refs.render(views, models.RESOLUTION).rgb  # [K, 8, 3, R, R]
    out = {"vae_psnr_references": vae_round_trip(prior, rgb.flatten(0, 1))}
    return out


if __name__ == "__main__":
    main()
