"""Layer groups, freeze plans and the BatchNorm policy, for any timm model.

Groups come from timm's own ``group_matcher`` (coarse: stem, each stage, the
head), so the same code freezes an EfficientNet, a ResNet or a ViT without a
per-architecture table. A freeze plan keeps the first N groups frozen; the
classifier head is always trainable. BatchNorm layers inside frozen groups are
held in eval mode, so their running statistics never move, even while the rest
of the model trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from timm.models import group_parameters
from torch import nn

from headstart._internal.validation import invalid
from headstart.train.config import BN_POLICIES

__all__ = [
    "BN_POLICIES",
    "LayerGroup",
    "apply_freeze",
    "hold_batchnorm",
    "layer_groups",
    "resolve_frozen_count",
]


@dataclass(frozen=True)
class LayerGroup:
    """A run of consecutive parameters timm treats as one unit, input side first."""

    index: int
    name: str  # e.g. "conv_stem+bn1", "blocks.3", "classifier"
    parameter_names: tuple[str, ...]
    num_parameters: int
    is_head: bool


def _group_name(names: Sequence[str], heads: tuple[str, ...] = ()) -> str:
    """The modules a group's parameters live in, e.g. ``conv_stem+bn1`` or ``blocks.3``.

    One level deeper inside a module that also holds the classifier: ConvNeXt keeps its
    final norm in ``head.norm`` beside ``head.fc``, and a body group called ``head``
    would read, in the plan, as the classifier being frozen.
    """
    parents = {h.split(".")[0] for h in heads if "." in h}
    prefixes: list[str] = []
    for name in names:
        parts = name.split(".")
        deeper = len(parts) > 2 and (parts[1].isdigit() or parts[0] in parents)
        prefix = ".".join(parts[:2]) if deeper else parts[0]
        if prefix not in prefixes:
            prefixes.append(prefix)
    return "+".join(prefixes)


def _head_prefixes(model: nn.Module) -> tuple[str, ...]:
    heads = (getattr(model, "pretrained_cfg", {}) or {}).get("classifier") or "classifier"
    return tuple(heads) if isinstance(heads, (tuple, list)) else (heads,)


def layer_groups(model: nn.Module) -> list[LayerGroup]:
    """The model's layer groups, from input to head, with parameter counts."""
    if not hasattr(model, "group_matcher"):
        raise invalid("layer_groups", "model", "a timm model with group_matcher()", model)
    grouped = group_parameters(model, model.group_matcher(coarse=True))
    sizes = {name: p.numel() for name, p in model.named_parameters()}
    heads = _head_prefixes(model)
    groups = []
    for index, names in enumerate(grouped.values()):
        names = tuple(names)
        is_head = all(any(n.startswith(f"{h}.") for h in heads) for n in names)
        groups.append(
            LayerGroup(
                index=index,
                name=_group_name(names, heads),
                parameter_names=names,
                num_parameters=sum(sizes[n] for n in names),
                is_head=is_head,
            )
        )
    return groups


def resolve_frozen_count(groups: Sequence[LayerGroup], freeze_groups: int) -> int:
    """How many leading body groups to freeze.

    ``freeze_groups >= 0`` freezes that many from the input side; a negative value
    leaves that many body groups trainable at the top (``-2``: train the last two).
    The head is never frozen.
    """
    body = sum(1 for g in groups if not g.is_head)
    count = freeze_groups if freeze_groups >= 0 else body + freeze_groups
    if not 0 <= count <= body:
        raise invalid(
            "TrainConfig", "freeze_groups", f"between {-body} and {body} here", freeze_groups
        )
    return count


def apply_freeze(model: nn.Module, groups: Sequence[LayerGroup], frozen_count: int) -> None:
    """Set requires_grad: the first ``frozen_count`` body groups off, everything else on."""
    frozen = _frozen_names(groups, frozen_count)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name not in frozen)


def _frozen_names(groups: Sequence[LayerGroup], frozen_count: int) -> set[str]:
    body = [g for g in groups if not g.is_head]
    return {name for group in body[:frozen_count] for name in group.parameter_names}


def hold_batchnorm(
    model: nn.Module, groups: Sequence[LayerGroup], frozen_count: int, policy: str
) -> list[str]:
    """Put the BatchNorm layers the policy holds into eval mode.

    Call after every ``model.train()``: that call turns them back to training
    mode. Returns the names of the layers it held.
    """
    if policy not in BN_POLICIES:
        raise invalid("hold_batchnorm", "policy", f"one of {BN_POLICIES}", policy)
    frozen = _frozen_names(groups, frozen_count)
    held = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            own = [f"{name}.{p}" for p, _ in module.named_parameters(recurse=False)]
            if policy == "eval" or (own and all(p in frozen for p in own)):
                module.eval()
                held.append(name)
    return held
