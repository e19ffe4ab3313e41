"""Pretrained weights: a local file (safetensors or .pth, timm layout) into the backbone with a fresh
head for the competition's classes, and a one-line error before any training when weights are missing."""
from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import pytest
import safetensors.torch
import timm
import torch
from conftest import image_config, make_image_competition, write_yaml

from competition import train
from competition.config import load_config
from competition.core.errors import CompetitionError
from competition.io.checkpoints import load_checkpoint
from competition.models.contract import data_config
from competition.tasks import build_model

HEAD = "fc."  # test_resnet's classifier


def _imagenet_like_weights() -> dict[str, torch.Tensor]:
    """A 1000-class test_resnet state dict, distinct from any fresh initialisation."""
    torch.manual_seed(123)
    model = timm.create_model("test_resnet", num_classes=1000)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.add_(torch.rand_like(t) * 0.1)  # running stats too: they must load as well
            elif name.endswith("num_batches_tracked"):
                t.fill_(77)
    return {k: v.clone().contiguous() for k, v in model.state_dict().items()}


def _save(weights: dict[str, torch.Tensor], path: Path, layout: str) -> Path:
    if layout == "safetensors":
        safetensors.torch.save_file(weights, str(path))
    elif layout == "pth":
        torch.save(weights, path)
    else:  # the checkpoint layout of timm's train.py
        torch.save({"epoch": 3, "arch": "test_resnet", "state_dict": weights}, path)
    return path


def _cfg(tmp_path: Path, **model):
    root = make_image_competition(tmp_path / "data" / "shapes", n_train=18, n_test=3)
    cfg_path = write_yaml(tmp_path / "shapes.yaml", image_config(tmp_path, root, model=model))
    return cfg_path, load_config(str(cfg_path))



@pytest.mark.parametrize(("layout", "suffix"), [("safetensors", ".safetensors"), ("pth", ".pth"), ("timm", ".pth.tar")])
def test_pretrained_file_fills_the_backbone_and_the_head_fits_the_classes(tmp_path, layout, suffix):
    weights = _imagenet_like_weights()
    file = _save(weights, tmp_path / f"weights{suffix}", layout)
    _, cfg = _cfg(tmp_path, name="test_resnet", pretrained=False, pretrained_file=str(file))

    model = build_model(cfg, num_classes=3)
    state = model.state_dict()
    backbone = [k for k in weights if not k.startswith(HEAD)]
    assert backbone and all(torch.equal(state[k], weights[k]) for k in backbone)
    assert model.get_classifier().out_features == 3
    assert state["fc.weight"].shape == (3, weights["fc.weight"].shape[1])
    # Normalisation follows the weights' own pretrained config (0.5, not ImageNet's 0.485…).
    prep = data_config(model, 32)
    assert prep["mean"] == [0.5, 0.5, 0.5] and prep["std"] == [0.5, 0.5, 0.5]
    assert prep["interpolation"] == "bilinear"


def test_without_the_file_the_backbone_is_random(tmp_path):
    """The control for the test above: the same build without a file does not match the weights."""
    weights = _imagenet_like_weights()
    _, cfg = _cfg(tmp_path, name="test_resnet", pretrained=False)
    state = build_model(cfg, num_classes=3).state_dict()
    assert not torch.equal(state["conv1.0.weight"], weights["conv1.0.weight"])


def test_head_is_fresh_even_with_as_many_classes_as_imagenet(tmp_path):
    weights = _imagenet_like_weights()
    file = _save(weights, tmp_path / "w.safetensors", "safetensors")
    _, cfg = _cfg(tmp_path, name="test_resnet", pretrained_file=str(file))
    state = build_model(cfg, num_classes=1000).state_dict()
    assert torch.equal(state["conv1.0.weight"], weights["conv1.0.weight"])
    assert not torch.equal(state["fc.weight"], weights["fc.weight"])  # 1000 classes, but not ImageNet's


