"""What a fold writes at the end of each epoch, and the last.pt a resumed fold continues from."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from competition.core.schema import Config
from competition.io.checkpoints import BEST, LAST, FoldState, copy_checkpoint, load_checkpoint
from competition.io.files import write_bytes, write_csv
from competition.io.runs import check_resumed
from competition.io.tracking import write_summary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldResult:
    """What a fold's training reports: its best score and epoch."""

    fold: int
    best_metric: float | None  # None: stopped before its first epoch ended
    best_epoch: int
    stopped_by: str | None = None  # "time_limit": train.time_limit ended the fold before its last epoch


def write_epoch(fold_dir: Path, checkpoint: bytes, oof: pd.DataFrame | None, history: list[dict], kept=None) -> None:
    """One epoch's files, each atomic, in this order: the epoch's kept weights (training.averaging's
    KeptWrites, when kept), best.pt and its oof.csv (when the epoch improved), summary.csv, then
    last.pt (a link to best.pt when they are the same epoch); then the kept weights no longer needed go."""
    if kept is not None:
        kept.write()
    if oof is not None:
        write_bytes(fold_dir / BEST, checkpoint)
        write_csv(fold_dir / "oof.csv", oof)
    write_summary(fold_dir, history)
    if oof is not None:
        copy_checkpoint(fold_dir / BEST, fold_dir / LAST)
    else:
        write_bytes(fold_dir / LAST, checkpoint)
    if kept is not None:
        kept.prune()


def resume_point(cfg: Config, fold: int) -> FoldState | None:
    """The fold's last.pt to resume from, checked against the config (io.runs.check_resumed: which keys
    a resumed run may change is io.compatibility.RESUME_MUTABLE); None (start afresh) when there is none."""
    last = cfg.fold_dir(fold) / LAST
    if not last.is_file():
        log.info("fold %d: no %s to resume from; starting from scratch", fold, last)
        return None
    saved = load_checkpoint(last)
    check_resumed(cfg, saved, last)
    return saved
