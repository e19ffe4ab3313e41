"""Training one fold: stage 1 (head only, backbone and BatchNorm frozen) then stage 2 (all layers,
backbone at a lower learning rate), early stopping, and exact resume.

The loop reads top to bottom — resume or start, each stage, each epoch — and calls its callbacks
(training.callbacks) at fixed points; what it does beyond training lives in them: the files
(training.checkpoint_saver), weight averaging (training.averaging), tracking, signals and the time
limit. Where training stands is one TrainState (training.state), what every checkpoint records.
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
from timm.utils import random_seed
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
from competition.core.durations import parse_duration
from competition.core.interrupts import Interrupted
from competition.core.metrics import METRICS
from competition.core.runtime import amp_dtype_for
from competition.core.schema import EPOCH_PATIENCE, Config, config_to_dict
from competition.data.datasets import build_loader
from competition.data.folder import Competition, read_csv
from competition.io.checkpoints import FoldLock, FoldState
from competition.io.prob_columns import oof_frame, read_oof_probs
from competition.io.runs import RunKey, stamp
from competition.io.tracking import FoldTracker
from competition.models.summary import model_summary
from competition.tasks import Task
from competition.training import epoch as epochs
from competition.training.averaging import Averaging, combines
from competition.training.callbacks import (
    SIGNAL,
    TIME_LIMIT,
    Callbacks,
    SignalStop,
    Step,
    Stop,
    TimeLimit,
    TrackingHook,
)
from competition.training.checkpoint_saver import CheckpointSaver
from competition.training.epoch import Diverged, EpochControl, NonFiniteLoss, evaluate, train_one_epoch
from competition.training.epoch_files import FoldResult, resume_point
from competition.training.head_fit import ProbeRows
from competition.training.stages import EarlyStopping, Stage, plan_stages, train_mode
from competition.training.state import TrainState
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
    """One fold's training: its data, model, loaders, state (TrainState) and callbacks."""

    def __init__(self, cfg: Config, task: Task, comp: Competition, df: pd.DataFrame, fold: int,
                 device: torch.device, world: World, stop: Callable[[], int | None] | None = None):
        self.cfg, self.task, self.comp, self.df, self.fold = cfg, task, comp, df, fold
        self.device, self.world, self.signal = device, world, stop
        self.fold_dir = cfg.fold_dir(fold)
        self.metric = METRICS[cfg.train.metric]
        self.amp_dtype = amp_dtype_for(device, cfg.train.amp)
        self.run_key = RunKey.of(cfg, df)  # stamped on best.pt, last.pt and oof.csv (io.runs)
        self.requested: tuple[Stop, Step] | None = None  # a stop asked for after an optimizer step

    # 1. Resume or start --------------------------------------------------------------------

    def fit(self, resume: bool) -> FoldResult:
        """Resume or start, run every stage not finished yet, then the callbacks' end of the fit."""
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
        stop = None
        try:
            self.callbacks.fire("on_fit_start", self)
            for stage in self.stages:
                if not self.state.stage_done(stage):  # done before the interruption
                    if (stop := self._run_stage(stage)) is not None:
                        break
            self.callbacks.fire("on_fit_end", self, stop)
        finally:
            self.callbacks.close()
        barrier(self.world)
        s = self.state.stopper
        return FoldResult(self.fold, s.best_metric, s.best_epoch, self.state.stopped_by)

    def _set_up(self, saved: FoldState | None) -> None:
        """Model, datasets, loaders, losses, state and callbacks for this fold."""
        cfg, t = self.cfg, self.cfg.train
        random_seed(mix_seed(cfg.seed, self.fold))
        warm = warm_start_state(cfg, self.comp.classes, self.df, self.fold) if saved is None and cfg.model.init_from else None
        model, self.data = self.task.fold(cfg, self.comp, self.df, self.fold, self.device,
                                          load_pretrained=saved is None and warm is None)
        if warm is not None:
            load_warm_start(model, warm, cfg, self.fold)
            log.info("fold %d starts from %s's best.pt (epoch %d)", self.fold, cfg.model.init_from, warm.epoch)
        self.model = model.to(self.device)
        if self.device.type == "cuda":  # reaches only 4-D weights: convolutions, not a table's linear layers
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = fold_ema(cfg, self.model)
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
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.stages = plan_stages(t, self.task.two_stages)
        self.probe = ProbeRows(self.data.probe_ds, t.batch_size * 2, self.device, t.num_workers, self.data.eval_transform)
        self.state = TrainState(EarlyStopping(self.metric.higher_is_better, EPOCH_PATIENCE if t.patience is None else t.patience),
                                model=self.model, ema=self.ema, scaler=scaler)
        if saved is not None:
            self.state.load_state_dict(saved.to_dict())
        self.callbacks = Callbacks(self._policies(resumed=saved is not None))

    def _policies(self, resumed: bool) -> list:
        """The callbacks, in the order they are called: files first, then what reads them."""
        self.saver = CheckpointSaver(self)
        self.tracker = FoldTracker(self.fold_dir, purge_step=self.state.epoch + 1 if resumed else None,
                                   enabled=self.world.is_main, cfg=self.cfg, fold=self.fold)
        policies = [self.saver, *([Averaging(self.saver.kept)] if combines(self.cfg.train) else []),
                    TrackingHook(self.tracker, self._log_best_epoch)]
        if self.signal is not None:  # before the time limit: a signal's stop wins
            policies.append(SignalStop(self.signal))
        if self.cfg.train.time_limit is not None:
            policies.append(TimeLimit(parse_duration(self.cfg.train.time_limit, "train.time_limit")))
        return policies

    # 2. A stage ----------------------------------------------------------------------------

    def _run_stage(self, stage: Stage) -> Stop | None:
        """The stage's epochs from where it stands, until its end, early stopping or a stop request."""
        start, resumes = max(self.state.epoch, stage.first), self.state.resumes(stage)
        within = self.state.take_resumed_batches() if resumes else (0, 0.0, 0)  # a mid-epoch last.pt
        self.module, opt = stage_optimization(self.cfg, self.model, stage, self.task.two_stages, self.world, self.device,
                                              self.epoch_batches, start, self.state.scaler, self.ema,
                                              self.state.resumed_optimizer if resumes else None, within[0])
        self.state.start_stage(stage, opt.optimizer)
        if self.world.is_main:
            log.info("fold %d stage %d: %s", self.fold, stage.number,
                     model_summary(self.model, self.data.preprocessing, self.data.in_features))
        self.callbacks.fire("on_stage_start", self, stage)
        for e in range(start, stage.end):
            control = EpochControl(*within) if e == start else EpochControl()
            if (stop := self._run_epoch(stage, e, opt, control)) is not None:
                return stop
            if self.state.stage_complete:
                if self.state.epoch < stage.end:
                    log.info("fold %d: no improvement for %d epochs, stage %d ends early",
                             self.fold, self.state.stopper.bad_epochs, stage.number)
                break
        self.callbacks.fire("on_stage_end", self, stage)
        return None

    # 3. An epoch ---------------------------------------------------------------------------

    def _run_epoch(self, stage: Stage, e: int, opt: epochs.Optimization, control: EpochControl) -> Stop | None:
        """Train, validate, score and record epoch e+1 (the callbacks save and log it); a stop request."""
        t, began, state = self.cfg.train, time.time(), self.state
        random_seed(mix_seed(self.cfg.seed, self.fold, e))
        self.sampler.set_epoch(e, skip=control.first_batch * t.batch_size)
        if self.mixer is not None:  # train.mix_off_epochs: the last epochs of stage 2 unmixed
            self.mixer.start_epoch(mix_seed(self.cfg.seed, self.fold, e, 1), not (stage == self.stages[-1]
                                   and e >= stage.end - t.mix_off_epochs), control.first_batch)
        control.seed, control.after_step = mix_seed(self.cfg.seed, self.fold, e, 2), self._after_step(stage, e)
        self.callbacks.fire("on_epoch_start", self, stage, e)
        train_mode(self.model, stage.number, t.freeze_bn)  # DDP and compile wrappers stay in train mode
        try:
            if stage.number == 1 and t.head_fit == "logreg":  # stage 1's one epoch is an exact fit (training.head_fit)
                train = self.probe.fit_head(self.model, self.comp.target, t, mix_seed(self.cfg.seed, self.fold), self.ema)
            else:
                train = train_one_epoch(self.module, self.train_loader, opt, self.device, loss_fn=self.loss_fn,
                                        amp_dtype=self.amp_dtype, batch_transform=self.data.train_transform,
                                        mix=self.mixer, control=control, desc=f"fold {self.fold} epoch {e + 1}")
        except NonFiniteLoss as exc:
            self._diverged(f"the training loss is {exc.value} at epoch {e + 1}, batch {exc.batch + 1} of {exc.of}")
        if train["stopped"]:
            return self._stopped(*self.requested)
        score, val_loss, probs = self.score(self.scored, f"at epoch {e + 1}")
        train_loss = all_mean(train["loss"], train["samples"], self.world)
        state.epoch = e + 1
        improved = state.stopper.update(state.epoch, score, val_loss)
        state.stage, state.stage_complete = stage.number, state.stopper.should_stop or state.epoch == stage.end
        fold_ends = state.stage_complete and stage == self.stages[-1]
        # the fold's last epoch marks itself finished (unless weights are combined after it)
        state.finished = fold_ends and not combines(t)
        row = {"epoch": state.epoch, "stage": stage.number, "train_loss": train_loss, "val_loss": val_loss,
               "metric": score, "best": improved, "seconds": round(time.time() - began, 2),
               **{f"lr_{k}": v for k, v in train["lrs"].items()}}
        state.history.append(row)
        stop = self._stop_at_epoch_end(fold_ends)
        state.stopped_by = TIME_LIMIT if stop is not None and stop.reason == TIME_LIMIT else None
        self.callbacks.fire("on_epoch_end", self, stage, row, improved, probs)
        barrier(self.world)
        log.info("fold %d | epoch %d/%d stage %d | train_loss %.4f | val_loss %.4f | %s %.5f%s%s | %.1fs",
                 self.fold, state.epoch, self.stages[-1].end, stage.number, train_loss, val_loss, self.metric.name,
                 score, " (EMA)" if self.ema is not None else "", " *" if improved else "", row["seconds"])
        return self._stopped(stop, None) if stop is not None else None

    # 3a. Stopping ----------------------------------------------------------------------------

    def _after_step(self, stage: Stage, e: int) -> Callable:
        """What train_one_epoch calls after each optimizer step: the step hooks, then whether to stop.
        Under torchrun the ranks agree on stopping at an epoch's end (_stop_at_epoch_end), not here."""
        def after(batches: int, total, samples: int, check_losses: Callable[[], None]) -> bool:
            step = Step(stage, e, batches, total, samples, check_losses)
            self.callbacks.fire("on_step_end", self, step)
            stop = None if self.world.distributed else self.callbacks.stop_request(self, at_step=True)
            self.requested = (stop, step) if stop is not None else None
            return stop is not None
        return after

    def _stop_at_epoch_end(self, fold_ends: bool) -> Stop | None:
        """A stop request at the end of an epoch, agreed by every rank under torchrun (a signal wins
        over the time limit); the time limit means nothing once the fold has trained to its end."""
        stop = self.callbacks.stop_request(self, at_step=False)
        if self.world.distributed:
            code = any_rank(stop.signum if stop is not None and stop.reason == SIGNAL else 1 if stop is not None else None,
                            self.world)
            limit = next(c for c in self.callbacks.items if isinstance(c, TimeLimit)) if code == 1 else None
            stop = None if code is None else Stop(SIGNAL, code) if code > 1 else limit.stop()
        return None if stop is not None and stop.reason == TIME_LIMIT and fold_ends else stop

    def _stopped(self, stop: Stop, step: Step | None) -> Stop:
        """The fold stops: the callbacks save where it stands (`step`, within an epoch). A signal ends
        the command (exit 130); the time limit ends the fold cleanly, its best epoch kept."""
        if stop.reason == TIME_LIMIT:
            self.state.stopped_by = TIME_LIMIT
        where = self.callbacks.on_stop(self, stop, step)
        if stop.reason == SIGNAL:
            raise Interrupted(stop.signum, f"fold {self.fold} stopped {where}")
        best = (f"best.pt holds epoch {self.state.stopper.best_epoch}" if self.state.history
                else "no epoch has ended, so there is no best.pt yet")
        log.info("fold %d: %s reached; stopped %s; %s; --resume continues it", self.fold, stop.detail, where, best)
        return stop

    def _diverged(self, what: str) -> NoReturn:
        """Stop the fold: the epoch in progress is not saved, the files of earlier epochs stay whole."""
        self.saver.wait()
        raise Diverged(f"fold {self.fold} diverged: {what}; nothing from that epoch on was saved; lower "
                       f"train.lr ({self.cfg.train.lr:g}) or set train.clip_grad_norm")

    # 4. What the callbacks read ----------------------------------------------------------------

    @property
    def scored(self) -> nn.Module:
        """The weights validation scores and best.pt holds: the EMA's when train.ema_decay is on."""
        return self.ema.module if self.ema is not None else self.model

    def checkpoint(self, within: Step | None = None) -> FoldState:
        """The fold's checkpoint now: after the last epoch, or `within` the next one (a mid-epoch last.pt)."""
        progress = self.state.state_dict()
        if within is not None:
            progress.update(stage=within.stage.number, stage_complete=False, finished=False, batches_done=within.batches,
                            epoch_loss_total=within.loss_total, epoch_samples=within.samples)
        last = self.state.history[-1] if self.state.history else {"val_loss": math.nan, "metric": math.nan}
        return FoldState(
            fold=self.fold, config=config_to_dict(self.cfg), classes=list(self.comp.classes),
            metric_name=self.metric.name, higher_is_better=self.metric.higher_is_better,
            preprocessing=self.data.preprocessing, preprocessor=self.data.preprocessor_state,
            in_features=self.data.in_features, loss=last["val_loss"], metric=last["metric"], **progress,
            config_hash=self.run_key.config, folds_hash=self.run_key.folds,
        )

    def score(self, scored: nn.Module, when: str = "after combining weights") -> tuple[float, float, np.ndarray]:
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

    def oof(self, probs: np.ndarray) -> pd.DataFrame:
        answers = self.comp.target.answer_frame(self.data.valid_targets)
        return stamp(oof_frame(self.data.valid_ids, self.cfg.data.id_column, answers, self.comp.classes, probs), self.run_key)

    def _log_best_epoch(self) -> None:
        """Figures of the best epoch, from its oof.csv (written before the fit's end)."""
        best_probs = read_oof_probs(read_csv(self.fold_dir / "oof.csv", "out-of-fold file"), self.comp.classes)
        self.tracker.log_best(self.state.stopper, best_probs, self.data, self.comp, config_to_dict(self.cfg),
                              self.metric.name)
