"""Decode-cache rows fed to the device without a DataLoader: held on the GPU whole and gathered there
by index (the fold fits), or streamed from the memory-mapped cache by one background thread into
pinned buffers copied ahead of the model (it does not). No worker processes, no per-row Python:
a batch is one gather. Its augmentation runs on the device from the rows' seeds
(batch_augment.BatchAugment), so both paths give exactly what the DataLoader path gives."""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np
import torch

from competition.data.cache import CachedImages


class DeviceRows(torch.utils.data.Dataset):
    """uint8 rows [n, h, w, 3] and their answers, all on one device; `streaming`: left in the
    cache files (the parts' rows, gathered per batch) and copied to `device` batch by batch."""

    reads_files = False

    def __init__(self, parts: list[tuple[CachedImages, np.ndarray | None]], device: torch.device, streaming: bool = False):
        self.device, self.streaming, self.parts = device, streaming, parts
        targets = [t for _, t in parts]
        self.targets = None if targets[0] is None else torch.from_numpy(np.concatenate(targets)).to(device)
        self.starts = np.cumsum([0] + [len(c) for c, _ in parts])
        self.images = None if streaming else self._upload()

    def _upload(self, chunk: int = 4096) -> torch.Tensor:
        """Every part's rows in one device tensor, copied in chunks: no host copy of the whole set."""
        images = torch.empty((len(self), *self.parts[0][0].array.shape[1:]), dtype=torch.uint8, device=self.device)
        for (cache, _), start in zip(self.parts, self.starts, strict=False):
            for a in range(0, len(cache), chunk):
                rows = np.arange(a, min(a + chunk, len(cache)))
                images[start + a:start + a + len(rows)] = torch.from_numpy(cache[rows])
        return images

    def __len__(self) -> int:
        return int(self.starts[-1])

    def gather(self, rows: np.ndarray) -> torch.Tensor:
        """The uint8 rows `rows` (positions in this dataset) as one host array, for streaming."""
        out = np.empty((len(rows), *self.parts[0][0].array.shape[1:]), dtype=np.uint8)
        part = np.searchsorted(self.starts, rows, side="right") - 1
        for k, (cache, _) in enumerate(self.parts):
            mine = np.flatnonzero(part == k)
            if len(mine):
                out[mine] = cache[rows[mine] - self.starts[k]]
        return torch.from_numpy(out)

    def __getitem__(self, key):
        """One row (and its answer), for code that reads rows one by one (Grad-CAM's few)."""
        index = key[0] if isinstance(key, tuple) else key
        x = self.images[index] if self.images is not None else self.gather(np.array([index]))[0].to(self.device)
        return x if self.targets is None else (x, self.targets[index])

    def raw(self, index: int) -> np.ndarray:
        if self.images is not None:
            return self.images[index].cpu().numpy()
        return self.gather(np.array([index]))[0].numpy()


class DeviceBatches:
    """The loader over DeviceRows: the sampler's keys in batches, as the DataLoader would cut them
    (same `batch_size`, `drop_last`, `sampler`), yielding (x, y, seeds) for training, (x, y) for
    validation, x alone without answers."""

    def __init__(self, ds: DeviceRows, batch_size: int, sampler=None, drop_last: bool = False):
        self.dataset, self.batch_size, self.drop_last = ds, batch_size, drop_last
        self.sampler = sampler if sampler is not None else range(len(ds))

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _batches(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        keys = list(self.sampler)
        for start in range(0, len(keys), self.batch_size):
            chunk = keys[start:start + self.batch_size]
            if self.drop_last and len(chunk) < self.batch_size:
                return
            if isinstance(chunk[0], tuple):
                yield np.array([k[0] for k in chunk]), np.array([k[1] for k in chunk], dtype=np.int64)
            else:
                yield np.asarray(chunk), None

    def _emit(self, x: torch.Tensor, index: torch.Tensor, seeds: np.ndarray | None):
        """The batch as the loop takes it; `index`: its rows, already on the device."""
        ds = self.dataset
        if ds.targets is None:
            return x
        if seeds is None:
            return x, ds.targets[index]
        return x, ds.targets[index], torch.from_numpy(seeds).to(ds.device, non_blocking=True)

    def __iter__(self):
        ds = self.dataset
        if ds.streaming:
            yield from self._stream()
            return
        for rows, seeds in self._batches():
            index = torch.from_numpy(rows).to(ds.device, non_blocking=True)
            yield self._emit(ds.images[index], index, seeds)

    def _stream(self):
        """One thread gathers the next batches from the cache into pinned memory (two ahead) while
        the device works on this one; the copy to the device does not wait."""
        ds, pin = self.dataset, self.dataset.device.type == "cuda"
        ready: queue.Queue = queue.Queue(maxsize=2)
        done, stopped = object(), threading.Event()

        def put(item) -> None:
            while not stopped.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def produce() -> None:
            try:
                for rows, seeds in self._batches():
                    if stopped.is_set():
                        return
                    x = ds.gather(rows)
                    put((x.pin_memory() if pin else x, rows, seeds))
                put(done)
            except BaseException as exc:  # handed to the consumer, raised there
                put(exc)

        thread = threading.Thread(target=produce, name="rows-stream", daemon=True)
        thread.start()
        try:
            while (item := ready.get()) is not done:
                if isinstance(item, BaseException):
                    raise item
                x, rows, seeds = item
                yield self._emit(x.to(ds.device, non_blocking=True), torch.from_numpy(rows).to(ds.device), seeds)
        finally:  # also when the consumer stops early (an interrupt): the thread ends, not waits
            stopped.set()
            thread.join()


DEVICE_SHARE = 0.25  # auto: the rows may take this share of the GPU memory free after the model's state


def residence(mode: str, device: torch.device, nbytes: int, model_bytes: int = 0) -> str:
    """Where cached rows feed the device path from: "device" (held on it), "stream" (a thread from
    the cache file), or "loader" (the DataLoader's worker processes). auto: on the GPU when the
    rows fit in a quarter of its free memory once the model's weights, gradients and AdamW's two
    moments (4 × the weights) are counted; else streamed."""
    if mode == "on":
        return "device"
    if mode == "stream":
        return "stream"
    if mode == "off" or device.type != "cuda":
        return "loader"
    free, _ = torch.cuda.mem_get_info(device)
    return "device" if nbytes <= DEVICE_SHARE * (free - 4 * model_bytes) else "stream"
