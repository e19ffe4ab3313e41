"""The fixed k-fold split: written once to <data.root>/folds.csv (or, for a read-only data folder,
<output_dir>/folds/<its name>/folds.csv) and reused by every run."""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from competition.core.choices import KEPT_FOLDS
from competition.core.errors import CompetitionError
from competition.core.keys import number_of, text_of
from competition.core.schema import Config
from competition.data.folder import read_csv
from competition.data.targets import Target
from competition.io.disk import cannot_write
from competition.io.files import write_csv
from competition.io.runs import folds_digest

log = logging.getLogger(__name__)

FOLDS_FILE = "folds.csv"


def make_folds(
    train: pd.DataFrame,
    id_column: str,
    y: np.ndarray,
    n_splits: int,
    strategy: str,
    seed: int,
    group_column: str | None = None,
) -> pd.DataFrame:
    """Assign every train row to one validation fold; returns columns (id, fold) in train order.
    `y` is what stratification balances: a label per row, or a 0/1 matrix for multi-label."""
    # Imported here: runs that find folds.csv never need scikit-learn's second of start-up.
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(y)
    groups = train[group_column].astype(str).to_numpy() if group_column else None
    n_units = len(np.unique(groups)) if groups is not None else len(train)
    if n_splits > n_units:
        unit = "groups" if groups is not None else "rows"
        raise CompetitionError(f"config key folds.n_splits: {n_splits} folds but only {n_units} {unit} in train.csv")
    if strategy == "stratified":
        smallest = pd.Series(y).value_counts().min()
        if smallest < n_splits:
            log.warning("the rarest class has %d rows, fewer than %d folds: some folds miss it", smallest, n_splits)
        splitter = StratifiedKFold(n_splits, shuffle=True, random_state=seed)
    elif strategy == "kfold":
        splitter = KFold(n_splits, shuffle=True, random_state=seed)
    elif strategy == "group":
        splitter = GroupKFold(n_splits, shuffle=True, random_state=seed)
    elif strategy == "stratified_group":
        splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
    elif strategy == "multilabel_stratified":
        return pd.DataFrame({id_column: train[id_column].to_numpy(), "fold": iterative_stratification(y, n_splits, seed)})
    else:  # the config check names the valid strategies
        raise CompetitionError(f"config key folds.strategy: unknown strategy {strategy!r}")
    fold = np.full(len(train), -1, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the rare-class case is logged above
        for k, (_, valid) in enumerate(splitter.split(np.zeros(len(train)), y, groups)):
            fold[valid] = k
    return pd.DataFrame({id_column: train[id_column].to_numpy(), "fold": fold})


def iterative_stratification(y: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """A fold per row of the 0/1 matrix `y`, keeping every label's share of rows in every fold
    (Sechidis, Tsoumakas and Vlahavas, 2011: the rarest label's rows are placed first, each in
    the fold that still wants that label most).

    Our own rather than a package's: iterative-stratification installs a top-level `tests`
    package into site-packages, which shadows a project's own tests; scikit-multilearn brings
    networkx, python-louvain and requests along for one splitter."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=bool)
    n = len(y)
    fold = np.full(n, -1, dtype=np.int64)
    wanted_rows = np.full(n_splits, n / n_splits)
    wanted = np.tile(y.sum(0) / n_splits, (n_splits, 1))  # [fold, label]
    remaining = y.copy()
    order = rng.permutation(n)  # rows in a seeded random order: ties fall differently per seed

    def place(row: int, scores: np.ndarray) -> None:
        best = np.flatnonzero(scores == scores.max())
        if len(best) > 1:  # tie: the fold that wants the most rows, then at random
            best = best[wanted_rows[best] == wanted_rows[best].max()]
        f = int(rng.choice(best))
        fold[row] = f
        wanted_rows[f] -= 1
        wanted[f] -= y[row]
        remaining[row] = False

    while remaining.any():
        counts = remaining.sum(0)
        label = int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))
        for row in order[remaining[order, label]]:
            place(int(row), wanted[:, label])
    for row in order[fold[order] < 0]:  # rows with no label at all
        place(int(row), wanted_rows)
    return fold


def folds_path(cfg: Config) -> Path:
    """Where the competition's one folds.csv is, or goes: beside train.csv, unless the data folder
    takes no new file (a Kaggle notebook's /kaggle/input is mounted read-only) and holds none; then
    under output_dir, one per data folder's name, so every run and blend of it still shares one split.
    An existing file wins, beside train.csv first."""
    root = Path(cfg.data.root)
    beside = root / FOLDS_FILE
    kept = Path(cfg.output_dir) / KEPT_FOLDS / (Path(os.path.abspath(root)).name or "data") / FOLDS_FILE
    if beside.is_file() or (not kept.is_file() and cannot_write(root) is None):
        return beside
    return kept


def check_folds(folds: pd.DataFrame, train: pd.DataFrame, cfg: Config, path: Path) -> None:
    """folds.csv must cover exactly train.csv's ids with the configured number of folds."""
    regen = "delete it or run `python -m competition.folds --force` to regenerate (retrain every fold after)"
    idc = cfg.data.id_column
    if idc not in folds.columns or "fold" not in folds.columns:
        raise CompetitionError(f"{path} needs columns '{idc}' and 'fold'; {regen}")
    fold_ids, train_ids = set(folds[idc].map(text_of)), set(train[idc].map(text_of))
    if fold_ids != train_ids or len(folds) != len(train):
        missing, extra = train_ids - fold_ids, fold_ids - train_ids
        raise CompetitionError(
            f"{path} does not match {cfg.data.train_csv} ({len(missing)} train ids missing from it, "
            f"{len(extra)} ids not in train){_as_numbers(missing, extra)}; {regen}"
        )
    n = folds["fold"].nunique()
    if n != cfg.folds.n_splits or set(folds["fold"]) != set(range(n)):
        raise CompetitionError(f"{path} has folds {sorted(set(folds['fold']))}, config folds.n_splits is {cfg.folds.n_splits}; {regen}")
    if cfg.data.group_column:
        check_groups_whole(folds, train, cfg, path)


def check_groups_whole(folds: pd.DataFrame, train: pd.DataFrame, cfg: Config, path: Path) -> None:
    """Every group of data.group_column in one fold. Checked on the split itself, whoever wrote it
    (a stratified folds.csv, or one downloaded), since a row validated beside rows of its own group
    that the model trained on scores too well, without a word."""
    idc, column = cfg.data.id_column, cfg.data.group_column
    fold_of = dict(zip(folds[idc].astype(str), folds["fold"].astype(int), strict=True))
    frame = pd.DataFrame({"group": train[column].astype(str).to_numpy(),
                          "fold": [fold_of[i] for i in train[idc].astype(str)]})
    spans = frame.groupby("group", sort=True)["fold"].unique()
    split = spans[spans.map(len) > 1]
    if len(split):
        group, where = split.index[0], sorted(int(f) for f in split.iloc[0])
        more = f" (and {len(split) - 1} more of its {len(spans)} groups)" if len(split) > 1 else ""
        raise CompetitionError(
            f"{path} puts {column} {group!r} in folds {', '.join(map(str, where))}{more}: a fold would validate on "
            f"groups it trains on; regenerate it with `python -m competition.folds --force` and this command's "
            f"--config and --set (then retrain every fold)")


def _as_numbers(missing: set[str], extra: set[str]) -> str:
    """A hint when folds.csv holds train ids as numbers (`1000` for `01000`: kits before ids were
    read as text wrote them so)."""
    for text in sorted(missing):
        number = number_of(text)
        if number is not None and number.is_integer() and str(int(number)) in extra:
            return f"; train id {text!r} is {str(int(number))!r} there: written as a number by an older kit"
    return ""


def stratify_by(target: Target, train: pd.DataFrame) -> np.ndarray:
    """What the split balances: each row's label as text (single-label), or the 0/1 class matrix."""
    return target.encode(train) if target.multi_label else train[target.column].astype(str).to_numpy()


def load_or_create_folds(cfg: Config, train: pd.DataFrame, target: Target, force: bool = False) -> pd.DataFrame:
    """Return train with a `fold` column, writing folds.csv on first use."""
    path = folds_path(cfg)
    idc = cfg.data.id_column
    if path.exists() and not force:
        folds = read_csv(path, "folds file", [idc])
        check_folds(folds, train, cfg, path)
    else:
        folds = make_folds(train, idc, stratify_by(target, train), cfg.folds.n_splits, cfg.folds.strategy, cfg.seed,
                           cfg.data.group_column)
        write_csv(path, folds)
        log.info("wrote %s (%d folds, strategy %s)", path, cfg.folds.n_splits, cfg.folds.strategy)
    fold_of = dict(zip(folds[idc].map(text_of), folds["fold"].astype(int), strict=True))
    out = train.copy()
    out["fold"] = [fold_of[i] for i in train[idc].map(text_of)]
    return out


def read_folds(cfg: Config, train: pd.DataFrame) -> pd.DataFrame:
    """train with the `fold` column of the existing folds.csv (checked); never writes one."""
    path = folds_path(cfg)
    if not path.is_file():
        raise CompetitionError(f"{path} not found: the folds the models were trained on are gone; "
                               f"`python -m competition.train` writes it")
    folds = read_csv(path, "folds file", [cfg.data.id_column])
    check_folds(folds, train, cfg, path)
    fold_of = dict(zip(folds[cfg.data.id_column].map(text_of), folds["fold"].astype(int), strict=True))
    return train.assign(fold=[fold_of[i] for i in train[cfg.data.id_column].map(text_of)])


def split_digest(cfg: Config) -> str | None:
    """The hash (io.runs.folds_digest) of the config's folds.csv, or None before one is written."""
    path = folds_path(cfg)
    return folds_digest(read_csv(path, "folds file", [cfg.data.id_column]), cfg.data.id_column) if path.is_file() else None


def folds_trained_on(cfg: Config, train: pd.DataFrame, models: list[tuple[str, str | None]], why: str) -> pd.DataFrame:
    """train with its folds.csv folds (read_folds), refused in one line when a model of `models`
    ((what it is, the folds hash it was trained on)) was trained on another split: `why` it matters."""
    df = read_folds(cfg, train)
    split = folds_digest(df, cfg.data.id_column)
    for name, trained in models:
        if trained not in (None, split):  # None: a checkpoint from before folds were recorded
            raise CompetitionError(f"{name} was trained on other folds ({trained}) than {folds_path(cfg)} ({split}): "
                                   f"{why}; restore that folds.csv or retrain the run")
    return df


def parse_folds(spec: str, n_splits: int, option: str = "--folds") -> list[int]:
    """`all`, one fold number, or a comma list like `0,2`; each in range."""
    if spec == "all":
        return list(range(n_splits))
    try:
        folds = sorted({int(s) for s in spec.split(",") if s.strip()})
    except ValueError:
        raise CompetitionError(f"{option} {spec}: expected 'all' or fold numbers like 0 or 0,2") from None
    bad = [f for f in folds if not 0 <= f < n_splits]
    if bad or not folds:
        raise CompetitionError(f"{option} {spec} is out of range: folds are 0..{n_splits - 1} (folds.n_splits = {n_splits})")
    return folds
