"""`python -m competition.predict`: fold-ensemble + TTA → a submission checked against its sample,
scored as submitted on the out-of-fold rows and, where answers are known, read back and scored."""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from competition.config import add_config_arguments, add_run_argument, command_config
from competition.core.errors import run_cli

if TYPE_CHECKING:
    from competition.core.schema import Config
    from competition.data.folder import Competition
    from competition.inference.submission import Layout
    from competition.tasks import Task

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m competition.predict",
        description="Average every fold's best checkpoint (× TTA views) on test.csv and write a submission.",
    )
    add_config_arguments(parser)
    add_run_argument(parser)
    parser.add_argument("--folds", default="all", help="'all' (default) or fold numbers like 0,2")
    parser.add_argument("--output", default=None, help="submission path (default submissions/<name>-<UTC time>-cv<score>.csv)")
    parser.add_argument("--no-cv", action="store_true",
                        help="write the submission only: no CV as submitted (no pass over the train rows, no "
                        "folds.csv needed, no cv.json written); thresholds come from the last full predict's cv.json")
    parser.add_argument("--no-report", action="store_true",
                        help="write no report.html (its Grad-CAM panels cost more than the predictions on a small set)")
    return parser


def _report(report: dict, submitted: dict, tta: list[str], used: list[int], out: Path, rows: int,
            lb: float | None, solution_path: Path | None) -> None:
    name = report["metric"]
    for f, score in report["folds"].items():
        print(f"fold {f}: {name} {score:.5f} best epoch" + (f", {submitted['folds'][f]:.5f} as submitted"
                                                            if f in submitted["folds"] else ""))
    print(f"CV {name}: {report['cv']:.5f} best epochs" + (f"; {submitted['cv']:.5f} as submitted"
                                                          if submitted["cv"] is not None else "")
          + f" (folds {', '.join(map(str, used))}; {len(tta) + 1} TTA view(s))")
    if submitted["thresholds"] is not None:
        shown = ", ".join(f"{t:.3f}" for t in submitted["thresholds"][:8])
        print(f"thresholds fit on the out-of-fold rows: {shown}{' …' if len(submitted['thresholds']) > 8 else ''}")
    print(f"submission: {out} ({rows} rows)")
    if lb is not None:
        print(f"local leaderboard {name}: {lb:.5f} (the file as written, against {solution_path})")


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    # The work's modules load once the arguments parse: `--help` loads no torch.
    from competition.core.distributed import device_for, init_world
    from competition.core.runtime import keep_freed_memory
    from competition.data.splits import parse_folds
    from competition.inference.ensemble import load_fold_models, trained_folds
    from competition.inference.submission import check_destination, checked_solution, layout_of
    from competition.io.disk import check_writable
    from competition.tasks import open_competition

    keep_freed_memory()  # before the big allocations: see core/runtime.py
    cfg = command_config(args)
    folds = parse_folds(args.folds, cfg.folds.n_splits)
    check_destination(args.output, cfg.submission_dir)
    check_writable(cfg.run_dir, "run folder", "predict writes cv.json, oof.csv and test_probs.csv there: "
                   "copy the run into an output_dir you can write")
    task, comp = open_competition(cfg)
    layout: Layout = layout_of(cfg, comp)
    checkpoints = trained_folds(cfg, folds, explicit=args.folds != "all")
    device = device_for(init_world())
    loaded = load_fold_models(cfg, task, comp, checkpoints, device)
    log.info("predicting with folds %s on %s", ", ".join(str(f) for f, _ in checkpoints), device)
    solution, solution_path = checked_solution(cfg, comp)
    task.prepare(cfg, comp, train=not args.no_cv)
    return _predict(cfg, task, comp, layout, loaded, device, (solution, solution_path), args.no_cv, args.output,
                    not args.no_report)


def _predict(cfg: Config, task: Task, comp: Competition, layout: Layout, loaded: list, device, answers: tuple,
             no_cv: bool, output: str | None, page: bool = True) -> int:
    """The CV, the submission, the files a blend reads and the report, from the loaded folds;
    `answers`: the test answers and their file (or Nones)."""
    from competition.core.metrics import METRICS
    from competition.inference.best_epochs import cv_report
    from competition.inference.ensemble import predict_rows
    from competition.inference.predictions import keep_predictions
    from competition.inference.report import write_report
    from competition.inference.submission import build_submission, leaderboard_score, submission_path
    from competition.inference.validation import as_submitted, predict_out_of_fold
    from competition.io.files import write_csv, write_json
    from competition.io.runs import CV_FILE, stored_thresholds

    solution, solution_path = answers
    used = [f for f, _, _ in loaded]
    report, tta = cv_report(cfg, comp, used), task.tta(cfg)
    oof = None if no_cv else predict_out_of_fold(cfg, task, comp, loaded, device, tta)
    submitted = stored_thresholds(cfg) if no_cv else as_submitted(cfg, comp, oof, layout)
    probs = predict_rows(cfg, task, comp, loaded, device, tta)
    sub = build_submission(comp, layout, probs, submitted["thresholds"])

    out = Path(output) if output else submission_path(cfg.submission_dir, cfg.name,
                                                      submitted["cv"] if not no_cv else report["cv"])
    write_csv(out, sub)  # first: a submission that cannot be written leaves the run's files as they were
    keep_predictions(cfg, comp, loaded, probs, oof)  # test_probs.csv, oof.csv: what a blend combines
    cv = {**report, "as_submitted": submitted, "layout": layout.kind, "submission": str(out), "tta": list(tta)}
    if not no_cv:
        write_json(cfg.run_dir / CV_FILE, cv)
    lb = None
    if solution is not None:
        lb = leaderboard_score(out, layout, solution, comp.target, METRICS[cfg.train.metric])
    _report(report, submitted, tta, used, out, len(sub), lb, solution_path)
    if not no_cv and page:  # the notebook's --no-cv run keeps its time for the test set
        print(f"report: {write_report(cfg, task, comp, loaded, device, cv, lb)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
