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
    if state.folds_hash != folds_digest(df, cfg.data.id_column):
        raise CompetitionError(
            f"config key model.init_from: run {source!r} was trained on other folds than {folds_path(cfg)} "
            f"(its weights have seen rows this fold validates on); warm-start only from a run on the same folds"
        )
    if list(state.classes) != list(classes):
        raise CompetitionError(f"config key model.init_from: run {source!r} has classes {state.classes}, "
                               f"this competition {list(classes)}")
    name = state.config.get("model", {}).get("name")
    if name != cfg.model.name or state.config.get("task") != cfg.task:
        raise CompetitionError(f"config key model.init_from: run {source!r} trained {name!r}, this config {cfg.model.name!r}")
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
