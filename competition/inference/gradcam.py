"""Grad-CAM for a fold's validation rows: where in the image its model looked for the class it
chose, on its most confident mistakes and on a sample of its right answers (`explain`, the report).

Our own few lines rather than the `grad-cam` package (which brings OpenCV and ttach): timm lists
every model's feature stages (`feature_info`, part of the model contract: models/contract.py), so one forward hook on the chosen stage and one
autograd call give its map and the class score's gradient on it."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from competition.core.errors import CompetitionError  # noqa: E402
from competition.core.metrics import decide  # noqa: E402
from competition.core.runtime import to_device  # noqa: E402
from competition.core.schema import Config  # noqa: E402
from competition.data.folder import Competition, read_csv, text_columns, train_rows  # noqa: E402
from competition.data.images import hw  # noqa: E402
from competition.io.checkpoints import FoldState  # noqa: E402
from competition.io.prob_columns import read_oof_probs  # noqa: E402
from competition.io.tracking import (  # noqa: E402
    CAPTION_PT,
    figure_rgb,
    labels_text,
    probability_text,
    worst_mistakes,
    wrap_caption,
)
from competition.models.contract import feature_stages  # noqa: E402
from competition.tasks import Task  # noqa: E402

# The map must have this many cells a side to point at a part of the image: at 32 px a ResNet's
# last stage is 1×1, so its map says nothing and the deepest stage of at least 4×4 is used.
MIN_SIDE = 4


def target_stage(model: nn.Module, name: str, size: int) -> tuple[str, int | None]:
    """(module name, channels) of the deepest feature stage whose map keeps MIN_SIDE cells a side."""
    info = feature_stages(model)
    if not info:
        raise CompetitionError(f"Grad-CAM draws maps over images: model {name!r} lists no feature stages "
                               f"(timm's feature_info), so it has no spatial feature map to explain")
    fit = [i for i in info if size / i.get("reduction", 1) >= MIN_SIDE] or info[:1]
    return fit[-1]["module"], fit[-1].get("num_chs")


def stage_map(model: nn.Module, name: str, x: torch.Tensor, stage: tuple[str, int | None]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(the stage's output as the hook saw it, the same as NCHW, the logits); refuses tokens."""
    captured: list = []
    handle = model.get_submodule(stage[0]).register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        logits = model(x)
    finally:
        handle.remove()
    out, channels = captured[-1], stage[1]
    if isinstance(out, torch.Tensor) and out.dim() == 4 and channels in (None, out.shape[1]):
        return out, out, logits
    if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-1] == channels:  # channels last (Swin)
        return out, out.permute(0, 3, 1, 2), logits
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    raise CompetitionError(f"Grad-CAM needs a 2-D feature map: model {name!r} stage {stage[0]} gives {shape} "
                           f"(tokens, not a grid); explain a convolutional backbone")


def check_explainable(model: nn.Module, name: str, preprocessing: dict) -> tuple[str, int | None]:
    """The stage to explain; refuses, in one line, a table's MLP (a ViT's tokens are refused by
    stage_map at the first map, before any file is written)."""
    if not preprocessing:  # the table task's MLP: no image, so no map
        raise CompetitionError(f"Grad-CAM draws maps over images: model {name!r} reads table features, "
                               f"which have no spatial feature map")
    return target_stage(model, name, min(hw(preprocessing["size"])))  # the shorter side keeps its cells


def grad_cam(model: nn.Module, name: str, x: torch.Tensor, classes: Sequence[int],
             stage: tuple[str, int | None]) -> np.ndarray:
    """Class-activation maps [n, H, W] in 0..1 at the input's size, one per row of `x` for its class:
    the stage's map weighted by the spatial mean of the class score's gradient, then ReLU."""
    model.eval()
    x = x.detach().float().requires_grad_(True)  # the graph reaches the map even if no weight learns
    with torch.enable_grad():
        out, fmap, logits = stage_map(model, name, x, stage)
        picked = torch.as_tensor(list(classes), device=logits.device)
        (grad,) = torch.autograd.grad(logits.float().gather(1, picked[:, None]).sum(), out)
    grad = grad if grad.shape == fmap.shape else grad.permute(0, 3, 1, 2)
    cam = F.relu((grad.mean((2, 3), keepdim=True) * fmap).sum(1, keepdim=True)).detach().float()
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    top = cam.flatten(1).max(1).values.clamp_min(1e-12)[:, None, None]
    return (cam / top).cpu().numpy()


@dataclass
class Panels:
    """One fold's explained rows: the images the model saw, their maps and captions."""

    kind: str  # "mistakes" or "correct"
    images: np.ndarray  # [n, H, W, 3] floats in 0..1
    cams: np.ndarray  # [n, H, W] in 0..1
    stage: str  # the module whose map is shown
    titles: list[str]


