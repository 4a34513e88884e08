"""int8 with ONNX Runtime's own quantization tooling: static, QDQ, per-channel weights.

Static quantization fixes each activation's int8 range from calibration images, so
convolutions run as int8 kernels (dynamic quantization would leave a CNN's
convolutions in float). By default the calibration images come from the model's
training side, not the test images the accuracy change is then measured on (given
only check images, the exporter calibrates on them and its report says so).

Only the convolutions and their activations go to int8: the pooled multi-stage
features a head reads have ranges far apart, and one int8 scale for their
concatenation is ruinous. On the bundled sample at 112 px (docs/BENCHMARKS.md,
section 7) quantizing every op lost 18 points of accuracy, while this choice changed it
by +0.3; pooling, concatenation and the head are a sliver of the work.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from headstart._internal.text import first_line
from headstart.data.dataset import ImageDataset
from headstart.errors import ExportError
from headstart.export.contract import INPUT_NAME, image_pixels

__all__ = ["QUANTIZATION", "quantize_int8"]

# How the int8 file was made, as its card says.
QUANTIZATION = {
    "type": "int8",
    "method": "onnxruntime static QDQ, MinMax calibration: convolutions and their "
    "activations in int8 (per-channel weights, uint8 activations); pooling, "
    "concatenation and the head in float",
}
_CALIBRATION_BATCH = 16
_INT8_OPS = ["Conv", "Clip", "Relu"]


def quantize_int8(data: bytes, preprocessing: Any, calibration: ImageDataset) -> bytes:
    """The int8 model of an fp32 ONNX model's bytes, calibrated on ``calibration``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not len(calibration):
        raise ExportError("int8 quantization needs calibration images; none were given.")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.starts = iter(range(0, len(calibration), _CALIBRATION_BATCH))

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self.starts, None)
            if start is None:
                return None
            stop = min(start + _CALIBRATION_BATCH, len(calibration))
            rows = [image_pixels(calibration.image(i), preprocessing) for i in range(start, stop)]
            return {INPUT_NAME: np.stack(rows)}

    with tempfile.TemporaryDirectory(prefix="headstart-int8-") as tmp:
        fp32, prepared, int8 = (Path(tmp) / name for name in ("fp32", "prep", "int8"))
        fp32.write_bytes(data)
        try:
            # Its INFO lines and progress prints are not the user's business.
            logger = logging.getLogger()
            level = logger.level
            logger.setLevel(logging.WARNING)
            with contextlib.redirect_stdout(io.StringIO()):
                quant_pre_process(str(fp32), str(prepared))
                quantize_static(
                    str(prepared),
                    str(int8),
                    Reader(),
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=_INT8_OPS,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                )
        except Exception as exc:  # onnxruntime's tooling raises many kinds
            raise ExportError(f"int8 quantization failed: {first_line(exc)}") from exc
        finally:
            logger.setLevel(level)
        return int8.read_bytes()
