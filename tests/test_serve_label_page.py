"""The labelling page in a real browser (Playwright driving Debian's Chromium): create and
rename classes, pick and drag pool images onto a class, label suggestions one by one from
the keyboard (a number key, Enter for the model's guess, S to skip), retrain and see the
accuracy and the label-saving curve, predict with the retrained model, export; the labels
are on disk and a restarted server shows them again. Two tabs labelling into one CSV.

Skipped, saying why, where there is no chromium or no playwright (as test_serve_page).
``HEADSTART_LABEL_SCREENSHOTS=docs pytest tests/test_serve_label_page.py`` rewrites the
screenshots kept in docs/ (label-page.png, label-retrained.png).
"""

from __future__ import annotations

import csv
import os
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install .[serve]")

from fixtures_images import colour_folder  # noqa: E402
from serve_helpers import colour_png  # noqa: E402
from test_serve_page import ServerThread, browser, drop_files, expect, result  # noqa: E402, F401

from headstart.serve import ServeLimits, TrainingJobs, create_app  # noqa: E402
from headstart.serve.labelling import Labelling  # noqa: E402
from headstart.serve.labels import LabelStore  # noqa: E402
from headstart.serve.training import TrainingSettings  # noqa: E402

SCREENSHOTS = os.environ.get("HEADSTART_LABEL_SCREENSHOTS")
COLOURS = ("red", "green", "blue")


def label_app(root: Path, labels_as: str = "folders"):  # noqa: ANN201
    """A server labelling root/pool into root/project (what `headstart serve --data
    root/project --unlabelled root/pool` builds), with the tiny random backbone."""
    store = LabelStore(root / "project", root / "pool", labels_as=labels_as)
    settings = TrainingSettings(
        out=root / "runs",
        data=store.data,
        backbone="test_efficientnet",
        weights="none",
        image_size=32,
    )
    limits = ServeLimits()
    training = TrainingJobs(settings, limits)
    return create_app(None, limits, training=training, labelling=Labelling(store, training))


@pytest.fixture
def open_page(browser):  # noqa: F811
    """``open_page(url)``: a new tab on ``url``; no JavaScript error may happen in it."""
    contexts, errors = [], []

    def open_(url: str, context=None):  # noqa: ANN001, ANN202
        if context is None:
            context = browser.new_context(viewport={"width": 1000, "height": 1400})
            contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert errors == [], errors


def tile(page, name: str):
    return page.locator(f'#classes li[data-class="{name}"]')


def thumb(page, path: str):
    return page.locator(f'#pool .thumb[data-path="{path}"]')


def counts(page) -> dict[str, str]:
    tiles = page.locator("#classes li.class-tile")
    names = tiles.locator(".class-name").all_text_contents()
    return dict(zip(names, tiles.locator(".count").all_text_contents(), strict=True))


def create_class(page, name: str) -> None:
    page.get_by_label("New class").fill(name)
    page.get_by_role("button", name="Create class").click()
    expect(tile(page, name)).to_be_visible()


def on_disk(project: Path) -> dict[str, int]:
    return {c: len(list((project / c).glob("*.png"))) for c in COLOURS if (project / c).is_dir()}


