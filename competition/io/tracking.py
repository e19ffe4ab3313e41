"""What a run records: TensorBoard (and wandb) scalars and figures, summary.csv, oof.csv."""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from competition.core.config import Config, flat_config  # noqa: E402
from competition.core.metrics import decide  # noqa: E402
from competition.io.disk import no_space_error  # noqa: E402
from competition.io.files import write_csv  # noqa: E402


def confusion_figure(targets: np.ndarray, preds: np.ndarray, classes: Sequence) -> plt.Figure:
    """Counts of true (rows) × predicted (columns) classes."""
    k = len(classes)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (np.asarray(targets, dtype=np.int64), np.asarray(preds, dtype=np.int64)), 1)
    size = min(2.0 + 0.45 * k, 14.0)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k), [str(c) for c in classes], rotation=90 if k > 8 else 0)
    ax.set_yticks(range(k), [str(c) for c in classes])
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
    """Multi-label: F1 of each class (its 0/1 column) at the 0.5 threshold, with its support."""
    hits = (targets * decisions).sum(0)
    f1 = np.where(targets.sum(0) + decisions.sum(0) > 0,
                  2 * hits / np.maximum(targets.sum(0) + decisions.sum(0), 1), 1.0)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(min(2.0 + 0.4 * k, 14.0), 3.5))
    ax.bar(range(k), f1, color="steelblue")
    ax.set_xticks(range(k), [f"{c} ({int(n)})" for c, n in zip(classes, targets.sum(0), strict=True)],
                  rotation=90 if k > 8 else 0)
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1 (support)")
    fig.tight_layout()
    return fig


def mistakes_figure(images: Sequence[np.ndarray], true: Sequence, pred: Sequence, confidence: Sequence[float]) -> plt.Figure:
    """A grid of misclassified images titled with their true and predicted labels (and how sure it was)."""
    n = len(images)
    cols = min(n, 6)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, t, p, c in zip(axes.flat, images, true, pred, confidence, strict=False):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        ax.set_title(f"true {t}\npred {p} ({c:.2f})", fontsize=8, color="crimson")
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
        wrong, true, pred, sure = worst_mistakes(targets, probs, preds, classes, multi_label, max_images)
        if image_of is not None and len(wrong):
            self._figure("val/misclassified", mistakes_figure([image_of(int(i)) for i in wrong], true, pred, sure), epoch)
        self.writer.flush()

    @_events
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


def worst_mistakes(targets: np.ndarray, probs: np.ndarray, preds: np.ndarray, classes: Sequence, multi_label: bool,
                   limit: int) -> tuple[np.ndarray, list[str], list[str], list[float]]:
    """(rows, true labels, predicted labels, confidence) of the most confident mistakes, worst first."""
    if multi_label:
        # Most wrong first: the summed distance of the probabilities from the answers.
        wrong = np.flatnonzero((preds != targets).any(1))
        wrong = wrong[np.argsort(-np.abs(probs[wrong] - targets[wrong]).sum(1), kind="stable")][:limit]
        true = [" ".join(str(c) for c, on in zip(classes, targets[i], strict=True) if on) or "(none)" for i in wrong]
        pred = [" ".join(str(c) for c, on in zip(classes, preds[i], strict=True) if on) or "(none)" for i in wrong]
        sure = [float(np.abs(probs[i] - 0.5).mean() * 2) for i in wrong]  # 1: every class decided at 0 or 1
    else:
        wrong = np.flatnonzero(preds != targets)
        # The most confident mistakes first: those are the ones worth a look.
        wrong = wrong[np.argsort(-probs[wrong, preds[wrong]], kind="stable")][:limit]
        true, pred = [str(classes[targets[i]]) for i in wrong], [str(classes[preds[i]]) for i in wrong]
        sure = [float(probs[i, preds[i]]) for i in wrong]
    return wrong, true, pred, sure


def write_summary(fold_dir: Path, history: list[dict]) -> None:
    write_csv(Path(fold_dir) / "summary.csv", pd.DataFrame(history))

