"""Weights combined at the end of a fold: train.average (the mean of the K best epochs' weights, or a
greedy soup: Wortsman et al. 2022, "Model soups") and train.interpolate (WiSE-FT: Wortsman et al.
2022, the stage-2 weights mixed with the stage-1 weights at the α that scores best on the fold's
validation rows). The result is written as the fold's best.pt, so predict needs nothing new.

The weights a fold may combine are kept as files under fold<k>/kept/ (the scored weights of the
epochs `kept_epochs` names, a pure function of the history), written before the epoch's last.pt
and pruned after it: a killed run resumes with exactly the files an uninterrupted one would have.

BatchNorm: averaged running statistics are not the statistics of the averaged weights. When the
members' statistics differ (stage 2 with train.freeze_bn off), they are recomputed on the fold's
training rows in their validation view (torch.optim.swa_utils.update_bn); when they are identical
(freeze_bn on, or head-only epochs), they are the statistics of every member and are kept.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from timm.utils import random_seed
from torch import nn

from competition.core.distributed import mix_seed
from competition.core.errors import CompetitionError
from competition.core.schema import TrainConfig
from competition.io.checkpoints import BEST, LAST, checkpoint_bytes, load_checkpoint
from competition.io.files import write_bytes, write_csv, write_json
from competition.training.callbacks import Callback, FoldRun, Stop

log = logging.getLogger(__name__)

KEPT_DIR = "kept"
ALPHAS = [round(float(a), 2) for a in np.linspace(0.0, 1.0, 11)]  # WiSE-FT's grid of mixing coefficients
BN_STATS = ("running_mean", "running_var")

# score(model) → (validation score, validation loss, validation probabilities)
Scorer = Callable[[nn.Module], tuple[float, float, np.ndarray]]


def combines(t: TrainConfig) -> bool:
    return t.average != "off" or t.interpolate != "off"


def _rank(rows: list[dict], higher_is_better: bool) -> list[dict]:
    """Epochs best first: by score (NaN last), then lower validation loss, then earlier."""
    def key(r: dict) -> tuple:
        s = r["metric"]
        bad = s is None or (isinstance(s, float) and math.isnan(s))
        return (bad, 0.0 if bad else (-s if higher_is_better else s), r["val_loss"], r["epoch"])
    return sorted(rows, key=key)


def keeps(t: TrainConfig) -> bool:
    """Whether the fold keeps epochs' weights under kept/: to combine them, or because train.keep_top_k asks."""
    return combines(t) or t.keep_top_k > 0


def top_k_epochs(t: TrainConfig, history: list[dict], higher_is_better: bool) -> set[int]:
    """train.keep_top_k: the K best epochs so far, which stay under kept/ when the fold ends."""
    return {r["epoch"] for r in _rank(history, higher_is_better)[:t.keep_top_k]}


def kept_epochs(t: TrainConfig, history: list[dict], higher_is_better: bool) -> set[int]:
    """The epochs whose weights the end of the fold may need (or train.keep_top_k keeps), given the history so far."""
    need = top_k_epochs(t, history, higher_is_better)
    if t.average != "off":
        need |= {r["epoch"] for r in _rank(history, higher_is_better)[:t.average_k]}
    if t.interpolate != "off":
        for stage in (1, 2) if t.average == "off" else (1,):
            rows = [r for r in history if r["stage"] == stage]
            if rows:
                need.add(_rank(rows, higher_is_better)[0]["epoch"])
    return need


def kept_files(t: TrainConfig) -> int:
    """Most files under a fold's kept/ at once (one more while one is replaced): for the disk estimate."""
    if not keeps(t):
        return 0
    return (t.average_k if t.average != "off" else 0) + (2 if t.interpolate != "off" else 0) + t.keep_top_k + 1


@dataclass
class KeptWrites:
    """One epoch's part of kept/: its weights (when needed) written before last.pt, the rest pruned after."""

    folder: Path
    epoch: int
    data: bytes | None
    keep: set[int]

    def write(self) -> None:
        if self.data is not None:
            self.folder.mkdir(exist_ok=True)
            write_bytes(self.folder / f"epoch{self.epoch}.pt", self.data)

    def prune(self) -> None:
        if not self.folder.is_dir():
            return
        for path in self.folder.iterdir():  # dropped epochs and a killed write's temporary files
            m = re.fullmatch(r"epoch(\d+)\.pt", path.name)
            if m is None or int(m.group(1)) not in self.keep:
                path.unlink(missing_ok=True)


