"""Combining runs' probabilities: greedy ensemble selection on the pooled out-of-fold rows (weights),
the plain mean, or the mean of ranks; the cross-fitted estimate of what a fitted blend scores on
rows its weights never saw; and auto's last choice, between the best run alone and a blend of the
best, each scored on rows it was not chosen on."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from competition.core.errors import CompetitionError
from competition.core.metrics import Metric, decide, log_loss

# Greedy steps: each adds one run to the bag, so weights come in 1/ROUNDS at the finest.
ROUNDS = 40
METHODS = ("weights", "mean", "rank")  # --method
RANK_METRICS = ("roc_auc", "mean_roc_auc")  # metrics that read only the order of each column


def _key(metric: Metric, y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Bigger is better: the metric in its direction, then (for ties, frequent with accuracy on a
    few hundred rows) the lower log loss, which still moves when the decisions do not."""
    score = metric.best(y, p)
    return (score if metric.higher_is_better else -score, -log_loss(y, p))


def greedy_weights(metric: Metric, y: np.ndarray, preds: Sequence[np.ndarray], rounds: int = ROUNDS) -> np.ndarray:
    """Ensemble selection with replacement (Caruana, Niculescu-Mizil, Crew and Ksikes, 2004):
    start from the best run, add whichever run (again, perhaps) most improves the blend's score,
    and keep the best bag seen. Weights are non-negative, sum to 1, and the first bag is the best
    single run, so on these rows the blend never scores below it."""
    counts = np.zeros(len(preds))
    total = np.zeros_like(preds[0], dtype=np.float64)
    best_key, best_counts = None, None
    for step in range(1, rounds + 1):
        keys = [_key(metric, y, (total + p) / step) for p in preds]
        i = max(range(len(preds)), key=keys.__getitem__)
        counts[i] += 1
        total += preds[i]
        if best_key is None or keys[i] > best_key:
            best_key, best_counts = keys[i], counts.copy()
    return best_counts / best_counts.sum()


def column_ranks(p: np.ndarray) -> np.ndarray:
    """Each column's ranks over the rows, scaled to [0, 1] (ties share their mean rank)."""
    from scipy.stats import rankdata

    return (rankdata(p, axis=0) - 1) / max(len(p) - 1, 1)


def combine(preds: Sequence[np.ndarray], weights: np.ndarray, method: str) -> np.ndarray:
    """The weighted mean of the runs' probabilities, or of their column ranks for `rank`."""
    parts = [column_ranks(p) for p in preds] if method == "rank" else preds
    return sum(w * p for w, p in zip(weights, parts, strict=True))


def check_method(method: str, metric: Metric) -> None:
    if method == "rank" and metric.name not in RANK_METRICS:
        raise CompetitionError(f"--method rank: averaged ranks are not probabilities, and {metric.name} scores "
                               f"more than their order; rank suits {', '.join(RANK_METRICS)}: use weights or mean")


def fit_weights(method: str, metric: Metric, y: np.ndarray, preds: Sequence[np.ndarray]) -> np.ndarray:
    if method == "weights":
        return greedy_weights(metric, y, preds)
    return np.full(len(preds), 1 / len(preds))


def cross_fit(method: str, metric: Metric, y: np.ndarray, fold: np.ndarray,
              preds: Sequence[np.ndarray]) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Each fold's rows blended with weights fit on the other folds' rows, in turn: a score of
    these probabilities is what the fitted blend earns on rows its weights never saw. Ranks are
    taken over every out-of-fold row, as in the blend itself."""
    parts = [column_ranks(p) for p in preds] if method == "rank" else preds
    return across_folds(lambda y_, p_: fit_weights(method, metric, y_, p_), y, fold, preds, parts)


def across_folds(fit: Callable[[np.ndarray, list[np.ndarray]], np.ndarray], y: np.ndarray, fold: np.ndarray,
                 preds: Sequence[np.ndarray], parts: Sequence[np.ndarray] | None = None
                 ) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Each fold's rows combined with the weights `fit` gives on the other folds' rows (of `preds`;
    `parts` are what the weights combine, the predictions themselves unless given), and each fold's
    weights."""
    parts = preds if parts is None else parts
    out = np.zeros_like(parts[0], dtype=np.float64)
    weights = {}
    for k in np.unique(fold):
        held = fold == k
        w = fit(y[~held], [p[~held] for p in preds])
        out[held] = sum(wi * p[held] for wi, p in zip(w, parts, strict=True) if wi > 0)
        weights[str(int(k))] = [float(v) for v in w]
    return out, weights


def ranked(metric: Metric, y: np.ndarray, preds: Sequence[np.ndarray]) -> list[int]:
    """The runs' indexes, best first: the metric on these rows, then the lower log loss."""
    keys = [_key(metric, y, p) for p in preds]
    return sorted(range(len(preds)), key=keys.__getitem__, reverse=True)


