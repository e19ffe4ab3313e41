"""A diverging fold stops in one line naming where, and saves nothing it computed after that."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import refused
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from competition import predict, train
from competition.models import estimator_module
from competition.training import fold
from competition.training.epoch import PROGRESS_EVERY, LossCheck, NonFiniteLoss, Optimization, train_one_epoch


def test_the_first_non_finite_loss_is_named_by_its_batch():
    x = torch.randn(20, 3)
    x[9] = float("nan")  # row 9: the third batch of four rows
    loader = DataLoader(TensorDataset(x, torch.zeros(20, dtype=torch.long)), batch_size=4)
    model = nn.Linear(3, 2)
    opt = Optimization(torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(NonFiniteLoss) as caught:
        train_one_epoch(model, loader, opt, torch.device("cpu"), loss_fn=nn.CrossEntropyLoss())
    assert (caught.value.batch, caught.value.of) == (2, 5) and math.isnan(caught.value.value)


def test_read_back_every_25_steps_as_on_a_gpu_the_first_bad_batch_is_still_named():
    check = LossCheck(torch.device("cpu"), 0, 40)
    check.every = PROGRESS_EVERY  # what a CUDA device gets: no host-device sync at each step
    for i in range(PROGRESS_EVERY - 1):
        check.add(i, torch.tensor(math.inf if i == 3 else (math.nan if i == 7 else 1.0)))  # nothing raised yet
    with pytest.raises(NonFiniteLoss) as caught:
        check.add(PROGRESS_EVERY - 1, torch.tensor(1.0))
    assert (caught.value.batch, caught.value.of, caught.value.value) == (3, 40, math.inf)


@pytest.mark.parametrize(("sets", "culprits"), [
    # lr 1e30: the weights overflow after the first step, and the loss of the second batch is nan.
    (["train.lr=1e30"], ["fold 0 diverged", "training loss is nan at epoch 1, batch 2 of 4", "train.lr (1e+30)"]),
    # lr 1e9: every training loss stays a (huge) number; the model's validation predictions do not.
    (["train.lr=1e9", "train.metric=log_loss"], ["fold 0 diverged", "validation predictions are nan at epoch 1"]),
])
def test_a_diverging_first_fold_leaves_no_run_behind(table_comp, tmp_path, capsys, sets, culprits):
    cfg, _ = table_comp
    code = train.main(["--config", str(cfg), *[a for s in sets for a in ("--set", s)]])
    refused(capsys, code, *culprits, "outputs/table was removed")
    assert not (tmp_path / "outputs" / "table").exists()  # no run.json, config.yaml, lock or tb/


def test_a_fold_diverging_later_keeps_only_its_finished_epochs(table_comp, tmp_path, capsys, monkeypatch):
    cfg, _ = table_comp
    run = tmp_path / "outputs" / "table"
    real = fold.train_one_epoch

    def second_epoch_of_fold_1_goes_nan(*args, desc, **kwargs):
        result = real(*args, desc=desc, **kwargs)
        if desc == "fold 1 epoch 2":
            raise NonFiniteLoss(1, 4, float("inf"))
        return result

    monkeypatch.setattr(fold, "train_one_epoch", second_epoch_of_fold_1_goes_nan)
    code = train.main(["--config", str(cfg)])
    refused(capsys, code, "fold 1 diverged", "training loss is inf at epoch 2, batch 2 of 4", "--overwrite")
    assert len(pd.read_csv(run / "fold0" / "summary.csv")) == 2  # the finished fold stays whole
    last = torch.load(run / "fold1" / "last.pt", weights_only=True)
    assert last["epoch"] == 1 and not last["finished"]  # the diverged epoch was not saved
    assert all(torch.isfinite(v).all() for v in last["model_state_dict"].values() if v.is_floating_point())
    assert (run / "run.json").is_file()

    # A checkpoint of NaN weights (an older kit's, or edited) is refused by predict too, naming its fold.
    best = torch.load(run / "fold0" / "best.pt", weights_only=True)
    best["model_state_dict"] = {k: v.fill_(math.nan) if v.is_floating_point() else v for k, v in best["model_state_dict"].items()}
    torch.save(best, run / "fold0" / "best.pt")
    refused(capsys, predict.main(["--config", str(cfg), "--folds", "0"]), "fold(s) 0 of", "non-finite probabilities",
            "validation rows")
    assert not (tmp_path / "submissions").exists()


def test_non_finite_probabilities_of_a_scikit_learn_fold_stop_it(table_comp, tmp_path, capsys, monkeypatch):
    cfg, _ = table_comp
    real = estimator_module.fit_on_fold

    def nan_probabilities(*args):
        module, probs = real(*args)
        return module, np.where(np.arange(len(probs))[:, None] == 3, np.nan, probs)

    monkeypatch.setattr(estimator_module, "fit_on_fold", nan_probabilities)
    code = train.main(["--config", str(cfg), "--set", "model.name=logreg", "--set", "train.metric=log_loss"])
    refused(capsys, code, "fold 0 diverged", "logreg predicts non-finite probabilities for 1 of 60 validation rows")
    assert not (tmp_path / "outputs" / "table").exists()
