"""Free space on the filesystem a path lives on, whether a folder takes new files at all, and writes
that fail for either reason as one `error:` line."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from competition.core.errors import NO_SPACE, CompetitionError


class DiskFull(CompetitionError):
    """A write that failed for space: names the file, the bytes it needed (when known) and the
    bytes free on its filesystem. `reason` and `space` are the parts without the file, for a
    caller that names what it was writing in its own words."""

    def __init__(self, message: str, reason: str = "no space left on device", space: str = ""):
        super().__init__(message)
        self.reason, self.space = reason, space


def human_bytes(n: float) -> str:
    """Decimal units, as `df -H` prints them: 950 B, 4.6 MB, 410 MB, 1.5 GB."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            break
        n /= 1000
    if unit == "B":
        return f"{int(n)} B"
    return f"{n:.1f} {unit}" if abs(n) < 10 else f"{n:.0f} {unit}"


def free_space(path: str | os.PathLike) -> tuple[int, Path]:
    """(bytes free to this user, mount point) of the filesystem that holds `path`, or would
    hold it once its missing folders are made. `df`'s Avail: root may also use the blocks
    ext4 reserves for it (5% by default), so for root this errs on the short side."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    mount = p
    while not os.path.ismount(mount):
        mount = mount.parent
    return shutil.disk_usage(p).free, mount


def disk_full(path: str | os.PathLike, needed: int | None, exc: OSError) -> DiskFull:
    """The one-line error for a write of `path` that failed with ENOSPC or EDQUOT."""
    free, mount = free_space(path)
    need = f"needs {human_bytes(needed)}, " if needed else ""
    reason = os.strerror(exc.errno).lower() if exc.errno else "no space left on device"
    space = f"{need}{human_bytes(free)} free on {mount}"
    return DiskFull(f"{reason} writing {path} ({space})", reason, space)


@contextlib.contextmanager
def no_space_error(path: str | os.PathLike, needed: int | None = None) -> Iterator[None]:
    """Turn a write of `path` that fails for space into DiskFull; other errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        raise disk_full(path, needed, exc) from exc


def reserve(fd: int, size: int) -> None:
    """Allocate `size` bytes for an open file now, so that a disk without room fails here with
    ENOSPC instead of later, when a write through a memory map of the file would get SIGBUS."""
    if size <= 0:
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        # A filesystem that cannot preallocate: the memory-mapped writes still work, unguarded.
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise


# A folder that takes no new file: a read-only mount (a Kaggle notebook's /kaggle/input), or no permission.
NO_WRITE = (errno.EROFS, errno.EACCES, errno.EPERM)
WRITABLE_OUTPUT = "set output_dir to a folder you can write (--set output_dir=PATH)"


def cannot_write(folder: str | os.PathLike) -> str | None:
    """Why no file can be made in `folder` (or, before it exists, in the folder above it where it
    would be made), in a few words; None when one can. Tried with a nameless temporary file
    (O_TMPFILE, where the system has it), not read from the permission bits: root ignores those,
    while a read-only mount refuses root too."""
    p = Path(os.path.abspath(folder))
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    if not p.is_dir():
        return f"{p} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as exc:
        return os.strerror(exc.errno).lower() if exc.errno else str(exc)
    return None


def check_writable(folder: str | os.PathLike, what: str, fix: str) -> None:
    """Refuse in one line, before anything is written, a `folder` that takes no new file:
    `<what> <folder> cannot be written (<why>): <fix>`."""
    reason = cannot_write(folder)
    if reason is not None:
        raise CompetitionError(f"{what} {folder} cannot be written ({reason}): {fix}")


@contextlib.contextmanager
def no_write_error(path: str | os.PathLike) -> Iterator[None]:
    """Turn a write of `path` refused by its folder (read-only, no permission) into one line; the
    commands check their folders before they start (check_writable), so this is the safety net."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_WRITE:
            raise
        raise CompetitionError(f"cannot write {path} ({os.strerror(exc.errno).lower()})") from None
