"""The table model: an MLP sized from the feature count, with the head where timm models keep theirs."""
from __future__ import annotations

import torch
from torch import nn

TABULAR_MODELS = ("mlp",)  # config key model.name for a tabular task


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
