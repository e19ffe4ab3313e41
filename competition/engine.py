"""The loop's phases: train_one_epoch, evaluate and predict_probs, each returning dicts or arrays."""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm


def show_progress() -> bool:
    """Progress bars on a terminal only: logs and CI stay readable."""
    return sys.stderr.isatty()


def amp_dtype_for(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 where the GPU has it, else fp16; no autocast on the CPU."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if x.dim() == 4 and device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    loss_fn: nn.Module,
    lr_factor: Callable[[int], float],
    step: int,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    batch_transform: Callable[..., torch.Tensor] | None = None,
    desc: str = "train",
) -> dict:
    """One pass over `loader`; the learning rate of every group is base_lr × lr_factor(step).

    Batches are (x, y), or (x, y, seeds) when `batch_transform(x, seeds)` augments on the device.
    """
    # The running loss stays on the device: reading it every step would make the CPU wait for
    # the GPU each step instead of queueing the next one.
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not show_progress())
    for batch in bar:
        x, y = batch[0], batch[1]
        factor = lr_factor(step)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        x, y = to_device(x, device), y.to(device, non_blocking=True)
        if batch_transform is not None:
            x = batch_transform(x, batch[2].tolist() if len(batch) > 2 else None)
        with _autocast(device, amp_dtype):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        step += 1
        total += loss.detach().double() * len(y)
        count += len(y)
        if bar.disable is False:
            bar.set_postfix(loss=f"{float(total) / count:.4f}")
    return {"loss": float(total) / max(count, 1), "samples": count, "step": step}


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader,
    device: torch.device,
    *,
    loss_fn: nn.Module,
    amp_dtype: torch.dtype | None = None,
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    desc: str = "valid",
) -> dict:
    """Validation pass: mean loss, softmax probabilities and targets in loader order."""
    model.eval()
    probs, targets, total = [], [], 0.0
    for batch in tqdm(loader, desc=desc, leave=False, disable=not show_progress()):
        x, y = to_device(batch[0], device), batch[1].to(device, non_blocking=True)
        if batch_transform is not None:
            x = batch_transform(x)
        with _autocast(device, amp_dtype):
            logits = model(x)
        logits = logits.float()
        total += float(loss_fn(logits, y)) * len(y)
        probs.append(logits.softmax(1).cpu())
        targets.append(y.cpu())
    p = torch.cat(probs).numpy().astype(np.float64)
    t = torch.cat(targets).numpy()
    return {"loss": total / max(len(t), 1), "probs": p, "targets": t}


@torch.inference_mode()
def predict_probs(
    models: Sequence[nn.Module],
    loader,
    device: torch.device,
    *,
    views: Sequence[Callable[[torch.Tensor], torch.Tensor]] = (lambda x: x,),
    amp_dtype: torch.dtype | None = None,
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    desc: str = "predict",
) -> np.ndarray:
    """Mean softmax over every model × view, each batch loaded once for all of them."""
    for m in models:
        m.eval()
    out = []
    for x in tqdm(loader, desc=desc, leave=False, disable=not show_progress()):
        if isinstance(x, (list, tuple)):
            x = x[0]
        x = to_device(x, device)
        if batch_transform is not None:
            x = batch_transform(x)
        # Each view once per batch, not once per model; to_device puts rotated and transposed
        # views back in channels_last on CUDA.
        batches = [to_device(view(x), device) for view in views]
        acc = None
        for model in models:
            for xv in batches:
                with _autocast(device, amp_dtype):
                    p = model(xv).float().softmax(1)
                acc = p if acc is None else acc + p
        out.append((acc / (len(models) * len(views))).cpu())
    return torch.cat(out).numpy().astype(np.float64)
