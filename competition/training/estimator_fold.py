"""Training one fold of a model fit once (models/tables.py: a scikit-learn model, or LightGBM,
CatBoost, XGBoost): one fit on the fold's training rows, then the files the torch fold loop writes
— best.pt and last.pt (plain data: a scikit-learn model's recipe and its check, a GBDT's own model
text), oof.csv and summary.csv — so that the CV, predict, the board and blends treat it as they
treat the MLP."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from competition.core.distributed import World, barrier
from competition.core.metrics import METRICS
from competition.core.schema import Config, config_to_dict
from competition.data.folder import Competition
from competition.io.checkpoints import LAST, FoldLock, FoldState, checkpoint_bytes, load_checkpoint
from competition.io.prob_columns import oof_frame
from competition.io.runs import RunKey, check_resumed, stamp
from competition.tasks import OneFitTask
from competition.training.epoch import Diverged
from competition.training.epoch_files import FoldResult, write_epoch

log = logging.getLogger(__name__)


def fit_estimator_fold(cfg: Config, task: OneFitTask, comp: Competition, df: pd.DataFrame, fold: int, *,
                       device: torch.device, world: World | None = None, resume: bool = False,
                       stop: Callable[[], int | None] | None = None) -> FoldResult:
    """Fit one fold (under its lock). One process fits: under torchrun the other ranks wait. `stop`
    is the torch loop's (training.fold): one fit has no step between which to stop."""
    world = world or World()
    if not world.is_main:
        barrier(world)
        return FoldResult(fold, float("nan"), 1)
    with FoldLock(cfg.fold_dir(fold)):
        result = _fit(cfg, task, comp, df, fold, resume)
    barrier(world)
    return result


def _fit(cfg: Config, task: OneFitTask, comp: Competition, df: pd.DataFrame, fold: int, resume: bool) -> FoldResult:
    fold_dir = cfg.fold_dir(fold)
    for stale in fold_dir.glob(".*.tmp"):  # a killed run's unfinished writes; we hold the lock
        stale.unlink(missing_ok=True)
    if resume and (fold_dir / LAST).is_file():  # one fit is all there is: a written fold is a finished one
        saved = load_checkpoint(fold_dir / LAST)
        check_resumed(cfg, saved, fold_dir / LAST)
        log.info("fold %d already finished (best %s %.5f)", fold, saved.metric_name, saved.best_metric)
        return FoldResult(fold, saved.best_metric, saved.best_epoch)
    began = time.time()
    metric, log_loss = METRICS[cfg.train.metric], METRICS["log_loss"]
    train_rows, valid_rows = df[df.fold != fold], df[df.fold == fold]
    module, probs, pre = task.fit(cfg, comp, df, fold)
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():  # scikit-learn's metrics would end in a traceback; nothing of the fold is written
        raise Diverged(f"fold {fold} diverged: {cfg.model.name} predicts non-finite probabilities for {int(bad.sum())} "
                       f"of {len(probs)} validation rows (first id {valid_rows[cfg.data.id_column].iloc[int(np.flatnonzero(bad)[0])]!r}); "
                       f"check model.params")
    y = comp.target.encode(valid_rows)
    score, loss = metric.best(y, probs), log_loss(y, probs)
    train_loss = log_loss(comp.target.encode(train_rows), module.predict(pre.transform(train_rows)))
    row = {"epoch": 1, "stage": 1, "train_loss": train_loss, "val_loss": loss, "metric": score, "best": True,
           "seconds": round(time.time() - began, 2)}
    key = RunKey.of(cfg, df)
    state = FoldState(
        fold=fold, config=config_to_dict(cfg), classes=list(comp.classes), metric_name=metric.name,
        higher_is_better=metric.higher_is_better, preprocessing={}, preprocessor=pre.state, in_features=pre.n_features,
        epoch=1, stage=1, stage_complete=True, finished=True, loss=loss, metric=score, best_metric=score, best_epoch=1,
        best_loss=loss, bad_epochs=0, history=[row], model_state_dict=module.state_dict(), optimizer_state_dict={},
        config_hash=key.config, folds_hash=key.folds,
    )
    idc = cfg.data.id_column
    oof = stamp(oof_frame(valid_rows[idc].tolist(), idc, comp.target.answer_frame(y), comp.classes, probs), key)
    write_epoch(fold_dir, checkpoint_bytes(state), oof, [row])  # the torch loop's files, in its order
    rounds = f" | best round {module.best_iteration}" if hasattr(module, "best_iteration") else ""
    log.info("fold %d | %s%s | train_loss %.4f | val_loss %.4f | %s %.5f | %.1fs", fold, cfg.model.name, rounds,
             train_loss, loss, metric.name, score, row["seconds"])
    return FoldResult(fold, score, 1)
