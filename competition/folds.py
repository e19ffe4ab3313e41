"""`python -m competition.folds [--force]`: write data.root/folds.csv (a read-only data folder's under
output_dir/folds/) and report the rows per fold."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from competition.config import add_config_arguments, load_config
from competition.core.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m competition.folds", description="Write data.root/folds.csv (for a read-only data folder, "
                                     "output_dir/folds/<its name>/folds.csv).")
    add_config_arguments(parser)
    parser.add_argument("--force", action="store_true", help="overwrite an existing folds.csv")
    return parser


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    # The work's modules load once the arguments parse: `--help` loads no torch.
    from competition.data.splits import folds_path, load_or_create_folds
    from competition.tasks import open_competition

    cfg = load_config(args.config, args.overrides)
    _, comp = open_competition(cfg)
    df = load_or_create_folds(cfg, comp.train, comp.target, force=args.force)
    counts = df.groupby("fold").size().to_dict()
    print(f"{folds_path(cfg)}: " + ", ".join(f"fold {k}: {v} rows" for k, v in counts.items()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
