"""One trial: a normal run of the kit under its own name — `train` fold 0, then (unless fold 0's
per-epoch scores prune it) the other folds, then `predict` — whose CV as submitted is the trial's value.

The commands run in this process, not in a subprocess per trial. A fresh Python process spends 5-10 s
importing torch, timm and scikit-learn on a small machine — as long as a whole trial on a small table,
paid twice per trial (train, predict) — while in here they are imported once. The price is isolation:
a library that crashes the process (a segfault) ends auto, and `--resume` continues the study with that
trial recorded as failed. Signals need no forwarding: Ctrl-C reaches the fold loop's own graceful stop,
and the watchdog stops a trial at its allotment the same way."""
from __future__ import annotations

import contextlib
import csv
import importlib
import io
import json
import logging
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from competition.core.metrics import METRICS
from competition.core.schema import Config
from competition.io.checkpoints import BEST
from competition.io.runs import CV_FILE
from competition.search.budget import AutoStop, SelfStop, Watchdog
from competition.search.recipes import Recipe

COMPLETE, FAILED, PRUNED, INTERRUPTED, CUT = "complete", "failed", "pruned", "interrupted", "cut"


@dataclass
class Plan:
    """What a trial runs: its run's name, every --set (the user's, the recipe's, the name and the time
    limit), and whether it continues a run a stop left unfinished."""

    number: int
    recipe: Recipe
    values: dict
    run: str
    sets: list[str]
    resume: bool = False

    def argv(self, config: str | None) -> list[str]:
        return [*(["--config", config] if config else []), *(a for s in self.sets for a in ("--set", s))]


@dataclass
class Outcome:
    state: str  # complete | failed | pruned | interrupted (a person's stop) | cut (the watchdog's)
    value: float | None = None  # the CV as submitted (complete), fold 0's best score (pruned)
    error: str | None = None  # the one line of a failed trial
    seconds: float = 0.0
    steps: dict[int, float] = field(default_factory=dict)  # fold 0's best score so far, by epoch
    timings: dict[str, float] = field(default_factory=dict)  # seconds of each command (complete trials)
    signum: int = signal.SIGINT  # what stopped an interrupted trial


class _Capture(io.TextIOBase):
    """Everything a command prints, into the trial's log and kept to find its `error: …` line."""

    TAIL = 20_000  # characters kept: the one line comes last, after a command's progress bars

    def __init__(self, log: TextIO):
        self.log, self.tail = log, ""

    def write(self, text: str) -> int:
        self.log.write(text)
        self.tail = (self.tail + text)[-self.TAIL:]
        return len(text)

    def flush(self) -> None:
        self.log.flush()

    def last_error(self) -> str | None:
        found = [line for line in self.tail.splitlines() if line.startswith(("error: ", "interrupted"))]
        # The command's own advice on continuing is auto's business here: --resume continues the trial.
        return found[-1].split("; continue with: ", 1)[0] if found else None


def run_command(name: str, argv: list[str], log: TextIO) -> tuple[int, str | None]:
    """`python -m competition.<name> ARGV` in this process, its output into `log`: (exit code, the
    one line that said why it failed or stopped). A bug's traceback goes to the log, its last line to
    the caller: a trial's failure is never auto's."""
    # Imported by name: a command never imports another (tests/test_layout.py), auto included.
    main = importlib.import_module(f"competition.{name}").main
    out = _Capture(log)
    root = logging.getLogger()
    handlers, level = root.handlers, root.level
    root.handlers, root.level = [logging.StreamHandler(out)], logging.INFO
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stops the command itself
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main(argv)
    except KeyboardInterrupt:  # between the command's own handlers
        code = 130
    except Exception as exc:  # noqa: BLE001 - a bug in one trial is recorded, and the search goes on
        traceback.print_exc(file=out)
        return 1, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        root.handlers, root.level = handlers, level
        for signum, handler in previous.items():  # a stopped command leaves its own in place
            signal.signal(signum, handler)
        log.flush()
    return code, out.last_error()


def fold_steps(path: Path, metric: str) -> dict[int, float]:
    """Fold 0's best validation score so far at each epoch, from its summary.csv ({} before the first)."""
    higher, best, steps = METRICS[metric].higher_is_better, None, {}
    if not path.is_file():
        return steps
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            score = float(row["metric"])
            best = score if best is None or (score > best if higher else score < best) else best
            steps[int(row["epoch"])] = best
    return steps


