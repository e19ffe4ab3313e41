"""train.head_fit_prior label_map: a logreg head fit towards the pretrained classifier's own rows.

Each of the competition's classes is matched, on the fold's training rows, to the pretrained class
whose log-probability is highest on average over its rows, one pretrained class per class (frequency
label mapping, Chen et al. 2023, "Understanding and Improving Visual Prompting: A Label-Mapping
Perspective", with the assignment solved exactly by scipy's linear_sum_assignment). That mapping is
a zero-shot head: the new class's logit is its pretrained class's logit. The logistic regression is
then fit around it — logits = matched pretrained logits + A·x + c, with ‖A‖² penalised — so the
penalty pulls towards the pretrained head instead of towards zero (L2-SP, Li et al. 2018, "Explicit
Inductive Bias for Transfer Learning with Convolutional Networks"), and the inner CV over C decides
how far the rows may move it: the grid's smallest C is the pretrained head itself, with each class's
bias fit.

scikit-learn's LogisticRegression has no offset (a fixed term in each logit), so this fit is our
own: the same objective as scikit-learn's (log loss summed over rows + ‖A‖²/2C, softmax or one
sigmoid per class for multi-label), minimised by scipy's L-BFGS, C chosen on the same grid by the
same inner CV (log loss) on the fold's training rows only.
"""
from __future__ import annotations

import numpy as np

INNER_FOLDS = 5  # the inner CV that chooses C, here and in training.head_fit


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(standardised x, mean, scale): what the solvers fit on (here and in training.head_fit); the caller
    folds the scaling back in, w·(x − μ)/σ + b = (w/σ)·x + (b − (w/σ)·μ). A constant column is left
    unscaled (its weight fits 0)."""
    mean, scale = x.mean(0), x.std(0)
    scale[scale < 1e-12] = 1.0
    return (x - mean) / scale, mean, scale


def label_map(logits: np.ndarray, targets: np.ndarray, n_classes: int, multi_label: bool) -> np.ndarray:
    """For each class, the pretrained class of highest mean log-probability over its rows (-1 for a
    class without rows), no pretrained class taken twice."""
    from scipy.optimize import linear_sum_assignment
    from scipy.special import log_softmax

    logp = log_softmax(logits, axis=1)
    has = targets.astype(bool) if multi_label else targets[:, None] == np.arange(n_classes)
    present = np.flatnonzero(has.any(0))
    score = np.stack([logp[has[:, k]].mean(0) for k in present])
    rows, cols = linear_sum_assignment(score, maximize=True)
    mapped = np.full(n_classes, -1)
    mapped[present[rows]] = cols
    return mapped


def _loss(params: np.ndarray, x: np.ndarray, offset: np.ndarray, y: np.ndarray, w: np.ndarray, c_inv: float,
          multi_label: bool) -> tuple[float, np.ndarray]:
    """Weighted log loss + ‖A‖²/2C and its gradient; params = A (classes × features) then the biases."""
    k = offset.shape[1]
    a, b = params[:-k].reshape(k, x.shape[1]), params[-k:]
    t = offset + x @ a.T + b
    if multi_label:  # one sigmoid per class; y holds 0/1 per class
        loss = np.logaddexp(0, t) - y * t
        g = 1 / (1 + np.exp(-t)) - y
    else:  # softmax; y one-hot
        top = t.max(1, keepdims=True)
        lse = top + np.log(np.exp(t - top).sum(1, keepdims=True))
        loss, g = lse - (t * y).sum(1, keepdims=True), np.exp(t - lse) - y
    g = g * w
    value = float((loss * w).sum() + 0.5 * c_inv * (a * a).sum())
    return value, np.concatenate([(g.T @ x + c_inv * a).ravel(), g.sum(0)])


def _fit(x, offset, y, w, c, multi_label, start=None) -> np.ndarray:
    from scipy.optimize import minimize

    k = offset.shape[1]
    start = np.zeros(k * x.shape[1] + k) if start is None else start
    done = minimize(_loss, start, args=(x, offset, y, w, 1.0 / c, multi_label), jac=True, method="L-BFGS-B",
                    options={"maxiter": 2000})
    return done.x


def _log_loss(params, x, offset, y, multi_label) -> float:
    return _loss(params, x, offset, y, np.ones((len(x), 1)), 0.0, multi_label)[0]


def _weights(y: np.ndarray, multi_label: bool, balanced: bool) -> np.ndarray:
    """Row weights (rows × 1, or rows × classes for multi-label): 1, or scikit-learn's balanced n / (k × count)."""
    if not balanced:
        return np.ones((len(y), 1))
    if multi_label:  # per class: its positives and negatives weigh half the rows each
        pos = y.sum(0).clip(1)
        return np.where(y == 1, len(y) / (2 * pos), len(y) / (2 * (len(y) - pos).clip(1)))
    counts = y.sum(0)
    return (y @ (len(y) / (y.shape[1] * counts.clip(1))))[:, None]


