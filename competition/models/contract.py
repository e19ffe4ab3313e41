"""The model contract: what the kit asks of every model it trains in epochs, in timm's own names,
so that a timm backbone fulfils it as timm creates it and another family by defining the same
three things (models/mlp.py does):

- `get_classifier()`: the head. Stage 1 trains it alone and stage 2 gives the rest a lower rate
  (training.stages), train.head_fit writes it, and a pretrained model's starts afresh (models.build).
  When train.head_fit_inputs or train.head_fit_prior reads the pretrained classifier, models.build keeps
  it as `model.pretrained_head` (weight, bias), plain tensors outside the state dict.
- `pretrained_cfg`: the input its weights expect (timm's `input_size`, `mean`, `std`,
  `interpolation`), which timm's resolve_model_data_config turns into the preprocessing each
  checkpoint stores; empty for a model whose input is not an image (it has no preprocessing).
- `feature_info`: its feature stages, shallowest first (timm's `module`, `num_chs`, `reduction`),
  on which Grad-CAM hooks (inference.gradcam); empty for a model without a spatial feature map.

A family is a module with a builder (`Builder`) that returns such a model, and one line in the
registry of the task it serves (`Task.models` in competition/tasks/)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import timm
from torch import nn

from competition.core.schema import Config

# (config, classes, a table's feature count or None, load pretrained weights) → the model, unfitted.
Builder = Callable[[Config, int, int | None, bool], nn.Module]


@runtime_checkable
class ClassifierModel(Protocol):
    """A model the kit trains in epochs (see the module's docstring)."""

    pretrained_cfg: dict
    feature_info: list

    def get_classifier(self) -> nn.Module: ...


def head_of(model: nn.Module) -> nn.Module:
    """The model's classifier head."""
    return model.get_classifier()


def data_config(model: nn.Module, size: int | list[int]) -> dict:
    """The preprocessing its weights expect at `size` (a side, or [height, width]), as plain data;
    {} for a model whose input is not an image."""
    if not model.pretrained_cfg:
        return {}
    dc = timm.data.resolve_model_data_config(model)
    return {
        "mean": [float(v) for v in dc["mean"]],
        "std": [float(v) for v in dc["std"]],
        "interpolation": str(dc.get("interpolation", "bilinear")),
        "size": size if isinstance(size, int) else [int(s) for s in size],  # a side, or [height, width]
    }


def feature_stages(model: nn.Module) -> list[dict]:
    """The model's feature stages (timm's feature_info), shallowest first; [] when it lists none."""
    info = getattr(model, "feature_info", None)
    if not isinstance(info, list) or not all(isinstance(i, dict) and "module" in i for i in info):
        return []
    return info
