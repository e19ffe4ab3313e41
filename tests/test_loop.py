"""The fold loop's policies: train.time_limit stops a fold cleanly (exit 0, its best epoch kept for
predict, --resume finishing it exactly as a run never stopped), and train.keep_top_k keeps the K best
epochs' weights, pruning the rest."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import image_config, table_config, write_yaml

from competition import predict, train
from competition.io.checkpoints import load_checkpoint
from competition.training import callbacks


def _steps_clock():
    """A clock that advances one second each time it is read: the time limit counts the loop's
    questions (fit start, then once after every step but an epoch's last, and at every epoch's end)."""
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]
    return clock


@pytest.mark.slow
def test_the_time_limit_stops_a_fold_cleanly_and_resume_finishes_it_exactly(trained_image_comp, tmp_path, monkeypatch,
                                                                             capsys):
    """The run of trained_image_comp (two epochs of three steps a fold, never stopped) is the reference:
    the time limit and keep_top_k change nothing of what is trained."""
    _, root = trained_image_comp
    cfg = image_config(tmp_path, root, train={"keep_top_k": 1, "time_limit": "3.5s"})
    cfg["output_dir"] = str(tmp_path / "run")
    run = write_yaml(tmp_path / "run.yaml", cfg)
    monkeypatch.setattr(callbacks.TimeLimit, "clock", staticmethod(_steps_clock()))
    capsys.readouterr()
    # read at the start (1), after steps 1-2 of epoch 1 (2, 3), at its end (4), after step 1 of epoch 2 (5: 4 s > 3.5)
    assert train.main(["--config", str(run), "--fold", "all"]) == 0
    out = capsys.readouterr().out
    assert "fold 0: best accuracy" in out and "at epoch 1 (stopped by train.time_limit 3.5s; --resume continues it)" in out
    fold_dir = tmp_path / "run" / "shapes" / "fold0"
    last, best = load_checkpoint(fold_dir / "last.pt"), load_checkpoint(fold_dir / "best.pt")
    assert (last.stopped_by, last.finished, last.epoch, last.batches_done) == ("time_limit", False, 1, 1)
    assert best.epoch == best.best_epoch == 1 and (fold_dir / "oof.csv").is_file()
    assert {p.name for p in (fold_dir / "kept").iterdir()} == {"epoch1.pt"}
    assert predict.main(["--config", str(run), "--output", str(tmp_path / "sub.csv")]) == 0  # both folds' epoch 1
    assert len(pd.read_csv(tmp_path / "sub.csv")) == 9

    monkeypatch.undo()
    assert train.main(["--config", str(run), "--fold", "0", "--resume", "--set", "train.time_limit=null"]) == 0
    want = load_checkpoint(tmp_path / "outputs" / "shapes" / "fold0" / "last.pt")
    got = load_checkpoint(fold_dir / "last.pt")
    assert got.finished and got.stopped_by is None and got.history[-1]["metric"] == want.history[-1]["metric"]
    for key, tensor in want.model_state_dict.items():  # bit-identical to the run never stopped
        assert torch.equal(tensor, got.model_state_dict[key]), key

    # keep_top_k 1: the best epoch by score (then lower validation loss), as best.pt holds it; the other pruned
    summary = pd.read_csv(fold_dir / "summary.csv").sort_values(["metric", "val_loss"], ascending=[False, True])
    top = int(summary.epoch.iloc[0])
    assert [p.name for p in (fold_dir / "kept").iterdir()] == [f"epoch{top}.pt"]
    kept = torch.load(fold_dir / "kept" / f"epoch{top}.pt", weights_only=True)
    best = load_checkpoint(fold_dir / "best.pt")
    assert best.best_epoch == top and all(torch.equal(kept[k], v) for k, v in best.model_state_dict.items())


def test_keep_top_k_survives_averaging_which_prunes_the_rest(table_comp, tmp_path):
    _, root = table_comp
    cfg = table_config(tmp_path, root, train={"epochs": 4, "average": "top_k", "average_k": 3, "keep_top_k": 1})
    path = write_yaml(tmp_path / "avg.yaml", cfg)
    assert train.main(["--config", str(path), "--fold", "0"]) == 0
    fold_dir = tmp_path / "outputs" / "table" / "fold0"
    summary = pd.read_csv(fold_dir / "summary.csv").sort_values(["metric", "val_loss"], ascending=[False, True])
    assert [p.name for p in (fold_dir / "kept").iterdir()] == [f"epoch{summary.epoch.iloc[0]}.pt"]
    assert (fold_dir / "averaging.json").is_file()  # best.pt is the average of three; kept/ holds the best one


@pytest.mark.parametrize("key, value, said", [("time_limit", "5 minutes", "train.time_limit"),
                                              ("time_limit", 0, "train.time_limit"),
                                              ("keep_top_k", -1, "train.keep_top_k")])
def test_nonsense_time_limits_and_top_k_are_refused(table_comp, tmp_path, capsys, key, value, said):
    from conftest import refused

    _, root = table_comp
    path = write_yaml(tmp_path / "bad.yaml", table_config(tmp_path, root, train={key: value}))
    refused(capsys, train.main(["--config", str(path), "--fold", "0"]), said)
    assert not (tmp_path / "outputs").exists()


def test_a_time_limit_under_a_minute_is_said_as_given():
    from competition.core.durations import format_duration, parse_duration

    assert [format_duration(parse_duration(v, "x")) for v in ("0.3", "2.5s", "45", "20m", "2h")] == \
        ["0.3s", "2.5s", "45s", "20m00s", "2h00m"]
