"""Take the model anywhere: ONNX export behind a parity gate, and prediction from the
exported file with ONNX Runtime alone (no torch).

A face on top of the library: it uses the estimator's public API only.
"""

from headstart._internal.lazy import lazy_exports

_EXPORTS = {
    "export_onnx": ".exporter",
    "ExportResult": ".exporter",
    "check_images": ".exporter",
    "OnnxClassifier": ".runtime",
    "read_card": ".contract",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
