"""What differs between an image competition and a table: the input columns and their checks, the
work before training, each fold's datasets and model, and the test inputs. Everything else — folds,
the training loop, checkpoints, the ensemble and the submission — is shared."""
from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from competition.core.choices import CACHE_DIR
from competition.core.errors import CompetitionError
from competition.core.metrics import METRICS
from competition.core.schema import Config
from competition.data.batch_augment import BatchAugment, use_device_augment
from competition.data.cache import cache_bytes, cache_bytes_to_build, image_cache
from competition.data.datasets import CachedRows, ImageDataset, JoinedRows, TabularDataset
from competition.data.device_rows import DeviceRows, residence
from competition.data.features import TabularPreprocessor, feature_columns, load_feature_hook
from competition.data.folder import Competition, load_competition, require_columns
from competition.data.images import UndecodableImages, build_image_column, check_images_decode, hw, image_paths
from competition.data.pseudo import read_pseudo_labels
from competition.data.targets import line_of
from competition.data.transforms import build_eval_transform, build_train_transform, decode_side
from competition.io.checkpoints import FoldState
from competition.models.build import build_model, preprocessing
from competition.models.tables import one_fit_family

log = logging.getLogger(__name__)

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
    """The task-specific steps; one instance per task kind in TASKS."""

    name: ClassVar[str]
    # A pretrained body: stage 1 trains the head on the frozen backbone, stage 2 gives the
    # backbone lr × backbone_lr_mult, and test-time augmentation applies.
    two_stages: ClassVar[bool]

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

    def rebuild_model(self, cfg: Config, comp: Competition, fold_cfg: Config, state: FoldState) -> nn.Module:
        """A fold's model, rebuilt from the config stored in its checkpoint (weights loaded after)."""
        return build_model(fold_cfg, len(comp.classes), state.in_features, load_pretrained=False)


