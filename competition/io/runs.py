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

from competition.core.choices import CACHE_DIR, KEPT_FOLDS
from competition.core.errors import CompetitionError
from competition.core.keys import text_of
from competition.core.metrics import METRICS
from competition.core.schema import Config, build_config, config_to_dict, flat_config
from competition.io.checkpoints import BEST, LAST, FoldLock, FoldState, load_checkpoint
from competition.io.files import write_json

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

# Keys that say where files are, how fast the work runs or what the submission looks like, not what
# is trained: a run keeps its identity when they change. `folds.*` only matter through folds.csv,
# whose own hash is part of the identity (an existing folds.csv wins over them).
NOT_TRAINING = (
    "name", "output_dir", "submission_dir", "data.root", "data.test_csv", "data.sample_submission",
    "data.solution", "data.sample_target_column", "data.image_pattern", "data.test_image_pattern", "data.demo", "data.max_classes", "folds", "train.num_workers", "train.cache",
    "train.cache_on_device", "train.compile", "train.checkpoint_every_minutes", "train.time_limit", "train.keep_top_k",
    "tracking", "predict",
)


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


def training_config(config: dict) -> dict:
    """The flattened keys of a stored config that decide what is trained, with the current
    schema's defaults filled in (a key added to the kit since compares as its default)."""
    flat = flat_config(config_to_dict(build_config(config)))
    return {k: v for k, v in flat.items() if not any(k == n or k.startswith(f"{n}.") for n in NOT_TRAINING)}


def config_digest(config: dict) -> str:
    """12 hex digits naming the training-relevant part of a config (a plain dict, as stored)."""
    text = json.dumps(training_config(config), sort_keys=True, default=str)
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
        return cls(config_digest(config_to_dict(cfg)), folds_digest(folds, cfg.data.id_column))

    @classmethod
    def of_state(cls, state: FoldState) -> RunKey:
        return cls(config_digest(state.config), state.folds_hash)


def differences(old: dict, new: dict, limit: int = 5) -> str:
    """`train.epochs (12 → 1), …`: the training-relevant keys in which two stored configs differ."""
    a, b = training_config(old), training_config(new)
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    shown = ", ".join(f"{k} ({a.get(k)!r} → {b.get(k)!r})" for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


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

    @property
    def key(self) -> RunKey:
        """Recomputed from the stored config, so a kit that adds config keys still matches its old runs."""
        return RunKey(config_digest(self.config), self.folds_hash)

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
            record = cls(**{k: data[k] for k in cls.__dataclass_fields__})
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
    (`folds`, read from the file `split`): folds of another config (or of other folds) already there
    are refused in one line, unless `overwrite` says to discard them (the return value: True when
    something is to be discarded)."""
    key, config = RunKey.of(cfg, folds), config_to_dict(cfg)
    record = RunRecord.read(cfg.run_dir)
    others = [(cfg.run_dir / RUN_FILE, record.config, record.key)] if record else [
        (path, state.config, RunKey.of_state(state)) for path, state in fold_states(cfg.run_dir)]
    for where, old_config, old_key in others:
        if old_key.config != key.config:
            problem = f"was trained with another config ({where}): {differences(old_config, config)}"
        elif old_key.folds is not None and old_key.folds != key.folds:
            problem = (f"was trained on other folds ({where} has folds {old_key.folds}, "
                       f"{split} now gives {key.folds})")
        else:
            continue
        if overwrite:
            return True
        raise CompetitionError(f"{cfg.run_dir} holds a run that {problem}; train this config under its own name "
                               f"(--set name={free_name(cfg)}) or discard the old run (--overwrite)")
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
    RunRecord(cfg.name, config_to_dict(cfg), key.config, key.folds, list(classes), now).write(run_dir)


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


def check_trained_with(cfg: Config, state: FoldState, path: Path) -> None:
    """A fold is predicted under the config it was trained with (its training-relevant keys):
    the metric, the target's format and the rest decide what the submission holds."""
    given = config_to_dict(cfg)
    if config_digest(state.config) != config_digest(given):
        raise CompetitionError(f"{path} was trained with another config than the one given: "
                               f"{differences(state.config, given)}; {own_config_hint(cfg)}")


def check_same_run(states: list[tuple[Path, FoldState]]) -> RunKey:
    """Folds to be averaged, scored or blended together must come from one config on one split;
    returns that run's key."""
    (first_path, first), *rest = states
    key = RunKey.of_state(first)
    for path, state in rest:
        other = RunKey.of_state(state)
        if other.config != key.config:
            raise CompetitionError(f"{path} was trained with another config than {first_path}: "
                                   f"{differences(first.config, state.config)}; folds of different configs are not "
                                   f"one run: retrain that fold under its run's config, or give each config its own name")
        if None not in (other.folds, key.folds) and other.folds != key.folds:
            raise CompetitionError(f"{path} was trained on other folds ({other.folds}) than {first_path} ({key.folds}): "
                                   f"retrain the run on one folds.csv")
    return key


# The kit's own folders under output_dir, which no run may take the name of.
KIT_FOLDERS = {BLENDS: "blend records", CACHE_DIR: "the decode cache", KEPT_FOLDS: "the folds.csv of read-only data folders"}
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
