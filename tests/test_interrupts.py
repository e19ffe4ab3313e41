"""Ctrl-C and SIGTERM, sent for real to a training (or predict) process: it stops at the end of the
current step, says where and how to continue, exits 130 / 143, and --resume ends as a run never
interrupted would. A second Ctrl-C exits at once. Training gets its signal from itself, after the
step a test names (core.interrupts.TEST_FAULT), so the tests know where it stops."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import image_config, kill_training, write_yaml

from competition import train
from competition.core import interrupts
from competition.io.checkpoints import load_checkpoint
from competition.training import trainers

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
STEPS = 3  # optimizer steps an epoch: fold 0's 18 training rows in batches of 8


def _config(tmp_path, root, out: str, minutes: float):
    cfg = image_config(tmp_path, root, train={"epochs": 2, "freeze_epochs": 1, "patience": 0,
                                              "checkpoint_every_minutes": minutes})
    cfg["output_dir"] = str(tmp_path / out)
    return write_yaml(tmp_path / f"{out}.yaml", cfg)


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


@pytest.fixture
def signal_handlers():
    """SIGINT and SIGTERM handlers put back after a test that signals its own process (a stopped
    run leaves its own in place, for a second signal during the shutdown)."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in previous.items():
        signal.signal(s, handler)


@pytest.mark.slow
def test_ctrl_c_mid_epoch_saves_the_step_and_resume_ends_bit_identical(image_comp, tmp_path, zygote):
    _, root = image_comp
    ref = _uninterrupted(tmp_path, root, 1e-6)  # a mid-epoch last.pt after every step
    cfg = _config(tmp_path, root, "run", 1e-6)
    fold_dir = tmp_path / "run" / "shapes" / "fold0"
    # A real process that gets SIGINT after the first step of epoch 3 (stage 2).
    code, _, err = kill_training(zygote, cfg, fold_dir, after_step=2 * STEPS + 1, sig=signal.SIGINT)
    line = _last_line(err)
    assert code == 130, line
    assert line.startswith("interrupted (SIGINT): fold 0 stopped after 1 of 3 batches of epoch 3"), line
    command = line.split("continue with: ")[1]
    assert command.startswith("python -m competition.train") and command.endswith("--resume")
    saved = load_checkpoint(fold_dir / "last.pt")
    assert (saved.epoch, saved.batches_done, saved.finished) == (2, 1, False)  # stopped inside epoch 3, saved there
    assert not list(fold_dir.glob(".*.tmp"))
    # The printed command, run as printed, finishes as the uninterrupted run did.
    assert train.main(shlex.split(command)[3:]) == 0
    _same_weights(load_checkpoint(fold_dir / "last.pt"), ref)


def test_sigterm_without_mid_epoch_checkpoints_resumes_from_the_last_epoch(image_comp, tmp_path, monkeypatch, capsys,
                                                                          signal_handlers):
    _, root = image_comp
    ref = _uninterrupted(tmp_path, root, 0)
    cfg = _config(tmp_path, root, "run", 0)
    fold_dir = tmp_path / "run" / "shapes" / "fold0"
    # This process sends itself SIGTERM after the first step of epoch 3 (core.interrupts.TEST_FAULT).
    monkeypatch.setattr(interrupts, "TEST_FAULT", (2 * STEPS + 1, signal.SIGTERM))
    code = train.main(["--config", str(cfg), "--fold", "0"])
    line = _last_line(capsys.readouterr().err)
    assert code == 143, line
    assert line.startswith("interrupted (SIGTERM): fold 0 stopped in epoch 3 (1 of 3 batches, not saved"), line
    saved = load_checkpoint(fold_dir / "last.pt")
    assert (saved.epoch, saved.batches_done) == (2, 0)  # the last epoch boundary, whole
    monkeypatch.setattr(interrupts, "TEST_FAULT", None)
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


@pytest.mark.slow
def test_an_interrupted_predict_writes_no_submission(trained_image_comp, tmp_path, zygote):
    cfg, _ = trained_image_comp
    out = tmp_path / "sub.csv"
    proc = zygote.spawn(["competition.predict", "--config", str(cfg), "--output", str(out)], env=ENV, cwd=tmp_path,
                        stdout=subprocess.DEVNULL)
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


def test_ctrl_c_during_a_one_fit_fold_stops_before_the_next_fold(table_comp, tmp_path, monkeypatch, capsys,
                                                                 signal_handlers):
    """A scikit-learn or GBDT fold cannot stop inside its fit: the signal stops training once it ends,
    before the next fold starts, and --resume fits the folds left."""
    cfg, _ = table_comp
    fit = trainers.TRAINERS["once"]

    def fit_then_signal(*args, **kwargs):
        result = fit(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during the fit: handled once the fit returns
        return result

    monkeypatch.setitem(trainers.TRAINERS, "once", fit_then_signal)
    args = ["--config", str(cfg), "--set", "model.name=logreg"]
    code = train.main(args)
    line = _last_line(capsys.readouterr().err)
    assert code == 130 and line.startswith("interrupted (SIGINT): stopped after fold 0, before fold 1"), line
    run = tmp_path / "outputs" / "table"
    assert (run / "fold0" / "best.pt").is_file() and not (run / "fold1" / "best.pt").exists()
    monkeypatch.setitem(trainers.TRAINERS, "once", fit)
    assert train.main(shlex.split(line.split("continue with: ")[1])[3:]) == 0
    assert (run / "fold1" / "best.pt").is_file()
