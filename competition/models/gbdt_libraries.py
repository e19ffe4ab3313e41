"""LightGBM, CatBoost and XGBoost behind one small interface: their parameter names, the kit's
starting parameters, a fit with early stopping that returns the model as the library's own text,
and that text read back by the library's own loader for prediction.

Each library is imported when it is used: they are an optional extra (`pip install -e '.[tables]'`)
and cost a second or more to import.
"""
from __future__ import annotations

import functools
import inspect
import logging
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

from competition.core.errors import CompetitionError
from competition.core.schema import Config

log = logging.getLogger(__name__)

Rows = tuple[np.ndarray, np.ndarray]  # (native feature matrix, class indices)


@dataclass(frozen=True)
class Library:
    """One library: `defaults` are the kit's starting parameters; `groups` the alias groups of
    the keys the kit sets (a model.params key of the group replaces the kit's value); `managed`
    the keys the kit sets from the target and train.patience, refused in model.params."""

    name: str
    defaults: dict
    rounds: tuple[str, ...]  # the number of boosting rounds, under each of its names
    threads: tuple[str, ...]
    seed: tuple[str, ...]
    managed: tuple[str, ...]
    groups: tuple[tuple[str, ...], ...] = field(default=())

    def version(self) -> str:
        return __import__(self.name).__version__

    def group_of(self, key: str) -> tuple[str, ...]:
        for group in (self.rounds, self.threads, self.seed, *self.groups):
            if key in group:
                return group
        return (key,)


class LightGBM(Library):
    def names(self) -> set[str]:
        return _lightgbm_names()

    def errors(self) -> tuple[type, ...]:
        import lightgbm

        return (lightgbm.basic.LightGBMError, ValueError, TypeError)

    def fit(self, params: dict, train: Rows, valid: Rows, categorical: list[int], classes: int, patience: int) -> tuple[str, int]:
        import lightgbm as lgb

        _quiet_lightgbm()
        params = dict(params)
        rounds = params.pop(next(k for k in self.rounds if k in params))
        objective = {"objective": "binary"} if classes == 2 else {"objective": "multiclass", "num_class": classes}
        data = lgb.Dataset(train[0], train[1], categorical_feature=categorical, free_raw_data=False)
        sets, callbacks = [], []
        if patience:
            sets = [lgb.Dataset(valid[0], valid[1], categorical_feature=categorical, reference=data)]
            callbacks = [lgb.early_stopping(patience, verbose=False)]
        booster = lgb.train({**params, **objective}, data, num_boost_round=rounds, valid_sets=sets, callbacks=callbacks)
        best = booster.best_iteration or booster.current_iteration()
        return booster.model_to_string(num_iteration=best), best

    def load(self, text: str):
        import lightgbm as lgb

        _quiet_lightgbm()
        return lgb.Booster(model_str=text)

    def predict(self, model, x: np.ndarray, categorical: list[int], classes: int, threads: int) -> np.ndarray:
        return _two_columns(model.predict(x, num_threads=threads), classes)


class XGBoost(Library):
    def names(self) -> set[str]:
        return _xgboost_names() | set(self.rounds)

    def errors(self) -> tuple[type, ...]:
        import xgboost

        return (xgboost.core.XGBoostError, ValueError, TypeError)

    def _matrix(self, x: np.ndarray, y, categorical: list[int], threads: int):
        import xgboost as xgb

        types = ["c" if i in set(categorical) else "q" for i in range(x.shape[1])]
        return xgb.DMatrix(x, y, feature_types=types, enable_categorical=True, nthread=threads)

    def fit(self, params: dict, train: Rows, valid: Rows, categorical: list[int], classes: int, patience: int) -> tuple[str, int]:
        import xgboost as xgb

        params = dict(params)
        rounds = params.pop(next(k for k in self.rounds if k in params))
        threads = int(params.get("nthread", params.get("n_jobs", 1)))
        objective = ({"objective": "binary:logistic"} if classes == 2
                     else {"objective": "multi:softprob", "num_class": classes})
        data = self._matrix(*train, categorical, threads)
        evals = [(self._matrix(*valid, categorical, threads), "valid")] if patience else []
        booster = xgb.train({**params, **objective}, data, num_boost_round=rounds, evals=evals,
                            early_stopping_rounds=patience or None, verbose_eval=False)
        best = booster.best_iteration + 1 if patience else booster.num_boosted_rounds()
        return bytes(booster[:best].save_raw("json")).decode(), best

    def load(self, text: str):
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray(text.encode()))
        return booster

    def predict(self, model, x: np.ndarray, categorical: list[int], classes: int, threads: int) -> np.ndarray:
        model.set_param({"nthread": threads})
        return _two_columns(model.predict(self._matrix(x, None, categorical, threads)), classes)


