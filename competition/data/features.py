"""Tables: a user's feature hook, then imputation, scaling and one-hot encoding, all fit on a
fold's training rows only, with state kept as plain data inside the fold's checkpoint. For the
gradient-boosting libraries (models/gbdt.py) the same hook and column rules give a native matrix
instead: numbers as they are, missing values left missing, and one integer-coded column per
categorical column, which the library splits on as a category.

A feature hook is a class named in the config (`data.features: path/to/file.py:ClassName`)
with two methods:

    fit(self, rows: DataFrame) -> dict                 # the fold's training rows, target included
    transform(self, rows: DataFrame, state) -> DataFrame  # any rows (test rows have no target)

`fit` returns plain data (dicts, lists, str, int, float, bool, None); `transform` returns the
feature columns for those rows, one row each, in order. Competition knowledge (Titanic's
titles and tickets) lives in such a hook beside its config, never in the kit.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from competition.core.errors import CompetitionError
from competition.core.keys import number_of
from competition.core.schema import Config
from competition.io.hook_file import check_hook_spec, hook_source

log = logging.getLogger(__name__)

MAX_CATEGORIES = 30  # a text column with more distinct values is treated as free text and dropped
PLAIN_TYPES = (str, int, float, bool, type(None))


def feature_columns(cfg: Config, train: pd.DataFrame) -> list[str]:
    """A table's raw inputs: `data.feature_columns`, else every column but id, target and group."""
    d = cfg.data
    if d.feature_columns is not None:
        return list(d.feature_columns)
    skip = {d.id_column, d.target_column, d.group_column}
    return [c for c in train.columns if c not in skip]


def typed_as_read(rows: pd.DataFrame) -> pd.DataFrame:
    """A copy of the rows with each text column that holds only numbers typed as pandas' read_csv
    types it. The kit reads ids and labels as text (`01000`, class `01`); a feature hook and the
    feature columns get them as numbers, as pandas reads them, so a hook that averages a 0/1 target
    or keeps an id as a feature works as before (the kit's own columns stay text)."""
    out = rows.copy()
    for column in out.columns:
        series = out[column]
        if not pd.api.types.is_string_dtype(series.dtype) or series.isna().all():
            continue
        if number_of(str(series.dropna().iloc[0])) is None:  # a column of words: no need to parse it all
            continue
        numbers = pd.to_numeric(series, errors="coerce")
        if (numbers.notna() | series.isna()).all():
            out[column] = numbers
    return out


def _where(exc: BaseException, path: Path) -> str:
    """`file.py:LINE` of the deepest frame inside the hook's file, for the one-line error."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return f" ({path.name}:{frames[-1].lineno})" if frames else ""


def _plain_problem(value: Any, at: str) -> str | None:
    """Where `value` holds something other than plain data, described; None when it is plain."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, PLAIN_TYPES):
                return f"{at} has a key of type {type(k).__name__}"
            problem = _plain_problem(v, f"{at}[{k!r}]")
            if problem:
                return problem
        return None
    if isinstance(value, list):
        for i, v in enumerate(value):
            problem = _plain_problem(v, f"{at}[{i}]")
            if problem:
                return problem
        return None
    if isinstance(value, PLAIN_TYPES):
        return None
    return f"{at} is a {type(value).__module__}.{type(value).__name__}"


