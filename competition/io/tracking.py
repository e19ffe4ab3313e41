"""What a run records: TensorBoard (and wandb) scalars and figures, summary.csv, oof.csv."""
from __future__ import annotations

import functools
import math
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from competition.core.metrics import decide  # noqa: E402
from competition.core.schema import Config, flat_config  # noqa: E402
from competition.io.disk import no_space_error  # noqa: E402
from competition.io.files import write_csv  # noqa: E402


def _tick_font(cell_inches: float) -> float:
    """A tick label's font size (points) that fits one class's share of an axis: at most 9 pt."""
    return min(9.0, 0.6 * 72 * cell_inches)


def confusion_figure(targets: np.ndarray, preds: np.ndarray, classes: Sequence) -> plt.Figure:
    """Counts of true (rows) × predicted (columns) classes; the class names shrink to their row's
    height, and the columns' stand upright when they would not fit side by side."""
    k = len(classes)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (np.asarray(targets, dtype=np.int64), np.asarray(preds, dtype=np.int64)), 1)
    size = min(2.0 + 0.45 * k, 14.0)  # the matrix; the names get room of their own
    names = [str(c) for c in classes]
    font = _tick_font(0.7 * size / k)
    longest = max(map(len, names)) * 0.6 * font / 72  # inches, roughly
    room = min(max(longest - 0.5, 0.0), 4.0)
    fig, ax = plt.subplots(figsize=(size + room, size + room))
    ax.imshow(cm, cmap="Blues")
    wide = longest > 0.7 * size / k  # the longest name is wider than a column
    ax.set_xticks(range(k), names, rotation=90 if wide else 0, fontsize=font)
    ax.set_yticks(range(k), names, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:
        top = cm.max() or 1
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > top / 2 else "black")
    fig.tight_layout()
    return fig


def per_class_f1_figure(targets: np.ndarray, decisions: np.ndarray, classes: Sequence) -> plt.Figure:
    """Multi-label: F1 of each class (its 0/1 column) at these decisions, with its support. One
    horizontal bar per class, the figure as tall as the classes need: their names never overlap."""
    hits = (targets * decisions).sum(0)
    f1 = np.where(targets.sum(0) + decisions.sum(0) > 0,
                  2 * hits / np.maximum(targets.sum(0) + decisions.sum(0), 1), 1.0)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(6.0, max(2.0, 0.9 + 0.24 * k)))
    ax.barh(range(k), f1, color="steelblue")
    ax.set_yticks(range(k), [f"{c} ({int(n)})" for c, n in zip(classes, targets.sum(0), strict=True)], fontsize=8)
    ax.invert_yaxis()  # the first class on top, as in the table beside it
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    ax.set_ylabel("class (support)")
    fig.tight_layout()
    return fig


# Captions under which a grid's images stay readable where they are shown: report.html is at most
# 1,070 px wide (100 px an inch), so a grid of at most 10.5 inches is never scaled down there.
CAPTION_PT = 9.0


def wrap_caption(text: str, inches: float, points: float = CAPTION_PT) -> str:
    """`text` with each line wrapped to `inches` at a font of `points` (multi-label rows can list
    many long class names, which would run into the next image's caption)."""
    width = max(8, int(inches * 72 / (0.6 * points)))  # characters: a glyph is about 0.6 em wide
    return "\n".join(textwrap.fill(line, width, break_long_words=False) or line for line in text.split("\n"))


