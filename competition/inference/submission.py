"""Probabilities → a submission shaped exactly like sample_submission.csv, checked before writing,
and the local leaderboard that scores the file as written.

The layouts, read from the sample's columns, the target and `predict.output`:

| layout               | sample columns          | holds                                           |
|----------------------|-------------------------|-------------------------------------------------|
| labels               | id, <target>            | the predicted class (original values)           |
| positive_probability | id, <target>            | a binary target's positive-class probability    |
| separated_labels     | id, <target>            | multi-label: the predicted labels, separated    |
| class_probabilities  | id, <class>, <class>, … | one probability per class                       |
| class_labels         | id, <class>, <class>, … | one 0/1 decision per class                      |

Each layout renders probabilities into the matrix [rows, classes] the file holds (one-hot
labels, 0/1 decisions or probabilities) and reads it back from a written file, so that the CV as
submitted and the local leaderboard score exactly what the file says.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from competition.core.errors import CompetitionError
from competition.core.keys import text_of
from competition.core.metrics import PROBABILITY_METRICS, Metric, decide
from competition.core.schema import Config
from competition.data.folder import Competition, read_csv, read_solution
from competition.data.targets import Target
from competition.io.disk import check_writable


@dataclass(frozen=True)
class Layout:
    kind: str  # labels | positive_probability | separated_labels | class_probabilities | class_labels
    id_column: str
    columns: list  # the sample's columns after the id, in its order

    @property
    def holds_probabilities(self) -> bool:
        return self.kind in ("positive_probability", "class_probabilities")

    @property
    def text_columns(self) -> list[str]:
        """The file's columns that hold text: the id and, in a labels layout, the labels."""
        return [self.id_column, *(self.columns if self.kind in ("labels", "separated_labels") else [])]


def submission_layout(sample: pd.DataFrame, id_column: str, target: Target, metric: str, output: str,
                      column: str | None = None) -> Layout:
    """What the submission holds: from the sample's columns, the target, the metric and predict.output.
    `column` (data.sample_target_column) names the sample's target column where it is not the
    target's own name in train.csv; the file then uses the sample's name."""
    rest = [c for c in sample.columns if c != id_column]
    names = [text_of(c) for c in target.classes]
    if column is not None and column not in rest:
        raise CompetitionError(f"config key data.sample_target_column: the sample submission has no column {column!r} "
                               f"(columns: {', '.join(map(str, sample.columns))})")
    column = column or target.column
    if column is not None and rest == [column]:
        return _one_column_layout(id_column, column, target, metric, output)
    if sorted(rest) == sorted(names):
        return Layout("class_labels" if output == "labels" else "class_probabilities", id_column, rest)
    expected = f"'{id_column}' plus '{column}', or " if column is not None else ""
    hint = (f"; if '{rest[0]}' holds the target, set data.sample_target_column: {rest[0]}"
            if len(rest) == 1 and target.column is not None else "")
    missing, extra = [n for n in names if n not in rest], [str(c) for c in rest if str(c) not in names]
    if len(rest) > 1 and len(missing) < len(names):  # a column per class, nearly
        hint = "".join([f"; no column for class {', '.join(map(repr, missing[:5]))}" if missing else "",
                        f"; column {', '.join(map(repr, extra[:5]))} is not a class" if extra else ""])
    raise CompetitionError(
        f"sample submission columns {list(sample.columns)}: expected {expected}'{id_column}' plus one column per "
        f"class ({', '.join(names)}){hint}"
    )


def _one_column_layout(id_column: str, column: str, target: Target, metric: str, output: str) -> Layout:
    """A sample of the id and one target column: labels, separated labels or p(positive)."""
    if target.multi_label:
        if output == "probabilities":
            raise CompetitionError(f"predict.output probabilities: sample column '{column}' holds one value "
                                   f"per row, not a probability per class of a multi_label target")
        return Layout("separated_labels", id_column, [column])
    wants_probs = output == "probabilities" or (output == "auto" and metric in PROBABILITY_METRICS)
    if wants_probs and target.kind == "binary":
        return Layout("positive_probability", id_column, [column])
    if output == "probabilities":
        raise CompetitionError(f"predict.output probabilities: sample column '{column}' holds one value per "
                               f"row, and the target has {len(target.classes)} classes (one probability column per "
                               f"class needed)")
    return Layout("labels", id_column, [column])


def layout_of(cfg: Config, comp: Competition, metric: str | None = None) -> Layout:
    """The config's layout for the competition's sample (checked: train refuses a sample it could
    not write before the first fold trains, and predict and blend write it)."""
    return submission_layout(comp.sample, cfg.data.id_column, comp.target, metric or cfg.train.metric,
                             cfg.predict.output, cfg.data.sample_target_column)


def render(layout: Layout, probs: np.ndarray, target: Target, thresholds: Sequence[float] | None) -> np.ndarray:
    """The matrix [rows, classes] the file will hold for these probabilities."""
    if layout.kind == "positive_probability":  # the file holds p(positive); the rest is 1 - p
        p = np.asarray(probs, dtype=np.float64)[:, 1]
        return np.stack([1 - p, p], axis=1)
    if layout.holds_probabilities:
        return np.asarray(probs, dtype=np.float64)
    decisions = decide(probs, target.multi_label, thresholds)
    if target.multi_label:
        return decisions.astype(np.float64)
    return np.eye(len(target.classes))[decisions]


