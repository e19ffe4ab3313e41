"""The names each config choice may take: what `competition.config` checks a config against and lists
in its errors, importable without the libraries that implement them.

Checking a config (which every command does, `board` included) and printing `--help` must not
load torch, albumentations or pandas, so the names live here, in plain Python. Where a table
implements the choices (`data.transforms.AUGMENTATIONS` and `TTA_VIEWS`), it is keyed by the
same names, and tests/test_startup.py checks that the two agree (and that `tasks.TASKS` and
`config.TASK_CHECKS` have the task kinds of `TASK_KINDS`)."""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class TaskKind:
    """A value of config key `task`, as the config check and the layers below the tasks need it:
    `tasks.TASKS` implements each kind, and `config.TASK_CHECKS` checks the keys it needs."""

    image_files: bool  # its inputs are image files named by data.image_column, a key column (read as text)
    staged: bool  # a pretrained body frozen in stage 1 (tasks.base.Task.two_stages)


TASK_KINDS = {"image": TaskKind(image_files=True, staged=True), "tabular": TaskKind(image_files=False, staged=False)}

# Implemented by a table keyed by these names.
AUGMENTATION_NAMES = ("random_resized_crop", "hflip", "vflip", "rotate90", "affine", "color_jitter",
                      "brightness_contrast", "blur", "coarse_dropout")  # image.augment: data.transforms.AUGMENTATIONS
TTA_VIEW_NAMES = ("hflip", "vflip", "rot90", "rot180", "rot270", "transpose")  # predict.tta: data.transforms.TTA_VIEWS

# Modes that the code they name branches on.
TARGET_FORMATS = ("single", "multi_label")  # data.target_format: data.targets
FOLD_STRATEGIES = ("stratified", "group", "stratified_group", "kfold", "multilabel_stratified")  # folds.strategy: data.splits
OUTPUTS = ("auto", "labels", "probabilities")  # predict.output: inference.submission
CACHE_MODES = ("auto", "off")  # train.cache: data.cache
CROP_MODES = ("squash", "center")  # image.crop_mode: data.images.Crop
DEVICE_AUGMENT_MODES = ("auto", "on", "off")  # train.device_augment: data.batch_augment
CACHE_ON_DEVICE = ("auto", "on", "stream", "off")  # train.cache_on_device: data.device_rows
SAMPLERS = ("shuffle", "balanced", "sqrt")  # train.sampler: training.imbalance
CLASS_WEIGHTS = ("none", "balanced")  # train.class_weights: training.imbalance
LOSSES = ("cross_entropy", "focal")  # train.loss: training.losses
WANDB_MODES = ("off", "offline", "online")  # tracking.wandb: io.wandb_runs

# The kit's own folders under output_dir, which no run may be named after.
CACHE_DIR = "cache"  # output_dir/cache: every decode cache (and the image check's markers): data.cache
KEPT_FOLDS = "folds"  # output_dir/folds/<data folder's name>/folds.csv, a read-only data folder's split: data.splits
AUTO_DIR = "auto"  # output_dir/auto/<name>/: auto's study, trial logs, report (search/)


def shipped_dir() -> Path:
    """The package folder of the shipped configs (`--config NAME`) and the recipes beside them."""
    return Path(str(resources.files("competition") / "configs"))


def choice(key: str, value: str, options) -> None:
    """A config key's value must be one of `options`; the error lists them."""
    from competition.core.errors import CompetitionError  # the names above stay importable alone

    options = list(options)
    if value not in options:
        raise CompetitionError(f"config key {key}: {value!r} is not one of {', '.join(options)}")
