"""The CV of the pipeline that writes the file: each fold's model on its own validation rows with
the submission's TTA views, its thresholds fit on the other folds' rows, rendered as the file
holds them and scored like the leaderboard scores the file."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from competition.core.metrics import METRICS
from competition.core.schema import Config
from competition.data.folder import Competition
from competition.data.splits import folds_trained_on
from competition.inference.ensemble import predict_rows
from competition.inference.submission import Layout, render
from competition.io.checkpoints import BEST
from competition.tasks import Task


@dataclass
class OutOfFold:
    """Every trained fold's validation rows, as the submission pipeline predicts them."""

    rows: np.ndarray  # row numbers in train.csv
    fold: np.ndarray  # the fold of each row
    y: np.ndarray  # encoded truth
    probs: np.ndarray  # fold model × TTA views


def predict_out_of_fold(cfg: Config, task: Task, comp: Competition, loaded: list, device: torch.device,
                        tta: list[str]) -> OutOfFold:
    """Each loaded fold's model on its validation rows (from folds.csv), with the TTA views."""
    df = folds_trained_on(cfg, comp.train, [(str(cfg.fold_dir(fold) / BEST), state.folds_hash) for fold, _, state in loaded],
                          "its validation rows would include rows it trained on")
    rows, folds, probs = [], [], []
    for fold, model, state in loaded:
        mine = np.flatnonzero((df.fold == fold).to_numpy())
        probs.append(predict_rows(cfg, task, comp, [(fold, model, state)], device, tta, rows=mine))
        rows.append(mine)
        folds.append(np.full(len(mine), fold))
    rows_all = np.concatenate(rows)
    return OutOfFold(rows_all, np.concatenate(folds), comp.target.encode(comp.train.iloc[rows_all]),
                     np.concatenate(probs))


def as_submitted(cfg: Config, comp: Competition, oof: OutOfFold, layout: Layout) -> dict:
    """Per-fold and pooled score of the out-of-fold rows rendered as the file would hold them.

    Thresholds (F1 metrics) are cross-fitted: each fold's come from the other folds' rows, so no
    row is decided by a threshold fit on itself; with a single fold, they come from its own rows.
    The submission's thresholds are fit on all the rows."""
    metric = METRICS[cfg.train.metric]
    held = np.zeros_like(oof.probs)
    fit_on = "none (not a thresholded metric)"
    for fold in np.unique(oof.fold):
        mine = oof.fold == fold
        others = ~mine if (~mine).any() else mine
        thresholds = metric.fit_thresholds(oof.y[others], oof.probs[others])
        held[mine] = render(layout, oof.probs[mine], comp.target, thresholds)
        if thresholds is not None:
            fit_on = "the other folds' rows" if (~mine).any() else "the same rows (one fold)"
    per_fold = {str(int(f)): metric(oof.y[oof.fold == f], held[oof.fold == f]) for f in np.unique(oof.fold)}
    return {
        "folds": per_fold,
        "cv": metric(oof.y, held),
        "thresholds_fit_on": fit_on,
        "thresholds": metric.fit_thresholds(oof.y, oof.probs),  # the submission's
    }
