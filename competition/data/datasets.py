"""Datasets over a DataFrame: images (files or decode cache) and tables, with their answers or without."""
from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from competition.data.device_rows import DeviceBatches, DeviceRows
from competition.data.images import image_paths, load_image
from competition.data.transforms import seed_pipeline


def target_item(targets: np.ndarray, index: int):
    """One row's answer: a class index (int), or a float 0/1 vector for multi-label."""
    row = targets[index]
    return torch.from_numpy(np.array(row, dtype=np.float32)) if np.ndim(row) else int(row)


class ImageDataset(Dataset):
    """Rows of a DataFrame → (image, answer) when `targets` are given (see data.targets: a class
    index, or a 0/1 vector for multi-label), the image alone otherwise; the image is a uint8 HWC
    tensor, converted and normalised per batch by `batch_augment.BatchAugment`.

    `transform` is a uint8 albumentations pipeline called as transform(image=array)["image"].
    `images`, when given, is an array [n, H, W, 3] of pre-decoded rows (the decode cache)
    used instead of reading the files. `decode_side` lets large JPEG files decode at reduced
    scale as long as both sides stay at least that long (`transforms.decode_side`). `crop`, when
    given, cuts each photo read from its file before the transform (`images.Crop` with its size
    bound: functools.partial, which worker processes can unpickle); cached rows are cut already.
    """

    def __init__(
        self,
        df: pd.DataFrame,
        root: str | Path,
        transform: Callable,
        targets: np.ndarray | None = None,
        *,
        image_column: str = "image",
        images: np.ndarray | None = None,
        decode_side: int | None = None,
        crop: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        self.paths = image_paths(df, Path(root), image_column)
        self.transform = transform
        self.decode_side = decode_side
        self.crop = crop
        self.targets = targets
        self.images = images
        if images is not None and len(images) != len(self.paths):
            raise ValueError(f"images holds {len(images)} rows, the DataFrame {len(self.paths)}")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def reads_files(self) -> bool:
        return self.images is None

    def raw(self, index: int) -> np.ndarray:
        """The decoded RGB image of a row (from the cache when there is one), cut by the crop."""
        if self.images is not None:
            return np.asarray(self.images[index])
        image = load_image(self.paths[index], self.decode_side)
        return self.crop(image) if self.crop is not None else image

    def __getitem__(self, key: int | tuple[int, int]):
        # The seeded sampler passes (row, seed): augmentation then depends on the epoch and the
        # row only, never on which worker process or thread serves it, so runs and resumes repeat exactly.
        index, seed = key if isinstance(key, tuple) else (key, None)
        image = self.raw(index)
        if seed is not None and hasattr(self.transform, "set_random_state"):
            seed_pipeline(self.transform, seed)
        # A pipeline that leaves a cached row as it is returns the read-only memmap: copy it then.
        x = torch.from_numpy(np.require(self.transform(image=image)["image"], requirements=["C", "W"]))
        if self.targets is None:
            return x
        return x, target_item(self.targets, index)


class TabularDataset(Dataset):
    """Rows of a DataFrame through a fitted TabularPreprocessor → (features, answer), or the
    features alone when no `targets` are given."""

    def __init__(self, df: pd.DataFrame, preprocessor, targets: np.ndarray | None = None):
        self.features = torch.from_numpy(preprocessor.transform(df))
        self.targets = None if targets is None else torch.from_numpy(targets)

    def __len__(self) -> int:
        return len(self.features)

    reads_files = False

    def __getitem__(self, key: int | tuple[int, int]):
        index = key[0] if isinstance(key, tuple) else key  # tables have no random augmentation
        if self.targets is None:
            return self.features[index]
        return self.features[index], self.targets[index]


class CachedRows(Dataset):
    """Rows of the decode cache as uint8 HWC tensors (with the label and the sample's seed), for
    `batch_augment.BatchAugment` to crop, flip and normalise on the device."""

    def __init__(self, images, targets=None):
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.images)

    reads_files = False

    def raw(self, index: int) -> np.ndarray:
        return np.asarray(self.images[index])

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, 0)
        x = torch.from_numpy(self.raw(index).copy())
        if self.targets is None:
            return x
        return x, target_item(self.targets, index), int(seed)


class JoinedRows(Dataset):
    """Several datasets one after the other (a fold's training rows, then its pseudo-labelled test
    rows), indexed by the seeded sampler's (row, seed) keys as one dataset."""

    def __init__(self, parts: list[Dataset]):
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def reads_files(self) -> bool:
        return any(getattr(p, "reads_files", True) for p in self.parts)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        part = int(np.searchsorted(self.starts, index, side="right")) - 1
        local = index - int(self.starts[part])
        return self.parts[part][(local, seed) if seed is not None else local]


def thread_copy(ds: Dataset) -> Dataset:
    """A copy of `ds` for one thread: its own transform (albumentations pipelines keep their random
    state on the object), everything else shared."""
    if isinstance(ds, JoinedRows):
        return JoinedRows([thread_copy(p) for p in ds.parts])
    ds = copy.copy(ds)
    if getattr(ds, "transform", None) is not None:
        ds.transform = copy.deepcopy(ds.transform)
    return ds


class ThreadedRows(Dataset):
    """A dataset whose batches are fetched by a pool of threads in this process.

    Each thread works on its own shallow copy of `dataset` with its own copy of the transform
    (albumentations pipelines keep their random state on the object); every sample is still
    seeded by its key, so the batch does not depend on which thread served which row.
    """

    def __init__(self, dataset: Dataset, threads: int):
        self.dataset, self.threads = dataset, max(1, threads)
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def _own(self) -> Dataset:
        ds = getattr(self._local, "dataset", None)
        if ds is None:
            ds = self._local.dataset = thread_copy(self.dataset)
        return ds

    def __getitem__(self, key):
        return self._own()[key]

    def __getitems__(self, keys: list) -> list:
        if self.threads == 1:
            return [self[k] for k in keys]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="rows")
        return list(self._pool.map(self.__getitem__, keys))


def build_loader(
    ds: Dataset, batch_size: int, device: torch.device, *, num_workers: int, sampler=None, drop_last: bool = False,
    persistent: bool = True,
) -> DataLoader:
    """The DataLoader for training, validation and prediction.

    Rows that need no file read (the decode cache, tables) load in this process when the model
    runs on the CPU: `num_workers` threads instead of worker processes. There, the processes
    only compete with the model for the same cores, and handing each batch over from a process
    costs more than cropping it (benchmarks/RESULTS.md, "Training loader"). Files to decode,
    and anything feeding a GPU, go through worker processes (kept between passes when
    `persistent`; pinned memory on CUDA).
    """
    if isinstance(ds, DeviceRows):  # rows on (or streamed to) the device: no DataLoader at all
        return DeviceBatches(ds, batch_size, sampler, drop_last)
    if num_workers > 0 and device.type == "cpu" and not getattr(ds, "reads_files", True):
        ds, num_workers = ThreadedRows(ds, num_workers), 0
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=persistent and num_workers > 0,
        drop_last=drop_last,
    )
