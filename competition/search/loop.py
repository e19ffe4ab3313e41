"""The search loop: ask the study for a trial (a portfolio trial while any waits, then TPE's), run it
within its allotment of the budget, tell the study, and print one line a person can follow — the
recipe, its knobs, its CV and time, the best so far, the budget left."""
from __future__ import annotations

import os
import shlex
import signal
import socket
from collections.abc import Sequence

from competition.core.durations import format_duration
from competition.core.interrupts import Interrupted
from competition.search.budget import TRIAL_SHARE
from competition.search.outcome import reserve_choice
from competition.search.recipes import describe
from competition.search.study import LEFT_ATTR, Search, plan_trial, same_as
from competition.search.trials import COMPLETE, INTERRUPTED, PRUNED, Outcome, Plan, run_trial

MIN_TRIAL_SECONDS = 1.0  # less than this left for trials, and none starts


def allotment(search: Search) -> float | None:
    """The seconds the next trial may take, or None when none should start. The first may take all the
    time there is for trials, so that the budget ends with a trial finished; the others a share of the
    budget, or half again as long as the quickest finished trial took, whichever is more; none starts
    with less left than half of that."""
    b, quickest = search.budget, min(search.seconds, default=0.0)
    left = b.for_trials()
    if left < max(MIN_TRIAL_SECONDS, 0.5 * quickest):
        return None
    return min(left, max(TRIAL_SHARE * b.total, 1.5 * quickest)) if search.seconds else left


def _pruner_of(trial):
    """The pruning question of one trial: report fold 0's new epochs, then ask Optuna's pruner."""
    reported: set[int] = set()

    def prune(steps: dict[int, float]) -> bool:
        for step, value in sorted(steps.items()):
            if step not in reported:
                trial.report(value, step)
                reported.add(step)
        return trial.should_prune()

    return prune


def _best(search: Search) -> str:
    from optuna.trial import TrialState

    done = search.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return "no trial finished yet"
    best = (max if search.metric.higher_is_better else min)(done, key=lambda t: t.value)
    return f"best {best.value:.5f} (trial {best.number}, {best.params['recipe']})"


def _line(search: Search, plan: Plan, outcome: Outcome) -> str:
    what = f"trial {plan.number} {plan.recipe.name} ({describe(plan.values)})" + (" continued" if plan.resume else "")
    took = format_duration(outcome.seconds)
    if outcome.state == COMPLETE:
        result = f"{search.metric.name} {outcome.value:.5f} in {took}"
    elif outcome.state == INTERRUPTED:
        result = f"stopped ({signal.Signals(outcome.signum).name}) in {took}, its run kept: --resume continues it"
    elif outcome.state == PRUNED:
        epoch = max(outcome.steps) if outcome.steps else 0
        result = f"pruned after epoch {epoch} of fold 0 ({search.metric.name} {outcome.value:.5f}) in {took}"
    else:
        result = f"{outcome.state} in {took}: {outcome.error}"
    return f"{what}: {result}; {_best(search)}; {format_duration(max(search.budget.left(), 0))} left"


def _tell(search: Search, trial, plan: Plan, outcome: Outcome) -> None:
    from optuna.trial import TrialState

    trial.set_user_attr("seconds", round(outcome.seconds, 2))
    trial.set_user_attr("outcome", outcome.state)
    if outcome.state == COMPLETE:
        search.seconds.append(outcome.seconds)
        search.budget.predicted(outcome.timings["predict"])
        search.study.tell(trial, outcome.value)
        reserve_choice(search)
        return
    if outcome.state == PRUNED:
        search.study.tell(trial, state=TrialState.PRUNED)
        return
    trial.set_user_attr("error", outcome.error or outcome.state)
    search.study.tell(trial, state=TrialState.FAIL)
    if outcome.state == INTERRUPTED:  # any process of the study continues its run next
        search.study.enqueue_trial(trial.params, user_attrs={"run": plan.run, "sets": plan.sets,
                                                             "continues": trial.number, "why": "stopped by a signal"})


def resume_command(argv: Sequence[str]) -> str:
    """The command line that continues the study: the same arguments, --resume, the budget left."""
    args, kept = list(argv), []
    while args:
        a = args.pop(0)
        if a == "--time-budget":
            args = args[1:]  # and its value
        elif not a.startswith("--time-budget="):
            kept.append(a)
    return shlex.join(["python", "-m", "competition.auto", *kept, *([] if "--resume" in kept else ["--resume"])])


def _interrupted(search: Search, signum: int, argv: Sequence[str], where: str) -> Interrupted:
    left = max(search.budget.left(), 0.0)
    search.study.set_user_attr(LEFT_ATTR, left)
    return Interrupted(signum, f"{where}; the study keeps every trial, and {format_duration(left)} of the budget "
                               f"was left; continue with: {resume_command(argv)}")


def warm_up() -> None:
    """Import what train, predict and blend import when they start (the final blend too), before the
    first trial's clock: a Ctrl-C (or the watchdog) must never land inside an import, which leaves a
    module half made."""
    import importlib

    for name in ("torch", "competition.tasks", "competition.training.fold", "competition.training.estimator_fold",
                 "competition.inference.ensemble", "competition.inference.validation", "competition.inference.predictions",
                 "competition.experiments.inputs", "competition.experiments.blending"):
        importlib.import_module(name)


def repeated(search: Search, trial) -> bool:
    """Whether the trial repeats a finished trial's very settings (TPE does on small spaces): then it takes
    that trial's outcome, is not trained again, and counts as repeated, not as a trial of its own."""
    same = same_as(search, trial)
    if same is None:
        return False
    trial.set_user_attr("same_as", same.number)
    search.study.tell(trial, same.value) if same.value is not None else search.study.tell(trial, state=same.state)
    print(f"trial {trial.number} {trial.params.get('recipe', '')}: the settings of trial {same.number}, not trained "
          f"again", flush=True)
    return True


def run_search(search: Search, argv: Sequence[str]) -> None:
    """Trials until the time for them is spent; a stop raises Interrupted (the CLI's one line)."""
    from optuna.trial import TrialState

    ran = 0
    reserve_choice(search)  # a study continued, or shared, may hold finished trials already
    while search.max_trials is None or ran < search.max_trials:
        if search.stop.requested is not None:
            raise _interrupted(search, search.stop.requested, argv, "stopped between trials")
        seconds = allotment(search)
        if seconds is None:
            return
        trial, ran = search.study.ask(), ran + 1
        plan = plan_trial(search, trial, seconds)
        if repeated(search, trial):
            continue
        if search.stop.requested is not None:  # Ctrl-C while the trial was being planned: it runs later
            trial.set_user_attr("outcome", "stopped before it started")
            search.study.tell(trial, state=TrialState.FAIL)
            search.study.enqueue_trial(trial.params, user_attrs=dict(trial.user_attrs))
            continue
        for key, value in {"run": plan.run, "sets": plan.sets, "recipe": plan.recipe.name, "pid": os.getpid(),
                           "host": socket.gethostname()}.items():
            trial.set_user_attr(key, value)
        folder = search.folder
        outcome = run_trial(plan, search.cfg, search.config,
                            {"log": folder / "logs" / f"{plan.run}.log", "submission": folder / "submissions" /
                             f"{plan.run}.csv"}, seconds, search.stop, _pruner_of(trial))
        _tell(search, trial, plan, outcome)
        print(_line(search, plan, outcome), flush=True)
        if outcome.state == INTERRUPTED:
            raise _interrupted(search, outcome.signum or signal.SIGINT, argv,
                               f"trial {plan.number} ({plan.run}) stopped: its folds so far are kept")
