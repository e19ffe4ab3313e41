"""Offline by default: train and predict run in a network namespace with no route (a Kaggle
notebook with internet off) and print no warning, no failed fetch, no traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import timm
from conftest import no_network_reason

REPO = Path(__file__).resolve().parents[1]


def _offline_env(tmp_path: Path) -> dict[str, str]:
    """The checkout's kit, an empty hub cache (weights could only come from the network) and
    none of the switches a user might have set to silence the checks under test."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_ALBUMENTATIONS_UPDATE", "HF_HUB_OFFLINE")}
    env.update(PYTHONPATH=str(REPO), HF_HOME=str(tmp_path / "hf-home"), TORCH_HOME=str(tmp_path / "torch-home"),
               OMP_NUM_THREADS="1")
    return env


def _run_offline(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "-n", sys.executable, "-m", *args], cwd=tmp_path, env=_offline_env(tmp_path),
                          capture_output=True, text=True, timeout=300)


def _noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if "warn" in line.lower() or "urlopen" in line or "Traceback" in line or line.startswith("error")]


@pytest.mark.slow
@pytest.mark.skipif(no_network_reason() is not None, reason=str(no_network_reason()))
def test_train_and_predict_without_network_are_quiet(image_comp, tmp_path):
    """Local pretrained weights too: a `model.pretrained_file` must not send timm to the hub."""
    cfg, _ = image_comp
    weights = tmp_path / "test_resnet.safetensors"
    safetensors.torch.save_file(timm.create_model("test_resnet").state_dict(), str(weights))
    pretrained = ["--set", f"model.pretrained_file={weights}"]

    trained = _run_offline(["competition.train", "--config", str(cfg), "--fold", "all", *pretrained], tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert _noise(trained.stderr) == [], trained.stderr
    assert "CV accuracy" in trained.stdout

    out = tmp_path / "submission.csv"
    predicted = _run_offline(["competition.predict", "--config", str(cfg), "--output", str(out), *pretrained], tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert _noise(predicted.stderr) == [], predicted.stderr
    assert out.is_file()
