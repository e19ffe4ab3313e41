"""A logreg head that keeps what the pretrained classifier knows (train.head_fit_inputs,
train.head_fit_prior): fit on the pretrained logits or towards the pretrained classes that match,
folded exactly into the new head, so the model gives the fit's own probabilities; nonsense and
weights without a classifier are refused in one line."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import safetensors.torch
import timm
import torch
from conftest import image_config, refused, write_yaml

from competition import predict, train
from competition.io.checkpoints import load_checkpoint
from competition.training import head_fit
from competition.training.head_fit import fit_pretrained, pooled_features, write_head
from competition.training.head_prior import label_map


def _rows(multi_label: bool, classes: int = 3):
    """A pretrained test_resnet with a 50-class head, and its pooled features of 60 learnable rows."""
    torch.manual_seed(0)
    pretrained = timm.create_model("test_resnet", num_classes=50).eval()
    x, labels = torch.randn(60, 3, 32, 32), torch.arange(60) % classes
    x[:, 0] += labels[:, None, None] * 1.5
    targets = (torch.rand(60, classes) < 0.5).float() if multi_label else labels
    features, answers, _ = pooled_features(pretrained, [(x[i:i + 20], targets[i:i + 20]) for i in range(0, 60, 20)],
                                           torch.device("cpu"))
    head = pretrained.get_classifier()
    return pretrained, x, features, answers, (head.weight.detach().double().numpy(), head.bias.detach().double().numpy())


@pytest.mark.parametrize("inputs, prior, multi_label", [
    ("pretrained_logits", "none", False), ("both", "none", True), ("features", "label_map", False),
    ("pretrained_logits", "label_map", True),
])
def test_the_folded_head_gives_the_fits_own_probabilities_through_the_model(inputs, prior, multi_label, monkeypatch):
    pretrained, x, features, answers, head = _rows(multi_label)
    monkeypatch.setattr(head_fit, "C_GRID", np.array([0.01, 1.0]))  # the fold is exact at any C: fewer to try
    weight, bias, info = fit_pretrained(features[:40], answers[:40], 3, multi_label, head, inputs, prior)
    pretrained.reset_classifier(3)
    write_head(pretrained, weight, bias)
    with torch.no_grad():
        logits = pretrained(x[40:])
    got = torch.sigmoid(logits) if multi_label else torch.softmax(logits, 1)
    np.testing.assert_allclose(got.numpy(), info["probs_of"](features[40:]), atol=1e-4)


def test_label_map_gives_each_class_the_pretrained_class_its_rows_score_highest_once():
    rng = np.random.default_rng(0)
    logits, y = rng.normal(size=(30, 20)), np.arange(30) % 3
    logits[y == 0, 7] += 5
    logits[y == 1, 3] += 5
    logits[y == 2, 7] += 4  # class 2 likes 7 best too, but class 0 likes it more: 2 gets its next best
    logits[y == 2, 11] += 3.5
    assert label_map(logits, y, 4, multi_label=False).tolist() == [7, 3, 11, -1]  # class 3: no rows


def test_under_the_strongest_penalty_the_head_is_the_matched_pretrained_rows(monkeypatch):
    _, _, features, answers, (w, b) = _rows(False)
    monkeypatch.setattr(head_fit, "C_GRID", np.array([1e-9]))
    weight, _, info = fit_pretrained(features, answers, 3, False, (w, b), "features", "label_map")
    mapped = info["label_map"]
    assert len(set(mapped)) == 3
    np.testing.assert_allclose(weight, w[mapped], atol=1e-5)  # only each class's bias moved


def _weights_file(tmp_path, num_classes: int = 1000):
    torch.manual_seed(5)
    path = tmp_path / "pretrained.safetensors"
    safetensors.torch.save_file(timm.create_model("test_resnet", num_classes=num_classes).state_dict(), str(path))
    return path


def test_a_head_fit_towards_the_pretrained_classes_predicts_what_training_scored(image_comp, tmp_path, caplog):
    _, root = image_comp
    cfg = image_config(tmp_path, root, model={"name": "test_resnet", "pretrained_file": str(_weights_file(tmp_path))},
                       train={"freeze_epochs": 1, "epochs": 0, "head_fit": "logreg", "head_fit_prior": "label_map",
                              "head_fit_inputs": "both"}, predict={"tta": [], "batch_size": 16})
    path = write_yaml(tmp_path / "run.yaml", cfg)
    with caplog.at_level("INFO"):
        assert train.main(["--config", str(path), "--fold", "0"]) == 0
    assert "towards pretrained classes" in caplog.text
    fold_dir = tmp_path / "outputs" / "shapes" / "fold0"
    best = load_checkpoint(fold_dir / "best.pt")  # torch.load(weights_only=True)
    assert set(best.model_state_dict) == set(timm.create_model("test_resnet", num_classes=3).state_dict())
    assert predict.main(["--config", str(path), "--fold", "0", "--output", str(tmp_path / "sub.csv")]) == 0
    trained = pd.read_csv(fold_dir / "oof.csv").set_index("id")
    predicted = pd.read_csv(tmp_path / "outputs" / "shapes" / "oof.csv").set_index("id").loc[trained.index]
    cols = [c for c in trained if c.startswith("prob_")]
    np.testing.assert_allclose(predicted[cols].to_numpy(), trained[cols].to_numpy(), atol=1e-6)


LOGREG = ["train.head_fit=logreg", "train.freeze_epochs=1"]


@pytest.mark.parametrize("sets, culprits", [
    (["train.head_fit_inputs=logits"], ["train.head_fit_inputs"]),
    (["train.head_fit_prior=imagenet"], ["train.head_fit_prior"]),
    (["train.head_fit_prior=label_map"], ["train.head_fit_prior", "sgd"]),
    ([*LOGREG, "train.head_fit_inputs=both"], ["train.head_fit_inputs", "no pretrained weights"]),
])
def test_nonsense_is_refused_in_one_line(image_comp, capsys, sets, culprits):
    cfg_path, _ = image_comp
    refused(capsys, train.main(["--config", str(cfg_path), *[a for s in sets for a in ("--set", s)]]), *culprits)


@pytest.mark.parametrize("num_classes, culprit", [(0, "fc.weight"), (1000, "model.init_from")])
def test_weights_without_a_classifier_or_a_warm_start_are_refused_in_one_line(image_comp, tmp_path, capsys,
                                                                              num_classes, culprit):
    cfg_path, _ = image_comp
    sets = [*LOGREG, "train.head_fit_prior=label_map", f"model.pretrained_file={_weights_file(tmp_path, num_classes)}"]
    if num_classes:
        sets.append("model.init_from=earlier")
    code = train.main(["--config", str(cfg_path), *[a for s in sets for a in ("--set", s)]])
    refused(capsys, code, "train.head_fit_prior", culprit)
    assert not (tmp_path / "outputs").exists()  # refused before anything was written