def test_label_retrain_predict_export_and_restart(open_page, tmp_path):
    colour_folder(tmp_path / "pool", per_class=4)  # 12 images to label
    project = tmp_path / "project"
    with ServerThread(label_app(tmp_path)) as url:
        page = open_page(url + "/label")
        info = page.locator("#label-info")
        expect(info).to_contain_text("0 images labelled, 12 still unlabelled in pool")
        for name in ("red", "gren", "blue"):
            create_class(page, name)
        page.get_by_label("Class to rename").select_option("gren")
        page.get_by_label("New name").fill("green")
        page.get_by_role("button", name="Rename").click()
        expect(page.locator("#classes .class-name")).to_have_text(["red", "green", "blue"])
        expect(page.locator("#classes .key")).to_have_text(["1", "2", "3"])

        # Pick two images with the keyboard and label them from the picker.
        thumb(page, "red/0.png").focus()
        page.keyboard.press("Space")
        thumb(page, "red/1.png").click()
        expect(thumb(page, "red/1.png")).to_have_attribute("aria-pressed", "true")
        page.get_by_label("Label picked images as").select_option("red")
        page.get_by_role("button", name="Label picked").click()
        expect(tile(page, "red").locator(".count")).to_have_text("2 images")
        expect(thumb(page, "red/0.png")).to_have_count(0)  # gone from the pool's page
        # Drag: a picked image carries the other picked one; an unpicked one, itself.
        thumb(page, "green/0.png").click()
        thumb(page, "green/1.png").click()
        thumb(page, "green/1.png").drag_to(tile(page, "green"))
        expect(tile(page, "green").locator(".count")).to_have_text("2 images")
        for path in ("blue/0.png", "blue/1.png"):
            thumb(page, path).drag_to(tile(page, "blue"))
            expect(thumb(page, path)).to_have_count(0)
        assert counts(page) == {c: "2 images" for c in ("red", "green", "blue")}
        assert on_disk(project) == {"red": 2, "green": 2, "blue": 2}

        # One by one from the keyboard: the model's guess is preselected.
        card = page.locator("#card")
        expect(card).to_be_hidden()  # until suggestions are asked for
        expect(page.locator("#pool-pages")).to_be_hidden()  # the pool fits one page
        page.get_by_role("button", name="Suggest images to label").click()
        expect(card).to_be_visible(timeout=60_000)
        expect(card).to_be_focused()
        if SCREENSHOTS:
            page.screenshot(path=f"{SCREENSHOTS}/label-page.png", full_page=True)
        first = page.locator("#card-name").text_content()
        key = str(COLOURS.index(first.split("/")[0]) + 1)
        page.get_by_label("New class").press(key)  # typing in a field labels nothing
        expect(page.get_by_label("New class")).to_have_value(key)
        expect(page.locator("#card-name")).to_have_text(first)
        page.get_by_label("New class").fill("")
        card.focus()
        page.keyboard.press(key)  # its own class, by number
        expect(page.locator("#suggest-status")).to_have_text(
            f"Labelled {first} as {first.split('/')[0]}."
        )
        expect(page.locator("#card-name")).not_to_have_text(first)
        second = page.locator("#card-name").text_content()
        chosen = page.locator('#card-classes [aria-pressed="true"]')
        expect(chosen).to_have_count(1)
        guess = chosen.get_attribute("data-class")
        expect(page.locator("#card-guess")).to_contain_text(f"The model's guess: {guess} (")
        page.keyboard.press("Enter")  # takes the guess
        expect(page.locator("#suggest-status")).to_have_text(f"Labelled {second} as {guess}.")
        expect(page.locator("#card-name")).not_to_have_text(second)
        third = page.locator("#card-name").text_content()
        assert third not in (first, second)
        page.keyboard.press("s")
        expect(page.locator("#suggest-status")).to_have_text(f"Skipped {third}.")
        expect(page.locator("#card-name")).not_to_have_text(third)
        expect(info).to_contain_text("8 images labelled, 4 still unlabelled")
        pool_left = set(
            page.locator("#pool .thumb").evaluate_all("ts => ts.map(t => t.dataset.path)")
        )
        assert third in pool_left and first not in pool_left and second not in pool_left

        # Retrain twice: the accuracy is said and the curve gains a point each time.
        page.get_by_role("button", name="Retrain").click()
        status = page.locator("#retrain-status")
        expect(status).to_contain_text("Test accuracy", timeout=60_000)
        expect(status).to_contain_text("the new model is served")
        expect(page.locator("#curve-table tbody tr")).to_have_count(1)
        expect(page.locator("#curve-table tbody td").first).to_have_text("8")
        fourth = page.locator("#card-name").text_content()
        page.keyboard.press(str(COLOURS.index(fourth.split("/")[0]) + 1))
        expect(info).to_contain_text("9 images labelled")
        page.get_by_role("button", name="Retrain").click()
        expect(page.locator("#curve-table tbody tr")).to_have_count(2, timeout=60_000)
        expect(page.locator("#curve svg circle")).to_have_count(2)
        labels_column = page.locator("#curve-table tbody tr td:first-child").all_text_contents()
        assert labels_column == ["8", "9"]
        shown = page.locator("#curve-table tbody tr td:last-child").all_text_contents()
        if SCREENSHOTS:
            page.screenshot(path=f"{SCREENSHOTS}/label-retrained.png", full_page=True)

        # Export the labelled images as class folders (a zip download).
        with page.expect_download() as download:
            page.get_by_role("button", name="Download a zip").click()
        names = zipfile.ZipFile(download.value.path()).namelist()
        assert sorted({n.split("/")[0] for n in names}) == ["blue", "green", "red"]
        assert len(names) == 9

        # The retrained model predicts on the main page.
        page.get_by_role("link", name="Predict with the served model").click()
        expect(page.locator("#model-info")).to_contain_text(
            "feature-extraction on test_efficientnet: 3 classes"
        )
        expect(page.get_by_role("link", name="Label images: the labelling page")).to_be_visible()
        drop_files(page, {"new.png": colour_png("green", seed=7)})
        expect(result(page, "new.png").locator(".top li")).to_have_count(3)

    written = on_disk(project)
    assert sum(written.values()) == 9 and written["red"] >= 2 and written["blue"] >= 2
    assert (tmp_path / "pool" / "red" / "0.png").is_file()  # the pool is never changed
    with ServerThread(label_app(tmp_path)) as url:  # a restart: the same folders
        page = open_page(url + "/label")
        expect(page.locator("#label-info")).to_contain_text("9 images labelled, 3 still")
        assert counts(page) == {c: f"{written[c]} images" for c in ("red", "green", "blue")}
        expect(page.locator("#curve-table tbody tr td:last-child")).to_have_text(shown)
        expect(thumb(page, third)).to_be_visible()  # skipped: still to label


