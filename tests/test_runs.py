"""A run is one config on one split: training, the CV and predict refuse to mix folds of another."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch
from conftest import refused

from competition import folds, predict, train
from competition.core.errors import CompetitionError
from competition.data.folder import read_csv
from competition.io.runs import HASH_COLUMNS, RunKey, RunRecord, frame_key, stamp


def test_a_fold_under_another_config_is_refused_naming_the_keys_until_overwrite(table_comp, tmp_path, capsys):
    cfg, _ = table_comp
    run = tmp_path / "outputs" / "table"
    assert train.main(["--config", str(cfg), "--fold", "all"]) == 0
    record = json.loads((run / "run.json").read_text())
    best = (run / "fold0" / "best.pt").read_bytes()
    state = torch.load(run / "fold0" / "best.pt", weights_only=True)
    assert (state["config_hash"], state["folds_hash"]) == (record["config_hash"], record["folds_hash"])
    oof = pd.read_csv(run / "fold0" / "oof.csv", dtype=str)
    assert set(oof["config_hash"]) == {record["config_hash"]} and set(oof["folds_hash"]) == {record["folds_hash"]}

    # The defect this guards against: one fold retrained under another config, mixed into the CV and predict.
    code = train.main(["--config", str(cfg), "--fold", "0", "--set", "train.epochs=1", "--set", "train.lr=0.02"])
    refused(capsys, code, str(run), "run.json was trained with train.epochs 2 and the config says 1",
            "with train.lr 0.01 and the config says 0.02", "--set name=table-2", "--overwrite")
    assert (run / "fold0" / "best.pt").read_bytes() == best
    assert json.loads((run / "run.json").read_text()) == record

    # Where files go and how fast they load is not the experiment: the run goes on.
    assert train.main(["--config", str(cfg), "--fold", "0", "--set", "predict.batch_size=7",
                       "--set", f"submission_dir={tmp_path / 'elsewhere'}"]) == 0

    assert train.main(["--config", str(cfg), "--fold", "0", "--set", "train.epochs=1", "--overwrite"]) == 0
    assert not (run / "fold1").exists()  # the old run's other fold went with it
    assert RunRecord.read(run).config["train"]["epochs"] == 1
    assert len(pd.read_csv(run / "fold0" / "summary.csv")) == 1


def test_predict_refuses_folds_of_two_configs(table_comp, tmp_path, capsys):
    cfg, _ = table_comp
    outputs = tmp_path / "outputs"
    assert train.main(["--config", str(cfg), "--fold", "all"]) == 0
    assert train.main(["--config", str(cfg), "--fold", "1", "--set", "name=other", "--set", "train.epochs=1"]) == 0
    capsys.readouterr()
    # Folds copied between runs by hand are the same mix the refusal at training prevents.
    shutil.rmtree(outputs / "table" / "fold1")
    shutil.copytree(outputs / "other" / "fold1", outputs / "table" / "fold1")
    refused(capsys, predict.main(["--config", str(cfg)]), "fold1/best.pt was trained with train.epochs 1 and",
            "fold0/best.pt says 2")
    assert not list((tmp_path / "submissions").glob("*.csv"))
    # The CV train reports pools the folds' oof.csv: those of two runs are refused too.
    refused(capsys, train.main(["--config", str(cfg), "--fold", "0"]), "fold1/oof.csv comes from another run")


def test_folds_regenerated_after_training_are_refused(table_comp, tmp_path, capsys):
    cfg, root = table_comp
    assert train.main(["--config", str(cfg), "--fold", "all"]) == 0
    before = pd.read_csv(root / "folds.csv")
    assert folds.main(["--config", str(cfg), "--force", "--set", "seed=99"]) == 0
    assert not pd.read_csv(root / "folds.csv").equals(before)
    capsys.readouterr()
    # Scored on the new folds, each model's validation rows would include rows it trained on.
    refused(capsys, predict.main(["--config", str(cfg)]), "fold0/best.pt was trained on other folds", "folds.csv")
    refused(capsys, train.main(["--config", str(cfg), "--fold", "0"]), "run.json was trained with folds ",
            "folds.csv says ", "--overwrite")


def test_a_predictions_file_names_its_run_even_when_the_digest_looks_like_a_number(tmp_path):
    path = tmp_path / "oof.csv"
    frame = pd.DataFrame({"id": [1, 2], "prob_a": [0.2, 0.7]})
    stamp(frame, RunKey("1234e5678901", "000000000012")).to_csv(path, index=False)
    read = read_csv(path, "predictions", HASH_COLUMNS)
    assert frame_key(read, path) == RunKey("1234e5678901", "000000000012")  # not 1.234e+5681 and 12
    assert frame_key(read.drop(columns=["folds_hash", "config_hash"]), path) is None  # written before stamps
    mixed = pd.concat([stamp(frame, RunKey("aaaaaaaaaaaa", "f")), stamp(frame, RunKey("bbbbbbbbbbbb", "f"))])
    with pytest.raises(CompetitionError, match="mixes the rows of 2 runs"):
        frame_key(mixed, path)


def test_predict_takes_a_runs_own_config_and_refuses_one_that_disagrees(table_comp, tmp_path, capsys):
    cfg, _ = table_comp
    sets = ["--set", "name=ll", "--set", "train.metric=log_loss", "--set", "train.epochs=1"]
    assert train.main(["--config", str(cfg), *sets]) == 0
    capsys.readouterr()
    # The defect: predict without train's --sets scored and wrote the submission in another metric.
    code = predict.main(["--config", str(cfg), "--set", "name=ll"])
    refused(capsys, code, "fold0/best.pt was trained with train.epochs 1 and the config says 2",
            "train.metric 'log_loss' and the config says 'accuracy'", "--run ll")
    code = predict.main(["--config", str(cfg), "--set", "name=ll", "--set", "model.name=logreg"])
    refused(capsys, code, "model.name 'mlp' and the config says 'logreg'", "--run ll")
    assert not (tmp_path / "submissions").exists()

    out = tmp_path / "sub.csv"
    assert predict.main(["--run", "ll", "--set", "predict.batch_size=7", "--output", str(out)]) == 0
    assert json.loads((tmp_path / "outputs" / "ll" / "cv.json").read_text())["metric"] == "log_loss"
    assert pd.read_csv(out)["target"].between(0, 1).all()  # log_loss: the positive class's probability
    assert predict.main(["--run", str(tmp_path / "outputs" / "ll"), "--no-cv", "--output", str(out)]) == 0  # its folder
    refused(capsys, predict.main(["--run", "nope"]), "--run nope", "outputs/nope/config.yaml not found",
            "runs under outputs: ll")
