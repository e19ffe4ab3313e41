"""The table tasks: feature columns, preprocessing fit on each fold's training rows, and a model
trained in epochs (TabularTask: the MLP) or fit once per fold (OneFitTask: scikit-learn's models
and the gradient-boosting libraries, models/tables.py). `task: tabular` names both: the model's
name picks the one (TabularTask.for_model)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from torch import nn

from competition.core.errors import CompetitionError
from competition.core.schema import Config
from competition.data.datasets import JoinedRows, TabularDataset
from competition.data.features import TabularPreprocessor, feature_columns, load_feature_hook
from competition.data.folder import Competition, require_columns
from competition.data.pseudo import read_pseudo_labels
from competition.models.contract import data_config
from competition.models.mlp import build_mlp
from competition.models.tables import FAMILIES, OneFitFamily, one_fit_family
from competition.tasks.base import FoldData, Task, split


class TabularTask(Task):
    """A table trained in epochs: the feature columns through the fold's fitted preprocessing (and
    the config's feature hook) into an MLP."""

    name = "tabular"
    two_stages = False
    models = {"mlp": build_mlp}

    def for_model(self, cfg: Config) -> Task:
        family = one_fit_family(cfg)
        return self if family is None else OneFitTask(family)

    def model_names(self) -> list[str]:
        return [*super().model_names(), *(name for family in FAMILIES for name in family.names)]

    def check_inputs(self, cfg: Config, comp: Competition) -> None:
        features = feature_columns(cfg, comp.train)
        require_columns(comp.train, comp.train_path, features)
        require_columns(comp.test, comp.test_path, features)

    def prepare(self, cfg: Config, comp: Competition, train: bool = True) -> None:
        """One fit on every train row and a transform of the test rows (which have no target):
        a feature hook that fails, or returns the wrong thing, fails before anything is written."""
        hook = load_feature_hook(cfg)
        if hook is not None:
            TabularPreprocessor.fit(comp.train, feature_columns(cfg, comp.train), hook).transform(comp.test)

    def fold(self, cfg, comp, df, fold, device, load_pretrained):
        d = cfg.data
        train_df, valid_df = split(df, fold)
        pre = TabularPreprocessor.fit(train_df, feature_columns(cfg, comp.train), load_feature_hook(cfg))
        train_targets, valid_targets = comp.target.encode(train_df), comp.target.encode(valid_df)
        pseudo = read_pseudo_labels(cfg, comp)
        if pseudo is None:
            train_ds = TabularDataset(train_df, pre, train_targets)
        else:  # fit on the fold's own rows only; the test rows are transformed
            soft = comp.target.soft(train_targets)
            train_targets = np.concatenate([soft, pseudo.targets])
            train_ds = JoinedRows([TabularDataset(train_df, pre, soft),
                                   TabularDataset(comp.test.iloc[pseudo.rows], pre, pseudo.targets)])
        valid_ds = TabularDataset(valid_df, pre, valid_targets)
        model = self.build_model(cfg, len(comp.classes), pre.n_features, load_pretrained=False)
        prep = data_config(model, cfg.image.size)  # {}: table features have no image preprocessing
        # probe_ds, the labelled training rows: train.average / train.interpolate recompute the MLP's BatchNorm statistics on them
        return model, FoldData(train_ds, valid_ds, valid_df[d.id_column].tolist(), train_targets, valid_targets,
                               pre.n_features, pre.state, prep, probe_ds=TabularDataset(train_df, pre, comp.target.encode(train_df)))

    def inputs(self, cfg, comp, state, device, rows=None):
        # The local config's hook, never one a checkpoint names: a checkpoint must not run code.
        pre = TabularPreprocessor(state.preprocessor, load_feature_hook(cfg))
        frame = comp.test if rows is None else comp.train.iloc[rows].reset_index(drop=True)
        return (state.fold, rows is None), lambda: (TabularDataset(frame, pre), None)


class OneFitTask(TabularTask):
    """A table model fit once per fold, of one family (models/tables.py): scikit-learn's, refit from
    train.csv at predict, or a gradient-boosting library's, stored as its own text. The fold is one
    fit (its own trainer, training.estimator_fold), with the same files as a fold trained in
    epochs; the fitted module then predicts through the same ensemble as the MLP."""

    trainer = "once"

    def __init__(self, family: OneFitFamily):
        self.family = family

    def build_model(self, cfg: Config, num_classes: int, in_features: int | None = None,
                    load_pretrained: bool = True) -> nn.Module:
        return self.family.empty(cfg, num_classes)  # unfitted: for the run's checks

    def check_fit(self, cfg: Config, comp: Competition) -> None:
        self.family.check(cfg, comp)

    def fit(self, cfg: Config, comp: Competition, df: pd.DataFrame,
            fold: int) -> tuple[nn.Module, np.ndarray, TabularPreprocessor]:
        """The fold's one fit on its training rows of `df` (train.csv with its fold column): the
        fitted module, its probabilities for the validation rows, and the fold's preprocessing."""
        pre = TabularPreprocessor.fit(df[df.fold != fold], feature_columns(cfg, comp.train), load_feature_hook(cfg),
                                      self.family.native)
        module, probs = self.family.fit_on_fold(cfg, comp, df, fold, pre)
        return module, probs, pre

    def rebuild_model(self, cfg, comp, fold_cfg, state):
        return self.family.rebuild(cfg, comp, fold_cfg, state)  # refit and checked, or its stored text

    def check_package(self, cfg: Config) -> None:
        if not self.family.stored:
            raise CompetitionError(f"config key model.name: {cfg.model.name} folds are refit from train.csv and folds.csv "
                                   f"when predict runs (no pickled model is kept), and a package predicts without "
                                   f"folds.csv: package a run of mlp or of a timm model")
