"""Loading the config a user passes: a YAML file or a shipped name, `--set` overrides, and every
choice checked against the table that implements it (so the error lists the valid ones)."""
from __future__ import annotations

import dataclasses
import os
import re
import typing
from pathlib import Path

import yaml

from competition.core.choices import (
    AUGMENTATION_NAMES,
    CACHE_MODES,
    CACHE_ON_DEVICE,
    CLASS_WEIGHTS,
    CROP_MODES,
    DEVICE_AUGMENT_MODES,
    FOLD_STRATEGIES,
    LOSSES,
    OUTPUTS,
    SAMPLERS,
    TARGET_FORMATS,
    TASK_KINDS,
    TTA_VIEW_NAMES,
    WANDB_MODES,
    choice,
    shipped_dir,
)
from competition.core.errors import CompetitionError
from competition.core.keeping import check_keeping
from competition.core.metrics import METRICS, check_target_keys
from competition.core.patterns import pattern_fields
from competition.core.schema import Config, build_config
from competition.io.runs import check_run_name
from competition.models.tables import check_model_params, check_no_model_params
from competition.search.recipes import check_auto_keys


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


def shipped_configs() -> list[str]:
    """Names of the configs shipped inside the package (`--config NAME`)."""
    return sorted(p.stem for p in shipped_dir().glob("*.yaml"))


def _read_yaml(source: str) -> tuple[dict, str, Path]:
    """(mapping, where it came from, the folder its relative paths resolve against)."""
    # A shipped name unless a file by that name is here (a folder by that name is no config).
    if source in shipped_configs() and not Path(source).is_file():
        path = shipped_dir() / f"{source}.yaml"
        where = f"shipped config '{source}'"
    else:
        path = Path(source)
        if path.is_dir():
            raise CompetitionError(f"config {source} is a folder, not a YAML file: give a YAML file or one of the "
                                   f"shipped configs ({', '.join(shipped_configs())})")
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


def validate(cfg: Config) -> None:
    """Every choice against its table, every number in its range, every key that needs another."""
    check_run_name(cfg.name, "config key name")
    if cfg.model.init_from is not None:
        check_run_name(cfg.model.init_from, "config key model.init_from")
    choice("task", cfg.task, TASK_KINDS)
    choice("data.target_format", cfg.data.target_format, TARGET_FORMATS)
    choice("predict.output", cfg.predict.output, OUTPUTS)
    choice("folds.strategy", cfg.folds.strategy, FOLD_STRATEGIES)
    choice("train.metric", cfg.train.metric, METRICS)
    choice("train.cache", cfg.train.cache, CACHE_MODES)
    choice("train.device_augment", cfg.train.device_augment, DEVICE_AUGMENT_MODES)
    choice("train.cache_on_device", cfg.train.cache_on_device, CACHE_ON_DEVICE)
    choice("tracking.wandb", cfg.tracking.wandb, WANDB_MODES)
    for name in cfg.image.augment:
        choice("image.augment", name, AUGMENTATION_NAMES)
    choice("image.crop_mode", cfg.image.crop_mode, CROP_MODES)
    if isinstance(cfg.image.crop_pct, str) and cfg.image.crop_pct != "pretrained":
        raise CompetitionError(f"config key image.crop_pct: a fraction in (0, 1] or pretrained, got {cfg.image.crop_pct!r}")
    if not isinstance(cfg.image.crop_pct, str) and not 0 < cfg.image.crop_pct <= 1:
        raise CompetitionError(f"config key image.crop_pct: a fraction in (0, 1] or pretrained, got {cfg.image.crop_pct:g}")
    for name in cfg.predict.tta:
        choice("predict.tta", name, TTA_VIEW_NAMES)
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
        "train.patience": cfg.train.patience or 0,
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
    if cfg.data.group_column and cfg.folds.strategy not in ("group", "stratified_group"):
        raise CompetitionError(f"config key folds.strategy: {cfg.folds.strategy} splits rows, not groups, and "
                               f"data.group_column ({cfg.data.group_column}) asks that no group spans two folds: "
                               f"use group{'' if cfg.data.target_format == 'multi_label' else ' or stratified_group'}")
    if cfg.data.max_classes < 2:
        raise CompetitionError("config key data.max_classes: must be at least 2")
    check_target_keys(cfg)
    _check_toolbox(cfg)
    check_keeping(cfg, staged=TASK_KINDS[cfg.task].staged)  # a pretrained body to freeze, or none
    check_auto_keys(cfg)
    TASK_CHECKS[cfg.task](cfg)


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
    choice("train.sampler", t.sampler, SAMPLERS)
    choice("train.class_weights", t.class_weights, CLASS_WEIGHTS)
    choice("train.loss", t.loss, LOSSES)
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


