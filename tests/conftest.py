"""Shared fixtures: tiny generated competitions (images and a table) and a fast config."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
import zygote as zygote_module
from PIL import Image
from zygote import Zygote

from competition.io.checkpoints import FoldState

CLASSES = ["circle", "cross", "square"]


def draw(kind: str, rng: np.random.Generator, size: int = 24) -> np.ndarray:
    """A noisy RGB picture of a shape: easy enough that a tiny model learns it in an epoch or two."""
    img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
    c = size // 2 + rng.integers(-2, 3)
    yy, xx = np.mgrid[:size, :size]
    if kind == "circle":
        mask = (yy - c) ** 2 + (xx - c) ** 2 < (size // 3) ** 2
    elif kind == "cross":
        mask = (abs(yy - c) < 2) | (abs(xx - c) < 2)
    else:
        mask = (abs(yy - c) < size // 3) & (abs(xx - c) < size // 3)
    img[mask] = [230, 200, 40] if kind == "circle" else [40, 200, 230] if kind == "cross" else [200, 60, 200]
    return img


def make_image_competition(root: Path, n_train: int = 36, n_test: int = 9, seed: int = 0, groups: bool = False) -> Path:
    """Kaggle layout: train.csv (id,image,label[,patient]), test.csv, sample_submission.csv, images/."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_train + n_test):
        label = CLASSES[i % len(CLASSES)]
        name = f"images/img_{i:03d}.png"
        Image.fromarray(draw(label, rng)).save(root / name)
        rows.append({"id": f"r{i:03d}", "image": name, "label": label, "patient": f"p{i // 3}"})
    df = pd.DataFrame(rows)
    train, test = df.iloc[:n_train], df.iloc[n_train:]
    cols = ["id", "image", "label"] + (["patient"] if groups else [])
    train[cols].to_csv(root / "train.csv", index=False)
    test[["id", "image"]].to_csv(root / "test.csv", index=False)
    # Kaggle's samples often list ids in another order than test.csv: the submission must follow it.
    sample = test[["id"]].iloc[::-1].assign(label=CLASSES[0])
    sample.to_csv(root / "sample_submission.csv", index=False)
    test[["id", "label"]].to_csv(root / "solution.csv", index=False)
    return root


def make_table_competition(root: Path, n_train: int = 120, n_test: int = 30, seed: int = 0) -> Path:
    """A small table with numeric, categorical and missing values; the target follows from x1 and color."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    x1 = rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    y = ((x1 + (color == "red") * 1.5) > 0.5).astype(int)
    df = pd.DataFrame({"key": np.arange(1000, 1000 + n), "x1": x1, "x2": rng.normal(size=n), "color": color, "target": y})
    df.loc[rng.choice(n, 10, replace=False), "x2"] = np.nan
    root.mkdir(parents=True, exist_ok=True)
    df.iloc[:n_train].to_csv(root / "train.csv", index=False)
    df.iloc[n_train:].drop(columns="target").to_csv(root / "test.csv", index=False)
    df.iloc[n_train:][["key"]].assign(target=0).to_csv(root / "sample_submission.csv", index=False)
    return root


def _merge(cfg: dict, sections: dict) -> dict:
    """Override whole keys, or single keys inside a section when given a dict."""
    for section, values in sections.items():
        if isinstance(values, dict):
            cfg.setdefault(section, {}).update(values)
        else:
            cfg[section] = values
    return cfg


def image_config(tmp: Path, root: Path, **sections) -> dict:
    cfg = {
        "name": "shapes",
        "task": "image",
        "seed": 7,
        "output_dir": str(tmp / "outputs"),
        "submission_dir": str(tmp / "submissions"),
        "data": {"root": str(root), "solution": "solution.csv"},
        "folds": {"n_splits": 2, "strategy": "stratified"},
        "model": {"name": "test_resnet", "pretrained": False},
        "image": {"size": 32, "augment": ["hflip", "affine"]},
        "train": {"epochs": 1, "freeze_epochs": 1, "batch_size": 8, "lr": 3e-3, "num_workers": 0,
                  "patience": 0, "warmup_epochs": 0, "cache": "off"},
        "predict": {"tta": ["hflip"], "batch_size": 16},
    }
    return _merge(cfg, sections)


def table_config(tmp: Path, root: Path, **sections) -> dict:
    cfg = {
        "name": "table",
        "task": "tabular",
        "seed": 3,
        "output_dir": str(tmp / "outputs"),
        "submission_dir": str(tmp / "submissions"),
        "data": {"root": str(root), "id_column": "key", "target_column": "target", "image_column": None},
        "folds": {"n_splits": 2, "strategy": "stratified"},
        "model": {"name": "mlp", "hidden_sizes": [16]},
        "train": {"epochs": 2, "freeze_epochs": 0, "batch_size": 16, "lr": 1e-2, "num_workers": 0, "patience": 0},
        "predict": {"tta": []},
    }
    return _merge(cfg, sections)


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def fold_state(config: dict, classes: list, **weights) -> FoldState:
    """A checkpoint of plain data in the kit's schema (weights are not needed to be refused)."""
    return FoldState(
        fold=0, config=config, classes=list(classes), metric_name="accuracy", higher_is_better=True,
        preprocessing={}, preprocessor=None, in_features=None, epoch=1, stage=1, stage_complete=False,
        finished=False, loss=0.9, metric=0.5, best_metric=0.5, best_epoch=1, best_loss=0.9, bad_epochs=0,
        history=[{"epoch": 1}], model_state_dict=weights or {"w": torch.zeros(3)}, optimizer_state_dict={},
    )


