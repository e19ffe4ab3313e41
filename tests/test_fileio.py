"""Atomic writes: an error or a kill -9 mid-write leaves the previous file or the new one, never half of one."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import fold_state

from competition.io.checkpoints import load_checkpoint, save_checkpoint
from competition.io.disk import DiskFull
from competition.io.files import (
    BackgroundWriter,
    atomic_path,
    torch_save,
    write_csv,
    write_json,
    write_text,
    write_yaml,
)


def versions(n_rows: int = 3000) -> list[pd.DataFrame]:
    return [pd.DataFrame({"id": range(n_rows), "v": [k] * n_rows}) for k in (0, 1)]


def is_whole_version(df: pd.DataFrame, n_rows: int = 3000) -> bool:
    return len(df) == n_rows and list(df.columns) == ["id", "v"] and df["v"].nunique() == 1


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_an_error_halfway_through_a_csv_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "oof.csv"
    old, new = versions()
    write_csv(path, old)
    real_to_csv = pd.DataFrame.to_csv

    def half_then_fail(self, target, **kw):
        text = real_to_csv(self, None, **kw)
        Path(target).write_text(text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_fail)
    with pytest.raises(DiskFull, match=f"no space left on device writing {path} "):
        write_csv(path, new)
    monkeypatch.undo()
    assert pd.read_csv(path).equals(old)
    assert leftovers(tmp_path) == []


def test_an_interrupt_halfway_through_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    state = fold_state({}, [0, 1], w=torch.ones(1000))
    save_checkpoint(path, state)
    real_save = torch.save

    def half_then_interrupt(obj, target, **kw):
        buf = io.BytesIO()
        real_save(obj, buf, **kw)
        Path(target).write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise KeyboardInterrupt  # Ctrl-C is not an Exception: the temp file still goes

    monkeypatch.setattr(torch, "save", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, dataclasses.replace(state, epoch=2, model_state_dict={"w": torch.zeros(1000)}))
    monkeypatch.undo()
    loaded = load_checkpoint(path)
    assert loaded.epoch == 1 and torch.equal(loaded.model_state_dict["w"], torch.ones(1000))
    assert leftovers(tmp_path) == []


WRITER = """
import sys
import pandas as pd
import torch
from competition.io.files import torch_save, write_csv

path, kind = sys.argv[1], sys.argv[2]
frames = [pd.DataFrame({"id": range(3000), "v": [k] * 3000}) for k in (0, 1)]
i = 0
while True:
    if kind == "csv":
        write_csv(path, frames[i % 2])
    else:
        torch_save(path, {"v": torch.full((200_000,), float(i % 2))})
    i += 1
    if i == 2:
        print("writing", flush=True)
"""


def _read(path: Path, kind: str) -> bool:
    """True when the file holds one whole version."""
    if kind == "csv":
        return is_whole_version(pd.read_csv(path))
    v = torch.load(path, weights_only=True)["v"]
    return v.numel() == 200_000 and bool((v == v[0]).all())


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["csv", "checkpoint"])
def test_kill_9_while_rewriting_in_a_loop_leaves_a_whole_file(tmp_path, kind, zygote):
    path = tmp_path / ("folds.csv" if kind == "csv" else "last.pt")
    writer = zygote.spawn(["-c", WRITER, str(path), kind], stderr=subprocess.DEVNULL)
    try:
        assert writer.stdout.readline().strip() == "writing"
        # Read while the other process keeps replacing the file: every read sees a whole version.
        assert all(_read(path, kind) for _ in range(40))
    finally:
        writer.send_signal(signal.SIGKILL)  # mid-write, most likely: the loop never pauses
        writer.wait()
        writer.stdout.close()
    assert writer.returncode == -signal.SIGKILL
    assert _read(path, kind)
    # A killed writer may leave its temporary file beside it, under a hidden name, never the real one.
    assert all(name.startswith(f".{path.name}.") for name in leftovers(tmp_path))


def test_every_writer_produces_a_readable_file_with_the_usual_permissions(tmp_path):
    old_umask = os.umask(0o022)
    try:
        write_text(tmp_path / "a" / "note.txt", "hello\n")  # parent folders are created
        write_json(tmp_path / "cv.json", {"cv": 0.5, "folds": {"0": 0.5}})
        write_yaml(tmp_path / "config.yaml", {"name": "x", "train": {"lr": 0.001}})
        write_csv(tmp_path / "sub.csv", versions(3)[0])
        torch_save(tmp_path / "t.pt", {"w": torch.ones(2)})
    finally:
        os.umask(old_umask)
    assert (tmp_path / "a" / "note.txt").read_text() == "hello\n"
    assert json.loads((tmp_path / "cv.json").read_text())["folds"] == {"0": 0.5}
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["lr"] == 0.001
    assert is_whole_version(pd.read_csv(tmp_path / "sub.csv"), 3)
    assert torch.equal(torch.load(tmp_path / "t.pt", weights_only=True)["w"], torch.ones(2))
    # Readable by others as with a plain open(): a teammate can read the submission.
    for name in ("a/note.txt", "cv.json", "config.yaml", "sub.csv", "t.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_replacing_a_file_keeps_its_permissions(tmp_path):
    path = tmp_path / "sub.csv"
    write_csv(path, versions(3)[0])
    path.chmod(0o640)
    write_csv(path, versions(3)[1])
    assert path.stat().st_mode & 0o777 == 0o640
    assert pd.read_csv(path)["v"].tolist() == [1, 1, 1]


def test_atomic_path_writes_nothing_when_the_body_fails(tmp_path):
    path = tmp_path / "summary.csv"
    with pytest.raises(ValueError), atomic_path(path) as tmp:
        tmp.write_text("partial")
        raise ValueError("boom")
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_background_writes_land_in_order_and_their_errors_are_not_lost(tmp_path):
    order = []

    def slow_write(name, seconds):
        time.sleep(seconds)
        write_text(tmp_path / name, name)
        order.append(name)

    with BackgroundWriter() as writer:
        writer.submit(slow_write, "first", 0.2)
        writer.submit(slow_write, "second", 0.0)  # waits for the first batch
        assert order == ["first"]
    assert order == ["first", "second"] and (tmp_path / "second").read_text() == "second"

    writer = BackgroundWriter()
    writer.submit(write_text, tmp_path / "missing" / "\0bad", "x")  # an invalid name fails in the thread
    with pytest.raises(ValueError):
        writer.close()
