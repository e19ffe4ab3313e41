"""A damaged decode cache — cut short, or bytes altered in place — is found by its size and block
checksums, rebuilt with one log line, and never read as wrong pixels."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from competition import predict, train
from competition.data.cache import build_cache
from competition.data.images import image_paths
from competition.io.checkpoints import load_checkpoint


def damage(path: Path, how: str) -> None:
    """Cut the file short, or flip bytes in its middle the way bit rot does: same size, same mtime."""
    st = path.stat()
    with open(path, "r+b") as fh:
        if how == "truncated":
            fh.truncate(st.st_size - 1000)
            return
        fh.seek(st.st_size // 2)
        byte = fh.read(1)
        fh.seek(st.st_size // 2)
        fh.write(bytes([byte[0] ^ 0x5A]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def rebuilt(caplog) -> list[str]:
    lines = sorted(r.getMessage() for r in caplog.records if " is damaged (" in r.getMessage())
    caplog.clear()
    return lines


def expected(caches: dict[Path, bytes], ways: dict[Path, str]) -> list[str]:
    """The one line per damaged file (each of these small caches is a single checksum block)."""
    lines = []
    for path, data in caches.items():
        n = len(data)
        reason = f"{n - 1000} bytes, expected {n}" if ways[path] == "truncated" else f"bytes 0-{n - 1} do not match their checksum"
        lines.append(f"decode cache {path} is damaged ({reason}): rebuilding it")
    return sorted(lines)


@pytest.mark.slow
def test_a_damaged_cache_is_rebuilt_before_training_or_prediction_reads_it(image_comp, tmp_path, caplog):
    cfg, _ = image_comp
    # One epoch (of every layer) reads every cached training row: wrong pixels would change its weights.
    args = ["--config", str(cfg), "--set", "train.cache=auto", "--set", "train.freeze_epochs=0"]
    fold_dir = tmp_path / "outputs" / "shapes" / "fold0"
    assert train.main([*args, "--fold", "0"]) == 0
    trained = load_checkpoint(fold_dir / "best.pt").model_state_dict
    assert predict.main([*args, "--output", str(tmp_path / "before.csv")]) == 0
    caches = {p: p.read_bytes() for p in sorted((tmp_path / "outputs" / "cache").glob("*.u8"))}
    assert len(caches) == 2  # the train images and the test images
    caplog.set_level(logging.INFO)

    # One cache cut short and the other with a byte altered; then the other way round for predict.
    ways = dict(zip(caches, ["truncated", "altered"], strict=True))
    for path in caches:
        damage(path, ways[path])
    caplog.clear()
    assert train.main([*args, "--fold", "0"]) == 0
    assert rebuilt(caplog) == expected(caches, ways)
    for path, original in caches.items():
        assert path.read_bytes() == original
    again = load_checkpoint(fold_dir / "best.pt").model_state_dict
    assert all(torch.equal(trained[k], again[k]) for k in trained)

    ways = dict(zip(caches, ["altered", "truncated"], strict=True))
    for path in caches:
        damage(path, ways[path])
    assert predict.main([*args, "--output", str(tmp_path / "after.csv")]) == 0
    assert rebuilt(caplog) == expected(caches, ways)
    assert pd.read_csv(tmp_path / "after.csv").equals(pd.read_csv(tmp_path / "before.csv"))


def test_a_cache_without_checksums_is_rebuilt_once(image_comp, tmp_path, caplog):
    """A cache an older kit wrote (its .json holds no checksums) cannot be trusted: rebuilt, then reused."""
    _, root = image_comp
    paths = image_paths(pd.read_csv(root / "train.csv"), root, "image")
    cache = build_cache(paths, 32, tmp_path / "cache")
    pixels = np.array(cache.array)
    sidecar = cache.path.with_suffix(".json")
    sidecar.write_text(json.dumps({"images": len(paths), "size": 32, "first": str(paths[0])}))
    caplog.set_level(logging.INFO)
    caplog.clear()
    again = build_cache(paths, 32, tmp_path / "cache")
    assert rebuilt(caplog) == [f"decode cache {cache.path} is damaged (no readable checksums in {sidecar.name}): rebuilding it"]
    assert np.array_equal(np.array(again.array), pixels)
    assert "crc32" in json.loads(sidecar.read_text())
    build_cache(paths, 32, tmp_path / "cache")
    assert rebuilt(caplog) == []
