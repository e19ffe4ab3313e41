"""Albumentations pipelines (train / eval) and the TTA views applied to image batches.

The pipelines stay in uint8: loader workers hand over HWC uint8 arrays, a quarter of the bytes
of float tensors, and `batch_augment.BatchAugment` converts and normalises whole batches on the
training device (timm's prefetcher makes the same split)."""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import albumentations as A
import cv2
import numpy as np
import torch

from competition.data.images import Size, hw

INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
}

# The one description of each geometric augmentation's ranges: the albumentations pipelines
# below and the device path (batch_augment.BatchAugment) both read these, and a test draws many
# samples through both and compares where they put the pixels.
RRC_SCALE = (0.5, 1.0)  # random_resized_crop: this fraction of the image's area,
RRC_RATIO = (3 / 4, 4 / 3)  # at an aspect ratio between these
FLIP_P = 0.5
AFFINE = {"p": 0.8, "scale": (0.9, 1.1), "translate": (-0.08, 0.08), "rotate": (-12.0, 12.0), "shear": (-5.0, 5.0)}

# Train-time augmentations by name (config `image.augment`). `random_resized_crop` replaces
# the plain resize; the others run after it, in the order given.
AUGMENTATIONS: dict[str, Callable[[int], A.BasicTransform]] = {
    "random_resized_crop": lambda size: A.RandomResizedCrop(size=(size, size), scale=RRC_SCALE, ratio=RRC_RATIO),
    "hflip": lambda size: A.HorizontalFlip(p=FLIP_P),
    "vflip": lambda size: A.VerticalFlip(p=FLIP_P),
    "rotate90": lambda size: A.RandomRotate90(p=0.5),
    # keep_ratio: one zoom for both axes, as the device path draws it
    "affine": lambda size: A.Affine(scale=AFFINE["scale"], translate_percent=AFFINE["translate"], rotate=AFFINE["rotate"],
                                    shear=AFFINE["shear"], keep_ratio=True, p=AFFINE["p"]),
    "color_jitter": lambda size: A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03, p=0.5),
    "brightness_contrast": lambda size: A.RandomBrightnessContrast(p=0.5),
    "blur": lambda size: A.GaussianBlur(blur_limit=(3, 5), p=0.2),
    "coarse_dropout": lambda size: A.CoarseDropout(
        num_holes_range=(1, 4), hole_height_range=(0.05, 0.2), hole_width_range=(0.05, 0.2), p=0.5
    ),
}

# Test-time views (config `predict.tta`), applied to normalised NCHW batches; the
# plain view is always included.
TTA_VIEWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
    "rot90": lambda x: torch.rot90(x, 1, (-2, -1)),
    "rot180": lambda x: torch.rot90(x, 2, (-2, -1)),
    "rot270": lambda x: torch.rot90(x, 3, (-2, -1)),
    "transpose": lambda x: x.transpose(-2, -1),
}


def build_train_transform(size: Size, augment: Sequence[str], interpolation: str = "bilinear") -> A.Compose:
    """Resize (or random-resized-crop) to `size` (a side, or [height, width]), then the named
    augmentations; uint8 in and out."""
    interp = INTERPOLATIONS.get(interpolation, cv2.INTER_LINEAR)
    height, width = hw(size)
    if "random_resized_crop" in augment:
        first = A.RandomResizedCrop(size=(height, width), scale=RRC_SCALE, ratio=RRC_RATIO, interpolation=interp)
    else:
        first = A.Resize(height, width, interpolation=interp, area_for_downscale="image")
    rest = [AUGMENTATIONS[name](size) for name in augment if name != "random_resized_crop"]
    return A.Compose([first, *rest])


def decode_side(size: Size, augment: Sequence[str] = ()) -> int:
    """The smallest image side the pipeline's first step needs at full detail: the longer side of
    `size` for a resize; with random_resized_crop, enough that its smallest crop still has it."""
    side = max(hw(size))
    if "random_resized_crop" not in augment:
        return side
    return math.ceil(side / math.sqrt(RRC_SCALE[0] * RRC_RATIO[0]))


def build_eval_transform(size: Size, interpolation: str = "bilinear") -> A.Compose:
    """Resize to `size`: validation and test; uint8 in and out."""
    interp = INTERPOLATIONS.get(interpolation, cv2.INTER_LINEAR)
    return A.Compose([A.Resize(*hw(size), interpolation=interp, area_for_downscale="image")])


def seed_pipeline(pipeline: A.BaseCompose, seed: int) -> None:
    """Make the pipeline's next call depend on `seed` only.

    One numpy and one Python generator, seeded once, are shared by every transform in it.
    Albumentations' own `set_random_seed` gives each transform a generator of its own from the
    same seed, so their draws coincide: hflip and vflip would always fire together (two of the
    four flips, never one alone) and the crop size would follow the flip.
    """
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))


def tta_views(names: Sequence[str]) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The plain view followed by the named TTA views."""
    return [lambda x: x, *(TTA_VIEWS[n] for n in names)]
