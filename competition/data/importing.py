"""Class-per-folder images (torchvision's ImageFolder layout) → a Kaggle-layout competition:
the work behind `python -m competition.import_folders`."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from competition.core.errors import CompetitionError
from competition.core.runtime import show_progress
from competition.data.images import decode_each
from competition.io.files import write_csv

log = logging.getLogger(__name__)

SHOWN = 10  # skipped files named in the warning before "and N more"


@dataclass
class Imported:
    """What an import wrote, for the CLI's report."""

    dst: Path
    counts: dict[str, int]  # images per class
    n_test: int
    skipped: list[str]  # files (relative to their source folder) that do not decode


def _visible_files(folder: Path) -> list[Path]:
    """Every file under `folder`, hidden files and folders left out, sorted by relative path."""
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link back up the tree: walk each real folder once
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # sorted: a fixed walk order
        found += [Path(dirpath) / f for f in filenames if not f.startswith(".")]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _split_decodable(paths: list[Path], what: str) -> tuple[list[Path], list[Path]]:
    """(decodable, not decodable), each in the input order; every file fully decoded in parallel."""
    failed = decode_each(paths, desc=f"checking {what}")
    return [p for p, f in zip(paths, failed, strict=True) if f is None], [p for p, f in zip(paths, failed, strict=True) if f]


def _check_folder(folder: Path, what: str) -> None:
    if not folder.exists():
        raise CompetitionError(f"{what} {folder} not found")
    if not folder.is_dir():
        raise CompetitionError(f"{what} {folder} is not a folder")


def scan_classes(src: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """{class name: decodable images, sorted} and the files skipped because they do not decode."""
    _check_folder(src, "source folder")
    classes = sorted(p.name for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise CompetitionError(f"{src} has no class folders: expected one folder per class ({src}/<class>/<image>)")
    if len(classes) < 2:
        raise CompetitionError(f"{src} has one class folder ({classes[0]}): a classifier needs at least 2")
    loose = [p.name for p in src.iterdir() if p.is_file() and not p.name.startswith(".")]
    if loose:
        log.warning("ignored %d file(s) directly in %s, outside any class folder (e.g. %s)", len(loose), src, sorted(loose)[0])
    files = {c: _visible_files(src / c) for c in classes}
    empty = [c for c in classes if not files[c]]
    if empty:
        raise CompetitionError(f"class folder {src / empty[0]} is empty: every class needs at least one image")
    everything = [p for c in classes for p in files[c]]
    _, bad = _split_decodable(everything, "images")
    bad_set = set(bad)
    images = {c: [p for p in files[c] if p not in bad_set] for c in classes}
    hollow = [c for c in classes if not images[c]]
    if hollow:
        raise CompetitionError(
            f"class folder {src / hollow[0]} has no images that decode ({len(files[hollow[0]])} other file(s))"
        )
    return images, bad


def scan_test(folder: Path) -> tuple[list[Path], list[Path]]:
    """(decodable images under the unlabelled test folder, sorted; files that do not decode)."""
    _check_folder(folder, "test folder")
    files = _visible_files(folder)
    if not files:
        raise CompetitionError(f"test folder {folder} has no images")
    good, bad = _split_decodable(files, "test images")
    if not good:
        raise CompetitionError(f"test folder {folder} has no images that decode ({len(files)} other file(s))")
    return good, bad


def _place(src: Path, dst: Path, link: bool) -> None:
    """Copy `src` to `dst`, or hard-link it when asked and the filesystem allows."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:  # another filesystem, or links not allowed: copy instead
            pass
    shutil.copy2(src, dst)


def _check_destination(dst: Path, sources: list[Path]) -> None:
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise CompetitionError(f"destination {dst} already exists and is not an empty folder: choose a new one")
    target = dst.resolve()
    for src in sources:
        if target.is_relative_to(src.resolve()):
            raise CompetitionError(f"destination {dst} is inside the source folder {src}: choose a folder outside it")


def import_folders(src: Path, dst: Path, test: Path | None = None, link: bool = False) -> Imported:
    """Write the Kaggle layout for the class folders under `src` (and an unlabelled `test` folder) into `dst`."""
    src, dst = Path(src), Path(dst)
    sources = [src] + ([Path(test)] if test is not None else [])
    # 1. Check and scan everything before the first write.
    images, bad = scan_classes(src)
    test_images, bad_test = scan_test(Path(test)) if test is not None else ([], [])
    _check_destination(dst, sources)
    skipped = [p.relative_to(src).as_posix() for p in bad] + [
        f"{Path(test).name}/{p.relative_to(test).as_posix()}" for p in bad_test
    ]
    if skipped:
        more = f" and {len(skipped) - SHOWN} more" if len(skipped) > SHOWN else ""
        log.warning("skipped %d file(s) that do not decode as images: %s%s", len(skipped), ", ".join(skipped[:SHOWN]), more)

    # 2. Build the competition in a sibling temporary folder.
    dst.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".import", dir=dst.parent))
    try:
        rows = []
        for label, paths in images.items():
            for p in paths:
                rel = p.relative_to(src).as_posix()
                rows.append({"id": rel, "image": f"images/train/{rel}", "label": label})
        test_rows = []
        for p in test_images:
            rel = p.relative_to(test).as_posix()
            test_rows.append({"id": rel, "image": f"images/test/{rel}"})
        todo = [(src / r["id"], r["image"]) for r in rows] + [(Path(test) / r["id"], r["image"]) for r in test_rows]
        for source, image in tqdm(todo, desc="copying", leave=False, disable=not show_progress()):
            _place(source, stage / image, link)
        write_csv(stage / "train.csv", pd.DataFrame(rows, columns=["id", "image", "label"]))
        if test is not None:
            test_df = pd.DataFrame(test_rows, columns=["id", "image"])
            write_csv(stage / "test.csv", test_df)
            write_csv(stage / "sample_submission.csv", test_df[["id"]].assign(label=next(iter(images))))
        # 3. Rename it into place: DST appears complete or not at all.
        if dst.exists():
            dst.rmdir()  # checked empty above
        stage.rename(dst)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return Imported(dst, {c: len(p) for c, p in images.items()}, len(test_images), skipped)
