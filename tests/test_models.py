"""Freeze → unfreeze: which parameters learn, BatchNorm statistics in stage 1, parameter groups, schedule."""
from __future__ import annotations

import copy

import pandas as pd
import pytest
import timm
import torch
from torch import nn
from torch.utils.data import DataLoader

from competition.config import load_config
from competition.core.errors import CompetitionError
from competition.data.batch_augment import BatchAugment
from competition.data.datasets import ImageDataset
from competition.data.targets import Target
from competition.data.transforms import build_train_transform
from competition.models.contract import ClassifierModel, data_config, feature_stages, head_of
from competition.models.summary import model_summary
from competition.tasks import TASKS, OneFitTask, TabularTask, build_model, task_of
from competition.training.epoch import Optimization, train_one_epoch
from competition.training.stages import (
    backbone_parameters,
    head_parameters,
    lr_factor,
    param_groups,
    set_stage,
    stage_schedule,
    train_mode,
)
from competition.training.trainers import TRAINERS

CLASSES = ["circle", "cross", "square"]

def _setup(image_comp, stage):
    cfg_path, root = image_comp
    cfg = load_config(str(cfg_path))
    torch.manual_seed(0)
    model = build_model(cfg, 3)
    prep = data_config(model, 32)
    train = pd.read_csv(root / "train.csv")
    ds = ImageDataset(train, root, build_train_transform(32, []), Target("single", CLASSES, "label").encode(train))
    set_stage(model, stage)
    opt = torch.optim.AdamW(param_groups(model, stage, 1e-2, 0.1, 0.0))
    return model, DataLoader(ds, batch_size=8), opt, BatchAugment(32, prep["mean"], prep["std"])


def _bn_stats(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k or "num_batches" in k}


def test_stage1_trains_the_head_only_and_keeps_batchnorm_statistics(image_comp):
    model, loader, opt, normalise = _setup(image_comp, stage=1)
    before = copy.deepcopy(model.state_dict())
    head_ids = {id(p) for p in head_parameters(model)}
    assert all(not p.requires_grad for p in backbone_parameters(model))
    assert all(p.requires_grad for p in head_parameters(model))
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["name"] == "head"

    train_mode(model, 1)
    assert model.training
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(not m.training for m in norms)
    train_one_epoch(model, loader, Optimization(opt), torch.device("cpu"), loss_fn=nn.CrossEntropyLoss(),
                    batch_transform=normalise)

    after = model.state_dict()
    for name, p in model.named_parameters():
        changed = not torch.equal(before[name], after[name])
        assert changed == (id(p) in head_ids), name
    for key, value in _bn_stats(model).items():
        assert torch.equal(before[key], value), f"{key} moved in stage 1"


def test_stage2_trains_everything_with_a_lower_backbone_rate(image_comp):
    model, loader, opt, normalise = _setup(image_comp, stage=2)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["backbone"]["lr"] == pytest.approx(1e-3) and groups["head"]["lr"] == pytest.approx(1e-2)
    n_params = sum(1 for _ in model.parameters())
    assert len(groups["backbone"]["params"]) + len(groups["head"]["params"]) == n_params
    before = copy.deepcopy(model.state_dict())
    train_mode(model, 2)
    train_one_epoch(model, loader, Optimization(opt), torch.device("cpu"), loss_fn=nn.CrossEntropyLoss(),
                    batch_transform=normalise)
    after = model.state_dict()
    assert all(not torch.equal(before[n], after[n]) for n, _ in model.named_parameters())
    assert any(not torch.equal(before[k], v) for k, v in _bn_stats(model).items())


def test_tabular_mlp_is_sized_from_the_feature_count():
    cfg = load_config("titanic")
    model = build_model(cfg, 2, in_features=17)
    assert model(torch.zeros(4, 17)).shape == (4, 2)
    assert model.get_classifier().out_features == 2


def test_the_mlp_and_a_timm_backbone_fulfil_one_model_contract():
    """Freezing and parameter groups (the head), the preprocessing each checkpoint stores and
    Grad-CAM's stage read every model trained in epochs through models/contract.py."""
    mlp = build_model(load_config("titanic"), 2, in_features=5)
    backbone = build_model(load_config("digits", ["model.name=test_resnet"]), 10)
    assert isinstance(mlp, ClassifierModel) and isinstance(backbone, ClassifierModel)
    assert head_of(mlp) is mlp.head and head_parameters(mlp) == list(mlp.head.parameters())
    assert head_of(backbone) is backbone.fc
    assert data_config(mlp, 32) == {} and feature_stages(mlp) == []  # table features: no picture, no map
    prep = data_config(backbone, 32)
    assert prep["size"] == 32 and len(prep["mean"]) == len(prep["std"]) == 3 and prep["interpolation"]
    assert [s["module"] for s in feature_stages(backbone)][-1] == "layer4"


