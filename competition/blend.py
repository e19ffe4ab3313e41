"""`python -m competition.blend RUN RUN ...`: several runs combined on their out-of-fold predictions
into one submission, scored beside each run, with an estimate of the blend on rows its weights
never saw; recorded in outputs/blends/<name>/blend.json for the board."""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from competition.config import add_config_arguments, check_run_name, load_config
from competition.core.errors import CompetitionError, run_cli
from competition.experiments.blending import METHODS
from competition.io.runs import BLENDS

if TYPE_CHECKING:
    import numpy as np

    from competition.core.schema import Config
    from competition.data.folder import Competition
    from competition.experiments.inputs import BlendInputs
    from competition.inference.submission import Layout


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m competition.blend",
        description="Blend runs on their out-of-fold predictions (each run predicted first) and write the submission.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run names under output_dir (or run folders), two or more")
    parser.add_argument("--method", choices=METHODS, default="weights",
                        help="weights: non-negative weights summing to 1, fit on the out-of-fold rows (default); "
                        "mean: equal weights; rank: the mean of each class's ranks (AUC metrics)")
    parser.add_argument("--name", default=None, help="the blend's name (default: the runs' names joined by +)")
    parser.add_argument("--output", default=None, help="submission path (default submissions/<name>-<UTC time>-cv<score>.csv)")
    add_config_arguments(parser)
    return parser


def blend_name(requested: str | None, runs: Sequence[str]) -> str:
    """--name, else the runs' names joined by +; checked as a run's name is (outputs/blends/<name>)."""
    name = requested or "+".join(Path(r).name for r in runs)
    check_run_name(name, "--name", f"output_dir/{BLENDS}")
    return name


def _score(cfg: Config, comp: Competition, data: BlendInputs, probs: np.ndarray, layout: Layout) -> dict:
    """Per-fold and pooled score of out-of-fold probabilities rendered as the file would hold them."""
    import numpy as np

    from competition.inference.validation import OutOfFold, as_submitted

    oof = OutOfFold(np.arange(len(data.y)), data.fold, data.y, probs)
    return as_submitted(cfg, comp, oof, layout)


def _report(names: list[str], weights: np.ndarray, scores: dict, fitted: dict, estimate: dict, metric: str,
            method: str, out: Path, rows: int, lb: float | None) -> None:
    for name in names:
        print(f"run {name}: {metric} {scores[name]['cv']:.5f} out of fold, as submitted")
    mix = ", ".join(f"{n} {w:.3f}" for n, w in zip(names, weights, strict=True))
    print(f"blend ({method}: {mix}): {metric} {fitted['cv']:.5f} out of fold"
          + (", with weights fit on these same rows" if method == "weights" else ""))
    print(f"estimate: {metric} {estimate['cv']:.5f} ("
          + ("each fold's rows blended with weights fit on the other folds' rows)" if method == "weights"
             else "nothing is fit: the same rows)"))
    print(f"submission: {out} ({rows} rows)")
    if lb is not None:
        print(f"local leaderboard {metric}: {lb:.5f} (the file as written)")


def _record(name: str, method: str, runs, weights: np.ndarray, scores: dict, fitted: dict, estimate: dict,
            fold_weights: dict, layout: Layout, out: Path, lb: float | None) -> dict:
    from competition.core.metrics import METRICS
    from competition.io.runs import BLEND_FORMAT

    metric = METRICS[runs[0].metric]
    return {
        "format": BLEND_FORMAT, "name": name, "method": method, "runs": [r.name for r in runs],
        "weights": {r.name: float(w) for r, w in zip(runs, weights, strict=True)},
        "task": runs[0].record.config["task"], "metric": metric.name, "higher_is_better": metric.higher_is_better,
        "folds_hash": runs[0].record.folds_hash, "classes": list(runs[0].record.classes),
        "runs_cv": {n: {"cv": s["cv"], "folds": s["folds"]} for n, s in scores.items()},
        "blend_cv": {"cv": fitted["cv"], "folds": fitted["folds"]},
        "cross_fit": {"cv": estimate["cv"], "folds": estimate["folds"], "weights": fold_weights},
        "thresholds": fitted["thresholds"], "layout": layout.kind, "submission": str(out), "leaderboard": lb,
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    # The work's modules load once the arguments parse: `--help` loads no torch.
    from competition.core.metrics import METRICS
    from competition.experiments.blending import check_method, combine, cross_fit, fit_weights
    from competition.experiments.inputs import aligned, check_blendable, read_run
    from competition.inference.submission import (
        build_submission,
        check_destination,
        checked_solution,
        layout_of,
        leaderboard_score,
        submission_path,
    )
    from competition.io.disk import check_writable
    from competition.io.files import write_csv, write_json
    from competition.io.runs import BLEND_FILE
    from competition.tasks import open_competition

    cfg = load_config(args.config, args.overrides)
    if len(args.runs) < 2 or len(set(args.runs)) != len(args.runs):
        raise CompetitionError(f"blend {' '.join(args.runs)}: name two runs or more, each once")
    name = blend_name(args.name, args.runs)
    check_destination(args.output, cfg.submission_dir)
    check_writable(Path(cfg.output_dir) / BLENDS, "blends folder", "blend records blend.json there: copy the runs "
                   "into an output_dir you can write")
    _, comp = open_competition(cfg)
    runs = [read_run(cfg, r) for r in args.runs]
    check_blendable(cfg, comp, runs)
    metric = METRICS[runs[0].metric]
    check_method(args.method, metric)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, metric=metric.name))  # the runs' metric
    layout = layout_of(cfg, comp, metric.name)
    solution, _ = checked_solution(cfg, comp)
    data = aligned(cfg, comp, runs)

    weights = fit_weights(args.method, metric, data.y, data.oof)
    honest, fold_weights = cross_fit(args.method, metric, data.y, data.fold, data.oof)
    scores = {r.name: _score(cfg, comp, data, p, layout) for r, p in zip(runs, data.oof, strict=True)}
    fitted = _score(cfg, comp, data, combine(data.oof, weights, args.method), layout)
    estimate = _score(cfg, comp, data, honest, layout)
    sub = build_submission(comp, layout, combine(data.test, weights, args.method), fitted["thresholds"])

    out = Path(args.output) if args.output else submission_path(cfg.submission_dir, name, estimate["cv"])
    write_csv(out, sub)
    lb = leaderboard_score(out, layout, solution, comp.target, metric) if solution is not None else None
    write_json(Path(cfg.output_dir) / BLENDS / name / BLEND_FILE,
               _record(name, args.method, runs, weights, scores, fitted, estimate, fold_weights, layout, out, lb))
    _report([r.name for r in runs], weights, scores, fitted, estimate, metric.name, args.method, out, len(sub), lb)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
