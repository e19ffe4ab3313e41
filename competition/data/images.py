"""Reading images: any PIL-readable file to RGB uint8, and the one parallel decode pass that names
every file that does not decode (used by the image check, the decode cache and import_folders)."""
from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from competition.core.errors import CompetitionError
from competition.core.patterns import pattern_fields
from competition.core.runtime import show_progress
from competition.data.targets import line_of
from competition.io.files import write_json

Size = int | Sequence[int]  # image.size: one side for a square, or [height, width]


def hw(size: Size) -> tuple[int, int]:
    """(height, width) of an image size given as one side or as [height, width]."""
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def size_name(size: Size) -> str:
    """`64px` for a square, `384x512` for height × width: in cache names and log lines."""
    h, w = hw(size)
    return f"{h}px" if h == w else f"{h}x{w}"


@dataclass(frozen=True)
class Crop:
    """What of each photo the model sees (image.crop_mode, image.crop_pct): the box cut from the
    decoded photo before it is resized to image.size, the same for training, validation, test,
    the decode cache and the report's pictures.

    `squash` keeps the central crop_pct of each side and resizes it to image.size whatever its
    aspect (crop_pct 1: the whole photo, the kit's default). `center` is timm's eval crop
    (crop_mode center): the largest box of image.size's aspect that fits the photo, scaled by
    crop_pct about its centre — for a square, the central square of side shorter side × crop_pct,
    what timm's resize to size / crop_pct followed by a size × size centre crop keeps. Cutting the
    box first and resizing once (instead of resizing and then cropping) reads the same pixels and
    interpolates once."""

    mode: str = "squash"
    pct: float = 1.0

    @property
    def whole(self) -> bool:
        """The whole photo, squashed: nothing is cut (the kit's behaviour before crops existed)."""
        return self.mode == "squash" and self.pct == 1.0

    @property
    def tag(self) -> str:
        """'' for the whole photo; else `-center0.875`: in cache names and cache keys."""
        return "" if self.whole else f"-{self.mode}{self.pct:g}"

    def box(self, height: int, width: int, size: Size) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the box kept of a height × width photo bound for `size`."""
        if self.mode == "center":
            th, tw = hw(size)
            if height * tw > width * th:  # taller than the target's aspect: the width fits
                bh, bw = width * th / tw, float(width)
            else:
                bh, bw = float(height), height * tw / th
        else:
            bh, bw = float(height), float(width)
        h = min(height, max(1, round(bh * self.pct)))
        w = min(width, max(1, round(bw * self.pct)))
        return round((height - h) / 2), round((width - w) / 2), h, w

    def __call__(self, image: np.ndarray, size: Size) -> np.ndarray:
        """The kept box of an HxWx3 image (a view: no copy)."""
        if self.whole:
            return image
        top, left, h, w = self.box(image.shape[0], image.shape[1], size)
        return image[top:top + h, left:left + w]

    def decode_side(self, side: int) -> int:
        """The side a photo must keep when decoded at reduced scale so that its box still has `side`."""
        return side if self.pct >= 1.0 else math.ceil(side / self.pct)

    @classmethod
    def of(cls, preprocessing: dict) -> Crop:
        """The crop a checkpoint's preprocessing records (one from before crops existed: the whole photo)."""
        return cls(str(preprocessing.get("crop_mode", "squash")), float(preprocessing.get("crop_pct", 1.0)))


def build_image_column(frame: pd.DataFrame, path: Path, pattern: str, key: str, column: str) -> None:
    """Add `column` to `frame`: each row's image path, `pattern` filled from the row's columns
    (Kaggle layouts with an id and no path column: `images/{image_id}.jpg`)."""
    pieces = pattern_fields(pattern, key)
    if column in frame.columns:
        raise CompetitionError(f"config key {key}: {path} already has a column '{column}' (data.image_column, where "
                               f"the built paths go): set data.image_column to another name")
    values = {}
    for field in dict.fromkeys(f for _, f in pieces if f is not None):
        if field not in frame.columns:
            raise CompetitionError(f"config key {key}: {pattern!r} names column '{field}', which {path} does not have "
                                   f"(columns: {', '.join(map(str, frame.columns))})")
        if frame[field].isna().any():
            row = int(np.flatnonzero(frame[field].isna().to_numpy())[0])
            raise CompetitionError(f"{path} line {line_of(row)}: missing value in column '{field}' ({key})")
        values[field] = frame[field].astype(str).tolist()
    frame[column] = ["".join(text + (values[f][i] if f is not None else "") for text, f in pieces)
                     for i in range(len(frame))]


