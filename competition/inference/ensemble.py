"""Every fold's best checkpoint → one averaged prediction (folds × TTA views)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from competition.core.errors import CompetitionError
from competition.core.runtime import amp_dtype_for
from competition.core.schema import Config
from competition.data.datasets import build_loader
from competition.data.folder import Competition
from competition.data.transforms import tta_views
from competition.inference.forward import predict_probs
from competition.io.checkpoints import BEST, FoldState, load_checkpoint
from competition.io.runs import check_same_run, check_trained_with
from competition.tasks import Task

log = logging.getLogger(__name__)


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


def load_fold_models(cfg: Config, task: Task, comp: Competition, checkpoints: list[tuple[int, Path]],
                     device: torch.device) -> list[tuple[int, torch.nn.Module, FoldState]]:
    """Rebuild each fold's model from the config stored in its checkpoint and load its weights;
    the folds must be one run (one config, one split)."""
    states = [(path, load_checkpoint(path)) for _, path in checkpoints]
    check_same_run(states)
    loaded = []
    for (fold, path), (_, state) in zip(checkpoints, states, strict=True):
        check_trained_with(cfg, state, path, comp.classes)
        fold_cfg = state.restore_config(path)
        model = task.rebuild_model(cfg, comp, fold_cfg, state)
        try:
            model.load_state_dict(state.model_state_dict)
        except CompetitionError as exc:  # a model stored as text that does not load (models/gbdt.py)
            raise CompetitionError(f"checkpoint {path}: {exc}") from None
        except RuntimeError as exc:
            raise CompetitionError(f"checkpoint {path}: weights do not fit {fold_cfg.model.name} ({str(exc).splitlines()[0][:200]})") from None
        model.to(device).eval()
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        loaded.append((fold, model, state))
    return loaded


def predict_rows(cfg: Config, task: Task, comp: Competition, loaded: list, device: torch.device,
                 tta: list[str], rows: np.ndarray | None = None) -> np.ndarray:
    """Mean class probabilities over the loaded folds × TTA views for test.csv (in its order), or
    for `rows` of train.csv.

    Folds whose models see the data alike (same image size and normalisation) share one pass
    over it: each batch is loaded once, and every such fold's model runs on every TTA view."""
    groups: dict = {}
    for _, model, state in loaded:
        key, make = task.inputs(cfg, comp, state, device, rows)
        groups.setdefault(key, (make, []))[1].append(model)
    amp = amp_dtype_for(device, cfg.train.amp)
    views = tta_views(tta)
    total = np.zeros((len(comp.test) if rows is None else len(rows), len(comp.classes)))
    for make, models in groups.values():
        ds, batch_transform = make()
        loader = build_loader(ds, cfg.predict.batch_size, device, num_workers=cfg.train.num_workers, persistent=False)
        total += predict_probs(models, loader, device, views=views, amp_dtype=amp, batch_transform=batch_transform,
                               multi_label=comp.target.multi_label) * len(models)
    bad = ~np.isfinite(total).all(axis=1)
    if bad.any():  # training stops a fold that diverges; a checkpoint from elsewhere may still hold one
        folds = ", ".join(str(f) for f, _, _ in loaded)
        raise CompetitionError(f"fold(s) {folds} of {cfg.run_dir} predict non-finite probabilities for {int(bad.sum())} "
                               f"of {len(total)} {'test' if rows is None else 'validation'} rows: a model's weights are "
                               f"not numbers; retrain it")
    return total / len(loaded)
