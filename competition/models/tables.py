"""The table models fit once per fold rather than trained in epochs, by family: scikit-learn's
classifiers (refit at predict: models/estimators.py) and the gradient-boosting libraries (stored
as their own text: models/gbdt.py). The fold trainer, predict, package and the config checks ask
the family of a config's model, never its name."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch import nn

from competition.core.config import Config
from competition.core.errors import CompetitionError
from competition.models import estimators, gbdt
from competition.models.gbdt_libraries import LIBRARIES


@dataclass(frozen=True)
class OneFitFamily:
    names: tuple[str, ...]  # its values of model.name
    # The fold's features as the library takes them (numbers and missing values as they are,
    # categories as codes: data.features `native`), instead of imputed, scaled and one-hot.
    native: bool
    # The fitted model is in the checkpoint: predict uses it as stored, and package ships it.
    stored: bool
    check_params: Callable[[Config], None]  # model.params, at config load
    check: Callable  # (cfg, comp): a small fit on real rows before a run writes anything
    fit_on_fold: Callable[..., tuple[nn.Module, np.ndarray]]  # (cfg, comp, df, fold, pre) → (module, validation probs)
    empty: Callable[[Config, int], nn.Module]  # (cfg, classes): an unfitted module, for the run's checks
    rebuild: Callable[..., nn.Module]  # (cfg, comp, fold_cfg, state): a fold's module at predict


FAMILIES = (
    OneFitFamily(tuple(estimators.ESTIMATORS), native=False, stored=False,
                 check_params=estimators.check_estimator_params, check=estimators.check_estimator,
                 fit_on_fold=estimators.fit_on_fold,
                 empty=lambda cfg, k: estimators.EstimatorModule(estimators.make_estimator(cfg, 0), k),
                 rebuild=estimators.refit),
    OneFitFamily(tuple(LIBRARIES), native=True, stored=True, check_params=gbdt.check_gbdt_params,
                 check=gbdt.check_gbdt, fit_on_fold=gbdt.fit_on_fold, empty=gbdt.empty_module, rebuild=gbdt.rebuild),
)


def one_fit_family(cfg: Config) -> OneFitFamily | None:
    """The family of a table config's model, or None (the MLP, or an image model)."""
    if cfg.task != "tabular":
        return None
    return next((f for f in FAMILIES if cfg.model.name in f.names), None)


def check_model_params(cfg: Config) -> None:
    """model.params only reach a model fit once per fold, and must suit it."""
    family = one_fit_family(cfg)
    if family is None:
        if cfg.model.params:
            names = ", ".join(n for f in FAMILIES for n in f.names)
            raise CompetitionError(f"config key model.params: passed to scikit-learn and gradient-boosting models only "
                                   f"({names}), not to {cfg.model.name!r}")
        return
    family.check_params(cfg)
