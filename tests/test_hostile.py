"""Hostile input, end to end: image bytes and weight files built to break the loaders.

- Images: hypothesis builds valid images in every mode/format pair Pillow can write,
  at random sizes, then damages them; ``decode_image`` must give an RGB image or
  headstart's ``ImageDecodeError``, never another exception and never a hang.
- Weights: a seeded fuzz loop damages ``.safetensors`` and ``.pth`` files (raw bytes,
  and structure: the pickle inside a valid zip, the safetensors JSON header);
  ``read_state_dict`` and ``create_backbone`` must raise ``WeightsError`` or load
  finite weights. The cases fuzzing found are pinned below as regressions.
- Malicious pickles: refused by the library and by the CLI; the payload never runs.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import signal
import struct
import warnings
import zipfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from fixtures_images import noise_folder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file

from headstart.backbones.registry import create_backbone
from headstart.backbones.weights import read_state_dict
from headstart.cli import main
from headstart.data.arrays import from_arrays
from headstart.data.decode import DecodeOptions, decode_image
from headstart.errors import ConfigError, DataError, ImageDecodeError, WeightsError
from headstart.estimator.image_classifier import ImageClassifier
from headstart.features.extract import extract_features
from headstart.train.config import TrainConfig
from headstart.train.probe import fit_linear_probe

TINY = "test_efficientnet"


class Hang(BaseException):
    """Raised by the alarm: a BaseException, so no ``except Exception`` can swallow it."""


def within(seconds: float, call: Callable[[], object]) -> object:
    """Run ``call``; a hang fails the test instead of stalling the suite."""

    def alarm(signum: int, frame: object) -> None:
        raise Hang(f"no result after {seconds}s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return call()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ----------------------------------------------------------------------- images

_MODES = ("1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LA", "PA", "I", "I;16", "F", "RGBX")
_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "TGA", "PCX", "SGI", "IM")
_FORMATS += ("JPEG2000", "QOI", "DDS", "SPIDER", "XBM", "ICO")


def _as_mode(image: Image.Image, mode: str) -> Image.Image:
    try:
        return image.convert(mode)
    except (ValueError, OSError):
        return Image.new(mode, image.size)


def _writable_pairs() -> list[tuple[str, str]]:
    """(mode, format) pairs this Pillow both writes and reads back, found by trying."""
    pairs = []
    sample = Image.new("RGB", (5, 3), (10, 200, 30))
    for mode in _MODES:
        for fmt in _FORMATS:
            buffer = io.BytesIO()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    _as_mode(sample, mode).save(buffer, format=fmt)
                    Image.open(io.BytesIO(buffer.getvalue())).load()
            except Exception:  # noqa: BLE001 - not writable in this mode: not a candidate
                continue
            pairs.append((mode, fmt))
    return pairs


WRITABLE = _writable_pairs()
ORIENTED_FORMATS = {"JPEG", "PNG", "TIFF", "WEBP"}  # where Pillow writes EXIF


@st.composite
def valid_images(draw: st.DrawFn) -> tuple[bytes, tuple[int, int]]:
    """An encoded image of random content, mode, format and size; and its displayed size."""
    mode, fmt = draw(st.sampled_from(WRITABLE))
    width, height = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = _as_mode(Image.fromarray(pixels), mode)
    options: dict[str, object] = {}
    orientation = 1
    if fmt in ORIENTED_FORMATS and draw(st.booleans()):
        orientation = draw(st.integers(1, 8))
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif
    if fmt in ("GIF", "PNG", "WEBP", "TIFF") and draw(st.booleans()):
        frames = [_as_mode(Image.fromarray(255 - pixels), mode)]
        options.update(save_all=True, append_images=frames)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image.save(buffer, format=fmt, **options)
    shown = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    return buffer.getvalue(), shown


def damaged(data: bytes, cut: int, edits: list[tuple[int, int, int]]) -> bytes:
    """Truncate, then overwrite, insert or delete bytes at the given positions."""
    out = bytearray(data[: max(1, len(data) - cut)])
    for kind, position, value in edits:
        if not out:
            break  # an empty file is a case of its own ("empty file")
        at = position % len(out)
        if kind == 0:
            out[at] = value
        elif kind == 1:
            out[at:at] = bytes([value]) * (1 + value % 8)
        elif len(out) > 1:
            del out[at : at + 1 + value % 8]
    return bytes(out)


def assert_rgb_or_decode_error(data: bytes, options: DecodeOptions) -> Image.Image | None:
    try:
        image, _ = within(20, lambda: decode_image(data, options, name="fuzz"))
    except ImageDecodeError as error:
        assert error.source == "fuzz" and error.reason
        return None
    assert image.mode == "RGB" and image.width >= 1 and image.height >= 1
    assert len(image.getbands()) == 3
    image.getpixel((0, 0))  # fully loaded: reading pixels raises nothing later
    return image


# A small pixel limit keeps damaged headers that claim tens of megapixels from
# allocating them; the limit itself is tested in test_data.py.
SMALL_LIMIT = DecodeOptions(max_pixels=1 << 20)
FUZZ = settings(
    max_examples=150,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,  # the same examples on every run: a failure is reproducible
)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
@FUZZ
@given(image=valid_images())
def test_any_valid_image_decodes_to_rgb_at_its_displayed_size(
    image: tuple[bytes, tuple[int, int]],
) -> None:
    data, shown = image
    decoded = assert_rgb_or_decode_error(data, DecodeOptions())
    assert decoded is not None, "a valid image was refused"
    if not data.startswith(b"\0\0\1\0"):  # ICO stores several sizes of its own choosing
        assert decoded.size == shown


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
@FUZZ
@given(
    image=valid_images(),
    cut=st.integers(0, 4000),
    edits=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 10**6), st.integers(0, 255)), max_size=6
    ),
)
def test_damaged_images_give_rgb_or_image_decode_error_only(
    image: tuple[bytes, tuple[int, int]], cut: int, edits: list[tuple[int, int, int]]
) -> None:
    assert_rgb_or_decode_error(damaged(image[0], cut, edits), SMALL_LIMIT)


MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*"]
MAGIC += [b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"P6\n", b"\x00\x00\x01\x00", b"<html>", b"\x1f\x8b"]


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
@FUZZ
@given(magic=st.sampled_from(MAGIC), body=st.binary(max_size=600))
def test_random_bytes_behind_any_magic_number_give_rgb_or_image_decode_error(
    magic: bytes, body: bytes
) -> None:
    assert_rgb_or_decode_error(magic + body, SMALL_LIMIT)


# ---------------------------------------------------------------------- weights


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in timm.create_model(TINY).state_dict().items()}
    folder = tmp_path_factory.mktemp("weights")
    save_file(state, str(folder / "w.safetensors"))
    torch.save(state, folder / "w.pth")
    return {suffix: (folder / f"w{suffix}").read_bytes() for suffix in (".safetensors", ".pth")}


def raw_mutation(data: bytes, rng: random.Random) -> bytes:
    """Byte-level damage, biased towards the headers and trailers where structure lives."""
    out = bytearray(data)

    def position() -> int:
        roll = rng.random()
        if roll < 0.4:
            return rng.randrange(min(len(out), 4096))
        if roll < 0.7:
            return max(0, len(out) - 1 - rng.randrange(min(len(out), 4096)))
        return rng.randrange(len(out))

    kind = rng.choice(("overwrite", "truncate", "zero", "insert", "delete", "duplicate"))
    at = position()
    if kind == "overwrite":
        for _ in range(rng.randint(1, 8)):
            out[position()] = rng.randrange(256)
    elif kind == "truncate":
        del out[at:]
    elif kind == "zero":
        span = rng.randint(1, 64)
        out[at : at + span] = bytes(len(out[at : at + span]))
    elif kind == "insert":
        out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif kind == "delete":
        del out[at : at + rng.randint(1, 16)]
    else:
        source = position()
        out[at:at] = out[source : source + rng.randint(1, 32)]
    return bytes(out)


def pth_mutation(data: bytes, rng: random.Random) -> bytes:
    """A valid zip (right CRCs) around a damaged pickle, storage, version or byte order,
    so the safe unpickler itself meets the damage instead of the zip reader."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = [(name, archive.read(name)) for name in archive.namelist()]
    storages = [name for name, _ in members if "/data/" in name]
    target = rng.choice(["pickle"] * 6 + ["storage", "version", "byteorder", "drop"])
    victim = rng.choice(storages)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, content in members:
            damage = name.endswith("data.pkl") if target == "pickle" else name == victim
            if target in ("pickle", "storage") and damage:
                content = raw_mutation(content, rng)
            elif target == "version" and name.endswith("/version"):
                content = rng.choice([b"", b"99\n", b"x", b"-1\n"])
            elif target == "byteorder" and name.endswith("/byteorder"):
                content = rng.choice([b"big", b"", b"middle"])
            elif target == "drop" and name == victim:
                continue
            archive.writestr(name, content)
    return out.getvalue()


