"""A fitted classifier as one ONNX graph: uint8 pixels in, logits and probabilities out.

The graph holds the whole model: the input's normalisation, the backbone with its
BatchNorms folded into the convolutions (one op fewer per layer for any runtime; the
fold checks itself and is skipped when it would change the output), the pooled
intermediate layers the head reads, and the head. It is traced by PyTorch's own
exporter (``torch.onnx.export(dynamo=True)``, torch.export underneath) with a dynamic
batch axis.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any

import torch
from torch import nn

from headstart._internal.text import first_line
from headstart.errors import ExportError
from headstart.export.contract import INPUT_NAME, OUTPUT_NAMES, metadata_props
from headstart.features.fastpath import fold_batchnorm

__all__ = ["PixelClassifier", "onnx_bytes", "with_card"]

_MAX_BATCH = 4096  # the dynamic batch axis' upper bound, as torch.export wants one


class PixelClassifier(nn.Module):
    """uint8 (N, H, W, 3) RGB pixels -> (logits, probabilities), the normalisation inside."""

    def __init__(self, model: nn.Module, mean: Any, std: Any) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # As ToTensor then Normalize: scale to [0, 1] first, so the rounding matches.
        x = image.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        logits = self.model((x - self.mean) / self.std)
        return logits, torch.softmax(logits, dim=1)


def onnx_bytes(
    model: nn.Module, preprocessing: Any, card: dict[str, Any], opset: int
) -> tuple[bytes, int]:
    """The serialised ONNX model of a fitted network, with ``card`` in its
    ``metadata_props``; returns (bytes, BatchNorms folded). ``model`` is not changed."""
    model = model.eval()
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(4, *preprocessing.input_size, generator=generator)
    with torch.inference_mode():
        folded, n_folded = fold_batchnorm(model, sample)
    wrapped = PixelClassifier(folded, preprocessing.mean, preprocessing.std).eval()
    height, width = preprocessing.input_size[1:]
    example = torch.zeros(2, height, width, 3, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=_MAX_BATCH)
    try:
        # Its progress lines and deprecation chatter are not the user's business.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapped,
                (example,),
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes=({0: batch},),
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:  # torch.export raises many types; the reason is what counts
        hint = "Try a lower {opset}: 18, the default, is the one every export is tested at."
        raise ExportError(
            f"PyTorch could not export this model to ONNX (opset {opset}): {first_line(exc)}.",
            hint=hint if opset > 18 else None,
        ) from exc
    return _stamped(program.model_proto, card).SerializeToString(), n_folded


def with_card(data: bytes, card: dict[str, Any]) -> bytes:
    """An ONNX model's bytes with ``card`` as its metadata (the quantizer drops it)."""
    import onnx

    return _stamped(onnx.load_from_string(data), card).SerializeToString()


def _stamped(proto: Any, card: dict[str, Any]) -> Any:
    del proto.metadata_props[:]
    for key, value in metadata_props(card).items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = (
        f"{card['backbone']} ({card['strategy']}) exported by headstart "
        f"{card['headstart_version']}: {len(card['classes'])} classes. Input '{INPUT_NAME}': "
        "uint8 RGB pixels (N, H, W, 3), resized and cropped as metadata 'preprocessing' says."
    )
    return proto