def test_two_tabs_label_at_once_into_a_csv(open_page, browser, tmp_path):  # noqa: F811
    colour_folder(tmp_path / "pool", per_class=2)
    with ServerThread(label_app(tmp_path, labels_as="csv")) as url:
        first = open_page(url + "/label")
        create_class(first, "warm")
        create_class(first, "cool")
        first.get_by_label("New class").fill("Warm")  # the server's refusal, shown
        first.get_by_role("button", name="Create class").click()
        expect(first.locator("#classes-status")).to_have_text("A class 'warm' exists already.")
        second = open_page(url + "/label")  # another tab, loaded now
        expect(second.locator("#label-info")).to_contain_text("as a labels CSV")
        for page, path, name in ((first, "red/0.png", "warm"), (second, "blue/0.png", "cool")):
            thumb(page, path).click()
            page.get_by_label("Label picked images as").select_option(name)
        first.get_by_role("button", name="Label picked").click()  # each from its own
        second.get_by_role("button", name="Label picked").click()  # stale pool page
        expect(second.locator("#label-info")).to_contain_text("2 images labelled")
        first.evaluate("document.dispatchEvent(new Event('visibilitychange'))")  # back to it
        expect(first.locator("#label-info")).to_contain_text("2 images labelled")
        expect(thumb(first, "blue/0.png")).to_have_count(0)
        first.get_by_label("A CSV (with the images)").check()
        first.get_by_role("button", name="Write it on the server").click()
        written = first.locator("#export-status")
        expect(written).to_contain_text("2 images written under the server's out folder, in")
        folder = tmp_path / "runs" / written.text_content().rsplit(" in ", 1)[1].rstrip(".")
        assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == [
            "0.png",
            "0.png",
            "labels.csv",
        ]
    with (tmp_path / "project" / "labels.csv").open(newline="") as handle:
        rows = sorted(tuple(row) for row in csv.reader(handle))
    assert rows == [
        ("../pool/blue/0.png", "cool"),
        ("../pool/red/0.png", "warm"),
        ("path", "label"),
    ]


def test_the_label_page_asks_for_the_token_and_fits_a_phone(browser, tmp_path):  # noqa: F811
    colour_folder(tmp_path / "pool", per_class=1)
    store = LabelStore(tmp_path / "project", tmp_path / "pool")
    settings = TrainingSettings(out=tmp_path / "runs", data=store.data, weights="none")
    training = TrainingJobs(settings, ServeLimits())
    app = create_app(None, token="open sesame", training=training,
                     labelling=Labelling(store, training))  # fmt: skip
    with ServerThread(app) as url:
        context = browser.new_context()
        page = context.new_page()
        page.goto(url + "/label")
        field = page.get_by_label("This server needs a token")
        expect(field).to_be_focused()
        field.fill("open sesame")
        field.press("Enter")
        expect(page.locator("#label-info")).to_contain_text("3 still unlabelled in pool")
        expect(page.locator("#pool .thumb")).to_have_count(3)
        context.close()
        phone = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True)
        page = phone.new_page()
        page.goto(url + "/label")
        page.get_by_label("This server needs a token").fill("open sesame")
        page.get_by_label("This server needs a token").press("Enter")
        expect(page.locator("#pool .thumb")).to_have_count(3)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the labelling page is {overflow}px wider than a phone screen"
        phone.close()
