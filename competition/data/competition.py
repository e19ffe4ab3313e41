"""Reading a Kaggle-layout competition folder and checking it at the boundary."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from competition.core.config import Config
from competition.core.errors import CompetitionError
from competition.data.demos import DEMOS, build_demo
from competition.data.targets import Target, line_of, read_target

log = logging.getLogger(__name__)


@dataclass
class Competition:
    """The three CSVs of a competition, checked, and the classes of its target."""

    root: Path
    train: pd.DataFrame
    test: pd.DataFrame
    sample: pd.DataFrame
    target: Target
    train_path: Path
    test_path: Path
    sample_path: Path

    @property
    def classes(self) -> list:
        """Original label values; index = model output index."""
        return self.target.classes


def train_rows(comp: Competition, ids: pd.Series, id_column: str, where: Path) -> np.ndarray:
    """The train.csv row of each id (a file of out-of-fold predictions names its rows by id); an id
    train.csv no longer holds is refused in one line naming `where`."""
    rows = pd.Index(comp.train[id_column].astype(str)).get_indexer(ids.astype(str))
    if (rows < 0).any():
        missing = ids.iloc[int(np.flatnonzero(rows < 0)[0])]
        raise CompetitionError(f"{where}: id {missing!r} is not in {comp.train_path}: train.csv changed since "
                               f"training; retrain the fold")
    return rows


def read_csv(path: Path, what: str = "", dtype: dict | None = None) -> pd.DataFrame:
    """Read a CSV, turning a missing, empty or malformed file into one clear line."""
    if path.is_dir():
        raise CompetitionError(f"{what or 'file'} {path} is a folder, not a CSV file")
    if not path.is_file():
        raise CompetitionError(f"{what or 'file'} {path} not found")
    try:
        df = pd.read_csv(path, dtype=dtype)
    except pd.errors.EmptyDataError:
        raise CompetitionError(f"{path} is empty: expected a header line and rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise CompetitionError(f"{path} is not a readable CSV: {str(exc).splitlines()[0]}") from None
    if len(df) == 0:
        raise CompetitionError(f"{path} has a header but no rows")
    df.columns = [str(c) for c in df.columns]
    return df


def require_columns(df: pd.DataFrame, path: Path, columns: list[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CompetitionError(
            f"{path} has no column {', '.join(repr(c) for c in missing)} (columns: {', '.join(df.columns)})"
        )


def check_unique_ids(df: pd.DataFrame, path: Path, id_column: str) -> None:
    _check_no_missing(df, path, id_column, "id")
    dup = df[id_column].astype(str).duplicated(keep=False)
    if dup.any():
        rows = df.index[dup]
        value = df[id_column].iloc[rows[0]]
        lines = ", ".join(str(line_of(r)) for r in rows[df[id_column].iloc[rows].astype(str) == str(value)][:5])
        raise CompetitionError(f"{path}: id {value!r} in column '{id_column}' appears more than once (lines {lines})")


def _data_root(cfg: Config) -> Path:
    """`data.root`, with the embedded demo written there first when the config asks for it.

    A demo is built only into its own root (the digits demo into data/digits): pointed
    anywhere else, a folder without train.csv is an error, never a demo written into it."""
    d = cfg.data
    root = Path(d.root)
    if d.demo and not (root / d.train_csv).exists():
        own = DEMOS.get(d.demo)
        if own is not None and root.resolve() == Path(own).resolve():
            build_demo(d.demo, root)
        elif root.is_dir():
            raise CompetitionError(f"{root / d.train_csv} not found (config key data.root; the {d.demo} demo is built only into {own})")
    if root.exists() and not root.is_dir():
        raise CompetitionError(f"data root {root} is a file, not a folder (config key data.root): point it at the "
                               f"competition folder that holds {d.train_csv}")
    if not root.is_dir():
        raise CompetitionError(f"data root {root} not found (config key data.root)")
    return root


def _check_no_missing(df: pd.DataFrame, path: Path, column: str, what: str) -> None:
    if df[column].isna().any():
        row = df.index[df[column].isna()][0]
        raise CompetitionError(f"{path} line {line_of(row)}: missing value in {what} column '{column}'")


def load_competition(cfg: Config) -> Competition:
    """Read and check train.csv, test.csv and sample_submission.csv under `data.root`: ids,
    target, groups and the sample's ids. The task checks its own input columns after this."""
    d = cfg.data
    root = _data_root(cfg)
    train_path, test_path, sample_path = root / d.train_csv, root / d.test_csv, root / d.sample_submission
    train = read_csv(train_path, "train CSV")
    test = read_csv(test_path, "test CSV")
    sample = read_csv(sample_path, "sample submission")

    answers = list(d.target_columns) if d.target_columns else [d.target_column]
    require_columns(train, train_path, [d.id_column, *answers] + ([d.group_column] if d.group_column else []))
    require_columns(test, test_path, [d.id_column])
    require_columns(sample, sample_path, [d.id_column])
    check_unique_ids(train, train_path, d.id_column)
    check_unique_ids(test, test_path, d.id_column)
    check_unique_ids(sample, sample_path, d.id_column)

    if d.target_format == "single" or d.target_columns:  # separated multi-labels: an empty cell is no label
        for column in answers:
            _check_no_missing(train, train_path, column, "target")
    if d.group_column:
        _check_no_missing(train, train_path, d.group_column, "group")
    target = read_target(cfg, train, train_path)

    test_ids, sample_ids = set(test[d.id_column].astype(str)), set(sample[d.id_column].astype(str))
    if test_ids != sample_ids:
        only_test = sorted(test_ids - sample_ids)
        only_sample = sorted(sample_ids - test_ids)
        parts = []
        if only_test:
            parts.append(f"{len(only_test)} test ids not in the sample (e.g. {', '.join(only_test[:3])})")
        if only_sample:
            parts.append(f"{len(only_sample)} sample ids not in the test set (e.g. {', '.join(only_sample[:3])})")
        raise CompetitionError(f"{test_path} and {sample_path} ids differ: {'; '.join(parts)}")
    return Competition(root, train, test, sample, target, train_path, test_path, sample_path)


def read_solution(cfg: Config, root: Path, target: Target) -> pd.DataFrame | None:
    """The optional answers file (`data.solution`) for a local leaderboard score."""
    if not cfg.data.solution:
        return None
    path = root / cfg.data.solution
    if not path.is_file():
        return None
    df = read_csv(path, "solution")
    require_columns(df, path, [cfg.data.id_column, *target.answer_columns])
    return df
