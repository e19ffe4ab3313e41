"""Pseudo-labels: test rows with the probabilities a submission gave them, to join every fold's
training rows as soft targets (never its validation rows, its OOF or its CV)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from competition.core.errors import CompetitionError
from competition.core.schema import Config
from competition.data.folder import Competition, read_csv, require_columns, text_columns
from competition.data.targets import Target, line_of


@dataclass
class PseudoLabels:
    """Rows of test.csv (positions in it) and their soft targets [rows, classes]."""

    rows: np.ndarray
    targets: np.ndarray


def _soft_targets(frame: pd.DataFrame, path: Path, target: Target) -> np.ndarray:
    """A submission-shaped file's answers as probability rows: per-class columns, a binary
    target's positive-class probability, labels (one-hot) or separated multi-labels (0/1)."""
    names = [str(c) for c in target.classes]
    if set(names) <= set(frame.columns):
        probs = frame[names].to_numpy(dtype=np.float64)
    elif target.column in frame.columns:
        values = frame[target.column]
        numbers = pd.to_numeric(values, errors="coerce")  # the column is read as text: labels may be '01'
        if target.kind == "binary" and not values.isin(names).all() and numbers.notna().all():
            probs = np.stack([1 - numbers.to_numpy(dtype=np.float64), numbers.to_numpy(dtype=np.float64)], 1)
        elif target.multi_label:
            probs = target.encode(frame, path).astype(np.float64)
        else:
            probs = np.eye(len(names))[target.encode(frame, path)]
    else:
        raise CompetitionError(f"{path}: expected a column per class ({', '.join(names)}) or the target column "
                               f"'{target.column}' (columns: {', '.join(frame.columns)})")
    bad = ~((probs >= 0) & (probs <= 1)).all(1) | np.isnan(probs).any(1)
    if bad.any():
        raise CompetitionError(f"{path} line {line_of(int(np.flatnonzero(bad)[0]))}: probabilities must lie in [0, 1]")
    if not target.multi_label:
        sums = probs.sum(1, keepdims=True)
        if (sums <= 0).any():
            raise CompetitionError(f"{path} line {line_of(int(np.flatnonzero(sums[:, 0] <= 0)[0]))}: all class probabilities are 0")
        probs = probs / sums
    return probs.astype(np.float32)


def read_pseudo_labels(cfg: Config, comp: Competition) -> PseudoLabels | None:
    """data.pseudo_labels, checked: ids of test.csv only, no train.csv row, each once; with
    data.pseudo_threshold, only the rows the probabilities are sure of (every class, for
    multi-label, at least that far from the middle)."""
    d = cfg.data
    if not d.pseudo_labels:
        return None
    path = Path(d.pseudo_labels)
    frame = read_csv(path, "pseudo-label file (data.pseudo_labels)", text_columns(cfg))
    require_columns(frame, path, [d.id_column])
    ids = frame[d.id_column]
    in_train = ids.isin(set(comp.train[d.id_column]))
    if in_train.any():
        raise CompetitionError(f"{path} line {line_of(int(np.flatnonzero(in_train)[0]))}: id {ids[in_train].iloc[0]!r} "
                               f"is a train.csv row; pseudo-labels are for test rows")
    test_row = {i: r for r, i in enumerate(comp.test[d.id_column])}
    unknown = ~ids.isin(test_row.keys())
    if unknown.any():
        raise CompetitionError(f"{path} line {line_of(int(np.flatnonzero(unknown)[0]))}: id {ids[unknown].iloc[0]!r} "
                               f"is not in test.csv")
    if ids.duplicated().any():
        raise CompetitionError(f"{path}: id {ids[ids.duplicated()].iloc[0]!r} appears more than once")
    if d.sample_target_column in frame.columns and comp.target.column not in frame.columns:
        frame = frame.rename(columns={d.sample_target_column: comp.target.column})  # a submission's own name
    probs = _soft_targets(frame, path, comp.target)
    keep = np.ones(len(frame), dtype=bool)
    if d.pseudo_threshold is not None:
        sure = np.maximum(probs, 1 - probs).min(1) if comp.target.multi_label else probs.max(1)
        keep = sure >= d.pseudo_threshold
    return PseudoLabels(np.array([test_row[i] for i in ids[keep]], dtype=np.int64), probs[keep])
