"""The data doctor: each planted problem is found once, named with its files, and nothing
clean is flagged; `headstart check` writes both reports and fails only under --strict;
`train` and `compare` mention the findings in a few lines and carry on."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures_images import cmyk_jpeg, exif_rotated_jpeg, html_as_jpeg, truncated_jpeg
from PIL import Image

from headstart.cli import main
from headstart.data import decode as imageio
from headstart.data.arrays import from_arrays
from headstart.data.doctor import Diagnosis, check_data, diagnose, write_report
from headstart.data.layout import load_images
from headstart.data.loaders import load_folder
from headstart.data.split import split_dataset
from headstart.errors import ConfigError, spell


def noise_png(path: Path, seed: int, size: tuple[int, int] = (40, 40)) -> Path:
    """A PNG of random pixels: distinct bytes for every seed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def clean_folder(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    for index, (name, count) in enumerate(counts.items()):
        for item in range(count):
            noise_png(root / name / f"{name}_{item:02d}.png", seed * 10_000 + index * 100 + item)
    return root


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path, Path]:
    """train/ + test/ with one of each problem the doctor looks for."""
    root = tmp_path / "data"
    clean_folder(root / "train", {"cat": 6, "dog": 6}, seed=1)
    clean_folder(root / "test", {"cat": 2, "dog": 2}, seed=2)
    shutil.copy(root / "train/cat/cat_00.png", root / "test/cat/leaked.png")  # leak
    shutil.copy(root / "train/cat/cat_01.png", root / "train/dog/mislabelled.png")  # conflict
    shutil.copy(root / "train/dog/dog_00.png", root / "train/dog/copy.png")  # duplicate
    truncated_jpeg(root / "train/cat/truncated.jpg")
    html_as_jpeg(root / "test/dog/page.jpg")
    noise_png(root / "train/dog/thumb.png", 99, size=(12, 40))  # tiny
    cmyk = cmyk_jpeg(root / "train/cat/cmyk.jpg")  # 16x12: tiny as well
    rotated = exif_rotated_jpeg(root / "train/dog/rotated.jpg")  # 40x20: tiny as well
    return root, cmyk, rotated


def details(diagnosis: Diagnosis, kind: str) -> tuple[str, ...]:
    found = diagnosis.find(kind)
    assert found is not None, f"no {kind!r} finding in {[f.kind for f in diagnosis.findings]}"
    return found.details


# ------------------------------------------------------------------ findings


def test_every_planted_problem_is_found_with_its_files(planted) -> None:
    root, cmyk, rotated = planted
    diagnosis = check_data(root)

    assert diagnosis.images == {"train": 17, "test": 5}
    assert diagnosis.skipped == 2
    unreadable = details(diagnosis, "unreadable")
    assert {line.split(":")[0] for line in unreadable} == {
        str(root / "train/cat/truncated.jpg"),
        str(root / "test/dog/page.jpg"),
    }
    assert any("truncated" in line for line in unreadable)
    assert any("HTML" in line for line in unreadable)

    assert details(diagnosis, "leak") == (
        f"{root / 'test/cat/leaked.png'} = {root / 'train/cat/cat_00.png'}",
    )
    assert diagnosis.find("leak").summary == "1 exact duplicate(s) across train and test"
    (conflict,) = details(diagnosis, "conflict")
    assert f"{root / 'train/cat/cat_01.png'} (cat)" in conflict
    assert f"{root / 'train/dog/mislabelled.png'} (dog)" in conflict
    # Repeats are counted over both splits (as `check` of the whole set counts them):
    # the leaked copy is also one of the two same-label duplicates, and says so.
    assert set(details(diagnosis, "duplicate")) == {
        f"{root / 'train/dog/copy.png'} = {root / 'train/dog/dog_00.png'}",
        f"{root / 'train/cat/cat_00.png'} = {root / 'test/cat/leaked.png'}",
    }
    assert diagnosis.find("duplicate").summary == (
        "2 duplicate file(s) with the same label (2 image(s) stored more than once; "
        "1 of the copies across train and test)"
    )
    assert set(details(diagnosis, "tiny")) == {
        f"{root / 'train/dog/thumb.png'}: 12x40",
        f"{cmyk}: 16x12",
        f"{rotated}: 40x20",  # the size as stored, before the EXIF rotation
    }
    assert details(diagnosis, "converted") == (f"{cmyk}: CMYK->RGB",)
    assert details(diagnosis, "rotated") == (str(rotated),)
    assert diagnosis.find("imbalance") is None  # 7 cats and 10 dogs in train
    # Worst first: the error before warnings before what loading did on its own.
    severities = [f.severity for f in diagnosis.findings]
    assert severities == sorted(severities, key=["error", "warning", "info"].index)


def test_a_clean_split_finds_nothing(tmp_path: Path) -> None:
    root = tmp_path / "data"
    clean_folder(root / "train", {"a": 4, "b": 4}, seed=1)
    clean_folder(root / "test", {"a": 2, "b": 2}, seed=2)
    diagnosis = check_data(root)
    assert diagnosis.findings == ()
    assert "No problems found." in diagnosis.to_text()
    assert diagnosis.brief(str(root)) == []


