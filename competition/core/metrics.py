"""Competition metrics: one table, each entry knowing its direction, the target formats it scores,
and whether its decisions come from thresholds fit on out-of-fold rows.

Truth is a class index per row (single-label) or a 0/1 matrix [n, classes] (multi-label);
probabilities are [n, classes] either way. For a binary target, column 1 is the positive class.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from competition.core.errors import CompetitionError
from competition.core.schema import Config

SINGLE, BINARY, MULTI = "single", "binary", "multi_label"  # BINARY: single-label with two classes
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)  # per-class candidates for multi-label F1


def decide(probs: np.ndarray, multi_label: bool, thresholds: Sequence[float] | None = None) -> np.ndarray:
    """Probabilities → decisions: a class index per row (argmax, or for a binary target the positive
    class at `thresholds[0]`), or a 0/1 matrix for multi-label (each class at its own threshold,
    0.5 unless given)."""
    probs = np.asarray(probs, dtype=np.float64)
    if multi_label:
        th = np.full(probs.shape[1], 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
        return (probs >= th[None, :]).astype(np.int64)
    if thresholds is not None:
        return (probs[:, 1] >= thresholds[0]).astype(np.int64)
    return probs.argmax(1)


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[np.ndarray, np.ndarray, Sequence[float] | None], float]  # (truth, probabilities, thresholds)
    higher_is_better: bool
    formats: tuple[str, ...]  # target formats it scores
    thresholded: bool = False  # decisions at thresholds fit on out-of-fold rows (F1 metrics)

    def __call__(self, y_true: np.ndarray, probs: np.ndarray, thresholds: Sequence[float] | None = None) -> float:
        return float(self.fn(np.asarray(y_true), np.asarray(probs, dtype=np.float64), thresholds))

    def fit_thresholds(self, y_true: np.ndarray, probs: np.ndarray) -> list[float] | None:
        """The thresholds that score best on these rows, or None for a metric of probabilities or argmax."""
        if not self.thresholded:
            return None
        y, p = np.asarray(y_true), np.asarray(probs, dtype=np.float64)
        return _binary_f1_threshold(y, p[:, 1]) if y.ndim == 1 else _ascend_thresholds(self, y, p)

    def best(self, y_true: np.ndarray, probs: np.ndarray) -> float:
        """The score at thresholds fit on these same rows: what early stopping and the best-epoch
        CV use (optimistic for thresholded metrics; `predict` also reports a cross-fitted score)."""
        return self(y_true, probs, self.fit_thresholds(y_true, probs))

    def better(self, new: float, old: float | None) -> bool:
        """True when `new` improves on `old` (None = nothing yet)."""
        if old is None:
            return True
        return new > old if self.higher_is_better else new < old


def _binary_f1_threshold(y: np.ndarray, positive: np.ndarray) -> list[float]:
    """The positive-class threshold with the best F1 on these rows (scikit-learn's
    precision_recall_curve, in numpy: each distinct score a threshold, the lowest of equal bests),
    halfway to the next lower score so that test rows just under the fitted one are not decided by
    a hair."""
    if y.min() == y.max():
        return [0.5]
    order = np.argsort(positive, kind="mergesort")[::-1]
    score, truth = positive[order], y[order]
    ends = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]  # the last row of each distinct score
    tps = np.cumsum(truth)[ends]
    precision, recall = tps / (ends + 1), tps / tps[-1]
    f1 = (2 * precision * recall / np.maximum(precision + recall, 1e-12))[::-1]
    best = float(score[ends][::-1][int(np.argmax(f1))])
    lower = positive[positive < best]
    return [(best + float(lower.max())) / 2 if len(lower) else best]


def _ascend_thresholds(metric: Metric, y: np.ndarray, p: np.ndarray, passes: int = 2) -> list[float]:
    """Per-class thresholds by coordinate ascent on the metric itself, over THRESHOLD_GRID, from 0.5:
    the classes interact in sample- and micro-averaged F1, so each is tuned with the others fixed."""
    th = np.full(p.shape[1], 0.5)
    best = metric.fn(y, p, th)
    for _ in range(passes):
        for k in range(p.shape[1]):
            for t in THRESHOLD_GRID:
                trial = th.copy()
                trial[k] = t
                score = metric.fn(y, p, trial)
                if score > best:
                    best, th = score, trial
    return [float(t) for t in th]


# The metrics are scikit-learn's, computed in numpy: a blend's greedy selection and auto's final choice
# score thousands of combinations, and scikit-learn's input checks cost milliseconds a call (seconds of
# a small budget), more than the sums. tests/test_metrics_numpy.py checks each against scikit-learn's.


def binary_auc(y: np.ndarray, score: np.ndarray) -> float:
    """roc_auc_score of 0/1 truth: the Mann-Whitney statistic, tied scores at their mean rank."""
    positive = y == 1
    n1 = int(positive.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        raise ValueError("Only one class present in y_true. ROC AUC score is not defined in that case.")
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse.reshape(-1)]
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Probabilities clipped to [1e-15, 1 - 1e-15], each row renormalised; multi-label: the mean binary loss."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-15, 1.0 - 1e-15)
    if y.ndim == 2:
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return float(-np.mean(np.log((p / p.sum(1, keepdims=True))[np.arange(len(y)), y])))


def _f1_of_counts(hits: np.ndarray, predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """F1 per class from its counts; 0 where a class is neither true nor predicted (zero_division=0)."""
    size = predicted + true
    return np.where(size > 0, 2 * hits / np.maximum(size, 1), 0.0)


def _accuracy(y: np.ndarray, p: np.ndarray, th) -> float:
    return float(np.mean(decide(p, False, th) == y))


def _f1_macro(y: np.ndarray, p: np.ndarray, th) -> float:
    d, n = decide(p, False, th), p.shape[1]
    counts = [np.bincount(v, minlength=n) for v in (y[d == y], d, y)]
    return float(np.mean(_f1_of_counts(*counts)))


def _f1_positive(y: np.ndarray, p: np.ndarray, th) -> float:
    d = decide(p, False, th if th is not None else [0.5])
    return float(_f1_of_counts(np.sum((d == 1) & (y == 1)), np.sum(d == 1), np.sum(y == 1)))


def _log_loss(y: np.ndarray, p: np.ndarray, th) -> float:
    return log_loss(y, p)


def _roc_auc(y: np.ndarray, p: np.ndarray, th) -> float:
    if p.shape[1] == 2:
        return binary_auc(y, p[:, 1])
    present = np.unique(y)
    # One-vs-rest macro AUC over the classes present, as Kaggle's multi-class AUC scores.
    scores = [binary_auc((y == k).astype(np.int64), p[:, k]) for k in present if 0 < (y == k).sum() < len(y)]
    return float(np.mean(scores)) if scores else float("nan")


def _mean_roc_auc(y: np.ndarray, p: np.ndarray, th) -> float:
    # Column-wise mean over the classes with both outcomes present in these rows.
    scores = [binary_auc(y[:, k], p[:, k]) for k in range(y.shape[1]) if 0 < y[:, k].sum() < len(y)]
    return float(np.mean(scores)) if scores else float("nan")


def _f1_samples(y: np.ndarray, p: np.ndarray, th) -> float:
    """scikit-learn's f1_score(average="samples", zero_division=1) in numpy: the threshold search
    calls it hundreds of times an epoch, where scikit-learn's checks cost more than the sums.
    A row with no labels, predicted with none, scores 1 (tests/test_metrics_numpy.py checks the match)."""
    d = decide(p, True, th)
    hits, size = (d * y).sum(1), d.sum(1) + y.sum(1)
    return float(np.mean(np.where(size > 0, 2 * hits / np.maximum(size, 1), 1.0)))


def _f1_micro(y: np.ndarray, p: np.ndarray, th) -> float:
    """scikit-learn's f1_score(average="micro", zero_division=1) in numpy, for the same reason."""
    d = decide(p, True, th)
    size = d.sum() + y.sum()
    return float(2 * (d * y).sum() / size) if size > 0 else 1.0


