"""The target: what is predicted and how its answers are read. Single-label (one class per row; a
binary target orders its classes [negative, positive]) or multi-label (any set of classes per row,
from one column of separated labels or one 0/1 column per class). Anything that is not
classification is refused here, at the boundary."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from competition.core.errors import CompetitionError
from competition.core.keys import class_order, number_of, plain, text_of
from competition.core.metrics import BINARY, MULTI, SINGLE
from competition.core.schema import Config


def line_of(index: int) -> int:
    """File line of a data row (the header is line 1)."""
    return int(index) + 2


@dataclass(frozen=True)
class Target:
    """The competition's classes and how its answers are read from a frame."""

    format: str  # single | multi_label
    classes: list  # the labels as train.csv spells them (text); index = model output index
    column: str | None  # the target column (single-label, or multi-label separated in one column)
    columns: list[str] | None = None  # multi-label as one 0/1 column per class
    separator: str = " "

    @property
    def multi_label(self) -> bool:
        return self.format == "multi_label"

    @property
    def kind(self) -> str:
        """single, binary or multi_label: the formats in core.metrics."""
        return MULTI if self.multi_label else BINARY if len(self.classes) == 2 else SINGLE

    @property
    def label_columns(self) -> list[str]:
        """The answer columns that hold labels, read as text (0/1 class columns hold numbers)."""
        return [] if self.columns else [self.column]

    @property
    def answer_columns(self) -> list[str]:
        """The columns of train.csv (and of an answers file) that hold the target."""
        return list(self.columns) if self.columns else [self.column]

    def encode(self, frame: pd.DataFrame, path: Path | str = "labels") -> np.ndarray:
        """Class indices [n] (int64), or a 0/1 matrix [n, classes] (float32) for multi-label; a value
        that is not one of the classes is an error naming it."""
        if self.columns:
            return frame[self.columns].to_numpy(dtype=np.float32)
        if self.multi_label:
            index = {text_of(c): i for i, c in enumerate(self.classes)}
            out = np.zeros((len(frame), len(self.classes)), dtype=np.float32)
            for row, labels in enumerate(_label_sets(frame[self.column], self.separator)):
                for label in labels:
                    if label not in index:
                        raise CompetitionError(f"{path}: label {label!r} is not one of the classes {self.classes}")
                    out[row, index[label]] = 1.0
            return out
        index = {text_of(c): i for i, c in enumerate(self.classes)}
        out = np.empty(len(frame), dtype=np.int64)
        for i, v in enumerate(frame[self.column].tolist()):
            key = text_of(v)  # labels compare as text: '01' is not the class '1'
            if key not in index:
                raise CompetitionError(f"{path}: label {key!r} is not one of the classes {self.classes}")
            out[i] = index[key]
        return out

    def soft(self, y: np.ndarray) -> np.ndarray:
        """Encoded answers as probability rows [n, classes] (float32): one-hot class indices; a
        multi-label 0/1 matrix as it is. The form pseudo-labelled rows train beside."""
        return y.astype(np.float32) if y.ndim == 2 else np.eye(len(self.classes), dtype=np.float32)[y]

    def answer_frame(self, y: np.ndarray) -> dict[str, list]:
        """Encoded truth back to the target's own columns (oof.csv holds it as train.csv does)."""
        if self.columns:
            return {c: y[:, k].astype(int).tolist() for k, c in enumerate(self.columns)}
        if self.multi_label:
            return {self.column: [self.separator.join(str(c) for c, on in zip(self.classes, row, strict=True) if on)
                                  for row in y]}
        return {self.column: [self.classes[t] for t in y]}


def _label_sets(values: pd.Series, separator: str) -> list[list[str]]:
    """One column of separated labels → a list of labels per row (an empty or missing cell: none)."""
    out = []
    for v in values.tolist():
        text = "" if v is None or (isinstance(v, float) and np.isnan(v)) else text_of(v)
        parts = text.split(separator) if separator.strip() else text.split()
        out.append([t.strip() for t in parts if t.strip()])
    return out


def read_target(cfg: Config, train: pd.DataFrame, path: Path) -> Target:
    """The target of train.csv, checked: a classification target with at least two classes."""
    d = cfg.data
    if d.target_format == "multi_label":
        return _multi_label(cfg, train, path)
    values = train[d.target_column]
    _check_whole_numbers(values, path, d.target_column)
    classes = class_order(values.tolist())
    _check_class_count(classes, path, d.target_column, d.max_classes)
    _check_not_separated(values, path, d.target_column)
    if len(classes) < 2:
        raise CompetitionError(f"{path}: column '{d.target_column}' has one class ({classes[0]!r}); need at least 2")
    if len(classes) == 2 and d.positive_class is not None:
        positive = _class_named(d.positive_class, classes)
        classes = [c for c in classes if c != positive] + [positive]  # index 1 is the positive class
    return Target("single", classes, d.target_column)


def _class_named(value: Any, classes: list[str]) -> str:
    """The class `data.positive_class` names: by its text, or a YAML number (1) by its value when one
    class spells that number (`1.0`)."""
    text = text_of(value)
    if text in classes:
        return text
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        same = [c for c in classes if number_of(c) == float(value)]
        if len(same) == 1:
            return same[0]
    raise CompetitionError(f"config key data.positive_class: {plain(value)!r} is not one of the classes {classes}")


def _multi_label(cfg: Config, train: pd.DataFrame, path: Path) -> Target:
    d = cfg.data
    if d.target_columns:
        for column in d.target_columns:
            bad = ~train[column].isin([0, 1, True, False])
            if bad.any():
                row = train.index[bad][0]
                raise CompetitionError(f"{path} line {line_of(row)}: column '{column}' holds "
                                       f"{plain(train[column].iloc[row])!r}; a class column holds 0 or 1")
        return Target("multi_label", list(d.target_columns), None, list(d.target_columns))
    classes = class_order([t for labels in _label_sets(train[d.target_column], d.label_separator) for t in labels])
    _check_class_count(classes, path, d.target_column, d.max_classes)
    if len(classes) < 2:
        raise CompetitionError(f"{path}: column '{d.target_column}' names {len(classes)} label(s); need at least 2")
    return Target("multi_label", classes, d.target_column, None, d.label_separator)


def _check_whole_numbers(values: pd.Series, path: Path, column: str) -> None:
    """A column of numbers some of which are fractional is a regression target, not classes."""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all():
        frac = values[(numbers % 1) != 0]
        if len(frac):
            raise CompetitionError(
                f"{path} line {line_of(frac.index[0])}: column '{column}' holds {text_of(frac.iloc[0])!r}, not a "
                f"class: the kit classifies, and a target of fractional numbers is a regression"
            )


def _check_class_count(classes: list, path: Path, column: str, limit: int) -> None:
    if len(classes) > limit:
        raise CompetitionError(
            f"{path}: column '{column}' has {len(classes)} distinct values, more than data.max_classes ({limit}); "
            f"is it the target? (raise data.max_classes if it is)"
        )


def _check_not_separated(values: pd.Series, path: Path, column: str) -> None:
    """A value made of several labels that also appear alone ('cat dog' beside 'cat' and 'dog') is a
    multi-label target read as single-label; a class name with a space ('golden retriever') is not."""
    texts = values.map(text_of)
    alone = set(texts)
    for i, text in texts.items():
        parts = text.replace(",", " ").split()
        if len(parts) > 1 and all(p in alone for p in parts):
            raise CompetitionError(
                f"{path} line {line_of(i)}: column '{column}' holds {text!r}, several labels that also appear "
                f"alone: set data.target_format: multi_label (data.label_separator for the separator)"
            )
