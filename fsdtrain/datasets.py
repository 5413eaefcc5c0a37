"""What `fsd train-prior` trains on, built on the fly from what the package embeds (no download).

Every dataset draws batches from a torch.Generator (so a run and its resumption see the same batches) as
`Batch(images [B, V, 3, R, R] in [0, 1], captions [B], cameras [B, V, 16] or None)`, V views per sample:
- `imageset` (V = 1): the 8 prompts' scikit-image pictures (fsd2d.priors.imageset), a FRESH random square crop
  of each sample's picture every batch (side uniform in 40-100 % of the short side, position uniform, flipped
  with probability 1/2: the distribution of which the exact prior's 64 crops per prompt are one sample),
  resized to R with an antialiased bilinear filter; caption: the prompt ("cat");
- `objects` (V = 1): the 20 reference objects (fsd3d.references: 4 prompts x 5 variants) rendered on white
  from cameras drawn in gen-3d's ranges (fsd3d.cameras.CameraRanges(): elevation 0-40, full azimuth, radius
  1.55-1.75, fov 40-46); caption: the prompt with the view suffix the 3D loop asks for ("mushroom, side view",
  fsd3d.priors3d.view_suffix); the variant is never named, so a prompt's caption stands for its 5 variants;
- `objects-mv` (V = 4): 4-view sets of the same objects at azimuths a, a+90, a+180, a+270 with one elevation,
  radius and fov (fsd3d.mvdream_prior.view_set, as MVDream's 3D loop renders them), each view with MVDream's
  camera condition (fsd2d.priors.mvdream.viewmats_to_mvdream); caption: the prompt alone (the cameras say
  the view, as in MVDream).
The objects' renders form a POOL of `pool` cameras (sets) rendered once per run for all 20 objects (rendering
on the fly would cost more than the training step); a batch draws (object, camera) pairs from it uniformly.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fsd2d.errors import InputError
from fsd2d.priors.imageset import CROP_SIDE, PROMPTS, scaled_source
from fsd2d.priors.mvdream import viewmats_to_mvdream
from fsd3d.cameras import CameraRanges, sample_cameras
from fsd3d.mvdream_prior import view_set
from fsd3d.priors3d import view_suffix
from fsd3d.references import REFERENCE_PROMPTS, ReferenceSet

VIEW_SUFFIXES = ("front view", "side view", "back view")  # fsd3d.priors3d.view_suffix's three answers
RENDER_CHUNK = 256  # cameras per render call while building a pool (bounded memory)


class Dataset(str, enum.Enum):
    IMAGESET = "imageset"  # crops of the 8 pictures, one caption per prompt: Stable Diffusion (tiny-sd)
    OBJECTS = "objects"  # reference renders, "<prompt>, <view>": Stable Diffusion for 3D (tiny-sd-objects)
    OBJECTS_MV = "objects-mv"  # 4-view sets of the references with cameras: MVDream (tiny-mvdream)

    @property
    def views(self) -> int:
        return 4 if self is Dataset.OBJECTS_MV else 1

    @property
    def world(self) -> str:
        """What the samples can be scored against: the pictures, or the reference objects."""
        return "imageset" if self is Dataset.IMAGESET else "references"

    @property
    def view_suffixes(self) -> tuple[str, ...]:
        return VIEW_SUFFIXES if self is Dataset.OBJECTS else ()


@dataclass(frozen=True)
class Batch:
    images: torch.Tensor  # [B, V, 3, R, R] float32 in [0, 1]
    captions: list[str]  # [B] ('' never: prompt dropout is the trainer's)
    cameras: torch.Tensor | None  # [B, V, 16] MVDream's camera condition, None for V = 1 datasets


class ImageCrops:
    """`imageset`: fresh random crops of the prompts' pictures (module docstring)."""

    views = 1

    def __init__(self, resolution: int):
        self.resolution = resolution
        self.prompts = list(PROMPTS)
        # [3, H, W] float32 pictures with short side 4 R, as the exact prior cuts its crops from
        self.sources = [torch.from_numpy(np.ascontiguousarray(scaled_source(p, resolution).transpose(2, 0, 1))).float()
                        for p in self.prompts]

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        labels = torch.randint(len(self.prompts), (n,), generator=generator)  # [n] uniform over prompts
        u = torch.rand(n, 4, generator=generator, dtype=torch.float64)  # side, y, x, flip
        crops = []
        for i in range(n):
            src = self.sources[int(labels[i])]
            h, w = src.shape[1:]
            side = int((CROP_SIDE[0] + (CROP_SIDE[1] - CROP_SIDE[0]) * float(u[i, 0])) * min(h, w))
            y0, x0 = int(float(u[i, 1]) * (h - side + 1)), int(float(u[i, 2]) * (w - side + 1))
            crop = src[:, y0:y0 + side, x0:x0 + side]
            if float(u[i, 3]) < 0.5:
                crop = crop.flip(-1)
            crops.append(F.interpolate(crop[None], size=(self.resolution,) * 2, mode="bilinear", antialias=True,
                                       align_corners=False)[0])
        images = torch.stack(crops).clamp(0.0, 1.0)[:, None]  # [n, 1, 3, R, R]
        return Batch(images, [self.prompts[int(k)] for k in labels], None)