def inner_splits(x: np.ndarray, y: np.ndarray, folds: int, seed: int, groups: np.ndarray | None = None,
                 stratified: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    """The inner folds that choose a head's C: stratified by class (not for multi-label targets), the
    views of one row (`groups`) kept in one fold."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    if stratified:
        splitter = (StratifiedKFold(folds, shuffle=True, random_state=seed) if groups is None
                    else StratifiedGroupKFold(folds, shuffle=True, random_state=seed))
    else:
        splitter = KFold(folds, shuffle=True, random_state=seed) if groups is None else GroupKFold(folds)
    return list(splitter.split(x, y, groups))


def fit_towards(x: np.ndarray, offset: np.ndarray, targets: np.ndarray, multi_label: bool, c_grid: np.ndarray,
                balanced: bool = False, seed: int = 0, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """(A [classes, features], c [classes], C) of logits = offset + A·x + c on standardised `x` (the
    caller folds the scaling in), C chosen by inner CV (log loss) on these rows; `targets` class
    indices, or 0/1 per class for multi-label."""
    k = offset.shape[1]
    y = targets.astype(float) if multi_label else np.eye(k)[targets.astype(int)]
    w = _weights(y, multi_label, balanced)
    label = None if multi_label else targets.astype(int)
    fewest = INNER_FOLDS if multi_label else int(np.unique(label, return_counts=True)[1].min())
    folds = min(INNER_FOLDS, fewest)
    if folds < 2:  # a class with one row: nothing to cross-validate
        params, chosen = _fit(x, offset, y, w, 1.0, multi_label), 1.0
    else:
        splits = inner_splits(x, label if label is not None else y[:, 0], folds, seed, groups, stratified=not multi_label)
        losses = np.zeros(len(c_grid))
        for train, held in splits:
            params = None  # each C starts from the last one's fit (the grid runs from the strongest penalty)
            for i, c in enumerate(c_grid):
                params = _fit(x[train], offset[train], y[train], w[train], c, multi_label, params)
                losses[i] += _log_loss(params, x[held], offset[held], y[held], multi_label)
        chosen = float(c_grid[int(np.argmin(losses))])
        params = _fit(x, offset, y, w, chosen, multi_label)
    return params[:-k].reshape(k, x.shape[1]), params[-k:], chosen


def fit_prior(x: np.ndarray, logits: np.ndarray, targets: np.ndarray, n_classes: int, multi_label: bool,
              c_grid: np.ndarray, absent: float, balanced: bool = False, seed: int = 0,
              groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(A [classes, x's columns], c [classes], rows, what was fit): the head's logit of class k is
    logits[:, rows[k]] + A[k]·x + c[k], with rows[k] = -1 for a class left constant (no rows: `absent`;
    multi-label, every row alike: ±`absent`), which gets no pretrained logit."""
    mapped = label_map(logits, targets, n_classes, multi_label)
    a, c, rows = np.zeros((n_classes, x.shape[1])), np.full(n_classes, absent), np.full(n_classes, -1)
    if multi_label:
        counts = targets.sum(0)
        c[counts == len(targets)] = -absent
        fitted = np.flatnonzero((counts > 0) & (counts < len(targets)))
        y = targets[:, fitted]
    else:
        fitted = np.flatnonzero(mapped >= 0)
        y = np.searchsorted(fitted, targets.astype(int))  # class indices among the fitted ones
    z, mean, scale = standardise(x)
    fa, fc, chosen = fit_towards(z, logits[:, mapped[fitted]], y, multi_label, c_grid, balanced, seed, groups)
    a[fitted] = fa / scale  # the scaling folded in (standardise)
    c[fitted] = fc - a[fitted] @ mean
    rows[fitted] = mapped[fitted]
    return a, c, rows, {"C": [chosen], "label_map": mapped.tolist()}
