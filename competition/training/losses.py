"""The training and validation losses a target needs: cross-entropy over classes, or binary
cross-entropy per class for multi-label."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from competition.data.targets import Target


class SmoothedBCE(nn.Module):
    """Binary cross-entropy with logits against 0/1 targets pulled towards 0.5 by `smoothing`
    (y · (1 − s) + s / 2). timm's BinaryCrossEntropy smooths only targets it one-hot encodes itself
    from class indices; a multi-label 0/1 matrix would pass through it unsmoothed."""

    def __init__(self, smoothing: float = 0.0):
        super().__init__()
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(logits.dtype)
        if self.smoothing:
            target = target * (1 - self.smoothing) + 0.5 * self.smoothing
        return F.binary_cross_entropy_with_logits(logits, target)


def train_loss(target: Target, label_smoothing: float) -> nn.Module:
    return SmoothedBCE(label_smoothing) if target.multi_label else nn.CrossEntropyLoss(label_smoothing=label_smoothing)


def eval_loss(target: Target) -> nn.Module:
    """Validation loss, unsmoothed: comparable across configs."""
    return SmoothedBCE() if target.multi_label else nn.CrossEntropyLoss()
