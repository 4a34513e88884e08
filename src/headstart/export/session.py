"""Opening an ONNX Runtime session, torch-free: the one piece both the card reader
(``contract``) and the classifier (``runtime``) need, so neither imports the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from headstart._internal.text import first_line
from headstart.errors import DataError, ExportError

__all__ = ["INSTALL_HINT", "open_session", "session_from_bytes"]

INSTALL_HINT = "pip install 'headstart[onnx]'"


def open_session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session on ``path``; named errors for a missing, unreadable or
    non-ONNX file, and for onnxruntime itself missing."""
    if not path.is_file():
        raise DataError(f"{path}: no such ONNX file.")
    return _session(str(path), str(path), threads)


def session_from_bytes(data: bytes, what: str) -> Any:
    """An onnxruntime CPU session on a model held in memory (``what`` names it)."""
    return _session(data, what, None)


def _session(model: str | bytes, what: str, threads: int | None) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ExportError(
            f"Running an ONNX model needs onnxruntime, which is not installed ({INSTALL_HINT})."
        ) from exc
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are not the user's business
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise DataError(f"{what}: not a model ONNX Runtime can run ({first_line(exc)}).") from exc
