"""The config's schema: frozen dataclasses built from plain mappings, every key and type checked.

Loading a user's file, `--set` overrides and the checks of each choice against its table are
the edge's job (`competition.config`); this module is what every stage imports.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from competition.core.errors import CompetitionError


@dataclass(frozen=True)
class DataConfig:
    root: str = "data"
    train_csv: str = "train.csv"
    test_csv: str = "test.csv"
    sample_submission: str = "sample_submission.csv"
    id_column: str = "id"
    target_column: str = "label"
    target_format: str = "single"  # single | multi_label (see data.targets)
    target_columns: list[str] | None = None  # multi-label as one 0/1 column per class (Plant Pathology layout)
    label_separator: str = " "  # multi-label in one column: labels separated by this (Planet layout)
    positive_class: bool | int | str | None = None  # binary: the class whose probability is submitted (default the larger label)
    max_classes: int = 1000  # more distinct target values than this is not a classification target
    pseudo_labels: str | None = None  # a submission-shaped CSV of test-row probabilities: soft targets in every fold's training rows
    pseudo_threshold: float | None = None  # keep only pseudo-labelled rows at least this sure (max probability)
    image_column: str | None = "image"  # image task: path relative to root, or absolute
    image_pattern: str | None = None  # image task without a path column: "images/{image_id}.jpg" builds image_column
    test_image_pattern: str | None = None  # test.csv's, where its images lie elsewhere: "jpeg/test/{image_name}.jpg"
    group_column: str | None = None  # rows sharing a group never land in two folds
    feature_columns: list[str] | None = None  # tabular: None = every column but id/target/group
    features: str | None = None  # tabular: feature hook `path/to/file.py:ClassName`, fit per fold
    solution: str | None = None  # optional CSV of test answers (id, target): local leaderboard
    sample_target_column: str | None = None  # the sample submission's target column, where its name is not target_column's
    demo: str | None = None  # build this embedded demo into its own root when train.csv is missing


@dataclass(frozen=True)
class FoldsConfig:
    n_splits: int = 5
    strategy: str = "stratified"  # stratified | group | stratified_group | kfold | multilabel_stratified


@dataclass(frozen=True)
class ModelConfig:
    name: str = "resnet18"  # any timm model name; `mlp` for tables
    pretrained: bool = False  # timm's own weights (hub or local cache)
    pretrained_file: str | None = None  # local .safetensors/.pth in timm layout; implies pretrained
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0  # stochastic depth (timm's drop_path_rate), for backbones that have it
    init_from: str | None = None  # warm start: each fold from the same fold's best.pt of this run (same folds)
    hidden_sizes: list[int] = field(default_factory=lambda: [128, 64])  # mlp only
    params: dict[str, Any] = field(default_factory=dict)  # scikit-learn and GBDT models only: passed to the model


@dataclass(frozen=True)
class ImageConfig:
    size: int | list[int] = 64  # one side, or [height, width] (competition photos are often 384×512)
    augment: list[str] = field(default_factory=lambda: ["hflip"])  # see data.transforms.AUGMENTATIONS
    # What of each photo the model sees, cut before the resize to `size` (data.images.Crop), in
    # training, predict and the cache alike: squash (the box resized to `size` whatever its aspect)
    # or center (timm's eval crop: the central box of `size`'s aspect); crop_pct is the share of
    # the photo's side kept, or `pretrained` for the one timm's pretrained config gives model.name.
    crop_mode: str = "squash"
    crop_pct: float | str = 1.0



EPOCH_PATIENCE = 3  # train.patience when not set, for a model trained in epochs


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
    # Early stopping: epochs without improvement within a stage (None: 3), or a gradient-boosting
    # model's rounds without a better validation loss (None: 100); 0 = off.
    patience: int | None = None
    metric: str = "accuracy"  # see core.metrics.METRICS
    # The competitor's toolbox (training.toolbox): timm's Mixup/CutMix, EMA, accumulation, imbalance.
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) mixing of image pairs and their targets; 0 = off
    cutmix_alpha: float = 0.0  # CutMix boxes; with both on, each batch picks one (timm's switch_prob 0.5)
    mix_prob: float = 1.0  # share of batches mixed
    mix_off_epochs: int = 0  # the last N epochs of stage 2 train on unmixed batches
    ema_decay: float = 0.0  # EMA of the weights (timm ModelEmaV3, with warmup); validation scores the EMA; 0 = off
    accum_steps: int = 1  # batches per optimizer step: an effective batch of batch_size × accum_steps
    clip_grad_norm: float = 0.0  # clip the gradient norm before each optimizer step; 0 = off
    sampler: str = "shuffle"  # shuffle | balanced | sqrt: rows drawn ∝ 1, 1/count or 1/√count of their class
    class_weights: str = "none"  # none | balanced: loss weights n / (classes × count)
    loss: str = "cross_entropy"  # cross_entropy | focal
    focal_gamma: float = 2.0  # focal loss: (1 − p)^gamma down-weights the easy rows
    layer_decay: float = 0.0  # stage 2: layer-wise lr decay over timm's group matcher (e.g. 0.75); 0 = off
    # Keeping what pretraining knows (training.head_fit, training.averaging):
    head_fit: str = "sgd"  # sgd | logreg: stage 1's one epoch fits the head exactly on frozen features (scikit-learn)
    head_fit_views: list[str] = field(default_factory=list)  # logreg: these TTA views of each training row fit too
    head_fit_inputs: str = "features"  # features | pretrained_logits | both: what the logreg head is fit on
    head_fit_prior: str = "none"  # none | label_map: logreg fit towards the pretrained classes that match the classes
    average: str = "off"  # off | top_k | greedy_soup: best.pt is an average of the fold's best epochs' weights
    average_k: int = 5  # epochs kept for train.average (the K best by validation score)
    interpolate: str = "off"  # off | auto: best.pt mixes stage-1 and stage-2 weights at the α best on validation
    # Seconds each fold may train (or 90s, 20m, 2h): it stops at the end of the step that reaches
    # them, exit 0, keeping its best epoch so far; --resume continues it. None = no limit.
    time_limit: float | str | None = None
    keep_top_k: int = 0  # also keep the K best epochs' weights (fold<k>/kept/epoch<N>.pt); 0 = only best.pt and last.pt
    # last.pt within an epoch this often (and where Ctrl-C stops): on for epochs longer than this; 0 = off
    checkpoint_every_minutes: float = 30.0
    num_workers: int = 2
    cache: str = "off"  # auto | off: decode images once into a uint8 memmap
    device_augment: str = "auto"  # auto | on | off: crop/flip/normalise cached batches on the device
    cache_on_device: str = "auto"  # auto | on | stream | off: the device path's rows held on the GPU, or streamed
    compile: bool = False  # torch.compile the model
    amp: bool = True  # bf16/fp16 autocast, CUDA only


@dataclass(frozen=True)
class PredictConfig:
    tta: list[str] = field(default_factory=lambda: ["hflip"])  # see data.transforms.TTA_VIEWS
    batch_size: int = 128
    output: str = "auto"  # auto | labels | probabilities: what a submission column holds (inference.submission)


@dataclass(frozen=True)
class TrackingConfig:
    wandb: str = "off"  # off | offline | online: a wandb run per fold beside TensorBoard (io.wandb_runs)
    project: str = "competition"  # the wandb project; a config's folds are one group, named by `name`
    entity: str | None = None  # the wandb team or user (None: the account's default)


@dataclass(frozen=True)
class AutoConfig:
    """`python -m competition.auto`: what its search may try (search/recipes.py). Not part of a run's
    identity: a trial's own model and training keys are."""

    # image: timm backbone → its weights: null (from scratch), timm (timm's own: model.pretrained) or
    # a local file (model.pretrained_file). Empty: the config's own model.
    backbones: dict[str, Any] = field(default_factory=dict)
    # tabular: the models tried (mlp, logreg, random_forest, extra_trees, hist_gbm, lightgbm, catboost,
    # xgboost). Empty: every one that applies and is installed.
    models: list[str] = field(default_factory=list)


