"""Probabilities → a submission shaped exactly like sample_submission.csv, checked before writing."""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from competition.core.errors import CompetitionError
from competition.core.metrics import Metric
from competition.data.competition import encode_labels


def submission_kind(sample: pd.DataFrame, id_column: str, target_column: str, classes: Sequence) -> str:
    """`labels` (id + target column) or `probabilities` (id + one column per class)."""
    rest = [c for c in sample.columns if c != id_column]
    if rest == [target_column]:
        return "labels"
    if sorted(rest) == sorted(str(c) for c in classes):
        return "probabilities"
    raise CompetitionError(
        f"sample submission columns {list(sample.columns)}: expected '{id_column}' plus '{target_column}', "
        f"or '{id_column}' plus one column per class ({', '.join(str(c) for c in classes)})"
    )


def make_submission(
    sample: pd.DataFrame,
    test_ids: Sequence,
    probs: np.ndarray,
    classes: Sequence,
    id_column: str,
    target_column: str,
) -> pd.DataFrame:
    """Rows in the sample's id order, its columns, original label values (or class probabilities)."""
    if len(test_ids) != len(probs):
        raise CompetitionError(f"{len(test_ids)} test ids but {len(probs)} predictions")
    row_of = {str(i): r for r, i in enumerate(test_ids)}
    keys = sample[id_column].astype(str).tolist()
    missing = [k for k in keys if k not in row_of]
    if missing:
        raise CompetitionError(f"sample submission has {len(missing)} ids without a prediction (e.g. {missing[0]})")
    order = np.array([row_of[k] for k in keys], dtype=np.int64)
    sub = pd.DataFrame({id_column: sample[id_column].to_numpy()})
    if submission_kind(sample, id_column, target_column, classes) == "labels":
        labels = np.asarray(classes, dtype=object)[probs[order].argmax(1)]
        sub[target_column] = pd.Series(labels.tolist()).to_numpy()
    else:
        by_name = {str(c): k for k, c in enumerate(classes)}
        for col in sample.columns[1:]:
            sub[col] = probs[order, by_name[str(col)]]
        sub = sub[list(sample.columns)]
    return sub


def validate_submission(sub: pd.DataFrame, sample: pd.DataFrame, id_column: str, sample_name: str = "sample_submission.csv") -> None:
    """Same columns, row count, ids and id order as the sample; no missing values."""
    if list(sub.columns) != list(sample.columns):
        raise CompetitionError(f"{sample_name} has columns {list(sample.columns)}, the submission {list(sub.columns)}")
    if len(sub) != len(sample):
        raise CompetitionError(f"{sample_name} has {len(sample)} rows, the submission {len(sub)}")
    got, want = sub[id_column].astype(str).to_numpy(), sample[id_column].astype(str).to_numpy()
    if set(got) != set(want):
        raise CompetitionError(f"{sample_name} ids and the submission's ids differ ({len(set(want) - set(got))} missing)")
    if (got != want).any():
        row = int(np.flatnonzero(got != want)[0])
        raise CompetitionError(f"submission row {row + 1} has id {got[row]}, {sample_name} has {want[row]} there")
    if sub.isna().any().any():
        col = sub.columns[sub.isna().any()][0]
        raise CompetitionError(f"submission column '{col}' has missing values")


def submission_path(directory: str | Path, name: str, cv: float | None, now: dt.datetime | None = None) -> Path:
    """submissions/<name>-<UTC time>-cv<score>.csv"""
    now = now or dt.datetime.now(dt.timezone.utc)
    score = f"-cv{cv:.5f}" if cv is not None and np.isfinite(cv) else ""
    return Path(directory) / f"{name}-{now:%Y%m%d-%H%M%S}{score}.csv"


def leaderboard_score(
    sub: pd.DataFrame,
    probs_in_sample_order: np.ndarray,
    solution: pd.DataFrame,
    id_column: str,
    target_column: str,
    classes: Sequence,
    metric: Metric,
) -> float:
    """The competition metric of the submission against known answers (a local leaderboard)."""
    answer = dict(zip(solution[id_column].astype(str), solution[target_column], strict=True))
    keys = sub[id_column].astype(str)
    keep = keys.isin(answer.keys()).to_numpy()
    y = encode_labels(pd.Series([answer[k] for k in keys[keep]]), list(classes), "solution")
    return metric(y, probs_in_sample_order[keep])
