"""Tests for headstart.data and headstart.data.decode: decoding, loading, splitting, sampling."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import struct
import warnings
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from fixtures_images import (
    BLUE,
    BROKEN_BUILDERS,
    RED,
    UNUSUAL_BUILDERS,
    build_image_folder,
    exif_rotated_jpeg,
    gray16_png,
    noisy_jpeg_bytes,
    palette_with_transparency_png,
    solid_png,
    truncated_jpeg,
    write_all,
    zero_byte_jpeg,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from headstart.data.arrays import from_arrays
from headstart.data.dataset import ImageDataset, LoadReport, SkippedFile, TorchImageDataset
from headstart.data.decode import DecodeOptions, decode_array, decode_image
from headstart.data.idx import (
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    load_fashion_mnist,
    load_idx,
    load_sample,
)
from headstart.data.layout import load_images, open_dataset
from headstart.data.loaders import load_csv, load_folder
from headstart.data.split import sample_per_class, split_dataset
from headstart.errors import ConfigError, DataError, ImageDecodeError


def close_to(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 6) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def sources(ds: ImageDataset) -> list[str]:
    return [ds.source(i) for i in range(len(ds))]


# =========================================================================== decode_image


class TestDecodeUnusualModes:
    def test_cmyk_jpeg_keeps_its_colour(self, tmp_path: Path) -> None:
        image, info = decode_image(UNUSUAL_BUILDERS["cmyk.jpg"](tmp_path / "c.jpg"))
        assert image.mode == "RGB"
        assert close_to(image.getpixel((8, 6)), RED)
        assert info.original_mode == "CMYK"
        assert info.conversion == "CMYK->RGB"

    def test_palette_transparency_is_composited_on_the_background(self, tmp_path: Path) -> None:
        path = palette_with_transparency_png(tmp_path / "p.png")
        image, info = decode_image(path)
        assert image.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white background
        assert image.getpixel((7, 0)) == BLUE  # opaque pixels keep their colour
        assert info.conversion == "P+transparency->RGB (alpha on white)"

        on_black, info = decode_image(path, DecodeOptions(background=(0, 0, 0)))
        assert on_black.getpixel((0, 0)) == (0, 0, 0)
        assert info.conversion == "P+transparency->RGB (alpha on black)"

    def test_half_transparent_rgba_blends_with_white(self, tmp_path: Path) -> None:
        image, info = decode_image(UNUSUAL_BUILDERS["rgba.png"](tmp_path / "r.png"))
        assert close_to(image.getpixel((0, 0)), (255, 127, 127), tolerance=1)
        assert info.conversion == "RGBA->RGB (alpha on white)"

    def test_sixteen_bit_mid_grey_stays_mid_grey(self, tmp_path: Path) -> None:
        image, info = decode_image(gray16_png(tmp_path / "g.png", value=32768))
        assert info.original_mode == "I;16"
        assert info.conversion == "I;16->RGB (16-bit scaled)"
        assert close_to(image.getpixel((0, 0)), (128, 128, 128), tolerance=1)  # not (255,)*3

    @pytest.mark.parametrize(("value", "expected"), [(0, 0), (257 * 64, 64), (65535, 255)])
    def test_sixteen_bit_scale_is_linear_over_the_full_range(
        self, tmp_path: Path, value: int, expected: int
    ) -> None:
        image, _ = decode_image(gray16_png(tmp_path / "g.png", value=value))
        assert image.getpixel((0, 0)) == (expected,) * 3

    def test_one_bit_becomes_black_and_white(self, tmp_path: Path) -> None:
        image, info = decode_image(UNUSUAL_BUILDERS["one_bit.png"](tmp_path / "b.png"))
        assert image.getpixel((0, 0)) == (0, 0, 0)
        assert image.getpixel((7, 0)) == (255, 255, 255)
        assert info.conversion == "1->RGB"

    def test_animated_gif_uses_the_first_frame(self, tmp_path: Path) -> None:
        image, info = decode_image(UNUSUAL_BUILDERS["animated.gif"](tmp_path / "a.gif"))
        assert info.frames == 3
        assert close_to(image.getpixel((0, 0)), RED)

    def test_la_alpha_is_composited(self, tmp_path: Path) -> None:
        image, info = decode_image(UNUSUAL_BUILDERS["la.png"](tmp_path / "la.png"))
        assert image.getpixel((0, 0)) == (255, 255, 255)
        assert info.conversion == "LA->RGB (alpha on white)"

    @pytest.mark.parametrize(("orientation", "red_corner"), [(6, "top_right"), (8, "bottom_left")])
    def test_exif_orientation_is_applied(
        self, tmp_path: Path, orientation: int, red_corner: str
    ) -> None:
        image, info = decode_image(exif_rotated_jpeg(tmp_path / "r.jpg", orientation))
        assert info.rotated and info.original_size == (40, 20)
        assert image.size == (20, 40)  # stored landscape, displayed portrait
        corners = {
            "top_left": (2, 2),
            "top_right": (17, 2),
            "bottom_left": (2, 37),
            "bottom_right": (17, 37),
        }
        for corner, xy in corners.items():
            expected = RED if corner == red_corner else BLUE
            assert close_to(image.getpixel(xy), expected, tolerance=20), corner

    @pytest.mark.parametrize(
        ("mode", "value", "expected", "conversion"),
        [
            ("F", 0.5, (128, 128, 128), "F->RGB (0..1 scaled)"),
            ("I", 32768, (128, 128, 128), "I->RGB (16-bit scaled)"),
            ("LAB", (255, 128, 128), (255, 255, 255), "LAB->RGB"),
            ("YCbCr", (76, 85, 255), (254, 0, 0), "YCbCr->RGB"),
            ("CMYK", (0, 0, 0, 255), (0, 0, 0), "CMYK->RGB"),
        ],
    )
    def test_tiff_modes_convert_to_expected_colours(
        self, tmp_path: Path, mode: str, value: object, expected: tuple, conversion: str
    ) -> None:
        path = tmp_path / "t.tiff"
        Image.new(mode, (4, 4), value).save(path, format="TIFF")
        image, info = decode_image(path)
        assert info.original_mode == mode and info.conversion == conversion
        assert close_to(image.getpixel((0, 0)), expected, tolerance=2)

    def test_sixteen_bit_pgm_is_scaled(self) -> None:
        pgm = b"P5\n2 1\n65535\n" + bytes([0x80, 0x00, 0xFF, 0xFF])  # Pillow opens it as "I"
        image, info = decode_image(pgm, name="deep.pgm")
        assert info.conversion == "I->RGB (16-bit scaled)"
        assert image.getpixel((0, 0)) == (128, 128, 128)
        assert image.getpixel((1, 0)) == (255, 255, 255)

    def test_float_image_outside_0_1_is_min_max_scaled(self, tmp_path: Path) -> None:
        path = tmp_path / "f.tiff"
        Image.fromarray(np.array([[-10.0, 30.0]], dtype=np.float32)).save(path, format="TIFF")
        image, info = decode_image(path)
        assert info.conversion == "F->RGB (min-max scaled)"
        assert image.getpixel((0, 0)) == (0, 0, 0) and image.getpixel((1, 0)) == (255, 255, 255)

    def test_rgb_file_is_not_converted(self, tmp_path: Path) -> None:
        image, info = decode_image(solid_png(tmp_path / "s.png"))
        assert info.conversion is None and not info.rotated and info.frames == 1
        assert image.getpixel((0, 0)) == RED

    def test_bytes_input_and_name(self) -> None:
        buffer = BytesIO()
        Image.new("RGB", (3, 2), RED).save(buffer, format="PNG")
        image, _ = decode_image(buffer.getvalue(), name="upload.png")
        assert image.size == (3, 2)
        with pytest.raises(ImageDecodeError, match=r"^upload\.jpg: empty file"):
            decode_image(b"", name="upload.jpg")


class TestDecodeFailures:
    @pytest.mark.parametrize(
        ("name", "reason"),
        [
            ("truncated.jpg", "truncated"),
            ("empty.jpg", "empty file (0 bytes)"),
            ("page.jpg", "looks like HTML"),
            ("bomb.png", "decompression bomb"),
            ("warning_bomb.png", "decompression bomb"),
        ],
    )
    def test_broken_file_raises_image_decode_error_naming_it(
        self, tmp_path: Path, name: str, reason: str
    ) -> None:
        path = BROKEN_BUILDERS[name](tmp_path / name)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no warning of any kind may leak out
            with pytest.raises(ImageDecodeError) as caught:
                decode_image(path)
        assert caught.value.source == str(path)
        assert reason in caught.value.reason
        assert str(path) in str(caught.value)

    def test_bomb_error_names_the_limit_and_the_pillow_warning_is_not_left_behind(
        self, tmp_path: Path
    ) -> None:
        path = BROKEN_BUILDERS["warning_bomb.png"](tmp_path / "w.png")
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with pytest.raises(ImageDecodeError, match="89,478,485 pixels"):
                decode_image(path)
        assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]

    def test_lower_pixel_limit_skips_an_ordinary_image_before_loading(self, tmp_path: Path) -> None:
        path = solid_png(tmp_path / "s.png", size=(100, 100))
        with pytest.raises(ImageDecodeError, match=r"100x100 = 10,000 pixels.*limit of 5,000"):
            decode_image(path, DecodeOptions(max_pixels=5_000))
        assert decode_image(path, DecodeOptions(max_pixels=10_000))[0].size == (100, 100)

    def test_higher_pixel_limit_than_pillows_global_is_honoured(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # Pillow would refuse 10,000 px
        path = solid_png(tmp_path / "s.png", size=(100, 100))
        image, _ = decode_image(path, DecodeOptions(max_pixels=20_000))
        assert image.size == (100, 100)
        assert Image.MAX_IMAGE_PIXELS == 1_000  # restored afterwards

    def test_missing_file_and_directory(self, tmp_path: Path) -> None:
        with pytest.raises(ImageDecodeError, match="file not found"):
            decode_image(tmp_path / "nope.jpg")
        with pytest.raises(ImageDecodeError, match="is a directory"):
            decode_image(tmp_path)

    @pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file"
    )
    def test_unreadable_file(self, tmp_path: Path) -> None:
        path = solid_png(tmp_path / "locked.png")
        path.chmod(0)
        try:
            with pytest.raises(ImageDecodeError, match="cannot read file"):
                decode_image(path)
        finally:
            path.chmod(0o644)

    def test_loading_truncated_images_stays_off(self) -> None:
        from PIL import ImageFile

        assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def _valid_image_bytes() -> list[bytes]:
    encoded = []
    for fmt, mode in [("PNG", "RGB"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("TIFF", "L")]:
        buffer = BytesIO()
        Image.new(mode, (12, 9), 7).save(buffer, format=fmt)
        encoded.append(buffer.getvalue())
    encoded.append(noisy_jpeg_bytes((16, 16)))
    return encoded


VALID_IMAGE_BYTES = _valid_image_bytes()


# Pillow's own UserWarnings about damaged metadata ("Corrupt EXIF data") may pass; only
# exceptions matter here.
@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    original=st.sampled_from(VALID_IMAGE_BYTES),
    cut=st.integers(min_value=0, max_value=2000),
    flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=4),
)
def test_damaged_bytes_give_an_image_or_image_decode_error_only(
    original: bytes, cut: int, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(original[: max(1, len(original) - cut)])
    for position, value in flips:
        data[position % len(data)] = value
    try:
        image, _ = decode_image(bytes(data), name="fuzz")
    except ImageDecodeError as error:
        assert error.source == "fuzz" and error.reason
    else:
        assert image.mode == "RGB" and image.width > 0 and image.height > 0


class TestDownscaling:
    def test_large_jpeg_is_drafted_and_thumbnailed(self, tmp_path: Path) -> None:
        path = tmp_path / "big.jpg"
        Image.new("RGB", (1200, 800), RED).save(path, format="JPEG")
        image, info = decode_image(path, DecodeOptions(max_side=256))
        assert info.downscaled and info.original_size == (1200, 800)
        assert image.size == (256, 171)

    def test_large_png_is_thumbnailed_keeping_aspect(self, tmp_path: Path) -> None:
        path = solid_png(tmp_path / "big.png", size=(600, 300))
        image, info = decode_image(path, DecodeOptions(max_side=100))
        assert info.downscaled and image.size == (100, 50)

    def test_small_image_is_left_alone(self, tmp_path: Path) -> None:
        _, info = decode_image(solid_png(tmp_path / "s.png"), DecodeOptions(max_side=100))
        assert not info.downscaled


class TestDecodeOptions:
    @pytest.mark.parametrize(
        ("kwargs", "parameter"),
        [
            ({"max_pixels": 0}, "max_pixels"),
            ({"max_pixels": 1.5}, "max_pixels"),
            ({"max_side": -1}, "max_side"),
            ({"background": (256, 0, 0)}, "background"),
            ({"background": (0, 0)}, "background"),
            ({"background": "white"}, "background"),
        ],
    )
    def test_invalid_values_name_the_parameter(self, kwargs: dict, parameter: str) -> None:
        with pytest.raises(ConfigError, match=f"'{parameter}' parameter of DecodeOptions"):
            DecodeOptions(**kwargs)

    def test_defaults_and_list_background(self) -> None:
        assert DecodeOptions().max_pixels == 89_478_485
        assert DecodeOptions(background=[1, 2, 3]).background == (1, 2, 3)


class TestDecodeArray:
    @pytest.mark.parametrize("shape", [(5, 4), (5, 4, 1), (5, 4, 3), (5, 4, 4)])
    def test_accepted_shapes_give_rgb(self, shape: tuple[int, ...]) -> None:
        array = np.full(shape, 200, dtype=np.uint8)
        if shape[2:] == (4,):
            array[:, :, 3] = 255  # opaque
        image = decode_array(array, "x")
        assert image.mode == "RGB" and image.size == (4, 5)
        assert image.getpixel((0, 0)) == (200, 200, 200)

    def test_transparent_rgba_array_is_composited_on_white(self) -> None:
        array = np.zeros((2, 2, 4), dtype=np.uint8)
        assert decode_array(array, "x").getpixel((0, 0)) == (255, 255, 255)

    @pytest.mark.parametrize(
        ("array", "fragment"),
        [
            (np.zeros((4, 4), dtype=np.float32), "dtype float32"),
            (np.zeros((4, 4, 2), dtype=np.uint8), "shape (4, 4, 2)"),
            (np.zeros((2, 4, 4, 3), dtype=np.uint8), "shape (2, 4, 4, 3)"),
            (np.zeros((0, 4), dtype=np.uint8), "shape (0, 4)"),
        ],
    )
    def test_rejected_arrays_name_the_item_and_the_problem(
        self, array: np.ndarray, fragment: str
    ) -> None:
        with pytest.raises(DataError, match=r"^item7: .*" + re.escape(fragment)):
            decode_array(array, "item7")


# =========================================================================== load_folder


@pytest.fixture
def zoo(tmp_path: Path) -> tuple[Path, set[str], set[str]]:
    """Two classes: good unusual images, broken files, and clutter that must be ignored."""
    root = tmp_path / "zoo"
    bad = write_all(root / "broken_and_ok", BROKEN_BUILDERS)
    good = write_all(root / "unusual", UNUSUAL_BUILDERS)
    good += [solid_png(root / "broken_and_ok" / f"ok_{i}.png", size=(9, 7)) for i in range(3)]
    (root / "unusual" / "nested").mkdir()
    good.append(solid_png(root / "unusual" / "nested" / "deep.PNG"))  # upper-case extension
    (root / "unusual" / "notes.txt").write_text("not an image")
    (root / "unusual" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / ".git").mkdir()
    solid_png(root / ".git" / "hidden.png")
    (root / ".ipynb_checkpoints").mkdir()
    (root / "README.md").write_text("dataset notes")
    return root, {str(p) for p in bad}, {str(p) for p in good}


class TestLoadFolder:
    def test_report_lists_exactly_the_broken_files(self, zoo: tuple[Path, set, set]) -> None:
        root, bad, good = zoo
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ds = load_folder(root)
        report = ds.report
        assert {skipped.path for skipped in report.skipped} == bad
        assert set(sources(ds)) == good
        assert report.total == len(bad) + len(good) and report.loaded == len(good) == len(ds)
        assert ds.classes == ["broken_and_ok", "unusual"]
        for i in range(len(ds)):
            image, label = ds[i]
            assert image.mode == "RGB" and len(image.getbands()) == 3
            assert ds.classes[label] == Path(ds.source(i)).relative_to(root).parts[0]

    def test_report_details_rotation_conversion_and_ignored(
        self, zoo: tuple[Path, set, set]
    ) -> None:
        root, _, _ = zoo
        ds = load_folder(root)
        unusual = root / "unusual"
        assert ds.report.rotated == [str(unusual / "rotated.jpg")]
        assert ds.report.converted[str(unusual / "cmyk.jpg")] == "CMYK->RGB"
        assert ds.report.converted[str(unusual / "animated.gif")] == "P->RGB; first of 3 frames"
        assert ds.report.converted[str(unusual / "gray16.png")] == "I;16->RGB (16-bit scaled)"
        assert str(unusual / "rotated.jpg") not in ds.report.converted
        assert set(ds.report.ignored) == {
            str(root / ".git"),
            str(root / ".ipynb_checkpoints"),
            str(root / "README.md"),
            str(unusual / "notes.txt"),
            str(unusual / ".DS_Store"),
        }
        rotated = ds.image(sources(ds).index(str(unusual / "rotated.jpg")))
        assert rotated.size == (20, 40)
        assert close_to(rotated.getpixel((17, 2)), RED, tolerance=20)

    def test_summary_names_every_skipped_file(self, zoo: tuple[Path, set, set]) -> None:
        root, bad, good = zoo
        summary = load_folder(root).report.summary()
        lines = summary.splitlines()
        assert lines[0] == (
            f"Loaded {len(good)} of {len(good) + len(bad)} images from {root}; skipped {len(bad)}:"
        )
        for path in bad:
            assert any(line.startswith(f"  {path}: ") for line in lines)
        assert "Applied EXIF orientation to 1 image(s)." in lines

    def test_strict_names_the_first_bad_file_in_sorted_order(self, tmp_path: Path) -> None:
        root = build_image_folder(tmp_path / "data", {"a": 3, "b": 3})
        truncated_jpeg(root / "a" / "z_truncated.jpg")  # class "a" comes first ...
        zero_byte_jpeg(root / "b" / "a_empty.jpg")  # ... even though "a_" < "z_"
        with pytest.raises(ImageDecodeError) as caught:
            load_folder(root, strict=True)
        assert isinstance(caught.value, DataError)
        assert caught.value.source == str(root / "a" / "z_truncated.jpg")
        assert "truncated" in caught.value.reason
        # It wins over the summary checks that a non-strict load would apply afterwards.
        with pytest.raises(ImageDecodeError, match="z_truncated.jpg"):
            load_folder(root, strict=True, max_bad_fraction=0.0)
        # Without strict the same folder loads and reports both.
        assert len(load_folder(root).report.skipped) == 2

    def test_too_many_bad_files_abort_with_counts(self, tmp_path: Path) -> None:
        root = build_image_folder(tmp_path / "data", {"a": 2, "b": 2})
        for i in range(3):
            zero_byte_jpeg(root / "a" / f"bad{i}.jpg")
        with pytest.raises(
            DataError,
            match=r"3 of 7 images .* more than the 25% allowed(.|\n)*raise max_bad_fraction",
        ):
            load_folder(root, max_bad_fraction=0.25)
        assert load_folder(root, max_bad_fraction=0.5).report.loaded == 4

    def test_class_with_only_bad_files_is_named(self, tmp_path: Path) -> None:
        root = build_image_folder(tmp_path / "data", {"a": 5, "b": 5})
        (root / "c").mkdir()
        zero_byte_jpeg(root / "c" / "x.jpg")
        with pytest.raises(DataError, match=r"every image of class\(es\) c failed"):
            load_folder(root)

    def test_empty_class_folders_are_all_named(self, tmp_path: Path) -> None:
        root = build_image_folder(tmp_path / "data", {"cat": 2})
        (root / "dog").mkdir()
        (root / "emu").mkdir()
        (root / "emu" / "readme.txt").write_text("no images here")
        with pytest.raises(DataError, match="no image files: dog, emu"):
            load_folder(root)

    def test_no_class_folders(self, tmp_path: Path) -> None:
        root = tmp_path / "flat"
        root.mkdir()
        solid_png(root / "x.png")
        with pytest.raises(DataError, match="no class folders; found 1 image files directly"):
            load_folder(root)
        with pytest.raises(DataError, match="folder not found"):
            load_folder(tmp_path / "missing")

    def test_class_order_is_sorted_and_class_to_idx_matches_labels(self, tmp_path: Path) -> None:
        root = build_image_folder(tmp_path / "d", {"zebra": 2, "ant": 3, "Moth": 1, "bee": 2})
        ds = load_folder(root)
        assert ds.classes == ["Moth", "ant", "bee", "zebra"]
        assert ds.class_to_idx == {"Moth": 0, "ant": 1, "bee": 2, "zebra": 3}
        assert ds.class_counts() == {"Moth": 1, "ant": 3, "bee": 2, "zebra": 2}
        for i in range(len(ds)):
            assert ds.labels[i] == ds.class_to_idx[Path(ds.source(i)).parent.name]
        assert ds.labels.dtype == np.int64
        assert sources(load_folder(root)) == sources(ds)  # stable order

    def test_hidden_folders_and_macos_archive_folders_are_not_classes(
        self, make_image_folder
    ) -> None:
        root = make_image_folder({"cat": 2, "dog": 2})
        for hidden in (".git", ".ipynb_checkpoints", "__MACOSX"):
            (root / hidden).mkdir()
            solid_png(root / hidden / "x.png")
        assert load_folder(root).classes == ["cat", "dog"]

    def test_images_are_reread_on_access(self, image_folder: Path) -> None:
        ds = load_folder(image_folder)
        first = ds.source(0)
        Image.new("RGB", (5, 5), BLUE).save(first, format="PNG")
        assert ds.image(0).getpixel((0, 0)) == BLUE

    def test_options_reach_item_access(self, make_image_folder) -> None:
        root = make_image_folder({"a": 1, "b": 1}, size=(64, 32))
        ds = load_folder(root, options=DecodeOptions(max_side=16))
        assert ds.image(0).size == (16, 8)
        assert len(ds.report.downscaled) == 2

    def test_threaded_loading_restores_pillows_limit_and_leaks_no_warning(
        self, make_image_folder, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # below the 16x16 images
        root = make_image_folder({"a": 8, "b": 8})
        BROKEN_BUILDERS["warning_bomb.png"](root / "a" / "w.png")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ds = load_folder(root, options=DecodeOptions(max_pixels=100_000))
        assert len(ds) == 16 and [s.path for s in ds.report.skipped] == [str(root / "a/w.png")]
        assert Image.MAX_IMAGE_PIXELS == 200

    def test_invalid_max_bad_fraction(self, image_folder: Path) -> None:
        with pytest.raises(ConfigError, match="'max_bad_fraction' parameter of load_folder"):
            load_folder(image_folder, max_bad_fraction=1.5)


# =========================================================================== dataset object


class TestImageDataset:
    def test_content_hashes_are_of_the_file_bytes(self, image_folder: Path) -> None:
        ds = load_folder(image_folder)
        expected = [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in sources(ds)]
        assert ds.content_hashes() == expected

    def test_fingerprint_is_stable_and_sensitive(self, image_folder: Path) -> None:
        ds = load_folder(image_folder)
        assert load_folder(image_folder).fingerprint() == ds.fingerprint()

        changed = Path(ds.source(4))
        Image.new("RGB", (16, 16), (1, 2, 3)).save(changed, format="PNG")
        assert load_folder(image_folder).fingerprint() != ds.fingerprint()

        order = list(range(len(ds)))
        reordered = ds.subset(order[::-1])
        assert reordered.fingerprint() != ds.fingerprint()
        assert ds.subset(order).fingerprint() == ds.fingerprint()

        relabelled = ImageDataset(
            classes=ds.classes,
            labels=np.roll(ds.labels, 1),
            sources=sources(ds),
            content_hashes=ds.content_hashes(),
            report=ds.report,
        )
        assert relabelled.fingerprint() != ds.fingerprint()

    def test_subset_keeps_classes_and_copies_report(self, image_folder: Path) -> None:
        ds = load_folder(image_folder)
        part = ds.subset([17, 0])
        assert part.classes == ds.classes and len(part) == 2
        assert sources(part) == [ds.source(17), ds.source(0)]
        assert part.labels.tolist() == [ds.labels[17], ds.labels[0]]
        assert part.report == ds.report and part.report is not ds.report
        with pytest.raises(ConfigError, match="'indices' parameter"):
            ds.subset([0, len(ds)])

    def test_indexing_and_repr(self, image_folder: Path) -> None:
        ds = load_folder(image_folder)
        assert ds.source(-1) == ds.source(len(ds) - 1)
        with pytest.raises(IndexError):
            ds[len(ds)]
        assert len(list(ds)) == len(ds)
        assert repr(ds) == f"ImageDataset(n=18, classes=3, source={str(image_folder)!r})"

    def test_torch_adapter_applies_the_transform(self, image_folder: Path) -> None:
        ds = load_folder(image_folder)
        torch_ds = TorchImageDataset(ds, lambda image: np.asarray(image).shape)
        assert len(torch_ds) == 18
        assert torch_ds[7] == ((16, 16, 3), int(ds.labels[7]))

    def test_summary_without_skips(self) -> None:
        report = LoadReport(source="x/", total=2, loaded=2, converted={"a": "L->RGB"})
        assert report.summary().splitlines() == [
            "Loaded 2 of 2 images from x/.",
            "Converted 1 image(s) to RGB: 1 L->RGB.",
        ]
        assert SkippedFile("p", "r") == SkippedFile(path="p", reason="r")


# =========================================================================== CSV


class TestLoadCsv:
    def test_relative_paths_resolve_against_the_csv_folder(self, image_folder: Path) -> None:
        csv_path = image_folder / "labels.csv"
        csv_path.write_text(
            "path,label,notes\n"
            "cat/cat_000.png,feline,first\n"
            "dog/dog_000.png,canine,\n"
            "\n"
            f"{image_folder / 'dog' / 'dog_001.png'},canine,absolute\n"
            "dog/missing.png,canine,\n"
        )
        ds = load_csv(csv_path)
        assert ds.classes == ["canine", "feline"]
        assert ds.labels.tolist() == [1, 0, 0]
        assert [s.path for s in ds.report.skipped] == [str(image_folder / "dog" / "missing.png")]
        assert ds.report.skipped[0].reason == "file not found"
        assert ds.report.source == str(csv_path)

    def test_root_overrides_the_csv_folder(self, image_folder: Path, tmp_path: Path) -> None:
        csv_path = tmp_path / "elsewhere.csv"
        csv_path.write_text("Label, Path\ncat,cat/cat_000.png\ndog,dog/dog_000.png\n")
        ds = load_csv(csv_path, root=image_folder)
        assert sources(ds) == [
            str(image_folder / "cat/cat_000.png"),
            str(image_folder / "dog/dog_000.png"),
        ]

    def test_missing_column_names_the_csv_and_line(self, tmp_path: Path) -> None:
        csv_path = tmp_path / "bad.csv"
        csv_path.write_text("file,label\na.png,cat\n")
        with pytest.raises(DataError, match=rf"{csv_path}: line 1: no 'path' column"):
            load_csv(csv_path)

    def test_empty_label_names_the_line(self, tmp_path: Path) -> None:
        csv_path = tmp_path / "bad.csv"
        csv_path.write_text("path,label\na.png,cat\nb.png,\n")
        with pytest.raises(DataError, match=rf"{csv_path}: line 3: empty or missing 'label'"):
            load_csv(csv_path)

    def test_strict_and_missing_csv(self, tmp_path: Path) -> None:
        csv_path = tmp_path / "l.csv"
        solid_png(tmp_path / "ok.png")
        csv_path.write_text("path,label\nok.png,a\ngone.png,a\n")
        with pytest.raises(ImageDecodeError, match="gone.png: file not found"):
            load_csv(csv_path, strict=True)
        with pytest.raises(DataError, match="CSV file not found"):
            load_csv(tmp_path / "absent.csv")


# =========================================================================== IDX and arrays


def idx_bytes(array: np.ndarray, dtype_code: int = 0x08) -> bytes:
    header = bytes([0, 0, dtype_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def idx_arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 5, 4), dtype=np.uint8)
    labels = np.array([0, 1, 2] * 4, dtype=np.uint8)
    return images, labels


class TestLoadIdx:
    def test_gzipped_and_raw_load_the_same(self, tmp_path: Path, idx_arrays) -> None:
        images, labels = idx_arrays
        # Misleading names on purpose: gzip is detected by magic bytes, not by the name.
        (tmp_path / "img.raw").write_bytes(gzip.compress(idx_bytes(images)))
        (tmp_path / "lab.gz").write_bytes(idx_bytes(labels))
        ds = load_idx(tmp_path / "img.raw", tmp_path / "lab.gz", classes=["a", "b", "c"])
        assert len(ds) == 12 and ds.classes == ["a", "b", "c"]
        assert ds.labels.tolist() == labels.tolist()
        image, label = ds[5]
        assert image.mode == "RGB" and image.size == (4, 5) and label == 2
        assert np.array_equal(np.asarray(image)[:, :, 0], images[5])
        assert ds.source(5) == f"{tmp_path / 'img.raw'}[5]"

        (tmp_path / "img").write_bytes(idx_bytes(images))
        (tmp_path / "lab").write_bytes(idx_bytes(labels))
        raw = load_idx(tmp_path / "img", tmp_path / "lab", classes=["a", "b", "c"])
        assert raw.fingerprint() == ds.fingerprint()
        assert load_idx(tmp_path / "img", tmp_path / "lab").classes == ["0", "1", "2"]

    @pytest.mark.parametrize(
        ("corrupt", "fragment"),
        [
            (lambda data: b"\x12\x34" + data[2:], "not an IDX file"),
            (lambda data: data[:2] + b"\x0d" + data[3:], "element type 0x0d"),
            (lambda data: data[:3] + b"\x02" + data[4:], "2 dimensions; expected 3"),
            (lambda data: data[:-7], "truncated"),
            (lambda data: data + b"xx", "trailing bytes"),
            (lambda data: gzip.compress(data)[:-12], "corrupt gzip"),
        ],
    )
    def test_corrupt_images_file_is_named(
        self, tmp_path: Path, idx_arrays, corrupt, fragment: str
    ) -> None:
        images, labels = idx_arrays
        (tmp_path / "images.idx").write_bytes(corrupt(idx_bytes(images)))
        (tmp_path / "labels.idx").write_bytes(idx_bytes(labels))
        with pytest.raises(DataError, match=rf"^{tmp_path / 'images.idx'}: .*{fragment}"):
            load_idx(tmp_path / "images.idx", tmp_path / "labels.idx")

    def test_count_mismatch_and_label_range(self, tmp_path: Path, idx_arrays) -> None:
        images, labels = idx_arrays
        (tmp_path / "i").write_bytes(idx_bytes(images))
        (tmp_path / "l").write_bytes(idx_bytes(labels[:10]))
        with pytest.raises(DataError, match="holds 12 images but .* holds 10 labels"):
            load_idx(tmp_path / "i", tmp_path / "l")
        (tmp_path / "l").write_bytes(idx_bytes(labels))
        with pytest.raises(DataError, match=r"must lie in 0\.\.1"):
            load_idx(tmp_path / "i", tmp_path / "l", classes=["x", "y"])

    def test_label_outside_the_classes_names_file_labels_and_classes(
        self, tmp_path: Path, idx_arrays
    ) -> None:
        """Issue 11: a label of 200 beside the 10 Fashion-MNIST names is refused, naming
        the labels file, the label and the classes; without names, a label far above the
        others does not invent 200 empty classes."""
        images, labels = idx_arrays
        labels = labels.copy()
        labels[4] = 200
        (tmp_path / "i").write_bytes(idx_bytes(images))
        (tmp_path / "l").write_bytes(idx_bytes(labels))
        with pytest.raises(DataError) as caught:
            load_idx(tmp_path / "i", tmp_path / "l", classes=FASHION_MNIST_CLASSES)
        message = str(caught.value)
        assert message.startswith(f"{tmp_path / 'l'}: ") and "[200]" in message
        assert "Ankle boot" in message
        with pytest.raises(DataError, match=r"200\].*without any image") as caught:
            load_idx(tmp_path / "i", tmp_path / "l")
        assert str(caught.value).startswith(f"{tmp_path / 'l'}: ")

    def test_idx_test_split_uses_the_training_classes(self, tmp_path: Path, idx_arrays) -> None:
        """A t10k labels file lacking the last class still gets train's classes, and one
        with a label train never had is refused, naming the t10k file."""
        images, labels = idx_arrays
        for split, lab in (("train", labels), ("t10k", np.where(labels == 2, 1, labels))):
            (tmp_path / f"{split}-images-idx3-ubyte").write_bytes(idx_bytes(images))
            (tmp_path / f"{split}-labels-idx1-ubyte").write_bytes(idx_bytes(lab))
        train, test = load_images(tmp_path)
        assert train.classes == test.classes == ["0", "1", "2"]
        (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.where(labels, 3, 0)))
        with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: .*\[3\]"):
            load_images(tmp_path)


class TestFromArrays:
    def test_int_labels_with_a_gap_are_refused(self) -> None:
        """Issue 11: int labels [0, 1, 2, 7] would make classes 3..6 without an image."""
        images = np.zeros((4, 2, 2), dtype=np.uint8)
        with pytest.raises(DataError) as caught:
            from_arrays(images, [0, 1, 2, 7])
        message = str(caught.value)
        assert message.startswith("from_arrays: ") and "[3, 4, 5, 6]" in message
        assert "classes" in message
        named = from_arrays(images, [0, 1, 2, 7], classes=list("abcdefgh"))  # said on purpose
        assert named.class_counts()["d"] == 0

    def test_string_labels_give_sorted_classes(self) -> None:
        images = [np.full((3, 4, 3), i, dtype=np.uint8) for i in range(4)]
        ds = from_arrays(images, ["dog", "cat", "dog", "ant"])
        assert ds.classes == ["ant", "cat", "dog"]
        assert ds.labels.tolist() == [2, 1, 2, 0]
        assert ds.source(3) == "arrays[3]" and ds.report.source == "arrays"
        assert ds[1][0].getpixel((0, 0)) == (1, 1, 1)

    def test_int_labels_with_and_without_class_names(self) -> None:
        images = np.zeros((3, 2, 2), dtype=np.uint8)
        assert from_arrays(images, [0, 2, 1]).classes == ["0", "1", "2"]
        named = from_arrays(images, np.array([0, 1, 1]), classes=["x", "y", "z"])
        assert named.classes == ["x", "y", "z"] and named.class_counts()["z"] == 0
        with pytest.raises(DataError, match=r"0\.\.1"):
            from_arrays(images, [0, 1, 2], classes=["x", "y"])
        with pytest.raises(DataError, match="3 images but 2 labels"):
            from_arrays(images, [0, 1])
        with pytest.raises(DataError, match="all class names"):
            from_arrays(images, [0, "a", 1])

    def test_bad_array_is_named(self) -> None:
        good = np.zeros((2, 2), dtype=np.uint8)
        with pytest.raises(DataError, match=r"arrays\[1\]: image array has dtype float64"):
            from_arrays([good, np.zeros((2, 2))], [0, 1])

    def test_hashes_depend_on_content_and_shape(self) -> None:
        flat = np.zeros((4, 4), dtype=np.uint8)
        ds = from_arrays([flat, flat.reshape(2, 8), flat + 1], [0, 0, 0])
        assert len(set(ds.content_hashes())) == 3


# =========================================================================== entry points


class TestOpenAndLoadImages:
    def test_open_dataset_detects_folder_and_csv(self, image_folder: Path) -> None:
        assert open_dataset(image_folder).classes == ["cat", "dog", "fox"]
        (image_folder / "l.csv").write_text("path,label\ncat/cat_000.png,c\n")
        assert len(open_dataset(image_folder / "l.csv")) == 1
        (image_folder / "x.json").write_text("{}")
        with pytest.raises(DataError, match="neither a folder nor a .csv file. Accepted"):
            open_dataset(image_folder / "x.json")
        with pytest.raises(DataError, match="not found"):
            open_dataset(image_folder / "nope")

    def test_load_images_splits_a_plain_folder(self, image_folder: Path) -> None:
        train, test = load_images(image_folder, test_size=0.5, seed=3, strict=True)
        assert len(train) == 9 and len(test) == 9
        assert set(sources(train)).isdisjoint(sources(test))

    def test_load_images_uses_a_train_test_presplit(self, tmp_path: Path) -> None:
        root = tmp_path / "presplit"
        build_image_folder(root / "train", {"ant": 2, "bee": 2, "cow": 2})
        build_image_folder(root / "test", {"ant": 1, "cow": 1})
        train, test = load_images(root, test_size=0.5)
        assert train.classes == test.classes == ["ant", "bee", "cow"]
        assert len(train) == 6 and len(test) == 2
        assert [test.classes[label] for label in test.labels] == ["ant", "cow"]
        assert [Path(s).parent.name for s in sources(test)] == ["ant", "cow"]

        build_image_folder(root / "test", {"dog": 1})
        with pytest.raises(DataError, match="class folder.*dog.*lacks"):
            load_images(root)

    def test_load_images_uses_idx_files(self, tmp_path: Path, idx_arrays) -> None:
        images, labels = idx_arrays
        for split, count in (("train", 12), ("t10k", 6)):
            (tmp_path / f"{split}-images-idx3-ubyte.gz").write_bytes(
                gzip.compress(idx_bytes(images[:count]))
            )
            (tmp_path / f"{split}-labels-idx1-ubyte").write_bytes(idx_bytes(labels[:count]))
        train, test = load_images(tmp_path)
        assert (len(train), len(test)) == (12, 6)


# =========================================================================== split and sample


@pytest.fixture
def unbalanced() -> ImageDataset:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (40, 2, 2), dtype=np.uint8)
    labels = [0] * 20 + [1] * 12 + [2] * 5 + [3] * 2 + [4]
    return from_arrays(images, labels)


class TestSplit:
    def test_same_seed_same_split_other_seed_other_split(self, unbalanced: ImageDataset) -> None:
        first = [sources(side) for side in split_dataset(unbalanced, seed=7)]
        again = [sources(side) for side in split_dataset(unbalanced, seed=7)]
        other = [sources(side) for side in split_dataset(unbalanced, seed=8)]
        assert first == again
        assert first != other

    def test_stratified_sides_cover_every_class_with_two_or_more(
        self, unbalanced: ImageDataset
    ) -> None:
        for seed in range(5):
            train, test = split_dataset(unbalanced, test_size=0.25, seed=seed)
            assert len(test) == 10 and len(train) == 30
            assert set(sources(train)).isdisjoint(sources(test))
            assert set(sources(train)) | set(sources(test)) == set(sources(unbalanced))
            test_counts = test.class_counts()
            train_counts = train.class_counts()
            for name in ("0", "1", "2", "3"):
                assert test_counts[name] >= 1 and train_counts[name] >= 1
            assert test_counts["4"] == 0  # a single item stays in train
            assert test_counts["0"] == 5  # proportional: 20 of 40 -> 5 of 10

    def test_int_test_size_is_exact(self, unbalanced: ImageDataset) -> None:
        _, test = split_dataset(unbalanced, test_size=7)
        assert len(test) == 7
        _, test = split_dataset(unbalanced, test_size=7, stratify=False)
        assert len(test) == 7

    def test_both_sides_keep_dataset_order(self, unbalanced: ImageDataset) -> None:
        train, _ = split_dataset(unbalanced)
        order = [sources(unbalanced).index(s) for s in sources(train)]
        assert order == sorted(order)

    @pytest.mark.parametrize("test_size", [0.0, 1.0, -3, 40, True, "0.2"])
    def test_invalid_test_size(self, unbalanced: ImageDataset, test_size: object) -> None:
        with pytest.raises(ConfigError, match="'test_size' parameter of split_dataset"):
            split_dataset(unbalanced, test_size=test_size)

    def test_too_few_items(self) -> None:
        one = from_arrays([np.zeros((2, 2), dtype=np.uint8)], [0])
        with pytest.raises(DataError, match="at least 2 items"):
            split_dataset(one)
        four_classes = from_arrays(np.zeros((8, 2, 2), dtype=np.uint8), [0, 0, 1, 1, 2, 2, 3, 3])
        with pytest.raises(
            DataError, match="needs between 4 and 4 test items.*not 2. Change test_size"
        ):
            split_dataset(four_classes, test_size=0.2)


class TestSamplePerClass:
    def test_exact_counts_and_nesting(self) -> None:
        images = np.zeros((90, 2, 2), dtype=np.uint8)
        images[:, 0, 0] = np.arange(90)
        ds = from_arrays(images, [i % 3 for i in range(90)])
        small, large = sample_per_class(ds, 10, seed=4), sample_per_class(ds, 25, seed=4)
        assert small.class_counts() == {"0": 10, "1": 10, "2": 10}
        assert large.class_counts() == {"0": 25, "1": 25, "2": 25}
        assert set(sources(small)) < set(sources(large))
        assert sources(sample_per_class(ds, 10, seed=4)) == sources(small)
        assert sources(sample_per_class(ds, 10, seed=5)) != sources(small)

    def test_too_few_names_the_class_and_count(self, unbalanced: ImageDataset) -> None:
        with pytest.raises(DataError, match="'3' has 2, '4' has 1"):
            sample_per_class(unbalanced, 3)
        with pytest.raises(ConfigError, match="'k' parameter"):
            sample_per_class(unbalanced, 0)


# =========================================================================== bundled data


def test_load_sample() -> None:
    train, test = load_sample()
    for ds in (train, test):
        assert len(ds) == 1000
        assert ds.classes == FASHION_MNIST_CLASSES
        assert set(ds.class_counts().values()) == {100}
        image, label = ds[0]
        assert image.mode == "RGB" and image.size == (28, 28) and 0 <= label < 10
    assert set(train.content_hashes()).isdisjoint(test.content_hashes())


@pytest.mark.skipif(
    not Path(DEFAULT_FASHION_MNIST_DIR).is_dir(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist); CI lacks it",
)
def test_load_fashion_mnist() -> None:
    train, test = load_fashion_mnist()
    assert (len(train), len(test)) == (60_000, 10_000)
    assert train.class_counts() == dict.fromkeys(FASHION_MNIST_CLASSES, 6000)
    assert test[0][0].size == (28, 28)


def test_load_fashion_mnist_missing_folder_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not found in .*apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)


def test_sample_script_reproduces_the_bundled_files(tmp_path: Path) -> None:
    if not Path(DEFAULT_FASHION_MNIST_DIR).is_dir():
        pytest.skip("Fashion-MNIST not installed; the sample cannot be rebuilt here")
    import runpy

    script = Path(__file__).resolve().parent.parent / "scripts" / "make_sample.py"
    namespace = runpy.run_path(str(script))
    namespace["main"](["--out", str(tmp_path)])
    bundled = Path(__file__).resolve().parent.parent / "src" / "headstart" / "sample_data"
    for built in sorted(tmp_path.glob("*.gz")):
        assert built.read_bytes() == (bundled / built.name).read_bytes(), built.name
