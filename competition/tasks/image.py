"""The image task: image files named by a column (or a pattern), decoded once, a timm backbone
fine-tuned in two stages, test-time augmentation."""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from competition.core.choices import CACHE_DIR
from competition.core.errors import CompetitionError
from competition.core.schema import Config
from competition.data.batch_augment import BatchAugment, use_device_augment
from competition.data.cache import cache_bytes, cache_bytes_to_build, image_cache
from competition.data.datasets import CachedRows, ImageDataset
from competition.data.device_rows import DeviceRows, residence
from competition.data.folder import Competition, require_columns
from competition.data.images import (
    Crop,
    UndecodableImages,
    build_image_column,
    check_images_decode,
    hw,
    image_paths,
    load_image,
)
from competition.data.pseudo import read_pseudo_labels
from competition.data.targets import line_of
from competition.data.transforms import build_eval_transform, build_train_transform, decode_side
from competition.models.build import build_timm
from competition.models.contract import data_config
from competition.tasks.base import FoldData, Task, joined, split

log = logging.getLogger(__name__)


def crop_of(cfg: Config) -> Crop:
    """The crop image.crop_mode and image.crop_pct ask for; crop_pct `pretrained` is the one in
    timm's pretrained config of model.name (0.875 for tf_efficientnet_lite0)."""
    pct = cfg.image.crop_pct
    if pct == "pretrained":
        import timm

        named = timm.models.get_pretrained_cfg(cfg.model.name)
        if named is None or named.crop_pct is None:
            raise CompetitionError(f"config key image.crop_pct: pretrained, and timm names no crop_pct for model.name "
                                   f"{cfg.model.name}: give the fraction (0.875 is timm's usual)")
        pct = named.crop_pct
    return Crop(cfg.image.crop_mode, float(pct))


