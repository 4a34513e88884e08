"""The web page in a real browser (Playwright driving Debian's Chromium): predict by
dropping and by picking files, a broken file's reason, keyboard use, phone width, and
training on a tiny folder with live progress, the report and then the new model.

Skipped, saying why, where there is no chromium or no playwright. The screenshot kept
in docs/ is rewritten by ``HEADSTART_SCREENSHOT=docs/serve-page.png pytest ...``.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import threading
import time
import zipfile

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install .[serve]")
if shutil.which("chromium") is None:
    pytest.skip("no chromium: apt-get install -y chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="no playwright: pip install .[dev]")

import uvicorn  # noqa: E402
from fixtures_images import colour_folder  # noqa: E402
from serve_helpers import colour_png  # noqa: E402

from headstart.serve import ServeLimits, TrainingJobs, create_app, load_predictor  # noqa: E402
from headstart.serve.training import TrainingSettings  # noqa: E402

expect = sync_api.expect
BROKEN = b"<html>this page was saved under an image name</html>"


class ServerThread:
    """uvicorn serving ``app`` on a free port of 127.0.0.1, in a thread of this process."""

    def __init__(self, app) -> None:  # noqa: ANN001
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def base_url(tiny_model_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    settings = TrainingSettings(
        out=root / "runs",
        data=colour_folder(root / "colours", per_class=8),
        backbone="test_efficientnet",
        weights="none",
        image_size=32,
    )
    limits = ServeLimits()
    app = create_app(
        load_predictor(tiny_model_folder), limits, training=TrainingJobs(settings, limits)
    )
    with ServerThread(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, base_url):
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Listening from the start turns file-chooser interception on before any key is
    # pressed (enabled only inside expect_file_chooser, the first Space can race it).
    page.choosers = []
    page.on("filechooser", lambda chooser: page.choosers.append(chooser))
    page.goto(base_url)
    expect(page.locator("#model-info")).to_contain_text(" on test_efficientnet: 3 classes")
    yield page
    context.close()
    assert errors == [], errors  # no JavaScript error on the way


def drop_files(page, files: dict[str, bytes]) -> None:
    """A real drop event on the drop zone, carrying ``files`` (as a user's drag would)."""
    payload = {name: base64.b64encode(data).decode() for name, data in files.items()}
    transfer = page.evaluate_handle(
        """(files) => {
            const transfer = new DataTransfer();
            for (const [name, data] of Object.entries(files)) {
                const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], name, { type: "image/png" }));
            }
            return transfer;
        }""",
        payload,
    )
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})


def result(page, name: str):
    return page.locator(f'#results li[data-name="{name}"]')


def test_drop_an_image_and_a_broken_file(page):
    drop_files(page, {"red.png": colour_png("red"), "broken.jpg": BROKEN})
    expect(result(page, "red.png").locator(".top li").first).to_contain_text("red")
    expect(result(page, "red.png").locator(".top li")).to_have_count(3)
    reason = result(page, "broken.jpg").locator(".error")
    expect(reason).to_contain_text("not an image")
    expect(reason).to_contain_text("HTML or XML")
    expect(page.locator("#predict-status")).to_have_text("1 predicted, 1 could not be read.")
    shot = os.environ.get("HEADSTART_SCREENSHOT")
    if shot:
        drop_files(
            page,
            {
                "red.png": colour_png("red"),
                "blue.png": colour_png("blue", seed=3),
                "holiday.jpg": BROKEN,
            },
        )
        expect(result(page, "holiday.jpg").locator(".error")).to_be_visible()
        page.screenshot(path=shot, full_page=True)


