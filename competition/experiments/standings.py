"""The local board: one row per run (and per blend) under output_dir, from what each recorded — run.json,
the folds' oof.csv and summary.csv, predict's cv.json, blend.json — sorted best first per metric.

Only files are read and no model is built: torch is loaded only for the checkpoints of a run trained
before run.json existed, and pandas (with the scoring of the oof.csv files) where a run's CSVs are
read, so a board with nothing to show starts at once."""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from competition.core.choices import TASK_KINDS
from competition.core.errors import CompetitionError
from competition.core.metrics import METRICS
from competition.io.runs import BLEND_FILE, BLEND_FORMAT, BLENDS, CV_FILE, RunRecord, fold_states
from competition.models.tables import family_named

if TYPE_CHECKING:
    from competition.data.targets import Target


@dataclass
class Row:
    """One run or blend on the board."""

    name: str
    task: str
    model: str
    size: str
    epochs: str
    metric: str
    higher_is_better: bool
    folds: dict  # fold → score
    cv: float | None  # the pooled out-of-fold score the board sorts by
    cv_from: str  # as submitted | best epochs | blend, cross-fit
    seconds: float | None
    when: str
    submission: str
    folds_hash: str | None
    other_folds: bool = field(default=False)

    @property
    def spread(self) -> tuple[float, float] | None:
        values = list(self.folds.values())
        return (float(np.mean(values)), float(np.std(values))) if values else None


def _stamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def stored_target(config: dict, classes: list) -> Target:
    """The run's target, rebuilt from its stored config and classes (its data may be elsewhere)."""
    from competition.data.targets import Target

    d = config["data"]
    columns = d.get("target_columns")
    return Target(d.get("target_format", "single"), list(classes), None if columns else d["target_column"], columns,
                  d.get("label_separator", " "))


def _best_epoch_scores(run_dir: Path, config: dict, classes: list) -> tuple[dict, float | None, bool]:
    """Per-fold and pooled score of the folds' oof.csv (best epochs), and whether they mix runs."""
    from competition.inference.best_epochs import score_best_epochs

    files = {p.parent.name.removeprefix("fold"): p for p in sorted(run_dir.glob("fold*/oof.csv"))}
    scores = score_best_epochs(files, METRICS[config["train"]["metric"]], stored_target(config, classes), classes)
    return scores.folds, scores.pooled, len(set(scores.keys.values()) - {None}) > 1


def _training(run_dir: Path) -> tuple[float | None, str]:
    """Seconds spent in the folds' epochs (summary.csv) and when the last one ended."""
    import pandas as pd

    files = sorted(run_dir.glob("fold*/summary.csv"))
    if not files:
        return None, "-"
    seconds = sum(float(pd.read_csv(f)["seconds"].sum()) for f in files)
    return seconds, _stamp(max(f.stat().st_mtime for f in files))


def run_row(run_dir: Path) -> Row | None:
    """A run's row, or None for a folder that holds no run."""
    record = RunRecord.read(run_dir)
    if record is not None:
        config, classes, folds_hash = record.config, record.classes, record.folds_hash
    else:  # trained before run.json: what its checkpoints say
        states = fold_states(run_dir)
        if not states:
            return None
        config, classes, folds_hash = states[0][1].config, states[0][1].classes, states[0][1].folds_hash
    per_fold, pooled, mixed = _best_epoch_scores(run_dir, config, classes)
    cv_from, cv_file = "best epochs", run_dir / CV_FILE
    submission = "-"
    newest = max((p.stat().st_mtime for p in run_dir.glob("fold*/best.pt")), default=0.0)
    if cv_file.is_file():
        report = json.loads(cv_file.read_text())
        submission = report.get("submission", "-")
        submitted = report.get("as_submitted") or {}
        # A predict older than the newest fold scored other models: the best epochs speak for the run then.
        if submitted.get("cv") is not None and cv_file.stat().st_mtime >= newest:
            per_fold, pooled, cv_from = submitted["folds"], submitted["cv"], "as submitted"
    metric = METRICS[config["train"]["metric"]]
    one_fit = family_named(config["model"]["name"]) is not None  # one fit, no epochs
    t = config["train"]
    epochs = "-" if one_fit else f"{t['freeze_epochs']}+{t['epochs']}" if t.get("freeze_epochs") else str(t["epochs"])
    seconds, when = _training(run_dir)
    return Row(run_dir.name, config["task"], config["model"]["name"],
               str(config["image"]["size"]) if TASK_KINDS[config["task"]].image_files else "-", epochs, metric.name,
               metric.higher_is_better, per_fold, pooled, cv_from, seconds, when, submission,
               "mixed" if mixed else folds_hash)


