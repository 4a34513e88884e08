"""Which device a backbone runs on: CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import torch

from headstart._internal.validation import invalid

__all__ = ["select_device"]


def select_device(requested: str = "auto") -> torch.device:
    """CUDA, then Apple's MPS, then the CPU, unless the user names one."""
    if requested != "auto":
        accepted = "'auto', 'cpu', 'cuda' or 'mps'"
        try:
            device = torch.device(requested)
        except RuntimeError as exc:
            raise invalid("TrainConfig", "device", accepted, requested) from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise invalid("TrainConfig", "device", "'auto' or 'cpu' here (no CUDA)", requested)
        mps = getattr(torch.backends, "mps", None)
        if device.type == "mps" and not (mps is not None and mps.is_available()):
            raise invalid("TrainConfig", "device", "'auto' or 'cpu' here (no MPS)", requested)
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
