"""The competitor's toolbox: Mixup/CutMix, EMA, accumulation and clipping, imbalance (samplers,
class weights, focal), drop path and layer decay — each through the CLI, each refusing nonsense."""
from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from conftest import image_config, kill_training, make_table_competition, table_config, write_yaml
from torch import nn

from competition import predict, train
from competition.core.distributed import SeededSampler
from competition.core.schema import TrainConfig
from competition.io.checkpoints import load_checkpoint
from competition.training.imbalance import class_weights, sampler_weights
from competition.training.losses import FocalLoss
from competition.training.mixing import BatchMix
from competition.training.stages import param_groups, set_stage

REPO = Path(__file__).resolve().parents[1]
TOOLS = {"mixup_alpha": 0.4, "cutmix_alpha": 1.0, "mix_off_epochs": 1, "ema_decay": 0.9, "accum_steps": 2,
         "clip_grad_norm": 1.0, "sampler": "balanced", "class_weights": "balanced", "loss": "focal"}


@pytest.mark.slow
def test_every_tool_at_once_trains_predicts_and_scores_the_ema(image_comp, tmp_path, capsys, caplog):
    _, root = image_comp
    cfg = write_yaml(tmp_path / "tools.yaml", image_config(
        tmp_path, root, train={**TOOLS, "epochs": 2, "layer_decay": 0.8},
        model={"name": "test_resnet", "drop_path_rate": 0.1}))
    with caplog.at_level("INFO"):
        assert train.main(["--config", str(cfg), "--fold", "0"]) == 0
    assert "(EMA)" in caplog.text
    best = load_checkpoint(tmp_path / "outputs" / "shapes" / "fold0" / "best.pt")
    assert best.scored == "ema" and best.train_state_dict is not None
    # best.pt's weights are the EMA's, not the raw weights the optimizer stepped.
    assert any(not torch.equal(best.model_state_dict[k], best.train_state_dict[k]) for k in best.model_state_dict)
    # Layer decay: stage 2 learns in several backbone groups, each slower than the one above it.
    lrs = [v for k, v in best.history[-1].items() if k.startswith("lr_backbone")]
    assert len(lrs) > 2 and lrs == sorted(lrs)
    assert predict.main(["--config", str(cfg), "--folds", "0", "--output", str(tmp_path / "sub.csv")]) == 0


@pytest.mark.slow
def test_kill_and_resume_is_bit_identical_with_mixup_ema_accumulation_and_a_balanced_sampler(image_comp, tmp_path,
                                                                                            zygote):
    _, root = image_comp
    tools = {**TOOLS, "loss": "cross_entropy", "epochs": 3, "freeze_epochs": 1, "warmup_epochs": 0.5}
    configs = {}
    for out in ("ref", "run"):
        cfg = image_config(tmp_path, root, train=tools, image={"size": 40, "augment": ["hflip", "affine"]})
        cfg["output_dir"] = str(tmp_path / out)
        configs[out] = write_yaml(tmp_path / f"{out}.yaml", cfg)
    assert train.main(["--config", str(configs["ref"]), "--fold", "0"]) == 0
    ref = load_checkpoint(tmp_path / "ref" / "shapes" / "fold0" / "best.pt")

    fold_dir = tmp_path / "run" / "shapes" / "fold0"
    # Killed after the first optimizer step of epoch 4 (2 steps an epoch: 3 batches of 8 of fold 0's
    # 18 rows, 2 batches a step): inside stage 2 (epochs 2-4), last.pt at epoch 3 or, while its files
    # are still being written, 2.
    code, killed_after, err = kill_training(zygote, configs["run"], fold_dir, after_step=3 * 2 + 1)
    assert code == -signal.SIGKILL and killed_after in (2, 3), f"not killed in stage 2: exit {code} after " \
                                                               f"{killed_after} epochs\n{err}"
    assert train.main(["--config", str(configs["run"]), "--fold", "0", "--resume"]) == 0
    got = load_checkpoint(fold_dir / "best.pt")
    assert (got.epoch, got.metric) == (ref.epoch, ref.metric)
    for name in ("model_state_dict", "train_state_dict"):
        for key, tensor in getattr(ref, name).items():
            assert torch.equal(tensor, getattr(got, name)[key]), f"{name}[{key}]"