class KeptWeights:
    """The fold's kept/ folder: which epochs it holds, their snapshots, loading them back."""

    def __init__(self, fold_dir: Path, t: TrainConfig, higher_is_better: bool):
        self.folder, self.t, self.higher = fold_dir / KEPT_DIR, t, higher_is_better

    def epoch_writes(self, epoch: int, history: list[dict], weights: nn.Module) -> KeptWrites:
        keep = kept_epochs(self.t, history, self.higher)
        data = None
        if epoch in keep:  # serialised now: a snapshot the next steps cannot change
            buffer = io.BytesIO()
            torch.save(weights.state_dict(), buffer)
            data = buffer.getvalue()
        return KeptWrites(self.folder, epoch, data, keep)

    def load(self, epoch: int) -> dict[str, torch.Tensor]:
        path = self.folder / f"epoch{epoch}.pt"
        if not path.is_file():
            raise CompetitionError(f"{path} not found: the kept weights of epoch {epoch} are gone; train the fold again")
        return torch.load(path, map_location="cpu", weights_only=True)

    def keep_only(self, epochs: set[int]) -> None:
        """The fold has ended: only these epochs' files stay (train.keep_top_k's), none when it is 0."""
        if not epochs:
            shutil.rmtree(self.folder, ignore_errors=True)
        else:
            KeptWrites(self.folder, 0, None, epochs).prune()


def average_states(states: list[dict]) -> dict:
    """The element-wise mean of floating-point tensors; counters (num_batches_tracked) from the first."""
    if len(states) == 1:
        return dict(states[0])
    return {k: torch.stack([s[k] for s in states]).mean(0) if v.is_floating_point() else v
            for k, v in states[0].items()}


def mix_states(first: dict, second: dict, alpha: float) -> dict:
    """(1 − α)·first + α·second; α = 0 is `first` itself and α = 1 `second`, exactly."""
    if alpha == 0.0:
        return dict(first)
    if alpha == 1.0:
        return dict(second)
    return {k: torch.lerp(v, second[k], alpha) if v.is_floating_point() else v for k, v in first.items()}


def same_batchnorm(states: list[dict]) -> bool:
    """Whether every state holds the same BatchNorm running statistics (or there are none)."""
    keys = [k for k in states[0] if k.endswith(BN_STATS)]
    return all(torch.equal(s[k], states[0][k]) for s in states[1:] for k in keys)


@dataclass
class Scored:
    state: dict
    score: float
    loss: float
    probs: np.ndarray


@dataclass
class Combined:
    """What the fold's best.pt becomes, and the record of how (written as averaging.json)."""

    result: Scored
    record: dict = field(default_factory=dict)


class Combiner:
    """Scores candidate weights on the fold's validation rows, recomputing BatchNorm statistics on
    its training rows when the candidate's members disagree on them."""

    def __init__(self, model: nn.Module, score: Scorer, recompute_bn: Callable[[nn.Module], None], higher_is_better: bool):
        self.model, self.score, self.recompute_bn, self.higher = model, score, recompute_bn, higher_is_better
        self.recomputed = False

    def at_least(self, a: float, b: float) -> bool:
        return a >= b if self.higher else a <= b

    def better(self, a: Scored, b: Scored) -> bool:
        """a beats b: a higher (lower) score, or the same score at a lower validation loss."""
        return (a.score > b.score if self.higher else a.score < b.score) or (a.score == b.score and a.loss < b.loss)

    def evaluate(self, state: dict, members: list[dict]) -> Scored:
        self.model.load_state_dict(state)
        if len(members) > 1 and not same_batchnorm(members):
            self.recompute_bn(self.model)
            self.recomputed = True
            state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        score, loss, probs = self.score(self.model)
        return Scored(state, score, loss, probs)


def _average(c: Combiner, t: TrainConfig, kept: KeptWeights, history: list[dict]) -> tuple[Scored, dict]:
    """train.average: the K best epochs' mean, or the greedy soup of them in order of score."""
    ranked = _rank(history, c.higher)[:t.average_k]
    epochs = [r["epoch"] for r in ranked]
    states = [kept.load(e) for e in epochs]
    if t.average == "top_k":
        result = c.evaluate(average_states(states), states)
        return result, {"members": epochs, "score": result.score}
    soup, members = c.evaluate(states[0], states[:1]), [0]
    tried = {str(epochs[0]): soup.score}
    for i in range(1, len(states)):  # Wortsman et al. 2022, Recipe 1: keep an epoch if the soup does not drop
        chosen = [states[j] for j in [*members, i]]
        candidate = c.evaluate(average_states(chosen), chosen)
        tried[str(epochs[i])] = candidate.score
        if c.at_least(candidate.score, soup.score):
            soup, members = candidate, [*members, i]
    return soup, {"members": [epochs[j] for j in members], "candidates": epochs, "soup_score_adding": tried,
                  "score": soup.score}


