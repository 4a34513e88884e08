"""The page with DICOM files, in a real browser (Playwright driving Debian's Chromium): the
file picker offers .dcm and .dicom, and a scan, which no browser can draw, is shown from
the server's preview, the windowed picture the model saw, as a PNG data URI.

Skipped, saying why, where there is no chromium or no playwright (as test_serve_page)."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install .[serve]")
pytest.importorskip("pydicom", reason="the dicom extra is not installed")

from dicom_files import dicom_bytes, ramp  # noqa: E402
from serve_helpers import colour_png  # noqa: E402
from test_serve_page import ServerThread, browser, expect, result  # noqa: E402, F401

from headstart.serve import create_app, load_predictor  # noqa: E402


@pytest.fixture(scope="module")
def base_url(tiny_model_folder):
    with ServerThread(create_app(load_predictor(tiny_model_folder))) as url:
        yield url


def test_a_picked_dicom_file_is_shown_from_its_preview(browser, base_url):  # noqa: F811
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(base_url)
    expect(page.locator("#model-info")).to_contain_text("3 classes")
    accept = page.locator("#images").get_attribute("accept") or ""
    assert {".dcm", ".dicom", "image/*"} <= set(accept.split(","))

    scan = dicom_bytes(ramp(40, 40), window=(2000, 2000))
    page.set_input_files(
        "#images",
        files=[
            {"name": "scan.dcm", "mimeType": "application/dicom", "buffer": scan},
            {"name": "IM000017", "mimeType": "application/octet-stream", "buffer": scan},
            {"name": "red.png", "mimeType": "image/png", "buffer": colour_png("red")},
        ],
    )
    expect(page.locator("#predict-status")).to_have_text("3 predicted.")
    for name in ("scan.dcm", "IM000017"):
        image = result(page, name).locator("img")
        expect(image).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
        # the browser draws it: the 40x40 picture decoded for the model, not the file
        drawn = image.evaluate(
            "img => img.decode().then(() => [img.naturalWidth, img.naturalHeight])"
        )
        assert drawn == [40, 40]
    expect(result(page, "red.png").locator(".top li").first).to_contain_text("red")
    expect(result(page, "red.png").locator("img")).to_have_count(1)
    context.close()
    assert errors == [], errors
