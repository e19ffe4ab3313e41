"""Offline by default: train and predict run in a network namespace with no route (a Kaggle
notebook with internet off) and print no warning, no failed fetch, no traceback."""
from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import huggingface_hub
import pytest
import safetensors.torch
import timm
import torch
from conftest import no_network_reason

from competition.config import config_from_dict
from competition.core.errors import CompetitionError
from competition.tasks import task_of

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


CLONE_NEWNET = 0x40000000  # unshare(2): a network namespace of one's own, with no route out


def _without_network(work: Callable[[], str], limit: float) -> tuple[str | None, float]:
    """(what `work()` returned, seconds it took) in a forked child that has a network namespace of its
    own (no route, no name resolution: a notebook with internet off); None when it was still at it
    after `limit` seconds (then killed). A fork, not a new interpreter: no second import of torch."""
    read, write = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read)
            torch.set_num_threads(1)  # an OpenMP pool does not survive a fork
            if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare")
            os.write(write, work().encode())
            code = 0
        except BaseException as exc:  # said in the parent's assertion, not as a second pytest run
            os.write(write, f"the child failed: {exc!r}".encode())
        finally:
            os._exit(code)
    os.close(write)
    while time.monotonic() - start < limit and os.waitpid(pid, os.WNOHANG) == (0, 0):
        time.sleep(0.05)
    took = time.monotonic() - start
    if took >= limit:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read)
        return None, took
    with os.fdopen(read, "rb") as fh:
        return fh.read().decode(), took


@pytest.mark.skipif(no_network_reason() is not None, reason=str(no_network_reason()))
def test_hub_weights_without_network_fail_at_once_in_one_line(tmp_path, monkeypatch):
    """No HF_HUB_OFFLINE set and nothing cached: the hub client alone would retry each file five
    times over a minute, logging every try, before the kit's line."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    cfg = config_from_dict({"name": "net", "model": {"name": "test_resnet", "pretrained": True}})

    def build() -> str:
        records: list[logging.LogRecord] = []
        handler = logging.Handler(logging.INFO)
        handler.emit = records.append
        logging.getLogger().addHandler(handler)
        try:
            task_of(cfg).check_model(cfg, 3)
            refusal = "(built)"
        except CompetitionError as exc:
            refusal = str(exc)
        return json.dumps({"refusal": refusal, "logged": [r.getMessage() for r in records]})

    got, took = _without_network(build, limit=30)
    assert got is not None, f"still fetching after {took:.0f} s"
    assert got.startswith("{"), got
    result = json.loads(got)
    assert result["logged"] == []  # no retries, no "Loading pretrained weights from Hugging Face hub"
    assert "test_resnet" in result["refusal"] and "cannot be reached" in result["refusal"]
    assert "model.pretrained_file" in result["refusal"] and "\n" not in result["refusal"]
    assert took < 15
