"""The model summary `train` prints at the start of each stage: parameters, input size, what is frozen."""
from __future__ import annotations

from torch import nn

from competition.data.images import hw


def _count(n: int) -> str:
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _input_size(preprocessing: dict, in_features: int | None) -> str:
    if preprocessing:
        height, width = hw(preprocessing["size"])
        return f"3×{height}×{width}"
    return f"{in_features} features"


def frozen_layers(model: nn.Module) -> tuple[list[str], list[str]]:
    """(frozen, partly frozen) top-level layers: those none (or only some) of whose parameters learn."""
    frozen, partly = [], []
    for name, child in model.named_children():
        flags = [p.requires_grad for p in child.parameters()]
        if flags and not any(flags):
            frozen.append(name)
        elif flags and not all(flags):
            partly.append(name)
    return frozen, partly


def model_summary(model: nn.Module, preprocessing: dict, in_features: int | None = None) -> str:
    """One line: the model's class, total and trainable parameters, input size and which top-level
    layers are frozen (call it after the stage has set requires_grad)."""
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    frozen, partly = frozen_layers(model)
    name = getattr(model, "pretrained_cfg", {}).get("architecture") or type(model).__name__
    line = (f"{name}: {_count(total)} parameters, {_count(trainable)} trainable "
            f"({100 * trainable / max(total, 1):.1f}%); input {_input_size(preprocessing, in_features)}; ")
    if not frozen and not partly:
        return line + "nothing frozen"
    return line + "frozen: " + ", ".join(frozen + [f"{n} (in part)" for n in partly])
