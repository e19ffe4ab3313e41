"""`python -m competition.board`: every run and blend under output_dir, one row each, best first per
metric; rows trained on other folds than the config's folds.csv are marked."""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from competition.config import add_config_arguments, load_config
from competition.core.errors import run_cli
from competition.experiments.standings import FORMATS, board_rows, mark_other_folds, render_board


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m competition.board",
        description="List every run and blend under output_dir: CV per fold and pooled, training time, last submission.",
    )
    parser.add_argument("--format", choices=FORMATS, default="table", help="table (default), markdown or csv")
    add_config_arguments(parser)
    return parser


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    rows = board_rows(Path(cfg.output_dir))
    if not rows:
        print(f"no runs under {cfg.output_dir} yet: python -m competition.train starts one")
        return 0
    from competition.data.splits import folds_path, split_digest  # pandas: read folds.csv only with rows to mark

    # The competition at hand: its folds.csv is the split the others are compared with.
    reference = split_digest(cfg)
    mark_other_folds(rows, reference)
    print(render_board(rows, args.format, str(folds_path(cfg)) if reference else "the best run of their metric"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
