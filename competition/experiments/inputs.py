"""A blend's inputs: each run's record and kept predictions (oof.csv, test_probs.csv), read back and
checked to be one competition's — the same folds, classes and metric, rows aligned by id."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from competition.core.errors import CompetitionError
from competition.core.keys import text_of
from competition.core.schema import Config
from competition.data.folder import Competition, read_csv, text_columns
from competition.data.splits import folds_path, split_digest
from competition.inference.predictions import OOF, TEST_PROBS
from competition.io.prob_columns import read_oof_probs
from competition.io.runs import HASH_COLUMNS, RUN_FILE, RunRecord, frame_key


@dataclass
class RunPredictions:
    """One run's kept predictions, rows in the order of the first run's OOF file and of test.csv."""

    name: str
    folder: Path  # where the run was read from (under output_dir, or the path it was named by)
    record: RunRecord
    oof: pd.DataFrame
    test: pd.DataFrame

    @property
    def metric(self) -> str:
        return self.record.config["train"]["metric"]


def run_dir(cfg: Config, name: str) -> Path:
    """A run named under output_dir, or the path of a run's folder."""
    path = Path(name)
    return path if len(path.parts) > 1 and path.is_dir() else Path(cfg.output_dir) / name


def _runs_under(cfg: Config) -> str:
    names = sorted(p.parent.name for p in Path(cfg.output_dir).glob(f"*/{RUN_FILE}"))
    return f"runs under {cfg.output_dir}: {', '.join(names)}" if names else f"no runs under {cfg.output_dir} yet"


def read_run(cfg: Config, name: str) -> RunPredictions:
    """A run's record and its kept predictions, which must come from that run as it stands."""
    folder = run_dir(cfg, name)
    record = RunRecord.read(folder)
    if record is None:
        raise CompetitionError(f"{folder} is not a run (no {RUN_FILE}); {_runs_under(cfg)}")
    frames = {}
    for file in (OOF, TEST_PROBS):
        path = folder / file
        if not path.is_file():
            raise CompetitionError(f"{path} not found: predict the run first (python -m competition.predict with its "
                                   f"config and --set name={record.name}); it keeps what a blend combines")
        frames[file] = read_csv(path, "predictions", [*HASH_COLUMNS, *text_columns(cfg)])
        key = frame_key(frames[file], path)
        if key != record.key:
            raise CompetitionError(f"{path} comes from another training of {record.name} ({key or 'no run stamp'}; the "
                                   f"run is {record.key}): predict the run again")
    return RunPredictions(folder.name, folder, record, frames[OOF], frames[TEST_PROBS])


def _same(runs: list[RunPredictions], what: str, value, why: str) -> None:
    first = runs[0]
    for run in runs[1:]:
        if value(run) != value(first):
            raise CompetitionError(f"runs {first.name} and {run.name} differ in {what}: {value(first)} vs {value(run)} "
                                   f"({why}); a blend combines runs of one competition, scored alike")


def check_blendable(cfg: Config, comp: Competition, runs: list[RunPredictions]) -> None:
    """One split, one class list, one metric; the split and classes those of the config's data."""
    _same(runs, "folds", lambda r: r.record.folds_hash,
          "hashes of their folds.csv: out-of-fold rows held out differently do not pool")
    _same(runs, "classes", lambda r: list(r.record.classes), "their train.csv targets")
    _same(runs, "metric", lambda r: r.metric, "config key train.metric")
    if list(runs[0].record.classes) != list(comp.classes):
        raise CompetitionError(f"runs predict classes {runs[0].record.classes}, {comp.train_path} has {comp.classes}: "
                               f"blend with the config of the runs' competition")
    split = split_digest(cfg)
    if split is not None and split != runs[0].record.folds_hash:
        raise CompetitionError(f"runs were trained on folds {runs[0].record.folds_hash}, {folds_path(cfg)} gives {split}: "
                               f"blend with the config of the runs' competition")
    n_splits = runs[0].record.config["folds"]["n_splits"]
    for run in runs:
        present = sorted(int(f) for f in run.oof["fold"].unique())
        if present != list(range(n_splits)):
            raise CompetitionError(f"{run.folder / OOF} holds folds {present} of {n_splits}: predict every "
                                   f"fold of {run.name} (predict --folds all)")


def _align(frame: pd.DataFrame, ids: pd.Series, id_column: str, where: str) -> pd.DataFrame:
    """The frame's rows in the order of `ids`; every id must be there."""
    keyed = frame.assign(_key=frame[id_column].map(text_of)).set_index("_key")
    wanted = ids.map(text_of)
    missing = wanted[~wanted.isin(keyed.index)]
    if len(missing) or len(keyed) != len(wanted):
        raise CompetitionError(f"{where} has {len(keyed)} rows for {len(wanted)} ids"
                               + (f" (id {missing.iloc[0]} missing)" if len(missing) else ""))
    return keyed.loc[wanted.to_numpy()].reset_index(drop=True)


@dataclass
class BlendInputs:
    """Every run's probabilities on the same rows: out-of-fold (with truth and folds) and test."""

    y: np.ndarray
    fold: np.ndarray
    oof: list[np.ndarray]
    test: list[np.ndarray]


def aligned(cfg: Config, comp: Competition, runs: list[RunPredictions]) -> BlendInputs:
    """The runs' probabilities with rows matched by id: OOF rows in the first run's order, test rows
    in test.csv's."""
    idc = cfg.data.id_column
    base = runs[0].oof
    oof, test = [], []
    for run in runs:
        oof.append(read_oof_probs(_align(run.oof, base[idc], idc, str(run.folder / OOF)), comp.classes))
        test.append(read_oof_probs(_align(run.test, comp.test[idc], idc, str(run.folder / TEST_PROBS)), comp.classes))
    return BlendInputs(comp.target.encode(base, runs[0].folder / OOF), base["fold"].to_numpy(), oof, test)