def blend_row(path: Path) -> Row:
    """A blend's row: its cross-fitted estimate (weights fit on the other folds' rows)."""
    try:
        b = json.loads(path.read_text())
        if b.get("format") != BLEND_FORMAT:
            raise ValueError(f"format {b.get('format')!r}, this kit reads {BLEND_FORMAT}")
        model = " + ".join(f"{run} {w:.2f}" for run, w in b["weights"].items() if w > 0)
        return Row(f"{BLENDS}/{b['name']}", b["task"], f"{b['method']}: {model}", "-", "-", b["metric"],
                   b["higher_is_better"], b["cross_fit"]["folds"], b["cross_fit"]["cv"], "blend, cross-fit", None,
                   _stamp(path.stat().st_mtime), b["submission"], b["folds_hash"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CompetitionError(f"{path} is not a blend record this kit reads ({exc})") from None


def board_rows(output_dir: Path) -> list[Row]:
    """Every run and blend under output_dir, grouped by metric and sorted best first."""
    rows = [r for d in sorted(p for p in Path(output_dir).iterdir() if p.is_dir() and p.name != BLENDS)
            if (r := run_row(d)) is not None] if Path(output_dir).is_dir() else []
    rows += [blend_row(p) for p in sorted((Path(output_dir) / BLENDS).glob(f"*/{BLEND_FILE}"))]
    ordered = []
    for metric in sorted({r.metric for r in rows}):
        group = [r for r in rows if r.metric == metric]
        scored = sorted((r for r in group if r.cv is not None), key=lambda r: -r.cv if r.higher_is_better else r.cv)
        ordered += scored + [r for r in group if r.cv is None]
    return ordered


def mark_other_folds(rows: list[Row], reference_folds: str | None) -> None:
    """Mark each row (as board_rows orders them) trained on other folds than `reference_folds`
    (the config's folds.csv), or else than the best row of its metric."""
    best: dict[str, str | None] = {}
    for r in rows:
        reference = reference_folds or best.setdefault(r.metric, r.folds_hash)
        r.other_folds = r.folds_hash != reference


FORMATS = ("table", "markdown", "csv")  # --format
HEADER = ["name", "task", "model", "size", "epochs", "metric", "cv", "mean ± std", "folds", "cv from", "time",
          "when", "submission", "split"]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _cells(r: Row) -> list[str]:
    spread = r.spread
    return [r.name, r.task, r.model, r.size, r.epochs, r.metric, "-" if r.cv is None else f"{r.cv:.5f}",
            "-" if spread is None else f"{spread[0]:.5f} ± {spread[1]:.5f}",
            " ".join(f"{v:.4f}" for _, v in sorted(r.folds.items(), key=lambda kv: int(kv[0]))),
            r.cv_from, _duration(r.seconds), r.when, Path(r.submission).name,
            f"{r.folds_hash or '?'}{' *' if r.other_folds else ''}"]


def render_board(rows: list[Row], fmt: str, reference: str) -> str:
    """The rows as an aligned text table, a Markdown table, or CSV (one column per fold); `reference`
    names the split the marked rows' folds differ from."""
    if fmt == "csv":
        import pandas as pd

        frame = pd.DataFrame([{
            "name": r.name, "task": r.task, "model": r.model, "size": r.size, "epochs": r.epochs, "metric": r.metric,
            "cv": r.cv, "mean": r.spread[0] if r.spread else None, "std": r.spread[1] if r.spread else None,
            **{f"fold_{k}": v for k, v in r.folds.items()}, "cv_from": r.cv_from, "seconds": r.seconds,
            "when": r.when, "submission": r.submission, "folds_hash": r.folds_hash, "other_folds": r.other_folds,
        } for r in rows])
        return frame.to_csv(index=False).rstrip("\n")
    table = [HEADER] + [_cells(r) for r in rows]
    note = (f"\n* trained on other folds than {reference}: their CVs do not compare with the others'"
            if any(r.other_folds for r in rows) else "")
    if fmt == "markdown":
        lines = ["| " + " | ".join(row) + " |" for row in table]
        return "\n".join([lines[0], "|" + "---|" * len(HEADER), *lines[1:]]) + ("\n" + note if note else "")
    # Our own few lines rather than tabulate: one dependency less for an aligned table.
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table) + note
