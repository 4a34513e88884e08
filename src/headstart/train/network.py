"""The network every strategy trains: a timm body (its ImageNet head removed) plus a new
head, fed by the chosen feature layers. Every strategy yields one, so prediction,
saving and loading are the same code for all of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from headstart.features.layers import parse_layer, pooled_features

__all__ = ["Classifier", "HeadSpec", "build_head", "head_output_layer"]


@dataclass(frozen=True)
class HeadSpec:
    kind: str  # "linear" or "mlp"
    in_features: int
    num_classes: int
    hidden: int = 512
    dropout: float = 0.0


def build_head(spec: HeadSpec) -> nn.Module:
    """A fresh head: Linear, or Linear-GELU-Dropout-Linear."""
    if spec.kind == "linear":
        if spec.dropout:
            return nn.Sequential(
                nn.Dropout(spec.dropout), nn.Linear(spec.in_features, spec.num_classes)
            )
        return nn.Linear(spec.in_features, spec.num_classes)
    return nn.Sequential(
        nn.Linear(spec.in_features, spec.hidden),
        nn.GELU(),
        nn.Dropout(spec.dropout),
        nn.Linear(spec.hidden, spec.num_classes),
    )


def head_output_layer(head: nn.Module) -> nn.Linear:
    """The head's final Linear layer (where a linear probe's weights go)."""
    if isinstance(head, nn.Linear):
        return head
    return [m for m in head.modules() if isinstance(m, nn.Linear)][-1]


class Classifier(nn.Module):
    """timm body -> pooled features of ``layers`` (concatenated) -> head -> logits."""

    def __init__(self, body: nn.Module, layers: Sequence[str], head: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.layers = tuple(layers)
        self.head = head
        self._stages = {layer: parse_layer(layer, body) for layer in self.layers}

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D) with D the summed width of the layers."""
        out = pooled_features(self.body, images, self._stages)
        return torch.cat([out[layer] for layer in self.layers], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))
