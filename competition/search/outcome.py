"""The end of an auto run: of the finished trials (every fold trained, then predicted), the best alone,
a blend of the best or a blend of the portfolio's trials through `blend` — whichever scores higher on
rows it was not chosen on — as the checked submission, and the honest numbers beside the flattering
ones — that estimate, and how far the best trial's CV drops when the trial is chosen without the rows
that score it — in summary.json, report.html and on the board."""
from __future__ import annotations

import shutil
import signal
from collections import Counter
from pathlib import Path

import numpy as np

from competition.core.durations import format_duration
from competition.core.errors import CompetitionError
from competition.core.interrupts import Interrupted
from competition.io.checkpoints import BEST
from competition.io.files import atomic_path, write_json
from competition.io.runs import BLEND_FILE, BLENDS, CV_FILE
from competition.search.search_page import numbers, outcome, write_page
from competition.search.study import LEFT_ATTR, Search
from competition.search.trials import run_command

MAX_BLENDED = 20  # the best finished trials offered to the blend's greedy selection
SUMMARY_FILE, PAGE_FILE = "summary.json", "report.html"


def finished(search: Search) -> list:
    """The study's complete trials whose runs hold every fold's best.pt and predict's files, best first
    (a trial another process finished counts too)."""
    from optuna.trial import TrialState

    out = Path(search.cfg.output_dir)
    n = search.cfg.folds.n_splits

    def whole(t) -> bool:
        run = out / t.user_attrs.get("run", "")
        return "run" in t.user_attrs and all((run / f"fold{k}" / BEST).is_file() for k in range(n)) and all(
            (run / f).is_file() for f in (CV_FILE, "oof.csv", "test_probs.csv"))

    done = [t for t in search.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if whole(t)]
    return sorted(done, key=lambda t: -t.value if search.metric.higher_is_better else t.value)


def _blend(search: Search, runs: list[str], output: str | None) -> dict | None:
    """`blend` of the runs (its greedy weights, cross-fitted estimate and checked submission): its
    record, or None when it failed (its line is in logs/blend.log)."""
    name = f"{search.cfg.name}-auto"
    argv = [*(["--config", search.config] if search.config else []), *(a for s in search.sets for a in ("--set", s)),
            *runs, "--name", name, *(["--output", output] if output else [])]
    with open(search.folder / "logs" / "blend.log", "a", encoding="utf-8") as log:
        code, error = run_command("blend", argv, log)
    search.stop.install()
    if code in (130, 143):  # a person's Ctrl-C: the trials are in the study, the blend is quick to redo
        search.study.set_user_attr(LEFT_ATTR, max(search.budget.left(), 0.0))
        raise Interrupted(signal.SIGTERM if code == 143 else signal.SIGINT, "stopped during the final blend; the "
                          "study keeps every trial: python -m competition.auto --resume with a --time-budget blends "
                          "them (and searches on)")
    if code != 0:
        print(f"blend failed ({error}): the best trial's submission stands alone", flush=True)
        return None
    import json

    return json.loads((Path(search.cfg.output_dir) / BLENDS / name / BLEND_FILE).read_text())