def image_paths(df: pd.DataFrame, root: Path, column: str) -> list[Path]:
    """Resolve the image column: relative to the data root, or absolute."""
    return [Path(p) if os.path.isabs(str(p)) else root / str(p) for p in df[column].tolist()]


def load_image(path: Path, min_side: int | None = None) -> np.ndarray:
    """Any PIL-readable image → HxWx3 uint8 RGB (EXIF rotation applied, 16-bit scaled, alpha dropped).

    With `min_side`, a JPEG at least twice that size on both sides is decoded at 1/2, 1/4 or 1/8
    scale in the DCT (the largest that keeps both sides ≥ `min_side`): about twice as fast for
    a 500x375 photo bound for 64 px, more for larger photos, and nothing the resize after it
    would have kept is lost. Other formats decode in full.
    """
    with Image.open(path) as im:
        if min_side:
            im.draft(None, (min_side, min_side))  # a no-op for formats other than JPEG
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            arr = np.asarray(im, dtype=np.float64)
            hi = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
            im = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
        elif im.mode == "P":
            im = im.convert("RGBA")
        if im.mode != "RGB":
            im = im.convert("RGB")
        return np.asarray(im, dtype=np.uint8).copy()


def full_decode(path: Path) -> None:
    """Decode every pixel of `path` (PIL's `open` alone reads only the header)."""
    with Image.open(path) as im:
        im.load()


def decode_failure(path: Path, exc: Exception) -> str:
    """`path (why)`: one entry of the list of images that cannot be decoded."""
    if isinstance(exc, UnidentifiedImageError):
        return f"{path} (not an image format PIL reads)"
    reason = str(exc).strip().splitlines()[0][:80] if str(exc).strip() else ""
    return f"{path} ({type(exc).__name__}{': ' + reason if reason else ''})"


class UndecodableImages(CompetitionError):
    """The one-line refusal for images that cannot be decoded (the first ten named); `failures`
    keeps every entry so that refusals for several image lists can be merged into one."""

    def __init__(self, failures: list[str]):
        self.failures = list(failures)
        shown = "; ".join(failures[:10])
        more = f" and {len(failures) - 10} more" if len(failures) > 10 else ""
        super().__init__(f"{len(failures)} image(s) cannot be decoded: {shown}{more}")


def decode_each(paths: Sequence[Path], work: Callable[[int], None] | None = None, desc: str = "decoding",
                workers: int | None = None) -> list[str | None]:
    """Run `work(i)` for every path on a pool of threads (PIL and OpenCV release the GIL while
    decoding); returns, per path, None or the `path (why)` of the exception it raised. The
    default work decodes the file fully and keeps nothing."""
    run = work or (lambda i: full_decode(paths[i]))

    def attempt(i: int) -> str | None:
        try:
            run(i)
            return None
        except Exception as exc:  # PIL raises many types for broken files
            return decode_failure(paths[i], exc)

    workers = workers or min(16, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(workers) as pool:
        return list(tqdm(pool.map(attempt, range(len(paths))), total=len(paths), desc=desc, leave=False,
                         disable=not show_progress()))


def check_images_decode(paths: list[Path], cache_dir: Path) -> None:
    """Fully decode every image once (in parallel) before training; list the broken ones.

    A passing set is remembered under `cache_dir`, keyed by paths, sizes and mtimes, so later
    runs on unchanged files skip the work.
    """
    stats = []
    for p in paths:
        st = p.stat()
        stats.append(f"{p}|{st.st_size}|{st.st_mtime_ns}")
    key = hashlib.sha1("\n".join(stats).encode()).hexdigest()[:16]
    marker = cache_dir / f"decoded-ok-{key}.json"
    if marker.is_file():
        return
    errors = [e for e in decode_each(paths, desc="checking images") if e]
    if errors:
        raise UndecodableImages(errors)
    write_json(marker, {"images": len(paths)})
