"""Keeping what pretraining knows: the head fit exactly by logistic regression (train.head_fit
logreg), and best.pt as the fold's averaged (train.average) or interpolated (train.interpolate)
weights: what training scored is what predict gives, α = 0 is the stage-1 model, a greedy soup
never scores below its best member, nonsense is refused and resume stays exact."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from conftest import image_config, refused, write_yaml

from competition import predict, train
from competition.io.checkpoints import load_checkpoint
from competition.training import averaging
from competition.training.averaging import Combiner, _average, _interpolate, mix_states
from competition.training.head_fit import fit_logistic, pooled_features, write_head


def _scikit_learn_probs(info, features, multi_label):
    """The probabilities of the estimators fit_logistic fit, from scikit-learn itself."""
    x = (features - info["mean"]) / info["scale"]
    if multi_label:
        return np.stack([est.predict_proba(x)[:, 1] for _, est in info["estimators"]], 1)
    ((_, est),) = info["estimators"]
    return est.predict_proba(x)


@pytest.mark.parametrize("classes, multi_label", [(2, False), (3, True)])  # 3 softmax classes: the e2e test below
def test_the_fitted_head_gives_scikit_learns_probabilities_through_the_model(classes, multi_label):
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=classes).eval()
    x = torch.randn(60, 3, 32, 32)
    labels = torch.arange(60) % classes
    x[:, 0] += labels[:, None, None] * 1.5  # learnable from the features, not separable by accident
    targets = (torch.rand(60, classes) < 0.5).float() if multi_label else labels
    features, answers, _ = pooled_features(model, [(x[i:i + 20], targets[i:i + 20]) for i in range(0, 60, 20)],
                                           torch.device("cpu"))
    weight, bias, info = fit_logistic(features[:40], answers[:40], classes, multi_label)
    write_head(model, weight, bias)
    with torch.no_grad():
        logits = model(x[40:])
    got = torch.sigmoid(logits) if multi_label else torch.softmax(logits, 1)
    want = _scikit_learn_probs(info, features[40:], multi_label)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-4)
    assert len(info["C"]) == (classes if multi_label else 1)


def test_head_fit_views_add_each_training_row_as_the_view_sees_it():
    model = timm.create_model("test_resnet", num_classes=2).eval()
    x, y = torch.randn(6, 3, 32, 32), torch.arange(6) % 2
    features, answers, rows = pooled_features(model, [(x[:4], y[:4]), (x[4:], y[4:])], torch.device("cpu"),
                                              views=("hflip",))
    assert rows.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 4, 5]  # one row's views share a group in the inner CV
    assert answers.tolist() == [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    with torch.no_grad():
        flipped = model.forward_head(model.forward_features(x[:4].flip(-1)), pre_logits=True)
    np.testing.assert_allclose(features[4:8], flipped.numpy(), atol=1e-5)


def _run(tmp_path, root, out, **train_keys):
    cfg = image_config(tmp_path, root, train={"freeze_epochs": 1, "epochs": 2, "head_fit": "logreg", **train_keys},
                       predict={"tta": [], "batch_size": 16})
    cfg["output_dir"] = str(tmp_path / out)
    return write_yaml(tmp_path / f"{out}.yaml", cfg)


def test_logreg_head_soup_and_interpolation_predict_what_training_scored(image_comp, tmp_path):
    _, root = image_comp
    cfg = _run(tmp_path, root, "run", epochs=1, average="greedy_soup", interpolate="auto", freeze_bn=True)
    assert train.main(["--config", str(cfg), "--fold", "all"]) == 0
    assert predict.main(["--config", str(cfg), "--output", str(tmp_path / "sub.csv")]) == 0
    run_dir = tmp_path / "run" / "shapes"
    as_predicted = pd.read_csv(run_dir / "oof.csv").set_index("id")
    for fold in (0, 1):
        fold_dir = run_dir / f"fold{fold}"
        trained = pd.read_csv(fold_dir / "oof.csv").set_index("id")
        cols = [c for c in trained if c.startswith("prob_")]
        np.testing.assert_allclose(as_predicted.loc[trained.index, cols].to_numpy(), trained[cols].to_numpy(), atol=1e-6)
        record = json.loads((fold_dir / "averaging.json").read_text())
        history = {r["epoch"]: r["metric"] for r in load_checkpoint(fold_dir / "last.pt").history}
        soup = record["averaged"]
        assert soup["score"] >= max(history[e] for e in soup["members"])  # never below its best member
        assert record["interpolated"]["alpha_scores"]["0.0"] == history[record["stage1_epoch"]]  # α = 0: the stage-1 model
        best = load_checkpoint(fold_dir / "best.pt")
        assert best.metric == record["score"] == max(record["interpolated"]["alpha_scores"].values())
        assert not (fold_dir / "kept").exists()  # the kept weights go once best.pt is written


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _model_and_scorer():
    """test_resnet, and a scorer: accuracy and loss on fixed rows (what the fold's validation does)."""
    torch.manual_seed(1)
    model = timm.create_model("test_resnet", num_classes=3)
    x, y = torch.randn(24, 3, 32, 32), torch.arange(24) % 3

    def score(m):
        m.eval()
        with torch.no_grad():
            logits = m(x)
        return float((logits.argmax(1) == y).float().mean()), float(torch.nn.functional.cross_entropy(logits, y)), \
            torch.softmax(logits, 1).numpy()
    return model, score, lambda m: m.train()(x)  # BatchNorm statistics recomputed on the same rows


def test_alpha_zero_is_the_stage_1_model_exactly_even_when_batchnorm_statistics_differ():
    model, score, recompute = _model_and_scorer()
    first = _state(model)
    second = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in first.items()}
    assert not averaging.same_batchnorm([first, second])
    c = Combiner(model, score, recompute, higher_is_better=True)
    scored_second = c.evaluate(second, [second])
    for key, tensor in mix_states(first, second, 0.0).items():
        assert torch.equal(tensor, first[key]), key
    _, record = _interpolate(c, first, scored_second)
    model.load_state_dict(first)
    assert record["alpha_scores"]["0.0"] == score(model)[0]
    assert record["alpha_scores"]["1.0"] == scored_second.score


