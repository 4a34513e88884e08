"""The data doctor on DICOM sets: bits, photometric interpretations and windows counted,
modalities or sizes that tell the classes apart warned about (naming which class holds
which), conversions said once per window rule rather than once per file, all of it in
check.json, and no patient, study or institution value anywhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from dicom_files import IDENTIFYING, ramp, write_dicom
from dicom_files import pydicom_file as shipped_file
from PIL import Image

from headstart.cli import main
from headstart.data.decode import DecodeOptions
from headstart.data.doctor import Diagnosis, check_data, write_report
from headstart.data.loaders import load_folder


def finding(diagnosis: Diagnosis, kind: str):  # noqa: ANN201
    found = diagnosis.find(kind)
    assert found is not None, f"no {kind!r} finding in {[f.kind for f in diagnosis.findings]}"
    return found


def assert_private(*texts: str) -> None:
    for text in texts:
        for value in IDENTIFYING:
            assert value not in text, f"{value!r} came out"


@pytest.fixture
def shortcut_set(tmp_path: Path) -> Path:
    """Every ``tumour`` scan a windowed 40x40 CT, every ``normal`` one an unwindowed
    48x48 MR saved without a file name ending (as scanners write them)."""
    root = tmp_path / "scans"
    for i in range(3):
        write_dicom(
            root / "tumour" / f"t{i}.dcm",
            ramp(40, 40, seed=i),
            bits_stored=12,
            modality="CT",
            window=(40 + i, 400),
        )
        write_dicom(
            root / "normal" / f"IM{i:04d}", ramp(48, 48, seed=10 + i), bits_stored=12, modality="MR"
        )
    return root


def test_shortcuts_and_windows_are_warned_about_naming_the_classes(shortcut_set) -> None:
    diagnosis = check_data(shortcut_set)

    modality = finding(diagnosis, "dicom_modality")
    assert modality.severity == "warning"
    assert "2 modalities" in modality.summary and "by modality alone" in modality.summary
    assert set(modality.details) == {"normal: MR 3", "tumour: CT 3"}
    size = finding(diagnosis, "dicom_size")
    assert size.severity == "warning" and "by size alone" in size.summary
    assert set(size.details) == {"normal: 48x48 3", "tumour: 40x40 3"}

    window = finding(diagnosis, "dicom_window")
    assert window.severity == "warning"
    assert "3 from a window in the file, 0 from a VOI LUT, 3 with none" in window.summary
    assert "3 distinct" not in window.summary and "C=40 W=400 1" in window.summary
    assert window.count == 3 and {d.split(":")[0] for d in window.details} == {
        str(shortcut_set / "normal" / f"IM{i:04d}") for i in range(3)
    }
    assert "{dicom_window}" in window.advice
    assert "DecodeOptions.dicom_window" in diagnosis.to_text()

    summary = finding(diagnosis, "dicom")
    assert summary.severity == "info" and "6 DICOM image(s)" in summary.summary
    assert "bits stored 12 unsigned 6" in summary.summary and "MONOCHROME2 6" in summary.summary
    assert diagnosis.find("converted") is None  # said per rule by the dicom finding
    by_rule = [d for d in summary.details if d.startswith("converted to RGB by")]
    assert len(by_rule) == 2 and any("window in the file: 3 image(s)" in d for d in by_rule)


def test_check_json_has_the_dicom_counts_and_the_cli_speaks_its_flag(
    shortcut_set, tmp_path, capsys
) -> None:
    out = tmp_path / "out"
    assert main(["check", str(shortcut_set), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "--dicom-window" in printed and "DecodeOptions" not in printed
    report = json.loads((out / "check.json").read_text())
    dicom = report["dicom"]
    assert dicom["images"] == dicom["files"] == 6
    assert dicom["bits_stored"] == {"12 unsigned": 6}
    assert dicom["photometric"] == {"MONOCHROME2": 6}
    assert dicom["modalities"] == {"CT": 3, "MR": 3}
    assert dicom["sizes"] == {"40x40": 3, "48x48": 3}
    assert sum(dicom["windows"].values()) == 6 and len(dicom["file_windows"]) == 3
    assert dicom["by_class"]["tumour"] == {"modalities": {"CT": 3}, "sizes": {"40x40": 3}}
    kinds = {f["kind"]: f for f in report["findings"]}
    assert kinds["dicom_window"]["advice"].count("DecodeOptions.dicom_window") == 1
    assert_private(printed, (out / "check.json").read_text(), (out / "check.txt").read_text())


def test_a_chosen_window_leaves_nothing_to_warn_about(shortcut_set) -> None:
    diagnosis = check_data(shortcut_set, options=DecodeOptions(dicom_window="brain"))
    assert diagnosis.find("dicom_window") is None
    assert diagnosis.dicom is not None
    assert diagnosis.dicom["windows"] == {"preset brain window C=40 W=80": 6}


def test_a_uniform_set_is_not_flagged(tmp_path) -> None:
    root = tmp_path / "uniform"
    for name, seed in (("a", 0), ("b", 50)):
        for i in range(3):
            write_dicom(
                root / name / f"{i}.dcm",
                ramp(32, 32, seed=seed + i),
                bits_stored=12,
                window=(40, 400),
            )
    diagnosis = check_data(root)
    assert diagnosis.find("dicom_modality") is None and diagnosis.find("dicom_size") is None
    window = finding(diagnosis, "dicom_window")
    assert window.severity == "info" and window.advice == "" and window.details == ()
    assert diagnosis.warnings == []


def test_no_window_anywhere_is_one_warning_without_a_line_per_file(tmp_path) -> None:
    root = tmp_path / "full-range"
    for name, seed in (("a", 0), ("b", 50)):
        for i in range(3):
            write_dicom(root / name / f"{i}.dcm", ramp(32, 32, seed=seed + i).astype(np.int16))
    window = finding(check_data(root), "dicom_window")
    assert window.severity == "warning" and "6 with none (full range)" in window.summary
    assert "few gray levels" in window.summary and window.details == () and window.count == 6


def test_modalities_shared_and_sizes_of_each_image_own_are_no_shortcut(tmp_path) -> None:
    """CT and MR in both classes: a warning, but no claim that modality separates them;
    sizes that differ from image to image: information, not a shortcut."""
    root = tmp_path / "shared"
    for name, seed in (("a", 0), ("b", 50)):
        for i, modality in enumerate(("CT", "MR", "CT", "MR")):
            rows = 32 + seed // 10 + i  # a size of its own for every image
            write_dicom(
                root / name / f"{i}.dcm", ramp(rows, 33, seed=seed + i), bits_stored=12,
                modality=modality, window=(40, 400),
            )  # fmt: skip
    diagnosis = check_data(root)
    modality = finding(diagnosis, "dicom_modality")
    assert modality.severity == "warning" and "alone" not in modality.summary
    assert "different modalities" not in modality.summary
    assert set(modality.details) == {"a: CT 2, MR 2", "b: CT 2, MR 2"}
    size = finding(diagnosis, "dicom_size")
    assert size.severity == "info" and "alone" not in size.summary and size.advice == ""
    assert "8 sizes (rows x columns)" in size.summary


def test_many_files_are_counted_per_rule_not_listed(tmp_path, capsys) -> None:
    """60 files, each with a window of its own: a handful of lines, not 60 conversions;
    a gray PNG beside them is still listed as converted."""
    root = tmp_path / "many"
    for i in range(60):
        name = "a" if i % 2 else "b"
        write_dicom(
            root / name / f"{i:03d}.dcm",
            ramp(32, 32, seed=i),
            bits_stored=12,
            window=(40 + i, 400 + i),
        )
    Image.fromarray(np.full((40, 40), 9, np.uint8)).save(root / "a" / "gray.png")

    report = load_folder(root).report
    summary = report.summary()
    assert "Converted 1 image(s) to RGB: 1 L->RGB." in summary
    assert "Read 60 DICOM image(s): 60 file window." in summary

    assert main(["check", str(root)]) == 0
    printed = capsys.readouterr().out
    assert len(printed.splitlines()) < 20, printed
    assert "converted to RGB by window in the file: 60 image(s)" in printed
    assert "1 image(s) converted to RGB: 1 L->RGB" in printed
    assert "60 distinct" not in printed and "and 57 more" in printed  # windows, in one line
    assert "[info] windows of 60 gray DICOM image(s)" in printed  # differing: no warning
    assert printed.count(".dcm") <= 3


def test_real_files_bits_photometric_and_frames(tmp_path) -> None:
    """pydicom's own files: signed 16-bit CT with no window, MR, a MONOCHROME1 CR, a
    12-bit JPEG; and a 30-frame ultrasound read frame by frame, counted from one file."""
    root = tmp_path / "real"
    for folder, name in (
        ("a", "CT_small.dcm"),
        ("a", "MR_small.dcm"),
        ("b", "dicomdirtests/77654033/CR1/6154"),
        ("b", "JPGExtended.dcm"),
        ("c", "examples_ybr_color.dcm"),
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(shipped_file(name), root / folder / Path(name).name)

    diagnosis = check_data(root, options=DecodeOptions(frames="all"))
    dicom = diagnosis.dicom
    assert dicom is not None
    assert dicom["images"] == 34 and dicom["files"] == 5
    assert dicom["bits_stored"] == {"8 unsigned": 30, "16 signed": 2, "12 unsigned": 2}
    assert dicom["photometric"] == {
        "YBR_FULL_422": 30,
        "MONOCHROME2": 3,
        "MONOCHROME1": 1,
    }
    assert dicom["modalities"] == {"US": 30, "CT": 1, "MR": 1, "CR": 1, "NM": 1}
    window = finding(diagnosis, "dicom_window")
    assert "2 from a window in the file" in window.summary and "2 with none" in window.summary
    unwindowed = {Path(d.split(":")[0]).name for d in window.details}
    assert unwindowed == {"CT_small.dcm", "JPGExtended.dcm"}
    assert "34 DICOM image(s) from 5 file(s)" in finding(diagnosis, "dicom").summary
    assert "each modality occurs in one class only" in finding(diagnosis, "dicom_modality").summary
    assert diagnosis.find("converted") is None  # no line per frame
    assert "#frame=" not in diagnosis.to_text()  # examples name files, not their frames


def test_write_report_of_a_dicom_set_stays_private(shortcut_set, tmp_path) -> None:
    text_path, json_path = write_report(check_data(shortcut_set), tmp_path / "report")
    assert_private(text_path.read_text(), json_path.read_text())
    assert json.loads(json_path.read_text())["dicom"]["files"] == 6
    no_dicom = tmp_path / "pngs"
    for name in ("a", "b"):
        (no_dicom / name).mkdir(parents=True)
        Image.fromarray(np.full((40, 40, 3), ord(name), np.uint8)).save(no_dicom / name / "x.png")
    assert check_data(no_dicom).to_dict()["dicom"] is None
