"""Process-wide settings the training and predict CLIs make once, before any tensor exists."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the kernel.

    By default glibc serves every block over 32 MiB with its own mmap and unmaps it on free, so
    the large activation buffers of a CPU training step are page-faulted in afresh on every
    step: on a 2-core machine that tripled the time of an EfficientNet-Lite0 epoch at 256 px
    (benchmarks/RESULTS.md). Serving them from the heap and never trimming it keeps them
    mapped; the process keeps its peak memory until it exits, as jemalloc or tcmalloc would.
    Linux with glibc only; a user's own MALLOC_MMAP_MAX_ or MALLOC_TRIM_THRESHOLD_ setting
    wins. Returns whether the setting was made.
    """
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_MAX_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    if not ok:
        log.debug("mallopt refused; the C library's defaults stay")
    return ok
