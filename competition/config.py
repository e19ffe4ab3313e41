"""YAML config → frozen dataclasses, with `--set section.key=value` overrides and strict checking."""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union

import yaml

from competition.errors import CompetitionError

DEFAULT_CONFIG_FILE = "competition.yaml"
DEFAULT_SHIPPED = "digits"


@dataclass(frozen=True)
class DataConfig:
    root: str = "data"
    train_csv: str = "train.csv"
    test_csv: str = "test.csv"
    sample_submission: str = "sample_submission.csv"
    id_column: str = "id"
    target_column: str = "label"
    image_column: str | None = "image"  # image task: path relative to root, or absolute
    group_column: str | None = None  # rows sharing a group never land in two folds
    feature_columns: list[str] | None = None  # tabular: None = every column but id/target/group
    solution: str | None = None  # optional CSV of test answers (id, target): local leaderboard
    demo: str | None = None  # build this embedded demo into `root` when train.csv is missing


@dataclass(frozen=True)
class FoldsConfig:
    n_splits: int = 5
    strategy: str = "stratified"  # stratified | group | stratified_group | kfold


@dataclass(frozen=True)
class ModelConfig:
    name: str = "resnet18"  # any timm model name; `mlp` for tables
    pretrained: bool = False  # timm's own weights (hub or local cache)
    pretrained_file: str | None = None  # local .safetensors/.pth in timm layout; implies pretrained
    drop_rate: float = 0.0
    hidden_sizes: list[int] = field(default_factory=lambda: [128, 64])  # mlp only


@dataclass(frozen=True)
class ImageConfig:
    size: int = 64
    augment: list[str] = field(default_factory=lambda: ["hflip"])  # see transforms.AUGMENTATIONS


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10  # stage-2 epochs (all layers), after the freeze epochs
    freeze_epochs: int = 2  # stage 1: head only, backbone and BatchNorm statistics frozen
    batch_size: int = 64
    lr: float = 1.0e-3
    backbone_lr_mult: float = 0.1
    freeze_bn: bool = False  # stage 2 too keeps the backbone's BatchNorm statistics (small data, small batches)
    weight_decay: float = 1.0e-4
    warmup_epochs: float = 0.5  # linear warmup at the start of each stage
    label_smoothing: float = 0.0
    patience: int = 3  # early stopping within a stage, in epochs without improvement
    metric: str = "accuracy"  # see metrics.METRICS
    num_workers: int = 2
    cache: str = "off"  # auto | off: decode images once into a uint8 memmap
    device_augment: str = "auto"  # auto | on | off: crop/flip/normalise cached batches on the device
    compile: bool = False  # torch.compile the model
    amp: bool = True  # bf16/fp16 autocast, CUDA only


@dataclass(frozen=True)
class PredictConfig:
    tta: list[str] = field(default_factory=lambda: ["hflip"])  # see transforms.TTA_VIEWS
    batch_size: int = 128


