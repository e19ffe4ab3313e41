"""scikit-learn's own classifiers for tables (model.name logreg | random_forest | extra_trees |
hist_gbm, model.params passed through), fit on a fold's preprocessed rows and wrapped as a module,
so that the ensemble, the CV as submitted and the submission run them as they run the MLP.

No file holds a fitted estimator. scikit-learn saves models with pickle, which runs code when
loaded, and its trees have no public plain-data form (HistGradientBoosting's predictors are
private, and change between releases). A fold's checkpoint holds the recipe instead: the config,
the fitted preprocessing and the fold's own predictions for its first validation rows. `predict`
refits the estimator on the fold's training rows (train.csv and folds.csv, both checked) and
refuses a refit that does not reproduce those predictions. A table refits in seconds.

The table of estimators and the config's checks of them live here, without torch or pandas, so
that checking a config stays light; fitting, wrapping and refitting are in models/estimator_module.py.
"""
from __future__ import annotations

from competition.core.errors import CompetitionError
from competition.core.schema import Config


# scikit-learn is imported when a model is made: it costs a second of every run's start.
def _logreg() -> type:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression


def _random_forest() -> type:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier


def _extra_trees() -> type:
    from sklearn.ensemble import ExtraTreesClassifier

    return ExtraTreesClassifier


def _hist_gbm() -> type:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier


# The estimators (config key model.name for a tabular task) and the kit's defaults, which
# model.params overrides; random_state defaults to a seed of (seed, fold).
ESTIMATORS = {
    "logreg": (_logreg, {"max_iter": 1000}),  # lbfgs's default 100 iterations stop short on one-hot tables
    "random_forest": (_random_forest, {}),
    "extra_trees": (_extra_trees, {}),
    "hist_gbm": (_hist_gbm, {}),
}


def check_estimator_params(cfg: Config) -> None:
    """A scikit-learn model takes one label per row, and model.params it has."""
    if cfg.data.target_format == "multi_label":
        raise CompetitionError(f"config key model.name: {cfg.model.name} takes one label per row; a multi_label "
                               f"target trains with mlp")
    if cfg.data.pseudo_labels:
        raise CompetitionError(f"config key data.pseudo_labels: {cfg.model.name} fits one label per row, not the soft "
                               f"targets of pseudo-labels; they train with mlp")
    cls = ESTIMATORS[cfg.model.name][0]()
    unknown = sorted(set(cfg.model.params) - set(cls().get_params()))
    if unknown:
        raise CompetitionError(f"config key model.params: {cls.__name__} has no parameter {', '.join(map(repr, unknown))} "
                               f"(its parameters: {', '.join(sorted(cls().get_params()))})")


def make_estimator(cfg: Config, fold: int):
    """A fresh estimator of the config's model, its parameters and a seed of (seed, fold)."""
    from competition.core.distributed import mix_seed  # torch: only where a model is made

    make, defaults = ESTIMATORS[cfg.model.name]
    params = {"random_state": mix_seed(cfg.seed, fold), **defaults, **cfg.model.params}
    return make()(**params)