def test_one_folder_is_checked_as_a_whole(tmp_path: Path) -> None:
    """No split, so no leak: the repeat inside the set is the finding."""
    root = clean_folder(tmp_path / "pets", {"cat": 4, "dog": 4})
    shutil.copy(root / "cat/cat_00.png", root / "cat/again.png")
    diagnosis = check_data(root)
    assert diagnosis.images == {"data": 9}
    assert diagnosis.find("leak") is None
    assert diagnosis.find("duplicate").count == 1


def test_a_random_split_that_leaks_is_caught(tmp_path: Path) -> None:
    """The split `train` makes from one folder: a copy can land on both sides."""
    root = clean_folder(tmp_path / "pets", {"cat": 4, "dog": 4})
    for i in range(4):
        shutil.copy(root / "cat/cat_00.png", root / f"cat/copy{i}.png")
    train, test = split_dataset(load_folder(root), test_size=0.5, seed=0)
    diagnosis = diagnose(train, test)
    leaked = diagnosis.find("leak")
    assert leaked is not None and leaked.count >= 1
    # One load report behind both halves: the doctor reads it once.
    assert diagnosis.find("unreadable") is None


def test_csv_is_accepted(tmp_path: Path) -> None:
    root = clean_folder(tmp_path / "imgs", {"cat": 3, "dog": 3})
    rows = [(f"cat/cat_0{i}.png", "cat") for i in range(3)]
    rows += [(f"dog/dog_0{i}.png", "dog") for i in range(3)]
    rows.append(("cat/cat_00.png", "dog"))  # the same file listed under two labels
    with open(root / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("path", "label"), *rows])
    diagnosis = check_data(root / "labels.csv")
    assert diagnosis.images == {"data": 7}
    assert diagnosis.find("conflict").count == 1


