"""Bad input through the CLIs: exit code 2, one `error: …` line naming the culprit, nothing written.

Odd but valid images (RGBA, palette GIF, CMYK JPEG, 16-bit PNG, EXIF-rotated JPEG) are accepted.
"""
from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import image_config, make_image_competition, write_yaml
from conftest import refused as refused_once
from PIL import Image

from competition import folds, predict, train
from competition.data.images import check_images_decode, load_image

# These commands print nothing on stdout when they refuse.
refused = functools.partial(refused_once, quiet_stdout=True)

CLIS = {"train": train.main, "predict": predict.main, "folds": folds.main}


def run(cli: str, cfg: Path | str, *extra: str) -> int:
    args = ["--config", str(cfg), *extra]
    if cli == "train":
        args += [] if "--fold" in extra else ["--fold", "0"]
    return CLIS[cli](args)




def nothing_written(tmp_path: Path, root: Path) -> None:
    """No checkpoint, config.yaml, cv.json, submission or folds.csv appeared."""
    outputs = sorted(p.relative_to(tmp_path) for p in (tmp_path / "outputs").rglob("*")) if (tmp_path / "outputs").exists() else []
    assert outputs == []
    assert not (tmp_path / "submissions").exists()
    assert not (root / "folds.csv").exists()


# --- broken competition folders, the same answer from every CLI ---------------------------


def _edit_csv(path: Path, edit) -> None:
    df = pd.read_csv(path)
    edit(df).to_csv(path, index=False)


def _drop(root, name, column):
    _edit_csv(root / name, lambda df: df.drop(columns=column))


def _header_only(root, name):
    df = pd.read_csv(root / name)
    df.iloc[:0].to_csv(root / name, index=False)


def _duplicate_id(root):
    def edit(df):
        df.loc[5, "id"] = df.loc[2, "id"]
        return df

    _edit_csv(root / "train.csv", edit)


def _missing_label(root):
    def edit(df):
        df["label"] = df["label"].astype(object)
        df.loc[4, "label"] = None
        return df

    _edit_csv(root / "train.csv", edit)


def _other_sample_id(root):
    def edit(df):
        df.loc[0, "id"] = "zzz"
        return df

    _edit_csv(root / "sample_submission.csv", edit)


DATA_CASES = {
    # case: (break the folder, what the message must name)
    "train.csv missing": (lambda r: (r / "train.csv").unlink(), ["train.csv", "not found"]),
    "test.csv missing": (lambda r: (r / "test.csv").unlink(), ["test.csv", "not found"]),
    "sample missing": (lambda r: (r / "sample_submission.csv").unlink(), ["sample_submission.csv", "not found"]),
    "train.csv empty file": (lambda r: (r / "train.csv").write_text(""), ["train.csv", "empty"]),
    "id column missing": (lambda r: _drop(r, "train.csv", "id"), ["train.csv", "no column 'id'"]),
    "target column missing": (lambda r: _drop(r, "train.csv", "label"), ["train.csv", "no column 'label'"]),
    "image column missing": (lambda r: _drop(r, "train.csv", "image"), ["train.csv", "no column 'image'"]),
    "test image column missing": (lambda r: _drop(r, "test.csv", "image"), ["test.csv", "no column 'image'"]),
    "train.csv header only": (lambda r: _header_only(r, "train.csv"), ["train.csv", "header but no rows"]),
    "test.csv header only": (lambda r: _header_only(r, "test.csv"), ["test.csv", "header but no rows"]),
    "duplicate ids": (_duplicate_id, ["train.csv", "'r002'", "more than once", "lines 4, 7"]),
    "missing label": (_missing_label, ["train.csv line 6", "missing value", "'label'"]),
    "image absent": (lambda r: (r / "images" / "img_005.png").unlink(), ["train.csv line 7", "img_005.png", "not found"]),
    "test image absent": (lambda r: (r / "images" / "img_037.png").unlink(), ["test.csv line 3", "img_037.png"]),
    "test and sample ids differ": (_other_sample_id, ["test.csv", "sample_submission.csv", "ids differ", "zzz"]),
}