class FeatureHook:
    """A user's feature class, loaded from the local config's `data.features` (never from a
    checkpoint), with its calls checked: exceptions and wrong results become one-line errors."""

    def __init__(self, spec: str, source_dir: str | Path = ""):
        self.spec = spec
        _, name = check_hook_spec(spec)
        # The bytes that run are the bytes hashed: `sha256` goes into the fit's state and the run's
        # identity (io.runs), and an edited file is a new module, never the one imported before.
        self.path, source, self.sha256 = hook_source(spec, source_dir)
        module_name = "competition_features_" + hashlib.sha1(f"{self.path}:{self.sha256}".encode()).hexdigest()[:12]
        try:
            module = sys.modules.get(module_name)
            if module is None:
                module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(module_name, self.path))
                exec(compile(source, str(self.path), "exec"), module.__dict__)
                sys.modules[module_name] = module
            cls = getattr(module, name)
            self.impl = cls()
        except AttributeError:
            raise CompetitionError(f"feature hook {spec}: {self.path.name} defines no {name}") from None
        except Exception as exc:
            raise CompetitionError(f"feature hook {spec} failed to load{_where(exc, self.path)}: {type(exc).__name__}: {exc}") from None
        for method in ("fit", "transform"):
            if not callable(getattr(self.impl, method, None)):
                raise CompetitionError(f"feature hook {spec}: {name} has no {method}() method")

    def fit(self, rows: pd.DataFrame) -> Any:
        try:
            state = self.impl.fit(typed_as_read(rows))
        except Exception as exc:
            raise CompetitionError(f"feature hook {self.spec}: fit failed{_where(exc, self.path)}: {type(exc).__name__}: {exc}") from None
        problem = _plain_problem(state, "state")
        if problem:
            raise CompetitionError(
                f"feature hook {self.spec}: fit must return plain data (dict, list, str, int, float, bool, None); "
                f"{problem}"
            )
        return state

    def transform(self, rows: pd.DataFrame, state: Any) -> pd.DataFrame:
        try:
            out = self.impl.transform(typed_as_read(rows), state)
        except Exception as exc:
            raise CompetitionError(f"feature hook {self.spec}: transform failed{_where(exc, self.path)}: {type(exc).__name__}: {exc}") from None
        if not isinstance(out, pd.DataFrame) or len(out) != len(rows):
            got = f"a DataFrame of {len(out)} rows" if isinstance(out, pd.DataFrame) else f"a {type(out).__name__}"
            raise CompetitionError(f"feature hook {self.spec}: transform must return a DataFrame of {len(rows)} rows, got {got}")
        out = out.reset_index(drop=True)
        out.columns = [str(c) for c in out.columns]
        return out


def load_feature_hook(cfg: Config) -> FeatureHook | None:
    """The hook the local config names, or None."""
    return FeatureHook(cfg.data.features, cfg.source_dir) if cfg.data.features else None


