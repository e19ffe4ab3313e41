"""A run is one config on one split: the hash of its training-relevant config and of its folds,
recorded in outputs/<name>/run.json, in every checkpoint and in every file of predictions; and the
refusals when folds, predictions or runs of different configs would be mixed."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from competition.core.choices import AUTO_DIR, CACHE_DIR, KEPT_FOLDS
from competition.core.errors import CompetitionError
from competition.core.keys import text_of
from competition.core.metrics import METRICS
from competition.core.schema import Config, config_to_dict
from competition.io.checkpoints import BEST, LAST, FoldLock, FoldState, load_checkpoint
from competition.io.compatibility import (
    PREDICT,
    RESUME,
    SAME_RUN,
    Trained,
    check_compatible,
    differences,
    training_config,
)
from competition.io.files import write_json
from competition.io.hook_file import hook_digest

if TYPE_CHECKING:  # the frames come from the caller: reading this module's JSON needs no pandas
    import pandas as pd

RUN_FILE = "run.json"
RUN_FORMAT = 1
BLENDS = "blends"  # outputs/blends/<blend name>/blend.json: no run may take this name
BLEND_FILE = "blend.json"  # what a blend records, read back by the board
BLEND_FORMAT = 1
HASH_COLUMNS = ("config_hash", "folds_hash")  # stamped on every row of oof.csv and test_probs.csv
# What a run's folder holds besides its fold<K>/ folders: discarded with it by `train --overwrite`.
CV_FILE = "cv.json"  # outputs/<name>/cv.json: the CV report of the last full predict (its thresholds too)
RUN_FILES = (RUN_FILE, "config.yaml", CV_FILE, "oof.csv", "test_probs.csv")

def stored_cv(run_dir: Path) -> dict:
    """The run's cv.json as the last full predict wrote it, or {} before the first one."""
    path = Path(run_dir) / CV_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def submission_thresholds(run_dir: Path) -> list | None:
    """The thresholds the last full predict decided the submission at (F1 metrics), or None."""
    return (stored_cv(run_dir).get("as_submitted") or {}).get("thresholds")


def stored_thresholds(cfg: Config) -> dict:
    """For predict --no-cv (and a package, which predicts so): the thresholds of the last full
    predict (cv.json), where the metric needs them."""
    metric = METRICS[cfg.train.metric]
    thresholds = submission_thresholds(cfg.run_dir) if metric.thresholded else None
    if metric.thresholded and not thresholds:
        raise CompetitionError(f"--no-cv: train.metric {metric.name} decides at thresholds fit on the out-of-fold rows, "
                               f"and {cfg.run_dir / CV_FILE} holds none: run predict once without --no-cv")
    return {"thresholds": thresholds, "folds": {}, "cv": None}