def _interpolate(c: Combiner, first: dict, second: Scored) -> tuple[Scored, dict]:
    """WiSE-FT: (1 − α)·stage-1 + α·stage-2 at the α of ALPHAS that scores best on the validation rows."""
    scores, best, best_alpha = {}, None, 0.0
    for alpha in ALPHAS:
        if alpha == 1.0:
            got = second
        else:
            mixed = mix_states(first, second.state, alpha)
            got = c.evaluate(mixed, [first] if alpha == 0.0 else [first, second.state])
        scores[str(alpha)] = got.score
        if best is None or c.better(got, best):
            best, best_alpha = got, alpha
    return best, {"alpha": best_alpha, "alpha_scores": scores, "score": best.score}


def combine(t: TrainConfig, history: list[dict], kept: KeptWeights, c: Combiner) -> Combined:
    """The fold's final weights: 1. the average of its kept epochs (train.average), else its best
    epoch; 2. with train.interpolate, the best mix of its best stage-1 epoch and that (the best
    stage-2 epoch when nothing is averaged)."""
    record: dict = {"average": t.average, "interpolate": t.interpolate, "validation_rows": None}
    result = None
    if t.average != "off":
        result, record["averaged"] = _average(c, t, kept, history)
    if t.interpolate != "off":
        stage1 = _rank([r for r in history if r["stage"] == 1], c.higher)[0]["epoch"]
        if result is None:
            stage2 = _rank([r for r in history if r["stage"] == 2], c.higher)[0]["epoch"]
            state = kept.load(stage2)
            result = c.evaluate(state, [state])
            record["stage2_epoch"] = stage2
        record["stage1_epoch"] = stage1
        result, record["interpolated"] = _interpolate(c, kept.load(stage1), result)
    record["validation_rows"] = int(len(result.probs))
    record["batchnorm"] = ("recomputed on the fold's training rows for every candidate whose members' statistics differ"
                           if c.recomputed else "kept: every member holds the same running statistics")
    record["score"] = result.score
    return Combined(result, record)


def finish_fold(kept: KeptWeights, history: list[dict], c: Combiner, oof_of: Callable | None) -> Scored:
    """The end of a fold that combines weights: `combine`, then (on the rank that writes, given
    `oof_of(probs)`) best.pt, oof.csv, averaging.json and the finished last.pt; kept/ goes last."""
    done, t = combine(kept.t, history, kept, c), kept.t
    if oof_of is not None:
        write_combined(kept.folder.parent, done, oof_of(done.result.probs))
        kept.keep_only(top_k_epochs(t, history, c.higher))
    r = done.record
    parts = [f"{t.average} of epochs {', '.join(map(str, r['averaged']['members']))}"] if "averaged" in r else []
    if "interpolated" in r:
        parts.append(f"α {r['interpolated']['alpha']:g} from stage 1 (epoch {r['stage1_epoch']}) toward "
                     + ("that" if parts else f"stage 2 (epoch {r['stage2_epoch']})"))
    log.info("%s: best.pt holds the %s; validation score %.5f", kept.folder.parent.name, ", then ".join(parts),
             done.result.score)
    return done.result


def write_combined(fold_dir: Path, done: Combined, oof) -> None:
    """best.pt holds the combined weights (its oof.csv their validation probabilities, averaging.json
    how they were chosen); then last.pt, still the last epoch's state, is marked finished: the
    marker that a resumed run has nothing left to do, written last."""
    last = load_checkpoint(fold_dir / LAST)
    r = done.result
    best = dataclasses.replace(last, model_state_dict=r.state, train_state_dict=None, metric=r.score, loss=r.loss,
                               best_metric=r.score, best_loss=r.loss, finished=True, stage_complete=True)
    write_bytes(fold_dir / BEST, checkpoint_bytes(best))
    write_csv(fold_dir / "oof.csv", oof)
    write_json(fold_dir / "averaging.json", done.record)
    last.finished = True
    write_bytes(fold_dir / LAST, checkpoint_bytes(last))


class Averaging(Callback):
    """train.average / train.interpolate as a callback of the fold loop: when the fold has trained
    to its end, best.pt becomes the combination of its kept weights. A fold the time limit (or a
    signal) stopped is not at its end: its best epoch stays best.pt, and --resume continues it."""

    def __init__(self, kept: KeptWeights):
        self.kept = kept

    def on_fit_end(self, loop: FoldRun, stop: Stop | None) -> None:
        if stop is not None:
            return
        random_seed(mix_seed(loop.cfg.seed, loop.fold, loop.state.epoch, 3))  # dropout while BatchNorm statistics are recomputed
        combiner = Combiner(loop.model, loop.score, loop.probe.recompute_bn, self.kept.higher)
        done = finish_fold(self.kept, loop.state.history, combiner, loop.oof if loop.world.is_main else None)
        loop.state.stopper.best_metric, loop.state.stopper.best_loss = done.score, done.loss
