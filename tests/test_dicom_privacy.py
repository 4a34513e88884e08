"""Patient tags never leave headstart: every output of a run over DICOM files holding planted
identifying values (what is printed, logged, written, exported and served) is searched for
those values, including the messages about files that were refused."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from dicom_files import PLANTED, write_dicom

from headstart.cli import main

pydicom = pytest.importorskip("pydicom")

TINY = ["--backbone", "test_efficientnet", "--weights", "none", "--image-size", "32"]


def _planted_pieces() -> set[str]:
    """Each planted value, and each component of a person name (``Zorblatt^Quintessa``)."""
    pieces = set()
    for value in PLANTED.values():
        pieces.add(value)
        pieces.update(part for part in value.split("^") if len(part) > 3)
    return pieces


def _scans(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for label, offset in (("normal", 0), ("lesion", 1500)):
        for k in range(6):
            pixels = (rng.integers(0, 800, size=(24, 20)) + offset - 1024).astype(np.int16)
            write_dicom(root / label / f"{k}.dcm", pixels, slope=1.0, intercept=0.0,
                        window=(40 + offset, 2000))  # fmt: skip
    # Refused files, whose messages must not carry the identifying values either.
    write_dicom(root / "normal" / "zero-width.dcm", pixels, window=(40, 0))
    truncated = write_dicom(root / "lesion" / "cut.dcm", pixels)
    truncated.write_bytes(truncated.read_bytes()[:-100])
    empty = write_dicom(root / "lesion" / "report.dcm", pixels)
    ds = pydicom.dcmread(empty)
    del ds.PixelData
    ds.save_as(empty)
    return root


def _every_output(folder: Path) -> list[tuple[str, bytes]]:
    return [(str(path), path.read_bytes()) for path in folder.rglob("*") if path.is_file()]


def _leaks(outputs: list[tuple[str, bytes]]) -> list[str]:
    found = []
    for where, data in outputs:
        for piece in _planted_pieces():
            for encoding in ("utf-8", "utf-16-le"):
                if piece.encode(encoding) in data:
                    found.append(f"{piece!r} in {where}")
    return found


def test_no_identifying_value_reaches_any_output(tmp_path, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    data = _scans(tmp_path / "scans")
    # The planted values are really in the files (else the search below proves nothing).
    assert PLANTED["PatientName"].encode() in (data / "normal" / "0.dcm").read_bytes()
    out = tmp_path / "out"
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert main(["check", str(data), "--out", str(out / "check")]) == 0
    assert main(["train", str(data), *TINY, "--test-size", "4", "--out", str(out / "model"),
                 *cache]) == 0  # fmt: skip
    assert main(["evaluate", str(out / "model"), str(data), "--out", str(out / "eval")]) == 0
    assert main(["predict", str(out / "model"), str(data / "lesion"), "--format", "json"]) == 0
    assert main(["predict", str(out / "model"), str(data / "lesion" / "cut.dcm")]) in (0, 1, 2)
    assert main(["compare", str(data), *TINY, "--strategies", "feature-extraction,scratch",
                 "--epochs", "1", "--test-size", "4", "--out", str(out / "compare"),
                 *cache]) == 0  # fmt: skip
    outputs = _every_output(out)
    if _has("onnxruntime") and _has("onnxscript"):
        assert main(["export", str(out / "model"), "--out", str(out / "model.onnx")]) == 0
        outputs = _every_output(out)
    served = _served(out / "model", data)
    printed = capfd.readouterr()
    outputs += [("stdout", printed.out.encode()), ("stderr", printed.err.encode())]
    outputs += [("log", caplog.text.encode()), ("server", served)]
    assert "zero-width.dcm" in printed.out and "WindowWidth" in printed.out  # refusals shown
    assert _leaks(outputs) == []


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _served(model: Path, data: Path) -> bytes:
    """What the server answers for a good and a refused DICOM upload."""
    if not _has("fastapi"):
        return b""
    from fastapi.testclient import TestClient

    from headstart.serve import ServeLimits, create_app, load_predictor

    answers = []
    with TestClient(create_app(load_predictor(model), ServeLimits())) as client:
        for name in ("normal/0.dcm", "normal/zero-width.dcm", "lesion/cut.dcm"):
            path = data / name
            reply = client.post("/v1/predict", files={"files": (path.name, path.read_bytes())})
            answers.append(reply.content)
        answers.append(json.dumps(client.get("/v1/model").json()).encode())
    assert b"WindowWidth" in answers[1]
    return b"\n".join(answers)
