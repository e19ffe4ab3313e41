"""Training one fold: stage 1 (head only, backbone and BatchNorm frozen) then stage 2 (all layers,
backbone at a lower learning rate), early stopping, best/last checkpoints and exact resume."""
from __future__ import annotations

import functools
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from competition import __version__
from competition.cache import build_cache
from competition.checkpoints import BEST, LAST, FoldLock, checkpoint_bytes, copy_checkpoint, load_checkpoint
from competition.config import Config, config_from_dict, config_to_dict
from competition.data import (
    Competition,
    UndecodableImages,
    check_images_decode,
    encode_labels,
    feature_columns,
    image_paths,
    read_csv,
)
from competition.datasets import ImageDataset, TabularDataset, build_loader
from competition.distributed import (
    SeededSampler,
    ShardSampler,
    World,
    all_mean,
    barrier,
    broadcast_buffers,
    gather_rows,
    mix_seed,
)
from competition.engine import amp_dtype_for, evaluate, train_one_epoch
from competition.errors import CompetitionError
from competition.features import TabularPreprocessor
from competition.fileio import BackgroundWriter, write_bytes, write_csv
from competition.gpu_augment import BatchAugment, CachedRows, supports
from competition.metrics import METRICS
from competition.models import build_model, param_groups, preprocessing, set_stage, train_mode
from competition.tracking import FoldTracker, oof_frame, read_oof_probs, write_summary
from competition.transforms import build_eval_transform, build_train_transform, decode_side

log = logging.getLogger(__name__)

# Keys a resumed run may change; anything else must match the interrupted run's config.
RESUME_MUTABLE = {"train.num_workers", "train.cache", "train.epochs", "train.patience", "predict"}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier at `step` of a stage:
    1. linear warmup from ~0 over `warmup` steps,
    2. cosine decay to 5% of the base rate over the remaining steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class FoldData:
    """Everything the loop needs about one fold's rows."""

    train_ds: torch.utils.data.Dataset
    valid_ds: torch.utils.data.Dataset
    valid_ids: list
    valid_targets: np.ndarray
    in_features: int | None
    preprocessor_state: dict | None
    preprocessing: dict
    train_transform: Callable | None = None  # uint8 batch → normalised (and augmented) on the device
    eval_transform: Callable | None = None


def image_cache(cfg: Config, paths: list[Path], size: int):
    """The decode cache for `paths`, or None when train.cache is off."""
    if cfg.train.cache == "off":
        return None
    return build_cache(paths, size, Path(cfg.output_dir) / "cache")


def use_device_augment(cfg: Config, device: torch.device, cached: bool) -> bool:
    """train.device_augment: auto = on CUDA when the images come from the decode cache and the
    augmentations are ones the device path does; on = wherever they can; off = never."""
    mode = cfg.train.device_augment
    if mode == "off" or not cached or not supports(cfg.image.augment):
        return False
    return mode == "on" or device.type == "cuda"


def build_fold_data(
    cfg: Config, comp: Competition, df: pd.DataFrame, fold: int, prep: dict, device: torch.device | None = None
) -> FoldData:
    d = cfg.data
    train_df = df[df.fold != fold].reset_index(drop=True)
    valid_df = df[df.fold == fold].reset_index(drop=True)
    if cfg.task == "tabular":
        pre = TabularPreprocessor.fit(
            train_df, feature_columns(cfg, comp.train), id_column=d.id_column, target_column=d.target_column
        )
        kw = {"target_column": d.target_column, "classes": comp.classes}
        return FoldData(
            TabularDataset(train_df, pre, "train", **kw),
            TabularDataset(valid_df, pre, "train", **kw),
            valid_df[d.id_column].tolist(),
            encode_labels(valid_df[d.target_column], comp.classes),
            pre.n_features,
            pre.state,
            {},
        )
    size = prep["size"]
    cache = image_cache(cfg, image_paths(df, comp.root, d.image_column), size)
    train_rows = np.flatnonzero((df.fold != fold).to_numpy())
    valid_rows = np.flatnonzero((df.fold == fold).to_numpy())
    valid_ids = valid_df[d.id_column].tolist()
    valid_targets = encode_labels(valid_df[d.target_column], comp.classes)
    if cache is not None and use_device_augment(cfg, device or torch.device("cpu"), cached=True):
        train_targets = encode_labels(train_df[d.target_column], comp.classes)
        return FoldData(
            CachedRows(cache.subset(train_rows), train_targets),
            CachedRows(cache.subset(valid_rows), valid_targets),
            valid_ids, valid_targets, None, None, prep,
            BatchAugment(size, prep["mean"], prep["std"], cfg.image.augment, train=True),
            BatchAugment(size, prep["mean"], prep["std"]),
        )
    kw = {"image_column": d.image_column, "target_column": d.target_column, "classes": comp.classes}
    train_tf = build_train_transform(size, cfg.image.augment, prep["interpolation"])
    eval_tf = build_eval_transform(size, prep["interpolation"])
    normalise = BatchAugment(size, prep["mean"], prep["std"])
    return FoldData(
        ImageDataset(train_df, comp.root, train_tf, "train", images=cache.subset(train_rows) if cache else None,
                     decode_side=decode_side(size, cfg.image.augment), **kw),
        ImageDataset(valid_df, comp.root, eval_tf, "train", images=cache.subset(valid_rows) if cache else None,
                     decode_side=size, **kw),
        valid_ids,
        valid_targets,
        None,
        None,
        prep,
        normalise,
        normalise,
    )


