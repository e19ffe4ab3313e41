"""Process-wide settings and device helpers the CLIs and every stage share."""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import sys

import torch

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


def show_progress() -> bool:
    """Progress bars on a terminal only, so logs and CI stay readable; COMPETITION_PROGRESS=1 or 0
    forces them on or off (the GPU benchmark measures both)."""
    forced = os.environ.get("COMPETITION_PROGRESS")
    return forced == "1" if forced in ("0", "1") else sys.stderr.isatty()


def amp_dtype_for(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bf16 where the GPU has it, else fp16; no autocast on the CPU."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast for `dtype`, or nothing when it is None."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on the training device; image batches in channels_last on CUDA."""
    x = x.to(device, non_blocking=True)
    if x.dim() == 4 and device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def probabilities(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Class probabilities in float32: softmax over classes, or a sigmoid per class for multi-label."""
    logits = logits.float()
    return logits.sigmoid() if multi_label else logits.softmax(1)