def refused(capsys, code: int, *culprits: str, quiet_stdout: bool = False) -> str:
    """Exit 2, stderr exactly one `error: …` line without a traceback, naming every culprit."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err, captured.err
    for culprit in culprits:
        assert culprit in lines[0], f"{culprit!r} not named in: {lines[0]}"
    if quiet_stdout:
        assert captured.out == ""
    return lines[0]


def epochs_saved(fold_dir: Path) -> int:
    """Epochs completed according to last.pt (0 before the first one lands)."""
    try:
        return int(torch.load(fold_dir / "last.pt", weights_only=True)["epoch"])
    except (FileNotFoundError, RuntimeError, EOFError, KeyError):
        return 0


def kill_training(zygote: Zygote, cfg: Path, fold_dir: Path, after_step: int, env: dict | None = None,
                  sig: signal.Signals = signal.SIGKILL) -> tuple[int, int, str]:
    """Train fold 0 of `cfg` in a process of its own (a child of the zygote) that sends itself `sig`
    (SIGKILL: no cleanup runs) right after the fold's optimizer step `after_step`
    (core.interrupts.TEST_FAULT): no timer to race. (exit code, epochs last.pt holds after it died,
    the end of its stderr: for a failure message).

    The epochs saved may lag the epoch killed by one: each epoch's files are written while the next
    one trains (io.files.BackgroundWriter), and a SIGKILL does not wait for them."""
    env = {**(env or os.environ), "COMPETITION_TEST_KILL_AFTER_STEP": str(after_step),
           "COMPETITION_TEST_KILL_SIGNAL": sig.name}
    proc = zygote.spawn(["competition.train", "--config", str(cfg), "--fold", "0"], env=env, stdout=subprocess.DEVNULL)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, epochs_saved(fold_dir), err[-2000:]


@pytest.fixture(scope="session")
def zygote() -> Zygote:
    """Real processes of the kit's commands without an interpreter start each (tests/zygote.py)."""
    return zygote_module.zygote()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the zygote now, importing torch and timm while the first tests run, when a test will use it."""
    if any("zygote" in getattr(item, "fixturenames", ()) for item in session.items):
        zygote_module.zygote()


@pytest.fixture
def image_comp(tmp_path: Path) -> tuple[Path, Path]:
    """(config path, data root) of a tiny image competition; cwd is tmp_path."""
    root = make_image_competition(tmp_path / "data" / "shapes")
    return write_yaml(tmp_path / "shapes.yaml", image_config(tmp_path, root)), root


@pytest.fixture
def table_comp(tmp_path: Path) -> tuple[Path, Path]:
    root = make_table_competition(tmp_path / "data" / "table")
    return write_yaml(tmp_path / "table.yaml", table_config(tmp_path, root)), root


@pytest.fixture(scope="session")
def _trained_image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """image_comp's competition with both folds trained by train.main, once a session."""
    from competition import train

    base = tmp_path_factory.mktemp("trained-shapes")
    cfg = write_yaml(base / "shapes.yaml", image_config(base, make_image_competition(base / "data" / "shapes")))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        assert train.main(["--config", str(cfg), "--fold", "all"]) == 0
    return base


@pytest.fixture
def trained_image_comp(_trained_image_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(config path, data root) of image_comp with both folds already trained (outputs/shapes: a
    head-only epoch, then one of every layer): a copy, in this test's tmp_path, of one run trained
    once a session. For tests that need a trained run; a test of training itself trains its own."""
    shutil.copytree(_trained_image_dir, tmp_path, dirs_exist_ok=True)
    root = tmp_path / "data" / "shapes"
    return write_yaml(tmp_path / "shapes.yaml", image_config(tmp_path, root)), root


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own directory: nothing lands in the checkout."""
    monkeypatch.chdir(tmp_path)


def no_network_reason() -> str | None:
    """Why commands cannot be run without a network route here (None: they can, with `unshare -n`)."""
    if os.geteuid() != 0:
        return "a network namespace (unshare -n) needs root; CI runs as root"
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        return "unshare -n is not permitted on this machine"
    return None
