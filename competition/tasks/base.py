"""The steps every task kind implements (tasks/image.py, tasks/tabular.py), and what a fold's
datasets hand the training loop."""
from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from competition.core.errors import CompetitionError
from competition.core.schema import Config
from competition.data.datasets import JoinedRows
from competition.data.folder import Competition
from competition.io.checkpoints import FoldState
from competition.models.contract import Builder


@dataclass
class FoldData:
    """Everything the training loop needs about one fold's rows."""

    train_ds: Dataset
    valid_ds: Dataset
    valid_ids: list
    train_targets: np.ndarray  # class indices, or a 0/1 matrix for multi-label (data.targets)
    valid_targets: np.ndarray
    in_features: int | None  # a table's feature count; None for images
    preprocessor_state: dict | None  # a table's fitted preprocessing, stored in the checkpoint
    preprocessing: dict  # an image model's size, mean, std, interpolation; {} for tables
    train_transform: Callable | None = None  # uint8 batch → normalised (and augmented) on the device
    eval_transform: Callable | None = None
    image_of: Callable[[int], np.ndarray] | None = None  # a validation row's picture, for the figures
    # The labelled training rows as validation sees them (no augmentation): what train.head_fit logreg
    # fits on and train.average / train.interpolate recompute BatchNorm statistics on. Images only.
    probe_ds: Dataset | None = None


def joined(parts: list[Dataset]) -> Dataset:
    return parts[0] if len(parts) == 1 else JoinedRows(parts)


def split(df: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, validation rows) of `fold`, each with a fresh index."""
    return df[df.fold != fold].reset_index(drop=True), df[df.fold == fold].reset_index(drop=True)


class Task:
    """The task-specific steps; one instance per task kind in tasks.TASKS, and one per family of
    table models fit once per fold (tasks.task_of picks a config's)."""

    name: ClassVar[str]  # its value of config key task
    # A pretrained body: stage 1 trains the head on the frozen backbone, stage 2 gives the
    # backbone lr × backbone_lr_mult, and test-time augmentation applies.
    two_stages: ClassVar[bool]
    # Its fold trainer, by name (training.trainers.TRAINERS): the torch loop in epochs, or one fit.
    trainer: ClassVar[str] = "epochs"
    # The model families it trains in epochs, by model.name, and under None the family of every
    # other name (timm's, whose builder checks it). Each builder returns a model that implements
    # models.contract: a new family is a module with its builder, and a line here.
    models: ClassVar[dict[str | None, Builder]] = {}

    def for_model(self, cfg: Config) -> Task:
        """The task of the config's model: this one, or a family's of its own (tasks/tabular.py)."""
        return self

    def model_names(self) -> list[str]:
        """The model.name values it takes, for the refusal of another."""
        return [name for name in self.models if name is not None]

    def build_model(self, cfg: Config, num_classes: int, in_features: int | None = None,
                    load_pretrained: bool = True) -> nn.Module:
        """The model a config describes, unfitted. `load_pretrained=False` when weights come from a checkpoint."""
        build = self.models.get(cfg.model.name, self.models.get(None))
        if build is None:
            raise CompetitionError(f"config key model.name: {cfg.model.name!r} is not a {self.name} model "
                                   f"({', '.join(self.model_names())})")
        return build(cfg, num_classes, in_features, load_pretrained)

    def check_model(self, cfg: Config, num_classes: int, load_pretrained: bool = True) -> nn.Module:
        """Build the model once now (with its pretrained weights), so that an unknown model name or
        missing or broken weights fail before a run writes anything. Returns it, for sizing its
        checkpoints (a table's with one input feature: its real width comes with the folds)."""
        return self.build_model(cfg, num_classes, in_features=1, load_pretrained=load_pretrained)

    def check_fit(self, cfg: Config, comp: Competition) -> None:
        """A check of the model on real rows before a run writes anything (a model fit once per fold
        fits a few), after `prepare`."""

    def check_package(self, cfg: Config) -> None:
        """package ships each fold's checkpoint to predict without train.csv and folds.csv: refuse a
        model whose checkpoint cannot."""

    def check_inputs(self, cfg: Config, comp: Competition) -> None:
        """The input columns of train.csv and test.csv, and what they point at."""
        raise NotImplementedError

    def prepare(self, cfg: Config, comp: Competition, train: bool = True) -> None:
        """Work before any fold trains or predicts (decoding every image once); `train=False`
        when only the test rows will be read."""

    def prepare_bytes(self, cfg: Config, comp: Competition) -> int:
        """What `prepare` still has to write under output_dir, in bytes."""
        return 0

    def fold(self, cfg: Config, comp: Competition, df: pd.DataFrame, fold: int, device: torch.device,
             load_pretrained: bool) -> tuple[nn.Module, FoldData]:
        """A fold's fresh model and its datasets."""
        raise NotImplementedError

    def inputs(self, cfg: Config, comp: Competition, state: FoldState, device: torch.device,
               rows: np.ndarray | None = None) -> tuple[Hashable, Callable[[], tuple[Dataset, Callable | None]]]:
        """(key, make) for test.csv — or for `rows` of train.csv, a fold's validation rows — as a
        fold's model sees them: folds with equal keys share one dataset, and `make()` builds it
        with its batch transform."""
        raise NotImplementedError

    def tta(self, cfg: Config) -> list[str]:
        return list(cfg.predict.tta) if self.two_stages else []

    def picture_of(self, cfg: Config, comp: Competition) -> Callable[[int, int], np.ndarray] | None:
        """(train.csv row, shorter side) → the row's picture, for the report's mistakes; None for a
        task whose rows are no pictures."""
        return None

    def rebuild_model(self, cfg: Config, comp: Competition, fold_cfg: Config, state: FoldState) -> nn.Module:
        """A fold's model, rebuilt from the config stored in its checkpoint (weights loaded after)."""
        return self.build_model(fold_cfg, len(comp.classes), state.in_features, load_pretrained=False)