class TabularPreprocessor:
    """The feature hook (when there is one), then impute, scale and one-hot.

    `fit` sees only the rows it is given (a fold's training part), so validation and test rows
    never leak into medians, scales, category lists or anything the hook fits. `state` is plain
    Python data: it lives inside weights_only checkpoints and rebuilds the transform.
    """

    def __init__(self, state: dict, hook: FeatureHook | None = None):
        self.state = state
        self.hook = hook
        fitted_with = (state.get("hook") or {}).get("spec")
        if fitted_with != (hook.spec if hook else None):
            raise CompetitionError(
                f"these features were fit with feature hook {fitted_with!r}, the config names "
                f"{hook.spec if hook else None!r} (config key data.features)"
            )

    @property
    def feature_names(self) -> list[str]:
        return list(self.state["feature_names"])

    @property
    def n_features(self) -> int:
        return len(self.state["feature_names"])

    @property
    def categorical_indices(self) -> list[int]:
        """The columns of a native matrix that hold category codes ([] for one-hot)."""
        if not self.state.get("native"):
            return []
        return list(range(len(self.state["numeric"]), self.n_features))

    @classmethod
    def fit(cls, df: pd.DataFrame, columns: list[str], hook: FeatureHook | None = None,
            native: bool = False) -> TabularPreprocessor:
        """Fit on `df` (a fold's training rows):
        1. the hook's fit, then its columns (else `columns`),
        2. numeric columns: median imputation, a missing-value indicator, standardisation,
        3. text columns: one-hot over the categories seen (more than MAX_CATEGORIES: left out).
        `native`: steps 2 and 3 leave numbers and missing values as they are and code each text
        column's categories 0, 1, … in one column (`transform` gives NaN for missing or unseen)."""
        state: dict = {"columns": list(columns), "numeric": [], "categorical": [],
                       "hook": {"spec": hook.spec, "sha256": hook.sha256, "state": hook.fit(df)} if hook else None}
        if native:
            state["native"] = True
        frame = cls._inputs(df, state, hook)
        # Names follow transform()'s layout: every numeric block, then every one-hot block.
        names: list[str] = []
        cat_names: list[str] = []
        for col in frame.columns:
            series = frame[col]
            if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
                values = series.astype(float)
                median = float(values.median()) if values.notna().any() else 0.0
                filled = values.fillna(median)
                std = float(filled.std(ddof=0)) or 1.0
                indicator = bool(values.isna().any())
                state["numeric"].append(
                    {"column": col, "median": median, "mean": float(filled.mean()), "std": std, "indicator": indicator}
                )
                names.append(col)
                if indicator:
                    names.append(f"{col}_missing")
            else:
                cats = series.astype(str).where(series.notna(), "<missing>")
                distinct = cats.value_counts()
                if len(distinct) > MAX_CATEGORIES:
                    log.info("feature column %s has %d distinct values: treated as free text and left out", col, len(distinct))
                    continue
                if native:  # missing stays missing: the library's own rule for it applies
                    distinct = series.dropna().astype(str).value_counts()
                categories = sorted(distinct.index.tolist())
                state["categorical"].append({"column": col, "categories": categories})
                cat_names.extend([col] if native else [f"{col}={c}" for c in categories])
        if native:
            names = [spec["column"] for spec in state["numeric"]]
        state["feature_names"] = names + cat_names
        return cls(state, hook)

    @staticmethod
    def _inputs(df: pd.DataFrame, state: dict, hook: FeatureHook | None) -> pd.DataFrame:
        if hook is None:
            return typed_as_read(df[state["columns"]].reset_index(drop=True))
        return hook.transform(df, state["hook"]["state"])

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """Rows → float32 matrix [n, n_features] with the fitted statistics."""
        frame = self._inputs(df, self.state, self.hook)
        if self.state.get("native"):
            return self._native(frame)
        blocks: list[np.ndarray] = []
        for spec in self.state["numeric"]:
            if spec["column"] not in frame:
                raise CompetitionError(f"feature column {spec['column']!r} is missing from the rows to transform")
            values = pd.to_numeric(frame[spec["column"]], errors="coerce").astype(float)
            missing = values.isna().to_numpy()
            filled = values.fillna(spec["median"]).to_numpy()
            blocks.append(((filled - spec["mean"]) / spec["std"])[:, None])
            if spec["indicator"]:
                blocks.append(missing[:, None].astype(float))
        for spec in self.state["categorical"]:
            if spec["column"] not in frame:
                raise CompetitionError(f"feature column {spec['column']!r} is missing from the rows to transform")
            series = frame[spec["column"]]
            cats = series.astype(str).where(series.notna(), "<missing>").to_numpy()
            blocks.append((cats[:, None] == np.asarray(spec["categories"], dtype=object)[None, :]).astype(float))
        if not blocks:
            return np.zeros((len(df), 0), dtype=np.float32)
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def _native(self, frame: pd.DataFrame) -> np.ndarray:
        """The native matrix: numbers as float (NaN where missing), then each categorical column as
        its category's code (NaN where missing or unseen in the fitted rows)."""
        columns = []
        for spec in [*self.state["numeric"], *self.state["categorical"]]:
            if spec["column"] not in frame:
                raise CompetitionError(f"feature column {spec['column']!r} is missing from the rows to transform")
        for spec in self.state["numeric"]:
            columns.append(pd.to_numeric(frame[spec["column"]], errors="coerce").astype(float).to_numpy())
        for spec in self.state["categorical"]:
            series = frame[spec["column"]]
            codes = {c: float(i) for i, c in enumerate(spec["categories"])}
            columns.append(series.astype(str).map(codes).where(series.notna()).astype(float).to_numpy())
        if not columns:
            return np.zeros((len(frame), 0), dtype=np.float32)
        return np.column_stack(columns).astype(np.float32)


def check_rows(cfg: Config, comp, native: bool = False, per_class: int = 20) -> tuple[np.ndarray, np.ndarray, TabularPreprocessor]:
    """(features, class indices) of a few real rows of each class, through a preprocessor fit on them:
    what a model fit once per fold is test-fit on, so a bad model.params value is named before a run writes."""
    y = comp.target.encode(comp.train)
    rows = np.concatenate([np.flatnonzero(y == k)[:per_class] for k in range(len(comp.classes))])
    sample = comp.train.iloc[rows]
    pre = TabularPreprocessor.fit(sample, feature_columns(cfg, comp.train), load_feature_hook(cfg), native=native)
    return pre.transform(sample), y[rows], pre
