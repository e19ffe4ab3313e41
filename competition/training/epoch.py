"""The training phases of an epoch: train_one_epoch and evaluate, each returning a dict."""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from timm.utils import ModelEmaV3, dispatch_clip_grad, unwrap_model
from torch import nn
from tqdm.auto import tqdm

from competition.core.distributed import mix_seed
from competition.core.errors import CompetitionError
from competition.core.interrupts import fault_after_step
from competition.core.runtime import autocast, probabilities, show_progress, to_device


class Diverged(CompetitionError):
    """A fold's loss or predictions stopped being finite numbers: the fold stops, and nothing it
    computed after that is saved (training.fold, training.estimator_fold)."""


class NonFiniteLoss(Exception):
    """train_one_epoch's word to the fold loop: batch `batch` (0-based, of `of`) gave loss `value`."""

    def __init__(self, batch: int, of: int, value: float):
        super().__init__(f"loss {value} at batch {batch + 1} of {of}")
        self.batch, self.of, self.value = batch, of, value


@dataclass
class Optimization:
    """How losses become weight updates: the optimizer and its schedule, AMP loss scaling,
    gradient accumulation over `accum_steps` batches, clipping, and the EMA of the weights.

    The schedule, the EMA's warmup and everything else count optimizer steps, not batches.
    `steps` is the fold's optimizer steps so far (the EMA's warmup runs over the whole fold)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    scaler: torch.amp.GradScaler | None = None
    accum_steps: int = 1
    clip_grad_norm: float = 0.0
    ema: ModelEmaV3 | None = None
    steps: int = 0

    def backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None and self.scaler.is_enabled():
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def step(self, model: nn.Module) -> None:
        """Clip, step, update the scaler, the schedule and the EMA; clear the gradients."""
        scaling = self.scaler is not None and self.scaler.is_enabled()
        if self.clip_grad_norm > 0:
            if scaling:
                self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            dispatch_clip_grad([p for g in self.optimizer.param_groups for p in g["params"]], self.clip_grad_norm)
        if scaling:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1
        if self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update(unwrap_model(model), step=self.steps)
        fault_after_step(self.steps)  # does nothing outside the tests (core.interrupts.TEST_FAULT)


def _group_sizes(loader, accum_steps: int) -> list[int]:
    """Rows in each accumulation group of this epoch's batches, so that each batch's loss counts
    by its rows: a group of two batches of 32 weighs as one batch of 64, and a short last group
    as the short batch it is."""
    n = len(loader.sampler) if loader.sampler is not None else len(loader.dataset)
    full, rest = divmod(n, loader.batch_size)
    sizes = [loader.batch_size] * full + ([rest] if rest and not loader.drop_last else [])
    return [sum(sizes[i:i + accum_steps]) for i in range(0, len(sizes), accum_steps)]


@dataclass
class EpochControl:
    """Where an epoch starts and what it asks after each step. A resumed epoch starts at
    `first_batch` with the loss so far; every batch's global random state (dropout, drop path)
    comes from (`seed`, its number), so the batches after a mid-epoch checkpoint draw as they
    would have. `after_step(batches, loss_total, samples, check_losses)` runs after every optimizer
    step but the epoch's last (the fold loop's step hooks: mid-epoch saves, stop requests) and
    returns True to end the epoch there; `loss_total` is a device tensor, read only when needed, and
    `check_losses()` raises NonFiniteLoss for any bad batch so far (call it before saving)."""

    first_batch: int = 0
    loss_total: float = 0.0
    samples: int = 0
    seed: int | None = None
    after_step: Callable[[int, torch.Tensor, int, Callable[[], None]], bool] | None = None


# The progress bar reads the loss off the device this often: reading it makes the host wait for
# the GPU, and reading it every step would stop the host queueing work ahead. On a GPU the check
# for a non-finite loss waits as long (the device remembers the first bad batch until then).
PROGRESS_EVERY = 25


class LossCheck:
    """The first batch whose loss is NaN or infinite. Kept on the device and read every `every`
    steps, before anything is saved and at the end: a GPU is not made to wait each step. Weights
    updated from the bad batch on are never saved, since the reads come before every save."""

    def __init__(self, device: torch.device, first: int, batches: int):
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        self.value = torch.zeros((), dtype=torch.float64, device=device)
        self.every = PROGRESS_EVERY if device.type == "cuda" else 1  # a CPU's read costs nothing
        self.first, self.n_batches = first, first + batches  # a resumed epoch starts at batch `first`

    def add(self, i: int, loss: torch.Tensor) -> None:
        """Batch i's loss (its number in the epoch); read back when due."""
        new = ~torch.isfinite(loss) & (self.first_bad < 0)
        self.first_bad = torch.where(new, i, self.first_bad)
        self.value = torch.where(new, loss.double(), self.value)
        if (i + 1 - self.first) % self.every == 0:
            self.check()

    def check(self) -> None:
        """Raise NonFiniteLoss naming the first bad batch seen so far."""
        bad = int(self.first_bad)
        if bad >= 0:
            raise NonFiniteLoss(bad, self.n_batches, float(self.value))