def test_pick_files_with_the_keyboard(page):
    for _ in range(10):  # the file picker is reached from the top of the page by Tab
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "images":
            break
    assert page.evaluate("document.activeElement.id") == "images"
    page.keyboard.press("Space")
    deadline = time.monotonic() + 10
    while not page.choosers:  # registered before the page loaded (see the page fixture)
        assert time.monotonic() < deadline, "Space on the file picker opened no chooser"
        page.wait_for_timeout(20)
    page.choosers[0].set_files(
        [{"name": "green.png", "mimeType": "image/png", "buffer": colour_png("green")}]
    )
    expect(result(page, "green.png").locator(".top li").first).to_contain_text("green")
    for label in ("Images", "Classes shown per image", "Strategy", "Zip file"):
        expect(page.get_by_label(label, exact=False).first).to_be_attached()


def test_usable_at_phone_width(browser, base_url):
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True)
    page = context.new_page()
    page.goto(base_url)
    expect(page.locator("#model-info")).to_contain_text("classes")
    page.set_input_files("#images", files=[
        {"name": "blue.png", "mimeType": "image/png", "buffer": colour_png("blue")}
    ])  # fmt: skip
    expect(result(page, "blue.png").locator(".top li").first).to_contain_text("blue")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a phone screen"
    context.close()


def test_train_on_a_tiny_folder_then_predict(page):
    expect(page.locator("#train-section")).to_be_visible()
    expect(page.locator("#data-name")).to_have_text("(colours)")
    page.get_by_label("The server's folder").check()
    page.get_by_label("Strategy", exact=True).select_option("fine-tune")
    page.get_by_label("Epochs").fill("1")
    page.get_by_role("button", name="Train").click()
    status = page.locator("#train-status")
    expect(status).to_contain_text("Done: the new model is served", timeout=60_000)
    log = page.locator("#train-log")
    expect(log).to_contain_text("scratch/k=all/seed=0: test accuracy")
    expect(log).to_contain_text("fine-tune/k=all/seed=0: test accuracy")
    expect(log).to_contain_text("New model served")
    assert page.locator("#train-progress").evaluate("p => p.value") == 1
    report = page.frame_locator("#report")
    expect(report.locator("h1")).to_contain_text("fine-tune against scratch")
    expect(report.locator("table")).to_contain_text("scratch")
    expect(page.locator("#model-info")).to_contain_text("fine-tune on test_efficientnet")
    drop_files(page, {"new.png": colour_png("green", seed=7)})
    expect(result(page, "new.png").locator(".top li").first).to_contain_text("green")


def test_train_on_an_uploaded_zip_from_the_page(page, tmp_path):
    folder = colour_folder(tmp_path / "upload", per_class=6)
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(folder.rglob("*.png")):
            bundle.write(path, "photos/" + path.relative_to(folder).as_posix())
    page.get_by_label("A zip of class folders").check()
    page.get_by_label("Zip file").set_input_files(archive)
    page.get_by_label("Strategy", exact=True).select_option("feature-extraction")
    page.get_by_role("button", name="Train").click()
    expect(page.locator("#train-status")).to_contain_text("Done", timeout=60_000)
    expect(page.locator("#train-log")).to_contain_text("classes blue, green, red")
    expect(page.frame_locator("#report").locator("h1")).to_contain_text("feature-extraction")


def test_a_server_with_a_token_asks_for_it_once(browser, tiny_model_folder):
    app = create_app(load_predictor(tiny_model_folder), token="open sesame")
    with ServerThread(app) as url:
        context = browser.new_context()
        page = context.new_page()
        page.goto(url)
        field = page.get_by_label("This server needs a token")
        expect(field).to_be_focused()  # keyboard users land in it
        field.fill("wrong")
        refused = lambda r: r.url.endswith("/v1/model") and r.status == 401  # noqa: E731
        with page.expect_response(refused) as answer:
            field.press("Enter")
        assert answer.value.request.headers["authorization"] == "Bearer wrong"
        expect(field).to_be_visible()  # refused: asked again
        field.fill("open sesame")
        field.press("Enter")
        expect(page.locator("#model-info")).to_contain_text("3 classes")
        expect(page.locator("#token-section")).to_be_hidden()
        drop_files(page, {"red.png": colour_png("red")})
        expect(result(page, "red.png").locator(".top li").first).to_contain_text("red")
        context.close()