def config_digest(config: dict, hook: str | None = None) -> str:
    """12 hex digits naming the training-relevant part of a config (a plain dict, as stored) and, for
    a run with a feature hook, the content of its file (`hook`: the SHA-256 recorded at training; None
    without a hook, or where a kit before that did not record it). An edited hook is another run: its
    `transform` makes the features of every fold, and of the test rows at predict."""
    text = json.dumps(training_config(config), sort_keys=True, default=str)
    if hook:
        text += f"\nfeature hook {hook}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def folds_digest(frame: pd.DataFrame, id_column: str) -> str:
    """12 hex digits naming a split: every (id, fold) pair, whatever the rows' order."""
    pairs = sorted(zip(frame[id_column].astype(str), frame["fold"].astype(int), strict=True))
    return hashlib.sha256("\n".join(f"{i},{f}" for i, f in pairs).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RunKey:
    """What makes two sets of predictions part of the same run."""

    config: str
    folds: str | None  # None: a checkpoint written before the kit recorded its folds

    def __str__(self) -> str:
        return f"config {self.config}, folds {self.folds}"

    @classmethod
    def of(cls, cfg: Config, folds: pd.DataFrame) -> RunKey:
        """The run `cfg` trains on `folds`, with its hook file as it is on disk."""
        return cls(config_digest(config_to_dict(cfg), hook_digest(cfg)), folds_digest(folds, cfg.data.id_column))

    @classmethod
    def of_state(cls, state: FoldState) -> RunKey:
        return cls(config_digest(state.config, state.hook_sha256), state.folds_hash)


def stamp(frame: pd.DataFrame, key: RunKey) -> pd.DataFrame:
    """The frame with the run's hashes on every row, so the file names its run wherever it goes."""
    return frame.assign(config_hash=key.config, folds_hash=key.folds or "")


def frame_key(frame: pd.DataFrame, path: Path) -> RunKey | None:
    """The run a file of predictions comes from, from its frame read with HASH_COLUMNS as text (a
    digest such as 1234e5678901 is not a number); None for one written before files were stamped."""
    if not set(HASH_COLUMNS) <= set(frame.columns):
        return None
    pairs = frame[list(HASH_COLUMNS)].fillna("").astype(str).drop_duplicates()
    if len(pairs) != 1:
        raise CompetitionError(f"{path} mixes the rows of {len(pairs)} runs (columns {', '.join(HASH_COLUMNS)})")
    config, folds = pairs.iloc[0]
    return RunKey(config, folds or None)


@dataclass
class RunRecord:
    """outputs/<name>/run.json: the run's config, its identity and its classes."""

    name: str
    config: dict
    config_hash: str
    folds_hash: str | None
    classes: list
    created: str
    hook_sha256: str | None = None  # the feature hook file's SHA-256 (None: no hook, or an older kit's record)

    @property
    def key(self) -> RunKey:
        """Recomputed from the stored config, so a kit that adds config keys still matches its old runs."""
        return RunKey(config_digest(self.config, self.hook_sha256), self.folds_hash)

    def trained(self, path: Path) -> Trained:
        """What the run was trained with, to compare with a config (io.compatibility)."""
        return Trained.stored(self.config, path, folds=self.folds_hash, hook=self.hook_sha256)

    def write(self, run_dir: Path) -> None:
        write_json(Path(run_dir) / RUN_FILE, {"format": RUN_FORMAT, **self.__dict__})

    @classmethod
    def read(cls, run_dir: Path) -> RunRecord | None:
        path = Path(run_dir) / RUN_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            if data.get("format") != RUN_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, this kit reads {RUN_FORMAT}")
            record = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k != "hook_sha256"},
                         hook_sha256=data.get("hook_sha256"))
            # Classes are text; kits before labels were read as text stored a numeric class as a number.
            record.classes = [text_of(c) for c in record.classes]
            return record
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CompetitionError(f"{path} is not a run record this kit reads ({exc})") from None


def fold_states(run_dir: Path) -> list[tuple[Path, FoldState]]:
    """Every fold checkpoint of a run (best.pt, else last.pt), for a run trained before run.json."""
    found = []
    for fold_dir in sorted(Path(run_dir).glob("fold*")):
        for name in (BEST, LAST):
            if (fold_dir / name).is_file():
                found.append((fold_dir / name, load_checkpoint(fold_dir / name)))
                break
    return found


def free_name(cfg: Config) -> str:
    """`<name>-2` (or the first free number): a name for a run of another config."""
    n = 2
    while (Path(cfg.output_dir) / f"{cfg.name}-{n}").exists():
        n += 1
    return f"{cfg.name}-{n}"


def check_new_run(cfg: Config, folds: pd.DataFrame, overwrite: bool, split: Path) -> bool:
    """Whether this config may train folds into cfg.run_dir. A run is one config on one split
    (`folds`, read from the file `split`) with one feature hook file: folds of another already there
    are refused in one line, unless `overwrite` says to discard them (the return value: True when
    something is to be discarded)."""
    given = Trained.of_config(cfg, folds=folds_digest(folds, cfg.data.id_column), folds_file=split)
    record = RunRecord.read(cfg.run_dir)
    others = [record.trained(cfg.run_dir / RUN_FILE)] if record else [
        Trained.of_state(state, path) for path, state in fold_states(cfg.run_dir)]
    advice = (f"{cfg.run_dir} holds another run: train this config under its own name (--set name={free_name(cfg)}) "
              f"or discard the old run (--overwrite)")
    for trained in others:
        if overwrite:
            if differences(trained, given, SAME_RUN):
                return True
            continue
        check_compatible(Path(trained.name), trained, given, SAME_RUN, advice)
    return False


def start_run(cfg: Config, folds: pd.DataFrame, classes: list, discard: bool) -> None:
    """Discard the old run when asked (each fold under its lock), then record this one in run.json
    (kept as it is when it already names this run, so its creation time stays)."""
    run_dir = cfg.run_dir
    if discard:
        for fold_dir in sorted(p for p in run_dir.glob("fold*") if p.is_dir()):
            with FoldLock(fold_dir):
                shutil.rmtree(fold_dir)
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
    key = RunKey.of(cfg, folds)
    record = RunRecord.read(run_dir)
    if record is not None and record.key == key:
        return
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    RunRecord(cfg.name, config_to_dict(cfg), key.config, key.folds, list(classes), now, hook_digest(cfg)).write(run_dir)