@pytest.mark.parametrize("cli", CLIS)
@pytest.mark.parametrize("case", DATA_CASES)
def test_broken_competition_is_refused_before_anything_is_written(image_comp, tmp_path, capsys, cli, case):
    cfg, root = image_comp
    breaker, culprits = DATA_CASES[case]
    breaker(root)
    refused(capsys, run(cli, cfg), *culprits)
    nothing_written(tmp_path, root)


@pytest.mark.parametrize("cli", CLIS)
def test_missing_data_root_names_the_config_key(image_comp, tmp_path, capsys, cli):
    cfg, _ = image_comp
    gone = tmp_path / "no" / "such" / "root"
    refused(capsys, run(cli, cfg, "--set", f"data.root={gone}"), str(gone), "data.root")
    nothing_written(tmp_path, gone)


@pytest.mark.parametrize("cli", CLIS)
def test_the_demo_is_never_written_into_a_users_folder(tmp_path, capsys, cli):
    # The digits config pointed at a user's own (empty) folder: no demo appears there.
    mine = tmp_path / "mine"
    mine.mkdir()
    refused(capsys, run(cli, "digits", "--set", f"data.root={mine}"), str(mine / "train.csv"), "data.root", "data/digits")
    assert list(mine.iterdir()) == []
    nothing_written(tmp_path, mine)
    gone = tmp_path / "gone"
    refused(capsys, run(cli, "digits", "--set", f"data.root={gone}"), str(gone), "not found")
    assert not gone.exists() and not (tmp_path / "data").exists()


def test_the_demo_is_built_into_its_own_root(tmp_path, capsys):
    assert folds.main(["--config", "digits"]) == 0
    root = tmp_path / "data" / "digits"
    assert len(pd.read_csv(root / "train.csv")) + len(pd.read_csv(root / "test.csv")) == 1797
    assert "fold 4" in capsys.readouterr().out


# --- the config and the command line ------------------------------------------------------


def _config_cases(tmp_path: Path, root: Path) -> dict:
    good = image_config(tmp_path, root)
    unknown = write_yaml(tmp_path / "unknown.yaml", {**good, "train": {**good["train"], "learning_rate": 0.1}})
    wrong_type = write_yaml(tmp_path / "wrong_type.yaml", {**good, "train": {**good["train"], "epochs": "ten"}})
    not_yaml = tmp_path / "not_yaml.yaml"
    not_yaml.write_text("train: {lr: [1, 2\n")
    a_list = tmp_path / "a_list.yaml"
    a_list.write_text("- train\n- lr\n")
    return {
        "unknown key in the file": ([str(unknown)], ["train.learning_rate", "valid keys", "lr"]),
        "unknown key in --set": ([str(tmp_path / "shapes.yaml"), "--set", "model.nme=x"], ["model.nme"]),
        "unknown section": ([str(tmp_path / "shapes.yaml"), "--set", "trian.lr=1"], ["trian", "the top level"]),
        "wrong type in the file": ([str(wrong_type)], ["train.epochs", "expected an integer", "'ten'"]),
        "wrong type in --set": ([str(tmp_path / "shapes.yaml"), "--set", "train.lr=fast"], ["train.lr", "'fast'"]),
        "bad choice": ([str(tmp_path / "shapes.yaml"), "--set", "train.metric=auc"], ["train.metric", "'auc'", "accuracy"]),
        "config file missing": ([str(tmp_path / "nope.yaml")], ["nope.yaml", "not found"]),
        "config not YAML": ([str(not_yaml)], ["not_yaml.yaml", "not valid YAML", "line"]),
        "config not a mapping": ([str(a_list)], ["a_list.yaml", "mapping"]),
    }


