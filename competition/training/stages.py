"""The two fine-tuning stages: which parameters learn, which BatchNorm layers keep their statistics,
the optimizer's parameter groups, the learning-rate schedule and early stopping."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from competition.core.schema import TrainConfig
from competition.models.contract import head_of


@dataclass(frozen=True)
class Stage:
    """Stage 1 trains the head alone on the frozen backbone; stage 2 trains every layer.
    Epochs are counted over the whole fold: this stage runs epochs first+1 .. first+epochs."""

    number: int
    epochs: int
    first: int  # epochs of the fold before this stage

    @property
    def end(self) -> int:
        return self.first + self.epochs


def plan_stages(t: TrainConfig, two_stages: bool) -> list[Stage]:
    """The stages a fold runs, empty ones left out. A model without a pretrained body (a table's
    MLP) runs stage 2 alone, for freeze_epochs + epochs."""
    lengths = [(1, t.freeze_epochs), (2, t.epochs)] if two_stages else [(2, t.freeze_epochs + t.epochs)]
    stages, first = [], 0
    for number, epochs in lengths:
        if epochs > 0:
            stages.append(Stage(number, epochs, first))
            first += epochs
    return stages


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier at optimizer step `step` of a stage:
    1. linear warmup from ~0 over `warmup` steps,
    2. cosine decay to 5% of the base rate over the remaining steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))


def stage_schedule(optimizer, total_steps: int, warmup_steps: int, done: int = 0) -> LambdaLR:
    """Each group's rate is its base rate × lr_factor(step), stepped once per optimizer step;
    `done` steps of the stage already ran (a resumed stage), so the rate is a pure function of
    the step and needs no state of its own in the checkpoint.

    LambdaLR rather than timm's CosineLRScheduler: timm's floor (`lr_min`) is one absolute
    rate for every group, and the backbone's group runs at a fiftieth of the head's; a floor
    relative to each group's own rate keeps the ratio between them through the decay."""
    # LambdaLR reads each group's `initial_lr` when resuming: the restored optimizer state has it.
    # With fp16 the GradScaler skips the steps whose gradients overflow, and the schedule still
    # advances on those by design: torch's warning about that order says nothing to a user.
    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`")
    return LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup_steps), last_epoch=done - 1)


class EarlyStopping:
    """Counts epochs without improvement on the metric; a tie goes to the lower validation loss
    (accuracy saturates on small folds). The best over the whole fold is kept across stages;
    the counter restarts with each stage."""

    def __init__(self, higher_is_better: bool, patience: int):
        self.higher_is_better, self.patience = higher_is_better, patience
        self.best_metric: float | None = None
        self.best_loss, self.best_epoch, self.bad_epochs = math.inf, 0, 0

    def update(self, epoch: int, score: float, loss: float) -> bool:
        """Record an epoch's score; True when it is the best so far."""
        better = self.best_metric is None or (score > self.best_metric if self.higher_is_better else score < self.best_metric)
        if better or (score == self.best_metric and loss < self.best_loss):
            self.best_metric, self.best_loss, self.best_epoch, self.bad_epochs = score, loss, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    return list(head_of(model).parameters())


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    head = {id(p) for p in head_parameters(model)}
    return [p for p in model.parameters() if id(p) not in head]


def _backbone_norm_layers(model: nn.Module) -> list[nn.Module]:
    head = {id(m) for m in head_of(model).modules()}
    return [
        m for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in head
    ]


def set_stage(model: nn.Module, stage: int) -> None:
    """Stage 1: only the head learns. Stage 2: everything learns."""
    for p in backbone_parameters(model):
        p.requires_grad_(stage != 1)
    for p in head_parameters(model):
        p.requires_grad_(True)


def train_mode(model: nn.Module, stage: int, freeze_bn: bool = False) -> None:
    """model.train(), but in stage 1 (and in stage 2 too with `freeze_bn`) the backbone's
    BatchNorm layers stay in eval mode: their running statistics are neither updated nor
    replaced by batch statistics. Their scale and shift still learn in stage 2."""
    model.train()
    if stage == 1 or freeze_bn:
        for m in _backbone_norm_layers(model):
            m.eval()


def param_groups(model: nn.Module, stage: int, lr: float, backbone_lr_mult: float, weight_decay: float,
                 layer_decay: float = 0.0) -> list[dict]:
    """Stage 1: the head at `lr`. Stage 2: the backbone at lr × backbone_lr_mult, the head at lr;
    with `layer_decay`, the backbone split by depth along timm's group matcher, each layer group
    at lr × backbone_lr_mult × layer_decay^(layers above it) (timm's param_groups_layer_decay,
    which also leaves 1-D parameters — norms, biases — out of weight decay)."""
    groups = [{"name": "head", "params": head_parameters(model), "lr": lr, "weight_decay": weight_decay}]
    if stage != 2:
        return groups
    blr = lr * backbone_lr_mult
    if not layer_decay:
        return [{"name": "backbone", "params": backbone_parameters(model), "lr": blr, "weight_decay": weight_decay}, *groups]
    from timm.optim import param_groups_layer_decay

    head = {id(p) for p in head_parameters(model)}
    layered = []
    for k, group in enumerate(param_groups_layer_decay(model, weight_decay=weight_decay, layer_decay=layer_decay)):
        params = [p for p in group["params"] if id(p) not in head]
        if params:
            layered.append({"name": f"backbone{k}", "params": params, "lr": blr * group["lr_scale"],
                            "weight_decay": group["weight_decay"]})
    return [*layered, *groups]
