"""DICOM files as images: windowing and inversion checked against expected pixel values on
files written from known arrays, pydicom's own test files decoded, what is refused and why,
frames as images kept on one side of a split, and 16-bit TIFF stacks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from dicom_files import pydicom_file, write_dicom
from PIL import Image

from headstart import ImageClassifier, load_folder
from headstart.backbones.registry import create_backbone
from headstart.data.decode import DecodeOptions, decode_image, frame_source
from headstart.data.split import split_dataset
from headstart.errors import ConfigError, ImageDecodeError
from headstart.features.extract import extract_features

pydicom = pytest.importorskip("pydicom")


def gray(path: Path | str, **options) -> np.ndarray:
    image, _ = decode_image(path, DecodeOptions(**options))
    pixels = np.asarray(image)
    assert (pixels[:, :, 0] == pixels[:, :, 1]).all() and (pixels[:, :, 1] == pixels[:, :, 2]).all()
    return pixels[:, :, 0]


def linear(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1, written out here from the standard, onto 0..255."""
    values = values.astype(np.float64)
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    inside = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
    out = np.where(values <= low, 0.0, np.where(values > high, 255.0, inside))
    return np.rint(out).astype(np.uint8)


RAMP = (np.arange(64, dtype=np.int16).reshape(8, 8) * 40 - 1200).astype(np.int16)


def test_the_files_window_applies_after_the_rescale(tmp_path):
    path = write_dicom(tmp_path / "ct.dcm", RAMP, slope=2.0, intercept=-24.0, window=(40, 400))
    hounsfield = RAMP.astype(np.float64) * 2.0 - 24.0
    assert (gray(path) == linear(hounsfield, 40, 400)).all()


@pytest.mark.parametrize(
    ("rule", "center", "width"),
    [("lung", -600, 1500), ("bone", 400, 1800), ("brain", 40, 80), ("-100,700", -100, 700)],
)
def test_a_preset_or_given_window_overrides_the_files(tmp_path, rule, center, width):
    path = write_dicom(tmp_path / "ct.dcm", RAMP, slope=1.0, intercept=0.0, window=(40, 400))
    assert (gray(path, dicom_window=rule) == linear(RAMP, center, width)).all()


def test_none_maps_the_full_range_of_the_stored_bits(tmp_path):
    stored = np.array([[0, 1024], [2048, 4095]], dtype=np.uint16)
    path = write_dicom(tmp_path / "cr.dcm", stored, bits_stored=12, window=(100, 10))
    expected = np.rint(stored / 4095 * 255).astype(np.uint8)
    assert (gray(path, dicom_window="none") == expected).all()
    signed = np.array([[-32768, 0], [1000, 32767]], dtype=np.int16)
    path = write_dicom(tmp_path / "signed.dcm", signed, slope=1.0, intercept=-1024.0)
    expected = np.rint((signed.astype(np.float64) + 32768) / 65535 * 255).astype(np.uint8)
    assert (gray(path) == expected).all()  # no window in the file: the full range too


def test_monochrome1_is_inverted_and_equals_monochrome2_of_the_inverted_array(tmp_path):
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 4096, size=(48, 40), dtype=np.uint16)
    one = write_dicom(tmp_path / "a" / "one" / "x.dcm", stored, photometric="MONOCHROME1",
                      bits_stored=12)  # fmt: skip
    two = write_dicom(tmp_path / "b" / "one" / "x.dcm", (4095 - stored).astype(np.uint16),
                      bits_stored=12)  # fmt: skip
    assert (gray(one) == 255 - np.rint(stored / 4095 * 255).astype(np.uint8)).all()
    assert (gray(one) == gray(two)).all()
    # ... and so the same features and the same prediction.
    for folder in (tmp_path / "a", tmp_path / "b"):
        write_dicom(folder / "two" / "y.dcm", stored[::-1].copy(), bits_stored=12)
    train = load_folder(tmp_path / "b")
    clf = ImageClassifier("test_efficientnet", "feature-extraction", weights="none")
    clf.config = clf.resolved_config().replace(image_size=32)
    clf.fit(train)
    first, second = clf.predict_proba([one]), clf.predict_proba([two])
    assert np.array_equal(first, second)
    backbone = create_backbone("test_efficientnet", weights="none", image_size=32)
    features = [
        extract_features(backbone, load_folder(folder), fast=False)["final"]
        for folder in (tmp_path / "a", tmp_path / "b")
    ]
    assert np.array_equal(features[0], features[1])


