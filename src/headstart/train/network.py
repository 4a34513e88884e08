"""The network every strategy trains: a timm body (its ImageNet head removed) plus a new
head, fed by the chosen feature layers. Every strategy yields one, so prediction,
saving and loading are the same code for all of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from headstart.features.layers import parse_layer, pooled_features

__all__ = [
    "Classifier",
    "EnsembleNetwork",
    "HeadSpec",
    "MemberInput",
    "build_head",
    "head_output_layer",
]


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


@dataclass(frozen=True)
class MemberInput:
    """How one ensemble member sees the ensemble's input: resized to its own size and
    normalised with its own mean and std (the ensemble's input is normalised with the
    largest member's)."""

    size: tuple[int, int]  # (height, width) the member's body takes
    scale: tuple[float, float, float]  # per channel: member input = x * scale + shift
    shift: tuple[float, float, float]

    @classmethod
    def between(cls, ensemble: object, member: object) -> MemberInput:
        """The input of ``member`` (a Preprocessing) from ``ensemble``'s (another)."""
        scale = tuple(e / m for e, m in zip(ensemble.std, member.std, strict=True))
        shift = tuple(
            (em - mm) / ms
            for em, mm, ms in zip(ensemble.mean, member.mean, member.std, strict=True)
        )
        return cls(tuple(member.input_size[1:]), scale, shift)


class EnsembleNetwork(nn.Module):
    """Several frozen-body classifiers as one network with one image input.

    The input is the largest member's (its size, crop and normalisation); every other
    member gets it resized (bilinear, antialiased) to its own size and renormalised with
    its own mean and std, so the ensemble is one graph: one forward pass to predict, to
    save and to export. ``combine`` is "average" (each member's own head; the logits
    are the log of the members' mean probability, so softmax gives that mean) or
    "concat" (the members' features concatenated under one ``head``).
    """

    def __init__(
        self,
        members: Sequence[Classifier],
        inputs: Sequence[MemberInput],
        combine: str,
        head: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if combine not in ("average", "concat") or len(members) != len(inputs):
            raise ValueError(f"EnsembleNetwork: combine {combine!r}, {len(members)} members")
        if (combine == "concat") != (head is not None):
            raise ValueError("EnsembleNetwork: a head for concat, and only for concat")
        self.members = nn.ModuleList(members)
        self.inputs = tuple(inputs)
        self.combine = combine
        self.head = head if head is not None else nn.Identity()

    def member_inputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) at the ensemble's size -> each member's (B, 3, h, w)."""
        out = []
        for spec in self.inputs:
            x = images
            if (spec.scale, spec.shift) != ((1.0,) * 3, (0.0,) * 3):
                scale = x.new_tensor(spec.scale).view(1, 3, 1, 1)
                x = x * scale + x.new_tensor(spec.shift).view(1, 3, 1, 1)
            if tuple(x.shape[-2:]) != spec.size:
                x = F.interpolate(
                    x, size=spec.size, mode="bilinear", align_corners=False, antialias=True
                )
            out.append(x)
        return out

    def member_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Each member's pooled features, (B, D_k)."""
        inputs = self.member_inputs(images)
        return [m.features(x) for m, x in zip(self.members, inputs, strict=True)]

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.member_features(images), dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits_of(self.member_features(images))

    def logits_of(self, member_features: Sequence[torch.Tensor]) -> torch.Tensor:
        """The ensemble's logits from each member's pooled features (``member_features``),
        so a caller that computed the features itself (Grad-CAM) combines them the same."""
        if self.combine == "concat":
            return self.head(torch.cat(list(member_features), dim=1))
        pairs = zip(self.members, member_features, strict=True)
        logits = [m.head(f).float() for m, f in pairs]
        mean = torch.stack([torch.softmax(z, dim=1) for z in logits]).mean(0)
        return torch.log(mean.clamp_min(1e-30))  # softmax of this is the mean probability
