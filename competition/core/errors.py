"""The kit's one user-facing error type and the CLI wrapper that turns it into `error: …`, exit 2."""
from __future__ import annotations

import errno
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from competition.core.interrupts import Interrupted, raise_on_sigterm, signal_name

EXIT_USAGE = 2

# A full disk, and a full quota, both mean: nothing more fits until something is deleted.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class CompetitionError(Exception):
    """Bad input a user can fix: printed as one `error: …` line, exit code 2, no traceback."""


def _is_no_space(exc: BaseException | None) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None) -> int:
    """Run a CLI body, turning a CompetitionError into one line on stderr and exit code 2.

    A full disk is such an error too. The kit's writes already say which file and how much
    space (io.disk.DiskFull); an OSError for space from elsewhere still gets one line. A
    helper thread that hits a full disk (TensorBoard's event writer) hands the error to the
    thread that logs next, so its own traceback is not printed as well.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    previous_hook = threading.excepthook

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if not _is_no_space(args.exc_value):
            previous_hook(args)

    threading.excepthook = thread_hook
    previous_sigterm = raise_on_sigterm()
    try:
        return main(argv)
    except (Interrupted, KeyboardInterrupt) as exc:
        stop = exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)
        print(f"interrupted ({signal_name(stop.signum)}): "
              f"{stop.message or 'stopped; every file is written whole or not at all, so nothing is half-written'}",
              file=sys.stderr)
        return stop.exit_code
    except CompetitionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        if not _is_no_space(exc):
            raise
        print(f"error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        threading.excepthook = previous_hook
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)