CONFIG_CASES = [
    "unknown key in the file", "unknown key in --set", "unknown section", "wrong type in the file",
    "wrong type in --set", "bad choice", "config file missing", "config not YAML", "config not a mapping",
]


@pytest.mark.parametrize("cli", CLIS)
@pytest.mark.parametrize("case", CONFIG_CASES)
def test_bad_config_is_refused_naming_the_file_or_key(image_comp, tmp_path, capsys, cli, case):
    _, root = image_comp
    (cfg, *extra), culprits = _config_cases(tmp_path, root)[case]
    refused(capsys, run(cli, cfg, *extra), *culprits)
    nothing_written(tmp_path, root)


@pytest.mark.parametrize(
    ("cli", "args", "culprits"),
    [
        ("train", ["--fold", "2"], ["--fold 2", "out of range", "0..1"]),
        ("train", ["--fold", "-1"], ["--fold -1", "out of range"]),
        ("train", ["--fold", "first"], ["--fold first", "'all'"]),
        ("predict", ["--folds", "0,5"], ["--folds 0,5", "0..1"]),
        ("predict", ["--folds", "x"], ["--folds x"]),
    ],
)
def test_fold_out_of_range(image_comp, tmp_path, capsys, cli, args, culprits):
    cfg, root = image_comp
    refused(capsys, run(cli, cfg, *args), *culprits)
    nothing_written(tmp_path, root)


def test_predict_without_trained_folds(image_comp, tmp_path, capsys):
    cfg, root = image_comp
    refused(capsys, predict.main(["--config", str(cfg)]), "no trained folds", str(tmp_path / "outputs" / "shapes"),
            "competition.train")
    nothing_written(tmp_path, root)


# --- images that cannot be decoded ----------------------------------------------------------


def _break_images(root: Path) -> list[Path]:
    """A PNG cut in half and a text file named .png; both listed in train.csv."""
    cut = root / "images" / "img_004.png"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    text = root / "images" / "img_010.png"
    text.write_text("not an image\n")
    return [cut, text]


@pytest.mark.parametrize("cache", ["off", "auto"])
def test_undecodable_images_are_listed_before_training(image_comp, tmp_path, capsys, cache):
    """With the decode cache on, its build is the decode check: same message, no cache left."""
    cfg, root = image_comp
    bad = _break_images(root)
    test_image = root / pd.read_csv(root / "test.csv")["image"][0]
    test_image.write_bytes(b"")
    line = refused(capsys, train.main(["--config", str(cfg), "--fold", "0", "--set", f"train.cache='{cache}'"]),
                   "3 image(s) cannot be decoded", *map(str, bad), str(test_image))
    assert "truncated" in line or "OSError" in line
    nothing_written(tmp_path, root)


@pytest.mark.slow
def test_a_real_cli_process_prints_one_line_and_no_traceback(image_comp, tmp_path):
    """Outside pytest the log goes to stderr too: still exactly one line for a refusal."""
    cfg, root = image_comp
    bad = _break_images(root)
    proc = subprocess.run(
        [sys.executable, "-m", "competition.train", "--config", str(cfg), "--fold", "0"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert str(bad[0]) in lines[0] and str(bad[1]) in lines[0]
    assert proc.stdout == ""
    nothing_written(tmp_path, root)


# --- odd but valid images -----------------------------------------------------------------

RED, BLUE = (220, 20, 20), (20, 20, 220)


def _odd_images(directory: Path) -> dict[str, Path]:
    """One file per unusual-but-valid kind, each half red / half blue (top/bottom) when shown."""
    directory.mkdir(parents=True, exist_ok=True)
    half = np.zeros((16, 16, 3), np.uint8)
    half[:8], half[8:] = RED, BLUE
    files = {}

    rgba = np.dstack([half, np.full((16, 16), 90, np.uint8)])
    files["rgba"] = directory / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(files["rgba"])

    pal = Image.new("P", (16, 16))
    pal.putpalette([*RED, *BLUE] + [0] * (256 * 3 - 6))
    pal.paste(1, (0, 8, 16, 16))
    files["gif"] = directory / "palette.gif"
    pal.save(files["gif"])

    files["cmyk"] = directory / "cmyk.jpg"
    Image.fromarray(half).convert("CMYK").save(files["cmyk"], quality=95)

    gray16 = np.zeros((16, 16), np.uint16)
    gray16[8:] = 65535
    files["png16"] = directory / "gray16.png"
    Image.fromarray(gray16).save(files["png16"])

    # Stored 16 wide, 8 high, left half red; EXIF orientation 6 says "rotate 90° clockwise to show":
    # shown 8 wide, 16 high, the stored left column on top.
    stored = np.zeros((8, 16, 3), np.uint8)
    stored[:, :8], stored[:, 8:] = RED, BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    files["exif"] = directory / "exif_rotated.jpg"
    Image.fromarray(stored).save(files["exif"], exif=exif.tobytes(), quality=95)
    return files


def _close(pixel, colour, tol: int = 40) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(colour)) <= tol))


