"""A scikit-learn estimator fit on a fold's preprocessed rows and wrapped as a module, and refit
from a fold checkpoint's recipe at predict (see models/estimators.py for why nothing fitted is saved)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from competition.core.errors import CompetitionError
from competition.core.schema import Config
from competition.data.features import TabularPreprocessor, check_rows, load_feature_hook
from competition.data.folder import Competition
from competition.data.splits import folds_trained_on
from competition.io.checkpoints import FoldState
from competition.models.estimators import make_estimator

CHECK_ROWS = 256  # the fold's first validation rows, whose trained predictions a refit must reproduce
CHECK_TOLERANCE = 1e-6


def check_estimator(cfg: Config, comp: Competition, per_class: int = 20) -> None:
    """scikit-learn checks parameter values, and how they fit the table (one monotonic constraint
    per feature, categorical feature indices), when it fits: a fit on a few real rows of each class,
    through the preprocessor, names a bad value now, before a run writes anything."""
    x, y, _ = check_rows(cfg, comp, per_class=per_class)
    est = make_estimator(cfg, 0)
    try:
        est.fit(x, y)
    except (ValueError, TypeError) as exc:
        raise CompetitionError(f"config key model.params: {type(est).__name__} refuses them: "
                               f"{str(exc).strip().splitlines()[0][:300]}") from None


class EstimatorModule(nn.Module):
    """A fitted scikit-learn classifier as a module: features in, log-probabilities out (the
    softmax every prediction path applies gives the probabilities back). It has no parameters;
    its one buffer holds the fold's trained predictions for its first validation rows."""

    def __init__(self, estimator, num_classes: int):
        super().__init__()
        self.estimator, self.num_classes = estimator, num_classes
        self.register_buffer("check_probs", torch.zeros(0, num_classes, dtype=torch.float64))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities [n, classes]; a class absent from the fold's training rows gets 0."""
        out = np.zeros((len(x), self.num_classes))
        out[:, self.estimator.classes_.astype(np.int64)] = self.estimator.predict_proba(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.predict(x.detach().float().cpu().numpy())
        return torch.from_numpy(np.log(np.clip(p, 1e-12, None))).to(x.device)


def fit_on_fold(cfg: Config, comp: Competition, df: pd.DataFrame, fold: int,
                pre: TabularPreprocessor) -> tuple[EstimatorModule, np.ndarray]:
    """The config's estimator fit on the fold's training rows of `df` (train.csv with its fold
    column) through `pre`; returns it and its probabilities for the fold's validation rows."""
    train_rows, valid_rows = df[df.fold != fold], df[df.fold == fold]
    est = make_estimator(cfg, fold)
    try:
        est.fit(pre.transform(train_rows), comp.target.encode(train_rows))
    except ValueError as exc:
        raise CompetitionError(f"{cfg.model.name} on fold {fold}: {str(exc).strip().splitlines()[0][:300]}") from None
    module = EstimatorModule(est, len(comp.classes))
    probs = module.predict(pre.transform(valid_rows))
    module.check_probs = torch.from_numpy(probs[:CHECK_ROWS].copy())
    return module, probs


def refit(cfg: Config, comp: Competition, fold_cfg: Config, state: FoldState) -> EstimatorModule:
    """A fold's estimator again, from its checkpoint's recipe and the fold's training rows: the
    local config's feature hook, the folds it was trained on, and its own predictions reproduced."""
    name = f"{fold_cfg.model.name} of fold {state.fold}"
    df = folds_trained_on(cfg, comp.train, [(name, state.folds_hash)], "it is refit from its training rows at predict")
    pre = TabularPreprocessor(state.preprocessor, load_feature_hook(cfg))
    module, _ = fit_on_fold(fold_cfg, comp, df, state.fold, pre)
    trained = state.model_state_dict.get("check_probs")
    now = module.check_probs
    gap = float((now - trained).abs().max()) if trained is not None and trained.shape == now.shape else float("inf")
    if not gap <= CHECK_TOLERANCE:
        import sklearn

        raise CompetitionError(f"{name} refit on its training rows does not reproduce its trained predictions "
                               f"(largest difference {gap:.2g}): train.csv, the feature hook or scikit-learn (now "
                               f"{sklearn.__version__}) changed since training; retrain the run")
    return module


def empty_module(cfg: Config, num_classes: int) -> EstimatorModule:
    """An unfitted module of the config's estimator, for the run's checks."""
    return EstimatorModule(make_estimator(cfg, 0), num_classes)


# The names models/tables.py calls each family's code by.
check = check_estimator
rebuild = refit