def safetensors_mutation(data: bytes, rng: random.Random) -> bytes:
    """A well-framed file whose JSON header lies about dtypes, shapes, offsets or length."""
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + length])
    body = data[8 + length :]
    key = rng.choice([k for k in header if k != "__metadata__"])
    kind = rng.choice(["dtype", "shape", "offsets", "drop", "metadata", "not-a-dict", "body"])
    kind = rng.choice([kind, "length"]) if rng.random() < 0.15 else kind
    if kind == "dtype":
        header[key]["dtype"] = rng.choice(["F16", "BF16", "F64", "I8", "BOOL", "I64", "XX", 3])
    elif kind == "shape":
        header[key]["shape"] = rng.choice([[], [-1], [10**12], [0], ["a"], [2.5], None, [3, 10**9]])
    elif kind == "offsets":
        header[key]["data_offsets"] = rng.choice([[0, 0], [10**12, 10**12 + 4], [8, 4], [-1, 4]])
    elif kind == "drop":
        del header[key]["dtype"]
    elif kind == "metadata":
        header["__metadata__"] = rng.choice([{"a": 1}, [1], "x", None])
    elif kind == "not-a-dict":
        header = rng.choice([[1, 2], "text", 3, None])
    elif kind == "body":
        body = body[: rng.randrange(len(body))]
    encoded = json.dumps(header).encode()
    size = len(encoded)
    if kind == "length":
        size = rng.choice([0, 1, size + 1, size - 1, 10**10, 2**63])
    return struct.pack("<Q", size) + encoded + body


