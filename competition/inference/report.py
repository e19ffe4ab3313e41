"""outputs/<name>/report.html, written by `predict`: the CV per fold and as submitted, learning
curves, the confusion matrix (per-class F1 for multi-label), per-class precision and recall, the
worst mistakes, Grad-CAM panels and the config, in one self-contained file (images inline)."""
from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import precision_recall_fscore_support  # noqa: E402

from competition.core.errors import CompetitionError  # noqa: E402
from competition.core.metrics import UNBOUNDED_METRICS, decide  # noqa: E402
from competition.core.schema import Config, config_to_dict  # noqa: E402
from competition.data.folder import Competition, read_csv, text_columns, train_rows  # noqa: E402
from competition.inference.gradcam import explain_fold, panels_rgb  # noqa: E402
from competition.io.files import write_text  # noqa: E402
from competition.io.prob_columns import read_oof_probs  # noqa: E402
from competition.io.tracking import (  # noqa: E402
    confusion_figure,
    figure_rgb,
    mistakes_figure,
    per_class_f1_figure,
    worst_mistakes,
)
from competition.tasks import Task  # noqa: E402

REPORT = "report.html"
STYLE = """body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.1em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .7em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}img{max-width:100%;display:block;margin:.4em 0}
.muted{color:#777}.row{display:flex;flex-wrap:wrap;gap:2em;align-items:flex-start}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:13px}"""


def png_uri(rgb: np.ndarray) -> str:
    """An RGB array as a data: URI, so the page needs no other file."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(rgb: np.ndarray, alt: str) -> str:
    return f'<img src="{png_uri(rgb)}" alt="{html.escape(alt)}">'


def _cell(value) -> str:
    return f"{value:.5f}" if isinstance(value, float) else html.escape(str(value))


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def cv_section(cv: dict, loaded: list, lb: float | None) -> str:
    submitted = cv.get("as_submitted") or {}
    best_epoch = {str(f): state.best_epoch for f, _, state in loaded}
    rows = [[f"fold {f}", best_epoch.get(f, "—"), score, submitted.get("folds", {}).get(f, "—")]
            for f, score in cv["folds"].items()]
    rows.append(["all folds (out-of-fold)", "", cv["cv"], submitted.get("cv") if submitted.get("cv") is not None else "—"])
    out = _table(["", "best epoch", f"{cv['metric']}, best epoch", f"{cv['metric']}, as submitted"], rows)
    if lb is not None:
        out += f"<p>Local leaderboard {html.escape(cv['metric'])}: <b>{lb:.5f}</b> (the written file against the answers).</p>"
    if submitted.get("thresholds") is not None:
        out += f"<p>Thresholds fit on the out-of-fold rows: {', '.join(f'{t:.3f}' for t in submitted['thresholds'])}</p>"
    shown = html.escape(str(cv.get("submission", "")))
    return out + f'<p class="muted">Submission {shown}; TTA views: plain{"".join(", " + t for t in cv.get("tta", []))}.</p>'


def read_histories(cfg: Config, folds: list[int]) -> dict[int, pd.DataFrame]:
    """Each listed fold's summary.csv (one row per epoch), for the folds that have one."""
    return {f: pd.read_csv(p) for f in folds if (p := cfg.fold_dir(f) / "summary.csv").is_file()}


