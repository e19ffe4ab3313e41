"""Every fold's best checkpoint → one averaged prediction (folds × TTA views); CV from OOF files."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from competition.checkpoints import BEST, check_compatible, load_checkpoint
from competition.config import Config
from competition.data import Competition, encode_labels, image_paths, read_csv
from competition.datasets import ImageDataset, TabularDataset, build_loader
from competition.engine import amp_dtype_for, predict_probs
from competition.errors import CompetitionError
from competition.features import TabularPreprocessor
from competition.finetune import image_cache, restore_config, use_device_augment
from competition.gpu_augment import BatchAugment, CachedRows
from competition.metrics import METRICS
from competition.models import build_model
from competition.tracking import read_oof_probs
from competition.transforms import build_eval_transform, tta_views

log = logging.getLogger(__name__)


def parse_folds(spec: str, n_splits: int) -> list[int]:
    """`all` or a comma list like `0,2`; each in range."""
    if spec == "all":
        return list(range(n_splits))
    try:
        folds = sorted({int(s) for s in spec.split(",") if s.strip()})
    except ValueError:
        raise CompetitionError(f"--folds {spec}: expected 'all' or fold numbers like 0,2") from None
    bad = [f for f in folds if not 0 <= f < n_splits]
    if bad or not folds:
        raise CompetitionError(f"--folds {spec}: folds are 0..{n_splits - 1} (folds.n_splits = {n_splits})")
    return folds


def trained_folds(cfg: Config, folds: list[int], explicit: bool) -> list[tuple[int, Path]]:
    """(fold, best.pt) for the requested folds; asking for an untrained fold by number is an error."""
    found = [(f, cfg.fold_dir(f) / BEST) for f in folds if (cfg.fold_dir(f) / BEST).is_file()]
    if not found:
        raise CompetitionError(
            f"no trained folds in {cfg.run_dir} (no fold*/{BEST}): run `python -m competition.train --fold all` first"
        )
    missing = sorted(set(folds) - {f for f, _ in found})
    if missing and explicit:
        raise CompetitionError(f"fold {missing[0]} has no {cfg.fold_dir(missing[0]) / BEST}: train it or leave it out of --folds")
    if missing:
        log.warning("folds %s are not trained yet: the ensemble uses folds %s", missing, [f for f, _ in found])
    return found


def load_fold_models(cfg: Config, comp: Competition, checkpoints: list[tuple[int, Path]], device: torch.device):
    """Rebuild each fold's model from the config stored in its checkpoint and load its weights."""
    loaded = []
    for fold, path in checkpoints:
        state = load_checkpoint(path)
        check_compatible(state, path, cfg.model.name, cfg.task, comp.classes)
        fold_cfg = restore_config(state, path)
        model = build_model(fold_cfg, len(comp.classes), state.get("in_features"), load_pretrained=False)
        try:
            model.load_state_dict(state["model_state_dict"])
        except RuntimeError as exc:
            raise CompetitionError(f"checkpoint {path}: weights do not fit {fold_cfg.model.name} ({str(exc).splitlines()[0][:200]})") from None
        model.to(device).eval()
        if device.type == "cuda" and cfg.task == "image":
            model = model.to(memory_format=torch.channels_last)
        loaded.append((fold, model, state))
    return loaded


def predict_test(cfg: Config, comp: Competition, loaded: list, device: torch.device, tta: list[str]) -> np.ndarray:
    """Mean class probabilities for test.csv rows, in test.csv order."""
    amp = amp_dtype_for(device, cfg.train.amp)
    bs = cfg.predict.batch_size
    if cfg.task == "tabular":
        probs = []
        for fold, model, state in loaded:
            pre = TabularPreprocessor(state["preprocessor"])
            ds = TabularDataset(comp.test, pre, "test")
            probs.append(predict_probs([model], DataLoader(ds, batch_size=bs), device, amp_dtype=amp, desc=f"fold {fold}"))
        return np.mean(probs, axis=0)
    # Folds trained from one config share their input pipeline: decode each test image once
    # and run every fold's model on every TTA view of that batch.
    groups: dict[tuple, list[nn.Module]] = {}
    for _, model, state in loaded:
        p = state["preprocessing"]
        groups.setdefault((p["size"], tuple(p["mean"]), tuple(p["std"]), p["interpolation"]), []).append(model)
    views = tta_views(tta)
    total = np.zeros((len(comp.test), len(comp.classes)))
    for (size, mean, std, interp), models in groups.items():
        cache = image_cache(cfg, image_paths(comp.test, comp.root, cfg.data.image_column), size)
        on_device = cache is not None and use_device_augment(cfg, device, cached=True)
        if on_device:  # uint8 rows to the device, resized there
            ds = CachedRows(cache)
        else:
            ds = ImageDataset(comp.test, comp.root, build_eval_transform(size, interp), "test",
                              image_column=cfg.data.image_column, images=cache, decode_side=size)
        batch_transform = BatchAugment(size, mean, std)  # uint8 → normalised float on the device
        loader = build_loader(ds, bs, device, num_workers=cfg.train.num_workers, persistent=False)
        total += predict_probs(models, loader, device, views=views, amp_dtype=amp,
                               batch_transform=batch_transform) * len(models)
    return total / len(loaded)


def cv_report(cfg: Config, comp: Competition, folds: list[int]) -> dict:
    """Per-fold and overall out-of-fold score in the competition metric, from each fold's oof.csv."""
    metric = METRICS[cfg.train.metric]
    per_fold, ys, ps = {}, [], []
    for f in folds:
        path = cfg.fold_dir(f) / "oof.csv"
        if not path.is_file():
            continue
        oof = read_csv(path, "out-of-fold file")
        y = encode_labels(oof[cfg.data.target_column], comp.classes, path)
        p = read_oof_probs(oof, comp.classes)
        per_fold[str(f)] = metric(y, p)
        ys.append(y)
        ps.append(p)
    overall = metric(np.concatenate(ys), np.concatenate(ps)) if ys else float("nan")
    return {
        "metric": metric.name,
        "higher_is_better": metric.higher_is_better,
        "folds": per_fold,
        "cv": overall,
        "oof_rows": int(sum(len(y) for y in ys)),
    }
