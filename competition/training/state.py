"""Where a fold's training stands, in one object: what `--resume` restores and every checkpoint
records. `TrainState.state_dict()` is the progress part of a checkpoint (io.checkpoints.FoldState:
the same field names), `load_state_dict()` puts a checkpoint's progress back."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from timm.utils import unwrap_model
from torch import nn

from competition.training.stages import EarlyStopping, Stage

# The fields of a checkpoint that TrainState writes and reads (io.checkpoints.FoldState's names).
COUNTERS = ("epoch", "stage", "stage_complete", "finished", "batches_done", "epoch_loss_total", "epoch_samples",
            "stopped_by")
STOPPER = ("best_metric", "best_loss", "best_epoch", "bad_epochs")


@dataclass
class TrainState:
    """A fold's progress after `epoch` completed epochs (and `batches_done` batches of the next, the
    sampler's position, after a mid-epoch save), its history and early stopping, and the live
    objects whose state a checkpoint holds: the model, its EMA, the stage's optimizer, the scaler.

    The weights that score (the EMA's when train.ema_decay is on) are `model_state_dict`; the raw
    training weights beside them are `train_state_dict`."""

    stopper: EarlyStopping
    epoch: int = 0
    stage: int = 0  # the stage of the last epoch saved (0: nothing yet)
    stage_complete: bool = False
    finished: bool = False
    batches_done: int = 0
    epoch_loss_total: float = 0.0
    epoch_samples: int = 0
    stopped_by: str | None = None  # "time_limit": train.time_limit ended this (unfinished) fold
    history: list[dict] = field(default_factory=list)
    model: nn.Module | None = None
    ema: nn.Module | None = None  # timm's ModelEmaV3
    optimizer: torch.optim.Optimizer | None = None
    scaler: torch.amp.GradScaler | None = None
    # A checkpoint's optimizer and scaler states wait here for the stage that resumes them.
    resumed_optimizer: dict | None = None
    resumed_scaler: dict | None = None

    # What a checkpoint holds ----------------------------------------------------------------

    def state_dict(self) -> dict:
        """The progress fields of a checkpoint, with the weights, the optimizer and the scaler."""
        module = unwrap_model(self.model)
        return {
            **{k: getattr(self, k) for k in COUNTERS}, **{k: getattr(self.stopper, k) for k in STOPPER},
            "history": list(self.history),
            "model_state_dict": (self.ema.module if self.ema is not None else module).state_dict(),
            "train_state_dict": module.state_dict() if self.ema is not None else None,
            "scored": "ema" if self.ema is not None else "model",
            "optimizer_state_dict": self.optimizer.state_dict() if self.optimizer is not None else {},
            "scaler_state_dict": self.scaler.state_dict() if self.scaler is not None and self.scaler.is_enabled() else None,
        }

    def load_state_dict(self, saved: dict) -> None:
        """Resume from a checkpoint's fields: counters, history and early stopping now, the weights into
        the model and EMA (when attached), the optimizer and scaler when their stage starts."""
        for k in COUNTERS:
            setattr(self, k, saved.get(k, getattr(self, k)))
        for k in STOPPER:
            setattr(self.stopper, k, saved[k])
        self.history = list(saved["history"])
        self.stopped_by = None  # a record of why the last run stopped; this one goes on
        if self.model is not None:  # the raw training weights; the EMA's are what scored
            raw = saved.get("train_state_dict")
            self.model.load_state_dict(raw if raw is not None else saved["model_state_dict"])
        if self.ema is not None:
            self.ema.module.load_state_dict(saved["model_state_dict"])
        self.resumed_optimizer, self.resumed_scaler = saved.get("optimizer_state_dict"), saved.get("scaler_state_dict")

    # Where the fold stands -------------------------------------------------------------------

    def stage_done(self, stage: Stage) -> bool:
        """Whether `stage` finished before the interruption this state resumes from."""
        return stage.number < self.stage or (stage.number == self.stage and self.stage_complete)

    def resumes(self, stage: Stage) -> bool:
        """Whether `stage` was under way when the checkpoint this state resumes from was saved."""
        return self.stage == stage.number and not self.stage_complete

    def start_stage(self, stage: Stage, optimizer: torch.optim.Optimizer) -> None:
        """The stage's optimizer is the one saved from now on (built from `resumed_optimizer` when the
        stage resumes); a resumed stage's early stopping and scaler go on from the checkpoint, a new
        stage's patience starts afresh."""
        self.optimizer = optimizer
        if self.resumes(stage):
            if self.resumed_scaler and self.scaler is not None:
                self.scaler.load_state_dict(self.resumed_scaler)
        else:
            self.stopper.bad_epochs = 0
        self.resumed_optimizer = self.resumed_scaler = None

    def take_resumed_batches(self) -> tuple[int, float, int]:
        """(batches, loss total, samples) of the epoch a mid-epoch checkpoint stopped in, once: the
        epochs after it start at batch 0."""
        within = (self.batches_done, self.epoch_loss_total, self.epoch_samples)
        self.batches_done, self.epoch_loss_total, self.epoch_samples = 0, 0.0, 0
        return within