class CatBoost(Library):
    def names(self) -> set[str]:
        from catboost import CatBoostClassifier

        return set(inspect.signature(CatBoostClassifier.__init__).parameters) - {"self"}

    def errors(self) -> tuple[type, ...]:
        import catboost

        return (catboost.CatBoostError, ValueError, TypeError)

    @staticmethod
    def _pool(x: np.ndarray, y, categorical: list[int]):
        """CatBoost takes categories as integers or text, never floats: a missing code becomes -1,
        one more category (CatBoost's own treatment of a missing category)."""
        import pandas as pd
        from catboost import Pool

        frame = pd.DataFrame({f"f{i}": x[:, i].astype(float) for i in range(x.shape[1])})
        for i in categorical:
            frame[f"f{i}"] = np.nan_to_num(x[:, i], nan=-1).astype(np.int64)
        return Pool(frame, y, cat_features=categorical)

    def fit(self, params: dict, train: Rows, valid: Rows, categorical: list[int], classes: int, patience: int) -> tuple[str, int]:
        from catboost import CatBoostClassifier

        loss = "Logloss" if classes == 2 else "MultiClass"
        model = CatBoostClassifier(**params, loss_function=loss, class_names=list(range(classes)))
        data = self._pool(*train, categorical)
        if patience:
            model.fit(data, eval_set=self._pool(*valid, categorical), early_stopping_rounds=patience, use_best_model=True)
        else:
            model.fit(data)
        with tempfile.TemporaryDirectory(prefix="catboost-") as tmp:  # CatBoost writes JSON to files only
            path = os.path.join(tmp, "model.json")
            model.save_model(path, format="json", pool=data)  # the pool: its categories' hashes
            with open(path, encoding="utf-8") as fh:
                return fh.read(), int(model.tree_count_)

    def load(self, text: str):
        from catboost import CatBoostClassifier

        model = CatBoostClassifier()
        with tempfile.TemporaryDirectory(prefix="catboost-") as tmp:
            path = os.path.join(tmp, "model.json")
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
            model.load_model(path, format="json")
        return model

    def predict(self, model, x: np.ndarray, categorical: list[int], classes: int, threads: int) -> np.ndarray:
        return model.predict_proba(self._pool(x, None, categorical), thread_count=threads)


def _two_columns(p: np.ndarray, classes: int) -> np.ndarray:
    """A binary model's positive-class probabilities as [negative, positive] columns."""
    p = np.asarray(p, dtype=float)
    return np.column_stack([1 - p, p]) if classes == 2 and p.ndim == 1 else p.reshape(len(p), classes)


@functools.cache
def _quiet_lightgbm() -> None:
    """LightGBM prints its native messages (a fatal parameter check among them) to stdout; routed
    to a logger that keeps warnings, the one-line error says the rest."""
    import lightgbm

    quiet = logging.getLogger(f"{__name__}.lightgbm")
    quiet.setLevel(logging.WARNING)
    lightgbm.register_logger(quiet)


@functools.cache
def _lightgbm_names() -> set[str]:
    # LightGBM warns about an unknown parameter and ignores it; its table of every parameter and
    # alias (the C API's LGBM_DumpParamAliases) is read through the Python package's helper.
    from lightgbm.basic import _ConfigAliases

    return {alias for aliases in _ConfigAliases._get_all_param_aliases().values() for alias in aliases}


@functools.cache
def _xgboost_names() -> set[str]:
    """XGBoost warns about an unused parameter and ignores it; the names it knows are those of
    its scikit-learn wrapper and those a configured booster lists in its own config."""
    import json

    import xgboost as xgb

    booster = xgb.train({"nthread": 1, "verbosity": 0}, xgb.DMatrix(np.zeros((2, 1)), np.array([0, 1])), 1)

    def leaves(node) -> set[str]:
        if isinstance(node, dict):
            return set(node) | {k for v in node.values() for k in leaves(v)}
        return set()

    return leaves(json.loads(booster.save_config())) | set(xgb.XGBClassifier().get_params()) | {"eval_metric"}