def forget_unsaved_folds(cfg: Config, folds: list[int]) -> bool:
    """After a fold stopped before saving anything (it diverged): the folders of `folds` that hold
    no checkpoint go (each under its lock; one another process trains stays), and the run's own
    files with them once no fold folder is left, so that the run does not look trained. Returns
    whether the run is gone."""
    for fold in folds:
        fold_dir = cfg.fold_dir(fold)
        if not fold_dir.is_dir() or (fold_dir / BEST).exists() or (fold_dir / LAST).exists():
            continue
        try:
            with FoldLock(fold_dir):
                shutil.rmtree(fold_dir)
        except CompetitionError:  # held by another training of that fold
            continue
    if any(p.is_dir() for p in cfg.run_dir.glob("fold*")):
        return False
    for name in RUN_FILES:
        (cfg.run_dir / name).unlink(missing_ok=True)
    if cfg.run_dir.is_dir() and not any(cfg.run_dir.iterdir()):
        cfg.run_dir.rmdir()
    return True


def own_config_hint(cfg: Config) -> str:
    """What to do when the config given to predict (explain, package) is not the run's."""
    return f"give the run's own config: --run {cfg.name} (the config.yaml it was trained with, and any --set)"


# predict runs the local hook's `transform` on the `fit` state stored in each checkpoint: the stored
# state is only what `fit` returned, so an edited file would give the model features it never saw.
HOOK_AT_PREDICT = ("predict runs the local hook file's transform on the fit stored in the checkpoint: name the hook, "
                   "and put back the file, it was trained with (only the local config's hook runs), or retrain the run")


def check_trained_with(cfg: Config, state: FoldState, path: Path, classes: list) -> None:
    """A fold is predicted under the config it was trained with (its training-relevant keys: the
    metric, the target's format and the rest decide what the submission holds), on the data's
    classes, with the feature hook file it was trained with."""
    check_compatible(path, Trained.of_state(state, path), Trained.of_config(cfg, classes), PREDICT, {
        "": own_config_hint(cfg), "hook": HOOK_AT_PREDICT,
        "classes": "train.csv's classes changed since the run trained: put it back, or retrain the run"})


def check_resumed(cfg: Config, state: FoldState, path: Path, classes: list | None = None) -> None:
    """A resumed fold continues under the config it started with (RESUME_MUTABLE aside), on the
    same classes (when given) and with the same feature hook file."""
    check_compatible(path, Trained.of_state(state, path), Trained.of_config(cfg, classes), RESUME,
                     f"resume with the config, data and feature hook it started with, or train afresh (without "
                     f"--resume) under its own name (--set name={free_name(cfg)}) or with --overwrite")


def check_same_run(states: list[tuple[Path, FoldState]]) -> RunKey:
    """Folds to be averaged, scored or blended together must come from one config on one split,
    with one feature hook file; returns that run's key."""
    (first_path, first), *rest = states
    given = Trained.of_state(first, first_path)
    for path, state in rest:
        check_compatible(path, Trained.of_state(state, path), given, SAME_RUN, {
            "": "folds of different configs or hook files are not one run: retrain that fold under its run's "
                "config, or give each config its own name",
            "folds": "folds of different folds.csv are not one run: retrain the run on one folds.csv"})
    return RunKey.of_state(first)


# The kit's own folders under output_dir, which no run may take the name of.
KIT_FOLDERS = {BLENDS: "blend records", CACHE_DIR: "the decode cache", KEPT_FOLDS: "the folds.csv of read-only data folders",
               AUTO_DIR: "auto's studies and trial logs"}
NAME_BYTES = 200  # a file name holds 255 bytes, and a submission's adds its time and score to the run's


def check_run_name(name: str, key: str, folder: str = "output_dir") -> None:
    """A run's name (a blend's: `folder` outputs/blends) becomes a folder under `folder` and the start
    of its submissions' file names: one plain path component; and a run's, none of the kit's own
    folders under output_dir (case aside, for the filesystems that ignore it)."""
    if (not name or name.startswith(".") or name != name.strip() or "/" in name or "\\" in name
            or any(ord(c) < 32 or ord(c) == 127 for c in name) or len(name.encode()) > NAME_BYTES):
        raise CompetitionError(f"{key}: {name!r} is not one folder name under {folder}: give a name without '/' or "
                               f"'\\', a leading '.', spaces at its ends or control characters, of at most "
                               f"{NAME_BYTES} bytes")
    if folder == "output_dir" and name.lower() in KIT_FOLDERS:
        raise CompetitionError(f"{key}: {name!r} is the kit's own folder under output_dir ({name.lower()}/ holds "
                               f"{KIT_FOLDERS[name.lower()]}): pick another name")
