"""Table 1's metrics with real backbones: CLIP score, Inception Score and CROSS-FID (torchmetrics).

As the paper defines them (REFERENCE.md): CLIP score of rendered views against the prompt (ViT-B/32 in
the paper), Inception Score per prompt, and CROSS-FID = FID between the renders of seeds {0, 1} and
of seeds {2, 3} (higher = more diverse). Weights are never downloaded: the user points to them on disk.
    clip_model:         a local folder of a transformers CLIP model (e.g. a saved openai/clip-vit-base-patch32),
                        with safetensors weights (only .safetensors is loaded, never pickled .bin files)
    inception_weights:  torch-fidelity's pt_inception-2015-12-05-6726825d.pth (what FID/IS use)
Images: RGB [N, 3, H, W] in [0, 1] (float); converted to uint8 as the metrics expect.
Needs the `metrics` extra (pip install -e ".[metrics]": torchmetrics) and, for the Inception network
from local weights, torch-fidelity; torch-fidelity requires torchvision, so install the torchvision that
matches your torch first (on a CPU-only machine an unpinned torchvision pulls a CUDA build of torch).
"""
from __future__ import annotations

from pathlib import Path

import torch

from fsd2d.errors import InputError

ENABLE_HINT = ("pass --clip-model DIR (a local transformers CLIP folder) and --inception-weights FILE "
               "(pt_inception-2015-12-05-6726825d.pth), with torchmetrics and torch-fidelity installed")


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] in [0, 1] -> uint8 [N, 3, H, W]."""
    return (images.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu()


def missing(clip_model: str | None, inception_weights: str | None) -> list[str]:
    """Why some backbone columns cannot be computed (empty list: all can). Checks files, not contents."""
    why = []
    try:
        import torchmetrics  # noqa: F401
    except ImportError:
        why.append("torchmetrics is not installed")
    if not clip_model:
        why.append("no CLIP model given")
    else:
        check_clip_folder(clip_model)
    if not inception_weights:
        why.append("no Inception weights given")
    elif not Path(inception_weights).is_file():
        raise InputError(f"--inception-weights {inception_weights} is not a file")
    else:
        try:
            import torch_fidelity  # noqa: F401
        except ImportError:
            why.append("torch-fidelity is not installed (needed for Inception from local weights)")
    return why


def check_clip_folder(clip_model: str) -> None:
    """A local CLIP folder with safetensors weights, or a one-line InputError (pickled .bin is never loaded)."""
    folder = Path(clip_model)
    if not folder.is_dir():
        raise InputError(f"--clip-model {clip_model} is not a folder (give a local transformers CLIP model)")
    if not any(folder.glob("*.safetensors")):
        raise InputError(f"--clip-model {clip_model} has no .safetensors weights (only safetensors is loaded; "
                         "re-save it with transformers' save_pretrained, which writes model.safetensors)")


def clip_score(images: torch.Tensor, prompts: list[str], clip_model: str) -> float:
    """Mean CLIP score 100 * max(cos(image, text), 0) of images [N, 3, H, W] against prompts [N].

    The definition of torchmetrics' CLIPScore, computed from CLIPModel's projected embeddings directly:
    torchmetrics 1.9's CLIPScore breaks on transformers 5 (get_image_features returns a model output).
    """
    from transformers import CLIPModel, CLIPProcessor

    check_clip_folder(clip_model)
    model = CLIPModel.from_pretrained(clip_model, local_files_only=True, use_safetensors=True).eval()
    processor = CLIPProcessor.from_pretrained(clip_model, local_files_only=True)
    inputs = processor(text=list(prompts), images=list(to_uint8(images)), return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**inputs)
    cos = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds, dim=-1)  # [N]
    return float((100.0 * cos.clamp_min(0.0)).mean())


def inception_feature(weights: str, kind: str) -> torch.nn.Module:
    """torch-fidelity's Inception v3 from a local weights file; kind "logits_unbiased" (IS) or "2048" (FID)."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    return NoTrainInceptionV3("inception-v3-compat", [kind], feature_extractor_weights_path=weights)


def inception_score(images: torch.Tensor, feature: torch.nn.Module) -> tuple[float, float]:
    """Inception Score (mean, std over splits) of images [N, 3, H, W]; `feature` maps uint8 images to logits."""
    from torchmetrics.image.inception import InceptionScore

    metric = InceptionScore(feature=feature, splits=max(1, min(10, len(images) // 2)))
    metric.update(to_uint8(images))
    mean, std = metric.compute()
    return float(mean), float(std)


def cross_fid(images_a: torch.Tensor, images_b: torch.Tensor, feature: torch.nn.Module) -> float:
    """FID between two image sets (CROSS-FID: renders of seeds {0, 1} vs seeds {2, 3}); higher = more diverse."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=feature, input_img_size=(3, *images_a.shape[-2:]))
    metric.update(to_uint8(images_a), real=True)
    metric.update(to_uint8(images_b), real=False)
    return float(metric.compute())
