"""Training one fold: stage 1 (head only, backbone and BatchNorm frozen) then stage 2 (all layers,
backbone at a lower learning rate), early stopping, best/last checkpoints and exact resume.

`FoldRun` holds what one fold's training needs; its methods are the phases the README
describes: resume or start, each stage, each epoch, the checkpoint, the figures at the end.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import NoReturn

import numpy as np
import pandas as pd
import torch
from timm.utils import random_seed, unwrap_model
from torch import nn

from competition.core.distributed import (
    ShardSampler,
    World,
    all_mean,
    any_rank,
    barrier,
    broadcast_buffers,
    gather_rows,
    mix_seed,
)
from competition.core.interrupts import Interrupted
from competition.core.metrics import METRICS
from competition.core.runtime import amp_dtype_for
from competition.core.schema import EPOCH_PATIENCE, Config, config_to_dict
from competition.data.datasets import build_loader
from competition.data.folder import Competition, read_csv
from competition.io.checkpoints import (
    LAST,
    FoldLock,
    FoldState,
    checkpoint_bytes,
)
from competition.io.files import BackgroundWriter, write_bytes
from competition.io.prob_columns import oof_frame, read_oof_probs
from competition.io.runs import RunKey, stamp
from competition.io.tracking import FoldTracker
from competition.models.summary import model_summary
from competition.tasks import Task
from competition.training import epoch as epochs
from competition.training.averaging import Combiner, KeptWeights, combines, finish_fold
from competition.training.epoch import Diverged, EpochControl, NonFiniteLoss, Optimization, evaluate, train_one_epoch
from competition.training.epoch_files import FoldResult, resume_point, write_epoch
from competition.training.head_fit import ProbeRows
from competition.training.stages import EarlyStopping, Stage, plan_stages, train_mode
from competition.training.toolbox import fold_ema, fold_losses, fold_sampler, stage_optimization
from competition.training.warm_start import load_warm_start, warm_start_state

log = logging.getLogger(__name__)


def fit_fold(cfg: Config, task: Task, comp: Competition, df: pd.DataFrame, fold: int, *, device: torch.device,
             world: World | None = None, resume: bool = False, stop: Callable[[], int | None] | None = None) -> FoldResult:
    """Train one fold end to end (under the fold's lock on the first rank). `stop()` returns the
    signal that asked training to stop (core.interrupts.GracefulStop), or None."""
    world = world or World()
    if world.distributed:
        # One rank decodes (the cache) while the others wait, then every rank maps that file.
        if world.is_main:
            task.prepare(cfg, comp)
        barrier(world)
    run = FoldRun(cfg, task, comp, df, fold, device, world, stop)
    if world.is_main:
        with FoldLock(cfg.fold_dir(fold)):
            return run.fit(resume)
    return run.fit(resume)


class FoldRun:
    """One fold's training: its data, model, loaders, progress and outputs."""

    def __init__(self, cfg: Config, task: Task, comp: Competition, df: pd.DataFrame, fold: int,
                 device: torch.device, world: World, stop: Callable[[], int | None] | None = None):
        self.cfg, self.task, self.comp, self.df, self.fold = cfg, task, comp, df, fold
        self.device, self.world, self.stop = device, world, stop
        self.fold_dir = cfg.fold_dir(fold)
        self.metric = METRICS[cfg.train.metric]
        self.amp_dtype = amp_dtype_for(device, cfg.train.amp)
        self.run_key = RunKey.of(cfg, df)  # stamped on best.pt, last.pt and oof.csv (io.runs)

    # 1. Resume or start --------------------------------------------------------------------

    def fit(self, resume: bool) -> FoldResult:
        """Resume or start, run every stage not finished yet, then draw the best epoch's figures."""
        for stale in self.fold_dir.glob(".*.tmp"):  # a killed run's unfinished writes; we hold the lock
            stale.unlink(missing_ok=True)
        saved = resume_point(self.cfg, self.fold) if resume else None
        if saved is not None and saved.finished:
            log.info("fold %d already finished (best %s %.5f at epoch %d)",
                     self.fold, self.metric.name, saved.best_metric, saved.best_epoch)
            return FoldResult(self.fold, saved.best_metric, saved.best_epoch)
        if saved is not None:
            log.info("fold %d: resuming after epoch %d%s (stage %d)", self.fold, saved.epoch,
                     f" and {saved.batches_done} batches of the next" if saved.batches_done else "", saved.stage)
        self._set_up(saved)
        try:
            with BackgroundWriter() as self.writer:
                for stage in self.stages:
                    if saved is not None and (stage.number < saved.stage
                                              or (stage.number == saved.stage and saved.stage_complete)):
                        continue  # done before the interruption
                    self._run_stage(stage, saved if saved is not None and stage.number == saved.stage else None)
                    saved = None  # later stages start fresh
                self._finish()
            # The writer has closed: the last epoch's files are in place before anything reads them.
            if self.world.is_main:
                self._log_best_epoch()
        finally:
            self.tracker.close()
        barrier(self.world)
        return FoldResult(self.fold, self.stopper.best_metric, self.stopper.best_epoch)

    def _set_up(self, saved: FoldState | None) -> None:
        """Model, datasets, loaders, losses, progress and tracker for this fold."""
        cfg, t = self.cfg, self.cfg.train
        random_seed(mix_seed(cfg.seed, self.fold))
        warm = warm_start_state(cfg, self.comp.classes, self.df, self.fold) if saved is None and cfg.model.init_from else None
        model, self.data = self.task.fold(cfg, self.comp, self.df, self.fold, self.device,
                                          load_pretrained=saved is None and warm is None)
        if warm is not None:
            load_warm_start(model, warm, cfg, self.fold)
            log.info("fold %d starts from %s's best.pt (epoch %d)", self.fold, cfg.model.init_from, warm.epoch)
        if saved is not None:  # the raw training weights; the EMA's are what scored
            model.load_state_dict(saved.train_state_dict if saved.train_state_dict is not None else saved.model_state_dict)
        self.model = model.to(self.device)
        if self.device.type == "cuda":  # reaches only 4-D weights: convolutions, not a table's linear layers
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = fold_ema(cfg, self.model)
        if self.ema is not None and saved is not None:
            self.ema.module.load_state_dict(saved.model_state_dict)
        self.sampler = fold_sampler(cfg, self.data.train_targets, self.fold, self.world)
        extra = len(self.data.train_ds) - int((self.df.fold != self.fold).sum())
        log.info("fold %d: %d training rows%s, %d validation rows", self.fold, len(self.data.train_ds),
                 f" ({extra} of them pseudo-labelled test rows)" if extra else "", len(self.data.valid_ds))
        # BatchNorm layers cannot learn from a batch of one: drop a lone last row.
        drop_last = len(self.sampler) % t.batch_size == 1  # rows per rank under DDP
        self.train_loader = build_loader(self.data.train_ds, t.batch_size, self.device, num_workers=t.num_workers,
                                         sampler=self.sampler, drop_last=drop_last)
        self.epoch_batches = len(self.train_loader)
        self.valid_loader = build_loader(self.data.valid_ds, t.batch_size * 2, self.device, num_workers=t.num_workers,
                                         sampler=ShardSampler(len(self.data.valid_ds), self.world))
        self.loss_fn, self.eval_loss, self.mixer = fold_losses(cfg, self.comp.target, self.data.train_targets, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.stages = plan_stages(t, self.task.two_stages)
        self.history: list[dict] = list(saved.history) if saved else []
        self.epoch = saved.epoch if saved else 0  # epochs completed
        self.stopper = EarlyStopping(self.metric.higher_is_better, EPOCH_PATIENCE if t.patience is None else t.patience)
        self.kept = KeptWeights(self.fold_dir, t, self.metric.higher_is_better) if combines(t) else None
        self.probe = ProbeRows(self.data.probe_ds, t.batch_size * 2, self.device, t.num_workers, self.data.eval_transform)
        if saved is not None:
            self.stopper.best_metric, self.stopper.best_loss, self.stopper.best_epoch = (
                saved.best_metric, saved.best_loss, saved.best_epoch)
        self.tracker = FoldTracker(self.fold_dir, purge_step=self.epoch + 1 if saved else None, enabled=self.world.is_main,
                                   cfg=cfg, fold=self.fold)

    # 2. A stage ----------------------------------------------------------------------------

    def _run_stage(self, stage: Stage, saved: FoldState | None) -> None:
        """The stage's epochs from where it stands, until its end or early stopping."""
        start = max(self.epoch, stage.first)
        within = saved.batches_done if saved is not None else 0  # a mid-epoch last.pt
        module, opt = stage_optimization(self.cfg, self.model, stage, self.task.two_stages, self.world, self.device,
                                         self.epoch_batches, start, self.scaler, self.ema,
                                         saved.optimizer_state_dict if saved is not None else None, within)
        if self.world.is_main:
            log.info("fold %d stage %d: %s", self.fold, stage.number,
                     model_summary(self.model, self.data.preprocessing, self.data.in_features))
        self.stopper.bad_epochs = 0
        if saved is not None:
            if saved.scaler_state_dict:
                self.scaler.load_state_dict(saved.scaler_state_dict)
            self.stopper.bad_epochs = saved.bad_epochs
        for e in range(start, stage.end):
            resumed = EpochControl(saved.batches_done, saved.epoch_loss_total, saved.epoch_samples) \
                if saved is not None and e == start and saved.batches_done else EpochControl()
            stop = self._run_epoch(stage, e, module, opt, resumed)
            if stop and self.epoch < stage.end:
                log.info("fold %d: no improvement for %d epochs, stage %d ends early",
                         self.fold, self.stopper.bad_epochs, stage.number)
                break

    # 3. An epoch ---------------------------------------------------------------------------

    def _run_epoch(self, stage: Stage, e: int, module: nn.Module, opt: Optimization, control: EpochControl) -> bool:
        """Train, validate, score, checkpoint and log epoch e+1; returns whether to stop the stage."""
        t, began = self.cfg.train, time.time()
        random_seed(mix_seed(self.cfg.seed, self.fold, e))
        self.sampler.set_epoch(e, skip=control.first_batch * t.batch_size)
        if self.mixer is not None:  # train.mix_off_epochs: the last epochs of stage 2 unmixed
            self.mixer.start_epoch(mix_seed(self.cfg.seed, self.fold, e, 1), not (stage == self.stages[-1]
                                   and e >= stage.end - t.mix_off_epochs), control.first_batch)
        control.seed = mix_seed(self.cfg.seed, self.fold, e, 2)
        # Under torchrun the ranks agree on stopping at an epoch's end (below), not at a step.
        control.stop = self.stop if self.stop is not None and not self.world.distributed else None
        if self.world.is_main and t.checkpoint_every_minutes > 0:
            control.save_every_s = t.checkpoint_every_minutes * 60
            control.save = lambda batches, total, samples: self._save_within(stage, e, module, opt, batches, total, samples)
        train_mode(self.model, stage.number, t.freeze_bn)  # DDP and compile wrappers stay in train mode
        try:
            if stage.number == 1 and t.head_fit == "logreg":  # stage 1's one epoch is an exact fit (training.head_fit)
                train = self.probe.fit_head(self.model, self.comp.target, t, mix_seed(self.cfg.seed, self.fold), self.ema)
            else:
                train = train_one_epoch(module, self.train_loader, opt, self.device, loss_fn=self.loss_fn,
                                        amp_dtype=self.amp_dtype, batch_transform=self.data.train_transform,
                                        mix=self.mixer, control=control, desc=f"fold {self.fold} epoch {e + 1}")
        except NonFiniteLoss as exc:
            self._diverged(f"the training loss is {exc.value} at epoch {e + 1}, batch {exc.batch + 1} of {exc.of}")
        if train["stopped"]:
            self._stop_within(stage, e, module, opt, train)
        scored = self.ema.module if self.ema is not None else self.model  # validation scores the EMA
        score, val_loss, probs = self._score(scored, f"at epoch {e + 1}")
        train_loss = all_mean(train["loss"], train["samples"], self.world)
        self.epoch = e + 1
        improved = self.stopper.update(self.epoch, score, val_loss)
        stop = self.stopper.should_stop
        row = {
            "epoch": self.epoch, "stage": stage.number, "train_loss": train_loss, "val_loss": val_loss,
            "metric": score, "best": improved, "seconds": round(time.time() - began, 2),
            **{f"lr_{k}": v for k, v in train["lrs"].items()},
        }
        self.history.append(row)
        if self.world.is_main:
            state = self._checkpoint(stage, stop, module, opt.optimizer, val_loss, score)
            self.tracker.log_epoch(self.epoch, row, self.metric.name, train["lrs"])
            oof = self._oof(probs) if improved else None
            kept = self.kept.epoch_writes(self.epoch, self.history, scored) if self.kept is not None else None
            # Serialised here, written (in this order, each atomically) while the next epoch trains.
            self.writer.submit(write_epoch, self.fold_dir, checkpoint_bytes(state), oof, list(self.history), kept)
        barrier(self.world)
        log.info("fold %d | epoch %d/%d stage %d | train_loss %.4f | val_loss %.4f | %s %.5f%s%s | %.1fs",
                 self.fold, self.epoch, self.stages[-1].end, stage.number, train_loss, val_loss, self.metric.name,
                 score, " (EMA)" if self.ema is not None else "", " *" if improved else "", row["seconds"])
        self._stop_at_epoch_end()
        return stop

    # 3a. A diverging fold ----------------------------------------------------------------------

    def _diverged(self, what: str) -> NoReturn:
        """Stop the fold: the epoch in progress is not saved, the files of earlier epochs stay whole."""
        self.writer.wait()
        raise Diverged(f"fold {self.fold} diverged: {what}; nothing from that epoch on was saved; lower "
                       f"train.lr ({self.cfg.train.lr:g}) or set train.clip_grad_norm")

    # 3b. Stopping and saving within an epoch ---------------------------------------------------

    def _save_within(self, stage: Stage, e: int, module: nn.Module, opt: Optimization, batches: int,
                     loss_total: float, samples: int) -> None:
        """last.pt in the middle of epoch e+1: `batches` of it done; --resume goes on from there."""
        previous = self.history[-1] if self.history else {"val_loss": math.nan, "metric": math.nan}
        state = self._checkpoint(stage, False, module, opt.optimizer, previous["val_loss"], previous["metric"])
        state.stage_complete = state.finished = False
        state.batches_done, state.epoch_loss_total, state.epoch_samples = batches, loss_total, samples
        self.writer.submit(write_bytes, self.fold_dir / LAST, checkpoint_bytes(state))
        log.info("fold %d: saved %s within epoch %d, after %d of %d batches", self.fold, LAST, e + 1, batches,
                 self.epoch_batches)

    def _stop_within(self, stage: Stage, e: int, module: nn.Module, opt: Optimization, train: dict) -> None:
        """A signal asked to stop: save where the epoch stands (with mid-epoch checkpoints on), wait
        for the writes, and say where it stopped."""
        signum = self.stop()
        total = self.epoch_batches
        if self.world.is_main and self.cfg.train.checkpoint_every_minutes > 0:
            self._save_within(stage, e, module, opt, train["batches"], train["loss_total"], train["samples"])
            where = f"after {train['batches']} of {total} batches of epoch {e + 1}; {self.fold_dir / LAST} holds them"
        else:
            where = (f"in epoch {e + 1} ({train['batches']} of {total} batches, not saved: train.checkpoint_every_minutes "
                     f"is 0); {self.fold_dir / LAST} holds epoch {self.epoch}")
        self.writer.wait()
        raise Interrupted(signum, f"fold {self.fold} stopped {where}")

    def _stop_at_epoch_end(self) -> None:
        """A signal during validation, or under torchrun (where the ranks agree once an epoch):
        stop now that this epoch's files are written."""
        signum = self.stop() if self.stop is not None else None
        if self.world.distributed:
            signum = any_rank(signum, self.world)
        if signum:
            self.writer.wait()
            raise Interrupted(signum, f"fold {self.fold} stopped after epoch {self.epoch}; {self.fold_dir / LAST} holds it")

    def _checkpoint(self, stage: Stage, stop: bool, module: nn.Module, optimizer, val_loss: float, score: float) -> FoldState:
        stage_complete = stop or self.epoch == stage.end
        return FoldState(
            fold=self.fold, config=config_to_dict(self.cfg), classes=list(self.comp.classes),
            metric_name=self.metric.name, higher_is_better=self.metric.higher_is_better,
            preprocessing=self.data.preprocessing, preprocessor=self.data.preprocessor_state,
            in_features=self.data.in_features,
            epoch=self.epoch, stage=stage.number, stage_complete=stage_complete,
            # the fold's last epoch marks itself, so no rewrite of last.pt at the end (unless weights are combined then)
            finished=stage_complete and stage == self.stages[-1] and self.kept is None,
            loss=val_loss, metric=score, best_metric=self.stopper.best_metric, best_epoch=self.stopper.best_epoch,
            best_loss=self.stopper.best_loss, bad_epochs=self.stopper.bad_epochs, history=self.history,
            # The weights that scored (the EMA's when train.ema_decay is on) are what predict loads.
            model_state_dict=(self.ema.module if self.ema is not None else unwrap_model(module)).state_dict(),
            train_state_dict=unwrap_model(module).state_dict() if self.ema is not None else None,
            scored="ema" if self.ema is not None else "model",
            optimizer_state_dict=optimizer.state_dict(),
            scaler_state_dict=self.scaler.state_dict() if self.scaler.is_enabled() else None,
            config_hash=self.run_key.config, folds_hash=self.run_key.folds,
        )

    def _score(self, scored: nn.Module, when: str = "after combining weights") -> tuple[float, float, np.ndarray]:
        """(score, loss, probabilities) on the fold's validation rows, gathered across ranks; numbers, or the
        fold stops (`when` says at which point)."""
        broadcast_buffers(scored, self.world)  # validate with the statistics best.pt will hold
        result = evaluate(scored, self.valid_loader, self.device, loss_fn=self.eval_loss, amp_dtype=self.amp_dtype,
                          batch_transform=self.data.eval_transform, multi_label=self.comp.target.multi_label)
        probs = gather_rows(result["probs"], len(self.data.valid_ds), self.world)
        loss = all_mean(result["loss"], len(result["targets"]), self.world)
        if (what := epochs.non_finite(probs, loss, self.data.valid_ids, when)) is not None:
            self._diverged(what)  # scoring NaNs would end in scikit-learn's traceback
        return self.metric.best(self.data.valid_targets, probs), loss, probs

    def _oof(self, probs: np.ndarray) -> pd.DataFrame:
        answers = self.comp.target.answer_frame(self.data.valid_targets)
        return stamp(oof_frame(self.data.valid_ids, self.cfg.data.id_column, answers, self.comp.classes, probs), self.run_key)

    def _finish(self) -> None:
        """train.average / train.interpolate: best.pt becomes the combination of the fold's kept weights."""
        if self.kept is not None:
            self.writer.wait()  # the last epoch's kept weights are in place
            random_seed(mix_seed(self.cfg.seed, self.fold, self.epoch, 3))  # dropout while BatchNorm statistics are recomputed
            combiner = Combiner(self.model, self._score, self.probe.recompute_bn, self.metric.higher_is_better)
            done = finish_fold(self.kept, self.history, combiner, self._oof if self.world.is_main else None)
            self.stopper.best_metric, self.stopper.best_loss = done.score, done.loss

    # 4. The end ----------------------------------------------------------------------------

    def _log_best_epoch(self) -> None:
        """Figures of the best epoch, drawn once (from its oof.csv, which a resumed run also has)
        rather than on every improvement: each costs as much as a small model's epoch."""
        best_probs = read_oof_probs(read_csv(self.fold_dir / "oof.csv", "out-of-fold file"), self.comp.classes)
        self.tracker.log_best(self.stopper, best_probs, self.data, self.comp, config_to_dict(self.cfg), self.metric.name)
