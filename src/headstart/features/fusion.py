"""Convolutions fused with the activation after them, for the CPU fast path.

After BatchNorm folding, EfficientNet-Lite's blocks are a convolution and then a ReLU6
over its whole output. On the CPU that ReLU6 is a separate pass over every activation
map, in bf16, which PyTorch's elementwise kernels run several times slower than fp32:
40 % of Lite0's forward pass (docs/BENCHMARKS.md section 20). oneDNN can apply the
activation inside the convolution (a "post-op" on its fp32 accumulator, before the
rounding to bf16), the fusion PyTorch's own compiler (Inductor) emits on the CPU through
``torch.ops.mkldnn._convolution_pointwise``. ReLU and ReLU6 are monotone and their
bounds exact in bf16, so clamping before or after the rounding gives the same number:
on the CPUs measured the fused features were the unfused ones bit for bit (a different
oneDNN kernel for the fused primitive could still sum in another order).

What is fused is what BatchNorm folding leaves of a ``BatchNormAct2d`` (which applies its
activation to the convolution's output and nothing else): a convolution registered just
before ``Sequential(drop, activation)``. Registration order is a convention, not a
guarantee, so the fused copy must reproduce the folded model on a sample, in fp32 and on
the fast path itself (bf16 autocast, channels_last), or the folded model is used as it is.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from timm.layers import Conv2dSame
from timm.layers.padding import pad_same
from torch import nn

__all__ = ["FusedConvActivation", "fuse_activations", "fusion_available"]


def fusion_available(device: torch.device) -> bool:
    """Whether this PyTorch can fuse an activation into a convolution on ``device``."""
    return (
        device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    )


def _activation(module: nn.Module) -> tuple[str, list[float]] | None:
    """oneDNN's name and scalars for an activation whose fusion is exact, else None."""
    if type(module) is nn.ReLU:
        return "relu", []
    if type(module) in (nn.ReLU6, nn.Hardtanh):
        return "hardtanh", [float(module.min_val), float(module.max_val)]
    return None


class FusedConvActivation(nn.Module):
    """``conv`` (a zero-padded ``nn.Conv2d`` or timm's ``Conv2dSame``) and then an
    activation, in one oneDNN call. Inference only (the op has no gradient); under CPU
    autocast it runs in autocast's dtype, as the convolution alone would."""

    def __init__(self, conv: nn.Conv2d, attribute: str, scalars: list[float]) -> None:
        super().__init__()
        self.conv = conv
        self.attribute = attribute
        self.scalars = scalars
        self.same = isinstance(conv, Conv2dSame)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        x = x.to(dtype)
        padding = [0, 0] if self.same else list(conv.padding)
        if self.same:
            x = pad_same(x, conv.kernel_size, conv.stride, conv.dilation)
        bias = None if conv.bias is None else conv.bias.to(dtype)
        return torch.ops.mkldnn._convolution_pointwise(
            x, conv.weight.to(dtype), bias, padding, list(conv.stride), list(conv.dilation),
            conv.groups, self.attribute, self.scalars, "",
        )  # fmt: skip


def _fusable_conv(conv: nn.Module) -> bool:
    return (
        type(conv) in (nn.Conv2d, Conv2dSame)
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)  # not the string "same"
    )


def _fusable_rest(rest: nn.Module) -> tuple[str, list[float]] | None:
    """The activation of what folding left of a ``BatchNormAct2d``: Sequential(drop, act)
    with a drop that does nothing in eval mode."""
    if type(rest) is not nn.Sequential or len(rest) != 2:
        return None
    if type(rest[0]) not in (nn.Identity, nn.Dropout):
        return None
    return _activation(rest[1])


def fuse_activations(
    folded: nn.Module,
    check: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    sample: torch.Tensor,
) -> tuple[nn.Module, int]:
    """A copy of the BatchNorm-``folded`` model with each (convolution, activation) pair
    fused, and how many; ``folded`` itself (and 0) when none fuses or the copy's
    ``check(net, sample)`` differs from the folded model's, in fp32 or under bf16
    autocast in channels_last. ``folded``'s values are not changed (its memory format
    may be: the caller runs it in channels_last anyway)."""
    if not any(_pairs(folded)):
        return folded, 0
    try:
        fused = copy.deepcopy(folded).eval()
    except Exception:  # a model that cannot be copied runs as it is
        return folded, 0
    pairs = _pairs(fused)
    for parent, conv_name, rest_name, (attribute, scalars) in pairs:
        conv = parent._modules[conv_name]
        parent._modules[conv_name] = FusedConvActivation(conv, attribute, scalars)
        parent._modules[rest_name] = nn.Identity()
    try:
        with torch.autocast("cpu", enabled=False):
            same = _close(check(folded, sample), check(fused, sample), 1e-4)
        if same:  # and as the fast path runs it: bf16, channels_last (exact where measured)
            layout = torch.channels_last if sample.dim() == 4 else torch.contiguous_format
            x = sample.contiguous(memory_format=layout)
            folded.to(memory_format=layout)
            fused.to(memory_format=layout)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                same = _close(check(folded, x), check(fused, x), 1e-2)
    except RuntimeError:  # oneDNN refused a shape or a dtype: run unfused
        return folded, 0
    return (fused, len(pairs)) if same else (folded, 0)


def _close(expected: torch.Tensor, got: torch.Tensor, tolerance: float) -> bool:
    """Within ``tolerance`` of the largest value of ``expected``."""
    expected, got = expected.float(), got.float()
    scale = expected.abs().max().clamp_min(1e-6)
    return expected.shape == got.shape and bool((got - expected).abs().max() <= tolerance * scale)


def _pairs(model: nn.Module) -> list[tuple[nn.Module, str, str, tuple[str, list[float]]]]:
    out = []
    for parent in model.modules():
        names = list(parent._modules)
        for conv, rest in zip(names, names[1:], strict=False):
            activation = _fusable_rest(parent._modules[rest])
            if activation is not None and _fusable_conv(parent._modules[conv]):
                out.append((parent, conv, rest, activation))
    return out
