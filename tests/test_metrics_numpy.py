"""The kit's metrics are scikit-learn's computed in numpy (greedy selection and auto's final choice
score thousands of combinations): each must give scikit-learn's number, ties and edge cases included."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from competition.core.metrics import METRICS, _binary_f1_threshold, decide, log_loss


def _sklearn_f1_threshold(y: np.ndarray, positive: np.ndarray) -> float:
    """The best-F1 threshold as scikit-learn's precision_recall_curve finds it (the lowest of equal bests)."""
    precision, recall, thresholds = skm.precision_recall_curve(y, positive)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    return float(thresholds[int(np.argmax(f1))])


def _cases(rng):
    """Binary and 4-class probabilities, some rounded to two decimals so that scores tie."""
    for n_classes in (2, 4):
        for rounded in (False, True):
            for n in (7, 300):
                y = rng.integers(0, n_classes, n)
                p = rng.dirichlet(np.ones(n_classes), n)
                yield y, (np.round(p, 2) if rounded else p)


def test_each_metric_gives_scikit_learns_number():
    rng = np.random.default_rng(0)
    for y, p in _cases(rng):
        n = p.shape[1]
        assert METRICS["accuracy"](y, p) == pytest.approx(skm.accuracy_score(y, p.argmax(1)), abs=1e-12)
        assert METRICS["f1_macro"](y, p) == pytest.approx(
            skm.f1_score(y, p.argmax(1), average="macro", labels=np.arange(n), zero_division=0), abs=1e-12)
        clipped = np.clip(p, 1e-15, 1 - 1e-15)
        assert METRICS["log_loss"](y, p) == pytest.approx(
            skm.log_loss(y, clipped / clipped.sum(1, keepdims=True), labels=np.arange(n)), rel=1e-9)
        if len(np.unique(y)) < 2:
            continue
        if n == 2:
            assert METRICS["roc_auc"](y, p) == pytest.approx(skm.roc_auc_score(y, p[:, 1]), abs=1e-12)
            for th in (None, [0.3], [0.71]):
                d = decide(p, False, th if th is not None else [0.5])
                assert METRICS["f1"](y, p, th) == pytest.approx(skm.f1_score(y, d, zero_division=0), abs=1e-12)
            fitted = _binary_f1_threshold(y, p[:, 1])[0]
            best = _sklearn_f1_threshold(y, p[:, 1])
            lower = p[:, 1][p[:, 1] < best]
            assert fitted == pytest.approx((best + lower.max()) / 2 if len(lower) else best, abs=1e-15)
        else:
            ovr = [skm.roc_auc_score(y == k, p[:, k]) for k in np.unique(y) if 0 < (y == k).sum() < len(y)]
            assert METRICS["roc_auc"](y, p) == pytest.approx(np.mean(ovr), abs=1e-12)
    labels, scores = rng.integers(0, 2, (50, 3)), np.round(rng.random((50, 3)), 1)
    labels[:4] = 0  # rows with no labels
    assert METRICS["mean_roc_auc"](labels, scores) == pytest.approx(
        np.mean([skm.roc_auc_score(labels[:, k], scores[:, k]) for k in range(3)]), abs=1e-12)
    for th in (None, [0.3, 0.5, 0.8]):
        d = decide(scores, True, th)
        for name, average in (("f1_samples", "samples"), ("f1_micro", "micro")):
            assert METRICS[name](labels, scores, th) == pytest.approx(
                skm.f1_score(labels, d, average=average, zero_division=1), abs=1e-12)
    assert METRICS["log_loss"](labels, scores) == pytest.approx(np.mean(
        [skm.log_loss(labels[:, k], np.clip(scores[:, k], 1e-15, 1 - 1e-15), labels=[0, 1]) for k in range(3)]), rel=1e-9)


def test_edge_cases_score_as_scikit_learn_does():
    y = np.zeros(5, dtype=np.int64)
    p = np.tile([0.9, 0.1], (5, 1))
    # No positive rows and none predicted: F1 0 (zero_division=0), as scikit-learn.
    assert METRICS["f1"](y, p) == skm.f1_score(y, decide(p, False, [0.5]), zero_division=0) == 0.0
    # A class never true nor predicted counts 0 in the macro mean.
    y3, p3 = np.array([0, 1, 0, 1]), np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
    assert METRICS["f1_macro"](y3, p3) == pytest.approx(
        skm.f1_score(y3, p3.argmax(1), average="macro", labels=np.arange(3), zero_division=0), abs=1e-12)
    with pytest.raises(ValueError, match="Only one class"):
        METRICS["roc_auc"](y, p)
    assert _binary_f1_threshold(y, p[:, 1]) == [0.5]


def test_log_loss_renormalises_rows_and_clips_zeros_as_the_kit_defines_it():
    """Greedy selection breaks ties by this log loss thousands of times (single-label with rows to
    renormalise and probabilities of 0, and multi-label): scikit-learn's on the clipped, renormalised rows."""
    rng = np.random.default_rng(1)
    single = rng.dirichlet(np.ones(4), 60) * 1.3  # rows that do not sum to 1, and a few probabilities of 0
    single[:3, 0] = 0.0
    y = rng.integers(0, 4, 60)
    clipped = np.clip(single, 1e-15, 1 - 1e-15)
    assert log_loss(y, single) == pytest.approx(
        skm.log_loss(y, clipped / clipped.sum(1, keepdims=True), labels=np.arange(4)), rel=1e-12)
    multi, labels = np.clip(rng.random((60, 5)), 1e-15, 1 - 1e-15), rng.integers(0, 2, (60, 5))
    assert log_loss(labels, multi) == pytest.approx(
        np.mean([skm.log_loss(labels[:, k], multi[:, k], labels=[0, 1]) for k in range(5)]), rel=1e-12)