def _check_resume_config(saved: dict, cfg: Config, path: Path) -> None:
    from competition.tracking import flat_hparams

    now, then = flat_hparams(config_to_dict(cfg)), flat_hparams(saved)
    differ = [
        k for k in sorted(set(now) | set(then))
        if now.get(k) != then.get(k) and k not in RESUME_MUTABLE and k.split(".")[0] not in RESUME_MUTABLE
    ]
    if differ:
        shown = ", ".join(f"{k} ({then.get(k)!r} → {now.get(k)!r})" for k in differ[:5])
        raise CompetitionError(f"--resume: {path} was trained with another config: {shown}")


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


def fit_fold(
    cfg: Config,
    comp: Competition,
    df: pd.DataFrame,
    fold: int,
    *,
    device: torch.device,
    world: World | None = None,
    resume: bool = False,
) -> dict:
    """Train one fold end to end; returns {"fold", "best_metric", "best_epoch"}."""
    fold_dir = cfg.fold_dir(fold)
    world = world or World()
    if world.distributed and cfg.task == "image":
        # One rank decodes the cache while the others wait, then every rank maps that file.
        if world.is_main:
            image_cache(cfg, image_paths(df, comp.root, cfg.data.image_column), cfg.image.size)
        barrier(world)
    if world.is_main:
        with FoldLock(fold_dir) as lock:
            return _fit_fold(cfg, comp, df, fold, device=device, world=world, resume=resume, lock=lock)
    return _fit_fold(cfg, comp, df, fold, device=device, world=world, resume=resume, lock=None)


