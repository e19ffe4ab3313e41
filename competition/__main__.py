"""`competition COMMAND [ARGS]` (the console script) and `python -m competition COMMAND [ARGS]`: the
same commands as `python -m competition.COMMAND`, under one name. Only the command asked for is
imported, so `competition --help` loads no torch."""
from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# Each command's module, and what it does (as its own --help says it).
COMMANDS = {
    "train": "train one fold or every fold: best/last checkpoints, out-of-fold predictions, TensorBoard",
    "predict": "average every fold's best checkpoint (× TTA views) on test.csv; write the checked submission",
    "folds": "write the fixed k-fold split, folds.csv",
    "board": "every run and blend: CV per fold and pooled, training time, last submission",
    "blend": "blend runs on their out-of-fold predictions and write the submission",
    "auto": "search recipes and their knobs within a time budget, blend the best, write the submission",
    "explain": "Grad-CAM maps of each fold's most confident validation mistakes",
    "package": "the trained folds, the kit and a predict.py in one folder, for an offline Kaggle notebook",
    "import_folders": "turn class-per-folder images into a Kaggle-layout competition",
}
USAGE = "usage: competition COMMAND [ARGS]  (competition COMMAND --help for a command's options)"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        width = max(map(len, COMMANDS))
        print("\n".join([USAGE, "", "commands:", *(f"  {k:<{width}}  {v}" for k, v in COMMANDS.items())]))
        return 0 if args else 2
    name = args[0].replace("-", "_")
    if name not in COMMANDS:
        print(f"{USAGE}\nerror: unknown command {args[0]!r}; the commands are {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return importlib.import_module(f"competition.{name}").main(args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