def mistakes_figure(images: Sequence[np.ndarray], captions: Sequence[str], tile: float = 1.7) -> plt.Figure:
    """A grid of misclassified images, each titled with its caption (worst_mistakes), `tile` inches a side."""
    n = len(images)
    cols = min(n, 6)
    rows = math.ceil(n / cols)
    captions = [wrap_caption(c, tile) for c in captions]
    lines = max(c.count("\n") + 1 for c in captions)
    fig, axes = plt.subplots(rows, cols, figsize=(tile * cols, (tile + 0.2 * lines) * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, caption in zip(axes.flat, images, captions, strict=False):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        ax.set_title(caption, fontsize=CAPTION_PT, color="crimson")
    fig.tight_layout()
    return fig


def _events(method: Callable) -> Callable:
    """A full disk while TensorBoard writes <fold>/tb becomes DiskFull naming that folder (its
    writer thread raises the error again in whichever call logs next)."""

    @functools.wraps(method)
    def wrapper(self: FoldTracker, *args, **kwargs):
        with no_space_error(self.fold_dir / "tb"):
            return method(self, *args, **kwargs)

    return wrapper


def figure_rgb(fig: plt.Figure) -> np.ndarray:
    """A drawn figure as an HxWx3 uint8 array (closed afterwards): one rendering for every backend."""
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return rgb


def log_images(fold_dir: Path, images: dict[str, np.ndarray], step: int) -> None:
    """Add RGB images to a fold's TensorBoard events outside training (`explain`)."""
    with SummaryWriter(log_dir=str(Path(fold_dir) / "tb")) as writer:
        for tag, rgb in images.items():
            writer.add_image(tag, rgb, step, dataformats="HWC")


class FoldTracker:
    """TensorBoard events in <fold>/tb plus summary.csv and oof.csv beside them; with `cfg` whose
    tracking.wandb is not off, the same scalars, figures and hparams go to a wandb run too.

    `purge_step` is the first epoch a resumed run logs again (None: a fresh start); a resumed
    fold continues its wandb run."""

    def __init__(self, fold_dir: Path, purge_step: int | None = None, enabled: bool = True,
                 cfg: Config | None = None, fold: int = 0):
        self.fold_dir = Path(fold_dir)
        self.wandb = None
        if enabled and cfg is not None and cfg.tracking.wandb != "off":  # first: the one that can be refused
            from competition.io.wandb_runs import WandbRun  # wandb is an optional extra

            self.wandb = WandbRun(cfg, fold, self.fold_dir, resumed=purge_step is not None)
        with no_space_error(self.fold_dir / "tb"):
            self.writer = SummaryWriter(log_dir=str(self.fold_dir / "tb"), purge_step=purge_step) if enabled else None

    def _scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        if self.wandb is not None:
            self.wandb.scalars(step, values)

    def _figure(self, tag: str, fig: plt.Figure, step: int) -> None:
        rgb = figure_rgb(fig)
        self.writer.add_image(tag, rgb, step, dataformats="HWC")
        if self.wandb is not None:
            self.wandb.image(tag, rgb, step)

    @_events
    def log_epoch(self, epoch: int, row: dict, metric_name: str, lrs: dict[str, float]) -> None:
        if self.writer is None:
            return
        self._scalars(epoch, {"loss/train": row["train_loss"], "loss/val": row["val_loss"],
                              f"metric/val_{metric_name}": row["metric"], "stage": row["stage"],
                              **{f"lr/{name}": lr for name, lr in lrs.items()}})
        self.writer.flush()

    @_events
    def log_figures(self, epoch: int, targets: np.ndarray, probs: np.ndarray, classes: Sequence, multi_label: bool,
                    image_of: Callable[[int], np.ndarray] | None = None, max_images: int = 24) -> None:
        """Confusion matrix (per-class F1 for multi-label) and, for images, the validation images
        the model got most wrong."""
        if self.writer is None:
            return
        preds = decide(probs, multi_label)
        if multi_label:
            self._figure("val/per_class_f1", per_class_f1_figure(targets, preds, classes), epoch)
        else:
            self._figure("val/confusion_matrix", confusion_figure(targets, preds, classes), epoch)
        wrong, _, captions = worst_mistakes(targets, probs, preds, classes, multi_label, max_images)
        if image_of is not None and len(wrong):
            self._figure("val/misclassified", mistakes_figure([image_of(int(i)) for i in wrong], captions), epoch)
        self.writer.flush()

    @_events
    def log_best(self, stopper, probs: np.ndarray, data, comp, config: dict, metric_name: str) -> None:
        """The best epoch's figures (from its validation `probs`) and the run's hparams with its score."""
        self.log_figures(stopper.best_epoch, data.valid_targets, probs, comp.classes, comp.target.multi_label,
                         data.image_of)
        self.log_hparams(config, metric_name, stopper.best_metric, stopper.best_epoch)

    def log_hparams(self, config: dict, metric_name: str, best: float, best_epoch: int) -> None:
        if self.writer is None:
            return
        scores = {f"hparam/best_{metric_name}": best, "hparam/best_epoch": best_epoch}
        self.writer.add_hparams(flat_config(config), scores, run_name=".")
        self.writer.flush()
        if self.wandb is not None:  # the config itself went in when the run started
            self.wandb.summary(scores)

    @_events
    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.close()


def labels_text(classes: Sequence, on: np.ndarray) -> str:
    """A multi-label row's classes, space-separated; "(none)" for a row without any."""
    return " ".join(str(c) for c, yes in zip(classes, on, strict=True) if yes) or "(none)"


def probability_text(classes: Sequence, probs: np.ndarray, k: int, multi_label: bool) -> str:
    """The probability a caption shows: of the row's one predicted class (`p=0.87`), or, on a
    multi-label row, of the named class (`p(water)=0.91`), the label that shows which one it is."""
    return f"p({classes[k]})={probs[k]:.2f}" if multi_label else f"p={probs[k]:.2f}"


def worst_mistakes(targets: np.ndarray, probs: np.ndarray, preds: np.ndarray, classes: Sequence, multi_label: bool,
                   limit: int) -> tuple[np.ndarray, list[int], list[str]]:
    """(rows, the class each caption's probability is of, captions) of the most confident mistakes,
    worst first. The class: single-label, the predicted one; multi-label, the one whose probability
    is furthest from its answer (a water row at p(water)=0.04, or p(water)=0.91 on a row without)."""
    if multi_label:
        # Most wrong first: the summed distance of the probabilities from the answers.
        wrong = np.flatnonzero((preds != targets).any(1))
        wrong = wrong[np.argsort(-np.abs(probs[wrong] - targets[wrong]).sum(1), kind="stable")][:limit]
        focus = [int(np.abs(probs[i] - targets[i]).argmax()) for i in wrong]
        captions = [f"true {labels_text(classes, targets[i])}\npred {labels_text(classes, preds[i])}\n"
                    f"{probability_text(classes, probs[i], k, True)}" for i, k in zip(wrong, focus, strict=True)]
    else:
        wrong = np.flatnonzero(preds != targets)
        # The most confident mistakes first: those are the ones worth a look.
        wrong = wrong[np.argsort(-probs[wrong, preds[wrong]], kind="stable")][:limit]
        focus = [int(preds[i]) for i in wrong]
        captions = [f"true {classes[targets[i]]}\npred {classes[k]} ({probability_text(classes, probs[i], k, False)})"
                    for i, k in zip(wrong, focus, strict=True)]
    return wrong, focus, captions


def write_summary(fold_dir: Path, history: list[dict]) -> None:
    write_csv(Path(fold_dir) / "summary.csv", pd.DataFrame(history))

