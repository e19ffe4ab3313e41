"""Decode cache: images decoded and resized once, in parallel, into a uint8 memmap reused by
every epoch and every fold; rebuilt when the image list, the files or the resolution change."""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import cv2
import numpy as np

from competition.core.config import Config
from competition.data.images import UndecodableImages, decode_each, load_image
from competition.io.files import atomic_path, write_json

log = logging.getLogger(__name__)

CACHE_MODES = ("auto", "off")  # config key train.cache


def cache_key(paths: list[Path], size: int) -> str:
    """Names the image list, each file's size and mtime, and the cache resolution."""
    h = hashlib.sha1(f"v2|{size}".encode())  # v2: JPEGs decoded at reduced scale
    for p in paths:
        st = os.stat(p)
        h.update(f"\n{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Square resize; INTER_AREA when shrinking (no aliasing), bilinear when growing."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    interp = cv2.INTER_AREA if h >= size and w >= size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


class CachedImages:
    """Read-only [n, size, size, 3] uint8 rows of a cache file, optionally a subset of rows.

    Pickles as (path, shape, rows) so DataLoader workers open their own memmap instead of
    receiving a copy of the array.
    """

    def __init__(self, path: Path, n: int, size: int, rows: np.ndarray | None = None):
        self.path, self.n, self.size = Path(path), n, size
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self._array = None

    def subset(self, rows: np.ndarray) -> CachedImages:
        base = np.arange(self.n) if self.rows is None else self.rows
        return CachedImages(self.path, self.n, self.size, base[np.asarray(rows)])

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.memmap(self.path, dtype=np.uint8, mode="r", shape=(self.n, self.size, self.size, 3))
        return self._array

    def __len__(self) -> int:
        return self.n if self.rows is None else len(self.rows)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.array[i if self.rows is None else self.rows[i]]

    def __getstate__(self) -> dict:
        return {"path": self.path, "n": self.n, "size": self.size, "rows": self.rows, "_array": None}


def build_cache(paths: list[Path], size: int, cache_dir: Path, workers: int | None = None) -> CachedImages:
    """Return the cache for `paths` at `size`, decoding (in parallel) only when it is missing."""
    cache_dir = Path(cache_dir)
    key = cache_key(paths, size)
    path = cache_dir / f"images-{size}px-{key}.u8"
    if path.is_file() and path.stat().st_size == len(paths) * size * size * 3:
        return CachedImages(path, len(paths), size)
    with atomic_path(path) as tmp:
        array = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(len(paths), size, size, 3))

        def fill(i: int) -> None:
            array[i] = resize(load_image(paths[i], size), size)

        failures = [f for f in decode_each(paths, fill, desc=f"decode cache {size}px", workers=workers) if f]
        if failures:  # every broken file named; atomic_path leaves no cache (nor folder) behind
            raise UndecodableImages(failures)
        array.flush()
    write_json(path.with_suffix(".json"), {"images": len(paths), "size": size, "first": str(paths[0]) if paths else None})
    log.info("decode cache: %d images at %dpx in %s", len(paths), size, path)
    return CachedImages(path, len(paths), size)


def image_cache(cfg: Config, paths: list[Path], size: int) -> CachedImages | None:
    """The decode cache of `paths` under the run's output folder, or None when train.cache is off."""
    if cfg.train.cache == "off":
        return None
    return build_cache(paths, size, Path(cfg.output_dir) / "cache")
