"""`python -m competition.predict`: fold-ensemble + TTA → a submission checked against its sample."""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from competition.config import add_config_arguments, load_config
from competition.core.distributed import device_for, init_world
from competition.core.errors import run_cli
from competition.core.metrics import METRICS
from competition.core.runtime import keep_freed_memory
from competition.data.competition import read_solution
from competition.data.folds import parse_folds
from competition.inference.ensemble import cv_report, load_fold_models, predict_test, trained_folds
from competition.inference.submission import leaderboard_score, make_submission, submission_path, validate_submission
from competition.io.files import write_csv, write_json
from competition.tasks import open_competition

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m competition.predict",
        description="Average every fold's best checkpoint (× TTA views) on test.csv and write a submission.",
    )
    add_config_arguments(parser)
    parser.add_argument("--folds", default="all", help="'all' (default) or fold numbers like 0,2")
    parser.add_argument("--output", default=None, help="submission path (default submissions/<name>-<UTC time>-cv<score>.csv)")
    return parser


def _main(argv: Sequence[str] | None) -> int:
    keep_freed_memory()  # before the big allocations: see core/runtime.py
    args = build_parser().parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    folds = parse_folds(args.folds, cfg.folds.n_splits)
    task, comp = open_competition(cfg)
    checkpoints = trained_folds(cfg, folds, explicit=args.folds != "all")
    device = device_for(init_world())
    loaded = load_fold_models(cfg, task, comp, checkpoints, device)
    task.prepare(cfg, comp)
    used = [f for f, _ in checkpoints]

    report = cv_report(cfg, comp, used)
    tta = task.tta(cfg)
    probs = predict_test(cfg, task, comp, loaded, device, tta)
    d = cfg.data
    sub = make_submission(comp.sample, comp.test[d.id_column].tolist(), probs, comp.classes, d.id_column, d.target_column)
    validate_submission(sub, comp.sample, d.id_column, comp.sample_path.name)

    # The local leaderboard file is checked too before anything is written.
    solution = read_solution(cfg, comp.root)
    lb = None
    if solution is not None:
        row_of = {str(i): r for r, i in enumerate(comp.test[d.id_column].tolist())}
        ordered = probs[np.array([row_of[str(i)] for i in sub[d.id_column]])]
        lb = leaderboard_score(sub, ordered, solution, d.id_column, d.target_column, comp.classes, METRICS[cfg.train.metric])

    out = Path(args.output) if args.output else submission_path(cfg.submission_dir, cfg.name, report["cv"])
    write_json(cfg.run_dir / "cv.json", {**report, "submission": str(out), "tta": list(tta)})
    write_csv(out, sub)

    for f, score in report["folds"].items():
        print(f"fold {f}: {report['metric']} {score:.5f}")
    print(f"CV {report['metric']}: {report['cv']:.5f} (folds {', '.join(map(str, used))}; {len(tta) + 1} TTA view(s))")
    print(f"submission: {out} ({len(sub)} rows)")
    if lb is not None:
        print(f"local leaderboard {report['metric']}: {lb:.5f} ({Path(d.root) / d.solution})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
