"""The trained model every strategy produces, and its on-disk form.

``Classifier`` is a timm body (its ImageNet head removed) plus a new head, fed
by the chosen feature layers. Every strategy yields one, so prediction, saving
and loading are the same code for all of them.

On disk a model is a folder: ``model.safetensors`` (weights, never a pickle)
and ``headstart.json`` (backbone, weight source and sha256, classes,
preprocessing, strategy, config, metrics, versions). Both are written
atomically, as a pair: a failed save replaces neither.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from headstart.backbones import Preprocessing, check_backbone_name
from headstart.errors import DataError, HeadstartError, WeightsError
from headstart.features import atomic_write_files, parse_layer, pooled_features

__all__ = ["Classifier", "HeadSpec", "ModelFiles", "build_head", "load_model", "save_model"]

MODEL_FORMAT = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "headstart.json"


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


@dataclass
class ModelFiles:
    """What ``load_model`` returns: the network and everything said about it."""

    model: Classifier
    metadata: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return list(self.metadata["classes"])

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.metadata["preprocessing"])


def versions() -> dict[str, str]:
    from headstart import __version__

    return {
        "headstart": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
    }


def save_model(folder: Path, model: Classifier, metadata: dict[str, Any]) -> Path:
    """Write weights then metadata, each atomically; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise WeightsError(f"Refusing to save non-finite weights ({name}) to {folder}.")
    blob = save(tensors, metadata={"format": str(MODEL_FORMAT)})
    meta = {"format": MODEL_FORMAT, **metadata, "versions": versions()}
    text = json.dumps(meta, indent=2, sort_keys=True, default=str)
    # Both files are written in full before either replaces its old version, so a
    # failed save (disk full) leaves the previous model whole and loadable.
    atomic_write_files(
        [
            (folder / WEIGHTS_FILE, lambda handle: handle.write(blob)),
            (folder / META_FILE, lambda handle: handle.write(text.encode())),
        ]
    )
    return folder


def load_model(folder: Path) -> ModelFiles:
    """Rebuild a saved model from its JSON description and safetensors weights."""
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise DataError(
            f"{folder}: not a headstart model folder (no {META_FILE}); "
            "make one with `headstart train DATA --out FOLDER`."
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{meta_path}: unreadable model description ({exc}).") from exc
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise DataError(f"{meta_path}: model format {found!r} is not supported.")
    missing = [
        k for k in ("backbone", "head", "layers", "classes", "preprocessing") if k not in meta
    ]
    if missing:
        raise DataError(f"{meta_path}: field(s) {', '.join(missing)} missing; file damaged?")
    try:
        spec = HeadSpec(**meta["head"])
        check_backbone_name(meta["backbone"])
        body = timm.create_model(meta["backbone"], pretrained=False, num_classes=0)
        model = Classifier(body, meta["layers"], build_head(spec))
    except HeadstartError as exc:
        raise DataError(f"{meta_path}: {exc}") from exc
    except (TypeError, ValueError, KeyError) as exc:
        raise DataError(f"{meta_path}: invalid model description ({exc}).") from exc
    path = folder / WEIGHTS_FILE
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: model weights cannot be read ({exc}).") from exc
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: weights do not fit {meta['backbone']} ({exc}).") from exc
    model.eval()
    return ModelFiles(model=model, metadata=meta)
