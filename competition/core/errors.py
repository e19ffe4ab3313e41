"""The kit's one user-facing error type and the CLI wrapper that turns it into `error: …`, exit 2."""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence

EXIT_USAGE = 2


class CompetitionError(Exception):
    """Bad input a user can fix: printed as one `error: …` line, exit code 2, no traceback."""


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None) -> int:
    """Run a CLI body, turning a CompetitionError into one line on stderr and exit code 2."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return main(argv)
    except CompetitionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
