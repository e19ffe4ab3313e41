"""Ctrl-C and SIGTERM: training stops at the next safe point and says how to continue; a second
signal stops at once. Any other command stops with one line and nothing half-written."""
from __future__ import annotations

import os
import signal
import sys
import threading

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal, as shells report them


def _read_test_fault() -> tuple[int, signal.Signals] | None:
    step = os.environ.get("COMPETITION_TEST_KILL_AFTER_STEP")
    if not step:
        return None
    return int(step), signal.Signals[os.environ.get("COMPETITION_TEST_KILL_SIGNAL", "SIGKILL")]


# For the tests only: COMPETITION_TEST_KILL_AFTER_STEP=N makes a training process send itself
# COMPETITION_TEST_KILL_SIGNAL (SIGKILL unless it names SIGINT or SIGTERM) right after its fold's
# N-th optimizer step, so that the kill-and-resume and interrupt tests stop a run where they mean
# to instead of racing a timer. Read once, at import; unset, each step pays one comparison.
TEST_FAULT = _read_test_fault()


def fault_after_step(step: int) -> None:
    """For the tests only (TEST_FAULT): signal this process after the fold's optimizer step `step`."""
    if TEST_FAULT is not None and step == TEST_FAULT[0]:
        os.kill(os.getpid(), TEST_FAULT[1])


class Interrupted(BaseException):
    """A command stopped by SIGINT or SIGTERM. A BaseException, like KeyboardInterrupt: no
    `except Exception` may swallow it. `message` is the one line the CLI prints."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message)
        self.signum, self.message = signum, message

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 128 + int(self.signum))


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class GracefulStop:
    """While installed (training), the first SIGINT or SIGTERM only sets `requested`: the loop
    asks after each optimizer step and stops there. A second one ends the process at once, with
    one line and no traceback; every file is written atomically, so the last whole one stays.

    A subclass says what the first signal prints (NOTICE), what the second says continues the
    work (AGAIN), which signals it ignores, and whether the handler stays while stopping."""

    NOTICE: str | None = None  # printed at the first signal, after its name
    AGAIN = "the last checkpoint written is whole, and --resume continues from it"
    # Stopping: a second signal during the shutdown still ends it at once, tracebackless.
    KEEP_WHILE_STOPPING = True

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def __call__(self) -> int | None:
        """The signal that asked to stop, or None."""
        return self.requested

    def ignores(self, signum: int) -> bool:
        return False

    def _handle(self, signum: int, frame) -> None:
        if self.ignores(signum):
            return
        if self.requested is None:
            self.requested = signum
            if self.NOTICE:
                print(f"{signal_name(signum)}: {self.NOTICE}", file=sys.stderr, flush=True)
            return
        print(f"interrupted again ({signal_name(signum)}): stopped at once; {self.AGAIN}", file=sys.stderr, flush=True)
        os._exit(EXIT_CODES.get(signum, 128 + signum))

    def install(self) -> None:
        """(Re)install this handler (on the main thread only, where signals arrive); the first
        handlers it replaced are put back on exit."""
        if threading.current_thread() is threading.main_thread():
            for signum in EXIT_CODES:
                previous = signal.signal(signum, self._handle)
                self._previous.setdefault(signum, previous)

    def __enter__(self) -> GracefulStop:
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        if self.requested is not None and self.KEEP_WHILE_STOPPING:
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def raise_on_sigterm():
    """SIGTERM raises Interrupted in the main thread, as SIGINT raises KeyboardInterrupt, so both
    unwind through the atomic writes (their temporary files removed) to the CLI's one line.
    Returns the handler it replaced (None off the main thread), for the caller to put back."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise Interrupted(signum)

    return signal.signal(signal.SIGTERM, handler)