def make_submission(sample: pd.DataFrame, test_ids: Sequence, matrix: np.ndarray, layout: Layout,
                    target: Target) -> pd.DataFrame:
    """Rows in the sample's id order and its columns, holding `matrix` (test.csv order) as the layout says."""
    if len(test_ids) != len(matrix):
        raise CompetitionError(f"{len(test_ids)} test ids but {len(matrix)} predictions")
    row_of = {text_of(i): r for r, i in enumerate(test_ids)}
    keys = sample[layout.id_column].map(text_of).tolist()
    missing = [k for k in keys if k not in row_of]
    if missing:
        raise CompetitionError(f"sample submission has {len(missing)} ids without a prediction (e.g. {missing[0]})")
    m = matrix[np.array([row_of[k] for k in keys], dtype=np.int64)]
    sub = pd.DataFrame({layout.id_column: sample[layout.id_column].to_numpy()})
    if layout.kind in ("class_probabilities", "class_labels"):
        by_name = {text_of(c): k for k, c in enumerate(target.classes)}
        for col in layout.columns:
            values = m[:, by_name[text_of(col)]]
            sub[col] = values if layout.kind == "class_probabilities" else values.astype(np.int64)
        return sub[list(sample.columns)]
    column = layout.columns[0]
    if layout.kind == "positive_probability":
        sub[column] = m[:, 1]
    elif layout.kind == "separated_labels":
        sub[column] = [target.separator.join(text_of(c) for c, on in zip(target.classes, row, strict=True) if on) for row in m]
    else:
        sub[column] = pd.Series(np.asarray(target.classes, dtype=object)[m.argmax(1)].tolist()).to_numpy()
    return sub[list(sample.columns)]


def read_back(layout: Layout, sub: pd.DataFrame, target: Target) -> np.ndarray:
    """The matrix a submission file holds, read as the competition reads it."""
    if layout.kind in ("class_probabilities", "class_labels"):
        return sub[[text_of(c) for c in target.classes]].to_numpy(dtype=np.float64)
    column = layout.columns[0]
    if layout.kind == "positive_probability":
        p = sub[column].to_numpy(dtype=np.float64)
        return np.stack([1 - p, p], axis=1)
    sub = sub.rename(columns={column: target.column})  # the sample's name for the target (data.sample_target_column)
    if layout.kind == "separated_labels":
        return target.encode(sub, "submission").astype(np.float64)
    return np.eye(len(target.classes))[target.encode(sub, "submission")]


def validate_submission(sub: pd.DataFrame, sample: pd.DataFrame, id_column: str, sample_name: str = "sample_submission.csv") -> None:
    """Same columns, row count, ids and id order as the sample; no missing values. Ids compare as
    text: Kaggle scores `01000`, and a file that says `1000` does not hold that id."""
    if list(sub.columns) != list(sample.columns):
        raise CompetitionError(f"{sample_name} has columns {list(sample.columns)}, the submission {list(sub.columns)}")
    if len(sub) != len(sample):
        raise CompetitionError(f"{sample_name} has {len(sample)} rows, the submission {len(sub)}")
    got, want = sub[id_column].map(text_of).to_numpy(), sample[id_column].map(text_of).to_numpy()
    if set(got) != set(want):
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        raise CompetitionError(f"{sample_name} ids and the submission's ids differ ({len(missing)} missing"
                               + (f", e.g. {missing[0]!r}" if missing else "")
                               + (f"; {len(extra)} not in the sample, e.g. {extra[0]!r}" if extra else "") + ")")
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


def check_destination(output: str | None, submission_dir: str | Path) -> None:
    """Before any work, and before a run's own files are rewritten: the submission can be written,
    to `output` (a file path, not a folder) or into `submission_dir`."""
    if output is None:
        check_writable(submission_dir, "submission_dir",
                       "set submission_dir to a folder you can write (--set submission_dir=PATH), or give --output PATH")
        return
    path = Path(output)
    if path.is_dir():
        raise CompetitionError(f"--output {output} is a folder: give the submission's file path "
                               f"(e.g. {path / 'submission.csv'})")
    check_writable(path.parent, f"--output {output}: the folder", "give a path in a folder you can write")


def leaderboard_score(written: Path, layout: Layout, solution: pd.DataFrame, target: Target, metric: Metric) -> float:
    """The competition metric of the file on disk against known answers: read back as written,
    scored on what it holds (hard labels score as hard labels), on the ids the answers cover."""
    sub = read_csv(Path(written), "submission", layout.text_columns)
    held = read_back(layout, sub, target)
    row_of = {text_of(i): r for r, i in enumerate(sub[layout.id_column].tolist())}
    keys = solution[layout.id_column].map(text_of)
    keep = keys.isin(row_of.keys()).to_numpy()
    y = target.encode(solution[keep].reset_index(drop=True), "solution")
    return metric(y, held[np.array([row_of[k] for k in keys[keep]], dtype=np.int64)])


def checked_solution(cfg: Config, comp: Competition) -> tuple[pd.DataFrame | None, Path | None]:
    """The local answers (`data.solution`) and their path, every label checked known before
    anything is written; (None, None) without them."""
    solution = read_solution(cfg, comp.root, comp.target)
    if solution is None:
        return None, None
    path = comp.root / cfg.data.solution
    comp.target.encode(solution, path)
    return solution, path


def build_submission(comp: Competition, layout: Layout, probs: np.ndarray, thresholds) -> pd.DataFrame:
    """Test probabilities (test.csv order) → the submission frame, rendered in `layout` at
    `thresholds` and checked against the sample; nothing is written."""
    matrix = render(layout, probs, comp.target, thresholds)
    sub = make_submission(comp.sample, comp.test[layout.id_column].tolist(), matrix, layout, comp.target)
    validate_submission(sub, comp.sample, layout.id_column, comp.sample_path.name)
    return sub