def idx_file(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_idx_folder_is_checked_as_train_and_test(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train_images = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    test_images = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    test_images[0] = train_images[3]  # a leak between the IDX files
    idx_file(tmp_path / "train-images-idx3-ubyte.gz", train_images)
    idx_file(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(6) % 2)
    idx_file(tmp_path / "t10k-images-idx3-ubyte.gz", test_images)
    idx_file(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(4) % 2)
    diagnosis = check_data(tmp_path)
    assert diagnosis.images == {"train": 6, "test": 4}
    assert diagnosis.find("leak").count == 1
    # Every image is 28x28: said once, as information, not as a per-file warning.
    tiny = diagnosis.find("tiny")
    assert tiny.severity == "info" and "all 10 images" in tiny.summary and "28x28" in tiny.summary


@pytest.mark.parametrize("largest, warned", [(8, False), (9, True)])
def test_imbalance_warns_from_a_ratio_of_three(largest: int, warned: bool) -> None:
    images = np.random.default_rng(0).integers(0, 256, (largest + 3, 40, 40, 3), dtype=np.uint8)
    dataset = from_arrays(images, ["big"] * largest + ["small"] * 3)
    found = diagnose(dataset).find("imbalance")
    assert (found is not None) == warned
    if warned:
        assert "3 to 9 images per class" in found.summary
        advice = spell(found.advice)  # the API's words; the CLI passes its own
        assert "class_weights='none'" in advice and "balanced accuracy" in advice
        assert found.details == ("big: 9", "small: 3")


def test_sizes_come_from_loading_and_nothing_is_decoded_again(
    planted, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _, _ = planted
    train, test = load_images(root)
    assert None not in train.original_sizes()
    assert train.subset([0]).original_sizes() == train.original_sizes()[:1]

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the doctor decoded an image again")

    monkeypatch.setattr(imageio, "_decode", no_decoding)
    assert diagnose(train, test).find("tiny").count == 3


def test_bad_thresholds_name_the_parameter(planted) -> None:
    root, _, _ = planted
    train, _ = load_images(root)
    with pytest.raises(ConfigError, match="tiny_side"):
        diagnose(train, tiny_side=0)
    with pytest.raises(ConfigError, match="imbalance_ratio"):
        diagnose(train, imbalance_ratio="3")


def test_reports_round_trip_and_text_is_capped(planted, tmp_path: Path) -> None:
    root, _, _ = planted
    diagnosis = check_data(root)
    text_path, json_path = write_report(diagnosis, tmp_path / "out")
    assert json.loads(json_path.read_text()) == diagnosis.to_dict()
    assert text_path.read_text().strip() == diagnosis.to_text(max_details=1000)
    short = diagnosis.to_text(max_details=1)
    # three tiny images, one shown
    assert "... and 2 more (all in check.json, written by write_report())" in short


def test_brief_is_a_few_lines_and_skips_what_was_already_said(planted) -> None:
    root, _, _ = planted
    diagnosis = check_data(root)
    lines = diagnosis.brief("DATA", skip=("unreadable",))
    assert len(lines) == 3
    assert lines[0] == "check: 1 exact duplicate(s) across train and test"
    # The counts' scope is said, as `check` on another scope counts other images.
    assert lines[-1].endswith(
        "(and 1 more finding(s)) (counted over 17 train + 5 test = 22 images; "
        "details: headstart.check_data(path))"
    )
    assert all("cannot be decoded" not in line for line in lines)


# ------------------------------------------------------------------------ CLI


def test_check_command_writes_both_reports_and_exits_0(planted, tmp_path: Path, capsys) -> None:
    root, _, _ = planted
    out = tmp_path / "report"
    assert main(["check", str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "[warning] 1 exact duplicate(s) across train and test." in printed
    assert str(root / "train/cat/truncated.jpg") in printed
    assert (out / "check.txt").is_file()
    assert json.loads((out / "check.json").read_text())["skipped"] == 2


def test_check_strict_exits_2_naming_a_skipped_file(planted, tmp_path: Path, capsys) -> None:
    root, _, _ = planted
    assert main(["check", str(root), "--out", str(tmp_path / "r"), "--strict"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("headstart: error: --strict: 2 file(s) would be skipped")
    assert "truncated.jpg" in err or "page.jpg" in err


def test_check_strict_passes_warnings_that_skip_nothing(tmp_path: Path, capsys) -> None:
    root = clean_folder(tmp_path / "pets", {"cat": 4, "dog": 4})
    shutil.copy(root / "cat/cat_00.png", root / "dog/odd.png")
    assert main(["check", str(root), "--out", str(tmp_path / "r"), "--strict"]) == 0
    assert "two or more different labels" in capsys.readouterr().out


def test_a_single_class_is_an_error_finding(tmp_path: Path, capsys) -> None:
    """Issue 11.5: one class folder said "No problems found.", and train then refused it."""
    root = clean_folder(tmp_path / "cats", {"cat": 4})
    diagnosis = check_data(root)
    found = diagnosis.find("classes")
    assert found is not None and found.severity == "error"
    assert "cat" in found.summary and "at least 2" in found.summary
    assert "No problems found." not in diagnosis.to_text()
    assert main(["check", str(root)]) == 0  # a report; --strict makes it fail
    assert "[error]" in capsys.readouterr().out
    assert main(["check", str(root), "--strict"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("headstart: error: --strict: ") and "at least 2" in err


def test_two_classes_in_train_are_enough(tmp_path: Path) -> None:
    root = tmp_path / "data"
    clean_folder(root / "train", {"a": 3, "b": 3}, seed=1)
    clean_folder(root / "test", {"a": 2}, seed=2)  # a test of one class still scores
    assert check_data(root).find("classes") is None


def test_check_writes_files_only_where_out_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    root = clean_folder(tmp_path / "pets", {"cat": 2, "dog": 2})
    monkeypatch.chdir(tmp_path)
    assert main(["check", str(root)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pets"]  # nothing dropped here
    assert "No problems found." in capsys.readouterr().out
    assert main(["check", str(root), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report/check.txt").is_file()
    assert (tmp_path / "report/check.json").is_file()


def test_check_on_a_missing_path_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["check", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and len(err.strip().splitlines()) == 1


TINY_ARGS = ["--backbone", "test_efficientnet", "--weights", "none", "--image-size", "32"]


def test_train_mentions_a_leak_briefly_and_still_trains(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    clean_folder(root / "train", {"cat": 5, "dog": 5}, seed=1)
    clean_folder(root / "test", {"cat": 2, "dog": 2}, seed=2)
    shutil.copy(root / "train/dog/dog_00.png", root / "test/dog/leaked.png")
    out = tmp_path / "model"
    code = main(
        ["train", str(root), "--out", str(out), "--no-cache", "--device", "cpu", *TINY_ARGS]
    )
    assert code == 0
    printed = capsys.readouterr().out
    check_lines = [line for line in printed.splitlines() if line.startswith("check:")]
    # The leaked copy is also a same-label duplicate of the 15 images, as `check` says.
    assert check_lines == [
        "check: 1 exact duplicate(s) across train and test",
        "check: 1 duplicate file(s) with the same label (1 image(s) stored more than once; "
        "1 of the copies across train and test) (counted over 10 train + 5 test = 15 "
        f"images; details: `headstart check {root}`)",
    ]
    assert (out / "model.safetensors").is_file()


def test_compare_runs_the_doctor_before_comparing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Only the doctor's part of `compare`: the comparison itself is stubbed out."""
    from headstart.cli import compare as compare_command

    root = tmp_path / "data"
    clean_folder(root / "train", {"cat": 9, "dog": 3}, seed=1)
    clean_folder(root / "test", {"cat": 2, "dog": 2}, seed=2)
    ran: list[int] = []
    monkeypatch.setattr(
        compare_command, "run_comparison", lambda train, *rest: ran.append(len(train)) or 0
    )
    assert main(["compare", str(root), "--out", str(tmp_path / "cmp")]) == 0
    assert ran == [12]
    printed = capsys.readouterr().out.splitlines()
    # Pre-split data: each part's load report, as in `train`; the imbalance once.
    imbalance = [line for line in printed if "imbalanced" in line]
    assert imbalance == [
        "train: classes are imbalanced (3 to 9 images per class); read the balanced accuracy"
    ]