# The libraries (config key model.name for a tabular task), with the kit's starting parameters:
# a table competitor's usual first run (learning rate 0.05, row and column subsampling, many
# rounds cut by early stopping on the fold's validation rows), CatBoost with its own defaults.
LIBRARIES: dict[str, Library] = {
    "lightgbm": LightGBM(
        "lightgbm",
        {"learning_rate": 0.05, "num_iterations": 2000, "num_leaves": 31, "feature_fraction": 0.8,
         "bagging_fraction": 0.8, "bagging_freq": 1, "verbosity": -1, "deterministic": True},
        rounds=("num_iterations", "n_iter", "nrounds", "max_iter", "num_tree", "num_round", "num_trees", "num_rounds",
                "n_estimators", "num_iteration", "num_boost_round"),
        threads=("num_threads", "n_jobs", "nthread", "nthreads", "num_thread"),
        seed=("seed", "random_seed", "random_state"),
        managed=("objective", "app", "loss", "application", "objective_type", "num_class", "num_classes",
                 "early_stopping_round", "early_stopping", "n_iter_no_change", "early_stopping_rounds",
                 "categorical_feature", "cat_feature", "categorical_column", "cat_column", "categorical_features"),
        groups=(("learning_rate", "eta", "shrinkage_rate"), ("num_leaves", "num_leaf", "max_leaves", "max_leaf", "max_leaf_nodes"),
                ("feature_fraction", "sub_feature", "colsample_bytree"),
                ("bagging_fraction", "sub_row", "subsample", "bagging"), ("bagging_freq", "subsample_freq"),
                ("verbosity", "verbose")),
    ),
    "catboost": CatBoost(
        "catboost",
        {"iterations": 1000, "verbose": False, "allow_writing_files": False},
        rounds=("iterations", "n_estimators", "num_boost_round", "num_trees"),
        threads=("thread_count",),
        seed=("random_seed", "random_state"),
        managed=("loss_function", "objective", "classes_count", "class_names", "cat_features", "early_stopping_rounds",
                 "od_wait", "use_best_model"),
        groups=(("verbose", "verbose_eval", "silent", "logging_level"),),
    ),
    "xgboost": XGBoost(
        "xgboost",
        {"eta": 0.05, "num_boost_round": 2000, "max_depth": 6, "subsample": 0.8, "colsample_bytree": 0.8,
         "tree_method": "hist", "verbosity": 0},
        rounds=("num_boost_round", "n_estimators"),
        threads=("nthread", "n_jobs"),
        seed=("seed", "random_state"),
        managed=("objective", "num_class", "early_stopping_rounds", "enable_categorical", "feature_types"),
        groups=(("eta", "learning_rate"),),
    ),
}


def library(name: str) -> Library:
    """The library, imported: a missing optional extra is one line that says how to install it."""
    lib = LIBRARIES[name]
    try:
        __import__(name)
    except ImportError:
        raise CompetitionError(f"config key model.name: {name} is not installed; it comes with the kit's tables "
                               f"extra: pip install -e '.[tables]' (or make install)") from None
    return lib


def check_gbdt_params(cfg: Config) -> None:
    """model.params keys the library knows, none the kit sets itself; one label per row."""
    name = cfg.model.name
    lib = library(name)
    if cfg.data.target_format == "multi_label":
        raise CompetitionError(f"config key model.name: {name} fits one label per row; a multi_label target trains with mlp")
    if cfg.data.pseudo_labels:
        raise CompetitionError(f"config key data.pseudo_labels: {name} fits one label per row, not the soft targets of "
                               f"pseudo-labels; they train with mlp")
    managed = sorted(set(cfg.model.params) & set(lib.managed))
    if managed:
        raise CompetitionError(f"config key model.params: {managed[0]!r} is set by the kit ({name}'s objective and classes "
                               f"from the target, early stopping from train.patience, categories from the features)")
    unknown = sorted(set(cfg.model.params) - lib.names())
    if unknown:
        raise CompetitionError(f"config key model.params: {name} {lib.version()} has no parameter "
                               f"{', '.join(map(repr, unknown))}")
