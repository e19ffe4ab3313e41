"""What a run records: TensorBoard scalars and figures, summary.csv, oof.csv."""
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

from competition.core.config import flat_config  # noqa: E402
from competition.core.metrics import decide  # noqa: E402
from competition.io.disk import no_space_error  # noqa: E402
from competition.io.files import write_csv  # noqa: E402

PROB_PREFIX = "prob_"


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


class FoldTracker:
    """TensorBoard events in <fold>/tb plus summary.csv and oof.csv beside them."""

    def __init__(self, fold_dir: Path, purge_step: int | None = None, enabled: bool = True):
        self.fold_dir = Path(fold_dir)
        with no_space_error(self.fold_dir / "tb"):
            self.writer = SummaryWriter(log_dir=str(self.fold_dir / "tb"), purge_step=purge_step) if enabled else None

    @_events
    def log_epoch(self, epoch: int, row: dict, metric_name: str, lrs: dict[str, float]) -> None:
        if self.writer is None:
            return
        self.writer.add_scalar("loss/train", row["train_loss"], epoch)
        self.writer.add_scalar("loss/val", row["val_loss"], epoch)
        self.writer.add_scalar(f"metric/val_{metric_name}", row["metric"], epoch)
        self.writer.add_scalar("stage", row["stage"], epoch)
        for name, lr in lrs.items():
            self.writer.add_scalar(f"lr/{name}", lr, epoch)
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
            self.writer.add_figure("val/per_class_f1", per_class_f1_figure(targets, preds, classes), epoch, close=True)
            # Most wrong first: the summed distance of the probabilities from the answers.
            wrong = np.flatnonzero((preds != targets).any(1))
            wrong = wrong[np.argsort(-np.abs(probs[wrong] - targets[wrong]).sum(1))][:max_images]
            true = [" ".join(str(c) for c, on in zip(classes, targets[i], strict=True) if on) or "(none)" for i in wrong]
            pred = [" ".join(str(c) for c, on in zip(classes, preds[i], strict=True) if on) or "(none)" for i in wrong]
            sure = [float(np.abs(probs[i] - 0.5).mean() * 2) for i in wrong]  # 1: every class decided at 0 or 1
        else:
            self.writer.add_figure("val/confusion_matrix", confusion_figure(targets, preds, classes), epoch, close=True)
            wrong = np.flatnonzero(preds != targets)
            # The most confident mistakes first: those are the ones worth a look.
            wrong = wrong[np.argsort(-probs[wrong, preds[wrong]])][:max_images]
            true, pred = [classes[targets[i]] for i in wrong], [classes[preds[i]] for i in wrong]
            sure = [float(probs[i, preds[i]]) for i in wrong]
        if image_of is not None and len(wrong):
            fig = mistakes_figure([image_of(int(i)) for i in wrong], true, pred, sure)
            self.writer.add_figure("val/misclassified", fig, epoch, close=True)
        self.writer.flush()

    @_events
    def log_hparams(self, config: dict, metric_name: str, best: float, best_epoch: int) -> None:
        if self.writer is None:
            return
        self.writer.add_hparams(
            flat_config(config), {f"hparam/best_{metric_name}": best, "hparam/best_epoch": best_epoch}, run_name="."
        )
        self.writer.flush()

    @_events
    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def write_summary(fold_dir: Path, history: list[dict]) -> None:
    write_csv(Path(fold_dir) / "summary.csv", pd.DataFrame(history))


def oof_frame(ids: Sequence, id_column: str, answers: dict[str, list], classes: Sequence, probs: np.ndarray) -> pd.DataFrame:
    """id, the answers in train.csv's own target column(s), then prob_<class> per class."""
    frame = pd.DataFrame({id_column: list(ids), **answers})
    for k, c in enumerate(classes):
        frame[f"{PROB_PREFIX}{c}"] = probs[:, k]
    return frame


def read_oof_probs(frame: pd.DataFrame, classes: Sequence) -> np.ndarray:
    return frame[[f"{PROB_PREFIX}{c}" for c in classes]].to_numpy(dtype=np.float64)
