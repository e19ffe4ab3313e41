"""Ctrl-C and SIGTERM, sent for real to a training (or predict) process: it stops at the end of the
current step, says where and how to continue, exits 130 / 143, and --resume ends as a run never
interrupted would. A second Ctrl-C exits at once."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import image_config, write_yaml

from competition import train
from competition.io.checkpoints import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _config(tmp_path, root, out: str, minutes: float):
    cfg = image_config(tmp_path, root, train={"epochs": 3, "freeze_epochs": 1, "batch_size": 2, "patience": 0,
                                              "checkpoint_every_minutes": minutes})
    cfg["output_dir"] = str(tmp_path / out)
    return write_yaml(tmp_path / f"{out}.yaml", cfg)


def _start(cfg: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "competition.train", "--config", str(cfg), "--fold", "0"],
                            env=ENV, cwd=cfg.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(fold_dir: Path, epochs: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        try:
            if torch.load(fold_dir / "last.pt", weights_only=True)["epoch"] >= epochs:
                return
        except (FileNotFoundError, RuntimeError, EOFError, KeyError):
            pass
        time.sleep(0.02)
    raise AssertionError("the run ended or stalled before it could be interrupted")


def _interrupt_training(cfg: Path, fold_dir: Path, sig: signal.Signals) -> tuple[int, str]:
    """Start training fold 0, send `sig` once two epochs are saved; (exit code, last stderr line)."""
    proc = _start(cfg)
    _wait_for(fold_dir, 2, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, _last_line(err)


def _last_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr
    return lines[-1]


def _uninterrupted(tmp_path, root, minutes):
    ref = _config(tmp_path, root, "ref", minutes)
    assert train.main(["--config", str(ref), "--fold", "0"]) == 0
    return load_checkpoint(tmp_path / "ref" / "shapes" / "fold0" / "last.pt")


def _same_weights(a, b) -> None:
    assert (a.epoch, a.metric, a.best_epoch) == (b.epoch, b.metric, b.best_epoch)
    for key, tensor in a.model_state_dict.items():
        assert torch.equal(tensor, b.model_state_dict[key]), key


def test_ctrl_c_mid_epoch_saves_the_step_and_resume_ends_bit_identical(image_comp, tmp_path):
    _, root = image_comp
    ref = _uninterrupted(tmp_path, root, 1e-6)  # a mid-epoch last.pt after every step
    cfg = _config(tmp_path, root, "run", 1e-6)
    fold_dir = tmp_path / "run" / "shapes" / "fold0"
    code, line = _interrupt_training(cfg, fold_dir, signal.SIGINT)
    assert code == 130, line
    assert line.startswith("interrupted (SIGINT): fold 0 stopped after ") and "batches of epoch" in line, line
    command = line.split("continue with: ")[1]
    assert command.startswith("python -m competition.train") and command.endswith("--resume")
    saved = load_checkpoint(fold_dir / "last.pt")
    assert saved.batches_done > 0 and not saved.finished  # stopped inside an epoch, and saved there
    assert not list(fold_dir.glob(".*.tmp"))
    # The printed command, run as printed, finishes as the uninterrupted run did.
    assert train.main(shlex.split(command)[3:]) == 0
    _same_weights(load_checkpoint(fold_dir / "last.pt"), ref)


def test_sigterm_without_mid_epoch_checkpoints_resumes_from_the_last_epoch(image_comp, tmp_path):
    _, root = image_comp
    ref = _uninterrupted(tmp_path, root, 0)
    cfg = _config(tmp_path, root, "run", 0)
    fold_dir = tmp_path / "run" / "shapes" / "fold0"
    code, line = _interrupt_training(cfg, fold_dir, signal.SIGTERM)
    assert code == 143, line
    assert line.startswith("interrupted (SIGTERM): fold 0 stopped"), line
    saved = load_checkpoint(fold_dir / "last.pt")
    assert saved.batches_done == 0 and saved.epoch >= 2  # the last epoch boundary, whole
    assert train.main(["--config", str(cfg), "--fold", "0", "--resume"]) == 0
    _same_weights(load_checkpoint(fold_dir / "last.pt"), ref)


def test_a_second_ctrl_c_exits_at_once(tmp_path):
    # A step that never ends: the first Ctrl-C only asks to stop there, the second must end it.
    script = ("import time\nfrom competition.core.interrupts import GracefulStop\n"
              "with GracefulStop() as stop:\n    print('ready', flush=True)\n"
              "    while True:\n        time.sleep(0.01)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None  # the first one waits for the step to end
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err.strip().splitlines() == [err.strip()] and err.startswith("interrupted again (SIGINT): stopped at once")


def test_an_interrupted_predict_writes_no_submission(image_comp, tmp_path):
    cfg, _ = image_comp
    assert train.main(["--config", str(cfg), "--fold", "all"]) == 0
    out = tmp_path / "sub.csv"
    proc = subprocess.Popen([sys.executable, "-m", "competition.predict", "--config", str(cfg), "--output", str(out)],
                            env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:  # interrupt once the fold models are loaded
        seen.append(line)
        if line.startswith("predicting with folds"):
            proc.send_signal(signal.SIGTERM)
            break
    err = "".join(seen) + proc.stderr.read()
    proc.wait(timeout=60)
    assert proc.returncode == 143, err
    assert _last_line(err).startswith("interrupted (SIGTERM): stopped; every file is written whole or not at all")
    assert not out.exists() and not list(tmp_path.glob(".sub.csv.*"))
