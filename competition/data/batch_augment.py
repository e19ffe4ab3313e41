"""Augmentation on the device: random-resized crop, flips and affine jitter as one affine
resample per batch, then normalisation — for uint8 batches from the decode cache.

On a GPU, decoding is already done by the cache, so what is left of the loader is copying
uint8 pixels; cropping, flipping and normalising on the device keeps the CPU out of the
way. Each sample's parameters come from its own seed (the sampler's (row, seed) pairs), so
a batch is augmented the same way whatever the device or the worker layout.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from competition.core.config import Config
from competition.data.images import Size, hw
from competition.data.transforms import RRC_RATIO, RRC_SCALE

# Augmentations this path can do; a config asking for others keeps the albumentations path.
GPU_AUGMENTATIONS = frozenset({"random_resized_crop", "hflip", "vflip", "affine"})
FLIPS = frozenset({"hflip", "vflip"})
DEVICE_AUGMENT_MODES = ("auto", "on", "off")  # config key train.device_augment


def supports(augment: Sequence[str]) -> bool:
    return set(augment) <= GPU_AUGMENTATIONS


def use_device_augment(cfg: Config, device: torch.device, cached: bool) -> bool:
    """train.device_augment: auto = on CUDA when the images come from the decode cache and the
    augmentations are ones the device path does; on = wherever they can; off = never."""
    mode = cfg.train.device_augment
    if mode == "off" or not cached or not supports(cfg.image.augment):
        return False
    return mode == "on" or device.type == "cuda"


def _sample_params(seed: int, augment: Sequence[str]) -> list[float]:
    """(scale_x, scale_y, angle, shift_x, shift_y, flip_x, flip_y) for one sample."""
    g = torch.Generator().manual_seed(int(seed))
    u = torch.rand(10, generator=g).tolist()
    sx = sy = 1.0
    angle = tx = ty = 0.0
    if "random_resized_crop" in augment:
        (lo, hi), (r0, r1) = RRC_SCALE, RRC_RATIO  # as the albumentations path
        area = lo + (hi - lo) * u[0]  # crop area fraction
        ratio = math.exp(math.log(r0) + (math.log(r1) - math.log(r0)) * u[1])
        sx, sy = min(1.0, math.sqrt(area * ratio)), min(1.0, math.sqrt(area / ratio))
        # the crop stays inside the image: its centre moves by at most the slack
        tx, ty = (1 - sx) * (2 * u[2] - 1), (1 - sy) * (2 * u[3] - 1)
    if "affine" in augment and u[4] < 0.8:
        zoom = 1 / (0.9 + 0.2 * u[5])
        sx, sy = sx * zoom, sy * zoom
        angle = math.radians(-12 + 24 * u[6])
        tx, ty = tx + 0.16 * (u[7] - 0.5), ty + 0.16 * (u[8] - 0.5)
    fx = -1.0 if "hflip" in augment and u[9] < 0.5 else 1.0
    fy = -1.0 if "vflip" in augment and torch.rand(1, generator=g).item() < 0.5 else 1.0
    return [sx, sy, angle, tx, ty, fx, fy]


class BatchAugment:
    """uint8 NHWC batch on any device → normalised float NCHW, augmented when `train`."""

    def __init__(self, size: Size, mean: Sequence[float], std: Sequence[float], augment: Sequence[str] = (), train: bool = False):
        if train and not supports(augment):
            raise ValueError(f"device augmentation supports {sorted(GPU_AUGMENTATIONS)}, got {list(augment)}")
        self.size, self.augment, self.train = hw(size), list(augment), train
        # (pixel - 255·mean) / (255·std) as pixel · scale - shift, computed once
        self.scale = 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.shift = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0 * self.scale

    def theta(self, seeds: Sequence[int]) -> torch.Tensor:
        """The [n, 2, 3] affine matrices (output → input coordinates) of a batch."""
        rows = []
        for seed in seeds:
            sx, sy, a, tx, ty, fx, fy = _sample_params(seed, self.augment)
            c, s = math.cos(a), math.sin(a)
            rows.append([[c * sx * fx, -s * sy * fy, tx], [s * sx * fx, c * sy * fy, ty]])
        return torch.tensor(rows, dtype=torch.float32)

    def __call__(self, images: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        # One float buffer, filled by a converting copy, then worked on in place: a batch of
        # 224 px photos is 38 MB of float32, and each extra temporary costs as much again.
        n, h, w, c = images.shape
        layout = torch.channels_last if images.is_cuda else torch.contiguous_format
        x = torch.empty((n, c, h, w), dtype=torch.float32, device=images.device, memory_format=layout)
        x.copy_(images.permute(0, 3, 1, 2))
        if (h, w) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", antialias=True, align_corners=False)
        if self.train and self.augment:
            if seeds is None:
                raise ValueError("training augmentation needs one seed per sample")
            theta = self.theta([int(s) for s in seeds])  # on the host: which rows flip is known here
            if set(self.augment) <= FLIPS:  # flips only: exact pixel flips, no resampling pass
                _flip_(x, theta[:, 0, 0] < 0, -1)
                _flip_(x, theta[:, 1, 1] < 0, -2)
            else:
                grid = F.affine_grid(_to(theta, x.device), list(x.shape), align_corners=False)
                x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        x = x.contiguous(memory_format=layout)
        if self.scale.device != x.device:  # moved once, not copied with every batch
            self.scale, self.shift = self.scale.to(x.device), self.shift.to(x.device)
        return x.mul_(self.scale).sub_(self.shift)


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on `device`: from pinned memory without waiting on CUDA, so the
    host keeps queueing work instead of syncing with the GPU on every batch."""
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t


def _flip_(x: torch.Tensor, which: torch.Tensor, dim: int) -> None:
    """Flip the samples marked in `which` (a host mask) along `dim`, in place."""
    rows = which.nonzero().flatten()
    if len(rows):
        rows = _to(rows, x.device)
        x[rows] = x[rows].flip(dim)
