"""One fold trained by two torchrun processes (gloo on the CPU): the files a user gets are the
ones a single process would write, written by one rank only, and the out-of-fold rows are
every validation row exactly once, scored by the weights that best.pt holds."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import image_config, make_image_competition, write_yaml

from competition.config import config_from_dict
from competition.data.batch_augment import BatchAugment
from competition.data.datasets import ImageDataset
from competition.data.transforms import build_eval_transform
from competition.inference.forward import predict_probs
from competition.tasks import build_model

REPO = Path(__file__).resolve().parents[1]

# Loaded by every process of the run (PYTHONPATH): records which process renames which file
# into place, i.e. who writes what. Every kit write ends in os.replace (fileio.atomic_path).
RECORD_WRITES = textwrap.dedent(
    """
    import os
    _replace = os.replace
    def _recording_replace(src, dst, *a, **kw):
        _replace(src, dst, *a, **kw)
        with open(os.environ["KIT_WRITES_LOG"], "a") as fh:
            fh.write(f"{os.getpid()} {os.fspath(dst)}\\n")
    os.replace = _recording_replace
    """
)


@pytest.mark.slow
def test_torchrun_two_processes_train_one_fold(tmp_path):
    # 35 rows: the folds hold 18 and 17, so one rank gets a padded share of train or validation rows.
    root = make_image_competition(tmp_path / "data" / "shapes", n_train=35)
    cfg = image_config(tmp_path, root)
    cfg["train"]["cache"] = "auto"
    cfg_path = write_yaml(tmp_path / "shapes.yaml", cfg)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(RECORD_WRITES)
    writes = tmp_path / "writes.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hook), str(REPO)]),
        "KIT_WRITES_LOG": str(writes),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "competition.train", "--config", str(cfg_path), "--fold", "0"]
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "fold 0: best accuracy" in run.stdout
    assert "2 processes" in run.stderr
    # Only the first rank reports progress: one line per epoch, not one per rank.
    assert run.stderr.count("fold 0 | epoch 2/2") == 1

    fold_dir = tmp_path / "outputs" / "shapes" / "fold0"
    assert (fold_dir / "best.pt").is_file() and (fold_dir / "last.pt").is_file()
    assert not list(fold_dir.glob(".*.tmp"))
    assert not (tmp_path / "outputs" / "shapes" / "fold1").exists()

    # Written by one process only: the two ranks never both write a fold file.
    writers: dict[str, set[str]] = {}
    for line in writes.read_text().splitlines():
        pid, dst = line.split(" ", 1)
        writers.setdefault(Path(dst).name, set()).add(pid)
    for name in ("best.pt", "last.pt", "oof.csv", "summary.csv", "folds.csv", "config.yaml"):
        assert len(writers.get(name, ())) == 1, (name, writers.get(name))
    # One decode cache for the train images and one for the test images, each decoded by one
    # rank (before training, as the decode check) and mapped by both.
    caches = [name for name in writers if name.startswith("images-") and name.endswith(".u8")]
    assert len(caches) == 2 and all(len(writers[c]) == 1 for c in caches), {n: writers[n] for n in caches}
    tb_pids = {p.name.split(".")[-2] for p in (fold_dir / "tb").glob("events.out.tfevents.*")}
    assert len(tb_pids) == 1
    assert list(pd.read_csv(fold_dir / "summary.csv")["epoch"]) == [1, 2]

    # Every validation row of fold 0, once each, with its true label.
    train = pd.read_csv(root / "train.csv")
    folds = pd.read_csv(root / "folds.csv")
    valid = train[train["id"].isin(folds.loc[folds["fold"] == 0, "id"])].reset_index(drop=True)
    oof = pd.read_csv(fold_dir / "oof.csv")
    assert len(oof) == len(valid) and oof["id"].is_unique
    assert sorted(oof["id"]) == sorted(valid["id"])
    assert dict(zip(oof["id"], oof["label"], strict=True)) == dict(zip(valid["id"], valid["label"], strict=True))

    # The checkpoint loads without pickled code and rebuilds a model whose predictions on the
    # validation rows are the out-of-fold probabilities: rows scored by the second rank agree
    # with the weights and BatchNorm statistics that the first rank saved.
    state = torch.load(fold_dir / "best.pt", map_location="cpu", weights_only=True)
    classes = state["classes"]
    model = build_model(config_from_dict(state["config"]), len(classes), load_pretrained=False)
    model.load_state_dict(state["model_state_dict"])
    p = state["preprocessing"]
    oof = oof.set_index("id").loc[valid["id"]]
    ds = ImageDataset(valid, root, build_eval_transform(p["size"], p["interpolation"]))
    probs = predict_probs([model], torch.utils.data.DataLoader(ds, batch_size=16), torch.device("cpu"),
                          batch_transform=BatchAugment(p["size"], p["mean"], p["std"]))
    np.testing.assert_allclose(oof[[f"prob_{c}" for c in classes]].to_numpy(), probs, atol=1e-4)
