"""The training and validation losses a target needs: cross-entropy over classes (torch's, which
takes class indices or probability rows, class weights and label smoothing), or binary
cross-entropy per class for multi-label; focal variants of both."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from competition.core.schema import TrainConfig
from competition.data.targets import Target


class FocalLoss(nn.Module):
    """Softmax focal loss, −Σ_c w_c · y_c · (1 − p_c)^γ · log p_c, over class indices or probability
    rows (mixed or pseudo-labelled targets), with label smoothing and class weights. Ours because
    neither torch nor timm has a softmax focal loss (torchvision's is the sigmoid one, used for
    multi-label below)."""

    def __init__(self, gamma: float, weight: torch.Tensor | None = None, smoothing: float = 0.0):
        super().__init__()
        self.gamma, self.smoothing = gamma, smoothing
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1)
        k = logits.shape[1]
        if target.ndim == 1:
            target = F.one_hot(target.long(), k).float()
        if self.smoothing:
            target = target * (1 - self.smoothing) + self.smoothing / k
        per_class = -target * (1 - log_p.exp()).pow(self.gamma) * log_p
        if self.weight is not None:
            per_class = per_class * self.weight
        return per_class.sum(1).mean()


class MultiLabelLoss(nn.Module):
    """Per-class binary cross-entropy with logits (or torchvision's sigmoid focal loss) against 0/1
    targets pulled towards 0.5 by `smoothing` (y · (1 − s) + s / 2), with per-class positive weights.
    timm's BinaryCrossEntropy smooths only targets it one-hot encodes itself from class indices; a
    multi-label 0/1 matrix would pass through it unsmoothed."""

    def __init__(self, smoothing: float = 0.0, pos_weight: torch.Tensor | None = None, gamma: float | None = None):
        super().__init__()
        self.smoothing, self.gamma = smoothing, gamma
        self.register_buffer("pos_weight", pos_weight, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = logits.float(), target.float()
        if self.smoothing:
            target = target * (1 - self.smoothing) + 0.5 * self.smoothing
        if self.gamma is None:
            return F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight)
        loss = sigmoid_focal_loss(logits, target, alpha=-1, gamma=self.gamma, reduction="none")
        if self.pos_weight is not None:  # the positive side of each class weighted as BCE's pos_weight does
            loss = loss * (1 + (self.pos_weight - 1) * target)
        return loss.mean()


def train_loss(target: Target, t: TrainConfig, weights: torch.Tensor | None, smoothing: float) -> nn.Module:
    """The training loss; `smoothing` is 0 where the batch mixer has folded label smoothing into
    soft targets already."""
    focal = t.loss == "focal"
    if target.multi_label:
        return MultiLabelLoss(smoothing, weights, t.focal_gamma if focal else None)
    if focal:
        return FocalLoss(t.focal_gamma, weights, smoothing)
    return nn.CrossEntropyLoss(weight=weights, label_smoothing=smoothing)


def eval_loss(target: Target) -> nn.Module:
    """Validation loss, unweighted and unsmoothed: comparable across configs."""
    return MultiLabelLoss() if target.multi_label else nn.CrossEntropyLoss()