def _fit_fold(cfg, comp, df, fold, *, device, world, resume, lock) -> dict:
    fold_dir = cfg.fold_dir(fold)
    metric = METRICS[cfg.train.metric]
    t = cfg.train
    for stale in fold_dir.glob(".*.tmp"):  # a killed run's unfinished writes; we hold the lock
        stale.unlink(missing_ok=True)

    state = None
    if resume and (fold_dir / LAST).is_file():
        state = load_checkpoint(fold_dir / LAST)
        _check_resume_config(state["config"], cfg, fold_dir / LAST)
        if state.get("finished"):
            log.info("fold %d already finished (best %s %.5f at epoch %d)", fold, metric.name, state["best_metric"], state["best_epoch"])
            return {"fold": fold, "best_metric": state["best_metric"], "best_epoch": state["best_epoch"]}
        log.info("fold %d: resuming after epoch %d (stage %d)", fold, state["epoch"], state["stage"])
    elif resume:
        log.info("fold %d: no %s to resume from; starting from scratch", fold, fold_dir / LAST)

    seed_everything(mix_seed(cfg.seed, fold))
    num_classes = len(comp.classes)
    if cfg.task == "tabular":
        data = build_fold_data(cfg, comp, df, fold, {})
        model = build_model(cfg, num_classes, data.in_features, load_pretrained=False)
    else:
        model = build_model(cfg, num_classes, load_pretrained=state is None)
        data = build_fold_data(cfg, comp, df, fold, preprocessing(model, cfg.image.size), device)
    if state is not None:
        model.load_state_dict(state["model_state_dict"])
    model.to(device)
    if device.type == "cuda" and cfg.task == "image":
        model = model.to(memory_format=torch.channels_last)
    base_model = model

    train_sampler = SeededSampler(len(data.train_ds), mix_seed(cfg.seed, fold), shuffle=True, world=world)
    # Batch norm layers cannot learn from a batch of one: drop a lone last row.
    drop_last = len(train_sampler) % t.batch_size == 1  # rows per rank under DDP
    train_loader = build_loader(data.train_ds, t.batch_size, device, num_workers=t.num_workers, sampler=train_sampler,
                                drop_last=drop_last)
    valid_loader = build_loader(data.valid_ds, t.batch_size * 2, device, num_workers=t.num_workers,
                                sampler=ShardSampler(len(data.valid_ds), world))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
    eval_loss = nn.CrossEntropyLoss()
    amp_dtype = amp_dtype_for(device, t.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    history: list[dict] = list(state["history"]) if state else []
    best_metric = state["best_metric"] if state else None
    best_epoch = state["best_epoch"] if state else 0
    best_loss = state["best_loss"] if state else math.inf
    epoch = state["epoch"] if state else 0  # epochs completed
    tracker = FoldTracker(fold_dir, purge_step=epoch + 1 if state else None, enabled=world.is_main)
    common = {
        "format": 1,
        "kit_version": __version__,
        "fold": fold,
        "config": config_to_dict(cfg),
        "classes": list(comp.classes),
        "metric_name": metric.name,
        "higher_is_better": metric.higher_is_better,
        "preprocessing": data.preprocessing,
        "preprocessor": data.preprocessor_state,
        "in_features": data.in_features,
    }

    writer = BackgroundWriter()
    try:
        stages = [(1, t.freeze_epochs), (2, t.epochs)] if cfg.task == "image" else [(2, t.freeze_epochs + t.epochs)]
        last_stage = max(stage for stage, n in stages if n > 0)
        stage_offset = 0
        for stage, n_epochs in stages:
            if n_epochs == 0:
                continue
            stage_first = stage_offset
            stage_offset += n_epochs
            if state is not None and (stage < state["stage"] or (stage == state["stage"] and state["stage_complete"])):
                continue  # done before the interruption
            resuming_here = state is not None and stage == state["stage"]
            set_stage(base_model, stage)
            module: nn.Module = base_model
            if t.compile:
                module = torch.compile(module)
            if world.distributed:
                module = nn.parallel.DistributedDataParallel(
                    module, device_ids=[device.index] if device.type == "cuda" else None
                )
            # A table's MLP has no pretrained body: every layer learns at train.lr.
            mult = t.backbone_lr_mult if cfg.task == "image" else 1.0
            optimizer = torch.optim.AdamW(param_groups(base_model, stage, t.lr, mult, t.weight_decay))
            bad_epochs = 0
            if resuming_here:
                optimizer.load_state_dict(state["optimizer_state_dict"])
                if state.get("scaler_state_dict"):
                    scaler.load_state_dict(state["scaler_state_dict"])
                bad_epochs = state["bad_epochs"]
            steps_per_epoch = len(train_loader)
            total_steps = n_epochs * steps_per_epoch
            warmup = int(round(t.warmup_epochs * steps_per_epoch))
            start = max(epoch, stage_first)
            for e in range(start, stage_first + n_epochs):
                began = time.time()
                seed_everything(mix_seed(cfg.seed, fold, e))
                train_sampler.set_epoch(e)
                train_mode(base_model, stage, t.freeze_bn)  # DDP and compile wrappers stay in train mode
                step = (e - stage_first) * steps_per_epoch
                train = train_one_epoch(
                    module, train_loader, optimizer, device, loss_fn=loss_fn,
                    lr_factor=functools.partial(lr_factor, total=total_steps, warmup=warmup), step=step,
                    amp_dtype=amp_dtype, scaler=scaler, batch_transform=data.train_transform,
                    desc=f"fold {fold} epoch {e + 1}",
                )
                lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
                broadcast_buffers(base_model, world)  # validate with the statistics best.pt will hold
                result = evaluate(base_model, valid_loader, device, loss_fn=eval_loss, amp_dtype=amp_dtype,
                                  batch_transform=data.eval_transform, desc="valid")
                probs = gather_rows(result["probs"], len(data.valid_ds), world)
                val_loss = all_mean(result["loss"], len(result["targets"]), world)
                train_loss = all_mean(train["loss"], train["samples"], world)
                score = metric(data.valid_targets, probs)
                epoch = e + 1
                # A tie on the metric (accuracy saturates) goes to the lower validation loss.
                improved = metric.better(score, best_metric) or (score == best_metric and val_loss < best_loss)
                if improved:
                    best_metric, best_epoch, best_loss = score, epoch, val_loss
                    bad_epochs = 0
                else:
                    bad_epochs += 1
                stop = t.patience > 0 and bad_epochs >= t.patience
                row = {
                    "epoch": epoch, "stage": stage, "train_loss": train_loss, "val_loss": val_loss,
                    "metric": score, "best": improved, "seconds": round(time.time() - began, 2),
                    **{f"lr_{k}": v for k, v in lrs.items()},
                }
                history.append(row)
                ckpt = {
                    **common,
                    "epoch": epoch,
                    "stage": stage,
                    "stage_complete": stop or epoch == stage_first + n_epochs,
                    # the fold's last epoch marks itself, so no rewrite of last.pt at the end
                    "finished": stage == last_stage and (stop or epoch == stage_first + n_epochs),
                    "model_state_dict": _unwrap(module).state_dict(),
                    "optimizer_state_dict": optimizer.state_dict(),
                    "scaler_state_dict": scaler.state_dict() if scaler.is_enabled() else None,
                    "loss": val_loss,
                    "metric": score,
                    "best_metric": best_metric,
                    "best_epoch": best_epoch,
                    "best_loss": best_loss,
                    "bad_epochs": bad_epochs,
                    "history": history,
                }
                if world.is_main:
                    tracker.log_epoch(epoch, row, metric.name, lrs)
                    oof = oof_frame(data.valid_ids, cfg.data.id_column, cfg.data.target_column, comp.classes,
                                    data.valid_targets, probs) if improved else None
                    # Serialised here, written (in this order, each atomically) while the next epoch trains.
                    writer.submit(_write_epoch, fold_dir, checkpoint_bytes(ckpt), oof, list(history))
                barrier(world)
                log.info(
                    "fold %d | epoch %d/%d stage %d | train_loss %.4f | val_loss %.4f | %s %.5f%s | %.1fs",
                    fold, epoch, t.freeze_epochs + t.epochs, stage, train_loss, val_loss, metric.name, score,
                    " *" if improved else "", row["seconds"],
                )
                if stop and epoch < stage_first + n_epochs:
                    log.info("fold %d: no improvement for %d epochs, stage %d ends early", fold, bad_epochs, stage)
                    break
            state = None  # later stages start fresh
    finally:
        writer.close()  # the last epoch's files are in place before anything reads them

    if world.is_main:
        # Figures of the best epoch, drawn once (from its oof.csv, which a resumed run also has)
        # rather than on every improvement: each costs as much as a small model's epoch.
        best_probs = read_oof_probs(read_csv(fold_dir / "oof.csv", "out-of-fold file"), comp.classes)
        image_of = data.valid_ds.raw if cfg.task == "image" else None
        tracker.log_figures(best_epoch, data.valid_targets, best_probs, comp.classes, image_of)
        tracker.log_hparams(config_to_dict(cfg), metric.name, best_metric, best_epoch)
    tracker.close()
    barrier(world)
    return {"fold": fold, "best_metric": best_metric, "best_epoch": best_epoch}


def _write_epoch(fold_dir: Path, checkpoint: bytes, oof: pd.DataFrame | None, history: list[dict]) -> None:
    """One epoch's files, each atomic, in this order: best.pt and its oof.csv (when the epoch
    improved), summary.csv, then last.pt (a link to best.pt when they are the same epoch)."""
    if oof is not None:
        write_bytes(fold_dir / BEST, checkpoint)
        write_csv(fold_dir / "oof.csv", oof)
    write_summary(fold_dir, history)
    if oof is not None:
        copy_checkpoint(fold_dir / BEST, fold_dir / LAST)
    else:
        write_bytes(fold_dir / LAST, checkpoint)


def prepare_images(cfg: Config, comp: Competition) -> None:
    """Decode every train and test image once before training: broken files fail now, listed.

    With the decode cache on, that one decode pass is the cache build (train and test images,
    at the training size): every fold and predict then read it, and no image is decoded twice.
    """
    if cfg.task != "image":
        return
    train = image_paths(comp.train, comp.root, cfg.data.image_column)
    test = image_paths(comp.test, comp.root, cfg.data.image_column)
    if cfg.train.cache == "off":
        check_images_decode(train + test, Path(cfg.output_dir) / "cache")
        return
    failures: list[str] = []
    for paths in (train, test):
        try:
            image_cache(cfg, paths, cfg.image.size)
        except UndecodableImages as exc:
            failures += exc.failures
    if failures:  # train and test in one message, as the check without the cache gives it
        raise UndecodableImages(failures)


def restore_config(state: dict, path: Path) -> Config:
    """The config stored in a checkpoint, as a Config."""
    try:
        return config_from_dict(state["config"])
    except CompetitionError as exc:
        raise CompetitionError(f"checkpoint {path} holds a config this kit cannot read: {exc}") from None
