"""Reading a Kaggle-layout competition folder and checking it at the boundary."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# pandas' own list of the cells read_csv reads as missing by default ('', 'NA', 'None', 'null', …),
# kept for every column but the text ones (its public default cannot be set per column).
from pandas._libs.parsers import STR_NA_VALUES

from competition.core.choices import TASK_KINDS
from competition.core.errors import CompetitionError
from competition.core.keys import text_of
from competition.core.schema import Config
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
    rows = pd.Index(comp.train[id_column].map(text_of)).get_indexer(ids.map(text_of))
    if (rows < 0).any():
        missing = text_of(ids.iloc[int(np.flatnonzero(rows < 0)[0])])
        raise CompetitionError(f"{where}: id {missing!r} is not in {comp.train_path}: train.csv changed since "
                               f"training; retrain the fold")
    return rows


def text_columns(cfg: Config) -> list[str]:
    """The columns of the competition's CSVs, and of every CSV the kit writes, that hold keys: the id,
    the target's labels (unless it is 0/1 columns), the group and the image path. Read as text."""
    d = cfg.data
    columns = [d.id_column, d.group_column, d.image_column if TASK_KINDS[cfg.task].image_files else None,
               None if d.target_columns else d.target_column]
    return [c for c in columns if c]


def read_csv(path: Path, what: str = "", text: Iterable[str] = ()) -> pd.DataFrame:
    """Read a CSV, turning a missing, empty or malformed file into one clear line.

    The `text` columns (those of them the file has) keep the text they hold, `01000` and `07`
    included, and only an empty cell is missing there (`NA` is Namibia's id, `None` a class);
    every other column is read as pandas reads it (numbers as numbers, `NA` as missing)."""
    if path.is_dir():
        raise CompetitionError(f"{what or 'file'} {path} is a folder, not a CSV file")
    if not path.is_file():
        raise CompetitionError(f"{what or 'file'} {path} not found")
    try:
        df = pd.read_csv(path, **_text_options(path, set(text)))
    except pd.errors.EmptyDataError:
        raise CompetitionError(f"{path} is empty: expected a header line and rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise CompetitionError(f"{path} is not a readable CSV: {str(exc).splitlines()[0]}") from None
    if len(df) == 0:
        raise CompetitionError(f"{path} has a header but no rows")
    df.columns = [str(c) for c in df.columns]
    return df


def _text_options(path: Path, text: set[str]) -> dict:
    """read_csv's options that read the file's `text` columns as text, with only '' missing there."""
    header = pd.read_csv(path, nrows=0).columns if text else []
    columns = [c for c in header if str(c) in text]
    if not columns:
        return {}
    return {"dtype": dict.fromkeys(columns, str), "keep_default_na": False,
            "na_values": {c: [""] if c in columns else list(STR_NA_VALUES) for c in header}}


def require_columns(df: pd.DataFrame, path: Path, columns: list[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CompetitionError(
            f"{path} has no column {', '.join(repr(c) for c in missing)} (columns: {', '.join(df.columns)})"
        )


def check_unique_ids(df: pd.DataFrame, path: Path, id_column: str) -> None:
    _check_no_missing(df, path, id_column, "id")
    ids = df[id_column].map(text_of)
    dup = ids.duplicated(keep=False)
    if dup.any():
        rows = df.index[dup]
        value = ids.iloc[rows[0]]
        lines = ", ".join(str(line_of(r)) for r in rows[ids.iloc[rows] == value][:5])
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
    text = text_columns(cfg)
    train = read_csv(train_path, "train CSV", text)
    test = read_csv(test_path, "test CSV", text)
    sample = read_csv(sample_path, "sample submission", text)

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

    test_ids, sample_ids = set(test[d.id_column]), set(sample[d.id_column])
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
    df = read_csv(path, "solution", text_columns(cfg))
    require_columns(df, path, [cfg.data.id_column, *target.answer_columns])
    return df
