"""The CPU/GPU fast path for frozen inference: BatchNorm folded into the convolutions,
channels_last, reduced precision where the hardware has it, and one vectorised
scaling per batch. Used by feature extraction and by prediction alike."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from timm.data.transforms import MaybeToTensor
from timm.layers import BatchNormAct2d, Conv2dSame
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision import transforms

from headstart.backbones.preprocessing import Preprocessing
from headstart.features.fusion import fuse_activations, fusion_available
from headstart.features.layers import pooled_features

__all__ = [
    "fast_path_available",
    "faithful_logits",
    "fold_batchnorm",
    "inference_model",
    "inference_transforms",
    "micro_batches",
    "numerics",
    "numerics_tag",
    "split_transform",
]

FOLD_CHECK_IMAGES = 2  # random images that check a BatchNorm-folded copy against its model


def fast_path_available(device: torch.device) -> bool:
    """Whether reduced-precision autocast pays off on this device."""
    if device.type == "cuda":
        return True
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(cpu, name, lambda: False)() for name in checks)
    return False


# The fast path's answer must be the model's: a row whose top classes are closer than
# the fast path's own error could come out in another order than in fp32. That error is
# measured on the model itself, once, on a fixed seeded batch (fp32 against the fast
# path), rather than assumed: bf16 keeps 8 significant bits per operation, and how
# they add up depends on the network. Fixed, so that an image's answer never depends
# on what was predicted before it or beside it.
# Only the top class is guaranteed: keeping the order of the top 3 too rechecks most rows
# of a 10-class model (its lower classes sit close together), slower than fp32 itself
# (docs/BENCHMARKS.md section 11).
FAITHFUL_TOP = 1  # the top classes whose order must be fp32's
CALIBRATION_ROWS = 16  # seeded images the error is measured on
SAFETY = 2.0  # margin over the error measured: gaps below 2 x SAFETY x error recheck


def faithful_logits(
    logits: torch.Tensor, batch: torch.Tensor, model: nn.Module, fast: nn.Module
) -> torch.Tensor:
    """``logits`` from the fast path (``fast``), with every row whose top classes are
    closer than the fast path's measured error recomputed by ``model`` in fp32, so that
    its top ``FAITHFUL_TOP`` classes (the predicted one) are the fp32 model's, while rows
    with clear margins (most) keep the fast path's speed."""
    if not len(logits) or logits.shape[1] < 2:
        return logits
    error = _fast_error(model, fast, batch)
    k = min(FAITHFUL_TOP + 1, logits.shape[1])
    top = logits.topk(k, dim=1).values
    gaps = (top[:, :-1] - top[:, 1:]).min(dim=1).values
    close = (gaps <= 2 * SAFETY * error).nonzero().flatten()
    if not len(close):
        return logits
    logits = logits.clone()
    logits[close] = _fp32_logits(model, batch[close])
    return logits


def _fast_error(model: nn.Module, fast: nn.Module, batch: torch.Tensor) -> float:
    """The largest logit difference between ``fast`` (under the caller's autocast) and
    ``model`` in fp32 on a seeded batch shaped like ``batch``; kept on ``fast``."""
    key = (tuple(batch.shape[1:]), str(batch.device))
    kept = fast.__dict__.setdefault("_headstart_fast_error", {})
    if key not in kept:
        generator = torch.Generator().manual_seed(0)
        probe = torch.randn((CALIBRATION_ROWS, *batch.shape[1:]), generator=generator)
        probe = probe.to(batch.device)
        layout = torch.channels_last if probe.dim() == 4 else torch.contiguous_format
        approx = fast(probe.contiguous(memory_format=layout)).float()
        kept[key] = float((_fp32_logits(model, probe) - approx).abs().max())
    return kept[key]