def test_accumulating_two_batches_of_32_steps_like_one_batch_of_64(table_comp, tmp_path):
    # A model without BatchNorm (a linear layer) and no dropout: the gradients must be the same.
    _, root = table_comp
    weights = {}
    for name, batch, accum in (("big", 64, 1), ("accum", 32, 2)):
        cfg = table_config(tmp_path, root, name=name, model={"name": "mlp", "hidden_sizes": [], "drop_rate": 0.0},
                           train={"batch_size": batch, "accum_steps": accum, "epochs": 3, "patience": 0})
        assert train.main(["--config", str(write_yaml(tmp_path / f"{name}.yaml", cfg)), "--fold", "0"]) == 0
        weights[name] = load_checkpoint(tmp_path / "outputs" / name / "fold0" / "last.pt").model_state_dict
    for key, tensor in weights["big"].items():
        torch.testing.assert_close(weights["accum"][key], tensor, rtol=1e-5, atol=1e-6)
    # And it is not a test that cannot fail: one batch of 32 per step does move differently.
    cfg = table_config(tmp_path, root, name="small", model={"name": "mlp", "hidden_sizes": [], "drop_rate": 0.0},
                       train={"batch_size": 32, "epochs": 3, "patience": 0})
    assert train.main(["--config", str(write_yaml(tmp_path / "small.yaml", cfg)), "--fold", "0"]) == 0
    small = load_checkpoint(tmp_path / "outputs" / "small" / "fold0" / "last.pt").model_state_dict
    assert not torch.allclose(small["head.weight"], weights["big"]["head.weight"], atol=1e-4)


