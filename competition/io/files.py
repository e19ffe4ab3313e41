"""Atomic file writes: every file the kit writes goes to a temporary name, then os.replace;
and the background writer that overlaps those writes with training."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from competition.core.errors import CompetitionError
from competition.io.disk import no_space_error, no_write_error

if TYPE_CHECKING:
    import pandas as pd


def _mode_for(path: Path) -> int:
    """The replaced file's permissions, else what the umask gives a new file."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it into place.

    A crash at any moment leaves either the previous file or the new one under `path`,
    never a half-written one. On an exception the temporary file is removed, and so are the
    folders this call created for it (when still empty): a refused write leaves nothing behind.
    A write that fails for space raises DiskFull naming `path`, its `size` (when given) and
    the bytes free, counted after the temporary file is gone; one that its folder refuses
    (read-only, no permission), or whose `path` is a folder, a one-line CompetitionError.
    """
    path = Path(path)
    with no_space_error(path, size):
        new_dirs = [d for d in (path.parent, *path.parent.parents) if not d.exists()]  # innermost first
        tmp_path = None
        try:
            with no_write_error(path):
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            tmp_path = Path(tmp)
            # mkstemp makes the file private (0600): give it the mode a plain open() would have.
            os.chmod(tmp_path, _mode_for(path))
            yield tmp_path
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            if path.is_dir():  # os.replace would say IsADirectoryError
                raise CompetitionError(f"cannot write {path}: it is a folder")
            os.replace(tmp_path, path)
        except BaseException:
            if tmp_path is not None:
                tmp_path.unlink(missing_ok=True)
            for d in new_dirs:
                with contextlib.suppress(OSError):  # not empty: another writer is using it
                    d.rmdir()
            raise
    # The rename is durable only once the directory entry is on disk.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success fsync every file in it and rename
    it to `path` (absent, or an empty folder). On an exception the temporary folder is removed,
    and so are the parent folders this call created: a failed build leaves nothing."""
    path = Path(path)
    new_dirs = [d for d in (path.parent, *path.parent.parents) if not d.exists()]  # innermost first
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's folder is private: give it a plain mkdir's mode
        yield tmp
        for file in (p for p in tmp.rglob("*") if p.is_file() and not p.is_symlink()):
            fd = os.open(file, os.O_RDONLY)  # fsync needs no write access (a hard-linked read-only file)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        try:
            os.replace(tmp, path)  # replaces an empty folder, never a full one
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
            raise CompetitionError(f"{path} exists and is not an empty folder: nothing was written there") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in new_dirs:
            with contextlib.suppress(OSError):  # not empty: another writer is using it
                d.rmdir()
        raise
    with contextlib.suppress(OSError):  # the rename is durable once the parent's entry is on disk
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_yaml(path: str | os.PathLike, data: Any) -> None:
    write_text(path, yaml.safe_dump(data, sort_keys=False))


def write_csv(path: str | os.PathLike, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def torch_save(path: str | os.PathLike, obj: Any) -> None:
    import torch  # here: a command that writes no checkpoint never loads torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path, size=len(data)) as tmp:
        tmp.write_bytes(data)


class BackgroundWriter:
    """Runs batches of writes on one background thread, in submission order, so their fsyncs
    (about half a second for a ResNet-18 checkpoint with its optimizer state) overlap the next
    epoch's training instead of adding to it.

    One batch at a time: `submit` first waits for the previous batch, and `close` for the last;
    an error in a batch is raised by whichever of them waits for it. Anything a batch writes
    must already be a snapshot (bytes, a copied list, a finished DataFrame)."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer")
        self._pending = None

    def submit(self, fn, *args) -> None:
        self.wait()
        self._pending = self._pool.submit(fn, *args)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
