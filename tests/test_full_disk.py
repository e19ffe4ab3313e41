"""A full disk, for real: output_dir on a small tmpfs. Refused up front when the run cannot fit;
one line, no temporary files and a resumable fold when the disk fills during the run."""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import CLASSES, fold_state, image_config, write_yaml
from zygote import run as zygote_run

from competition import train
from competition.config import load_config
from competition.data.cache import build_cache
from competition.data.images import image_paths
from competition.io.checkpoints import checkpoint_bytes, load_checkpoint
from competition.io.disk import DiskFull, human_bytes
from competition.tasks import open_competition
from competition.training import disk_space
from competition.training.disk_space import checkpoint_size, estimate_run_bytes

REPO = Path(__file__).resolve().parents[1]
SIZE = r"(\d+(?:\.\d)? (?:B|kB|MB|GB))"


def _bytes(text: str) -> float:
    number, unit = text.split()
    return float(number) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[unit]


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) → a folder holding a tmpfs of that size; unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"disk{len(mounts)}"
        where.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
        mounts.append(where)
        return where

    yield mount
    for where in reversed(mounts):
        if subprocess.run(["umount", str(where)]).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=True)


def leftovers(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.tmp"))


@pytest.mark.slow
def test_a_run_that_cannot_fit_is_refused_before_it_writes_anything(image_comp, tmp_path, small_disk, zygote):
    cfg, root = image_comp
    disk = small_disk("8m")
    proc = zygote_run(["competition.train", "--config", str(cfg), "--fold", "0", "--set", f"output_dir={disk}",
                       "--set", "train.cache=auto"], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    import timm

    checkpoint = human_bytes(checkpoint_size(timm.create_model("test_resnet", num_classes=3)))
    match = re.fullmatch(
        rf"error: not enough disk space: training needs about {SIZE} in {re.escape(str(disk))} "
        rf"\(checkpoints 3 × {re.escape(checkpoint)}, decode cache {SIZE}, logs {SIZE}\), {SIZE} free on "
        rf"{re.escape(str(disk))}; free some space, or set output_dir to a larger disk",
        lines[0],
    )
    assert match, lines[0]
    need, cache, _, free = map(_bytes, match.groups())
    pixels = 45 * 32 * 32 * 3  # 36 train and 9 test images at 32 px
    assert pixels < cache < pixels + 10_000  # and the two .json sidecars
    assert free == pytest.approx(shutil.disk_usage(disk).free, rel=0.01) and need > free
    assert os.listdir(disk) == []
    assert not (root / "folds.csv").exists()


def _config(tmp_path: Path, root: Path, output_dir: Path) -> Path:
    cfg = image_config(tmp_path, root, train={"epochs": 2, "freeze_epochs": 1, "patience": 0, "warmup_epochs": 0.5},
                       image={"size": 40, "augment": ["hflip", "affine"]})
    cfg["output_dir"] = str(output_dir)
    return write_yaml(tmp_path / f"{output_dir.name}.yaml", cfg)


@pytest.mark.slow
def test_a_disk_that_fills_during_the_run_stops_in_one_line_and_resume_finishes(
        image_comp, tmp_path, small_disk, monkeypatch, capsys):
    _, root = image_comp
    reference = _config(tmp_path, root, tmp_path / "ref")
    assert train.main(["--config", str(reference), "--fold", "0"]) == 0
    ref = load_checkpoint(tmp_path / "ref" / "shapes" / "fold0" / "best.pt")

    disk = small_disk("32m")
    cfg = _config(tmp_path, root, disk)
    filler = disk / "filler"
    real_check = disk_space.check_disk_space

    def check_then_fill(cfg_, task, comp, folds, model):
        real_check(cfg_, task, comp, folds, model)  # passes: 32 MB is plenty
        # Then another program takes the space, leaving room for one and a half full checkpoints:
        # epoch 1's (head-only optimizer state) and epoch 2's fit, epoch 3's does not.
        with open(filler, "wb") as fh:
            os.posix_fallocate(fh.fileno(), 0, shutil.disk_usage(disk).free - int(1.5 * checkpoint_size(model)))

    monkeypatch.setattr(disk_space, "check_disk_space", check_then_fill)  # train imports it when it runs
    capsys.readouterr()
    assert train.main(["--config", str(cfg), "--fold", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    fold_dir = disk / "shapes" / "fold0"
    assert len(err) == 1, err
    match = re.fullmatch(
        rf"error: no space left on device writing {re.escape(str(fold_dir))}/(best|last)\.pt \(needs {SIZE}, "
        rf"{SIZE} free on {re.escape(str(disk))}\); free some space, then continue with --resume",
        err[0],
    )
    assert match, err[0]
    assert _bytes(match.group(2)) > _bytes(match.group(3))
    # No temporary file; what was written before is whole.
    assert leftovers(disk) == []
    last, best = load_checkpoint(fold_dir / "last.pt"), load_checkpoint(fold_dir / "best.pt")
    assert last.epoch == 2 and last.stage == 2 and not last.finished and best.epoch <= last.epoch
    summary = pd.read_csv(fold_dir / "summary.csv")["epoch"].tolist()
    assert summary == list(range(1, len(summary) + 1)) and len(summary) >= last.epoch

    filler.unlink()
    monkeypatch.undo()
    assert train.main(["--config", str(cfg), "--fold", "0", "--resume"]) == 0
    got = load_checkpoint(fold_dir / "best.pt")
    assert (got.epoch, got.metric) == (ref.epoch, ref.metric)
    for name, tensor in ref.model_state_dict.items():
        assert torch.equal(tensor, got.model_state_dict[name]), name
    assert load_checkpoint(fold_dir / "last.pt").finished
    assert pd.read_csv(fold_dir / "summary.csv")["epoch"].tolist() == [1, 2, 3]
    assert leftovers(disk) == []


def test_a_decode_cache_that_does_not_fit_fails_in_one_line_and_leaves_nothing(image_comp, small_disk):
    _, root = image_comp
    disk = small_disk("256k")
    paths = image_paths(pd.read_csv(root / "train.csv"), root, "image")
    with pytest.raises(DiskFull) as caught:  # not SIGBUS: the file's blocks are reserved before the memmap writes
        build_cache(paths, 64, disk / "cache")
    match = re.fullmatch(
        rf"no space left on device writing {re.escape(str(disk))}/cache/images-64px-\w+\.u8 \(needs {SIZE}, "
        rf"{SIZE} free on {re.escape(str(disk))}\)",
        str(caught.value),
    )
    assert match, str(caught.value)
    assert _bytes(match.group(1)) == pytest.approx(36 * 64 * 64 * 3, rel=0.01)
    assert _bytes(match.group(2)) == pytest.approx(256 * 1024, rel=0.05)
    assert os.listdir(disk) == []


@pytest.mark.slow
def test_tensorboard_on_a_full_disk_is_one_line_without_a_thread_traceback(tmp_path, small_disk, zygote):
    """TensorBoard's writer thread meets the full disk first; the CLI still prints one line."""
    disk = small_disk("1m")
    script = f"""
import os, shutil, sys
from competition.core.errors import run_cli
from competition.io.tracking import FoldTracker

def main(argv):
    tracker = FoldTracker({str(disk / "fold0")!r})
    with open({str(disk / "filler")!r}, "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, shutil.disk_usage({str(disk)!r}).free)
    for epoch in range(1, 500):  # past the last page the events file already holds
        tracker.log_epoch(epoch, {{"train_loss": 1.0, "val_loss": 1.0, "metric": 0.5, "stage": 1}}, "accuracy", {{"head": 0.1}})
    return 0

sys.exit(run_cli(main, None))
"""
    proc = zygote_run(["-c", script], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: no space left on device writing {disk / 'fold0' / 'tb'} (0 B free on {disk})"], proc.stderr


def test_the_estimate_counts_the_checkpoints_a_run_adds(image_comp):
    """Two per fold and one being replaced; a fold's existing checkpoints are replaced, not added to."""
    cfg = load_config(str(image_comp[0]), [])
    task, comp = open_competition(cfg)
    model = task.check_model(cfg, len(comp.classes))
    assert estimate_run_bytes(cfg, task, comp, [0, 1], model).checkpoint_files == 5
    fold0 = cfg.fold_dir(0)
    fold0.mkdir(parents=True)
    (fold0 / "best.pt").write_bytes(b"epoch 3")
    os.link(fold0 / "best.pt", fold0 / "last.pt")  # the last epoch was the best one
    assert estimate_run_bytes(cfg, task, comp, [0, 1], model).checkpoint_files == 4
    (fold0 / "last.pt").unlink()
    (fold0 / "last.pt").write_bytes(b"epoch 4")
    assert estimate_run_bytes(cfg, task, comp, [0, 1], model).checkpoint_files == 3
    assert estimate_run_bytes(cfg, task, comp, [1], model).checkpoint_files == 3


def test_the_checkpoint_estimate_never_undercounts_and_adds_no_slack():
    """Against a real checkpoint with AdamW's state for every parameter (stage 2)."""
    import timm

    model = timm.create_model("test_resnet", num_classes=3)
    optimizer = torch.optim.AdamW(model.parameters())
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    history = [{"epoch": e, "stage": 2, "train_loss": 0.1, "val_loss": 0.2, "metric": 0.9, "best": True,
                "seconds": 1.0, "lr_head": 1e-3, "lr_backbone": 1e-4} for e in range(1, 51)]
    state = dataclasses.replace(fold_state({"name": "shapes"}, CLASSES), model_state_dict=model.state_dict(),
                                optimizer_state_dict=optimizer.state_dict(), history=history)
    real = len(checkpoint_bytes(state))
    assert real <= checkpoint_size(model) <= real * 1.02
