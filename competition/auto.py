"""`python -m competition.auto --time-budget 30m`: from the config's data, task, target and metric, a
portfolio of recipes known to work, then an Optuna search of their main knobs, every trial a normal run
on the competition's folds; then a blend of the best finished trials into the checked submission, with
report.html and the board. Training, predicting and blending all end within the budget."""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from competition.config import add_config_arguments, load_config
from competition.core.errors import CompetitionError, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m competition.auto",
        description="Search recipes and their knobs within a time budget (every trial a run on the competition's "
                    "folds), blend the best and write the checked submission, report.html and the board.",
    )
    parser.add_argument("--time-budget", default=None, metavar="DURATION",
                        help="the wall-clock time for training, predicting and blending: seconds (900) or a number "
                        "with s, m or h (15m, 2h); with --resume, default the time the stopped run had left")
    add_config_arguments(parser)
    parser.add_argument("--output", default=None,
                        help="submission path (default submissions/<name>-auto-<UTC time>-cv<score>.csv)")
    parser.add_argument("--storage", default=None, metavar="URL",
                        help="the study's database (default sqlite:///output_dir/auto/<name>/study.db); auto "
                        "processes given the same URL and config share one study, each trial run by one of them")
    parser.add_argument("--trials", type=int, default=None, metavar="N",
                        help="stop after N trials of this process, if the budget has not ended it before")
    parser.add_argument("--resume", action="store_true",
                        help="continue the study: first the trials a stop left unfinished, within the budget left")
    return parser


def _budget(args, study) -> float:
    """--time-budget, or with --resume the time the stopped run had left."""
    from competition.core.durations import parse_duration
    from competition.search.study import LEFT_ATTR

    if args.time_budget is not None:
        return parse_duration(args.time_budget, "--time-budget")
    left = study.user_attrs.get(LEFT_ATTR) if args.resume else None
    if not left or left <= 0:
        raise CompetitionError("--time-budget: give the time auto may take (900, 15m, 2h)"
                               + ("; the study records no budget left to resume with" if args.resume else ""))
    return float(left)


def _main(argv: Sequence[str] | None) -> int:
    began = time.monotonic()  # the budget counts from here: the config check and the study's start are in it
    args = build_parser().parse_args(argv)
    if args.time_budget is None and not args.resume:
        raise CompetitionError("--time-budget: give the time auto may take (900, 15m, 2h)")
    # The work's modules load once the arguments parse: `--help` loads no torch and no Optuna.
    from competition.core.durations import format_duration, parse_duration
    from competition.core.schema import config_to_dict
    from competition.inference.submission import check_destination
    from competition.io.runs import config_digest
    from competition.search.budget import AutoStop, Budget
    from competition.search.loop import run_search, warm_up
    from competition.search.outcome import finish, report
    from competition.search.study import Search, applicable, open_study, storage_url

    if args.time_budget is not None:
        parse_duration(args.time_budget, "--time-budget")  # a bad budget before anything is written
    if args.trials is not None and args.trials < 1:
        raise CompetitionError(f"--trials: at least 1, got {args.trials}")
    cfg = load_config(args.config, args.overrides)
    check_destination(args.output, cfg.submission_dir)
    recipes = applicable(cfg, args.config, args.overrides)
    url = storage_url(cfg, args.storage)

    with AutoStop() as stop:
        search = Search(cfg, args.config, list(args.overrides), recipes, Budget(0.0, began), stop, max_trials=args.trials)
        search.study = open_study(search, url, config_digest(config_to_dict(cfg)), args.resume)
        search.budget = Budget(_budget(args, search.study), began)
        warm_up()  # torch and the rest, before the first trial's clock starts (and before saying it is ready)
        done = sum(t.state.name != "WAITING" for t in search.study.get_trials(deepcopy=False))
        print(f"auto: study {cfg.name} in {url}; {search.metric.name}, "
              f"{'higher' if search.metric.higher_is_better else 'lower'} is better; {cfg.folds.n_splits} folds; "
              f"recipes {', '.join(recipes)}; budget {format_duration(search.budget.total)}"
              + (f"; {done} trials in the study so far" if done else ""), flush=True)
        run_search(search, sys.argv[1:] if argv is None else list(argv))
        report(finish(search, url, args.output), search)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    code = main()
    # The interpreter's teardown of torch, timm, scikit-learn and the GBDT libraries takes seconds on a
    # busy machine, all of them past the budget; every file is written, closed and renamed by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
