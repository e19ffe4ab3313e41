"""wandb beside TensorBoard: one offline run per fold with the same scalars, figures and hparams,
read back from wandb's own run file; a resumed fold continues its run; nothing touches the
network unless tracking.wandb is online."""
from __future__ import annotations

import json
import os
import signal
import struct
import sys
from pathlib import Path

import pytest
import torch
from conftest import image_config, kill_training, no_network_reason, write_yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb.proto import wandb_internal_pb2
from zygote import run as zygote_run

from competition import train

REPO = Path(__file__).resolve().parents[1]
BLOCK = 32768  # wandb's run file: LevelDB-style log blocks of 7-byte-headed records after a 7-byte file header


def wandb_records(path: Path) -> list:
    """Every record of a .wandb run file, decoded with wandb's own protobuf schema."""
    data, records, pending, pos = path.read_bytes(), [], b"", 7
    assert data[:4] == b":W&B", path
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (kind == 0 and length == 0):  # the rest of the block is padding
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, or LAST of a record split over blocks
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def history(records: list) -> list[dict]:
    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item})
    return rows


def run_files(fold_dir: Path) -> list[Path]:
    return sorted(fold_dir.glob("wandb/offline-run-*/run-*.wandb"))


@pytest.mark.slow
def test_offline_run_holds_what_tensorboard_shows(image_comp, tmp_path):
    cfg, _ = image_comp
    assert train.main(["--config", str(cfg), "--fold", "0", "--set", "tracking.wandb=offline"]) == 0
    fold_dir = tmp_path / "outputs" / "shapes" / "fold0"
    (run_file,) = run_files(fold_dir)
    run_id = json.loads((fold_dir / "wandb.json").read_text())["id"]
    assert run_file.name == f"run-{run_id}.wandb"
    records = wandb_records(run_file)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.run_id, run.run_group, run.display_name, run.project) == (run_id, "shapes", "shapes-fold0", "competition")
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["train"]["lr"] == 3e-3 and config["model"]["name"] == "test_resnet"

    rows = history(records)
    events = EventAccumulator(str(fold_dir / "tb"), size_guidance={"images": 0})
    events.Reload()
    for tag in ("loss/train", "loss/val", "metric/val_accuracy", "lr/head", "lr/backbone"):
        logged = {row["epoch"]: row[tag] for row in rows if tag in row}
        assert logged == pytest.approx({e.step: e.value for e in events.Scalars(tag)}, rel=1e-6), tag
    images = {key.rsplit("/", 1)[0] for row in rows for key, value in row.items() if value == "image-file"}
    assert {"val/confusion_matrix", "val/misclassified"} <= images
    assert set(images) <= set(events.Tags()["images"])
    media = list(run_file.parent.glob("files/media/images/val/*.png"))
    assert len(media) >= 2 and all(p.read_bytes().startswith(b"\x89PNG") for p in media)
    summary = {item.key: json.loads(item.value_json) for r in records
               if r.WhichOneof("record_type") == "summary" for item in r.summary.update if item.key}
    assert summary["hparam/best_accuracy"] == pytest.approx(torch.load(fold_dir / "best.pt", weights_only=True)["metric"])


def _own_service_env() -> dict[str, str]:
    """This process's environment, less the address of its wandb service (wandb.init puts it in
    os.environ): the child starts its own, as a `train --resume` from the shell does."""
    return {**{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}, "PYTHONPATH": str(REPO)}


@pytest.mark.slow
def test_a_resumed_fold_continues_its_wandb_run(image_comp, tmp_path, zygote):
    """Killed in its last epoch (SIGKILL) and resumed: the same run id, its epochs continuing."""
    _, root = image_comp
    cfg = write_yaml(tmp_path / "run.yaml", image_config(tmp_path, root, train={"epochs": 2, "freeze_epochs": 1},
                                                         tracking={"wandb": "offline"}))
    fold_dir = tmp_path / "outputs" / "shapes" / "fold0"
    # After the first step of epoch 3 (3 steps an epoch: fold 0's 18 rows in batches of 8); last.pt
    # holds epoch 2, or 1 while epoch 2's files are still being written.
    code, killed_after, err = kill_training(zygote, cfg, fold_dir, after_step=2 * 3 + 1, env=_own_service_env())
    assert code == -signal.SIGKILL and 1 <= killed_after < 3, f"not killed part-way: exit {code} after " \
                                                               f"{killed_after} epochs\n{err}"
    first_id = json.loads((fold_dir / "wandb.json").read_text())["id"]

    assert train.main(["--config", str(cfg), "--fold", "0", "--resume"]) == 0
    assert json.loads((fold_dir / "wandb.json").read_text())["id"] == first_id
    files = run_files(fold_dir)
    assert [f.name for f in files] == [f"run-{first_id}.wandb"] * 2  # two sessions of one run, for `wandb sync`
    resumed = [row["epoch"] for row in history(wandb_records(files[-1])) if "loss/train" in row]
    assert resumed == list(range(killed_after + 1, 4))

    # A fresh start of the fold (no --resume) is a new run.
    assert train.main(["--config", str(cfg), "--fold", "0"]) == 0
    assert json.loads((fold_dir / "wandb.json").read_text())["id"] != first_id


@pytest.mark.slow
@pytest.mark.skipif(no_network_reason() is not None, reason=str(no_network_reason()))
def test_offline_wandb_needs_no_network(image_comp, tmp_path, zygote):
    """In a network namespace with no route, an offline run trains and logs without a complaint."""
    cfg, _ = image_comp
    env = {**_own_service_env(), "HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    env.pop("WANDB_MODE", None)
    done = zygote_run(["competition.train", "--config", str(cfg), "--fold", "0", "--set", "tracking.wandb=offline"],
                      cwd=tmp_path, env=env, unshare_net=True)
    assert done.returncode == 0, done.stderr
    noise = [line for line in done.stderr.splitlines() if any(w in line.lower() for w in ("warn", "error", "traceback"))]
    assert noise == [], done.stderr
    fold_dir = tmp_path / "outputs" / "shapes" / "fold0"
    assert any("loss/val" in row for row in history(wandb_records(run_files(fold_dir)[0])))
    logs = "\n".join(p.read_text() for p in fold_dir.glob("wandb/**/*.log"))
    assert logs and not [line for line in logs.splitlines() if '"level":"ERROR"' in line or " ERROR " in line]


def test_online_without_credentials_is_refused_before_anything_is_written(image_comp, tmp_path, monkeypatch, capsys):
    cfg, _ = image_comp
    for key in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / "wandb"))
    assert train.main(["--config", str(cfg), "--set", "tracking.wandb=online"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: config key tracking.wandb: online needs W&B credentials") and "\n" not in err
    assert not (tmp_path / "outputs").exists()


def test_without_the_package_a_wandb_run_is_refused(image_comp, tmp_path, monkeypatch, capsys):
    cfg, _ = image_comp
    monkeypatch.setitem(sys.modules, "wandb", None)  # what `import wandb` meets where it is not installed
    assert train.main(["--config", str(cfg), "--set", "tracking.wandb=offline"]) == 2
    assert "pip install -e '.[wandb]'" in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists()
    # Off, the package is never imported.
    assert train.main(["--config", str(cfg), "--fold", "0"]) == 0