def assert_finite(model: torch.nn.Module) -> None:
    bad = [
        name
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point() and not torch.isfinite(tensor).all()
    ]
    assert not bad, f"non-finite weights loaded: {bad[:3]}"


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_damaged_weight_files_raise_weights_error_or_load_finite(
    suffix: str, weight_files: dict[str, bytes], tmp_path: Path
) -> None:
    """150 mutations per format (fixed seed): raw bytes, and structure-aware ones."""
    rng = random.Random(f"headstart-{suffix}")
    original = weight_files[suffix]
    structural = pth_mutation if suffix == ".pth" else safetensors_mutation
    path = tmp_path / f"mutant{suffix}"
    outcomes = {"refused": 0, "read": 0, "backbone": 0}
    for index in range(150):
        mutate = raw_mutation if index % 2 else structural
        path.write_bytes(mutate(original, rng))
        try:
            tensors = read_state_dict(path)
        except WeightsError as error:
            assert str(path) in str(error)
            outcomes["refused"] += 1
            read = False
        else:
            assert all(isinstance(value, torch.Tensor) for value in tensors.values())
            outcomes["read"] += 1
            read = True
        if read or index % 10 == 0:  # every file that reads, and some that do not
            try:
                backbone = create_backbone(TINY, weights=path)
            except WeightsError as error:
                assert str(path) in str(error)
            else:
                assert_finite(backbone.model)
                outcomes["backbone"] += 1
    assert outcomes["refused"] > 100  # the mutations really did damage the files


def _zip_with_pickle(original: bytes, pickled: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(original)) as archive:
        members = [(name, archive.read(name)) for name in archive.namelist()]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, content in members:
            archive.writestr(name, pickled if name.endswith("data.pkl") else content)
    return out.getvalue()


@pytest.mark.parametrize(
    "pickled, escaped_as",
    [
        (b"\x80\x02J\x01\x00", "struct.error"),  # BININT cut short
        (b"\x80\x02K\x01Q.", "AssertionError"),  # a persistent id that is not a tuple
    ],
    ids=["struct.error", "AssertionError"],
)
def test_damaged_pickles_fuzzing_found_are_weights_errors(
    pickled: bytes, escaped_as: str, weight_files: dict[str, bytes], tmp_path: Path
) -> None:
    """torch.load(weights_only=True) raised these types; read_state_dict let them escape."""
    path = tmp_path / "found.pth"
    path.write_bytes(_zip_with_pickle(weight_files[".pth"], pickled))
    with pytest.raises(WeightsError) as refused:
        read_state_dict(path)
    assert str(path) in str(refused.value)
    assert f"({escaped_as}:" in str(refused.value)  # the type stays visible


