"""Reading a Kaggle-layout competition folder and checking it at the boundary."""
from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from competition.config import Config
from competition.errors import CompetitionError
from competition.fileio import write_json

log = logging.getLogger(__name__)


@dataclass
class Competition:
    """The three CSVs of a competition, checked, and the classes of its target."""

    root: Path
    train: pd.DataFrame
    test: pd.DataFrame
    sample: pd.DataFrame
    classes: list  # original label values, sorted; index = model output index
    train_path: Path
    test_path: Path
    sample_path: Path


def read_csv(path: Path, what: str = "") -> pd.DataFrame:
    """Read a CSV, turning a missing, empty or malformed file into one clear line."""
    if not path.is_file():
        raise CompetitionError(f"{what or 'file'} {path} not found")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise CompetitionError(f"{path} is empty: expected a header line and rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise CompetitionError(f"{path} is not a readable CSV: {str(exc).splitlines()[0]}") from None
    if len(df) == 0:
        raise CompetitionError(f"{path} has a header but no rows")
    df.columns = [str(c) for c in df.columns]
    return df


def require_columns(df: pd.DataFrame, path: Path, columns: list[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CompetitionError(
            f"{path} has no column {', '.join(repr(c) for c in missing)} (columns: {', '.join(df.columns)})"
        )


def _line(index: int) -> int:
    """File line of a data row (the header is line 1)."""
    return int(index) + 2


def check_unique_ids(df: pd.DataFrame, path: Path, id_column: str) -> None:
    if df[id_column].isna().any():
        row = df.index[df[id_column].isna()][0]
        raise CompetitionError(f"{path} line {_line(row)}: missing value in id column '{id_column}'")
    dup = df[id_column].astype(str).duplicated(keep=False)
    if dup.any():
        rows = df.index[dup]
        value = df[id_column].iloc[rows[0]]
        lines = ", ".join(str(_line(r)) for r in rows[df[id_column].iloc[rows].astype(str) == str(value)][:5])
        raise CompetitionError(f"{path}: id {value!r} in column '{id_column}' appears more than once (lines {lines})")


def _plain(value):
    """numpy scalar → Python scalar; integral floats → int (labels read as 0.0/1.0)."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def class_list(values: pd.Series) -> list:
    """Sorted distinct labels as plain Python values."""
    return sorted({_plain(v) for v in values.tolist()}, key=lambda v: (str(type(v)), v))


def encode_labels(values: pd.Series, classes: list, path: Path | str = "labels") -> np.ndarray:
    """Map label values to class indices; an unknown value is an error naming it."""
    index = {c: i for i, c in enumerate(classes)}
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values.tolist()):
        key = _plain(v)
        if key not in index:
            raise CompetitionError(f"{path}: label {key!r} is not one of the classes {classes}")
        out[i] = index[key]
    return out


def image_paths(df: pd.DataFrame, root: Path, column: str) -> list[Path]:
    """Resolve the image column: relative to the data root, or absolute."""
    return [Path(p) if os.path.isabs(str(p)) else root / str(p) for p in df[column].tolist()]


def _check_image_column(df: pd.DataFrame, path: Path, root: Path, column: str) -> None:
    if df[column].isna().any():
        row = df.index[df[column].isna()][0]
        raise CompetitionError(f"{path} line {_line(row)}: missing value in image column '{column}'")
    files = image_paths(df, root, column)
    absent = [(i, f) for i, f in enumerate(files) if not f.is_file()]
    if absent:
        i, f = absent[0]
        more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        raise CompetitionError(f"{path} line {_line(i)}: image {f} not found{more}")


def load_competition(cfg: Config) -> Competition:
    """Read and check train.csv, test.csv and sample_submission.csv under `data.root`."""
    d = cfg.data
    root = Path(d.root)
    if d.demo and not (root / d.train_csv).exists():
        from competition.demos import build_demo

        build_demo(d.demo, root)
    if not root.is_dir():
        raise CompetitionError(f"data root {root} not found (config key data.root)")
    train_path, test_path, sample_path = root / d.train_csv, root / d.test_csv, root / d.sample_submission
    train = read_csv(train_path, "train CSV")
    test = read_csv(test_path, "test CSV")
    sample = read_csv(sample_path, "sample submission")

    need = [d.id_column, d.target_column]
    if cfg.task == "image":
        need.append(d.image_column)
    if d.group_column:
        need.append(d.group_column)
    require_columns(train, train_path, need)
    require_columns(test, test_path, [d.id_column] + ([d.image_column] if cfg.task == "image" else []))
    require_columns(sample, sample_path, [d.id_column])
    check_unique_ids(train, train_path, d.id_column)
    check_unique_ids(test, test_path, d.id_column)
    check_unique_ids(sample, sample_path, d.id_column)

    if train[d.target_column].isna().any():
        row = train.index[train[d.target_column].isna()][0]
        raise CompetitionError(f"{train_path} line {_line(row)}: missing value in target column '{d.target_column}'")
    if d.group_column and train[d.group_column].isna().any():
        row = train.index[train[d.group_column].isna()][0]
        raise CompetitionError(f"{train_path} line {_line(row)}: missing value in group column '{d.group_column}'")
    classes = class_list(train[d.target_column])
    if len(classes) < 2:
        raise CompetitionError(f"{train_path}: column '{d.target_column}' has one class ({classes[0]!r}); need at least 2")

    test_ids, sample_ids = set(test[d.id_column].astype(str)), set(sample[d.id_column].astype(str))
    if test_ids != sample_ids:
        only_test = sorted(test_ids - sample_ids)
        only_sample = sorted(sample_ids - test_ids)
        parts = []
        if only_test:
            parts.append(f"{len(only_test)} test ids not in the sample (e.g. {', '.join(only_test[:3])})")
        if only_sample:
            parts.append(f"{len(only_sample)} sample ids not in the test set (e.g. {', '.join(only_sample[:3])})")
        raise CompetitionError(f"{test_path} and {sample_path} ids differ: {'; '.join(parts)}")

    if cfg.task == "image":
        _check_image_column(train, train_path, root, d.image_column)
        _check_image_column(test, test_path, root, d.image_column)
    else:
        features = feature_columns(cfg, train)
        require_columns(train, train_path, features)
        require_columns(test, test_path, features)
    return Competition(root, train, test, sample, classes, train_path, test_path, sample_path)


def feature_columns(cfg: Config, train: pd.DataFrame) -> list[str]:
    """Tabular inputs: `data.feature_columns`, else every column but id, target and group."""
    d = cfg.data
    if d.feature_columns is not None:
        return list(d.feature_columns)
    skip = {d.id_column, d.target_column, d.group_column}
    return [c for c in train.columns if c not in skip]


# --- image decodability -------------------------------------------------------------------


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


def _decode_error(path: Path) -> str | None:
    try:
        with Image.open(path) as im:
            im.load()
        return None
    except Exception as exc:  # PIL raises many types for broken files
        return decode_failure(path, exc)


def check_images_decode(paths: list[Path], cache_dir: Path, workers: int | None = None) -> None:
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
    workers = workers or min(16, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(workers) as pool:
        errors = [e for e in pool.map(_decode_error, paths, chunksize=16) if e]
    if errors:
        raise UndecodableImages(errors)
    write_json(marker, {"images": len(paths)})


def load_image(path: Path, min_side: int | None = None) -> np.ndarray:
    """Any PIL-readable image → HxWx3 uint8 RGB (EXIF rotation applied, 16-bit scaled, alpha dropped).

    With `min_side`, a JPEG at least twice that size on both sides is decoded at 1/2, 1/4 or 1/8
    scale in the DCT (the largest that keeps both sides ≥ `min_side`): about twice as fast for
    a 500x375 photo bound for 64 px, more for larger photos, and nothing the resize after it
    would have kept is lost. Other formats decode in full.
    """
    from PIL import ImageOps

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


def read_solution(cfg: Config, root: Path) -> pd.DataFrame | None:
    """The optional answers file (`data.solution`) for a local leaderboard score."""
    if not cfg.data.solution:
        return None
    path = root / cfg.data.solution
    if not path.is_file():
        return None
    df = read_csv(path, "solution")
    require_columns(df, path, [cfg.data.id_column, cfg.data.target_column])
    return df

