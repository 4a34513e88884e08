"""Which device a backbone runs on: CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import torch

from headstart._internal.validation import invalid

__all__ = ["select_device"]


def select_device(requested: str = "auto", *, owner: str = "select_device") -> torch.device:
    """CUDA, then Apple's MPS, then the CPU, unless the user names one; ``owner`` is who
    asked, for the error (``TrainConfig``, ``ImageClassifier.predict_proba``, ...)."""
    if requested != "auto":
        accepted = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        try:
            device = torch.device(requested)
        except (RuntimeError, TypeError) as exc:
            raise invalid(owner, "device", accepted, requested) from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise invalid(owner, "device", "'auto' or 'cpu' here (no CUDA)", requested)
        mps = getattr(torch.backends, "mps", None)
        if device.type == "mps" and not (mps is not None and mps.is_available()):
            raise invalid(owner, "device", "'auto' or 'cpu' here (no MPS)", requested)
        if device.type not in ("cpu", "cuda", "mps"):
            raise invalid(owner, "device", accepted, requested)
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
