"""TensorBoard: scalars per epoch, learning rate per group, confusion matrix, misclassified grid, hparams —
read back by TensorBoard's own reader and by a real `tensorboard --logdir` server."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2


def test_tensorboard_shows_scalars_figures_and_hparams(trained_image_comp, tmp_path):
    events = EventAccumulator(str(tmp_path / "outputs" / "shapes" / "fold0" / "tb"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    for tag in ("loss/train", "loss/val", "metric/val_accuracy", "lr/head", "lr/backbone"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in events.Scalars("loss/train")] == [1, 2]
    assert len(events.Scalars("lr/backbone")) == 1  # the backbone learns in stage 2 only
    assert "val/confusion_matrix" in tags["images"]
    # A one-epoch model on noisy shapes gets some validation images wrong: they are shown.
    assert "val/misclassified" in tags["images"]
    assert events.Images("val/misclassified")[-1].encoded_image_string.startswith(b"\x89PNG")
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["train.lr"].number_value == 3e-3
    assert "hparam/best_accuracy" in tags["scalars"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, data: bytes | None = None):
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.mark.slow
def test_a_real_tensorboard_server_reads_the_logs(trained_image_comp, tmp_path):
    shutil.rmtree(tmp_path / "outputs" / "shapes" / "fold1")  # one fold's logs, as `train --fold 0` leaves them
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(tmp_path / "outputs"), "--host", "127.0.0.1",
         "--port", str(port), "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        scalars, deadline = {}, time.time() + 60
        while time.time() < deadline:
            try:
                scalars = _get(f"{base}/data/plugin/scalars/tags")
                if any("metric/val_accuracy" in tags for tags in scalars.values()):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        run = next(r for r, tags in scalars.items() if "metric/val_accuracy" in tags)
        assert run.replace("\\", "/").endswith("shapes/fold0/tb")
        images = _get(f"{base}/data/plugin/images/tags")
        assert {"val/confusion_matrix", "val/misclassified"} <= set(images[run])
        experiment = _get(f"{base}/data/plugin/hparams/experiment", json.dumps({"experimentName": ""}).encode())
        names = {h["name"] for h in experiment["hparamInfos"]}
        assert {"train.lr", "model.name", "train.freeze_epochs"} <= names
    finally:
        server.terminate()
        server.wait(timeout=10)