def test_fresh_head_is_scaled_by_its_inputs_not_by_the_class_count(tmp_path):
    """EfficientNet's own init draws head weights in ±1/√classes: ±0.71 for two classes, which on
    ImageNet features means logits of several units and a head-only stage that starts far off."""
    file = tmp_path / "effnet.safetensors"
    safetensors.torch.save_file(timm.create_model("test_efficientnet", num_classes=1000).state_dict(), str(file))
    _, cfg = _cfg(tmp_path, name="test_efficientnet", pretrained_file=str(file))
    head = build_model(cfg, num_classes=2).get_classifier()
    assert float(head.weight.detach().abs().max()) <= head.in_features ** -0.5


def test_stage_one_training_keeps_the_file_backbone_exactly(tmp_path, capsys):
    """Head-only training from a pretrained file: the best checkpoint's backbone, BatchNorm
    statistics included, is still the file's, and its head learned for the 3 classes."""
    weights = _imagenet_like_weights()
    file = _save(weights, tmp_path / "w.safetensors", "safetensors")
    cfg_path, _ = _cfg(tmp_path, name="test_resnet", pretrained_file=str(file))
    rc = train.main(["--config", str(cfg_path), "--fold", "0", "--set", "train.epochs=0", "--set", "train.freeze_epochs=1"])
    assert rc == 0, capsys.readouterr().err
    state = load_checkpoint(tmp_path / "outputs" / "shapes" / "fold0" / "best.pt")
    trained = state.model_state_dict
    assert all(torch.equal(trained[k], weights[k]) for k in weights if not k.startswith(HEAD))
    assert trained["fc.weight"].shape[0] == 3
    assert state.preprocessing["mean"] == [0.5, 0.5, 0.5]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No network and an empty hub cache. huggingface_hub reads HF_HUB_OFFLINE when imported, so
    its constant is set along with the variable."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def test_missing_hub_weights_fail_before_training_with_one_line(tmp_path, offline, capsys):
    cfg_path, _ = _cfg(tmp_path, name="test_resnet", pretrained=True)
    root = tmp_path / "data" / "shapes"
    data_before = sorted(root.rglob("*"))
    assert train.main(["--config", str(cfg_path), "--fold", "all"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "test_resnet" in err and "model.pretrained_file" in err
    # Refused before the first write: no outputs (config, locks, checkpoints), no folds.csv.
    assert not (tmp_path / "outputs").exists()
    assert sorted(root.rglob("*")) == data_before


def test_pretrained_file_works_offline(tmp_path, offline):
    file = _save(_imagenet_like_weights(), tmp_path / "w.safetensors", "safetensors")
    _, cfg = _cfg(tmp_path, name="test_resnet", pretrained=True, pretrained_file=str(file))
    assert build_model(cfg, num_classes=3).get_classifier().out_features == 3


class _Payload:
    def __reduce__(self):
        return (print, ("this file runs code when unpickled",))


@pytest.mark.parametrize("kind", ["other_model", "pickled_code", "not_weights", "missing"])
def test_a_bad_pretrained_file_is_one_line_naming_it(tmp_path, kind):
    path = tmp_path / "weights.pth"
    if kind == "other_model":
        torch.save(timm.create_model("test_efficientnet").state_dict(), path)
    elif kind == "pickled_code":
        torch.save({"conv1.0.weight": _Payload()}, path)
    elif kind == "not_weights":
        path.write_bytes(b"<html>404 not found</html>")
    _, cfg = _cfg(tmp_path, name="test_resnet", pretrained_file=str(path))
    with pytest.raises(CompetitionError) as info:
        build_model(cfg, num_classes=3)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    assert ("not found" in msg) == (kind == "missing")


def test_weights_from_a_checkpoint_skip_the_pretrained_file(tmp_path):
    """Prediction rebuilds fold models from their checkpoint: a pretrained file that has since
    moved away must not be needed."""
    _, cfg = _cfg(tmp_path, name="test_resnet", pretrained_file=str(tmp_path / "gone.safetensors"))
    model = build_model(cfg, num_classes=3, load_pretrained=False)
    assert model.get_classifier().out_features == 3
