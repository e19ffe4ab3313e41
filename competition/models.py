"""Models: timm backbones and a tabular MLP, pretrained weights, freezing and parameter groups."""
from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from torch import nn

from competition.config import Config
from competition.errors import CompetitionError

log = logging.getLogger(__name__)

TABULAR_MODELS = ("mlp",)


class TabularMLP(nn.Module):
    """Linear → BatchNorm → SiLU → Dropout blocks, then a linear head; sized from the feature count."""

    def __init__(self, in_features: int, num_classes: int, hidden_sizes: list[int], drop_rate: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.SiLU(), nn.Dropout(drop_rate)]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def get_classifier(self) -> nn.Module:
        """The same name timm models use, so freezing and parameter groups treat both alike."""
        return self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def uses_pretrained(cfg: Config) -> bool:
    """A pretrained file implies pretrained weights, whatever model.pretrained says."""
    return cfg.task == "image" and (cfg.model.pretrained or cfg.model.pretrained_file is not None)


def build_model(cfg: Config, num_classes: int, in_features: int | None = None, load_pretrained: bool = True) -> nn.Module:
    """The model a config describes. `load_pretrained=False` when weights come from a checkpoint."""
    m = cfg.model
    if cfg.task == "tabular":
        if m.name not in TABULAR_MODELS:
            raise CompetitionError(f"config key model.name: {m.name!r} is not a tabular model ({', '.join(TABULAR_MODELS)})")
        return TabularMLP(int(in_features), num_classes, list(m.hidden_sizes), m.drop_rate)
    if not timm.is_model(m.name):
        close = timm.list_models(f"*{m.name.split('.')[0][:8]}*")[:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise CompetitionError(f"config key model.name: {m.name!r} is not a timm model{hint}")
    kwargs: dict = {"num_classes": num_classes, "drop_rate": m.drop_rate}
    pretrained = load_pretrained and uses_pretrained(cfg)
    if pretrained and m.pretrained_file:
        path = Path(m.pretrained_file)
        if not path.is_file():
            raise CompetitionError(f"config key model.pretrained_file: {path} not found")
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
    try:
        model = timm.create_model(m.name, pretrained=pretrained, **kwargs)
        # The competition's head starts afresh, scaled by its fan-in (PyTorch's Linear default):
        # 1. timm keeps the pretrained head when the class counts match (1000 = ImageNet's), and
        # 2. some timm inits scale by fan-out (EfficientNet: ±1/√classes), which for 2 classes
        #    gives logits of ±6 on pretrained features and a head-only stage that barely recovers.
        if pretrained:
            for layer in model.get_classifier().modules():
                if hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()
        return model
    except CompetitionError:
        raise
    except Exception as exc:  # hub, network, file-format and shape errors all end here
        if not pretrained:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if m.pretrained_file:
            raise CompetitionError(
                f"pretrained file {m.pretrained_file} does not load into {m.name}: {first[:300]}"
            ) from None
        raise CompetitionError(
            f"pretrained weights for {m.name} could not be had ({type(exc).__name__}; no network or "
            f"HF_HUB_OFFLINE=1?): download them once, or set model.pretrained_file to a local "
            f".safetensors/.pth in timm's layout"
        ) from None


def check_model(cfg: Config, num_classes: int, load_pretrained: bool = True) -> None:
    """Build the model once now (with its pretrained weights), so that an unknown model name or
    missing or broken weights fail before a run writes anything."""
    build_model(cfg, num_classes, in_features=1, load_pretrained=load_pretrained)


def preprocessing(model: nn.Module, size: int) -> dict:
    """Normalisation and interpolation from the model's pretrained config, as plain data."""
    if isinstance(model, TabularMLP):
        return {}
    dc = timm.data.resolve_model_data_config(model)
    return {
        "mean": [float(v) for v in dc["mean"]],
        "std": [float(v) for v in dc["std"]],
        "interpolation": str(dc.get("interpolation", "bilinear")),
        "size": int(size),
    }


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    return list(model.get_classifier().parameters())


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    head = {id(p) for p in head_parameters(model)}
    return [p for p in model.parameters() if id(p) not in head]


def _backbone_norm_layers(model: nn.Module) -> list[nn.Module]:
    head = {id(m) for m in model.get_classifier().modules()}
    return [
        m for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in head
    ]


def set_stage(model: nn.Module, stage: int) -> None:
    """Stage 1: only the head learns. Stage 2: everything learns."""
    for p in backbone_parameters(model):
        p.requires_grad_(stage != 1)
    for p in head_parameters(model):
        p.requires_grad_(True)


def train_mode(model: nn.Module, stage: int, freeze_bn: bool = False) -> None:
    """model.train(), but in stage 1 (and in stage 2 too with `freeze_bn`) the backbone's
    BatchNorm layers stay in eval mode: their running statistics are neither updated nor
    replaced by batch statistics. Their scale and shift still learn in stage 2."""
    model.train()
    if stage == 1 or freeze_bn:
        for m in _backbone_norm_layers(model):
            m.eval()


def param_groups(model: nn.Module, stage: int, lr: float, backbone_lr_mult: float, weight_decay: float) -> list[dict]:
    """Stage 1: the head at `lr`. Stage 2: the backbone at lr × backbone_lr_mult, the head at lr."""
    groups = [{"name": "head", "params": head_parameters(model), "lr": lr, "base_lr": lr, "weight_decay": weight_decay}]
    if stage == 2:
        blr = lr * backbone_lr_mult
        groups.insert(0, {"name": "backbone", "params": backbone_parameters(model), "lr": blr, "base_lr": blr, "weight_decay": weight_decay})
    return groups
