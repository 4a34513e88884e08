"""The CPU fast path's conv + activation fusion and its micro-batches: the same
features as the unfused model, refused where the activation does not follow the conv."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import headstart.features.extract as extract
import headstart.features.fastpath as fastpath
from headstart.backbones.registry import create_backbone
from headstart.data.arrays import from_arrays
from headstart.features.extract import extract_features
from headstart.features.fastpath import (
    fast_path_available,
    fold_batchnorm,
    inference_model,
    micro_batches,
    numerics,
)
from headstart.features.fusion import FusedConvActivation, fuse_activations, fusion_available

CPU = torch.device("cpu")
needs_fusion = pytest.mark.skipif(
    not fusion_available(CPU), reason="this PyTorch has no oneDNN conv fusion"
)


@pytest.fixture(scope="module")
def lite():
    """EfficientNet-Lite0's graph (ReLU6 after every BatchNorm), random weights, small."""
    torch.manual_seed(0)
    return create_backbone("tf_efficientnet_lite0", weights="none", image_size=64)


def _fused_count(model: nn.Module) -> int:
    return sum(isinstance(m, FusedConvActivation) for m in model.modules())


@needs_fusion
def test_fused_copy_gives_the_folded_models_output_and_leaves_it_alone(lite):
    model = lite.model.eval()
    sample = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        folded, _ = fold_batchnorm(model, sample)
        fused, count = fuse_activations(folded, lambda net, x: net(x), sample)
        assert count > 20 and _fused_count(fused) == count
        assert _fused_count(folded) == 0  # the folded model is not changed
        x = torch.randn(4, 3, 64, 64)
        torch.testing.assert_close(fused(x), folded(x), rtol=0, atol=1e-5)
        if not fast_path_available(CPU):
            return
        # and on the fast path itself (bf16 autocast), where the saving is
        xl = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a = fused.to(memory_format=torch.channels_last)(xl).float()
            b = folded.to(memory_format=torch.channels_last)(xl).float()
        assert (a - b).abs().max() <= 0.05 * b.abs().max()


class _ActivationFirst(nn.Module):
    """A conv registered before what folding leaves of a BatchNormAct2d (drop, act), but
    the forward applies that activation to its input first: the registration order
    lies, and fusing would change the output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.rest = nn.Sequential(nn.Identity(), nn.ReLU6())

    def forward(self, x):
        return self.conv(self.rest(x) - 3.0)


@needs_fusion
def test_fusion_is_refused_where_the_activation_does_not_follow_the_conv():
    torch.manual_seed(0)
    model = nn.Sequential(_ActivationFirst()).eval()
    sample = torch.randn(2, 4, 8, 8) * 4
    with torch.inference_mode():
        fused, count = fuse_activations(model, lambda net, x: net(x), sample)
    assert fused is model and count == 0


@needs_fusion
def test_the_cpu_fast_path_runs_fused_and_extracts_the_same_features(lite, monkeypatch):
    if not fast_path_available(CPU):
        pytest.skip("no bf16 fast path on this CPU")
    run = inference_model(lite.model.eval(), CPU, True, (3, 64, 64))
    assert _fused_count(run) > 20
    lite.model.to(memory_format=torch.contiguous_format)
    rng = np.random.default_rng(0)
    data = from_arrays(rng.integers(0, 256, (40, 64, 64, 3), dtype=np.uint8), [0, 1] * 20)
    layers = ["stage-2", "final", "stage-1_2x2"]
    fused = extract_features(lite, data, layers=layers, batch_size=16)
    monkeypatch.setattr(fastpath, "fusion_available", lambda device: False)
    plain = extract_features(lite, data, layers=layers, batch_size=16)
    for layer in layers:  # exact on the CPUs measured; allow bf16's last bit elsewhere
        scale = np.abs(plain[layer]).max()
        assert np.abs(fused[layer] - plain[layer]).max() <= 1e-2 * scale, layer
    # in slices of at most 5 images (5 x 64 x 64 pixels), the same features, in order
    monkeypatch.setattr(fastpath, "MICRO_BATCH_PIXELS", 5 * 64 * 64)
    sizes = []

    def recording(images, device, fast):
        parts = fastpath.micro_batches(images, device, fast)
        sizes.extend(len(p) for p in parts)
        return parts

    monkeypatch.setattr(extract, "micro_batches", recording)
    sliced = extract_features(lite, data, layers=layers, batch_size=16)
    assert max(sizes) <= 5 and sum(sizes) == len(data)
    for layer in layers:
        scale = np.abs(plain[layer]).max()
        assert sliced[layer].shape == plain[layer].shape
        assert np.abs(sliced[layer] - plain[layer]).max() <= 1e-2 * scale, layer


def test_micro_batches_slice_by_pixels_on_the_cpu_fast_path_only():
    x = torch.zeros(64, 3, 224, 224)
    parts = micro_batches(x, CPU, True)
    if fast_path_available(CPU):
        assert [len(p) for p in parts] == [16] * 4  # 64 x 224^2 pixels: four slices
        assert max(len(p) for p in parts) * 224 * 224 <= fastpath.MICRO_BATCH_PIXELS
        assert [len(p) for p in micro_batches(torch.zeros(64, 3, 130, 130), CPU, True)] == [32] * 2
    else:
        assert len(parts) == 1
    assert len(micro_batches(x, CPU, False)) == 1  # fp32, as asked
    assert len(micro_batches(torch.zeros(64, 3, 16, 16), CPU, True)) == 1  # small: whole
    if fast_path_available(CPU):  # 7 slices of 64: sizes 10 and 9, never a stub of 4
        sizes = [len(p) for p in micro_batches(torch.zeros(64, 3, 380, 380), CPU, True)]
        assert sum(sizes) == 64 and max(sizes) - min(sizes) <= 1


@needs_fusion
def test_a_fused_model_predicts_under_autocast_in_autocasts_dtype(lite):
    if not fast_path_available(CPU):
        pytest.skip("no bf16 fast path on this CPU")
    run = inference_model(lite.model.eval(), CPU, True, (3, 64, 64))
    assert _fused_count(run) > 0
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), numerics(run, CPU, True):
        assert run.forward_features(x).dtype == torch.bfloat16
    lite.model.to(memory_format=torch.contiguous_format)