class ImageTask(Task):
    """Images named by data.image_column (or built by data.image_pattern), decoded once, into a timm
    backbone trained in two stages, with test-time augmentation."""

    name = "image"
    two_stages = True
    models = {None: build_timm}  # any name timm knows

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
        crop = crop_of(cfg)  # a crop_pct timm does not know is refused before any decoding
        if cfg.train.cache == "off":
            check_images_decode([p for paths in lists for p in paths], Path(cfg.output_dir) / CACHE_DIR)
            return
        failures: list[str] = []
        for paths in lists:
            try:
                image_cache(cfg, paths, cfg.image.size, crop)
            except UndecodableImages as exc:
                failures += exc.failures
        if failures:  # train and test in one message, as the check without the cache gives it
            raise UndecodableImages(failures)

    def prepare_bytes(self, cfg: Config, comp: Competition) -> int:
        """The decode caches of the train and test images not built yet (the check without the
        cache writes a few bytes)."""
        if cfg.train.cache == "off":
            return 0
        column, cache_dir, crop = cfg.data.image_column, Path(cfg.output_dir) / CACHE_DIR, crop_of(cfg)
        return sum(cache_bytes_to_build(image_paths(frame, comp.root, column), cfg.image.size, cache_dir, crop)
                   for frame in (comp.train, comp.test))

    def fold(self, cfg, comp, df, fold, device, load_pretrained):
        model = self.build_model(cfg, len(comp.classes), load_pretrained=load_pretrained)
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        prep = data_config(model, cfg.image.size)
        if prep:  # what of each photo it sees, recorded in the checkpoint for predict
            crop = crop_of(cfg)
            prep.update(crop_mode=crop.mode, crop_pct=crop.pct)
        return model, self.fold_data(cfg, comp, df, fold, device, prep, weights)

    def fold_data(self, cfg: Config, comp: Competition, df: pd.DataFrame, fold: int, device: torch.device,
                  prep: dict, model_bytes: int = 0) -> FoldData:
        """The fold's datasets for a model that wants `prep` (size, mean, std, interpolation, crop):
        cached rows for the device path, else albumentations pipelines over the files or the cache.
        The training rows are the other folds' rows, then any pseudo-labelled test rows."""
        d, size, crop = cfg.data, prep["size"], Crop.of(prep)
        cut = functools.partial(crop, size=size)  # photos read from their files; cached rows are cut already
        train_df, valid_df = split(df, fold)
        cache = image_cache(cfg, image_paths(df, comp.root, d.image_column), size, crop)
        train_rows, valid_rows = np.flatnonzero((df.fold != fold).to_numpy()), np.flatnonzero((df.fold == fold).to_numpy())
        valid_targets, answers = comp.target.encode(valid_df), comp.target.encode(train_df)
        # (frame, answers, the cache its rows are in, their rows there) for each part of the training rows
        parts = [(train_df, answers, cache, train_rows)]
        pseudo = read_pseudo_labels(cfg, comp)
        if pseudo is not None:
            test_cache = image_cache(cfg, image_paths(comp.test, comp.root, d.image_column), size, crop)
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
                                            images=c.subset(r) if c else None, crop=cut,
                                            decode_side=crop.decode_side(decode_side(size, cfg.image.augment)))
                                for f, t, c, r in parts])
            valid_ds = ImageDataset(valid_df, comp.root, build_eval_transform(size, prep["interpolation"]), valid_targets,
                                    image_column=d.image_column, images=cache.subset(valid_rows) if cache else None,
                                    decode_side=crop.decode_side(max(hw(size))), crop=cut)
            probe_ds = ImageDataset(train_df, comp.root, build_eval_transform(size, prep["interpolation"]), answers,
                                    image_column=d.image_column, images=cache.subset(train_rows) if cache else None,
                                    decode_side=crop.decode_side(max(hw(size))), crop=cut)
            train_tf = BatchAugment(size, prep["mean"], prep["std"])
        eval_tf = BatchAugment(size, prep["mean"], prep["std"])
        train_targets = np.concatenate([t for _, t, _, _ in parts])
        return FoldData(train_ds, valid_ds, valid_df[d.id_column].tolist(), train_targets, valid_targets, None, None,
                        prep, train_tf, eval_tf, valid_ds.raw, probe_ds)

    def inputs(self, cfg, comp, state, device, rows=None):
        p = state.preprocessing
        size, mean, std, interp, crop = p["size"], p["mean"], p["std"], p["interpolation"], Crop.of(p)
        frame = comp.test if rows is None else comp.train.iloc[rows].reset_index(drop=True)

        def make() -> tuple[Dataset, Callable]:
            # The cache of the whole file (train or test), as `prepare` built it; a subset for rows.
            whole = comp.test if rows is None else comp.train
            cache = image_cache(cfg, image_paths(whole, comp.root, cfg.data.image_column), size, crop)
            if cache is not None and rows is not None:
                cache = cache.subset(rows)
            if cache is not None and use_device_augment(cfg, device, cached=True):
                where = residence(cfg.train.cache_on_device, device, cache_bytes(len(cache), cache.size))
                # uint8 rows to the device, resized there
                ds = CachedRows(cache) if where == "loader" else DeviceRows([(cache, None)], device, where == "stream")
            else:
                ds = ImageDataset(frame, comp.root, build_eval_transform(size, interp), image_column=cfg.data.image_column,
                                  images=cache, decode_side=crop.decode_side(max(hw(size))),
                                  crop=functools.partial(crop, size=size))
            return ds, BatchAugment(size, mean, std)  # uint8 → normalised float on the device

        # Folds trained from one config share their input pipeline: each test image decoded once.
        key = (hw(size), tuple(mean), tuple(std), interp, crop)
        return (key if rows is None else (*key, state.fold)), make

    def picture_of(self, cfg: Config, comp: Competition) -> Callable[[int, int], np.ndarray] | None:
        paths, crop = image_paths(comp.train, comp.root, cfg.data.image_column), crop_of(cfg)
        # what the model sees of the photo; a large JPEG may decode at reduced scale
        return lambda row, side: crop(load_image(paths[row], crop.decode_side(side)), cfg.image.size)
