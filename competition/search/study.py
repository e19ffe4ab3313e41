"""The Optuna study behind auto: TPE sampling over the recipes and their knobs, successive-halving
pruning on fold 0's per-epoch scores, the portfolio enqueued once when the study is created, and the
loop that asks for a trial, runs it and tells the study, until the budget is spent or a person stops it.

The study lives in a database (SQLite under output_dir/auto/<name>/ unless --storage names another),
so several auto processes can share it: Optuna hands each waiting trial to one process only, and the
trials' numbers, hence their run names, are unique. Every trial records its run, its --sets, its one
line of error and who ran it; a trial a stop left unfinished is enqueued again, to continue its run."""
from __future__ import annotations

import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from competition.core.choices import AUTO_DIR
from competition.core.errors import CompetitionError
from competition.core.metrics import METRICS
from competition.core.schema import Config
from competition.search.budget import AutoStop, Budget
from competition.search.recipes import Recipe, choose, config_sets, portfolio_params, portfolio_values, recipes
from competition.search.trials import Plan

if TYPE_CHECKING:
    import optuna

STUDY_FILE = "study.db"
CONFIG_ATTR, RECIPES_ATTR, LEFT_ATTR = "config_hash", "recipes", "budget_left"
READY_SECONDS = 30  # how long a process joining a study waits for its creator to enqueue the portfolio
REDUCTION = 3  # successive halving keeps the best third of the trials at each rung
TIME_SHARE = 0.8  # of a trial's allotment, the share its folds' train.time_limit may use: the rest is predict's


@dataclass
class Search:
    """One auto invocation: the config as given (`config`, `sets`), its study and budget."""

    cfg: Config
    config: str | None
    sets: list[str]
    recipes: dict[str, Recipe]
    budget: Budget
    stop: AutoStop
    study: optuna.Study | None = None
    seconds: list[float] = field(default_factory=list)  # the finished trials' durations
    max_trials: int | None = None  # --trials: this process stops after so many
    scoring_seconds: float | None = None  # one scoring of kept predictions in the final choice, timed once

    @property
    def folder(self) -> Path:
        return Path(self.cfg.output_dir) / AUTO_DIR / self.cfg.name

    @property
    def metric(self):
        return METRICS[self.cfg.train.metric]


def storage_url(cfg: Config, storage: str | None) -> str:
    if storage:
        return storage
    return f"sqlite:///{(Path(cfg.output_dir) / AUTO_DIR / cfg.name / STUDY_FILE).resolve()}"


def _storage(url: str):
    import optuna

    # SQLite lets one writer in at a time: another process waits for its turn instead of failing.
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else None
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # auto prints its own line per trial
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _pruner():
    """Successive halving on fold 0's per-epoch scores (rungs at epochs 1, 3, 9, …; the top third of
    the trials at a rung go on), once at least three trials have reached that rung. Optuna's own
    promotes only the best of the first two trials at a rung ("Optuna does not support suspending"):
    with the handful of trials a short budget allows, that prunes half of them on one epoch's noise."""
    import optuna

    class SuccessiveHalving(optuna.pruners.SuccessiveHalvingPruner):
        def prune(self, study, trial) -> bool:
            if not super().prune(study, trial):
                return False
            trials = study.get_trials(deepcopy=False)
            mine = next(t for t in trials if t.number == trial.number)  # with the rungs just recorded
            rungs = [k for k in mine.system_attrs if k.startswith("completed_rung_")]
            if not rungs:  # a score that is not a number
                return True
            rung = max(rungs, key=lambda k: int(k.rsplit("_", 1)[1]))
            return sum(rung in t.system_attrs for t in trials) >= REDUCTION

    return SuccessiveHalving(min_resource=1, reduction_factor=REDUCTION)


