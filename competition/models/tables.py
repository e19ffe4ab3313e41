"""The table models fit once per fold rather than trained in epochs, by family: scikit-learn's
classifiers (refit at predict: models/estimators.py) and the gradient-boosting libraries (stored
as their own text: models/gbdt.py). A table config whose model.name is one of theirs runs as that
family's task (tasks.tabular.OneFitTask), which the fold trainer, predict, package and the checks
ask; nothing else asks the family or the name.

This module holds the names, the flags and the config checks only, so that checking a config
loads no torch: each family's fitting code is imported when it is first used."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from competition.core.errors import CompetitionError
from competition.core.schema import Config
from competition.models.estimators import ESTIMATORS, check_estimator_params
from competition.models.gbdt_libraries import LIBRARIES, check_gbdt_params


def _estimator_code() -> ModuleType:
    from competition.models import estimator_module  # torch and scikit-learn: only when a model is fit or rebuilt

    return estimator_module


def _gbdt_code() -> ModuleType:
    from competition.models import gbdt  # torch: only when a model is fit or rebuilt

    return gbdt


@dataclass(frozen=True)
class OneFitFamily:
    names: tuple[str, ...]  # its values of model.name
    # The fold's features as the library takes them (numbers and missing values as they are,
    # categories as codes: data.features `native`), instead of imputed, scaled and one-hot.
    native: bool
    # The fitted model is in the checkpoint: predict uses it as stored, and package ships it.
    stored: bool
    check_params: Callable[[Config], None]  # model.params, at config load
    code: Callable[[], ModuleType]  # the module with check, fit_on_fold, empty_module and rebuild

    def check(self, cfg, comp) -> None:
        """A small fit on real rows before a run writes anything."""
        self.code().check(cfg, comp)

    def fit_on_fold(self, cfg, comp, df, fold: int, pre):
        """(module, validation probabilities) of the fold."""
        return self.code().fit_on_fold(cfg, comp, df, fold, pre)

    def empty(self, cfg: Config, classes: int):
        """An unfitted module, for the run's checks."""
        return self.code().empty_module(cfg, classes)

    def rebuild(self, cfg, comp, fold_cfg: Config, state):
        """A fold's module at predict."""
        return self.code().rebuild(cfg, comp, fold_cfg, state)


FAMILIES = (
    OneFitFamily(tuple(ESTIMATORS), native=False, stored=False, check_params=check_estimator_params,
                 code=_estimator_code),
    OneFitFamily(tuple(LIBRARIES), native=True, stored=True, check_params=check_gbdt_params, code=_gbdt_code),
)


def one_fit_family(cfg: Config) -> OneFitFamily | None:
    """The family a table model's model.name belongs to, or None (a model trained in epochs: the MLP)."""
    return family_named(cfg.model.name)


def family_named(name: str) -> OneFitFamily | None:
    """The family of a table model's name, where there is no Config to ask with (a run's stored
    config, read by the board without loading torch)."""
    return next((f for f in FAMILIES if name in f.names), None)


def check_model_params(cfg: Config) -> None:
    """A table model's model.params: only one fit once per fold takes them, and they must suit it."""
    family = one_fit_family(cfg)
    if family is None:
        check_no_model_params(cfg)
        return
    family.check_params(cfg)


def check_no_model_params(cfg: Config) -> None:
    """model.params only reach a model fit once per fold."""
    if cfg.model.params:
        names = ", ".join(n for f in FAMILIES for n in f.names)
        raise CompetitionError(f"config key model.params: passed to scikit-learn and gradient-boosting models only "
                               f"({names}), not to {cfg.model.name!r}")
