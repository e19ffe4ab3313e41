"""The CV of a run's best epochs: each fold's oof.csv (its best epoch's validation rows) scored alone
and pooled. Reads CSVs only, so the board scores runs without loading torch or a model."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from competition.core.errors import CompetitionError
from competition.core.metrics import METRICS, Metric
from competition.core.schema import Config
from competition.data.folder import Competition, read_csv
from competition.data.targets import Target
from competition.io.prob_columns import read_oof_probs
from competition.io.runs import HASH_COLUMNS, RunKey, frame_key


@dataclass
class BestEpochs:
    """The folds' oof.csv files (each fold's best epoch), read and scored per fold and pooled."""

    folds: dict[str, float]
    pooled: float | None
    rows: int
    keys: dict[Path, RunKey | None]  # the run each file comes from (io.runs.frame_key)


def score_best_epochs(files: dict[str, Path], metric: Metric, target: Target, classes: list) -> BestEpochs:
    """`files`: fold → its oof.csv. Thresholded metrics at thresholds fit on the same rows, as early
    stopping saw them."""
    per_fold, ys, ps, keys = {}, [], [], {}
    for fold, path in files.items():
        oof = read_csv(path, "out-of-fold file", [*HASH_COLUMNS, *target.label_columns])
        keys[path] = frame_key(oof, path)
        y, p = target.encode(oof, path), read_oof_probs(oof, classes)
        per_fold[fold] = metric.best(y, p)
        ys.append(y)
        ps.append(p)
    pooled = metric.best(np.concatenate(ys), np.concatenate(ps)) if ys else None
    return BestEpochs(per_fold, pooled, int(sum(len(y) for y in ys)), keys)


def cv_report(cfg: Config, comp: Competition, folds: list[int]) -> dict:
    """Per-fold and overall out-of-fold score of the best epochs, from each fold's oof.csv."""
    metric = METRICS[cfg.train.metric]
    files = {str(f): cfg.fold_dir(f) / "oof.csv" for f in folds if (cfg.fold_dir(f) / "oof.csv").is_file()}
    scores = score_best_epochs(files, metric, comp.target, comp.classes)
    _check_one_run(scores.keys)
    return {
        "metric": metric.name,
        "higher_is_better": metric.higher_is_better,
        "folds": scores.folds,
        "cv": scores.pooled if scores.pooled is not None else float("nan"),
        "oof_rows": scores.rows,
    }


def _check_one_run(runs: dict) -> None:
    """Out-of-fold files of different runs (configs or splits) do not pool into one CV."""
    stamped = [(path, key) for path, key in runs.items() if key is not None]
    for path, key in stamped[1:]:
        first_path, first = stamped[0]
        if key != first:
            raise CompetitionError(
                f"{path} comes from another run than {first_path} (config {key.config} vs {first.config}, folds "
                f"{key.folds} vs {first.folds}): a CV pools the folds of one config; retrain that fold under the run's config"
            )