def test_each_table_model_runs_as_its_family_s_task_with_its_own_fold_trainer():
    mlp, logreg, gbdt = (task_of(load_config("titanic", [f"model.name={n}"])) for n in ("mlp", "logreg", "lightgbm"))
    assert type(mlp) is TabularTask and mlp.trainer == "epochs"
    assert isinstance(logreg, OneFitTask) and isinstance(gbdt, OneFitTask) and logreg.trainer == gbdt.trainer == "once"
    assert "logreg" in logreg.family.names and "lightgbm" in gbdt.family.names
    assert {t.trainer for t in (mlp, logreg, *TASKS.values())} <= set(TRAINERS)
    with pytest.raises(CompetitionError, match=r"model\.name: 'tabnet' is not a tabular model \(mlp, logreg, .*lightgbm"):
        build_model(load_config("titanic", ["model.name=tabnet"]), 2, in_features=5)


def test_unknown_timm_model_is_a_config_error():
    cfg = load_config("digits", ["model.name=resnet_does_not_exist"])
    with pytest.raises(CompetitionError, match=r"model\.name: 'resnet_does_not_exist' is not a timm model"):
        build_model(cfg, 10)


def test_schedule_warms_up_then_decays():
    total, warmup = 100, 10
    values = [lr_factor(s, total, warmup) for s in range(total)]
    assert values[0] < values[5] < values[9] <= 1.0
    assert all(a >= b for a, b in zip(values[10:], values[11:], strict=False))
    assert values[-1] == pytest.approx(0.05, abs=0.01)


def test_each_group_follows_the_schedule_and_a_resumed_stage_continues_it():
    def groups():
        return [{"name": "backbone", "params": [nn.Parameter(torch.zeros(2))], "lr": 1e-4},
                {"name": "head", "params": [nn.Parameter(torch.zeros(2))], "lr": 5e-3}]

    opt = torch.optim.AdamW(groups())
    sched = stage_schedule(opt, total_steps=30, warmup_steps=5)
    seen = []
    for step in range(30):
        seen.append([g["lr"] for g in opt.param_groups])
        if step == 11:
            saved = copy.deepcopy(opt.state_dict())
        opt.step()
        sched.step()
    # Each group at its own rate × the same factor: the backbone stays a fiftieth of the head.
    for step, (backbone, head) in enumerate(seen):
        assert head == pytest.approx(5e-3 * lr_factor(step, 30, 5)) and backbone == pytest.approx(head / 50)
    # A stage resumed after 12 steps, from the optimizer's saved state alone, goes on identically.
    resumed = torch.optim.AdamW(groups())
    resumed.load_state_dict(saved)
    sched = stage_schedule(resumed, total_steps=30, warmup_steps=5, done=12)
    for step in range(12, 30):
        assert [g["lr"] for g in resumed.param_groups] == seen[step]
        resumed.step()
        sched.step()


def test_stage2_with_freeze_bn_learns_every_layer_but_keeps_batchnorm_statistics(image_comp):
    model, loader, opt, normalise = _setup(image_comp, stage=2)
    before = copy.deepcopy(model.state_dict())
    train_mode(model, 2, freeze_bn=True)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert model.training and norms and all(not m.training for m in norms)
    train_one_epoch(model, loader, Optimization(opt), torch.device("cpu"), loss_fn=nn.CrossEntropyLoss(),
                    batch_transform=normalise)
    after = model.state_dict()
    assert all(not torch.equal(before[n], after[n]) for n, _ in model.named_parameters())
    for key, value in _bn_stats(model).items():
        assert torch.equal(before[key], value), f"{key} moved with freeze_bn"


def test_freeze_bn_is_refused_for_a_tabular_mlp(table_comp):
    cfg_path, _ = table_comp
    with pytest.raises(CompetitionError, match="train.freeze_bn"):
        load_config(str(cfg_path), ["train.freeze_bn=true"])


def test_stage_summary_lists_parameters_input_and_frozen_layers():
    model = timm.create_model("test_resnet", num_classes=3)
    set_stage(model, 1)
    head = sum(p.numel() for p in model.get_classifier().parameters())
    line = model_summary(model, {"size": 32})
    assert line.startswith("test_resnet: ") and f"{head} trainable" in line and "input 3×32×32" in line
    assert "frozen: conv1, bn1, layer1, layer2, layer3, layer4" in line and "fc" not in line.split("frozen:")[1]
    set_stage(model, 2)
    assert model_summary(model, {"size": 32}).endswith("nothing frozen")