def pick_rows(y: np.ndarray, probs: np.ndarray, classes: Sequence, multi_label: bool, n: int, seed: int,
              thresholds=None) -> dict:
    """{"mistakes": (rows, class to explain, caption), "correct": …}: the n most confident mistakes
    and n right answers drawn at random (seeded), each explained for the class whose probability
    its caption gives: the predicted class; multi-label, the class furthest from its answer on a
    mistake and the surest on a right answer. Rows are decided at `thresholds` (the submission's,
    where the metric fits them), so a mistake here is one in the file."""
    preds = decide(probs, multi_label, thresholds)
    wrong, explain_wrong, wrong_captions = worst_mistakes(y, probs, preds, classes, multi_label, n)
    right = np.flatnonzero((preds == y).all(1) if multi_label else preds == y)
    right = np.sort(np.random.default_rng(seed).permutation(right)[:n])
    explain_right = [int(probs[i].argmax()) if multi_label else int(preds[i]) for i in right]
    right_captions = [f"{labels_text(classes, y[i])}\n{probability_text(classes, probs[i], k, True)}" if multi_label
                      else f"{classes[y[i]]} ({probability_text(classes, probs[i], k, False)})"
                      for i, k in zip(right, explain_right, strict=True)]
    return {"mistakes": (wrong, explain_wrong, wrong_captions), "correct": (right, explain_right, right_captions)}


def explain_fold(cfg: Config, task: Task, comp: Competition, model: nn.Module, state: FoldState, device: torch.device,
                 n: int, thresholds=None) -> list[Panels]:
    """Grad-CAM panels of a fold's validation rows, chosen from its oof.csv (the best epoch's
    predictions, which are best.pt's), decided at `thresholds`."""
    stage = check_explainable(model, cfg.model.name, state.preprocessing)
    path = cfg.fold_dir(state.fold) / "oof.csv"
    if not path.is_file():
        raise CompetitionError(f"{path} not found: the fold's validation predictions pick the rows to explain; retrain it")
    oof = read_csv(path, "out-of-fold file", text_columns(cfg))
    y, probs = comp.target.encode(oof, path), read_oof_probs(oof, comp.classes)
    rows_of = train_rows(comp, oof[cfg.data.id_column], cfg.data.id_column, path)
    out = []
    for kind, (picked, explain, titles) in pick_rows(y, probs, comp.classes, comp.target.multi_label, n,
                                                      cfg.seed + state.fold, thresholds).items():
        if len(picked):
            images, x = _inputs(cfg, task, comp, state, device, rows_of[picked])
            out.append(Panels(kind, images, grad_cam(model, cfg.model.name, x, explain, stage), stage[0],
                              [f"{oof[cfg.data.id_column].iloc[i]}: {t}" for i, t in zip(picked, titles, strict=True)]))
    return out


def _inputs(cfg: Config, task: Task, comp: Competition, state: FoldState, device: torch.device,
            rows: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    """(what the model sees, as RGB in 0..1; the normalised batch) for rows of train.csv."""
    _, make = task.inputs(cfg, comp, state, device, rows)
    ds, batch_transform = make()
    x = to_device(torch.stack([ds[i] for i in range(len(ds))]), device)
    x = batch_transform(x) if batch_transform is not None else x.float()
    mean = torch.tensor(state.preprocessing["mean"], device=x.device)[None, :, None, None]
    std = torch.tensor(state.preprocessing["std"], device=x.device)[None, :, None, None]
    shown = (x * std + mean).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return shown, x


def panels_figure(p: Panels, cols: int = 3, tile: float = 1.6) -> plt.Figure:
    """A grid of (image, image under its map) pairs, `tile` inches each, captioned above the pair."""
    n = len(p.images)
    cols = min(n, cols)
    rows = math.ceil(n / cols)
    titles = [wrap_caption(t, 2 * tile) for t in p.titles]
    lines = max(t.count("\n") + 1 for t in titles)
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(2 * tile * cols, (tile + 0.2 * lines) * rows + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    color = "crimson" if p.kind == "mistakes" else "darkgreen"
    for k in range(n):
        left, right = axes[k // cols, 2 * (k % cols)], axes[k // cols, 2 * (k % cols) + 1]
        left.imshow(p.images[k])
        right.imshow(p.images[k])
        right.imshow(p.cams[k], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        left.set_title(titles[k], fontsize=CAPTION_PT, color=color, loc="left")
    what = "most confident mistakes" if p.kind == "mistakes" else "right answers (a random sample)"
    fig.suptitle(f"{what}: each image, and its Grad-CAM at {p.stage} for the class whose probability p is given",
                 fontsize=CAPTION_PT, x=0.01, ha="left")
    fig.tight_layout()
    return fig


def panels_rgb(p: Panels) -> np.ndarray:
    """panels_figure as an RGB array."""
    return figure_rgb(panels_figure(p))
