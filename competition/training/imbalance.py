"""Class imbalance: rows drawn by class frequency (train.sampler), and loss weights per class
(train.class_weights)."""
from __future__ import annotations

import numpy as np
import torch


def sampler_weights(mode: str, targets: np.ndarray) -> np.ndarray | None:
    """Each training row's chance of being drawn: None for a plain shuffle; ∝ 1/count of its class
    (balanced: every class drawn equally often) or 1/√count (sqrt: halfway, on the log scale).
    Rows with soft targets (pseudo-labels) count for their most likely class."""
    if mode == "shuffle":
        return None
    labels = targets.argmax(1) if targets.ndim == 2 else targets
    counts = np.bincount(labels).astype(np.float64)
    per_row = 1.0 / counts[labels]
    return np.sqrt(per_row) if mode == "sqrt" else per_row


def class_weights(mode: str, targets: np.ndarray, num_classes: int, multi_label: bool) -> torch.Tensor | None:
    """train.class_weights for a fold's training answers. balanced: scikit-learn's n / (classes ×
    count) per class; for multi-label, each class's positive weight negatives / positives (the
    `pos_weight` of binary cross-entropy). Probability rows (pseudo-labels) count for their most
    likely class."""
    if mode == "none":
        return None
    if not multi_label and targets.ndim == 2:
        targets = targets.argmax(1)
    if multi_label:
        positives = targets.sum(0)
        return torch.tensor((len(targets) - positives) / np.maximum(positives, 1), dtype=torch.float32)
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(targets)
    weights = np.ones(num_classes)
    weights[present] = compute_class_weight("balanced", classes=present, y=targets)
    return torch.tensor(weights, dtype=torch.float32)