# Fields the kit fills in itself; no file or --set may name them, and they are not saved.
INTERNAL = {"internal": True}


@dataclass(frozen=True)
class Config:
    name: str = "experiment"
    task: str = "image"  # image | tabular (see tasks.TASKS)
    seed: int = 42
    output_dir: str = "outputs"
    submission_dir: str = "submissions"
    data: DataConfig = field(default_factory=DataConfig)
    folds: FoldsConfig = field(default_factory=FoldsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    auto: AutoConfig = field(default_factory=AutoConfig)
    # The folder relative paths of the config file resolve against (its feature hook): the
    # file's own folder, the package's for a shipped config. Empty for a stored config.
    source_dir: str = field(default="", compare=False, metadata=INTERNAL)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def fold_dir(self, fold: int) -> Path:
        return self.run_dir / f"fold{fold}"


def _public_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"a list of {_type_name(inner).split(' ', 1)[-1]}s"
    if origin is dict:
        return "a mapping of names to plain values"
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
    elif origin is dict:
        # Plain YAML values only (numbers, strings, booleans, null, lists, mappings): the config
        # lives in checkpoints that load without pickle.
        if isinstance(value, dict) and all(isinstance(k, str) for k in value) and _is_plain(value):
            return dict(value)
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


def _is_plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and _is_plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    return isinstance(value, (str, int, float, bool, type(None)))


def _build(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in _public_fields(cls)]
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


def build_config(data: dict) -> Config:
    """A Config from a plain mapping: unknown keys and wrong types are refused, naming the key.
    The checks of each choice against its table come on top of this at the edge."""
    return _build(Config, data, "")


def config_to_dict(cfg: Config) -> dict:
    """Plain types only, so it can live inside a weights_only checkpoint; internal fields left out."""
    return {f.name: _plain(getattr(cfg, f.name)) for f in _public_fields(Config)}


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def flat_config(config: dict, prefix: str = "") -> dict:
    """Nested config → {"train.lr": 0.001, ...}; lists and None as their text."""
    out: dict = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_config(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = str(value)
    return out