def open_study(search: Search, url: str, digest: str, resume: bool) -> optuna.Study:
    """Create the study (and enqueue the portfolio) or join it; one process at a time does this."""
    import optuna
    from filelock import FileLock

    _quiet_optuna()
    search.folder.mkdir(parents=True, exist_ok=True)
    direction = "maximize" if search.metric.higher_is_better else "minimize"
    sampler = optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True,
                                         n_startup_trials=max(len(search.recipes), 4))
    pruner = _pruner()
    # The lock: two processes of this machine creating SQLite's tables at once. Across machines (another
    # --storage), the database's own unique study name decides which process creates the study.
    with FileLock(str(search.folder / ".study.lock")):
        storage = _storage(url)
        if search.cfg.name not in optuna.get_all_study_names(storage):
            if resume:
                raise CompetitionError(f"--resume: no study {search.cfg.name!r} in {url} to continue; start one "
                                       f"without --resume")
            try:
                study = optuna.create_study(storage=storage, study_name=search.cfg.name, direction=direction,
                                            sampler=sampler, pruner=pruner)
            except optuna.exceptions.DuplicatedStudyError:
                pass
            else:
                for recipe in search.recipes.values():
                    study.enqueue_trial(portfolio_params(recipe))
                study.set_user_attr(RECIPES_ATTR, list(search.recipes))
                study.set_user_attr(CONFIG_ATTR, digest)  # last: the study is ready
                return study
        study = optuna.load_study(study_name=search.cfg.name, storage=storage, sampler=sampler, pruner=pruner)
        _check_same(search, study, url, digest)
        _continue_abandoned(study)
    return study


def _check_same(search: Search, study, url: str, digest: str) -> None:
    for _ in range(READY_SECONDS):  # a study another machine has just created, its portfolio still on its way
        if CONFIG_ATTR in study.user_attrs:
            break
        time.sleep(1)
    old, recipes = study.user_attrs.get(CONFIG_ATTR), study.user_attrs.get(RECIPES_ATTR)
    if old != digest or recipes != list(search.recipes):
        raise CompetitionError(f"study {search.cfg.name!r} in {url} was started with another config or other "
                               f"recipes (config {old}, recipes {', '.join(recipes or [])}; now config {digest}, "
                               f"recipes {', '.join(search.recipes)}): give the same --config and --sets, or a "
                               f"study of its own (--set name=…)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _continue_abandoned(study) -> None:
    """Trials left running by a process of this machine that is gone (killed, crashed) are failed, and
    enqueued again once to continue their runs (a second crash is the trial's own)."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        a = t.user_attrs
        if a.get("host") == socket.gethostname() and "pid" in a and not _alive(a["pid"]):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            if "continues" not in a and "run" in a:
                study.enqueue_trial(t.params, user_attrs={"run": a["run"], "sets": a["sets"], "continues": t.number,
                                                          "why": "the process that ran it ended"})


def applicable(cfg: Config, config: str | None, sets: list[str]) -> dict[str, Recipe]:
    """The config's recipes whose portfolio run the config accepts (a multi-label target takes the MLP
    alone; a GBDT library must be installed), each left out said in one line; a backbone's weights file
    must be there."""
    from competition.config import load_config

    kept = {}
    for name, recipe in recipes(cfg).items():
        weights = recipe.sets.get("model.pretrained_file")
        if weights and not Path(weights).is_file():
            raise CompetitionError(f"config key auto.backbones: {name}'s weights {weights} not found")
        try:
            load_config(config, [*sets, *(f"{k}={_yaml(v)}" for k, v in config_sets(recipe, portfolio_values(recipe)).items())])
        except CompetitionError as exc:
            print(f"auto: {name} left out: {exc}", flush=True)
            continue
        kept[name] = recipe
    if not kept:
        raise CompetitionError("auto: no recipe applies to this config (each left out above): see auto.models and "
                               "auto.backbones")
    return kept


def _yaml(value) -> str:
    """A --set value YAML reads back as the same value (floats keep a dot: PyYAML reads 1e-05 as text)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def plan_trial(search: Search, trial, allotment: float) -> Plan:
    """The recipe, knobs and --sets of an asked trial; a continuation reuses its run and its --sets."""
    name = trial.suggest_categorical("recipe", list(search.recipes))
    recipe = search.recipes[name]
    values = choose(recipe, trial)
    if "run" in trial.user_attrs:
        return Plan(trial.number, recipe, values, trial.user_attrs["run"], list(trial.user_attrs["sets"]), resume=True)
    run = f"{search.cfg.name}-t{trial.number:03d}-{name}"
    limit = max(1.0, round(TIME_SHARE * allotment / search.cfg.folds.n_splits, 1))
    sets = [*search.sets, *(f"{k}={_yaml(v)}" for k, v in config_sets(recipe, values).items()), f"name={run}",
            f"train.time_limit={limit:g}"]
    return Plan(trial.number, recipe, values, run, sets)


def same_as(search: Search, trial):
    """A finished trial with these very settings (TPE repeats itself on small spaces), or None."""
    from optuna.trial import TrialState

    if "run" in trial.user_attrs:
        return None
    done = search.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    return next((t for t in done if t.params == trial.params and t.number != trial.number), None)
