"""Weight sources: safe loading, refusal of unsafe pickles, shape checks, hub offline."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from headstart.backbones import weights as weights_module
from headstart.backbones.registry import create_backbone
from headstart.backbones.weights import BundledWeights, load_bundled, read_state_dict
from headstart.errors import WeightsError

TINY = "test_efficientnet"


class _Payload:
    """Unpickling this runs ``exec``, which would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _malicious_pth(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pth"
    model = timm.create_model(TINY)
    state = dict(model.state_dict())
    state["__payload__"] = _Payload(marker)
    torch.save(state, path)
    return path, marker


def test_malicious_pth_is_refused_and_payload_never_runs(tmp_path):
    path, marker = _malicious_pth(tmp_path)
    with pytest.raises(WeightsError) as caught:
        read_state_dict(path)
    message = str(caught.value)
    assert str(path) in message
    assert "builtins.exec" in message
    assert not marker.exists()


def test_malicious_legacy_pickle_is_refused(tmp_path):
    """A plain (non-zip) pickle goes through the same safe path."""
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps({"w": _Payload(marker)}, protocol=2))
    with pytest.raises(WeightsError) as caught:
        read_state_dict(path)
    assert str(path) in str(caught.value)
    assert not marker.exists()


def test_malicious_pth_refused_through_create_backbone(tmp_path):
    path, marker = _malicious_pth(tmp_path)
    with pytest.raises(WeightsError, match="evil.pth"):
        create_backbone(TINY, weights=path)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_file_weights_load_exactly(tmp_path, suffix):
    source = timm.create_model(TINY)
    path = tmp_path / f"w{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    backbone = create_backbone(TINY, weights=path)
    assert backbone.weights.source == "file"
    assert backbone.weights.sha256 and len(backbone.weights.sha256) == 64
    for key, value in backbone.model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_head_of_another_size_is_skipped_not_fatal(tmp_path):
    source = timm.create_model(TINY, num_classes=7)
    path = tmp_path / "seven.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    backbone = create_backbone(TINY, weights=path)
    assert set(backbone.weights.skipped_keys) == {"classifier.weight", "classifier.bias"}
    assert torch.equal(backbone.model.conv_stem.weight, source.conv_stem.weight)


def test_missing_body_tensor_is_named(tmp_path):
    state = {k: v.contiguous() for k, v in timm.create_model(TINY).state_dict().items()}
    del state["conv_stem.weight"]
    path = tmp_path / "partial.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsError, match="conv_stem.weight"):
        create_backbone(TINY, weights=path)


def test_wrong_shape_is_named(tmp_path):
    state = {k: v.contiguous() for k, v in timm.create_model(TINY).state_dict().items()}
    state["conv_stem.weight"] = torch.zeros(1, 2, 3, 3)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsError, match=r"conv_stem\.weight.*\(1, 2, 3, 3\)"):
        create_backbone(TINY, weights=path)


def test_non_finite_weights_are_refused(tmp_path):
    state = {k: v.contiguous() for k, v in timm.create_model(TINY).state_dict().items()}
    state["conv_stem.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsError, match="NaN"):
        create_backbone(TINY, weights=path)


@pytest.mark.parametrize(
    "name, content",
    [
        ("trunc.safetensors", None),
        ("empty.pth", b""),
        ("text.pth", b"<html>not weights</html>"),
        ("zip.pth", "zip"),
        ("w.onnx", b"whatever"),
    ],
)
def test_corrupt_files_raise_weights_error_naming_the_file(tmp_path, name, content):
    path = tmp_path / name
    if content is None:
        state = {k: v.contiguous() for k, v in timm.create_model(TINY).state_dict().items()}
        save_file(state, str(path))
        path.write_bytes(path.read_bytes()[:200])
    elif content == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("junk/data.pkl", b"\x80\x02garbage")
    else:
        path.write_bytes(content)
    with pytest.raises(WeightsError) as caught:
        read_state_dict(path)
    assert name in str(caught.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(WeightsError, match="nowhere.safetensors"):
        read_state_dict(tmp_path / "nowhere.safetensors")


def test_bundled_sha256_mismatch_is_refused(monkeypatch):
    entry = weights_module.BUNDLED_WEIGHTS["tf_efficientnet_lite0"]
    fake = BundledWeights(**{**entry.__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(weights_module.BUNDLED_WEIGHTS, "tf_efficientnet_lite0", fake)
    model = timm.create_model("tf_efficientnet_lite0")
    with pytest.raises(WeightsError, match="sha256"):
        load_bundled(model, "tf_efficientnet_lite0")


def test_bundled_weights_do_not_fit_another_architecture():
    model = timm.create_model(TINY)
    with pytest.raises(WeightsError, match="No bundled weights"):
        load_bundled(model, TINY)


def test_hub_offline_error_names_backbone_and_alternative(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-headstart-hf-home")
    with pytest.raises(WeightsError) as caught:
        create_backbone("resnet18", weights="hub")
    message = str(caught.value)
    assert "resnet18" in message
    assert "offline" in message
    assert "weights set to a .safetensors or .pth file" in message  # the API's words
    assert "--weights" not in message  # the CLI words its own flags


def test_hub_loader_is_real_code_and_reads_local_cache(monkeypatch, tmp_path):
    """Offline, timm's hub path still loads weights found in the local cache."""
    source = timm.create_model(TINY)
    calls = []

    def fake_create(name, pretrained=False, **kwargs):
        calls.append((name, pretrained))
        from huggingface_hub import constants

        assert constants.HF_HUB_OFFLINE  # our offline switch is what the hub client sees
        return source

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(timm, "create_model", fake_create)
    backbone = create_backbone(TINY, weights="hub")
    assert calls == [(TINY, True)]
    assert backbone.weights.source == "hub"
    assert backbone.model is source