def _with_conv_stem(tensor_from: Callable[[torch.Tensor], torch.Tensor]) -> dict:
    state = {k: v.contiguous() for k, v in timm.create_model(TINY).state_dict().items()}
    state["conv_stem.weight"] = tensor_from(state["conv_stem.weight"])
    return state


def _nan_complex(weight: torch.Tensor) -> torch.Tensor:
    real = weight.clone()
    real[0, 0, 0, 0] = float("nan")
    return torch.complex(real, torch.zeros_like(real))


def _beyond_float32(weight: torch.Tensor) -> torch.Tensor:
    wide = weight.double()
    wide[0, 0, 0, 0] = 1e300  # finite in float64, inf once copied into float32
    return wide


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    "tensor_from, expected",
    [
        (lambda w: w.to_sparse(), "sparse"),
        (lambda w: torch.empty(w.shape, device="meta"), "meta"),
        (_nan_complex, "complex"),
        (_beyond_float32, "infinite values once cast"),
    ],
    ids=["sparse", "meta", "complex-with-nan", "float64-beyond-float32"],
)
def test_tensors_that_cannot_be_weights_are_refused(
    tensor_from: Callable[[torch.Tensor], torch.Tensor], expected: str, tmp_path: Path
) -> None:
    """Found while fuzzing: sparse and meta escaped as NotImplementedError/RuntimeError;
    complex and float64 tensors loaded non-finite weights into the model."""
    path = tmp_path / "odd.pth"
    torch.save(_with_conv_stem(tensor_from), path)
    with pytest.raises(WeightsError, match=expected) as refused:
        create_backbone(TINY, weights=path)
    assert str(path) in str(refused.value) and "conv_stem.weight" in str(refused.value)


# ------------------------------------------------------------- malicious pickles


class _Payload:
    """Unpickling this runs ``exec``, which would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _evil(folder: Path, kind: str) -> tuple[Path, Path]:
    """A weights file whose unpickling would create ``marker``; ``kind`` picks the disguise."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "payload-ran"
    state = {k: v.contiguous() for k, v in timm.create_model(TINY).state_dict().items()}
    state["__payload__"] = _Payload(marker)
    if kind == "pth":  # torch's zip format
        path = folder / "evil.pth"
        torch.save(state, path)
    elif kind == "legacy":  # a bare pickle
        path = folder / "evil.bin"
        path.write_bytes(pickle.dumps({"w": _Payload(marker)}, protocol=2))
    else:  # a pickle under a safetensors name
        path = folder / "evil.safetensors"
        torch.save(state, path)
    return path, marker


def _tiny_folder(root: Path) -> Path:
    return noise_folder(root)


def test_malicious_pickle_is_refused_by_the_estimator(tmp_path: Path) -> None:
    path, marker = _evil(tmp_path / "w", "pth")
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    dataset = from_arrays(images, [0, 1] * 4)
    clf = ImageClassifier(TINY, weights=path)
    with pytest.raises(WeightsError) as refused:
        clf.fit(dataset)
    assert str(path) in str(refused.value) and "builtins.exec" in str(refused.value)
    assert not marker.exists()
    assert not hasattr(clf, "model_")


