"""Before the first epoch: what a run will write under output_dir, against the space free there."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from competition.core.errors import CompetitionError
from competition.core.schema import Config
from competition.data.folder import Competition
from competition.io.checkpoints import BEST, LAST
from competition.io.disk import free_space, human_bytes
from competition.tasks import Task
from competition.training.averaging import kept_files

# What torch.save writes beyond the tensors' bytes: per tensor a zip entry (local header,
# central-directory record, padding to 64-byte alignment) and its pickle record; per file the
# pickled config, history and classes. Rounded up: against real checkpoints with AdamW's state
# for every parameter, the estimate is 1.5% above for test_resnet (4.62 MB for 4.56 MB), 0.2%
# for tf_efficientnet_lite0, 0.05% for resnet18 (134.38 MB for 134.31 MB).
PER_TENSOR = 320
PER_CHECKPOINT = 64 * 1024
# TensorBoard events (scalars, confusion matrix, misclassified images, hparams), summary.csv and
# the fold lock. Generous: a digits fold (10 classes, 12 epochs) writes 40 kB of events.
PER_FOLD_LOGS = 1 << 20
PER_EPOCH_LOGS = 8 * 1024
OOF_CELL = 24  # bytes of one oof.csv value, a float printed in full and its comma (digits: 18)


@dataclass(frozen=True)
class SpaceEstimate:
    checkpoint: int  # one checkpoint file
    checkpoint_files: int  # new checkpoint files on disk at the peak
    cache: int  # decode cache still to build
    logs: int  # oof.csv, summary.csv, TensorBoard, config.yaml
    kept: int = 0  # weights kept for train.average / train.interpolate (one fold's at a time)

    @property
    def total(self) -> int:
        return self.checkpoint * self.checkpoint_files + self.cache + self.logs + self.kept

    def describe(self) -> str:
        parts = [f"checkpoints {self.checkpoint_files} × {human_bytes(self.checkpoint)}"]
        if self.cache:
            parts.append(f"decode cache {human_bytes(self.cache)}")
        if self.kept:
            parts.append(f"kept weights {human_bytes(self.kept)}")
        return ", ".join([*parts, f"logs {human_bytes(self.logs)}"])


def checkpoint_size(model: nn.Module) -> int:
    """One checkpoint's bytes: every tensor of the model's state (parameters and buffers) as
    stored, AdamW's two moments (the parameter's dtype: fp32) and step counter for every
    parameter, as in the stage where every layer learns, and torch.save's overhead."""
    # Tensors only: a model stored as text (models/gbdt.py) has none before its fit.
    state = [t for t in model.state_dict().values() if hasattr(t, "numel")]
    params = list(model.parameters())
    data = sum(t.numel() * t.element_size() for t in state) + sum(2 * p.numel() * p.element_size() + 4 for p in params)
    return data + PER_TENSOR * (len(state) + 3 * len(params)) + PER_CHECKPOINT


def _checkpoints_in_place(fold_dir: Path) -> int:
    """Distinct checkpoint files a fold already has (last.pt may be a hard link of best.pt):
    the run replaces them, so they need no new space."""
    return len({p.stat().st_ino for p in (fold_dir / BEST, fold_dir / LAST) if p.is_file()})


def estimate_run_bytes(cfg: Config, task: Task, comp: Competition, folds: list[int], model: nn.Module) -> SpaceEstimate:
    """What training `folds` adds under output_dir at its fullest:
    1. per fold, best.pt and last.pt: last.pt is a hard link of best.pt when the epoch improved,
       else a second file; checkpoints already in the fold's folder are replaced, not added;
    2. one more checkpoint: the temporary file while one is replaced atomically (folds train
       one after another, and their writes one at a time);
    3. the decode cache when it still has to be built (`Task.prepare_bytes`);
    4. oof.csv, summary.csv, TensorBoard events and config.yaml: small, estimated generously;
    5. with train.average / train.interpolate, the weights a fold keeps under kept/ (the model's
       tensors alone, no optimizer state), removed when the fold ends: one fold's at a time; with
       train.keep_top_k, its K best epochs' stay, in every fold.
    """
    files = 1 + sum(max(0, 2 - _checkpoints_in_place(cfg.fold_dir(f))) for f in folds)
    epochs = cfg.train.freeze_epochs + cfg.train.epochs
    oof_rows = len(comp.train) * len(folds) // cfg.folds.n_splits + len(folds)
    logs = (len(folds) * (PER_FOLD_LOGS + epochs * PER_EPOCH_LOGS)
            + oof_rows * (len(comp.classes) + 2) * OOF_CELL + 64 * 1024)
    tensors = [t for t in model.state_dict().values() if isinstance(t, torch.Tensor)]  # a GBDT's text is extra state
    weights = sum(t.numel() * t.element_size() for t in tensors)
    kept_now = kept_files(cfg.train) + cfg.train.keep_top_k * (len(folds) - 1)  # finished folds keep their top k
    kept = kept_now * (weights + PER_TENSOR * len(tensors) + PER_CHECKPOINT)
    return SpaceEstimate(checkpoint_size(model), files, task.prepare_bytes(cfg, comp), logs, kept)


def check_disk_space(cfg: Config, task: Task, comp: Competition, folds: list[int], model: nn.Module) -> None:
    """Refuse, in one line, a run that would not fit where output_dir is, before it writes anything.

    No margin is added: the estimate already counts the fullest moment and rounds torch.save's
    overhead up (1.5% above the real checkpoint at most, measured), so a refusal means the run
    would have failed for space; a run that passes may still meet a disk other programs fill.
    """
    estimate = estimate_run_bytes(cfg, task, comp, folds, model)
    free, mount = free_space(cfg.output_dir)
    if estimate.total > free:
        raise CompetitionError(
            f"not enough disk space: training needs about {human_bytes(estimate.total)} in {cfg.output_dir} "
            f"({estimate.describe()}), {human_bytes(free)} free on {mount}; free some space, or set output_dir "
            f"to a larger disk"
        )