def train_one_epoch(
    model: nn.Module,
    loader,
    opt: Optimization,
    device: torch.device,
    *,
    loss_fn: nn.Module,
    amp_dtype: torch.dtype | None = None,
    batch_transform: Callable[..., torch.Tensor] | None = None,
    mix: Callable | None = None,
    control: EpochControl | None = None,
    desc: str = "train",
) -> dict:
    """One pass over `loader`; the optimizer steps every `opt.accum_steps` batches. A NaN or
    infinite loss raises NonFiniteLoss (LossCheck) before anything more is saved or returned.

    Batches are (x, y), or (x, y, seeds) when `batch_transform(x, seeds)` augments on the device;
    `mix(x, y)` (training.mixing.BatchMix) then mixes the batch on the device and softens its targets.
    Returns the mean loss, the samples seen, each group's learning rate at the last step, the
    batches done and whether `control.after_step` ended the epoch early.
    """
    control = control or EpochControl()
    # The running loss stays on the device: reading it each step would make the CPU wait for the GPU.
    total = torch.full((), control.loss_total, dtype=torch.float64, device=device)
    count, lrs, first = control.samples, {}, control.first_batch
    groups = _group_sizes(loader, opt.accum_steps)
    n_batches, checked = len(loader) + first, LossCheck(device, first, len(loader))
    opt.optimizer.zero_grad(set_to_none=True)
    bar = tqdm(loader, desc=desc, leave=False, initial=first, total=n_batches, disable=not show_progress())
    for i, batch in enumerate(bar, start=first):
        if control.seed is not None:
            torch.manual_seed(mix_seed(control.seed, i))
        x, y = to_device(batch[0], device), batch[1].to(device, non_blocking=True)
        if batch_transform is not None:
            x = batch_transform(x, batch[2] if len(batch) > 2 else None)
        x, target = mix(x, y) if mix is not None else (x, y)
        last_of_group = (i + 1) % opt.accum_steps == 0 or i + 1 == n_batches
        # Under DDP, gradients are averaged across ranks once per optimizer step, not per batch.
        sync = contextlib.nullcontext() if last_of_group or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast(device, amp_dtype):
                loss = loss_fn(model(x), target)
            share = len(y) / groups[(i - first) // opt.accum_steps]
            opt.backward(loss * share if share != 1 else loss)
        total += loss.detach().double() * len(y)
        count += len(y)
        checked.add(i, loss.detach())
        if not bar.disable and (i + 1 - first) % PROGRESS_EVERY == 0:
            bar.set_postfix(loss=f"{float(total) / count:.4f}")
        if not last_of_group:
            continue
        lrs = {group.get("name", str(k)): group["lr"] for k, group in enumerate(opt.optimizer.param_groups)}
        opt.step(model)
        if i + 1 < n_batches and control.after_step is not None and control.after_step(i + 1, total, count, checked.check):
            return _epoch_result(total, count, lrs, i + 1, checked, stopped=True)  # the loop saves where it stopped
    return _epoch_result(total, count, lrs, n_batches, checked, stopped=False)


def _epoch_result(total: torch.Tensor, count: int, lrs: dict, batches: int, checked: LossCheck, stopped: bool) -> dict:
    checked.check()  # every loss of the epoch so far is a number
    return {"loss": float(total) / max(count, 1), "samples": count, "lrs": lrs, "batches": batches,
            "stopped": stopped, "loss_total": float(total)}


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


def non_finite(probs: np.ndarray, loss: float, ids, when: str) -> str | None:
    """What is not a number in a fold's validation predictions (`ids` name their rows) or loss, or None."""
    bad = ~np.isfinite(probs).all(axis=1)
    if bad.any():
        first = ids[int(np.flatnonzero(bad)[0])]
        return (f"its validation predictions are {probs[bad][~np.isfinite(probs[bad])][0]} {when} for {int(bad.sum())} "
                f"of {len(probs)} rows (first id {first!r})")
    if not np.isfinite(loss):
        return f"the validation loss is {loss} {when}"
    return None
