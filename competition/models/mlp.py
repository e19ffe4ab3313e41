"""The table model trained in epochs: an MLP sized from the feature count. It implements the model
contract (models/contract.py) as timm models do: the head under get_classifier(), no image
preprocessing and no feature stages."""
from __future__ import annotations

import torch
from torch import nn

from competition.core.schema import Config


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
        self.pretrained_cfg: dict = {}  # table features: no image preprocessing
        self.feature_info: list[dict] = []  # no spatial feature map

    def get_classifier(self) -> nn.Module:
        """The same name timm models use, so freezing and parameter groups treat both alike."""
        return self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def build_mlp(cfg: Config, num_classes: int, in_features: int | None, load_pretrained: bool) -> TabularMLP:
    """The MLP of model.hidden_sizes for `in_features` features (no pretrained weights to load)."""
    m = cfg.model
    return TabularMLP(int(in_features), num_classes, list(m.hidden_sizes), m.drop_rate)
