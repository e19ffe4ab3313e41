"""Warm starts (model.init_from): each fold begins from the same fold's best.pt of another run, for
progressive resizing (224 px, then 384) or a longer schedule. The other run must have been trained
on the same folds — else its weights have seen this fold's validation rows — and the same classes."""
from __future__ import annotations

import pandas as pd
from torch import nn

from competition.core.errors import CompetitionError
from competition.core.schema import Config
from competition.data.splits import folds_path
from competition.io.checkpoints import BEST, FoldState, load_checkpoint
from competition.io.compatibility import WARM_START, Trained, check_compatible
from competition.io.runs import folds_digest


def warm_start_state(cfg: Config, classes: list, df: pd.DataFrame, fold: int) -> FoldState:
    """The checkpoint fold `fold` starts from, checked against this run's folds, classes and model."""
    source = cfg.model.init_from
    path = cfg.run_dir.parent / source / f"fold{fold}" / BEST
    if source == cfg.name:
        raise CompetitionError(f"config key model.init_from: {source!r} is this run; name another run (or use --resume)")
    if not path.is_file():
        raise CompetitionError(f"config key model.init_from: {path} not found: train fold {fold} of run {source!r} first")
    state = load_checkpoint(path)
    # Its weights must not have seen the rows this fold validates on, and its head must fit the classes.
    given = Trained.of_config(cfg, classes, folds_digest(df, cfg.data.id_column), folds_path(cfg))
    check_compatible(path, Trained.of_state(state, path), given, WARM_START,
                     f"warm-start only from a run of {cfg.model.name} on the same classes and folds.csv (on other "
                     f"folds its weights have seen rows this fold validates on)")
    return state


def check_warm_starts(cfg: Config, classes: list, df: pd.DataFrame, folds: list[int]) -> None:
    """Before anything is written: every fold to train has its starting point."""
    if cfg.model.init_from:
        for fold in folds:
            warm_start_state(cfg, classes, df, fold)


def load_warm_start(model: nn.Module, state: FoldState, cfg: Config, fold: int) -> None:
    """The other run's weights into the fresh model, head included (the classes match)."""
    try:
        model.load_state_dict(state.model_state_dict)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise CompetitionError(f"config key model.init_from: fold {fold} of run {cfg.model.init_from!r} does not "
                               f"fit this model ({first})") from None