def test_a_voi_lut_is_indexed_by_the_rounded_rescaled_values(tmp_path):
    """A VOI LUT Sequence (no window): the Modality LUT's output, rounded to the nearest
    integer and kept inside the table, indexes the LUT (PS3.3 C.11.2.1.1); a fractional
    rescale must not shift or wrap the lookup."""
    from pydicom.dataset import Dataset

    stored = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 4).astype(np.uint16)  # 0..252
    path = write_dicom(tmp_path / "lut.dcm", stored, slope=0.5, intercept=0.7)
    table = np.clip(np.arange(100) * 2 + 50, 0, 255).astype(np.uint16)
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.LUTDescriptor = [100, 10, 8]  # 100 entries, first input value 10, 8 bits
    item.add_new("LUTData", "US", table.tolist())
    ds.VOILUTSequence = [item]
    ds.save_as(path)
    index = np.clip(np.rint(stored * 0.5 + 0.7), 10, 109).astype(int) - 10
    expected = table[index]
    assert expected.min() == 50 and expected.max() > 150  # both ends of the table reached
    assert (gray(path) == expected).all()


def test_a_window_width_of_zero_is_a_skip_naming_the_tag(tmp_path):
    path = write_dicom(tmp_path / "bad.dcm", RAMP, window=(40, 0))
    with pytest.raises(ImageDecodeError, match=r"WindowWidth \(0028,1051\)"):
        decode_image(path)
    assert gray(path, dicom_window="abdomen").shape == RAMP.shape  # a given window reads it


def test_bad_window_rules_are_refused_naming_the_setting():
    for rule in ("lungs", "40", "40,0", "a,b", "nan,4"):
        with pytest.raises(ConfigError, match="dicom_window"):
            DecodeOptions(dicom_window=rule)
    with pytest.raises(ConfigError, match="frames"):
        DecodeOptions(frames="first")


def test_a_file_without_a_name_ending_is_found_by_its_marker_and_a_dicomdir_is_not(tmp_path):
    write_dicom(tmp_path / "scans" / "ct" / "IM000017", RAMP)
    write_dicom(tmp_path / "scans" / "ct" / "b.dcm", RAMP[::-1].copy(), preamble=False)
    write_dicom(tmp_path / "scans" / "mr" / "1.2.840.1", RAMP.T.copy(), modality="MR")
    (tmp_path / "scans" / "mr" / "notes").write_text("not an image")
    shutil.copy(pydicom_file("dicomdirtests/DICOMDIR"), tmp_path / "scans" / "mr" / "DICOMDIR")
    ds = load_folder(tmp_path / "scans")
    assert sorted(Path(ds.source(i)).name for i in range(len(ds))) == [
        "1.2.840.1", "IM000017", "b.dcm"
    ]  # fmt: skip
    assert sorted(Path(p).name for p in ds.report.ignored) == ["DICOMDIR", "notes"]
    assert {info.modality for info in ds.report.dicom.values()} == {"CT", "MR"}
    with pytest.raises(ImageDecodeError, match="DICOMDIR"):
        decode_image(tmp_path / "scans" / "mr" / "DICOMDIR")


def test_a_file_with_no_pixel_data_is_a_skip_with_a_reason(tmp_path):
    path = write_dicom(tmp_path / "sr.dcm", RAMP)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(ImageDecodeError, match=r"no pixel data \(7FE0,0010\)"):
        decode_image(path)


@pytest.mark.parametrize(
    ("syntax", "why"),
    [("1.2.840.10008.1.2.4.100", "video"), ("1.2.826.0.1.3680043.9.7", "not supported")],
)
def test_unsupported_transfer_syntaxes_are_named(tmp_path, syntax, why):
    path = write_dicom(tmp_path / "x.dcm", RAMP)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = pydicom.encaps.encapsulate([bytes(ds.PixelData)])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True, implicit_vr=False, little_endian=True)
    with pytest.raises(ImageDecodeError, match=rf"transfer syntax .*{syntax}.*{why}"):
        decode_image(path)


def test_a_truncated_pixel_buffer_is_named():
    with pytest.raises(ImageDecodeError, match=r"truncated pixel data \(7FE0,0010\)"):
        decode_image(pydicom_file("MR_truncated.dcm"))


def test_real_files_signed_16_bit_with_rescale():
    path = pydicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PixelRepresentation == 1 and "RescaleSlope" in ds
    hounsfield = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert (gray(path, dicom_window="abdomen") == linear(hounsfield, 50, 400)).all()
    _, info = decode_image(path)
    assert (info.dicom.bits_stored, info.dicom.signed, info.dicom.modality) == (16, True, "CT")


def test_real_files_monochrome1_12_bit():
    path = pydicom_file("dicomdirtests/77654033/CR1/6154")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 12
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    values = ds.pixel_array * slope + intercept
    expected = 255 - linear(values, float(ds.WindowCenter), float(ds.WindowWidth))
    assert (gray(path) == expected).all()


