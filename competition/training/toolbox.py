"""What a fold trains with beyond the plain loop, built from the config: the sampler (class-balanced
or not), the losses (class weights, focal), the batch mixer (Mixup/CutMix), the EMA of the
weights, and each stage's optimization (groups, layer decay, schedule, accumulation, clipping)."""
from __future__ import annotations

import math

import torch
from timm.utils import ModelEmaV3
from torch import nn

from competition.core.distributed import SeededSampler, World, mix_seed
from competition.core.schema import Config
from competition.data.targets import Target
from competition.training.epoch import Optimization
from competition.training.imbalance import class_weights, sampler_weights
from competition.training.losses import eval_loss, train_loss
from competition.training.mixing import BatchMix
from competition.training.stages import Stage, param_groups, set_stage, stage_schedule


def fold_sampler(cfg: Config, train_targets, fold: int, world: World) -> SeededSampler:
    """The fold's training sampler: a seeded shuffle, or seeded draws weighted by class (train.sampler)."""
    return SeededSampler(len(train_targets), mix_seed(cfg.seed, fold), shuffle=True, world=world,
                         weights=sampler_weights(cfg.train.sampler, train_targets))


def fold_losses(cfg: Config, target: Target, train_targets, device: torch.device) -> tuple[nn.Module, nn.Module, BatchMix | None]:
    """(training loss, validation loss, batch mixer). Mixup/CutMix produce soft targets with label
    smoothing folded in, so their loss smooths nothing itself."""
    t = cfg.train
    weights = class_weights(t.class_weights, train_targets, len(target.classes), target.multi_label)
    mixer = BatchMix(t, len(target.classes), target.multi_label) if t.mixup_alpha > 0 or t.cutmix_alpha > 0 else None
    loss = train_loss(target, t, weights, 0.0 if mixer is not None else t.label_smoothing)
    return loss.to(device), eval_loss(target).to(device), mixer


def fold_ema(cfg: Config, model: nn.Module) -> ModelEmaV3 | None:
    """timm's EMA of the weights with its warmup (the decay grows with the optimizer steps towards
    train.ema_decay), kept in float32 beside the model; None when train.ema_decay is 0."""
    if cfg.train.ema_decay <= 0:
        return None
    return ModelEmaV3(model, decay=cfg.train.ema_decay, use_warmup=True)


def steps_per_epoch(batches: int, accum_steps: int) -> int:
    return math.ceil(batches / accum_steps)


def stage_optimization(cfg: Config, model: nn.Module, stage: Stage, two_stages: bool, world: World,
                       device: torch.device, batches: int, start: int, scaler, ema,
                       saved_optimizer: dict | None = None, within: int = 0) -> tuple[nn.Module, Optimization]:
    """The module to step (compiled, DDP-wrapped) and the stage's optimization: a fresh AdamW over
    its parameter groups (or, resuming, the saved one's state), the warmup + cosine schedule
    counted in optimizer steps from epoch `start` (and `within` batches into it, resuming a mid-epoch
    last.pt), accumulation, clipping and the EMA."""
    t = cfg.train
    set_stage(model, stage.number)
    module: nn.Module = model
    if t.compile:
        module = torch.compile(module)
    if world.distributed:
        module = nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    # A table's MLP has no pretrained body: every layer learns at train.lr.
    mult = t.backbone_lr_mult if two_stages else 1.0
    optimizer = torch.optim.AdamW(param_groups(model, stage.number, t.lr, mult, t.weight_decay,
                                               t.layer_decay if stage.number == 2 else 0.0))
    if saved_optimizer is not None:  # before the schedule, which reads each group's initial_lr from it
        optimizer.load_state_dict(saved_optimizer)
    steps = steps_per_epoch(batches, t.accum_steps)
    done_within = steps_per_epoch(within, t.accum_steps)
    scheduler = stage_schedule(optimizer, stage.epochs * steps, int(round(t.warmup_epochs * steps)),
                               done=(start - stage.first) * steps + done_within)
    return module, Optimization(optimizer, scheduler, scaler, t.accum_steps, t.clip_grad_norm, ema,
                                start * steps + done_within)
