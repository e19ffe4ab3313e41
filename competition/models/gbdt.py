"""Gradient-boosted trees for tables (model.name lightgbm | catboost | xgboost, model.params passed
to the library): one fit per fold on its training rows, early stopping on its validation rows
after train.patience rounds without a better validation log loss, the best round kept.

Categorical columns reach the library as categories (CatBoost's cat_features, LightGBM's and
XGBoost's native categoricals), from the same feature hook and column rules as the MLP's
one-hot (data.features, `native=True`), and missing values stay missing for the library.

The fitted model is stored in the fold's checkpoint as the library's own text (LightGBM's model
string, XGBoost's and CatBoost's JSON) with its SHA-256, read back by the library's own loader:
no pickle, no refit. A text that does not match its SHA-256 is refused before the library reads
it (LightGBM's parser aborts the process on some damaged texts). The training's out-of-fold
predictions are made by the model read back from that text, so what is scored is what is stored.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pandas as pd
import torch
from torch import nn

from competition.core.distributed import mix_seed
from competition.core.errors import CompetitionError
from competition.core.schema import Config
from competition.data.features import TabularPreprocessor, check_rows
from competition.data.folder import Competition
from competition.models.gbdt_libraries import LIBRARIES, library

# Rounds without a better validation loss before a fit stops, where train.patience is not set: at
# the starting learning rate of 0.05 a few rounds barely move the loss, so the epochs' 3 would stop
# every fit at its start.
ROUND_PATIENCE = 100
STORED_KEYS = {"library", "version", "text", "sha256", "best_iteration", "categorical", "features", "classes"}


def threads(cfg: Config) -> int:
    """The library's threads: train.num_workers (at least 1), no more than the cores this process
    may use. More threads than free cores makes a small fit hundreds of times slower."""
    return max(1, min(cfg.train.num_workers, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1))


def stopping_rounds(cfg: Config) -> int:
    """train.patience as boosting rounds without a better validation loss; ROUND_PATIENCE where it is not set."""
    return ROUND_PATIENCE if cfg.train.patience is None else cfg.train.patience


def gbdt_params(cfg: Config, fold: int) -> dict:
    """The kit's starting parameters, its threads and a seed of (seed, fold), each replaced by
    model.params when they name it under any of its aliases."""
    lib = LIBRARIES[cfg.model.name]
    kit = {**lib.defaults, lib.threads[0]: threads(cfg), lib.seed[0]: mix_seed(cfg.seed, fold)}
    named = {alias for key in cfg.model.params for alias in lib.group_of(key)}
    return {**{k: v for k, v in kit.items() if k not in named}, **cfg.model.params}


def check_gbdt(cfg: Config, comp: Competition, per_class: int = 20) -> None:
    """The libraries check parameter values when they fit: a three-round fit on a few real rows of
    each class, through the preprocessor, names a bad value now, before a run writes anything."""
    x, y, pre = check_rows(cfg, comp, native=True, per_class=per_class)
    lib, params = library(cfg.model.name), gbdt_params(cfg, 0)
    for key in lib.rounds:
        if isinstance(params.get(key), int) and not isinstance(params[key], bool) and params[key] > 3:
            params[key] = 3
    try:
        lib.fit(params, (x, y), (x, y), pre.categorical_indices, len(comp.classes), 0)
    except lib.errors() as exc:
        raise CompetitionError(f"config key model.params: {cfg.model.name} refuses them: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


class GBDTModule(nn.Module):
    """A fitted gradient-boosting model as a module: native features in, log-probabilities out.
    It has no parameters; its extra state (state_dict's `_extra_state`) is the stored model: the
    library's text, its SHA-256, the best round, the categorical columns."""

    def __init__(self, name: str, num_classes: int, num_threads: int = 1):
        super().__init__()
        self.name, self.num_classes, self.num_threads = name, num_classes, num_threads
        self.stored: dict | None = None
        self.model = None

    def get_extra_state(self) -> dict:
        return self.stored or {}  # {} before the fit (the run's checks size an empty one)

    def set_extra_state(self, state) -> None:
        """Check the stored model, then read it back with the library's own loader."""
        if not isinstance(state, dict) or set(state) != STORED_KEYS:
            raise CompetitionError(f"holds no {self.name} model in the kit's format (retrain the fold)")
        if state["library"] != self.name or state["classes"] != self.num_classes:
            raise CompetitionError(f"holds a {state['library']} model of {state['classes']} classes, not the "
                                   f"{self.name} model of {self.num_classes} its config describes")
        text = state["text"]
        if not isinstance(text, str) or hashlib.sha256(text.encode()).hexdigest() != state["sha256"]:
            raise CompetitionError(f"its {self.name} model text was altered or damaged after training (it no longer "
                                   f"matches the SHA-256 stored beside it): retrain the fold")
        lib = library(self.name)
        try:
            model = lib.load(text)
        except lib.errors() as exc:
            raise CompetitionError(f"its {self.name} model text (written by {self.name} {state['version']}) does not "
                                   f"load in {self.name} {lib.version()}: {_first_line(exc)}") from None
        self.stored, self.model = dict(state), model

    @property
    def best_iteration(self) -> int:
        return int(self.stored["best_iteration"]) if self.stored else 0

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities [n, classes]."""
        if x.shape[1] != self.stored["features"]:
            raise CompetitionError(f"the {self.name} model was fit on {self.stored['features']} features, the rows "
                                   f"give {x.shape[1]}")
        lib = LIBRARIES[self.name]
        return lib.predict(self.model, x, self.stored["categorical"], self.num_classes, self.num_threads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.predict(x.detach().float().cpu().numpy())
        return torch.from_numpy(np.log(np.clip(p, 1e-12, None))).to(x.device)


def empty_module(cfg: Config, num_classes: int) -> GBDTModule:
    """The module of a config's library, its model to come from a fit or a checkpoint."""
    library(cfg.model.name)
    return GBDTModule(cfg.model.name, num_classes, threads(cfg))


def fit_on_fold(cfg: Config, comp: Competition, df: pd.DataFrame, fold: int,
                pre: TabularPreprocessor) -> tuple[GBDTModule, np.ndarray]:
    """The config's library fit on the fold's training rows of `df` (train.csv with its fold
    column) through `pre` (native), early stopping on its validation rows; returns the model as
    read back from its stored text, and that model's probabilities for the validation rows."""
    name, classes = cfg.model.name, len(comp.classes)
    lib = library(name)
    train_rows, valid_rows = df[df.fold != fold], df[df.fold == fold]
    x_valid = pre.transform(valid_rows)
    train = (pre.transform(train_rows), comp.target.encode(train_rows))
    try:
        text, best = lib.fit(gbdt_params(cfg, fold), train, (x_valid, comp.target.encode(valid_rows)),
                             pre.categorical_indices, classes, stopping_rounds(cfg))
    except lib.errors() as exc:
        raise CompetitionError(f"{name} on fold {fold}: {_first_line(exc)}") from None
    module = GBDTModule(name, classes, threads(cfg))
    module.set_extra_state({"library": name, "version": lib.version(), "text": text,
                            "sha256": hashlib.sha256(text.encode()).hexdigest(), "best_iteration": int(best),
                            "categorical": pre.categorical_indices, "features": pre.n_features, "classes": classes})
    return module, module.predict(x_valid)


def rebuild(cfg: Config, comp: Competition, fold_cfg: Config, state) -> GBDTModule:
    """A fold's module, empty: its model loads from the checkpoint (load_state_dict), predicting on
    the local config's threads."""
    library(fold_cfg.model.name)
    return GBDTModule(fold_cfg.model.name, len(comp.classes), threads(cfg))


check = check_gbdt  # the name models/tables.py calls each family's check by
