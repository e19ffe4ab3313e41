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

from competition.core.schema import Config
from competition.data.images import Size, hw
from competition.data.transforms import AFFINE, FLIP_P, RRC_RATIO, RRC_SCALE

# Augmentations this path can do; a config asking for others keeps the albumentations path.
GPU_AUGMENTATIONS = frozenset({"random_resized_crop", "hflip", "vflip", "affine"})
FLIPS = frozenset({"hflip", "vflip"})


def supports(augment: Sequence[str]) -> bool:
    return set(augment) <= GPU_AUGMENTATIONS


def use_device_augment(cfg: Config, device: torch.device, cached: bool) -> bool:
    """train.device_augment: auto = on CUDA when the images come from the decode cache and the
    augmentations are ones the device path does; on = wherever they can; off = never."""
    mode = cfg.train.device_augment
    if mode == "off" or not cached or not supports(cfg.image.augment):
        return False
    return mode == "on" or device.type == "cuda"


# splitmix64's constants as signed 64-bit integers (torch has no unsigned 64-bit arithmetic; the
# products wrap the same way).
_GOLDEN, _MIX1, _MIX2 = -7046029254386353131, -4658895280553007687, -7723592293110705685


def _shr(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> keeps the sign)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def uniforms(seeds: torch.Tensor, k: int) -> torch.Tensor:
    """k uniform numbers in [0, 1) for each seed: splitmix64 of (seed, i), a counter-based
    generator, so a whole batch draws at once, on its own device, and a sample's numbers depend
    on its seed alone (exact resume, any batch layout)."""
    z = seeds.to(torch.int64)[:, None] * k + torch.arange(k, device=seeds.device) + _GOLDEN
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    z = z ^ _shr(z, 31)
    return _shr(z, 11).to(torch.float64).div_(2.0 ** 53).to(torch.float32)


def _span(u: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    return bounds[0] + (bounds[1] - bounds[0]) * u


def sample_theta(seeds: torch.Tensor, augment: Sequence[str], size: tuple[int, int]) -> torch.Tensor:
    """The [n, 2, 3] output → input maps (grid_sample's normalised coordinates) for a batch:
    random-resized crop, then albumentations' affine (translate · shear · rotate · scale about the
    centre, in pixels, inverted here), then flips — with the ranges of data.transforms."""
    n, (h, w) = len(seeds), size
    u = uniforms(seeds, 13).double()
    eye = torch.eye(3, dtype=torch.float64, device=seeds.device).expand(n, 3, 3)
    crop = eye.clone()
    if "random_resized_crop" in augment:  # crop width and height as fractions, centre anywhere it fits
        area = _span(u[:, 0], RRC_SCALE)
        ratio = torch.exp(_span(u[:, 1], (math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1]))))
        cw = torch.sqrt(area * ratio * h / w).clamp(max=1.0)
        ch = torch.sqrt(area / ratio * w / h).clamp(max=1.0)
        crop[:, 0, 0], crop[:, 1, 1] = cw, ch
        crop[:, 0, 2], crop[:, 1, 2] = (1 - cw) * (2 * u[:, 2] - 1), (1 - ch) * (2 * u[:, 3] - 1)
    affine = eye.clone()
    if "affine" in augment:
        on = (u[:, 4] < AFFINE["p"]).double()
        s = 1 + on * (_span(u[:, 5], AFFINE["scale"]) - 1)
        a = on * torch.deg2rad(_span(u[:, 6], AFFINE["rotate"]))
        shx, shy = (on * torch.tan(torch.deg2rad(_span(u[:, i], AFFINE["shear"]))) for i in (7, 8))
        tx, ty = (on * _span(u[:, i], AFFINE["translate"]) * side for i, side in ((9, w), (10, h)))
        c, si = torch.cos(a), torch.sin(a)
        # albumentations' forward map in pixels about the centre: [[1, shx],[shy, 1]] · R · s, then + t
        m00, m01 = s * (c - shx * si), s * (si + shx * c)
        m10, m11 = s * (shy * c - si), s * (shy * si + c)
        # Its inverse in closed form (torch.linalg.inv would wait for the GPU to check for errors),
        # then in grid_sample's coordinates: D⁻¹ · forward⁻¹ · D with D = diag(w/2, h/2, 1).
        det = m00 * m11 - m01 * m10
        i00, i01, i10, i11 = m11 / det, -m01 / det, -m10 / det, m00 / det
        itx, ity = -(i00 * tx + i01 * ty), -(i10 * tx + i11 * ty)
        affine = torch.stack([torch.stack([i00, i01 * h / w, itx * 2 / w], -1),
                              torch.stack([i10 * w / h, i11, ity * 2 / h], -1), eye[:, 2]], 1)
    flip = eye.clone()
    if "hflip" in augment:
        flip[:, 0, 0] = torch.where(u[:, 11] < FLIP_P, -1.0, 1.0)
    if "vflip" in augment:
        flip[:, 1, 1] = torch.where(u[:, 12] < FLIP_P, -1.0, 1.0)
    return (crop @ affine @ flip)[:, :2].float()


class BatchAugment:
    """uint8 NHWC batch on any device → normalised float NCHW, augmented when `train`."""

    def __init__(self, size: Size, mean: Sequence[float], std: Sequence[float], augment: Sequence[str] = (), train: bool = False):
        if train and not supports(augment):
            raise ValueError(f"device augmentation supports {sorted(GPU_AUGMENTATIONS)}, got {list(augment)}")
        self.size, self.augment, self.train = hw(size), list(augment), train
        # (pixel - 255·mean) / (255·std) as pixel · scale - shift, computed once
        self.scale = 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.shift = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0 * self.scale

    def theta(self, seeds: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """The [n, 2, 3] affine matrices (output → input coordinates) of a batch."""
        return sample_theta(torch.as_tensor(seeds, dtype=torch.int64), self.augment, self.size)

    def __call__(self, images: torch.Tensor, seeds: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
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
            # Drawn where the batch is, from its seeds: no host round trip, no wait on the GPU.
            theta = self.theta(torch.as_tensor(seeds, dtype=torch.int64).to(x.device, non_blocking=True))
            if set(self.augment) <= FLIPS:  # flips only: exact pixel flips, no resampling pass
                x = torch.where((theta[:, 0, 0] < 0).view(-1, 1, 1, 1), x.flip(-1), x)
                x = torch.where((theta[:, 1, 1] < 0).view(-1, 1, 1, 1), x.flip(-2), x)
            else:
                grid = F.affine_grid(theta, list(x.shape), align_corners=False)
                x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        x = x.contiguous(memory_format=layout)
        if self.scale.device != x.device:  # moved once, not copied with every batch
            self.scale, self.shift = self.scale.to(x.device), self.shift.to(x.device)
        return x.mul_(self.scale).sub_(self.shift)