@dataclass(frozen=True)
class Config:
    name: str = "experiment"
    task: str = "image"  # image | tabular
    seed: int = 42
    output_dir: str = "outputs"
    submission_dir: str = "submissions"
    data: DataConfig = field(default_factory=DataConfig)
    folds: FoldsConfig = field(default_factory=FoldsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def fold_dir(self, fold: int) -> Path:
        return self.run_dir / f"fold{fold}"


TASKS = ("image", "tabular")
FOLD_STRATEGIES = ("stratified", "group", "stratified_group", "kfold")
CACHE_MODES = ("auto", "off")
DEVICE_AUGMENT_MODES = ("auto", "on", "off")


def shipped_configs() -> list[str]:
    """Names of the configs shipped inside the package (`--config NAME`)."""
    files = resources.files("competition") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in files.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(source: str) -> tuple[dict, str]:
    """Return (mapping, where-it-came-from) for a shipped name or a file path."""
    if source in shipped_configs() and not Path(source).exists():
        text = (resources.files("competition") / "configs" / f"{source}.yaml").read_text()
        where = f"shipped config '{source}'"
    else:
        path = Path(source)
        if not path.is_file():
            raise CompetitionError(
                f"config {source} not found: give a YAML file or one of the shipped configs "
                f"({', '.join(shipped_configs())})"
            )
        text = path.read_text()
        where = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise CompetitionError(f"config {where} is not valid YAML{at}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CompetitionError(f"config {where} must be a YAML mapping of sections, got {type(data).__name__}")
    return data, where


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"a list of {_type_name(inner).split(' ', 1)[-1]}s"
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; ints widen to floats. Raise naming `key`."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except CompetitionError:
                continue
    elif origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, list):
            return [_coerce(v, inner, key) for v in value]
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    raise CompetitionError(f"config key {key}: expected {_type_name(tp)}, got {value!r}")


def _build(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in valid:
            where = f"section '{prefix[:-1]}'" if prefix else "the top level"
            raise CompetitionError(
                f"unknown config key {full}: valid keys in {where} are {', '.join(valid)}"
            )
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise CompetitionError(f"config key {full}: expected a mapping of keys, got {value!r}")
            kwargs[key] = _build(tp, value, f"{full}.")
        else:
            kwargs[key] = _coerce(value, tp, full)
    return cls(**kwargs)


def _apply_override(data: dict, override: str) -> None:
    if "=" not in override:
        raise CompetitionError(f"--set {override}: expected section.key=value")
    dotted, raw = override.split("=", 1)
    parts = dotted.strip().split(".")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise CompetitionError(f"--set {dotted}: value {raw!r} is not a YAML scalar or list") from None
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise CompetitionError(f"--set {dotted}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def _validate(cfg: Config) -> None:
    from competition.metrics import METRICS
    from competition.transforms import AUGMENTATIONS, TTA_VIEWS

    def choice(key: str, value: str, options: typing.Iterable[str]) -> None:
        options = list(options)
        if value not in options:
            raise CompetitionError(f"config key {key}: {value!r} is not one of {', '.join(options)}")

    choice("task", cfg.task, TASKS)
    choice("folds.strategy", cfg.folds.strategy, FOLD_STRATEGIES)
    choice("train.metric", cfg.train.metric, METRICS)
    choice("train.cache", cfg.train.cache, CACHE_MODES)
    choice("train.device_augment", cfg.train.device_augment, DEVICE_AUGMENT_MODES)
    for name in cfg.image.augment:
        choice("image.augment", name, AUGMENTATIONS)
    for name in cfg.predict.tta:
        choice("predict.tta", name, TTA_VIEWS)
    positive = {
        "folds.n_splits": cfg.folds.n_splits - 1,
        "image.size": cfg.image.size,
        "train.batch_size": cfg.train.batch_size,
        "predict.batch_size": cfg.predict.batch_size,
        "train.lr": cfg.train.lr,
    }
    for key, value in positive.items():
        if value <= 0:
            raise CompetitionError(f"config key {key}: must be {'at least 2' if key == 'folds.n_splits' else 'positive'}")
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
    if cfg.task == "tabular" and cfg.train.freeze_bn:
        raise CompetitionError("config key train.freeze_bn: applies to image backbones; a tabular MLP learns its BatchNorm statistics")
    if cfg.task == "image" and not cfg.data.image_column:
        raise CompetitionError("config key data.image_column: an image task needs the image path column")
    if cfg.folds.strategy in ("group", "stratified_group") and not cfg.data.group_column:
        raise CompetitionError(f"config key data.group_column: folds.strategy {cfg.folds.strategy} needs a group column")


def config_from_dict(data: dict, where: str = "config") -> Config:
    """Build and check a Config from a plain mapping (a YAML file, or one stored in a checkpoint)."""
    cfg = _build(Config, data, "")
    _validate(cfg)
    return cfg


def load_config(source: str | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Resolve `--config` (shipped name, path, ./competition.yaml, else digits) and `--set`s."""
    if source is None:
        source = DEFAULT_CONFIG_FILE if Path(DEFAULT_CONFIG_FILE).is_file() else DEFAULT_SHIPPED
    data, where = _read_yaml(source)
    for override in overrides:
        _apply_override(data, override)
    return config_from_dict(data, where)


def config_to_dict(cfg: Config) -> dict:
    """Plain types only, so it can live inside a weights_only checkpoint."""
    return dataclasses.asdict(cfg)


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
