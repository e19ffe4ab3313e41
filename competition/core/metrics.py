"""Competition metrics: one table, each entry knowing whether higher is better."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]  # (true class indices, probabilities [n, k])
    higher_is_better: bool

    def __call__(self, y_true: np.ndarray, probs: np.ndarray) -> float:
        return float(self.fn(np.asarray(y_true), np.asarray(probs, dtype=np.float64)))

    def better(self, new: float, old: float | None) -> bool:
        """True when `new` improves on `old` (None = nothing yet)."""
        if old is None:
            return True
        return new > old if self.higher_is_better else new < old


# scikit-learn is imported where a metric needs it: it costs a second of every run's start.


def _accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean(p.argmax(1) == y))


def _f1_macro(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn import metrics as skm

    return skm.f1_score(y, p.argmax(1), average="macro", labels=np.arange(p.shape[1]), zero_division=0)


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn import metrics as skm

    p = np.clip(p, 1e-15, 1.0)
    return skm.log_loss(y, p / p.sum(1, keepdims=True), labels=np.arange(p.shape[1]))


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn import metrics as skm

    if p.shape[1] == 2:
        return skm.roc_auc_score(y, p[:, 1])
    present = np.unique(y)
    # One-vs-rest macro AUC over the classes present, as Kaggle's multi-class AUC scores.
    scores = [skm.roc_auc_score(y == k, p[:, k]) for k in present if 0 < (y == k).sum() < len(y)]
    return float(np.mean(scores)) if scores else float("nan")


METRICS: dict[str, Metric] = {
    "accuracy": Metric("accuracy", _accuracy, True),
    "f1_macro": Metric("f1_macro", _f1_macro, True),
    "log_loss": Metric("log_loss", _log_loss, False),
    "roc_auc": Metric("roc_auc", _roc_auc, True),
}
