"""Mixup and CutMix on the batch where the model runs — the GPU batch on the device path — through
timm's Mixup, for every kind of target the kit trains with: class indices, probability rows
(pseudo-labels) and multi-label 0/1 rows. Soft targets come out, label smoothing folded in."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup

from competition.core.distributed import mix_seed
from competition.core.schema import TrainConfig


class BatchMix:
    """Soft targets for every batch; timm's Mixup/CutMix on the batches chosen to mix.

    timm's Mixup draws its lambda, its mixup-or-CutMix choice and its box from numpy's global
    generator, reseeded here before each batch from (the epoch's seed, the batch's number): a
    resumed run mixes exactly as an uninterrupted one."""

    def __init__(self, t: TrainConfig, num_classes: int, multi_label: bool):
        self.num_classes, self.multi_label, self.smoothing = num_classes, multi_label, t.label_smoothing
        self.seed, self.batch, self.mixing = 0, 0, True
        self.mixup = None
        if t.mixup_alpha > 0 or t.cutmix_alpha > 0:
            self.mixup = Mixup(mixup_alpha=t.mixup_alpha, cutmix_alpha=t.cutmix_alpha, prob=t.mix_prob,
                               label_smoothing=t.label_smoothing, num_classes=num_classes, mode="batch",
                               multi_label=multi_label)

    def soft(self, y: torch.Tensor) -> torch.Tensor:
        """Class indices, probability rows or 0/1 rows → smoothed target rows (float)."""
        s, k = self.smoothing, self.num_classes
        if self.multi_label:
            return y.float() * (1 - s) + 0.5 * s
        rows = F.one_hot(y.long(), k).float() if y.ndim == 1 else y.float()
        return rows * (1 - s) + s / k

    def start_epoch(self, seed: int, mixing: bool, first_batch: int = 0) -> None:
        """The epoch's seed, whether it mixes (train.mix_off_epochs), and the batch it starts at."""
        self.seed, self.mixing, self.batch = seed, mixing, first_batch

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.soft(y)
        batch, self.batch = self.batch, self.batch + 1
        # timm mixes a batch with its reverse, which needs an even batch: a lone odd last batch goes unmixed.
        if self.mixup is None or not self.mixing or len(x) % 2:
            return x, y
        np.random.seed(mix_seed(self.seed, batch))
        # timm's own lambda and CutMix box (with its area correction), applied in place to the images;
        # the targets mix with the same lambda, whatever their kind.
        lam = self.mixup._mix_batch(x)
        return x, y * lam + y.flip(0) * (1 - lam)

