"""Every file headstart reads is a regular file, read up to a cap (issue 21, cases 1-3, 7).

A FIFO would make ``open`` wait forever and ``/dev/zero`` make ``read`` never end, so
those tests run in a child process with a generous ``timeout`` (and, where the old
behaviour was to read without end, a memory limit): a regression fails, it never hangs
the suite or fills the machine's memory.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fixtures_images import build_image_folder, solid_png
from PIL import Image, features

import headstart
from headstart.data.decode import DecodeOptions, decode_image
from headstart.data.loaders import load_csv, load_folder
from headstart.errors import DataError, ImageDecodeError
from headstart.estimator.model_files import load_model

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
needs_dev_zero = pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")

_TIMEOUT = 120  # seconds: generous; the fixed code answers in a few
_ENV = {**os.environ, "PYTHONPATH": str(Path(headstart.__file__).parents[1])}


def _memory_cap(gib: int):
    def limit() -> None:  # in the child: reading /dev/zero raises MemoryError, not swaps
        resource.setrlimit(resource.RLIMIT_AS, (gib << 30, gib << 30))

    return limit


def _run(argv: list[str], *, gib: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=_TIMEOUT,
        env=_ENV,
        preexec_fn=_memory_cap(gib) if gib else None,
    )


def _python(script: str, *args: object, gib: int | None = None) -> str:
    """Run ``script`` in a fresh interpreter; its stdout, after asserting it succeeded."""
    done = _run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)], gib=gib)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@needs_fifo
def test_check_with_a_fifo_among_the_images_skips_it_instead_of_hanging(tmp_path: Path) -> None:
    data = build_image_folder(tmp_path / "photos", {"cat": 3, "dog": 3})
    os.mkfifo(data / "cat" / "pipe.jpg")
    done = _run([sys.executable, "-m", "headstart", "check", str(data)])
    assert done.returncode in (0, 1), done.stderr[-3000:]  # a report, whatever it finds
    assert "pipe.jpg" in done.stdout + done.stderr
    assert "not a regular file (a FIFO)" in done.stdout + done.stderr


_DATA_READERS = """
    import sys
    from pathlib import Path
    from headstart.data.decode import decode_image
    from headstart.data.loaders import load_csv
    from headstart.errors import DataError, ImageDecodeError

    csv_file, device, fifo, fifo_csv = map(Path, sys.argv[1:])
    dataset = load_csv(csv_file)
    print("loaded", dataset.report.loaded)
    for skipped in dataset.report.skipped:
        print("skipped", skipped.path, "|", skipped.reason)
    for path in (device, fifo):
        try:
            decode_image(path)
        except ImageDecodeError as error:
            print("refused", path, "|", error.reason)
    try:
        load_csv(fifo_csv)
    except DataError as error:
        print("csv refused |", error)
"""


@needs_fifo
@needs_dev_zero
def test_csv_rows_naming_a_fifo_or_dev_zero_are_skipped_unread(tmp_path: Path) -> None:
    """Case 1 (a CSV row naming a FIFO) and case 2 (/dev/zero in a CSV: a MemoryError
    after reading 6 GB): each is refused by its file type before a byte is read."""
    good = [solid_png(tmp_path / f"{i}.png") for i in range(4)]
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    fifo_csv = tmp_path / "pipe.csv"
    os.mkfifo(fifo_csv)
    rows = [f"{path},{('cat', 'dog')[i % 2]}" for i, path in enumerate(good)]
    rows += [f"{fifo},dog", "/dev/zero,dog", "/dev/urandom,cat"]
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("path,label\n" + "\n".join(rows) + "\n")
    out = _python(_DATA_READERS, csv_file, "/dev/zero", fifo, fifo_csv, gib=2)
    assert "loaded 4" in out
    assert f"skipped {fifo} | not a regular file (a FIFO)" in out
    assert "skipped /dev/zero | not a regular file (a character device)" in out
    assert "skipped /dev/urandom | not a regular file (a character device)" in out
    assert "refused /dev/zero | not a regular file (a character device)" in out
    assert f"refused {fifo} | not a regular file (a FIFO)" in out
    assert "csv refused |" in out and "not a regular file (a FIFO)" in out


@needs_fifo
@needs_dev_zero
def test_predict_names_a_fifo_and_dev_zero_as_skipped(
    tiny_model_folder: Path, tmp_path: Path
) -> None:
    """``predict RUN fifo.jpg``, ``predict RUN folder-with-fifo/`` and ``predict RUN
    /dev/zero``: each a skip line and the good image's answer, no hang, no traceback."""
    folder = tmp_path / "folder"
    folder.mkdir()
    solid_png(folder / "red.png")
    os.mkfifo(folder / "inside.jpg")
    fifo = tmp_path / "named.jpg"
    os.mkfifo(fifo)
    argv = [sys.executable, "-m", "headstart", "predict", str(tiny_model_folder)]
    done = _run([*argv, str(fifo), str(folder), "/dev/zero"], gib=16)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "red.png" in done.stdout
    assert "Traceback" not in done.stderr
    for path in (fifo, folder / "inside.jpg"):
        assert f"skipped {path}: not a regular file (a FIFO)" in done.stderr
    assert "skipped /dev/zero: not a regular file (a character device)" in done.stderr