def _check_image_keys(cfg: Config) -> None:
    check_no_model_params(cfg)  # a timm model takes none
    if not cfg.data.image_column:
        raise CompetitionError("config key data.image_column: an image task needs the image path column")
    if cfg.data.features:
        raise CompetitionError("config key data.features: feature hooks are for tabular tasks")
    for key, pattern in (("data.image_pattern", cfg.data.image_pattern), ("data.test_image_pattern", cfg.data.test_image_pattern)):
        if pattern:
            pattern_fields(pattern, key)


def _check_tabular_keys(cfg: Config) -> None:
    check_model_params(cfg)  # for the models fit once per fold (models/tables.py), and only them
    if cfg.train.freeze_bn:
        raise CompetitionError("config key train.freeze_bn: applies to image backbones; a tabular MLP learns its BatchNorm statistics")
    for key, value in (("train.cutmix_alpha", cfg.train.cutmix_alpha), ("train.layer_decay", cfg.train.layer_decay),
                       ("model.drop_path_rate", cfg.model.drop_path_rate)):
        if value:
            raise CompetitionError(f"config key {key}: applies to image backbones, not a table's MLP")
    if cfg.data.features:
        from competition.io.hook_file import check_hook_spec

        check_hook_spec(cfg.data.features)
    if cfg.data.image_pattern or cfg.data.test_image_pattern:
        raise CompetitionError("config keys data.image_pattern / data.test_image_pattern: build image paths, for image tasks")


# The task kinds (config key task, core.choices.TASK_KINDS) and the keys each needs or refuses;
# tasks.TASKS implements each kind. These checks live here rather than on the Task objects so that
# checking a config loads no torch.
TASK_CHECKS = {"image": _check_image_keys, "tabular": _check_tabular_keys}


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


RUN_CONFIG = "config.yaml"  # outputs/<name>/config.yaml: the config a run was trained with (train.py writes it)


def add_run_argument(parser) -> None:
    """`--run NAME|DIR`, beside `--config` / `--set`, for the commands that read a trained run."""
    parser.add_argument("--run", default=None, metavar="NAME|DIR",
                        help=f"a trained run, by name under output_dir or by its folder: use the config it was trained "
                        f"with (its {RUN_CONFIG}; --config then only says where output_dir is), --set on top")


def command_config(args) -> Config:
    """The config of a command that reads a trained run: `--config` and `--set`, or with `--run`
    the run's own stored config and the `--set`s."""
    if args.run is None:
        return load_config(args.config, args.overrides)
    return run_config(args.run, args.config, args.overrides)


def run_config(run: str, source: str | None, overrides: typing.Sequence[str] = ()) -> Config:
    """The config run `run` was trained with (a name under the output_dir of `source`, or a run's
    folder), with `overrides` on top. A stored config that names a feature hook is refused: a
    hook is code, and it runs only from a config (or a --set) the user gives."""
    path = Path(run)
    where = Path(load_config(source).output_dir)
    folder = path if len(path.parts) > 1 and path.is_dir() else where / run
    stored = folder / RUN_CONFIG
    if not stored.is_file():
        names = sorted(p.parent.name for p in where.glob(f"*/{RUN_CONFIG}"))
        known = f"runs under {where}: {', '.join(names)}" if names else f"no runs under {where} yet"
        raise CompetitionError(f"--run {run}: {stored} not found (train writes it when the run starts); {known}")
    data, _, _ = _read_yaml(str(stored))
    data["name"], data["output_dir"] = folder.name, str(folder.parent)  # the run is where it was found
    hook = (data.get("data") or {}).get("features")
    source_dir: Path = folder
    for override in overrides:
        if _apply_override(data, override) == "data.features":
            source_dir, hook = Path.cwd(), None
    if hook:
        raise CompetitionError(f"--run {run}: the run was trained with feature hook {hook!r}, which is code, and a "
                               f"stored config runs none: give the config it was trained with (--config and its --sets)")
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