METRICS: dict[str, Metric] = {
    "accuracy": Metric("accuracy", _accuracy, True, (SINGLE, BINARY)),
    "f1_macro": Metric("f1_macro", _f1_macro, True, (SINGLE, BINARY)),
    "f1": Metric("f1", _f1_positive, True, (BINARY,), thresholded=True),
    "log_loss": Metric("log_loss", _log_loss, False, (SINGLE, BINARY, MULTI)),
    "roc_auc": Metric("roc_auc", _roc_auc, True, (SINGLE, BINARY)),
    "f1_samples": Metric("f1_samples", _f1_samples, True, (MULTI,), thresholded=True),
    "f1_micro": Metric("f1_micro", _f1_micro, True, (MULTI,), thresholded=True),
    "mean_roc_auc": Metric("mean_roc_auc", _mean_roc_auc, True, (MULTI,)),
}

# Metrics scored on probabilities: for these a one-column binary sample gets the positive class's
# probability, not a label (AUC on hard labels throws most of the score away).
PROBABILITY_METRICS = frozenset({"log_loss", "roc_auc", "mean_roc_auc"})

# Metrics with no upper bound; every other one scores in [0, 1] (the report draws those on [0, 1]).
UNBOUNDED_METRICS = frozenset({"log_loss"})


def check_target_keys(cfg: Config) -> None:
    """The metric, the fold strategy and the target keys must suit the target's format."""
    d, multi = cfg.data, cfg.data.target_format == "multi_label"
    metric = METRICS[cfg.train.metric]
    formats = {MULTI} if multi else {SINGLE, BINARY}
    if not formats & set(metric.formats):
        fitting = ", ".join(n for n, m in METRICS.items() if formats & set(m.formats))
        raise CompetitionError(f"config key train.metric: {metric.name} does not score a {d.target_format} target "
                               f"(data.target_format); use one of {fitting}")
    if multi and cfg.folds.strategy in ("stratified", "stratified_group"):
        raise CompetitionError(f"config key folds.strategy: {cfg.folds.strategy} balances single labels; a multi_label "
                               f"target uses multilabel_stratified (or kfold, group)")
    if not multi and cfg.folds.strategy == "multilabel_stratified":
        raise CompetitionError("config key folds.strategy: multilabel_stratified is for data.target_format: multi_label")
    if d.target_columns is not None and not multi:
        raise CompetitionError("config key data.target_columns: one 0/1 column per class is a multi_label target "
                               "(set data.target_format: multi_label)")
    if d.target_columns is not None and len(d.target_columns) < 2:
        raise CompetitionError("config key data.target_columns: name at least 2 class columns")
    if d.sample_target_column is not None and d.target_columns is not None:
        raise CompetitionError("config key data.sample_target_column: with data.target_columns the sample has a column "
                               "per class, named as the classes")
    if d.positive_class is not None and multi:
        raise CompetitionError("config key data.positive_class: applies to a binary single-label target")