def curves_figure(histories: dict[int, pd.DataFrame], metric: str) -> plt.Figure | None:
    """Train and validation loss, and the validation metric, per epoch of each fold. Every epoch is
    a marker, so a one-epoch run shows its points (a line through one point draws nothing); epochs
    run from 1 to the last; a metric scored in [0, 1] is drawn on [0, 1], losses from 0."""
    if not histories:
        return None
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(11, 3.6))
    for k, (fold, h) in enumerate(histories.items()):
        color = plt.cm.tab10(k % 10)
        loss_ax.plot(h["epoch"], h["train_loss"], "--o", color=color, markersize=3, label=f"fold {fold} train")
        loss_ax.plot(h["epoch"], h["val_loss"], "-s", color=color, markersize=3, label=f"fold {fold} validation")
        metric_ax.plot(h["epoch"], h["metric"], "-o", color=color, markersize=3, label=f"fold {fold}")
        for e in h["epoch"][h["stage"].diff().fillna(0) > 0]:  # the backbone starts learning here
            metric_ax.axvline(e - 0.5, color="#bbb", linestyle=":")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss (dashed: training)")
    two_stages = any((h["stage"].diff().fillna(0) > 0).any() for h in histories.values())
    metric_ax.set(xlabel="epoch", ylabel=metric, title=f"validation {metric}" + (" (dotted: stage 2 begins)" if two_stages else ""))
    last = max(int(h["epoch"].max()) for h in histories.values())
    for ax in (loss_ax, metric_ax):
        ax.set_xlim(0.5, last + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    losses = [v for h in histories.values() for v in (*h["train_loss"], *h["val_loss"]) if np.isfinite(v)]
    loss_ax.set_ylim(0, 1.08 * max(losses) if losses and max(losses) > 0 else 1)
    scores = [v for h in histories.values() for v in h["metric"] if np.isfinite(v)]
    if metric not in UNBOUNDED_METRICS:
        metric_ax.set_ylim(-0.02, 1.02)
    elif scores:
        metric_ax.set_ylim(0, 1.08 * max(scores) if max(scores) > 0 else 1)
    loss_ax.legend(fontsize=7, ncol=2)
    metric_ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def pooled_oof(cfg: Config, comp: Competition, folds: list[int]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(answers, probabilities, train.csv rows) of the best epochs, every listed fold's oof.csv together."""
    ys, ps, rows = [], [], []
    for f in folds:
        path = cfg.fold_dir(f) / "oof.csv"
        if path.is_file():
            oof = read_csv(path, "out-of-fold file", text_columns(cfg))
            ys.append(comp.target.encode(oof, path))
            ps.append(read_oof_probs(oof, comp.classes))
            rows += train_rows(comp, oof[cfg.data.id_column], cfg.data.id_column, path).tolist()
    if not ys:
        raise CompetitionError(f"no oof.csv in {cfg.run_dir}/fold*: nothing to report on")
    return np.concatenate(ys), np.concatenate(ps), rows


def classes_section(comp: Competition, y: np.ndarray, preds: np.ndarray) -> str:
    multi, classes = comp.target.multi_label, comp.classes
    figure = (per_class_f1_figure(y, preds, classes) if multi else confusion_figure(y, preds, classes))
    labels = None if multi else list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(y, preds, labels=labels, zero_division=0)
    rows = [[str(c), f"{p:.3f}", f"{r:.3f}", f"{f:.3f}", int(s)]
            for c, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)]
    title = "Per-class F1 (support)" if multi else "Confusion matrix (rows: true class, columns: predicted)"
    return (f'<div class="row"><div><h3>{title}</h3>{_img(figure_rgb(figure), title)}</div><div>'
            f'<h3>Per-class precision and recall</h3>{_table(["class", "precision", "recall", "F1", "support"], rows)}'
            f"</div></div>")


def mistakes_section(cfg: Config, task: Task, comp: Competition, y, probs, preds, rows: list[int], limit: int = 12) -> str:
    picture = task.picture_of(cfg, comp)
    if picture is None:  # no pictures to show (a table)
        return ""
    multi = comp.target.multi_label
    wrong, _, captions = worst_mistakes(y, probs, preds, comp.classes, multi, limit)
    if not len(wrong):
        return "<h2>Mistakes</h2><p>No out-of-fold row is wrong.</p>"
    images = [picture(rows[i], 256) for i in wrong]
    fig = mistakes_figure(images, captions)
    shown = ("true labels, predicted labels, and the probability of the class furthest from its answer"
             if multi else "true class, predicted class and its probability")
    return (f"<h2>Mistakes</h2><p>The {len(wrong)} most confident wrong out-of-fold predictions "
            f"({shown}).</p>{_img(figure_rgb(fig), 'mistakes')}")


def gradcam_section(cfg: Config, task: Task, comp: Competition, loaded: list, device: torch.device, n: int,
                    thresholds) -> str:
    out = ["<h2>Grad-CAM</h2>"]
    for fold, model, state in loaded:
        try:
            panels = explain_fold(cfg, task, comp, model, state, device, n, thresholds)
        except CompetitionError as exc:  # a model without a 2-D map: say why, once, and move on
            return out[0] + f'<p class="muted">{html.escape(str(exc))}</p>'
        out.append(f"<h3>fold {fold}</h3>" + "".join(_img(panels_rgb(p), f"fold {fold} {p.kind}") for p in panels))
    return "".join(out)


def write_report(cfg: Config, task: Task, comp: Competition, loaded: list, device: torch.device, cv: dict,
                 lb: float | None = None, n_explain: int = 8) -> Path:
    """Render the report of the loaded folds into outputs/<name>/report.html (atomically); `cv`:
    what predict writes to cv.json."""
    folds = [f for f, _, _ in loaded]
    thresholds = (cv.get("as_submitted") or {}).get("thresholds")
    y, probs, rows = pooled_oof(cfg, comp, folds)
    preds = decide(probs, comp.target.multi_label, thresholds)
    curves = curves_figure(read_histories(cfg, folds), cfg.train.metric)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        f"<h1>{html.escape(cfg.name)}</h1><p class='muted'>{html.escape(cfg.model.name)} · {html.escape(cfg.task)} · "
        f"{len(comp.train)} train rows, {len(comp.test)} test rows, {len(comp.classes)} classes · folds "
        f"{', '.join(map(str, folds))} · {when}</p>",
        "<h2>Cross-validation</h2>", cv_section(cv, loaded, lb),
        "<h2>Learning curves</h2>", _img(figure_rgb(curves), "learning curves") if curves is not None else "<p>No summary.csv.</p>",
        f"<h2>Out-of-fold predictions</h2><p class='muted'>{len(y)} rows, each predicted by the fold that did not "
        f"train on it (best epochs){', at the submission thresholds' if thresholds is not None else ''}.</p>",
        classes_section(comp, y, preds),
        mistakes_section(cfg, task, comp, y, probs, preds, rows),
        gradcam_section(cfg, task, comp, loaded, device, n_explain, thresholds),
        "<h2>Config</h2><pre>" + html.escape(yaml.safe_dump(config_to_dict(cfg), sort_keys=False)) + "</pre>",
    ]
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(cfg.name)} report'
            f'</title><link rel="icon" href="data:,"><style>{STYLE}</style></head><body>\n'
            + "\n".join(body) + "\n</body></html>\n")
    path = cfg.run_dir / REPORT
    write_text(path, page)
    return path