class FoldZeroWatch:
    """While fold 0 trains, each epoch its summary.csv gains goes to `prune` (Optuna's report and
    pruner); a prune stops the fold at once. After the fold, one last look decides the other folds."""

    POLL_SECONDS = 0.5

    def __init__(self, path: Path, metric: str, prune: Callable[[dict[int, float]], bool], stopper: SelfStop):
        self.path, self.metric, self.prune, self.stopper = path, metric, prune, stopper
        self.steps: dict[int, float] = {}
        self.pruned = False
        self._lock, self._done = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._done.wait(self.POLL_SECONDS):
            self.look(stop_the_fold=True)

    def look(self, stop_the_fold: bool = False) -> bool:
        with self._lock:
            steps = fold_steps(self.path, self.metric)
            if not self.pruned and steps and steps != self.steps:
                self.steps = steps
                self.pruned = self.prune(steps)
                if self.pruned and stop_the_fold:
                    self.stopper.send(PRUNED)
            return self.pruned

    def __enter__(self) -> FoldZeroWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


def run_trial(plan: Plan, cfg: Config, config: str | None, paths: dict[str, Path], allotment: float,
              stop: AutoStop, prune: Callable[[dict[int, float]], bool]) -> Outcome:
    """Train fold 0 (its epochs to `prune`), train the other folds, predict: the trial's Outcome, within
    `allotment` seconds. `paths`: the trial's log and submission. Nothing here raises for a failed trial."""
    began = time.monotonic()
    paths["log"].parent.mkdir(parents=True, exist_ok=True)
    paths["submission"].parent.mkdir(parents=True, exist_ok=True)
    own = stop.own = SelfStop()
    with open(paths["log"], "a", encoding="utf-8") as log, Watchdog(allotment, own):
        outcome = _steps(plan, cfg, config, paths["submission"], log, own, prune)
        stop.install()  # the commands put theirs in place
    _release_memory()
    outcome.seconds = time.monotonic() - began
    return outcome


def _release_memory() -> None:
    """The trial's models are gone with its commands: hand their memory back before the next trial
    (the GPU's cache too, which the next trial's larger backbone may need)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _stopped(own: SelfStop, what: str, error: str | None, steps: dict[int, float], code: int = 130) -> Outcome:
    if own.reason == PRUNED:
        return Outcome(PRUNED, value=steps[max(steps)] if steps else None, steps=steps)
    if own.reason is not None:
        return Outcome(CUT, error=f"stopped at its allotment of the budget, in {what}", steps=steps)
    return Outcome(INTERRUPTED, error=error, steps=steps, signum=signal.SIGTERM if code == 143 else signal.SIGINT)


def _steps(plan: Plan, cfg: Config, config: str | None, submission: Path, log: TextIO, own: SelfStop,
           prune: Callable[[dict[int, float]], bool]) -> Outcome:
    base, resume = plan.argv(config), ["--resume"] if plan.resume else []
    run_dir = Path(cfg.output_dir) / plan.run
    summary = run_dir / "fold0" / "summary.csv"
    steps: dict[int, float] = {}
    timings: dict[str, float] = {}
    for what, argv in (("fold 0", ["train", *base, "--fold", "0", *resume]),
                       ("the other folds", ["train", *base, "--fold", ",".join(map(str, range(1, cfg.folds.n_splits))),
                                            *resume]),
                       ("predict", ["predict", *base, "--no-report", "--output", str(submission)])):
        if own.reason is not None:
            return _stopped(own, what, None, steps)
        watch = FoldZeroWatch(summary, cfg.train.metric, prune, own) if what == "fold 0" and plan.recipe.epochs else None
        began = time.monotonic()
        with watch or contextlib.nullcontext():
            code, error = run_command(argv[0], argv[1:], log)
        timings[what] = time.monotonic() - began
        steps = watch.steps if watch else steps
        if code in (130, 143) or own.reason == PRUNED:
            return _stopped(own, what, error, steps, code)
        if code != 0:
            return Outcome(FAILED, error=error or f"{argv[0]} ended with exit code {code}", steps=steps)
        if watch and watch.look():  # the fold's last epochs: its other folds are still to pay
            return _stopped(own, what, None, watch.steps) if own.reason else Outcome(
                PRUNED, value=watch.steps[max(watch.steps)], steps=watch.steps)
        unfinished = [k for k in range(cfg.folds.n_splits) if not (run_dir / f"fold{k}" / BEST).is_file()]
        if what == "the other folds" and unfinished:  # its time limit ended a fold inside its first epoch
            return Outcome(CUT, error=f"fold {', '.join(map(str, unfinished))} ended no epoch within train.time_limit: "
                                      f"the trial has no model there, and is not predicted or blended", steps=steps)
    cv = json.loads((run_dir / CV_FILE).read_text())["as_submitted"]["cv"]
    return Outcome(COMPLETE, value=float(cv), steps=steps, timings=timings)
