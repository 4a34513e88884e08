"""A trained model on disk: a folder with ``model.safetensors`` (weights, never a pickle)
and ``headstart.json`` (backbone, weight source and sha256, classes, preprocessing,
strategy, config, metrics, versions, and the sha256 of the weights file). Both are
written atomically, as a pair: a failed save replaces neither. Loading checks the
weights against that sha256 and for being finite, and the description's fields
against each other and the head (``model_checks``), so a damaged folder is an error
naming the file, never a model that answers wrongly."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import nn

from headstart._internal.atomic import atomic_write_files
from headstart._internal.files import (
    DESCRIPTION_MAX_BYTES,
    MB,
    FileRefused,
    describe_bytes,
    read_capped,
)
from headstart._internal.version import __version__
from headstart.backbones.registry import check_backbone_name
from headstart.errors import DataError, HeadstartError, WeightsError
from headstart.estimator.model_checks import (
    WEIGHTS_HASH_FIELD,
    check_description,
    check_finite_weights,
    check_weights_hash,
    weights_hash,
)
from headstart.train.network import (
    Classifier,
    EnsembleNetwork,
    HeadSpec,
    MemberInput,
    build_head,
)

__all__ = ["META_FILE", "WEIGHTS_FILE", "ModelFiles", "load_model", "save_model"]


MODEL_FORMAT = 1


WEIGHTS_FILE = "model.safetensors"


META_FILE = "headstart.json"

# The largest model.safetensors read (a ViT-g is ~4 GB in fp32); a larger file is refused.
WEIGHTS_MAX_BYTES = 64 * 1024 * MB


@dataclass
class ModelFiles:
    """What ``load_model`` returns: the network and everything said about it."""

    model: Classifier
    metadata: dict[str, Any]


def versions() -> dict[str, str]:
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
    meta = {
        "format": MODEL_FORMAT,
        **metadata,
        WEIGHTS_HASH_FIELD: weights_hash(blob),
        "versions": versions(),
    }
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


def _ensemble(description: dict[str, Any], spec: HeadSpec) -> EnsembleNetwork:
    """An ensemble's network rebuilt from its description (weights loaded after)."""
    combine = description["combine"]
    members, inputs = [], []
    for member in description["members"]:
        check_backbone_name(member["backbone"])
        body = timm.create_model(member["backbone"], pretrained=False, num_classes=0)
        head = nn.Linear(member["width"], spec.num_classes) if combine == "average" else None
        members.append(Classifier(body, member["layers"], head or nn.Identity()))
        given = member["input"]
        size, scale, shift = (tuple(given[k]) for k in ("size", "scale", "shift"))
        inputs.append(MemberInput(size, scale, shift))
    head = build_head(spec) if combine == "concat" else None
    return EnsembleNetwork(members, inputs, combine, head=head)


def load_model(folder: Path) -> ModelFiles:
    """Rebuild a saved model from its JSON description and safetensors weights."""
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.exists():  # a FIFO or device is refused by read_capped, unread
        raise DataError(
            f"{folder}: not a headstart model folder (no {META_FILE}).",
            hint="Give {model_folder}.",
        )
    over = f"the {describe_bytes(DESCRIPTION_MAX_BYTES)} cap for a model description"
    try:
        meta = json.loads(read_capped(meta_path, DESCRIPTION_MAX_BYTES, over=over).decode())
    except FileRefused as refused:
        raise DataError(f"{meta_path}: not read: {refused.reason}.") from None
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
    check_description(meta_path, meta)
    try:
        spec = HeadSpec(**meta["head"])
        if "ensemble" in meta:
            model = _ensemble(meta["ensemble"], spec)
        else:
            check_backbone_name(meta["backbone"])
            body = timm.create_model(meta["backbone"], pretrained=False, num_classes=0)
            model = Classifier(body, meta["layers"], build_head(spec))
    except HeadstartError as exc:
        raise DataError(f"{meta_path}: {exc}") from exc
    except (TypeError, ValueError, KeyError) as exc:
        raise DataError(f"{meta_path}: invalid model description ({exc}).") from exc
    path = folder / WEIGHTS_FILE
    try:
        over = f"the {describe_bytes(WEIGHTS_MAX_BYTES)} cap for model weights"
        blob = read_capped(path, WEIGHTS_MAX_BYTES, over=over)
        check_weights_hash(path, blob, meta)  # before parsing: a damaged file says so
        tensors = load(blob)
    except (SafetensorError, OSError, ValueError, FileRefused) as exc:
        raise WeightsError(f"{path}: model weights cannot be read ({exc}).") from exc
    check_finite_weights(path, tensors)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: weights do not fit {meta['backbone']} ({exc}).") from exc
    model.eval()
    return ModelFiles(model=model, metadata=meta)
