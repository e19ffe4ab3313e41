"""The time budget of one auto invocation, and the two ways its work stops: a person's Ctrl-C (or
SIGTERM), after which the study stops at the next safe point, and the watchdog that stops a trial at
its allotment, so that no trial runs into the time the others and the final blend need."""
from __future__ import annotations

import os
import signal
import threading
import time

from competition.core.interrupts import GracefulStop

# The final blend, the honest estimate, the report and the board, with room for a busy machine: they
# read the trials' kept predictions and fit nothing but blend weights (whose scoring, measured, is
# reserved on top: Budget.choosing).
FINAL_SECONDS = 2.0
FINAL_SHARE = 0.03
TRIAL_SHARE = 0.25  # a trial's share of the budget after the first (search.loop.allotment): the search needs several
STOP_GRACE = 0.02  # the share of the budget a stopped trial may take to reach its next step


class Budget:
    """Seconds left of `seconds`, counted from now; the last `reserve` of them are the final step's."""

    def __init__(self, seconds: float, start: float | None = None):
        self.total, self.start = float(seconds), time.monotonic() if start is None else start
        self.predict: float | None = None  # the quickest predict of a trial so far
        self.choice = 0.0  # what the final choice's scoring of the finished trials will take

    @property
    def reserve(self) -> float:
        """The final step's seconds: a floor and a share of the budget, and as long as the quickest trial's
        predict took, up to another share (the blend, too, opens the competition and writes a checked
        submission, but runs no model), and the time the final choice spends scoring the finished trials."""
        return FINAL_SECONDS + FINAL_SHARE * self.total + min(self.predict or 0.0, FINAL_SHARE * self.total) + self.choice

    def predicted(self, seconds: float) -> None:
        self.predict = seconds if self.predict is None else min(self.predict, seconds)

    def choosing(self, seconds: float) -> None:
        self.choice = seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.total - self.elapsed()

    def for_trials(self) -> float:
        """Seconds left before the final step must start."""
        return self.left() - self.reserve



class SelfStop:
    """Auto stopping the running command itself, as Ctrl-C would (SIGINT to this process): the fold
    loop stops at its next optimizer step (a GBDT's train after the fold it fits), predict stops with
    nothing written. `reason` tells that stop from a person's; only the first reason signals, since a
    second SIGINT would end the process at once."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._lock = threading.Lock()

    def send(self, reason: str) -> None:
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
        os.kill(os.getpid(), signal.SIGINT)


class Watchdog:
    """Stops the trial (SelfStop) at `seconds` from its start: its allotment of the budget."""

    def __init__(self, seconds: float, stopper: SelfStop):
        self._timer = threading.Timer(max(seconds, 0.0), stopper.send, args=("allotment",))
        self._timer.daemon = True

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()


class AutoStop(GracefulStop):
    """While the study runs, outside the commands: the first SIGINT or SIGTERM only sets `requested`,
    and the loop stops before the next trial; a second ends the process at once (every file is written
    whole, and `--resume` continues the trial it left). Commands install their own handling and put
    this one back (`install`). Auto's own late signal (SelfStop), after its command returned, is no request."""

    NOTICE = "auto stops after the current step; again to stop at once"
    AGAIN = "python -m competition.auto --resume continues the study"
    KEEP_WHILE_STOPPING = False

    def __init__(self) -> None:
        super().__init__()
        self.own: SelfStop | None = None  # the current trial's

    def ignores(self, signum: int) -> bool:
        return self.own is not None and self.own.reason is not None and signum == signal.SIGINT