@pytest.mark.parametrize("kind", ["pth", "legacy", "named-safetensors"])
def test_malicious_pickle_is_refused_by_the_cli(tmp_path: Path, capsys, kind: str) -> None:
    path, marker = _evil(tmp_path / "w", kind)
    data, out = _tiny_folder(tmp_path / "data"), tmp_path / "model"
    arguments = ["train", str(data), "--weights", str(path), "--backbone", TINY]
    code = main([*arguments, "--image-size", "32", "--no-cache", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("headstart: error:") and str(path) in err
    assert not marker.exists()
    assert not (out / "model.safetensors").exists()


def test_a_pickle_posing_as_a_saved_model_is_refused_by_predict(tmp_path: Path, capsys) -> None:
    """A model folder is read as JSON + safetensors: a planted pickle is never unpickled."""
    data = _tiny_folder(tmp_path / "data")
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    config = ImageClassifier(TINY, "feature-extraction").resolved_config()
    clf = ImageClassifier(
        TINY, "feature-extraction", config.replace(image_size=32, device="cpu"), weights="none"
    )
    model = clf.fit(from_arrays(images, [0, 1] * 4)).save(tmp_path / "model")
    evil, marker = _evil(tmp_path / "w", "pth")
    (model / "model.safetensors").write_bytes(evil.read_bytes())
    assert main(["predict", str(model), str(data / "a" / "0.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.safetensors" in err
    assert not marker.exists()


# ------------------------------------------------- hostile arguments (issue 11.2)


@pytest.fixture(scope="module")
def tiny_classifier() -> ImageClassifier:
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    config = ImageClassifier(TINY, "feature-extraction").resolved_config()
    config = config.replace(image_size=32, device="cpu")
    return ImageClassifier(TINY, "feature-extraction", config, weights="none").fit(
        from_arrays(images, [0, 1] * 4)
    )


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        (None, "NoneType"),
        (3.5, "float"),
        (np.zeros((4, 4), dtype=np.float32), "dtype float32"),
        (Image.new("RGB", (0, 0)), "no pixels (0x0)"),
        (Image.new("L", (5, 0)), "no pixels (5x0)"),
    ],
)
def test_a_bad_item_in_predicts_list_is_a_data_error_naming_its_index(
    tiny_classifier: ImageClassifier, item: object, fragment: str
) -> None:
    good = Image.new("RGB", (8, 8), (9, 9, 9))
    with pytest.raises(DataError) as refused:
        tiny_classifier.predict([good, good, item])
    message = str(refused.value)
    assert "images[2]" in message and fragment in message


def test_predict_accepts_uint8_arrays_as_images(tiny_classifier: ImageClassifier) -> None:
    pixels = np.full((8, 8, 3), 9, dtype=np.uint8)
    from_array = tiny_classifier.predict_proba([pixels])
    from_pil = tiny_classifier.predict_proba([Image.fromarray(pixels)])
    np.testing.assert_allclose(from_array, from_pil, atol=1e-6)


@pytest.mark.parametrize(
    "name", ["base_lr", "head_lr", "warmup_epochs", "probe_l2", "weight_decay"]
)
@pytest.mark.parametrize("bad", [float("inf"), float("nan"), -float("inf")])
def test_train_config_refuses_non_finite_numbers(name: str, bad: float) -> None:
    with pytest.raises(ConfigError) as refused:
        TrainConfig(**{name: bad})
    assert refused.value.parameter == name and repr(bad) in str(refused.value)
    assert "finite" in str(refused.value)


def test_the_cli_refuses_a_non_finite_learning_rate(tmp_path: Path, capsys) -> None:
    data = _tiny_folder(tmp_path / "data")
    code = main(["train", str(data), "--backbone", TINY, "--weights", "none", "--base-lr", "inf"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("headstart: error: --base-lr must be") and "inf" in err


@pytest.mark.parametrize("bad", [0, -1, 2.0, "8", True])
def test_extract_features_refuses_a_bad_batch_size(bad: object) -> None:
    backbone = create_backbone(TINY, weights="none")
    dataset = from_arrays(np.zeros((2, 8, 8), dtype=np.uint8), [0, 1])
    with pytest.raises(ConfigError) as refused:
        extract_features(backbone, dataset, batch_size=bad)
    assert refused.value.parameter == "batch_size" and repr(bad) in str(refused.value)


@pytest.mark.parametrize(
    ("name", "bad"),
    [("l2", float("nan")), ("l2", float("inf")), ("l2", -1.0), ("max_iter", 1.5), ("max_iter", 0)],
)
def test_fit_linear_probe_refuses_bad_settings(name: str, bad: object) -> None:
    features, labels = np.random.default_rng(0).normal(size=(4, 3)), np.array([0, 1, 0, 1])
    with pytest.raises(ConfigError) as refused:
        fit_linear_probe(features, labels, 2, **{name: bad})
    assert refused.value.parameter == name and repr(bad) in str(refused.value)


def test_api_misuse_found_in_a_last_trial_is_named(tmp_path):
    """A last new-user trial: a missing folder argument and a device no torch knows
    gave a raw TypeError and an error blaming TrainConfig."""
    from headstart.backbones.device import select_device
    from headstart.errors import ConfigError
    from headstart.estimator.image_classifier import ImageClassifier

    with pytest.raises(ConfigError, match="'folder' parameter of ImageClassifier.load"):
        ImageClassifier.load(None)
    with pytest.raises(ConfigError, match="'device' parameter of select_device"):
        select_device("tpu")
    with pytest.raises(ConfigError, match="'device' parameter of select_device"):
        select_device(3)