def test_real_files_rgb_and_jpeg_compressed_match_pydicom():
    rgb = pydicom_file("SC_rgb_rle.dcm")
    image, info = decode_image(rgb)
    assert (np.asarray(image) == pydicom.dcmread(rgb).pixel_array).all()
    assert info.dicom.photometric == "RGB"
    for name in ("SC_rgb_jpeg_dcmtk.dcm", "JPGExtended.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        image, info = decode_image(pydicom_file(name))
        assert info.dicom.transfer_syntax.startswith("JPEG"), name
        assert image.size[0] > 0


def test_a_multi_frame_file_reads_its_middle_frame_or_every_frame(tmp_path):
    path = pydicom_file("examples_ybr_color.dcm")
    frames = pydicom.dcmread(path).pixel_array
    image, info = decode_image(path)
    assert (info.frames, info.frame) == (30, 15)
    assert (np.asarray(image) == frames[15]).all()
    third, _ = decode_image(frame_source(str(path), 3))
    assert (np.asarray(third) == frames[3]).all()
    with pytest.raises(ImageDecodeError, match="no frame 30"):
        decode_image(frame_source(str(path), 30))


def test_frames_of_one_file_stay_on_one_side_of_the_split(tmp_path):
    rng = np.random.default_rng(1)
    for label in ("a", "b"):
        for k in range(4):
            stack = rng.integers(0, 4000, size=(5, 8, 8), dtype=np.uint16)
            write_dicom(tmp_path / "data" / label / f"{k}.dcm", stack, frames=True)
    ds = load_folder(tmp_path / "data", options=DecodeOptions(frames="all"))
    assert len(ds) == 40 and ds.report.total == 40
    assert ds.source(0).endswith("0.dcm#frame=0")
    assert len(set(ds.content_hashes())) == 40
    train, test = split_dataset(ds, test_size=0.25, seed=3)
    train_files, test_files = set(train.groups()), set(test.groups())
    assert train_files.isdisjoint(test_files) and len(test_files) == 2
    assert len(train) + len(test) == 40 and len(test) == 10
    middle = load_folder(tmp_path / "data")
    assert len(middle) == 8


def test_16_bit_and_float_tiff_stacks_follow_the_png_rule(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    stack = np.stack([np.full((6, 10), v, dtype=np.uint16) for v in (0, 25700, 65535)])
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    image, info = decode_image(tmp_path / "stack.tif")
    assert (info.frames, info.frame, image.size) == (3, 1, (10, 6))
    assert (np.asarray(image) == 100).all()  # 25700 / 257, the 16-bit PNG rule
    # 16-bit RGB: the same rule, whoever reads it.
    rgb = np.zeros((4, 5, 3), dtype=np.uint16)
    rgb[..., 0], rgb[..., 2] = 65535, 257 * 7
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb, photometric="rgb")
    image, info = decode_image(tmp_path / "rgb16.tif")
    assert (np.asarray(image)[0, 0] == [255, 0, 7]).all()
    # float64 is beyond Pillow: tifffile reads it, by the rule of Pillow's float mode.
    floats = np.linspace(0, 1, 20, dtype=np.float64).reshape(4, 5)
    tifffile.imwrite(tmp_path / "f64.tif", floats)
    assert (gray(tmp_path / "f64.tif") == np.rint(floats * 255).astype(np.uint8)).all()
    assert "TIFF float64" in decode_image(tmp_path / "f64.tif")[1].conversion
    for k, v in enumerate((0, 25700, 65535)):
        page, _ = decode_image(frame_source(str(tmp_path / "stack.tif"), k))
        assert (np.asarray(page) == round(v / 257)).all()
    Image.new("L", (4, 4)).save(tmp_path / "plain.tif")
    ds = load_folder_of(tmp_path, ["stack.tif", "plain.tif"], frames="all")
    assert len(ds) == 4  # 3 pages + 1


def load_folder_of(tmp_path: Path, names: list[str], **options):
    folder = tmp_path / "folder" / "only"
    folder.mkdir(parents=True)
    for name in names:
        shutil.copy(tmp_path / name, folder / name)
    return load_folder(folder.parent, options=DecodeOptions(**options))


def test_the_window_rule_is_part_of_the_feature_cache_key():
    from headstart.features.cache import model_key

    backbone = create_backbone("test_efficientnet", weights="none", image_size=32)
    keys = {
        model_key(backbone, False, None, DecodeOptions(**options))
        for options in ({}, {"dicom_window": "lung"}, {"dicom_window": "40,400"}, {"frames": "all"})
    }
    assert len(keys) == 4


def test_damaged_dicom_bytes_give_an_image_or_a_reason_only(tmp_path):
    """Truncations and flipped bytes anywhere in real files: an image, or ImageDecodeError."""
    rng = np.random.default_rng(7)
    names = ("CT_small.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle_2frame.dcm")
    sources = [pydicom_file(name) for name in names]
    outcomes = {"image": 0, "reason": 0}
    for source in sources:
        original = source.read_bytes()
        for _ in range(40):
            cut = int(rng.integers(1, len(original) + 1)) if rng.random() < 0.5 else None
            data = bytearray(original[:cut])
            for at in rng.integers(0, len(data), size=int(rng.integers(0, 6))):
                data[at] = int(rng.integers(0, 256))
            try:
                image, _ = decode_image(bytes(data), name="x.dcm")
                assert image.mode == "RGB"
                outcomes["image"] += 1
            except ImageDecodeError:
                outcomes["reason"] += 1
    assert outcomes["image"] > 0 and outcomes["reason"] > 0