class ImageTask(Task):
    name = "image"
    two_stages = True

    def check_inputs(self, cfg: Config, comp: Competition) -> None:
        d, column = cfg.data, cfg.data.image_column
        test_key = "data.test_image_pattern" if d.test_image_pattern else "data.image_pattern"  # its own, or train's
        for frame, path, key, pattern in ((comp.train, comp.train_path, "data.image_pattern", d.image_pattern),
                                          (comp.test, comp.test_path, test_key, d.test_image_pattern or d.image_pattern)):
            if pattern:  # paths from the row's columns, then checked as a path column is
                build_image_column(frame, path, pattern, key, column)
            require_columns(frame, path, [column])
            if frame[column].isna().any():
                row = frame.index[frame[column].isna()][0]
                raise CompetitionError(f"{path} line {line_of(row)}: missing value in image column '{column}'")
            absent = [(i, f) for i, f in enumerate(image_paths(frame, comp.root, column)) if not f.is_file()]
            if absent:
                i, f = absent[0]
                more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
                what = "is a folder, not an image file" if f.is_dir() else "not found"
                raise CompetitionError(f"{path} line {line_of(i)}: image {f} {what}{more}")

    def prepare(self, cfg: Config, comp: Competition, train: bool = True) -> None:
        """Decode every train and test image once: broken files fail now, listed. With the decode
        cache on, that one pass is the cache build (train and test images at the training size),
        which every fold and predict then read: no image is decoded twice."""
        column = cfg.data.image_column
        lists = ([image_paths(comp.train, comp.root, column)] if train else []) + [image_paths(comp.test, comp.root, column)]
        if cfg.train.cache == "off":
            check_images_decode([p for paths in lists for p in paths], Path(cfg.output_dir) / CACHE_DIR)
            return
        failures: list[str] = []
        for paths in lists:
            try:
                image_cache(cfg, paths, cfg.image.size)
            except UndecodableImages as exc:
                failures += exc.failures
        if failures:  # train and test in one message, as the check without the cache gives it
            raise UndecodableImages(failures)

    def prepare_bytes(self, cfg: Config, comp: Competition) -> int:
        """The decode caches of the train and test images not built yet (the check without the
        cache writes a few bytes)."""
        if cfg.train.cache == "off":
            return 0
        column, cache_dir = cfg.data.image_column, Path(cfg.output_dir) / CACHE_DIR
        return sum(cache_bytes_to_build(image_paths(frame, comp.root, column), cfg.image.size, cache_dir)
                   for frame in (comp.train, comp.test))

    def fold(self, cfg, comp, df, fold, device, load_pretrained):
        model = build_model(cfg, len(comp.classes), load_pretrained=load_pretrained)
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        return model, self.fold_data(cfg, comp, df, fold, device, preprocessing(model, cfg.image.size), weights)

    def fold_data(self, cfg: Config, comp: Competition, df: pd.DataFrame, fold: int, device: torch.device,
                  prep: dict, model_bytes: int = 0) -> FoldData:
        """The fold's datasets for a model that wants `prep` (size, mean, std, interpolation): cached
        rows for the device path, else albumentations pipelines over the files or the cache. The
        training rows are the other folds' rows, then any pseudo-labelled test rows."""
        d, size = cfg.data, prep["size"]
        train_df, valid_df = split(df, fold)
        cache = image_cache(cfg, image_paths(df, comp.root, d.image_column), size)
        train_rows, valid_rows = np.flatnonzero((df.fold != fold).to_numpy()), np.flatnonzero((df.fold == fold).to_numpy())
        valid_targets, answers = comp.target.encode(valid_df), comp.target.encode(train_df)
        # (frame, answers, the cache its rows are in, their rows there) for each part of the training rows
        parts = [(train_df, answers, cache, train_rows)]
        pseudo = read_pseudo_labels(cfg, comp)
        if pseudo is not None:
            test_cache = image_cache(cfg, image_paths(comp.test, comp.root, d.image_column), size)
            parts = [(train_df, comp.target.soft(parts[0][1]), cache, train_rows),
                     (comp.test.iloc[pseudo.rows].reset_index(drop=True), pseudo.targets, test_cache, pseudo.rows)]
        if cache is not None and use_device_augment(cfg, device, cached=True):
            probe_ds = CachedRows(cache.subset(train_rows), answers)
            nbytes = cache_bytes(sum(len(r) for *_, r in parts) + len(valid_rows), cache.size)
            where = residence(cfg.train.cache_on_device, device, nbytes, model_bytes)
            if where == "loader":  # uint8 rows from worker processes, augmented on the device
                train_ds = joined([CachedRows(c.subset(r), t) for _, t, c, r in parts])
                valid_ds = CachedRows(cache.subset(valid_rows), valid_targets)
            else:
                train_ds = DeviceRows([(c.subset(r), t) for _, t, c, r in parts], device, where == "stream")
                valid_ds = DeviceRows([(cache.subset(valid_rows), valid_targets)], device, where == "stream")
                log.info("fold %d: %s rows %s (%.0f MB)", fold, len(train_ds) + len(valid_ds),
                         "held on the device" if where == "device" else "streamed to the device", nbytes / 1e6)
            train_tf = BatchAugment(size, prep["mean"], prep["std"], cfg.image.augment, train=True)
        else:
            pipeline = build_train_transform(size, cfg.image.augment, prep["interpolation"])
            train_ds = joined([ImageDataset(f, comp.root, pipeline, t, image_column=d.image_column,
                                            images=c.subset(r) if c else None,
                                            decode_side=decode_side(size, cfg.image.augment)) for f, t, c, r in parts])
            valid_ds = ImageDataset(valid_df, comp.root, build_eval_transform(size, prep["interpolation"]), valid_targets,
                                    image_column=d.image_column, images=cache.subset(valid_rows) if cache else None,
                                    decode_side=size)
            probe_ds = ImageDataset(train_df, comp.root, build_eval_transform(size, prep["interpolation"]), answers,
                                    image_column=d.image_column, images=cache.subset(train_rows) if cache else None,
                                    decode_side=size)
            train_tf = BatchAugment(size, prep["mean"], prep["std"])
        eval_tf = BatchAugment(size, prep["mean"], prep["std"])
        train_targets = np.concatenate([t for _, t, _, _ in parts])
        return FoldData(train_ds, valid_ds, valid_df[d.id_column].tolist(), train_targets, valid_targets, None, None,
                        prep, train_tf, eval_tf, valid_ds.raw, probe_ds)

    def inputs(self, cfg, comp, state, device, rows=None):
        p = state.preprocessing
        size, mean, std, interp = p["size"], p["mean"], p["std"], p["interpolation"]
        frame = comp.test if rows is None else comp.train.iloc[rows].reset_index(drop=True)

        def make() -> tuple[Dataset, Callable]:
            # The cache of the whole file (train or test), as `prepare` built it; a subset for rows.
            whole = comp.test if rows is None else comp.train
            cache = image_cache(cfg, image_paths(whole, comp.root, cfg.data.image_column), size)
            if cache is not None and rows is not None:
                cache = cache.subset(rows)
            if cache is not None and use_device_augment(cfg, device, cached=True):
                where = residence(cfg.train.cache_on_device, device, cache_bytes(len(cache), cache.size))
                # uint8 rows to the device, resized there
                ds = CachedRows(cache) if where == "loader" else DeviceRows([(cache, None)], device, where == "stream")
            else:
                ds = ImageDataset(frame, comp.root, build_eval_transform(size, interp),
                                  image_column=cfg.data.image_column, images=cache, decode_side=size)
            return ds, BatchAugment(size, mean, std)  # uint8 → normalised float on the device

        # Folds trained from one config share their input pipeline: each test image decoded once.
        key = (hw(size), tuple(mean), tuple(std), interp)
        return (key if rows is None else (*key, state.fold)), make