def _fp32_logits(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    with torch.autocast(device_type=batch.device.type, enabled=False):
        return model(batch.float().contiguous()).float()


@contextlib.contextmanager
def numerics(model: nn.Module, device: torch.device, fast: bool) -> Iterator[None]:
    """Autocast on the fast path; fp32 otherwise. The model's own weights stay fp32."""
    if fast and fast_path_available(device):
        dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            dtype = torch.bfloat16
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield
    else:
        yield


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    """A plain Conv2d followed by a plain BatchNorm2d (or timm's BatchNormAct2d) over its
    output channels, with running statistics to fold."""
    return (
        type(conv) in (nn.Conv2d, Conv2dSame)  # not weight-standardised convs (StdConv2d)
        and type(norm) in (nn.BatchNorm2d, BatchNormAct2d)
        and norm.running_mean is not None
        and norm.num_features == conv.out_channels
    )


def _fold_pairs(model: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """(parent, conv name, norm name) for each conv whose next registered sibling is its norm."""
    pairs = []
    for parent in model.modules():
        names = list(parent._modules)
        for conv, norm in zip(names, names[1:], strict=False):
            if _foldable(parent._modules[conv], parent._modules[norm]):
                pairs.append((parent, conv, norm))
    return pairs


def fold_batchnorm(
    model: nn.Module, sample: torch.Tensor, stages: dict[str, int | None] | None = None
) -> tuple[nn.Module, int]:
    """An inference copy of ``model`` with each BatchNorm folded into the conv before it.

    In eval mode a BatchNorm is an affine map per channel, so it can be merged into the
    preceding convolution's weights and bias: one memory pass fewer per layer, which on
    CPU made the bf16 forward pass of EfficientNet-Lite0 ~1.5x faster
    (docs/BENCHMARKS.md). Pairs are found by registration order (conv, then its norm),
    which is how timm's convolutional blocks are written; because that is a convention,
    not a guarantee, the folded copy must reproduce the model's output on ``sample`` in
    fp32 (the pooled features of ``stages``, when given), or the model itself is
    returned. ``model`` must be in eval mode. Returns (model to run, norms folded); the
    given model is never changed.
    """

    def output(net: nn.Module) -> torch.Tensor:
        return _output(net, sample, stages)

    if not _fold_pairs(model):
        return model, 0
    try:
        folded = copy.deepcopy(model).eval()
    except Exception:  # a model that cannot be copied runs as it is
        return model, 0
    pairs = _fold_pairs(folded)
    with torch.no_grad():
        for parent, conv_name, norm_name in pairs:
            conv, norm = parent._modules[conv_name], parent._modules[norm_name]
            conv.weight, conv.bias = fuse_conv_bn_weights(
                conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.eps,
                norm.weight, norm.bias,
            )  # fmt: skip
            rest = nn.Identity()
            if isinstance(norm, BatchNormAct2d):
                rest = nn.Sequential(norm.drop, norm.act)
            parent._modules[norm_name] = rest
        with _full_fp32():
            expected = output(model).float()
            got = output(folded).float()
    # Relative to the output's largest value: elements near zero of a large output
    # carry that scale's fp32 rounding, and a wrong fold is off by far more.
    scale = expected.abs().max().clamp_min(1e-6)
    if expected.shape != got.shape or (got - expected).abs().max() > 1e-3 * scale:
        return model, 0
    return folded, len(pairs)


def _output(
    net: nn.Module, sample: torch.Tensor, stages: dict[str, int | None] | None
) -> torch.Tensor:
    """What a check compares: the output, or the pooled features of ``stages``."""
    if stages is None:
        return net(sample)
    return torch.cat(list(pooled_features(net, sample, stages).values()), dim=1)


@contextlib.contextmanager
def _full_fp32() -> Iterator[None]:
    """True fp32 on CUDA for the fold check: no TF32 in convolutions or matmuls (PyTorch
    allows it by default on recent GPUs, and its rounding would fail a correct fold)."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def inference_model(
    model: nn.Module,
    device: torch.device,
    fast: bool,
    input_size: Sequence[int],
    stages: dict[str, int | None] | None = None,
) -> nn.Module:
    """The eval-mode ``model`` to run for inference: on the fast path a BatchNorm-folded
    copy in channels_last, on the CPU with its activations fused into the convolutions
    before them (``headstart.features.fusion``; ``model`` itself when nothing folds:
    the caller puts its memory format back afterwards); otherwise ``model`` unchanged.
    Inference only: the fused copy has no gradient."""
    if not (fast and fast_path_available(device)):
        return model
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(FOLD_CHECK_IMAGES, *input_size, generator=generator).to(device)
    with torch.inference_mode():
        folded, _ = fold_batchnorm(model, sample, stages)
        if folded is not model and fusion_available(device):
            folded, _ = fuse_activations(folded, lambda net, x: _output(net, x, stages), sample)
    return folded.to(memory_format=torch.channels_last)


# Pixels per forward pass on the CPU fast path. A loader's batch of 64 large images holds
# activation maps far past the caches (64 x 32 x 112 x 112 in bf16 is 51 MB); run in
# equal slices of at most about a million input pixels (16 images at 224 or 240 px,
# 13 at 260, all 64 at 112): EfficientNet-Lite at its own sizes ran 1.3-1.4x faster
# per image than at 64 (docs/BENCHMARKS.md section 20). Elsewhere (a GPU, fp32) the
# batch runs whole.
MICRO_BATCH_PIXELS = 1 << 20


def micro_batches(
    images: torch.Tensor, device: torch.device, fast: bool
) -> tuple[torch.Tensor, ...]:
    """``images`` (B, C, H, W) in the slices one forward pass should take."""
    if device.type != "cpu" or not (fast and fast_path_available(device)) or images.dim() != 4:
        return (images,)
    # Equal slices (sizes differ by one at most): 64 images at 130 px are two of 32,
    # not 62 and 2.
    slices = -(-len(images) * images.shape[-2] * images.shape[-1] // MICRO_BATCH_PIXELS)
    return images.tensor_split(min(max(slices, 1), max(len(images), 1)))


def inference_transforms(
    preprocessing: Preprocessing, fast: bool
) -> tuple[Callable, Callable | None]:
    """(per-image transform, batch collate or None for the default) for inference: on
    the fast path, geometry per image (PIL) and one vectorised scaling per batch."""
    transform = preprocessing.transform(training=False)
    split = split_transform(transform) if fast else None
    return split if split is not None else (transform, None)


class _BatchFinish:
    """Collate: ``ToTensor`` + ``Normalize`` on a whole batch of uint8 RGB arrays at once.

    The same float32 operations, element by element, as the per-image transforms
    (divide by 255, subtract the mean, divide by the std), so the result is
    bit-identical; it only saves their per-image overhead, which on a 2-core CPU is
    half of all preprocessing time. Anything but same-sized uint8 RGB images goes
    through the per-image transforms instead.
    """

    def __init__(self, to_tensor: Callable, normalize: transforms.Normalize) -> None:
        self.to_tensor = to_tensor
        self.normalize = normalize
        self.mean = torch.as_tensor(normalize.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.as_tensor(normalize.std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, items: list[tuple[Any, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        images = [image for image, _ in items]
        labels = torch.as_tensor([label for _, label in items])
        arrays = [np.asarray(image) for image in images]
        shape = arrays[0].shape
        uniform = all(
            a.dtype == np.uint8 and a.ndim == 3 and a.shape == shape and a.shape[2] == 3
            for a in arrays
        )
        if not uniform:
            return torch.stack([self.normalize(self.to_tensor(i)) for i in images]), labels
        # (B, H, W, C) viewed as (B, C, H, W) is already channels_last, the layout the
        # fast path runs in: no copy to reorder it. In-place ops: one float buffer.
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return batch.to(torch.float32).div_(255).sub_(self.mean).div_(self.std), labels


def split_transform(transform: Any) -> tuple[Callable, Callable] | None:
    """(per-image geometry, batch collate) for a ``Compose`` ending in ToTensor + Normalize."""
    steps = getattr(transform, "transforms", None)
    if not steps or len(steps) < 2:
        return None
    to_tensor, normalize = steps[-2], steps[-1]
    if type(to_tensor) not in (transforms.ToTensor, MaybeToTensor) or not isinstance(
        normalize, transforms.Normalize
    ):
        return None
    return transforms.Compose(steps[:-2]), _BatchFinish(to_tensor, normalize)


def numerics_tag(device: torch.device, fast: bool) -> str:
    """The arithmetic features were computed with, for the cache key."""
    if not (fast and fast_path_available(device)):
        return "fp32"
    if device.type == "cpu":
        return "cpu-bf16-bnfold"
    return "cuda-bf16-bnfold" if torch.cuda.is_bf16_supported() else "cuda-fp16-bnfold"
