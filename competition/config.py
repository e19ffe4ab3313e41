"""Loading the config a user passes: a YAML file or a shipped name, `--set` overrides, and every
choice checked against the table that implements it (so the error lists the valid ones)."""
from __future__ import annotations

import dataclasses
import os
import re
import typing
from importlib import resources
from pathlib import Path

import yaml

from competition.core.config import Config, build_config
from competition.core.errors import CompetitionError
from competition.core.metrics import BINARY, METRICS, MULTI, SINGLE
from competition.data.batch_augment import DEVICE_AUGMENT_MODES
from competition.data.cache import CACHE_MODES
from competition.data.device_rows import CACHE_ON_DEVICE
from competition.data.folds import FOLD_STRATEGIES
from competition.data.targets import TARGET_FORMATS
from competition.data.transforms import AUGMENTATIONS, TTA_VIEWS
from competition.inference.submission import OUTPUTS
from competition.io.wandb_runs import WANDB_MODES
from competition.models.estimators import check_model_params
from competition.tasks import TASKS
from competition.training.imbalance import CLASS_WEIGHTS, SAMPLERS
from competition.training.losses import LOSSES


class ConfigLoader(yaml.SafeLoader):
    """YAML with true/false as its only booleans: YAML 1.1 also reads on/off and yes/no as
    booleans, which would turn `device_augment: on` into True instead of the choice "on"."""


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                   list("tTfF"))

DEFAULT_CONFIG_FILE = "competition.yaml"
DEFAULT_SHIPPED = "digits"


def shipped_dir() -> Path:
    """The package folder of the shipped configs and the recipes beside them."""
    return Path(str(resources.files("competition") / "configs"))


def shipped_configs() -> list[str]:
    """Names of the configs shipped inside the package (`--config NAME`)."""
    return sorted(p.stem for p in shipped_dir().glob("*.yaml"))