def _alone(search: Search, trial, output: str | None) -> Path:
    """The best trial's own submission (predict checked it) as auto's."""
    from competition.inference.submission import submission_path

    source = search.folder / "submissions" / f"{trial.user_attrs['run']}.csv"
    out = Path(output) if output else submission_path(search.cfg.submission_dir, f"{search.cfg.name}-auto", trial.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        shutil.copyfile(source, tmp)
    return out


def _kept_oof(search: Search, runs: list[str]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The truth, the folds and each run's out-of-fold probabilities as predict kept them (oof.csv),
    rows by id."""
    from competition.data.folder import read_csv
    from competition.experiments.standings import stored_target
    from competition.io.prob_columns import read_oof_probs
    from competition.io.runs import RunRecord

    out, idc = Path(search.cfg.output_dir), search.cfg.data.id_column
    record = RunRecord.read(out / runs[0])
    target = stored_target(record.config, record.classes)
    frames = [read_csv(out / r / "oof.csv", "out-of-fold file", [idc, *target.label_columns]).set_index(idc)
              for r in runs]
    first = frames[0]
    y = target.encode(first.reset_index(), out / runs[0] / "oof.csv")
    return y, first["fold"].to_numpy(), [read_oof_probs(f.loc[first.index], record.classes) for f in frames]


def _portfolio(search: Search, trials: list) -> list[int]:
    """The finished trials that ran a recipe's portfolio settings (chosen before any score)."""
    from competition.search.recipes import portfolio_params

    fixed = {name: portfolio_params(recipe) for name, recipe in search.recipes.items()}
    return [i for i, t in enumerate(trials) if t.params.get("recipe") in fixed
            and all(t.params.get(k) == v for k, v in fixed[t.params["recipe"]].items())]


def reserve_choice(search: Search) -> None:
    """Set the final choice's scoring time aside from the budget, for the trials finished so far: one
    scoring timed once on a finished trial's kept predictions, times the thousands the choice makes."""
    from competition.experiments.blending import scorings, seconds_per_scoring

    done = finished(search)
    if not done:
        return
    if search.scoring_seconds is None:
        y, _, oof = _kept_oof(search, [done[0].user_attrs["run"]])
        search.scoring_seconds = seconds_per_scoring(search.metric, y, oof[0])
    search.budget.choosing(search.scoring_seconds * scorings(len(done), search.cfg.folds.n_splits, MAX_BLENDED,
                                                             len(_portfolio(search, done))))


def finish(search: Search, url: str, output: str | None) -> dict:
    """Choose between the best trial alone, a blend of the best and a blend of the portfolio's trials
    (whichever scores higher on rows it was not chosen on), write that submission, summary.json and
    report.html; returns the summary."""
    from competition.experiments.blending import choose

    trials = finished(search)
    if not trials:
        raise CompetitionError(f"no trial finished every fold within the budget ({format_duration(search.budget.total)}; "
                               f"see {search.folder / 'logs'}): give a larger --time-budget, or fewer folds")
    runs = [t.user_attrs["run"] for t in trials]
    y, fold, oof = _kept_oof(search, runs)
    portfolio = _portfolio(search, trials)
    choice = choose(search.metric, y, fold, oof, MAX_BLENDED, portfolio)
    best = trials[choice.order[0]]
    blended = {"blend": [runs[i] for i in choice.order[:MAX_BLENDED]], "portfolio": [runs[i] for i in portfolio]}
    record = _blend(search, blended[choice.way], output) if choice.way in blended else None
    submission = Path(record["submission"]) if record else _alone(search, best, output)
    same, other = choice.best_cv, choice.scores["best"]
    summary = {
        "study": search.cfg.name, "storage": url, "metric": search.metric.name,
        "higher_is_better": search.metric.higher_is_better, "budget_seconds": search.budget.total,
        "trials": counts(search), "best": {"trial": best.number, "run": best.user_attrs["run"],
                                            "recipe": best.params["recipe"], "cv": best.value},
        "choice": {"scores": choice.scores, "chosen": choice.way, "submitted": choice.way if record else "best"},
        "blend": None if record is None else {"name": record["name"], "cv": record["blend_cv"]["cv"],
                                              "cross_fit": record["cross_fit"]["cv"], "weights": record["weights"]},
        "selection": {"trials": len(runs), "same_rows": same, "other_rows": other,
                      "drop": same - other if search.metric.higher_is_better else other - same},
        "submission": str(submission),
    }
    summary["estimate"] = choice.scores[summary["choice"]["submitted"]]
    summary["seconds"] = round(search.budget.elapsed(), 2)  # what the page says; summary.json has the end
    search.study.set_user_attr(LEFT_ATTR, 0.0)  # spent: a later --resume needs a --time-budget
    write_page(search.folder / PAGE_FILE, summary, search.study, Path(search.cfg.output_dir))
    return summary


def counts(search: Search) -> dict:
    """The study's trials by outcome; a repeat of a finished trial's settings (not trained) as "repeated"."""
    return dict(Counter(outcome(t) for t in search.study.get_trials(deepcopy=False)))


def report(summary: dict, search: Search) -> None:
    """The closing lines: the submission, the numbers to trust and those to discount, the board."""
    from competition.data.splits import split_digest
    from competition.experiments.standings import board_rows, mark_other_folds, render_board

    for line in numbers(summary):
        print(line)
    print(f"submission: {summary['submission']}")
    print(f"report: {search.folder / PAGE_FILE}")
    b = summary["blend"]
    names = {f"{BLENDS}/{b['name']}"} if b else set()
    names |= {t.user_attrs["run"] for t in search.study.get_trials(deepcopy=False) if "run" in t.user_attrs}
    rows = [r for r in board_rows(Path(search.cfg.output_dir)) if r.name in names]
    mark_other_folds(rows, split_digest(search.cfg))
    print(render_board(rows, "table", "the competition's folds.csv"))
    summary["seconds"] = round(search.budget.elapsed(), 2)
    write_json(search.folder / SUMMARY_FILE, summary)
    print(f"done in {format_duration(summary['seconds'])} of {format_duration(summary['budget_seconds'])}")
