"""The training phases of an epoch: train_one_epoch and evaluate, each returning a dict."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from competition.core.runtime import autocast, probabilities, show_progress, to_device


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    loss_fn: nn.Module,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    batch_transform: Callable[..., torch.Tensor] | None = None,
    desc: str = "train",
) -> dict:
    """One pass over `loader`, the scheduler stepped after every optimizer step.

    Batches are (x, y), or (x, y, seeds) when `batch_transform(x, seeds)` augments on the device.
    Returns the mean loss, the samples seen and each group's learning rate at the last step.
    """
    # The running loss stays on the device: reading it every step would make the CPU wait for
    # the GPU each step instead of queueing the next one.
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    lrs = {}
    bar = tqdm(loader, desc=desc, leave=False, disable=not show_progress())
    for batch in bar:
        x, y = to_device(batch[0], device), batch[1].to(device, non_blocking=True)
        if batch_transform is not None:
            x = batch_transform(x, batch[2].tolist() if len(batch) > 2 else None)
        with autocast(device, amp_dtype):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        lrs = {group.get("name", str(i)): group["lr"] for i, group in enumerate(optimizer.param_groups)}
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += loss.detach().double() * len(y)
        count += len(y)
        if bar.disable is False:
            bar.set_postfix(loss=f"{float(total) / count:.4f}")
    return {"loss": float(total) / max(count, 1), "samples": count, "lrs": lrs}


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader,
    device: torch.device,
    *,
    loss_fn: nn.Module,
    amp_dtype: torch.dtype | None = None,
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    multi_label: bool = False,
    desc: str = "valid",
) -> dict:
    """Validation pass: mean loss, probabilities (softmax, or sigmoid per class for multi-label)
    and targets in loader order."""
    model.eval()
    probs, targets, total = [], [], 0.0
    for batch in tqdm(loader, desc=desc, leave=False, disable=not show_progress()):
        x, y = to_device(batch[0], device), batch[1].to(device, non_blocking=True)
        if batch_transform is not None:
            x = batch_transform(x)
        with autocast(device, amp_dtype):
            logits = model(x)
        logits = logits.float()
        total += float(loss_fn(logits, y)) * len(y)
        probs.append(probabilities(logits, multi_label).cpu())
        targets.append(y.cpu())
    p = torch.cat(probs).numpy().astype(np.float64)
    t = torch.cat(targets).numpy()
    return {"loss": total / max(len(t), 1), "probs": p, "targets": t}
