"""Class-per-folder images → Kaggle layout: the files, ids and order, skipped broken files, bad input."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from competition import import_folders, predict, train
from competition.config import load_config
from competition.data import importing
from competition.data.folder import load_competition

CLASSES = {"cat": (230, 60, 40), "dog": (40, 80, 230)}


def _image(path: Path, color, seed: int, fmt: str = "PNG") -> Path:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 40, (20, 20, 3)).astype(np.uint8)
    pixels[4:16, 4:16] = color
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, fmt)
    return path


def _truncated_jpeg(path: Path) -> Path:
    """Opens (the header is fine) but does not decode: only a full decode finds it."""
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(buf, "JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    return path


def make_folders(tmp: Path, per_class: int = 6, reverse: bool = False) -> tuple[Path, Path]:
    """SRC/<class>/ with a nested folder, a hidden file, a broken and a truncated file; an unlabelled test folder."""
    src, test = tmp / "src", tmp / "unlabelled"
    order = range(per_class - 1, -1, -1) if reverse else range(per_class)
    for k, (name, color) in enumerate(CLASSES.items()):
        for i in order:
            sub = "more/" if i % 3 == 2 else ""
            fmt, ext = ("JPEG", "jpg") if i % 2 else ("PNG", "png")
            _image(src / name / f"{sub}{name}_{i}.{ext}", color, seed=10 * k + i, fmt=fmt)
    (src / "cat" / "notes.txt").write_text("not an image\n")
    _truncated_jpeg(src / "dog" / "broken.jpg")
    (src / "dog" / ".DS_Store").write_bytes(b"\0\1\2")
    (src / "README.md").write_text("loose file outside the class folders\n")
    for i in range(4):
        _image(test / ("night" if i % 2 else "day") / f"t{i}.png", list(CLASSES.values())[i % 2], seed=100 + i)
    (test / "empty.png").write_bytes(b"")
    return src, test


def test_import_writes_a_competition_the_kit_trains_and_predicts_on(tmp_path, capsys, caplog):
    src, test = make_folders(tmp_path)
    dst = tmp_path / "comp"
    assert import_folders.main([str(src), str(dst), "--test", str(test)]) == 0
    out = capsys.readouterr().out
    assert "12 train images in 2 classes (cat 6, dog 6), 4 test images" in out
    # Files that do not decode are skipped and named; hidden and loose files are not images.
    assert "skipped 3 file(s)" in out
    warning = caplog.text
    for name in ("cat/notes.txt", "dog/broken.jpg", "unlabelled/empty.png"):
        assert name in warning
    assert ".DS_Store" not in warning and "README.md" in warning

    train_df = pd.read_csv(dst / "train.csv")
    assert list(train_df.columns) == ["id", "image", "label"]
    assert train_df["label"].tolist() == ["cat"] * 6 + ["dog"] * 6
    assert train_df["id"].tolist()[:4] == ["cat/cat_0.png", "cat/cat_1.jpg", "cat/cat_3.jpg", "cat/cat_4.png"]
    assert "cat/more/cat_2.png" in train_df["id"].tolist()
    for row in train_df.itertuples():
        assert (dst / row.image).read_bytes() == (src / row.id).read_bytes()
        assert row.image == f"images/train/{row.id}"
    test_df = pd.read_csv(dst / "test.csv")
    assert test_df["id"].tolist() == ["day/t0.png", "day/t2.png", "night/t1.png", "night/t3.png"]
    assert all((dst / p).is_file() for p in test_df["image"])
    sample = pd.read_csv(dst / "sample_submission.csv")
    assert sample["id"].tolist() == test_df["id"].tolist() and set(sample["label"]) == {"cat"}

    # The kit reads it as it is, trains a fold and writes a checked submission.
    cfg = {
        "name": "pets", "output_dir": str(tmp_path / "out"), "submission_dir": str(tmp_path / "subs"),
        "data": {"root": str(dst)}, "folds": {"n_splits": 2},
        "model": {"name": "test_resnet"}, "image": {"size": 32, "augment": []},
        "train": {"epochs": 1, "freeze_epochs": 0, "batch_size": 4, "num_workers": 0, "warmup_epochs": 0},
        "predict": {"tta": []},
    }
    (tmp_path / "pets.yaml").write_text(yaml.safe_dump(cfg))
    comp = load_competition(load_config(str(tmp_path / "pets.yaml")))
    assert comp.classes == ["cat", "dog"]
    assert train.main(["--config", str(tmp_path / "pets.yaml"), "--fold", "0"]) == 0
    assert predict.main(["--config", str(tmp_path / "pets.yaml"), "--output", str(tmp_path / "sub.csv")]) == 0
    sub = pd.read_csv(tmp_path / "sub.csv")
    assert sub["id"].tolist() == sample["id"].tolist() and set(sub["label"]) <= {"cat", "dog"}


def test_ids_and_order_depend_on_the_files_only(tmp_path):
    a, test_a = make_folders(tmp_path / "a")
    b, test_b = make_folders(tmp_path / "b", reverse=True)  # same files, created in the other order
    assert import_folders.main([str(a), str(tmp_path / "out_a"), "--test", str(test_a)]) == 0
    assert import_folders.main([str(b), str(tmp_path / "out_b"), "--test", str(test_b)]) == 0
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        assert (tmp_path / "out_a" / name).read_text() == (tmp_path / "out_b" / name).read_text()


@pytest.mark.parametrize("link", [False, True])
def test_images_are_copied_or_hard_linked(tmp_path, link):
    src, _ = make_folders(tmp_path)
    dst = tmp_path / "comp"
    assert import_folders.main([str(src), str(dst)] + (["--link"] if link else [])) == 0
    assert not (dst / "test.csv").exists()
    row = pd.read_csv(dst / "train.csv").iloc[0]
    same_file = (dst / row["image"]).stat().st_ino == (src / row["id"]).stat().st_ino
    assert same_file == link


def test_an_empty_existing_destination_is_used(tmp_path):
    src, _ = make_folders(tmp_path)
    (tmp_path / "comp").mkdir()
    assert import_folders.main([str(src), str(tmp_path / "comp")]) == 0
    assert len(pd.read_csv(tmp_path / "comp" / "train.csv")) == 12


def _bad_input(tmp: Path, case: str) -> tuple[list[str], str]:
    """(argv, a fragment the error must contain) for each kind of bad input."""
    src, test = make_folders(tmp)
    dst = tmp / "comp"
    if case == "src_missing":
        return [str(tmp / "nowhere"), str(dst)], "nowhere not found"
    if case == "src_is_a_file":
        return [str(src / "README.md"), str(dst)], "README.md is not a folder"
    if case == "no_class_folders":
        flat = tmp / "flat"
        _image(flat / "a.png", (1, 2, 3), 0)
        return [str(flat), str(dst)], "has no class folders"
    if case == "one_class":
        (tmp / "single" / "cat").mkdir(parents=True)
        (src / "cat" / "cat_0.png").rename(tmp / "single" / "cat" / "cat_0.png")
        return [str(tmp / "single"), str(dst)], "one class folder (cat)"
    if case == "empty_class":
        (src / "emu").mkdir()
        return [str(src), str(dst)], "emu is empty"
    if case == "class_without_images":
        (src / "emu").mkdir()
        (src / "emu" / "x.jpg").write_bytes(b"GIF89a but not really")
        return [str(src), str(dst)], "emu has no images that decode"
    if case == "test_without_images":
        (tmp / "blank").mkdir()
        return [str(src), str(dst), "--test", str(tmp / "blank")], "blank has no images"
    if case == "test_missing":
        return [str(src), str(dst), "--test", str(tmp / "gone")], "gone not found"
    if case == "dst_not_empty":
        dst.mkdir()
        (dst / "keep.txt").write_text("mine")
        return [str(src), str(dst)], "is not an empty folder"
    if case == "dst_inside_src":
        return [str(src), str(src / "cat" / "out")], "inside the source folder"
    raise AssertionError(case)


BAD = ["src_missing", "src_is_a_file", "no_class_folders", "one_class", "empty_class", "class_without_images",
       "test_without_images", "test_missing", "dst_not_empty", "dst_inside_src"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    argv, fragment = _bad_input(tmp_path, case)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert import_folders.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and fragment in err[-1]
    assert not any(line.startswith("Traceback") for line in err)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_failure_while_copying_leaves_no_destination(tmp_path, monkeypatch):
    src, test = make_folders(tmp_path)
    copied = []

    def flaky(source, target, link):
        if len(copied) == 5:
            raise OSError(28, "No space left on device")
        copied.append(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())

    monkeypatch.setattr(importing, "_place", flaky)
    with pytest.raises(OSError):
        importing.import_folders(src, tmp_path / "comp", test)
    assert not (tmp_path / "comp").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
