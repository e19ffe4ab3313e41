"""Grad-CAM: the maps point where the class evidence is; `explain` writes each fold's grids and
TensorBoard images; models without a 2-D feature map are refused in one line, writing nothing.
(The training run it explains also shows the model summary of each stage.)"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from conftest import refused, table_config, write_yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from competition import explain, train
from competition.config import load_config
from competition.core.errors import CompetitionError
from competition.inference.gradcam import grad_cam, pick_rows, target_stage
from competition.inference.report import pooled_oof
from competition.tasks import open_competition


class RedDetector(nn.Module):
    """Class 0 is "red", class 1 "blue": a 1×1 convolution reads those channels, the head averages
    them. The evidence of class 0 sits exactly where the red is, so its map must peak there."""

    def __init__(self):
        super().__init__()
        self.stage = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.stage.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])[:, :, None, None])
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(2))
        self.feature_info = [{"module": "stage", "num_chs": 2, "reduction": 1}]

    def forward(self, x):
        return self.head(self.stage(x).mean((2, 3)))


def test_the_map_of_a_class_peaks_on_its_evidence():
    x = torch.zeros(2, 3, 16, 16)
    x[0, 0, 1:5, 10:14] = 1.0  # red in the top right corner
    x[1, 0, 11:15, 2:6] = 1.0  # red in the bottom left corner
    cams = grad_cam(RedDetector(), "red", x, [0, 0], ("stage", 2))
    assert cams.shape == (2, 16, 16) and cams.max() == 1.0
    assert cams[0, 1:5, 10:14].min() > 0.9 and cams[0, 8:, :8].max() < 0.1
    assert cams[1, 11:15, 2:6].min() > 0.9 and cams[1, :8, 8:].max() < 0.1


def test_a_small_input_uses_the_deepest_stage_that_still_has_a_grid():
    model = timm.create_model("resnet18", num_classes=3)
    assert target_stage(model, "resnet18", 224) == ("layer4", 512)  # 7×7
    assert target_stage(model, "resnet18", 32) == ("layer2", 128)  # layer4 would be 1×1


def test_explain_writes_each_folds_grids_and_tensorboard(image_comp, tmp_path, capsys, caplog):
    cfg, _ = image_comp
    with caplog.at_level(logging.INFO, logger="competition.training.fold"):
        assert train.main(["--config", str(cfg), "--fold", "all"]) == 0
    stages = [r.getMessage() for r in caplog.records if " stage " in r.getMessage() and "test_resnet:" in r.getMessage()]
    assert len(stages) == 4 and "frozen: conv1" in stages[0] and stages[1].endswith("nothing frozen")
    capsys.readouterr()

    assert explain.main(["--config", str(cfg), "--n", "3"]) == 0
    printed = capsys.readouterr().out
    for k in (0, 1):
        fold_dir = tmp_path / "outputs" / "shapes" / f"fold{k}"
        grids = sorted(p.name for p in (fold_dir / "explain").iterdir())
        assert grids and set(grids) <= {"mistakes.png", "correct.png"}
        assert not list((fold_dir / "explain").glob(".*.tmp"))
        for name in grids:
            pixels = np.asarray(Image.open(fold_dir / "explain" / name).convert("RGB"))
            assert pixels.shape[0] > 100 and pixels.std() > 10  # a drawn grid, not an empty canvas
        events = EventAccumulator(str(fold_dir / "tb"), size_guidance={"images": 0})
        events.Reload()
        assert {f"explain/gradcam_{n.removesuffix('.png')}" for n in grids} <= set(events.Tags()["images"])
        assert f"fold {k}: Grad-CAM of epoch" in printed and "at layer2" in printed


def test_models_without_a_spatial_map_are_refused_in_one_line(image_comp, table_comp, tmp_path, capsys):
    cfg, _ = image_comp
    vit = ["--config", str(cfg), "--fold", "0", "--set", "model.name=test_vit", "--set", "train.freeze_epochs=0"]
    assert train.main(vit) == 0
    capsys.readouterr()
    assert explain.main(vit) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Grad-CAM needs a 2-D feature map: model 'test_vit'") and "\n" not in err
    assert explain.main(["--run", "shapes", "--fold", "0"]) == 2  # the run's own config: test_vit, no --set repeated
    assert "model 'test_vit'" in capsys.readouterr().err
    assert not (tmp_path / "outputs" / "shapes" / "fold0" / "explain").exists()

    table_cfg, table_root = table_comp
    table = write_yaml(tmp_path / "t.yaml", table_config(tmp_path, table_root, train={"epochs": 1}))
    assert train.main(["--config", str(table), "--fold", "0"]) == 0
    capsys.readouterr()
    assert explain.main(["--config", str(table), "--fold", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: Grad-CAM draws maps over images: model 'mlp' reads table features, which have no spatial feature map"


def test_mistakes_are_those_of_the_submission_thresholds():
    # Binary F1 decides at a threshold fit on the out-of-fold rows: at 0.3, a positive scored 0.4 is
    # right in the file, so Grad-CAM must not show it as a mistake (as 0.5 would).
    y = np.array([1, 0, 1, 0])
    probs = np.array([[0.6, 0.4], [0.9, 0.1], [0.1, 0.9], [0.8, 0.2]])
    at_half = pick_rows(y, probs, ["no", "yes"], False, 4, 0)
    at_file = pick_rows(y, probs, ["no", "yes"], False, 4, 0, thresholds=[0.3])
    assert list(at_half["mistakes"][0]) == [0]
    assert list(at_file["mistakes"][0]) == [] and 0 in at_file["correct"][0]


def test_an_oof_row_train_csv_no_longer_holds_is_refused(trained_image_comp, capsys):
    cfg, root = trained_image_comp  # train.epochs is 1 there
    oof_path = cfg.parent / "outputs" / "shapes" / "fold0" / "oof.csv"
    train_csv = pd.read_csv(root / "train.csv")
    gone = str(pd.read_csv(oof_path)["id"].iloc[0])
    train_csv[train_csv["id"].astype(str) != gone].to_csv(root / "train.csv", index=False)
    capsys.readouterr()
    line = refused(capsys, explain.main(["--config", str(cfg), "--fold", "0", "--set", "train.epochs=1"]),
                   str(oof_path), repr(gone), "train.csv changed since training")
    assert line.endswith("retrain the fold")
    # The report's mistakes read the same rows: refused alike, never another row's picture.
    config = load_config(str(cfg), ["train.epochs=1"])
    _, comp = open_competition(config)
    with pytest.raises(CompetitionError, match="train.csv changed since training"):
        pooled_oof(config, comp, [0])
