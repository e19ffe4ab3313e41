"""Exact resume: a run killed with SIGKILL and resumed ends bit-identical to one never interrupted."""
from __future__ import annotations

import signal
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import fold_state, image_config, kill_training, write_yaml

from competition import train
from competition.config import config_from_dict
from competition.core.errors import CompetitionError
from competition.io.checkpoints import load_checkpoint
from competition.io.runs import check_resumed, config_digest

REPO = Path(__file__).resolve().parents[1]


def _config(tmp_path, root, out):
    cfg = image_config(tmp_path, root, train={"epochs": 3, "freeze_epochs": 1, "patience": 0, "warmup_epochs": 0.5},
                       image={"size": 40, "augment": ["hflip", "affine", "color_jitter"]},
                       model={"name": "test_resnet", "drop_rate": 0.2})
    cfg["output_dir"] = str(tmp_path / out)
    return write_yaml(tmp_path / f"{out}.yaml", cfg)


def test_checkpoint_round_trip_is_weights_only(trained_image_comp, tmp_path):
    state = torch.load(tmp_path / "outputs" / "shapes" / "fold0" / "best.pt", weights_only=True)
    for key in ("epoch", "model_state_dict", "optimizer_state_dict", "loss", "metric", "config", "classes", "stage"):
        assert key in state
    assert isinstance(state["config"], dict) and state["config"]["name"] == "shapes"
    from competition.config import config_from_dict
    from competition.tasks import build_model

    model = build_model(config_from_dict(state["config"]), len(state["classes"]), load_pretrained=False)
    model.load_state_dict(state["model_state_dict"])  # strict: every key fits the rebuilt model


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(image_comp, tmp_path, zygote):
    _, root = image_comp
    reference = _config(tmp_path, root, "ref")
    assert train.main(["--config", str(reference), "--fold", "0"]) == 0
    ref = load_checkpoint(tmp_path / "ref" / "shapes" / "fold0" / "best.pt")
    ref_last = load_checkpoint(tmp_path / "ref" / "shapes" / "fold0" / "last.pt")

    interrupted = _config(tmp_path, root, "run")
    fold_dir = tmp_path / "run" / "shapes" / "fold0"
    # Kill inside stage 2 (epochs 2-4), where the optimizer, schedule and early-stopping state of
    # an unfinished stage must all come back: after the first step of epoch 4 (3 steps an epoch:
    # fold 0's 18 training rows in batches of 8), when last.pt holds epoch 3, or 2 while epoch 3's
    # files are still being written.
    code, killed_after, err = kill_training(zygote, interrupted, fold_dir, after_step=3 * 3 + 1)
    assert code == -signal.SIGKILL, f"exit {code} before the kill\n{err}"
    assert killed_after in (2, 3), f"the run must be killed part-way through stage 2, not after epoch {killed_after}"
    assert not load_checkpoint(fold_dir / "last.pt").finished

    assert train.main(["--config", str(interrupted), "--fold", "0", "--resume"]) == 0
    got = load_checkpoint(fold_dir / "best.pt")
    assert (got.epoch, got.metric) == (ref.epoch, ref.metric)
    for name, tensor in ref.model_state_dict.items():
        assert torch.equal(tensor, got.model_state_dict[name]), name
    last = load_checkpoint(fold_dir / "last.pt")
    assert last.history == [dict(r, seconds=h["seconds"]) for r, h in zip(ref_last.history, last.history, strict=True)]
    assert pd.read_csv(fold_dir / "summary.csv")["epoch"].tolist() == [1, 2, 3, 4]
    assert not list(fold_dir.glob(".*.tmp"))


def test_resume_refuses_a_changed_config(trained_image_comp, capsys):
    cfg_path, _ = trained_image_comp
    code = train.main(["--config", str(cfg_path), "--fold", "0", "--resume", "--set", "train.lr=0.5"])
    assert code == 2
    assert "train.lr" in capsys.readouterr().err


def test_a_resumed_fold_may_change_its_time_limit_and_kept_epochs_and_they_leave_the_run_as_it_is(tmp_path):
    started = image_config(tmp_path, tmp_path)
    del started["train"]["num_workers"]  # a last.pt written before a key existed compares as its default
    state = fold_state(started, ["a", "b"])
    more = image_config(tmp_path, tmp_path, train={"time_limit": "20m", "keep_top_k": 2, "num_workers": 4})
    check_resumed(config_from_dict(more), state, tmp_path / "last.pt", ["a", "b"])
    assert config_digest(more) == config_digest(started)  # the same run: its folds still average together
    other = image_config(tmp_path, tmp_path, train={"time_limit": "20m", "lr": 0.5})
    with pytest.raises(CompetitionError, match=r"^--resume: .*last.pt was trained with train.lr 0.003 and the config "
                                               r"says 0.5; resume with the config"):
        check_resumed(config_from_dict(other), state, tmp_path / "last.pt", ["a", "b"])