@pytest.mark.parametrize(("key", "value", "culprit"), [
    ("train.mixup_alpha", -1, "must be in [0, 100]"),
    ("train.mix_prob", 1.5, "must be in [0, 1]"),
    ("train.ema_decay", 1.0, "must be in [0, 1)"),
    ("train.accum_steps", 0, "at least 1"),
    ("train.sampler", "oversample", "is not one of shuffle, balanced, sqrt"),
    ("train.class_weights", "inverse", "is not one of none, balanced"),
    ("train.loss", "huber", "is not one of cross_entropy, focal"),
    ("train.layer_decay", 2, "must be in [0, 1]"),
    ("train.mix_off_epochs", 2, "nothing mixes"),
    ("model.drop_path_rate", 1.0, "must be in [0, 1)"),
])
def test_nonsense_values_are_refused_in_one_line(image_comp, tmp_path, capsys, key, value, culprit):
    cfg, _ = image_comp
    assert train.main(["--config", str(cfg), "--set", f"{key}={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err and culprit in err, err
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(("sets", "culprit"), [
    (["train.cutmix_alpha=1.0"], "train.cutmix_alpha: applies to image backbones"),
    (["train.layer_decay=0.7"], "train.layer_decay: applies to image backbones"),
    (["data.target_format=multi_label", "train.metric=log_loss", "folds.strategy=kfold",
      "train.sampler=balanced"], "train.sampler: balanced draws rows by their one class"),
])
def test_tools_that_do_not_fit_the_task_are_refused(table_comp, capsys, sets, culprit):
    cfg, _ = table_comp
    assert train.main(["--config", str(cfg), *[a for s in sets for a in ("--set", s)]]) == 2
    assert culprit in capsys.readouterr().err


def test_a_backbone_without_stochastic_depth_is_named(image_comp, capsys):
    cfg, _ = image_comp
    assert train.main(["--config", str(cfg), "--set", "model.name=vgg11", "--set", "model.drop_path_rate=0.1"]) == 2
    assert "model.drop_path_rate: vgg11 has no stochastic depth" in capsys.readouterr().err


# --- the pieces ----------------------------------------------------------------------------


def test_the_balanced_sampler_draws_classes_evenly_and_repeats_per_seed():
    labels = np.array([0] * 90 + [1] * 10)
    sampler = SeededSampler(100, seed=5, weights=sampler_weights("balanced", labels))
    drawn = [labels[i] for epoch in range(20) for i, _ in (sampler.set_epoch(epoch) or sampler)]
    assert 0.45 < np.mean(drawn) < 0.55  # a tenth of the rows, half of the draws
    sampler.set_epoch(3)
    first = list(sampler)
    assert list(sampler) == first
    sampler.set_epoch(4)
    assert list(sampler) != first
    sqrt = sampler_weights("sqrt", labels)
    assert sqrt[95] / sqrt[0] == pytest.approx(3.0)  # √(90/10)
    assert sampler_weights("shuffle", labels) is None


def test_balanced_class_weights_are_scikit_learns():
    y = np.array([0, 0, 0, 1, 2, 2])
    np.testing.assert_allclose(class_weights("balanced", y, 3, False).numpy(), [6 / 9, 6 / 3, 6 / 6], rtol=1e-6)
    soft = np.eye(3, dtype=np.float32)[y] * 0.8 + 0.2 / 3  # pseudo-label rows count for their likeliest class
    np.testing.assert_allclose(class_weights("balanced", soft, 3, False).numpy(), [6 / 9, 6 / 3, 6 / 6], rtol=1e-6)
    multi = np.array([[1, 0], [1, 0], [1, 1], [0, 0]], dtype=np.float32)
    np.testing.assert_allclose(class_weights("balanced", multi, 2, True).numpy(), [1 / 3, 3.0], rtol=1e-6)


def test_focal_loss_is_cross_entropy_at_gamma_0_and_spares_the_easy_rows():
    logits = torch.tensor([[4.0, 0.0], [0.2, 0.0]])
    y = torch.tensor([0, 0])
    torch.testing.assert_close(FocalLoss(0.0)(logits, y), nn.functional.cross_entropy(logits, y))
    per_row = [FocalLoss(2.0)(logits[i:i + 1], y[i:i + 1]) / nn.functional.cross_entropy(logits[i:i + 1], y[i:i + 1])
               for i in range(2)]
    assert per_row[0] < 0.01 < 0.2 < per_row[1]  # the confident row all but vanishes


def test_mixing_repeats_per_seed_softens_targets_and_stops_when_told():
    mix = BatchMix(TrainConfig(mixup_alpha=1.0, label_smoothing=0.1), num_classes=3, multi_label=False)
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    mix.start_epoch(seed=11, mixing=True)
    xa, ya = mix(x.clone(), y)
    mix.start_epoch(seed=11, mixing=True)
    xb, yb = mix(x.clone(), y)
    assert torch.equal(xa, xb) and torch.equal(ya, yb) and not torch.equal(xa, x)
    torch.testing.assert_close(ya.sum(1), torch.ones(4))
    mix.start_epoch(seed=11, mixing=False)
    xc, yc = mix(x.clone(), y)
    assert torch.equal(xc, x) and yc[0].tolist() == pytest.approx([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3])
    mix.start_epoch(seed=11, mixing=True)
    assert torch.equal(mix(x[:3].clone(), y[:3])[0], x[:3])  # an odd batch cannot pair with its reverse


def test_layer_decay_slows_the_lower_layers_and_keeps_the_head_at_lr():
    model = timm.create_model("test_resnet", num_classes=3)
    set_stage(model, 2)
    groups = param_groups(model, 2, lr=1e-3, backbone_lr_mult=0.5, weight_decay=0.01, layer_decay=0.5)
    head = [g for g in groups if g["name"] == "head"]
    assert len(head) == 1 and head[0]["lr"] == 1e-3
    backbone = [g["lr"] for g in groups if g["name"] != "head"]
    assert max(backbone) <= 0.5e-3 and min(backbone) < max(backbone) / 4
    params = sum(len(g["params"]) for g in groups)
    assert params == len(list(model.parameters()))  # every parameter in exactly one group


# --- non-square inputs -----------------------------------------------------------------------


@pytest.mark.parametrize("device_augment", ["off", "on"])
def test_non_square_images_train_and_predict_through_both_augmentation_paths(image_comp, tmp_path, device_augment):
    from competition.data.batch_augment import BatchAugment
    from competition.data.transforms import build_eval_transform, build_train_transform

    _, root = image_comp
    augment = ["random_resized_crop", "hflip"] if device_augment == "on" else ["random_resized_crop", "hflip", "affine"]
    cfg = write_yaml(tmp_path / "wide.yaml", image_config(
        tmp_path, root, image={"size": [24, 40], "augment": augment},
        train={"cache": "auto", "device_augment": device_augment}, predict={"tta": ["hflip", "vflip", "rot180"]}))
    assert train.main(["--config", str(cfg), "--fold", "0"]) == 0
    caches = sorted(p.stat().st_size for p in (tmp_path / "outputs" / "cache").glob("images-24x40-*.u8"))
    rows = [len(pd.read_csv(root / name)) for name in ("test.csv", "train.csv")]
    assert caches == [n * 24 * 40 * 3 for n in rows]  # test and train rows of height 24, width 40
    assert load_checkpoint(tmp_path / "outputs" / "shapes" / "fold0" / "best.pt").preprocessing["size"] == [24, 40]
    assert predict.main(["--config", str(cfg), "--folds", "0", "--output", str(tmp_path / "sub.csv")]) == 0
    image = np.zeros((60, 80, 3), np.uint8)
    assert build_train_transform([24, 40], augment)(image=image)["image"].shape == (24, 40, 3)
    assert build_eval_transform([24, 40])(image=image)["image"].shape == (24, 40, 3)
    batch = torch.zeros(2, 30, 50, 3, dtype=torch.uint8)
    assert BatchAugment([24, 40], (0.5,) * 3, (0.5,) * 3, ["random_resized_crop"], train=True)(batch, [1, 2]).shape == (2, 3, 24, 40)


@pytest.mark.parametrize(("sets", "culprit"), [
    (["image.size=[24, 40]", "predict.tta=[rot90]"], "rot90 swap height and width"),
    (["image.size=[24, 40]", "image.augment=[rotate90]"], "rotate90 swaps height and width"),
    (["image.size=[24, 40, 3]"], "one positive side or [height, width]"),
    (["image.size=0"], "one positive side or [height, width]"),
])
def test_sizes_that_cannot_work_are_refused(image_comp, capsys, sets, culprit):
    cfg, _ = image_comp
    assert train.main(["--config", str(cfg), *[a for s in sets for a in ("--set", s)]]) == 2
    assert culprit in capsys.readouterr().err


# --- pseudo-labels ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pseudo_probs(tmp_path_factory) -> str:
    """Probabilities for table_comp's test rows, as predict writes them (trained once a module)."""
    tmp = tmp_path_factory.mktemp("pseudo")
    cfg = write_yaml(tmp / "table.yaml", table_config(tmp, make_table_competition(tmp / "data" / "table")))
    out = tmp / "pseudo.csv"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        assert train.main(["--config", str(cfg)]) == 0
        assert predict.main(["--config", str(cfg), "--set", "predict.output=probabilities", "--output", str(out)]) == 0
    return out.read_text()


def _pseudo_file(tmp_path, pseudo_probs: str) -> Path:
    out = tmp_path / "pseudo.csv"
    out.write_text(pseudo_probs)
    return out


def test_pseudo_labelled_rows_train_in_every_fold_and_never_reach_validation_or_cv(table_comp, tmp_path, capsys, caplog,
                                                                                  pseudo_probs):
    cfg, root = table_comp
    pseudo = _pseudo_file(tmp_path, pseudo_probs)
    sets = ["--set", "name=pseudo", "--set", f"data.pseudo_labels={pseudo}", "--set", "train.mixup_alpha=0.2"]
    with caplog.at_level("INFO"):
        assert train.main(["--config", str(cfg), *sets]) == 0
    test_ids = set(pd.read_csv(root / "test.csv")["key"])
    assert caplog.text.count(f"({len(test_ids)} of them pseudo-labelled test rows)") == 2  # both folds
    folds = pd.read_csv(root / "folds.csv")
    for k in (0, 1):
        oof = pd.read_csv(tmp_path / "outputs" / "pseudo" / f"fold{k}" / "oof.csv")
        assert set(oof["key"]) == set(folds.loc[folds["fold"] == k, "key"]) and not set(oof["key"]) & test_ids
    assert "over 120 out-of-fold rows" in capsys.readouterr().out  # the CV counts train.csv's rows only
    # A threshold keeps only the rows the probabilities are sure of.
    probs = pd.read_csv(pseudo)["target"]
    sure = np.maximum(probs, 1 - probs)
    threshold = float(np.median(sure))
    kept = int((sure >= threshold).sum())
    assert 0 < kept < len(test_ids)
    caplog.clear()
    with caplog.at_level("INFO"):
        assert train.main(["--config", str(cfg), *sets, "--set", "name=sure", "--set",
                           f"data.pseudo_threshold={threshold}", "--fold", "0"]) == 0
    assert f"({kept} of them pseudo-labelled" in caplog.text


def test_pseudo_labelled_images_join_the_device_path(image_comp, tmp_path, capsys):
    cfg, root = image_comp
    test = pd.read_csv(root / "test.csv")
    rows = np.random.default_rng(0).dirichlet([1, 1, 1], len(test))
    pd.DataFrame({"id": test["id"], **{c: rows[:, k] for k, c in enumerate(["circle", "cross", "square"])}}).to_csv(
        tmp_path / "pseudo.csv", index=False)
    sets = ["--set", f"data.pseudo_labels={tmp_path / 'pseudo.csv'}", "--set", "train.cache=auto",
            "--set", "train.device_augment=on", "--set", "image.augment=[hflip]"]
    assert train.main(["--config", str(cfg), "--fold", "0", *sets]) == 0


@pytest.mark.parametrize(("edit", "culprits"), [
    (lambda df, train_ids: df.assign(key=[train_ids[0], *df["key"][1:]]), ["is a train.csv row"]),
    (lambda df, train_ids: df.assign(key=[999999, *df["key"][1:]]), ["999999", "not in test.csv"]),
    (lambda df, train_ids: df.assign(target=[1.5, *df["target"][1:]]), ["line 2", "must lie in [0, 1]"]),
    (lambda df, train_ids: df.rename(columns={"target": "other"}), ["expected a column per class"]),
])
def test_a_bad_pseudo_label_file_is_refused_before_anything_is_written(table_comp, tmp_path, capsys, edit, culprits,
                                                                        pseudo_probs):
    cfg, root = table_comp
    pseudo = _pseudo_file(tmp_path, pseudo_probs)
    edit(pd.read_csv(pseudo), pd.read_csv(root / "train.csv")["key"].tolist()).to_csv(pseudo, index=False)
    assert train.main(["--config", str(cfg), "--set", "name=bad", "--set", f"data.pseudo_labels={pseudo}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(pseudo) in err and all(c in err for c in culprits), err
    assert not (tmp_path / "outputs" / "bad").exists()


# --- warm starts -----------------------------------------------------------------------------


def test_a_warm_start_begins_each_fold_from_the_same_fold_of_another_run(trained_image_comp, tmp_path, caplog):
    cfg, _ = trained_image_comp  # run "shapes", both folds trained
    # Progressive resizing: the same backbone at a larger size, starting from run "shapes"; with a
    # learning rate near zero, each fold ends where the other run's fold did.
    sets = ["--set", "name=bigger", "--set", "model.init_from=shapes", "--set", "image.size=40", "--set",
            "train.lr=1e-12", "--set", "train.freeze_epochs=0", "--set", "train.epochs=1"]
    with caplog.at_level("INFO"):
        assert train.main(["--config", str(cfg), "--fold", "all", *sets]) == 0
    assert "fold 1 starts from shapes's best.pt" in caplog.text
    for k in (0, 1):
        start = load_checkpoint(tmp_path / "outputs" / "shapes" / f"fold{k}" / "best.pt").model_state_dict
        warm = load_checkpoint(tmp_path / "outputs" / "bigger" / f"fold{k}" / "best.pt").model_state_dict
        key = "fc.weight"
        torch.testing.assert_close(warm[key], start[key], atol=1e-6, rtol=0)


def test_a_warm_start_from_a_run_on_other_folds_is_refused(trained_image_comp, tmp_path, capsys):
    cfg, _ = trained_image_comp  # run "shapes", trained on the split in folds.csv
    from competition import folds as folds_cli

    assert folds_cli.main(["--config", str(cfg), "--force", "--set", "seed=999"]) == 0  # another split
    capsys.readouterr()
    code = train.main(["--config", str(cfg), "--set", "name=warm", "--set", "model.init_from=shapes", "--fold", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "best.pt was trained with folds" in err and "folds.csv says" in err, err
    assert not (tmp_path / "outputs" / "warm").exists()
    code = train.main(["--config", str(cfg), "--set", "name=warm", "--set", "model.init_from=nothing", "--fold", "0"])
    assert code == 2 and "nothing/fold0/best.pt not found" in capsys.readouterr().err