@needs_fifo
def test_a_fifo_as_headstart_json_is_refused(tiny_model_folder: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_folder, model)
    (model / "headstart.json").unlink()
    os.mkfifo(model / "headstart.json")
    out = _python(
        """
        import sys
        from headstart.errors import DataError
        from headstart.estimator.model_files import load_model
        try:
            load_model(sys.argv[1])
        except DataError as error:
            print("refused |", error)
        """,
        model,
    )
    assert "refused |" in out and "not a regular file (a FIFO)" in out


def test_a_1_gb_headstart_json_is_refused_unread(tiny_model_folder: Path, tmp_path: Path) -> None:
    """Case 3: read whole before (2.8 GB RSS, 20 s); now refused by its size, naming the
    file and the cap. The file is sparse: it costs no disk."""
    model = tmp_path / "model"
    shutil.copytree(tiny_model_folder, model)
    with open(model / "headstart.json", "r+b") as handle:
        handle.truncate(1 << 30)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DataError) as caught:
        load_model(model)
    message = str(caught.value)
    assert str(model / "headstart.json") in message
    assert "1,073,741,824 bytes, larger than the 16 MB cap for a model description" in message
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown_kib < 256 * 1024  # not read: reading it raised the peak by over 1 GB


def test_input_size_in_headstart_json_is_held_to_train_configs_bounds(
    tiny_model_folder: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_folder, model)
    meta_file = model / "headstart.json"
    meta = json.loads(meta_file.read_text())
    meta["preprocessing"]["input_size"] = [3, 100_000, 100_000]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"field 'input_size' must be .* from 16 to 2048"):
        load_model(model)


def test_a_file_larger_than_the_image_cap_is_skipped_naming_cap_and_setting(
    tmp_path: Path,
) -> None:
    """An image file above what ``max_pixels`` pixels can take is skipped unread."""
    from headstart.data.decode import image_byte_cap

    options = DecodeOptions(max_pixels=64)
    big = tmp_path / "big.png"
    with open(big, "wb") as handle:
        handle.truncate(image_byte_cap(options.max_pixels) + 1)  # sparse: no disk used
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(big, options)
    reason = caught.value.reason
    assert "cap for an image of at most 64 pixels" in reason
    assert "DecodeOptions.max_pixels" in reason  # the CLI words it --max-pixels


def test_a_csv_above_its_cap_is_refused_naming_the_cap(tmp_path: Path) -> None:
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("path,label\n" + "a.png,cat\n" * 100)
    with pytest.raises(DataError, match=r"larger than the 100 bytes cap for a CSV file"):
        load_csv(csv_file, max_bytes=100)
    with pytest.raises(DataError, match="could not be decoded"):
        load_csv(csv_file)


@pytest.mark.skipif(not features.check_codec("jpg_2000"), reason="Pillow lacks JPEG 2000")
def test_jpeg_2000_files_are_loaded_as_images(tmp_path: Path) -> None:
    """Case 7: .jp2 files were ignored as "non-image or hidden entries"."""
    root = tmp_path / "photos"
    for name, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (16, 16), colour).save(root / name / f"{i}.jp2")
    dataset = load_folder(root)
    assert dataset.classes == ["cat", "dog"]
    assert dataset.report.loaded == 4 and not dataset.report.ignored
    assert dataset.image(0).getpixel((8, 8))[0] > 200  # decoded: the red cat