class _Kept:
    def __init__(self, states):
        self.states = states

    def load(self, epoch):
        return self.states[epoch]


def test_a_greedy_soup_never_scores_below_its_best_member_on_the_rows_it_was_chosen_on():
    model, score, recompute = _model_and_scorer()
    base, params = _state(model), {k for k, _ in model.named_parameters()}
    states, history = {}, []
    for epoch in range(1, 6):  # far apart: averaging them mostly hurts, so the soup has to refuse members
        states[epoch] = {k: v + 0.3 * torch.randn_like(v) if k in params else v for k, v in base.items()}
        model.load_state_dict(states[epoch])
        s, loss, _ = score(model)
        history.append({"epoch": epoch, "stage": 2, "metric": s, "val_loss": loss})
    c = Combiner(model, score, recompute, higher_is_better=True)
    t = type("T", (), {"average": "greedy_soup", "average_k": 5})()
    soup, record = _average(c, t, _Kept(states), history)
    assert soup.score >= max(r["metric"] for r in history)
    assert record["members"][0] == averaging._rank(history, True)[0]["epoch"]
    model.load_state_dict(soup.state)
    assert score(model)[0] == soup.score  # the soup's state is what scored (its BatchNorm statistics included)


@pytest.mark.parametrize("sets, culprit", [
    (["train.head_fit=closed_form"], "train.head_fit"),
    (["train.head_fit=logreg", "train.freeze_epochs=3"], "train.freeze_epochs"),
    (["train.average=mean"], "train.average"),
    (["train.average=top_k", "train.average_k=1"], "train.average_k"),
    (["train.average=greedy_soup", "train.freeze_epochs=0", "train.epochs=1"], "train.average"),
    (["train.interpolate=auto", "train.epochs=0"], "train.interpolate"),
    (["train.interpolate=always"], "train.interpolate"),
    (["train.head_fit_views=[hflip]"], "train.head_fit_views"),
    (["train.head_fit=logreg", "train.freeze_epochs=1", "train.head_fit_views=[mirror]"], "train.head_fit_views"),
])
def test_nonsense_keys_are_refused_in_one_line(image_comp, capsys, sets, culprit):
    cfg_path, _ = image_comp
    code = train.main(["--config", str(cfg_path), *[a for s in sets for a in ("--set", s)]])
    refused(capsys, code, culprit)


