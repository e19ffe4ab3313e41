"""The fold loop's hook points, and the policies that stop it.

The loop (training.fold) calls every callback at fixed points — fit start and end, stage start and
end, epoch start and end, after each optimizer step — and asks them whether to stop, after each
step and at each epoch's end. A policy is one Callback subclass: the checkpoint saver
(training.checkpoint_saver), tracking (TrackingHook), weight averaging (training.averaging),
a signal (SignalStop) and the time limit (TimeLimit).

In the spirit of Lightning's Callback and timm's CheckpointSaver, kept to the handful of points
this loop has: a dependency on either would be a framework for six methods."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from competition.core.durations import format_duration

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from torch import nn

    from competition.core.distributed import World
    from competition.core.metrics import Metric
    from competition.core.schema import Config
    from competition.io.checkpoints import FoldState
    from competition.training.head_fit import ProbeRows
    from competition.training.stages import Stage
    from competition.training.state import TrainState

log = logging.getLogger(__name__)

SIGNAL, TIME_LIMIT = "signal", "time_limit"


class FoldRun(Protocol):
    """What a policy may read of the fold loop (training.fold.FoldRun) and ask of it."""

    cfg: Config
    fold: int
    fold_dir: Path
    world: World
    metric: Metric
    state: TrainState
    model: nn.Module
    probe: ProbeRows  # the training rows in their validation view (BatchNorm statistics recomputed on them)
    epoch_batches: int

    @property
    def scored(self) -> nn.Module: ...  # the weights validation scores: the EMA's, when on
    def checkpoint(self, within: Step | None = None) -> FoldState: ...
    def score(self, scored: nn.Module, when: str = ...) -> tuple[float, float, np.ndarray]: ...
    def oof(self, probs: np.ndarray) -> pd.DataFrame: ...


@dataclass(frozen=True)
class Stop:
    """A request to stop the fold: a signal's (exit 130, --resume continues) or the time limit's
    (the fold ends cleanly, exit 0, its best epoch so far kept; --resume continues it)."""

    reason: str  # SIGNAL | TIME_LIMIT
    signum: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class Step:
    """Where an epoch stands after an optimizer step: `batches` of it done, with this running loss
    (kept on the device until read: reading it makes the host wait for a GPU)."""

    stage: Stage
    epoch: int  # 0-based: epoch `epoch` + 1 is under way
    batches: int
    total: Any  # the loss summed over the samples so far, a device tensor
    samples: int
    check_losses: Callable[[], None]  # raises training.epoch.NonFiniteLoss for a bad batch so far

    @property
    def loss_total(self) -> float:
        return float(self.total)


class Callback:
    """Every hook does nothing unless a policy needs it. `loop` is the FoldRun: its state
    (TrainState), config, fold folder and world."""

    def on_fit_start(self, loop: FoldRun) -> None: ...
    def on_stage_start(self, loop: FoldRun, stage: Stage) -> None: ...
    def on_epoch_start(self, loop: FoldRun, stage: Stage, epoch: int) -> None: ...
    def on_step_end(self, loop: FoldRun, step: Step) -> None: ...
    def on_epoch_end(self, loop: FoldRun, stage: Stage, row: dict, improved: bool, probs) -> None: ...
    def on_stage_end(self, loop: FoldRun, stage: Stage) -> None: ...
    def on_stop(self, loop: FoldRun, stop: Stop, step: Step | None) -> str | None:
        """The fold stops (`step`: where, within an epoch; None: at an epoch's end): a policy that saves
        says where the fold's files stand."""
    def on_fit_end(self, loop: FoldRun, stop: Stop | None) -> None: ...

    def close(self) -> None:
        """Always called, last, however the fit ended (an error included): release what is held."""

    def stop_request(self, loop: FoldRun, at_step: bool) -> Stop | None:
        """A reason to stop now: after an optimizer step (`at_step`), or at an epoch's end."""
        return None


class Callbacks:
    """The fold's callbacks, called in order."""

    def __init__(self, callbacks: Iterable[Callback]):
        self.items = list(callbacks)

    def fire(self, hook: str, *args) -> None:
        for c in self.items:
            getattr(c, hook)(*args)

    def stop_request(self, loop: FoldRun, at_step: bool) -> Stop | None:
        return next((s for c in self.items if (s := c.stop_request(loop, at_step)) is not None), None)

    def on_stop(self, loop: FoldRun, stop: Stop, step: Step | None) -> str:
        said = [w for c in self.items if (w := c.on_stop(loop, stop, step))]
        return "; ".join(said) or f"after epoch {loop.state.epoch}"

    def close(self) -> None:
        errors = []
        for c in self.items:
            try:
                c.close()
            except Exception as exc:  # every callback gets to release what it holds; the first error wins
                errors.append(exc)
        if errors:
            raise errors[0]


class SignalStop(Callback):
    """Ctrl-C or SIGTERM (core.interrupts.GracefulStop's `stop()`, the signal or None): the fold
    stops at the next optimizer step, or at the epoch's end under torchrun, where the ranks agree
    once an epoch (training.fold)."""

    def __init__(self, stop: Callable[[], int | None]):
        self.stop = stop

    def stop_request(self, loop: FoldRun, at_step: bool) -> Stop | None:
        signum = self.stop()
        return Stop(SIGNAL, signum) if signum else None


class TimeLimit(Callback):
    """train.time_limit: the fold stops at the end of the step that reaches `seconds` of this
    process's training of it (a resumed fold has the whole limit again), exit 0, keeping its best
    epoch so far. The clock starts when the fold's first stage begins."""

    clock = staticmethod(time.monotonic)  # seconds; the tests count steps with their own

    def __init__(self, seconds: float):
        self.seconds, self.started = seconds, None

    def on_fit_start(self, loop: FoldRun) -> None:
        self.started = self.clock()

    def stop_request(self, loop: FoldRun, at_step: bool) -> Stop | None:
        if self.started is None or self.clock() - self.started < self.seconds:
            return None
        return self.stop()

    def stop(self) -> Stop:
        return Stop(TIME_LIMIT, detail=f"train.time_limit ({format_duration(self.seconds)})")


class TrackingHook(Callback):
    """TensorBoard (and wandb): each epoch's scalars, and at the fit's end the best epoch's figures,
    drawn once from its oof.csv (which a resumed run also has) rather than at every improvement."""

    def __init__(self, tracker, log_best: Callable[[], None]):
        self.tracker, self.log_best = tracker, log_best

    def on_epoch_end(self, loop: FoldRun, stage: Stage, row: dict, improved: bool, probs) -> None:
        if loop.world.is_main:
            lrs = {k.removeprefix("lr_"): v for k, v in row.items() if k.startswith("lr_")}
            self.tracker.log_epoch(row["epoch"], row, loop.metric.name, lrs)

    def on_fit_end(self, loop: FoldRun, stop: Stop | None) -> None:
        if loop.world.is_main and loop.state.history:
            self.log_best()

    def close(self) -> None:
        self.tracker.close()