def best_alone(metric: Metric, y: np.ndarray, preds: Sequence[np.ndarray]) -> np.ndarray:
    """All the weight on the run that scores best on these rows."""
    w = np.zeros(len(preds))
    w[ranked(metric, y, preds)[0]] = 1.0
    return w


def blend_of(metric: Metric, y: np.ndarray, preds: Sequence[np.ndarray], runs: Sequence[int]) -> np.ndarray:
    """Greedy weights over the given runs (none on the others)."""
    w = np.zeros(len(preds))
    w[list(runs)] = greedy_weights(metric, y, [preds[i] for i in runs])
    return w


def blend_of_best(metric: Metric, y: np.ndarray, preds: Sequence[np.ndarray], top: int) -> np.ndarray:
    """Greedy weights over the `top` runs that score best on these rows (none on the others)."""
    return blend_of(metric, y, preds, ranked(metric, y, preds)[:top])


def scorings(runs: int, folds: int, top: int, portfolio: int = 0) -> int:
    """How many combinations auto's final choice and its blend score: each way's ranking of the runs on
    each fold's complement (and one on every row); greedy selection once a fold in the choice, over the
    best `top` and over the portfolio's runs, and in `blend` (of the larger) on every row and once a fold."""
    best = min(runs, top) * (runs > 1)
    pooled = portfolio * (portfolio > 1)
    return ((folds + 1) * runs + (runs > 1) * folds * runs + folds * ROUNDS * (best + pooled)
            + (folds + 1) * ROUNDS * max(best, pooled))


def seconds_per_scoring(metric: Metric, y: np.ndarray, p: np.ndarray, repeat: int = 3) -> float:
    """One scoring's seconds (the metric at its best thresholds and the tie's log loss) on these rows:
    tens of microseconds for accuracy on a few hundred rows, more for a metric that fits thresholds."""
    import time

    _key(metric, y, p)
    began = time.perf_counter()
    for _ in range(repeat):
        _key(metric, y, p)
    return (time.perf_counter() - began) / repeat


@dataclass
class Choice:
    """Auto's last choice: the best run alone or a blend of the best, whichever scores higher on rows
    it was not chosen on."""

    way: str  # "best", "blend" or "portfolio"
    order: list[int]  # the runs' indexes, best first on every row
    scores: dict[str, float]  # each way's score, every step of it (the ranking included) made on the other folds
    best_cv: float  # the first run's out-of-fold score, as predict's CV as submitted: what choosing it flatters


def held_out_score(metric: Metric, y: np.ndarray, fold: np.ndarray, probs: np.ndarray) -> float:
    """The metric of out-of-fold probabilities as predict's CV as submitted scores them: a thresholded
    metric decides each fold's rows at thresholds fit on the other folds' rows."""
    if not metric.thresholded:
        return metric(y, probs)
    multi = y.ndim == 2
    decided = np.zeros_like(probs, dtype=np.float64)
    for k in np.unique(fold):
        held = fold == k
        others = ~held if (~held).any() else held
        d = decide(probs[held], multi, metric.fit_thresholds(y[others], probs[others]))
        decided[held] = d if multi else np.eye(probs.shape[1])[d]  # decisions the default thresholds keep
    return metric(y, decided)


def choose(metric: Metric, y: np.ndarray, fold: np.ndarray, preds: Sequence[np.ndarray], top: int,
           portfolio: Sequence[int] = ()) -> Choice:
    """The best run alone, greedy weights over the `top` best, or over the `portfolio` runs (settings
    known to work, chosen before any score): each way is scored across the folds (each fold's rows
    combined as the way chooses on the other folds' rows, its ranking of the runs included, and decided
    at thresholds fit there), and the higher scoring way is taken, ties to the lower log loss, then to
    the simpler way. On a few hundred rows with many runs, the best CV and a blend's weights often fit
    the rows' noise: then a way that chose less scores higher on rows it was not chosen on."""
    ways = {"best": lambda y_, p_: best_alone(metric, y_, p_)}
    if len(preds) > 1:
        ways["blend"] = lambda y_, p_: blend_of_best(metric, y_, p_, top)
    if len(portfolio) > 1:
        ways["portfolio"] = lambda y_, p_: blend_of(metric, y_, p_, portfolio)
    keys, scores = {}, {}
    for way, fit in ways.items():
        honest, _ = across_folds(fit, y, fold, preds)
        scores[way] = held_out_score(metric, y, fold, honest)
        keys[way] = (scores[way] if metric.higher_is_better else -scores[way], -log_loss(y, honest))
    order = ranked(metric, y, preds)
    return Choice(max(keys, key=keys.__getitem__), order, scores, held_out_score(metric, y, fold, preds[order[0]]))