def test_odd_images_decode_to_rgb_the_right_way_up(tmp_path):
    files = _odd_images(tmp_path / "odd")
    assert Image.open(files["png16"]).mode.startswith("I")  # really 16-bit on disk
    assert Image.open(files["cmyk"]).mode == "CMYK"
    assert Image.open(files["gif"]).mode == "P"
    check_images_decode(list(files.values()), tmp_path / "cache")  # no error

    for kind in ("rgba", "gif", "cmyk"):
        img = load_image(files[kind])
        assert img.shape == (16, 16, 3) and img.dtype == np.uint8, kind
        assert _close(img[3, 8], RED) and _close(img[12, 8], BLUE), kind

    gray = load_image(files["png16"])
    assert gray.shape == (16, 16, 3)
    assert (gray[:8] == 0).all() and (gray[8:] == 255).all()

    rotated = load_image(files["exif"])
    assert rotated.shape == (16, 8, 3)  # high, not wide: the EXIF rotation was applied
    assert _close(rotated[3, 4], RED) and _close(rotated[12, 4], BLUE)
    half = load_image(files["exif"], 4)  # decoded at half scale in the DCT, then rotated
    assert half.shape == (8, 4, 3) and _close(half[1, 2], RED) and _close(half[6, 2], BLUE)
    cmyk = load_image(files["cmyk"], 8)
    assert cmyk.shape == (8, 8, 3) and _close(cmyk[1, 4], RED) and _close(cmyk[6, 4], BLUE)


def test_training_accepts_odd_images(tmp_path, capsys):
    root = make_image_competition(tmp_path / "data" / "odd", n_train=24, n_test=6)
    files = _odd_images(root / "odd")
    train_csv = pd.read_csv(root / "train.csv")
    test_csv = pd.read_csv(root / "test.csv")
    names = [str(p.relative_to(root)) for p in files.values()]
    train_csv.loc[: len(names) - 1, "image"] = names
    test_csv.loc[0, "image"] = names[-1]
    train_csv.to_csv(root / "train.csv", index=False)
    test_csv.to_csv(root / "test.csv", index=False)
    cfg = write_yaml(tmp_path / "odd.yaml", image_config(tmp_path, root, name="odd", train={"epochs": 1, "freeze_epochs": 0}))

    assert train.main(["--config", str(cfg), "--fold", "0"]) == 0, capsys.readouterr().err
    assert (tmp_path / "outputs" / "odd" / "fold0" / "best.pt").is_file()


def test_unknown_model_name_refused_before_anything_is_written(image_comp, tmp_path, capsys):
    cfg_path, root = image_comp
    code = train.main(["--config", str(cfg_path), "--set", "model.name=resnet_does_not_exist"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.name: 'resnet_does_not_exist' is not a timm model" in err[0]
    assert not (tmp_path / "outputs").exists()