def _read_yaml(source: str) -> tuple[dict, str, Path]:
    """(mapping, where it came from, the folder its relative paths resolve against)."""
    if source in shipped_configs() and not Path(source).exists():
        path = shipped_dir() / f"{source}.yaml"
        where = f"shipped config '{source}'"
    else:
        path = Path(source)
        if not path.is_file():
            raise CompetitionError(
                f"config {source} not found: give a YAML file or one of the shipped configs "
                f"({', '.join(shipped_configs())})"
            )
        where = str(path)
    try:
        data = yaml.load(path.read_text(), Loader=ConfigLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise CompetitionError(f"config {where} is not valid YAML{at}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CompetitionError(f"config {where} must be a YAML mapping of sections, got {type(data).__name__}")
    return data, where, path.resolve().parent


def _apply_override(data: dict, override: str) -> str:
    """Set one `section.key=value` in `data`; returns the dotted key."""
    if "=" not in override:
        raise CompetitionError(f"--set {override}: expected section.key=value")
    dotted, raw = override.split("=", 1)
    dotted = dotted.strip()
    parts = dotted.split(".")
    try:
        value = yaml.load(raw, Loader=ConfigLoader) if raw.strip() else None
    except yaml.YAMLError:
        raise CompetitionError(f"--set {dotted}: value {raw!r} is not a YAML scalar or list") from None
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise CompetitionError(f"--set {dotted}: {part} is not a section")
        node = child
    node[parts[-1]] = value
    return dotted


def _choice(key: str, value: str, options: typing.Iterable[str]) -> None:
    options = list(options)
    if value not in options:
        raise CompetitionError(f"config key {key}: {value!r} is not one of {', '.join(options)}")


def validate(cfg: Config) -> None:
    """Every choice against its table, every number in its range, every key that needs another."""
    _choice("task", cfg.task, TASKS)
    _choice("data.target_format", cfg.data.target_format, TARGET_FORMATS)
    _choice("predict.output", cfg.predict.output, OUTPUTS)
    _choice("folds.strategy", cfg.folds.strategy, FOLD_STRATEGIES)
    _choice("train.metric", cfg.train.metric, METRICS)
    _choice("train.cache", cfg.train.cache, CACHE_MODES)
    _choice("train.device_augment", cfg.train.device_augment, DEVICE_AUGMENT_MODES)
    _choice("train.cache_on_device", cfg.train.cache_on_device, CACHE_ON_DEVICE)
    _choice("tracking.wandb", cfg.tracking.wandb, WANDB_MODES)
    for name in cfg.image.augment:
        _choice("image.augment", name, AUGMENTATIONS)
    for name in cfg.predict.tta:
        _choice("predict.tta", name, TTA_VIEWS)
    _check_image_size(cfg)
    for key, value in {
        "train.batch_size": cfg.train.batch_size,
        "predict.batch_size": cfg.predict.batch_size,
        "train.lr": cfg.train.lr,
    }.items():
        if value <= 0:
            raise CompetitionError(f"config key {key}: must be positive")
    if cfg.folds.n_splits < 2:
        raise CompetitionError("config key folds.n_splits: must be at least 2")
    for key, value in {
        "train.epochs": cfg.train.epochs,
        "train.freeze_epochs": cfg.train.freeze_epochs,
        "train.patience": cfg.train.patience,
        "train.num_workers": cfg.train.num_workers,
        "train.backbone_lr_mult": cfg.train.backbone_lr_mult,
        "train.weight_decay": cfg.train.weight_decay,
        "train.warmup_epochs": cfg.train.warmup_epochs,
    }.items():
        if value < 0:
            raise CompetitionError(f"config key {key}: must not be negative, got {value}")
    if cfg.train.epochs + cfg.train.freeze_epochs == 0:
        raise CompetitionError("config keys train.epochs and train.freeze_epochs are both 0: nothing to train")
    if cfg.folds.strategy in ("group", "stratified_group") and not cfg.data.group_column:
        raise CompetitionError(f"config key data.group_column: folds.strategy {cfg.folds.strategy} needs a group column")
    if cfg.data.max_classes < 2:
        raise CompetitionError("config key data.max_classes: must be at least 2")
    _check_target_keys(cfg)
    _check_toolbox(cfg)
    _check_keeping(cfg)
    check_model_params(cfg)
    TASKS[cfg.task].check_config(cfg)


def _check_image_size(cfg: Config) -> None:
    """One positive side, or [height, width]; views that swap height and width need a square."""
    size = cfg.image.size
    sides = [size] if isinstance(size, int) else size
    if len(sides) not in (1, 2) or isinstance(size, list) and len(sides) != 2 or min(sides) <= 0:
        raise CompetitionError(f"config key image.size: one positive side or [height, width], got {size!r}")
    swapping = [v for v in cfg.predict.tta if v in ("rot90", "rot270", "transpose")]
    if len(set(sides)) == 2 and swapping:
        raise CompetitionError(f"config key predict.tta: {', '.join(swapping)} swap height and width, and image.size "
                               f"{size} is not square (hflip, vflip and rot180 keep the shape)")
    if len(set(sides)) == 2 and "rotate90" in cfg.image.augment:
        raise CompetitionError(f"config key image.augment: rotate90 swaps height and width, and image.size {size} is not square")


def _check_range(key: str, value: float, low: float, high: float, high_open: bool = False) -> None:
    if not (low <= value < high if high_open else low <= value <= high):
        raise CompetitionError(f"config key {key}: must be in [{low:g}, {high:g}{')' if high_open else ']'}, got {value:g}")


def _check_toolbox(cfg: Config) -> None:
    """The training toolbox's keys: choices, ranges, and the combinations that mean nothing."""
    t = cfg.train
    _choice("train.sampler", t.sampler, SAMPLERS)
    _choice("train.class_weights", t.class_weights, CLASS_WEIGHTS)
    _choice("train.loss", t.loss, LOSSES)
    for key, value, high, open_ in (("train.mixup_alpha", t.mixup_alpha, 100.0, False),
                                    ("train.cutmix_alpha", t.cutmix_alpha, 100.0, False),
                                    ("train.mix_prob", t.mix_prob, 1.0, False), ("train.ema_decay", t.ema_decay, 1.0, True),
                                    ("train.label_smoothing", t.label_smoothing, 1.0, True),
                                    ("train.layer_decay", t.layer_decay, 1.0, False),
                                    ("train.focal_gamma", t.focal_gamma, 10.0, False),
                                    ("model.drop_path_rate", cfg.model.drop_path_rate, 1.0, True)):
        _check_range(key, value, 0.0, high, open_)
    if t.accum_steps < 1:
        raise CompetitionError(f"config key train.accum_steps: must be at least 1, got {t.accum_steps}")
    if t.clip_grad_norm < 0 or t.mix_off_epochs < 0:
        raise CompetitionError("config keys train.clip_grad_norm and train.mix_off_epochs: must not be negative")
    mixing = t.mixup_alpha > 0 or t.cutmix_alpha > 0
    if not mixing and (t.mix_off_epochs or t.mix_prob != 1.0):
        raise CompetitionError("config keys train.mix_off_epochs / train.mix_prob: nothing mixes (train.mixup_alpha "
                               "and train.cutmix_alpha are 0)")
    if cfg.data.pseudo_threshold is not None:
        if not cfg.data.pseudo_labels:
            raise CompetitionError("config key data.pseudo_threshold: no data.pseudo_labels file to filter")
        _check_range("data.pseudo_threshold", cfg.data.pseudo_threshold, 0.0, 1.0)
    if t.sampler != "shuffle" and cfg.data.target_format == "multi_label":
        raise CompetitionError(f"config key train.sampler: {t.sampler} draws rows by their one class; a multi_label "
                               f"target has several per row (use train.class_weights: balanced)")


HEAD_FITS = ("sgd", "logreg")  # training.head_fit
AVERAGES = ("off", "top_k", "greedy_soup")  # training.averaging
INTERPOLATIONS = ("off", "auto")


def _check_keeping(cfg: Config) -> None:
    """train.head_fit, train.average and train.interpolate: choices, and the runs they mean nothing in."""
    t = cfg.train
    _choice("train.head_fit", t.head_fit, HEAD_FITS)
    _choice("train.average", t.average, AVERAGES)
    _choice("train.interpolate", t.interpolate, INTERPOLATIONS)
    staged = TASKS[cfg.task].two_stages
    if t.head_fit == "logreg" and not staged:
        raise CompetitionError(f"config key train.head_fit: logreg fits a head on a pretrained backbone's features; a "
                               f"{cfg.task} model has no backbone (use sgd)")
    if t.head_fit == "logreg" and t.freeze_epochs != 1:
        raise CompetitionError(f"config key train.head_fit: logreg fits the head once, as stage 1's one epoch; set "
                               f"train.freeze_epochs to 1 (got {t.freeze_epochs})")
    for name in t.head_fit_views:
        _choice("train.head_fit_views", name, TTA_VIEWS)
    if t.head_fit_views and t.head_fit != "logreg":
        raise CompetitionError("config key train.head_fit_views: views of the rows a logreg head is fit on, and "
                               f"train.head_fit is {t.head_fit}")
    sides = cfg.image.size if isinstance(cfg.image.size, list) else [cfg.image.size]
    swapping = [v for v in t.head_fit_views if v in ("rot90", "rot270", "transpose")]
    if len(set(sides)) == 2 and swapping:
        raise CompetitionError(f"config key train.head_fit_views: {', '.join(swapping)} swap height and width, and "
                               f"image.size {cfg.image.size} is not square")
    if t.average_k < 2:
        raise CompetitionError(f"config key train.average_k: must be at least 2 epochs to average, got {t.average_k}")
    if t.average != "off" and t.epochs + t.freeze_epochs < 2:
        raise CompetitionError(f"config key train.average: {t.average} averages epochs' weights, and the fold trains "
                               f"{t.epochs + t.freeze_epochs} epoch")
    if t.interpolate != "off" and not (staged and t.freeze_epochs > 0 and t.epochs > 0):
        raise CompetitionError("config key train.interpolate: mixes stage-1 and stage-2 weights, and this run has "
                               + ("no stage 1 (a model without a pretrained backbone)" if not staged else
                                  f"train.freeze_epochs {t.freeze_epochs} and train.epochs {t.epochs}: both must be above 0"))


def _check_target_keys(cfg: Config) -> None:
    """The metric, the fold strategy and the target keys must suit the target's format."""
    d, multi = cfg.data, cfg.data.target_format == "multi_label"
    metric = METRICS[cfg.train.metric]
    formats = {MULTI} if multi else {SINGLE, BINARY}
    if not formats & set(metric.formats):
        fitting = ", ".join(n for n, m in METRICS.items() if formats & set(m.formats))
        raise CompetitionError(f"config key train.metric: {metric.name} does not score a {d.target_format} target "
                               f"(data.target_format); use one of {fitting}")
    if multi and cfg.folds.strategy in ("stratified", "stratified_group"):
        raise CompetitionError(f"config key folds.strategy: {cfg.folds.strategy} balances single labels; a multi_label "
                               f"target uses multilabel_stratified (or kfold, group)")
    if not multi and cfg.folds.strategy == "multilabel_stratified":
        raise CompetitionError("config key folds.strategy: multilabel_stratified is for data.target_format: multi_label")
    if d.target_columns is not None and not multi:
        raise CompetitionError("config key data.target_columns: one 0/1 column per class is a multi_label target "
                               "(set data.target_format: multi_label)")
    if d.target_columns is not None and len(d.target_columns) < 2:
        raise CompetitionError("config key data.target_columns: name at least 2 class columns")
    if d.positive_class is not None and multi:
        raise CompetitionError("config key data.positive_class: applies to a binary single-label target")


def config_from_dict(data: dict, source_dir: str | os.PathLike = "") -> Config:
    """Build and check a Config from a plain mapping (a YAML file's, or a benchmark's)."""
    cfg = build_config(data)
    validate(cfg)
    return dataclasses.replace(cfg, source_dir=str(source_dir))


def load_config(source: str | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Resolve `--config` (shipped name, path, ./competition.yaml, else digits) and `--set`s.

    A relative feature-hook path resolves against the config file's folder (the package's
    for a shipped config), or against the current folder when `--set` gives it."""
    if source is None:
        source = DEFAULT_CONFIG_FILE if Path(DEFAULT_CONFIG_FILE).is_file() else DEFAULT_SHIPPED
    data, _, source_dir = _read_yaml(source)
    for override in overrides:
        if _apply_override(data, override) == "data.features":
            source_dir = Path.cwd()
    return config_from_dict(data, source_dir)


def add_config_arguments(parser) -> None:
    """The `--config` / `--set` pair every CLI shares."""
    parser.add_argument(
        "--config",
        default=None,
        help=f"shipped config name ({', '.join(shipped_configs())}) or a YAML path; "
        f"default ./{DEFAULT_CONFIG_FILE} if present, else {DEFAULT_SHIPPED}",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (YAML scalar or list), repeatable",
    )
