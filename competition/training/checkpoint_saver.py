"""The fold's files, as a callback of the loop (training.callbacks): at each epoch's end best.pt and
its oof.csv (when the epoch improved), summary.csv, last.pt, and the weights kept under kept/ (the
K best epochs' for train.keep_top_k, and what train.average / train.interpolate will combine);
within an epoch, last.pt every train.checkpoint_every_minutes and where a stop request ends it.

Every write is serialised on the loop's thread (a snapshot later steps cannot change) and written
on a background thread (io.files.BackgroundWriter) while the next epoch trains, in the order
training.epoch_files.write_epoch gives. Only the first rank writes."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from competition.io.checkpoints import LAST, checkpoint_bytes
from competition.io.files import BackgroundWriter, write_bytes
from competition.training.averaging import KeptWeights, keeps
from competition.training.callbacks import SIGNAL, Callback, FoldRun, Step, Stop
from competition.training.epoch_files import write_epoch

if TYPE_CHECKING:
    from competition.training.stages import Stage

log = logging.getLogger(__name__)


class CheckpointSaver(Callback):
    def __init__(self, loop: FoldRun):
        t = loop.cfg.train
        self.writes = loop.world.is_main
        self.every_s = t.checkpoint_every_minutes * 60 if self.writes else 0.0
        self.kept = KeptWeights(loop.fold_dir, t, loop.metric.higher_is_better) if keeps(t) else None
        self.writer = BackgroundWriter()
        self.saved_at = time.monotonic()

    def wait(self) -> None:
        """Every write submitted so far is in place (and its error, if any, raised here)."""
        self.writer.wait()

    def on_epoch_start(self, loop: FoldRun, stage: Stage, epoch: int) -> None:
        self.saved_at = time.monotonic()

    def on_step_end(self, loop: FoldRun, step: Step) -> None:
        if self.every_s and time.monotonic() - self.saved_at >= self.every_s:
            step.check_losses()  # nothing computed from a non-finite loss is saved
            self.save_within(loop, step)

    def on_epoch_end(self, loop: FoldRun, stage: Stage, row: dict, improved: bool, probs) -> None:
        if not self.writes:
            return
        state = loop.checkpoint()
        oof = loop.oof(probs) if improved else None
        kept = self.kept.epoch_writes(row["epoch"], loop.state.history, loop.scored) if self.kept is not None else None
        # Serialised here, written (in this order, each atomically) while the next epoch trains.
        self.writer.submit(write_epoch, loop.fold_dir, checkpoint_bytes(state), oof, list(loop.state.history), kept)

    def on_stop(self, loop: FoldRun, stop: Stop, step: Step | None) -> str:
        """Save where a stopped epoch stands (`step`; None at an epoch's end, already saved) and wait for
        the writes; returns where the fold stopped, for the user. The time limit always saves it; a
        signal, when mid-epoch checkpoints are on."""
        if step is None:
            self.wait()
            return f"after epoch {loop.state.epoch}; {loop.fold_dir / LAST} holds it"
        batches = f"{step.batches} of {loop.epoch_batches} batches"
        if self.writes and (stop.reason != SIGNAL or self.every_s):
            self.save_within(loop, step)
            self.wait()
            return f"after {batches} of epoch {step.epoch + 1}; {loop.fold_dir / LAST} holds them"
        self.wait()
        return (f"in epoch {step.epoch + 1} ({batches}, not saved: train.checkpoint_every_minutes "
                f"is 0); {loop.fold_dir / LAST} holds epoch {loop.state.epoch}")

    def save_within(self, loop: FoldRun, step: Step) -> None:
        """last.pt in the middle of an epoch: `step.batches` of it done; --resume goes on from there."""
        if not self.writes:
            return
        state = loop.checkpoint(within=step)
        self.writer.submit(write_bytes, loop.fold_dir / LAST, checkpoint_bytes(state))
        self.saved_at = time.monotonic()
        log.info("fold %d: saved %s within epoch %d, after %d of %d batches", loop.fold, LAST, step.epoch + 1,
                 step.batches, loop.epoch_batches)

    def on_fit_end(self, loop: FoldRun, stop: Stop | None) -> None:
        self.wait()  # the last epoch's files are in place before anything reads them

    def close(self) -> None:
        self.writer.close()