def test_a_table_has_no_backbone_to_fit_a_head_on_or_interpolate_from(table_comp, capsys):
    cfg_path, _ = table_comp
    refused(capsys, train.main(["--config", str(cfg_path), "--set", "train.head_fit=logreg", "--set",
                                "train.freeze_epochs=1"]), "train.head_fit", "backbone")
    refused(capsys, train.main(["--config", str(cfg_path), "--set", "train.interpolate=auto", "--set",
                                "train.freeze_epochs=1"]), "train.interpolate")


def test_resume_after_a_stop_mid_fold_and_before_the_combination_is_exact(image_comp, tmp_path, monkeypatch):
    """Stopped after stage 1 (its weights kept on disk), then again after the last epoch but before
    best.pt was combined (BatchNorm statistics recomputed there): --resume ends bit-identical to the
    run never stopped."""
    _, root = image_comp
    keys = {"epochs": 1, "average": "top_k", "average_k": 2, "interpolate": "auto", "freeze_bn": False}
    ref = _run(tmp_path, root, "ref", **keys)
    assert train.main(["--config", str(ref), "--fold", "0"]) == 0
    want = load_checkpoint(tmp_path / "ref" / "shapes" / "fold0" / "best.pt")
    cfg, fold_dir = _run(tmp_path, root, "run", **keys), tmp_path / "run" / "shapes" / "fold0"

    from competition.training import averaging
    from competition.training import fold as fold_module
    real_epoch, real_finish = fold_module.FoldRun._run_epoch, averaging.finish_fold

    def stop_after_epoch_1(self, stage, e, *args):
        stop = real_epoch(self, stage, e, *args)
        if e + 1 == 1:
            self.saver.wait()
            raise KeyboardInterrupt
        return stop

    def stop_before(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(fold_module.FoldRun, "_run_epoch", stop_after_epoch_1)
    assert train.main(["--config", str(cfg), "--fold", "0"]) == 130
    assert {p.name for p in (fold_dir / "kept").iterdir()} == {"epoch1.pt"}
    monkeypatch.setattr(fold_module.FoldRun, "_run_epoch", real_epoch)
    monkeypatch.setattr(averaging, "finish_fold", stop_before)
    assert train.main(["--config", str(cfg), "--fold", "0", "--resume"]) == 130
    assert not load_checkpoint(fold_dir / "last.pt").finished
    monkeypatch.setattr(averaging, "finish_fold", real_finish)
    assert train.main(["--config", str(cfg), "--fold", "0", "--resume"]) == 0
    got = load_checkpoint(fold_dir / "best.pt")
    assert got.metric == want.metric and load_checkpoint(fold_dir / "last.pt").finished
    for key, tensor in want.model_state_dict.items():
        assert torch.equal(tensor, got.model_state_dict[key]), key
    record = json.loads((fold_dir / "averaging.json").read_text())
    assert record == json.loads((tmp_path / "ref" / "shapes" / "fold0" / "averaging.json").read_text())
    assert record["batchnorm"].startswith("recomputed")


def test_the_disk_estimate_counts_the_weights_a_fold_keeps(image_comp):
    import dataclasses
    import io

    from competition.config import load_config
    from competition.tasks import open_competition
    from competition.training.disk_space import estimate_run_bytes

    cfg = load_config(str(image_comp[0]), [])
    task, comp = open_competition(cfg)
    model = task.check_model(cfg, len(comp.classes))
    assert estimate_run_bytes(cfg, task, comp, [0, 1], model).kept == 0
    soup = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, average="greedy_soup", average_k=3))
    estimate = estimate_run_bytes(soup, task, comp, [0, 1], model)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)  # one kept file, as KeptWeights writes it
    assert 4 * len(buffer.getvalue()) <= estimate.kept <= 4 * len(buffer.getvalue()) * 1.1  # 3 epochs + the one being replaced
    assert "kept weights" in estimate.describe()
