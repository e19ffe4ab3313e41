"""The keys that keep what pretraining knows (train.head_fit, train.average, train.interpolate:
training/head_fit.py and training/averaging.py), checked without loading what implements them."""
from __future__ import annotations

from competition.core.choices import TTA_VIEW_NAMES, choice
from competition.core.durations import parse_duration
from competition.core.errors import CompetitionError
from competition.core.schema import Config

HEAD_FITS = ("sgd", "logreg")  # training.head_fit
HEAD_FIT_INPUTS = ("features", "pretrained_logits", "both")  # training.head_fit
HEAD_FIT_PRIORS = ("none", "label_map")  # training.head_prior
AVERAGES = ("off", "top_k", "greedy_soup")  # training.averaging
INTERPOLATE_MODES = ("off", "auto")


def check_keeping(cfg: Config, staged: bool) -> None:
    """train.head_fit, train.average and train.interpolate: choices, and the runs they mean nothing in.
    `staged`: the task has a pretrained body, frozen in stage 1 (tasks.Task.two_stages)."""
    t = cfg.train
    choice("train.head_fit", t.head_fit, HEAD_FITS)
    choice("train.average", t.average, AVERAGES)
    choice("train.interpolate", t.interpolate, INTERPOLATE_MODES)
    if t.head_fit == "logreg" and not staged:
        raise CompetitionError(f"config key train.head_fit: logreg fits a head on a pretrained backbone's features; a "
                               f"{cfg.task} model has no backbone (use sgd)")
    if t.head_fit == "logreg" and t.freeze_epochs != 1:
        raise CompetitionError(f"config key train.head_fit: logreg fits the head once, as stage 1's one epoch; set "
                               f"train.freeze_epochs to 1 (got {t.freeze_epochs})")
    for name in t.head_fit_views:
        choice("train.head_fit_views", name, TTA_VIEW_NAMES)
    if t.head_fit_views and t.head_fit != "logreg":
        raise CompetitionError("config key train.head_fit_views: views of the rows a logreg head is fit on, and "
                               f"train.head_fit is {t.head_fit}")
    check_pretrained_head(cfg)
    sides = cfg.image.size if isinstance(cfg.image.size, list) else [cfg.image.size]
    swapping = [v for v in t.head_fit_views if v in ("rot90", "rot270", "transpose")]
    if len(set(sides)) == 2 and swapping:
        raise CompetitionError(f"config key train.head_fit_views: {', '.join(swapping)} swap height and width, and "
                               f"image.size {cfg.image.size} is not square")
    if t.keep_top_k < 0:
        raise CompetitionError(f"config key train.keep_top_k: the number of best epochs whose weights are kept, 0 or "
                               f"more; got {t.keep_top_k}")
    if t.time_limit is not None:
        parse_duration(t.time_limit, "config key train.time_limit")
    if t.average_k < 2:
        raise CompetitionError(f"config key train.average_k: must be at least 2 epochs to average, got {t.average_k}")
    if t.average != "off" and t.epochs + t.freeze_epochs < 2:
        raise CompetitionError(f"config key train.average: {t.average} averages epochs' weights, and the fold trains "
                               f"{t.epochs + t.freeze_epochs} epoch")
    if t.interpolate != "off" and not (staged and t.freeze_epochs > 0 and t.epochs > 0):
        raise CompetitionError("config key train.interpolate: mixes stage-1 and stage-2 weights, and this run has "
                               + ("no stage 1 (a model without a pretrained backbone)" if not staged else
                                  f"train.freeze_epochs {t.freeze_epochs} and train.epochs {t.epochs}: both must be above 0"))


def reads_pretrained_head(cfg: Config) -> bool:
    """Whether the run fits its head on, or towards, the pretrained weights' own classifier."""
    t = cfg.train
    return t.head_fit == "logreg" and (t.head_fit_inputs != "features" or t.head_fit_prior != "none")


def pretrained_head_key(cfg: Config) -> str:
    """The key (and value) that reads the pretrained classifier, for a refusal: the prior first."""
    t = cfg.train
    return (f"train.head_fit_prior: {t.head_fit_prior}" if t.head_fit_prior != "none"
            else f"train.head_fit_inputs: {t.head_fit_inputs}")


def check_pretrained_head(cfg: Config) -> None:
    """train.head_fit_inputs and train.head_fit_prior: choices, and a logreg head on pretrained weights
    that come with their own classifier (whether they do is checked as the model is built)."""
    t, m = cfg.train, cfg.model
    choice("train.head_fit_inputs", t.head_fit_inputs, HEAD_FIT_INPUTS)
    choice("train.head_fit_prior", t.head_fit_prior, HEAD_FIT_PRIORS)
    for key, value, default in (("head_fit_inputs", t.head_fit_inputs, "features"), ("head_fit_prior", t.head_fit_prior, "none")):
        if value == default:
            continue
        if t.head_fit != "logreg":
            raise CompetitionError(f"config key train.{key}: {value} shapes a logreg head, and train.head_fit is {t.head_fit}")
        if not (m.pretrained or m.pretrained_file):
            raise CompetitionError(f"config key train.{key}: {value} reads the pretrained weights' own classifier, and "
                                   f"this run has no pretrained weights (model.pretrained false, no model.pretrained_file)")
        if m.init_from:
            raise CompetitionError(f"config key train.{key}: {value} reads the pretrained weights' own classifier, and "
                                   f"model.init_from starts each fold from run {m.init_from!r}'s weights instead")
