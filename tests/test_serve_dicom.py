"""DICOM through the HTTP API: a scan uploaded by name or by its DICM marker (or as
``application/dicom``) is predicted after the model's own decode options, and answered
with a small PNG preview of the windowed picture the model saw; a DICOM file that is no
image is named as such, with no patient value in the answer; token, Origin and body
limits apply as to any upload."""

from __future__ import annotations

import base64
import copy
from io import BytesIO

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install .[serve]")

from dicom_files import IDENTIFYING, dicom_bytes, ramp  # noqa: E402
from dicom_files import pydicom_file as shipped_file  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from serve_helpers import colour_png  # noqa: E402

from headstart.data.decode import DecodeOptions, decode_image  # noqa: E402
from headstart.serve import ServeLimits, create_app, load_predictor  # noqa: E402
from headstart.serve.preview import PREVIEW_SIDE  # noqa: E402

PNG_URI = "data:image/png;base64,"


@pytest.fixture(scope="module")
def predictor(tiny_model_folder):
    return load_predictor(tiny_model_folder)


@pytest.fixture
def client(predictor):
    with TestClient(create_app(predictor, ServeLimits(max_body_bytes=2_000_000))) as c:
        yield c


def files(*named: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in named]


def shown(entry: dict) -> Image.Image:
    """The picture in an answer's preview, checked to be a PNG data URI."""
    assert entry["preview"].startswith(PNG_URI)
    image = Image.open(BytesIO(base64.b64decode(entry["preview"][len(PNG_URI) :])))
    assert image.format == "PNG"
    return image


def scan(**facts: object) -> bytes:
    """A 40x40 CT: values rising left to right, windowed by the file to dark..bright."""
    return dicom_bytes(ramp(40, 40), window=(2000, 2000), **facts)  # type: ignore[arg-type]


def test_a_dicom_upload_is_predicted_and_previewed_as_the_model_saw_it(client, predictor):
    data = scan()
    answer = client.post("/v1/predict", files=files(("scan.dcm", data), ("IM000017", data)))
    assert answer.status_code == 200
    by_name, by_marker = answer.json()["predictions"]
    for entry in (by_name, by_marker):
        assert entry["class"] in predictor.classes and len(entry["top"]) == 3
        picture = np.asarray(shown(entry).convert("RGB"))
        expected = np.asarray(decode_image(data, predictor.decode_options)[0])
        assert np.array_equal(picture, expected)  # windowed, exactly as decoded for the model
        assert picture[:, 0].mean() < 40 and picture[:, -1].mean() > 215  # dark to bright
    assert by_name["probability"] == pytest.approx(by_marker["probability"])


def test_the_model_s_own_window_is_the_one_applied(predictor):
    data = scan()
    served = copy.copy(predictor)
    served.decode_options = DecodeOptions(dicom_window="0,1000")  # as if trained with it
    with TestClient(create_app(served)) as c:
        (entry,) = c.post("/v1/predict", files=files(("scan.dcm", data))).json()["predictions"]
    picture = np.asarray(shown(entry).convert("L"))
    assert picture[:, -5:].min() == 255 and picture[:, 10].mean() > 200  # saturated above 500
    assert not np.array_equal(picture, np.asarray(decode_image(data)[0].convert("L")))


def test_a_raw_dicom_body_and_a_large_scan_get_a_small_preview(client):
    jpeg_12_bit = shipped_file("JPGExtended.dcm").read_bytes()  # 256 wide, 1024 high: 12-bit JPEG
    answer = client.post(
        "/v1/predict", content=jpeg_12_bit, headers={"content-type": "application/dicom"}
    )
    assert answer.status_code == 200
    (entry,) = answer.json()["predictions"]
    assert entry["name"] == "body" and "class" in entry
    assert shown(entry).size == (PREVIEW_SIDE // 4, PREVIEW_SIDE)


def test_other_images_get_a_preview_only_when_asked(client):
    plain = client.post("/v1/predict", files=files(("r.png", colour_png("red"))))
    assert "preview" not in plain.json()["predictions"][0]
    asked = client.post("/v1/predict?preview=true", files=files(("r.png", colour_png("red"))))
    (entry,) = asked.json()["predictions"]
    assert entry["class"] == "red" and shown(entry).size == (24, 24)


def test_a_dicom_file_that_is_no_image_is_named_without_patient_values(client):
    dicomdir = shipped_file("dicomdirtests/DICOMDIR").read_bytes()  # patients named inside
    answer = client.post(
        "/v1/predict",
        files=files(
            ("report.dcm", dicom_bytes(None)),  # a patient's file with no pixel data
            ("upload", dicomdir),
            ("ok.dcm", scan()),
        ),
    )
    assert answer.status_code == 200  # as for any undecodable upload: a reason per image
    report, index, ok = answer.json()["predictions"]
    assert "no pixel data (7FE0,0010)" in report["error"] and "preview" not in report
    assert "DICOMDIR" in index["error"] and "not an image" in index["error"]
    assert "class" in ok and ok["preview"].startswith(PNG_URI)
    for value in (*IDENTIFYING, "Archibald", "Peter", "98890234", "77654033"):
        assert value not in answer.text


def test_token_origin_and_body_limit_hold_for_dicom(predictor):
    data = scan()
    app = create_app(predictor, ServeLimits(max_body_bytes=len(data) + 1000), token="s3cret")
    auth = {"Authorization": "Bearer s3cret"}
    with TestClient(app) as c:
        assert c.post("/v1/predict", files=files(("a.dcm", data))).status_code == 401
        foreign = c.post(
            "/v1/predict",
            files=files(("a.dcm", data)),
            headers={**auth, "Origin": "https://elsewhere.example"},
        )
        assert foreign.status_code == 403
        big = dicom_bytes(ramp(200, 200), window=(2000, 2000))
        assert c.post("/v1/predict", files=files(("b.dcm", big)), headers=auth).status_code == 413
        fine = c.post("/v1/predict", files=files(("a.dcm", data)), headers=auth)
        assert fine.status_code == 200 and "preview" in fine.json()["predictions"][0]