class ObjectPool:
    """`objects` / `objects-mv`: the 20 references rendered at a pool of cameras or 4-view sets (module docstring).

    images uint8 [K, P, V, 3, R, R] (8-bit, as pictures are), labels [K] prompt index, cameras [P, V, 16],
    suffixes [P, V] index into VIEW_SUFFIXES (of each view's azimuth)."""

    def __init__(self, resolution: int, pool: int, views: int, seed: int, progress=None):
        if pool < 1:
            raise InputError(f"the camera pool must hold at least 1 camera, got {pool}")
        self.resolution, self.views = resolution, views
        references = ReferenceSet()
        self.prompts = list(REFERENCE_PROMPTS)
        gen = torch.Generator().manual_seed(seed)
        first = sample_cameras(pool, CameraRanges(), gen, resolution, resolution)
        cameras = [v for c in first for v in (view_set(c, views) if views > 1 else [c])]  # [P*V], sets consecutive
        self.cameras = viewmats_to_mvdream(torch.stack([c.viewmat for c in cameras]).double()).float()
        self.cameras = self.cameras.reshape(pool, views, -1)  # [P, V, 16]
        self.suffixes = torch.tensor([VIEW_SUFFIXES.index(view_suffix(c.azimuth)) for c in cameras]).reshape(pool, views)
        k = len(references)
        self.images = torch.empty(k, pool * views, 3, resolution, resolution, dtype=torch.uint8)
        for start in range(0, len(cameras), RENDER_CHUNK):
            chunk = cameras[start:start + RENDER_CHUNK]
            rgb = references.render(chunk, resolution).rgb  # [K, C, 3, R, R] in [0, 1]
            self.images[:, start:start + len(chunk)] = (rgb * 255.0).round().clamp(0, 255).to(torch.uint8)
            if progress is not None:
                progress(len(chunk))
        self.images = self.images.reshape(k, pool, views, 3, resolution, resolution)
        self.labels = references.labels  # [K] int64

    def tensors(self) -> dict[str, torch.Tensor]:
        """What the pool is (images, cameras, suffixes, labels: shapes in the class docstring), for a cache file."""
        return {"images": self.images.contiguous(), "cameras": self.cameras.contiguous(),
                "suffixes": self.suffixes.contiguous(), "labels": self.labels.contiguous()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], resolution: int, views: int) -> ObjectPool:
        """The pool of `tensors()` (read back from a cache), checked: a ValueError for a missing or extra name, a
        dtype, shape or index that a pool of this resolution and views cannot have."""
        expected = {"images": torch.uint8, "cameras": torch.float32, "suffixes": torch.int64, "labels": torch.int64}
        if set(tensors) != set(expected) or any(tensors[n].dtype != d for n, d in expected.items()):
            raise ValueError(f"not a camera pool: {sorted(tensors)}")
        images, cameras, suffixes, labels = (tensors[n] for n in expected)
        if images.ndim != 6 or images.shape[2:] != (views, 3, resolution, resolution):
            raise ValueError(f"pool images {list(images.shape)}, expected [K, P, {views}, 3, {resolution}, "
                             f"{resolution}]")
        k, p = images.shape[:2]
        if cameras.shape != (p, views, 16) or suffixes.shape != (p, views) or labels.shape != (k,):
            raise ValueError("pool cameras, suffixes or labels do not fit its images")
        if k < 1 or p < 1 or not (0 <= int(suffixes.min()) and int(suffixes.max()) < len(VIEW_SUFFIXES)
                                  and 0 <= int(labels.min()) and int(labels.max()) < len(REFERENCE_PROMPTS)):
            raise ValueError("pool suffix or label index out of range")
        pool = cls.__new__(cls)
        pool.resolution, pool.views, pool.prompts = resolution, views, list(REFERENCE_PROMPTS)
        pool.images, pool.cameras, pool.suffixes, pool.labels = images, cameras, suffixes, labels
        return pool

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(object [n], camera [n]) indices, uniform over the 20 objects (so over the prompts) and the pool."""
        k, p = self.images.shape[:2]
        return torch.randint(k, (n,), generator=generator), torch.randint(p, (n,), generator=generator)

    def batch(self, obj: torch.Tensor, cam: torch.Tensor, images: bool = True) -> Batch:
        """The Batch of these (object, camera) pairs; images=False leaves them empty ([n, V, 0, R, R])."""
        n, r = len(obj), self.resolution
        pixels = self.images[obj, cam].float() / 255.0 if images else torch.empty(n, self.views, 0, r, r)
        prompts = [self.prompts[int(self.labels[o])] for o in obj]
        if self.views > 1:
            return Batch(pixels, prompts, self.cameras[cam])
        return Batch(pixels, [f"{q}, {VIEW_SUFFIXES[int(self.suffixes[c, 0])]}" for q, c in zip(prompts, cam)], None)

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        return self.batch(*self.draw(n, generator))


def build_dataset(dataset: Dataset, resolution: int, pool: int, seed: int, progress=None) -> ImageCrops | ObjectPool:
    if dataset is Dataset.IMAGESET:
        return ImageCrops(resolution)
    return ObjectPool(resolution, pool, dataset.views, seed, progress)