class TabularTask(Task):
    name = "tabular"
    two_stages = False

    def check_inputs(self, cfg: Config, comp: Competition) -> None:
        features = feature_columns(cfg, comp.train)
        require_columns(comp.train, comp.train_path, features)
        require_columns(comp.test, comp.test_path, features)

    def prepare(self, cfg: Config, comp: Competition, train: bool = True) -> None:
        """One fit on every train row and a transform of the test rows (which have no target):
        a feature hook that fails, or returns the wrong thing, fails before anything is written."""
        hook = load_feature_hook(cfg)
        if hook is not None:
            TabularPreprocessor.fit(comp.train, feature_columns(cfg, comp.train), hook).transform(comp.test)

    def fold(self, cfg, comp, df, fold, device, load_pretrained):
        d = cfg.data
        train_df, valid_df = split(df, fold)
        pre = TabularPreprocessor.fit(train_df, feature_columns(cfg, comp.train), load_feature_hook(cfg))
        train_targets, valid_targets = comp.target.encode(train_df), comp.target.encode(valid_df)
        pseudo = read_pseudo_labels(cfg, comp)
        if pseudo is None:
            train_ds = TabularDataset(train_df, pre, train_targets)
        else:  # fit on the fold's own rows only; the test rows are transformed
            soft = comp.target.soft(train_targets)
            train_targets = np.concatenate([soft, pseudo.targets])
            train_ds = JoinedRows([TabularDataset(train_df, pre, soft),
                                   TabularDataset(comp.test.iloc[pseudo.rows], pre, pseudo.targets)])
        data = FoldData(
            train_ds,
            TabularDataset(valid_df, pre, valid_targets),
            valid_df[d.id_column].tolist(),
            train_targets,
            valid_targets,
            pre.n_features,
            pre.state,
            {},
            # the labelled training rows: train.average / train.interpolate recompute the MLP's BatchNorm statistics on them
            probe_ds=TabularDataset(train_df, pre, comp.target.encode(train_df)),
        )
        return build_model(cfg, len(comp.classes), pre.n_features, load_pretrained=False), data

    def rebuild_model(self, cfg, comp, fold_cfg, state):
        family = one_fit_family(fold_cfg)
        if family is not None:  # a scikit-learn model refit and checked; a stored GBDT (models/tables.py)
            return family.rebuild(cfg, comp, fold_cfg, state)
        return super().rebuild_model(cfg, comp, fold_cfg, state)

    def inputs(self, cfg, comp, state, device, rows=None):
        # The local config's hook, never one a checkpoint names: a checkpoint must not run code.
        pre = TabularPreprocessor(state.preprocessor, load_feature_hook(cfg))
        frame = comp.test if rows is None else comp.train.iloc[rows].reset_index(drop=True)
        return (state.fold, rows is None), lambda: (TabularDataset(frame, pre), None)


# The task kinds (config key task); competition.config checks the keys each needs (TASK_CHECKS).
TASKS: dict[str, Task] = {"image": ImageTask(), "tabular": TabularTask()}


def open_competition(cfg: Config) -> tuple[Task, Competition]:
    """The config's task and its competition folder, every CSV, the target and the inputs checked."""
    task = TASKS[cfg.task]
    comp = load_competition(cfg)
    metric = METRICS[cfg.train.metric]
    if comp.target.kind not in metric.formats:
        raise CompetitionError(f"config key train.metric: {metric.name} scores a binary target; "
                               f"{comp.train_path} column '{comp.target.column}' has {len(comp.classes)} classes")
    if cfg.data.positive_class is not None and comp.target.kind != "binary":
        raise CompetitionError(f"config key data.positive_class: {comp.train_path} column '{comp.target.column}' has "
                               f"{len(comp.classes)} classes; a positive class applies to two")
    task.check_inputs(cfg, comp)
    return task, comp

