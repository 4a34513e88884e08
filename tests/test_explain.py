"""Where the model looks and what it gets wrong: Grad-CAM heatmaps (every strategy, every
architecture family of the contract test, the ensemble), the top-losses gallery, and
both through ``headstart evaluate``/``predict`` and the server's API and page."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_images import colour_data, colour_folder
from PIL import Image
from torch import nn

from headstart.cli import main
from headstart.data.loaders import load_folder
from headstart.errors import ConfigError
from headstart.estimator.ensemble import EnsembleMember, fit_ensemble
from headstart.estimator.explain import grad_cam
from headstart.estimator.image_classifier import ImageClassifier
from headstart.evaluation.mistakes import confused_pairs, find_mistakes, write_gallery
from headstart.strategies import all_strategies
from headstart.strategies.registry import get_strategy
from headstart.train.network import Classifier

FAMILIES = {  # the contract test's families, and the map Grad-CAM reads in each
    "test_efficientnet": "final",
    "test_resnet": "final",
    "test_vit": "input of blocks.5",  # tokens: the input of the last block, as patches
    "test_convnext": "final",
}
SIZE = 64  # px: the final maps are 2x2 (ViT: 4x4 patches), enough to have a "where"


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fitted(backbone: str, strategy: str) -> ImageClassifier:
    clf = ImageClassifier(backbone, strategy, weights="none")
    clf.config = clf.resolved_config().replace(
        epochs=1,
        batch_size=8,
        image_size=SIZE,
        patience=0,
        validation_fraction=0,
        seed=0,
        fast=False,  # predictions in fp32 too, so they and the explanation agree exactly
    )
    unlabelled = None
    if strategy == "semi-supervised":
        unlabelled = colour_data(per_class=2, size=24, seed=5).without_labels()
    return clf.fit(colour_data(per_class=3, size=24), unlabelled=unlabelled)


def _wide_image(width: int = 90, height: int = 30) -> Image.Image:
    pixels = np.random.default_rng(3).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _decoded(uri: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(uri[len(prefix) :]))).convert("RGB")


# ----------------------------------------------------------------------------- Grad-CAM


class _ChannelBody(nn.Module):
    """A body whose final map is the image's first two channels and whose pooled feature
    is their mean: class k's score is channel k's mean, so Grad-CAM must find exactly
    where channel k is bright. Speaks timm's contract (forward_features/forward_head)."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :2] * 1.0

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def test_grad_cam_finds_the_evidence_of_the_class_asked_for():
    head = nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
        head.bias.zero_()
    network = Classifier(_ChannelBody(), ["final"], head)
    image = torch.zeros(1, 3, 16, 16)
    image[0, 0, :8, :8] = 1.0  # class 0's evidence: top left
    image[0, 1, 8:, 8:] = 1.0  # class 1's: bottom right
    _, first, layer = grad_cam(network, image, [0])
    _, second, _ = grad_cam(network, image, [1])
    assert layer == "final" and first.shape == (1, 16, 16)
    assert first[0, :8, :8].min() == 1 and first[0, 8:, :].max() == 0
    assert second[0, 8:, 8:].min() == 1 and second[0, :8, :].max() == 0


@pytest.mark.parametrize("strategy", sorted(all_strategies()))
@pytest.mark.parametrize("backbone", sorted(FAMILIES))
def test_heatmaps_keep_the_aspect_and_follow_the_class(backbone, strategy):
    clf = _fitted(backbone, strategy)
    image = _wide_image()
    red, blue = clf.explain([image, image], classes=["red", "blue"])
    assert red.heatmap.shape == blue.heatmap.shape == (30, 90)  # the image's, not 64 x 64
    assert red.layer == FAMILIES[backbone]
    assert red.target == "red" and blue.target == "blue"
    for heat in (red.heatmap, blue.heatmap):
        assert np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
    assert not np.allclose(red.heatmap, blue.heatmap, atol=1e-3)  # another class, another map
    # The model saw the centre crop only (30 px of 90, then resized): what it cut off is 0.
    assert red.heatmap[:, :25].max() == 0 and red.heatmap[:, -25:].max() == 0
    assert max(red.heatmap.max(), blue.heatmap.max()) > 0
    proba = clf.predict_proba([image])[0]
    assert red.probability == pytest.approx(proba[clf.classes_.index("red")], abs=1e-4)
    assert red.overlay().size == (90, 30)


@pytest.mark.parametrize("combine", ["average", "concat"])
def test_the_ensemble_explains_through_every_member(combine):
    members = [EnsembleMember("test_efficientnet", 96), EnsembleMember("test_resnet", 64)]
    config = get_strategy("feature-extraction").default_config().replace(fast=False)
    data = colour_data(per_class=4, size=24)
    clf = fit_ensemble(data, members, combine=combine, weights="none", config=config)
    tall = _wide_image(40, 100)
    red, green = clf.explain([tall, tall], classes=["red", "green"])
    assert red.heatmap.shape == (100, 40) and red.layer == "final, final"
    assert not np.allclose(red.heatmap, green.heatmap, atol=1e-3)
    assert red.probability == pytest.approx(
        clf.predict_proba([tall])[0][clf.classes_.index("red")], abs=1e-4
    )


def test_explain_names_a_class_it_does_not_know():
    clf = _fitted("test_resnet", "feature-extraction")
    with pytest.raises(ConfigError, match="classes"):
        clf.explain([_wide_image()], classes=["purple"])


# ------------------------------------------------------------------------------ gallery


class _KnownScores:
    """A classifier whose probabilities are given: what the gallery is built from."""

    def __init__(self, classes: list[str], proba: np.ndarray) -> None:
        self.classes_ = classes
        self.proba = proba

    def predict_proba(self, dataset, batch_size: int = 64):  # noqa: ANN001, ANN201
        assert len(dataset) == len(self.proba)
        return self.proba


def _solid_folder(root: Path, labels: list[str]) -> list[Path]:
    """One solid-colour PNG per label, each its own colour (so a thumbnail names its file)."""
    paths = []
    for i, label in enumerate(labels):
        (root / label).mkdir(parents=True, exist_ok=True)
        path = root / label / f"{i:02d}.png"
        Image.new("RGB", (20 + i, 16), (10 * i, 255 - 10 * i, 7 * i)).save(path)
        paths.append(path)
    return paths


def test_the_gallery_is_self_contained_and_sorted_by_loss(tmp_path):
    marked_up = "<img src=x onerror=alert(1)>"  # a class folder's name is data, not markup
    labels = ["cat"] * 4 + ["dog"] * 4 + [marked_up] * 4
    _solid_folder(tmp_path / "data", labels)
    dataset = load_folder(tmp_path / "data")
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(3), size=len(dataset))
    clf = _KnownScores(list(dataset.classes), proba)
    found = find_mistakes(clf, dataset, top=5)
    page, data = write_gallery(found, dataset, tmp_path / "out")
    text = page.read_text()
    assert "default-src 'none'" in text and not re.search(r"(src|href)=\"(?!data:)", text)
    assert marked_up not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    truth = dataset.labels  # the model's classes are the dataset's, in the same order
    loss = -np.log(proba[np.arange(len(truth)), truth])
    wrong = [i for i in range(len(truth)) if proba[i].argmax() != truth[i]]
    expected = sorted(wrong, key=lambda i: -loss[i])[:5]
    top = text.split('id="top-losses"')[1].split("Most confused pairs")[0]
    cards = re.findall(r'data-index="(\d+)" data-loss="([^"]+)" data-source="([^"]+)"', top)
    assert [int(i) for i, _, _ in cards] == expected
    assert [float(v) for _, v, _ in cards] == sorted((float(v) for _, v, _ in cards), reverse=True)
    images = re.findall(r'<img class="image" alt="[^"]*" src="([^"]+)"', top)
    for (index, _, quoted), uri in zip(cards, images, strict=True):
        source = html.unescape(quoted)
        original = Image.open(source).convert("RGB")
        assert source == dataset.source(int(index))
        assert _decoded(uri).size == original.size  # small files keep their size
        assert np.array_equal(np.asarray(_decoded(uri)), np.asarray(original))
    saved = json.loads(data.read_text())
    assert saved["wrong"] == len(wrong) and len(saved["top_losses"]) == 5


def test_confused_pairs_on_a_constructed_case():
    classes = ["cat", "dog", "fox"]
    truth = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2])
    predicted = np.array([1, 1, 1, 0, 0, 1, 0, 0, 2])  # cat->dog 3, fox->cat 2, dog->cat 1
    given = np.array([0.3, 0.1, 0.2, 0.9, 0.4, 0.8, 0.05, 0.25, 0.9])  # p(true class)
    proba = np.zeros((len(truth), 3))
    for i, (t, p, q) in enumerate(zip(truth, predicted, given, strict=True)):
        if p == t:
            proba[i] = (1 - q) / 2
            proba[i, t] = q
        else:  # the rest on the class predicted (q < 0.5, so it is the top one)
            proba[i, t], proba[i, p] = q, 1 - q
    pairs = confused_pairs(proba, truth, classes, top=5, examples=2)
    assert [(p.given, p.predicted, p.count) for p in pairs] == [
        ("cat", "dog", 3),
        ("fox", "cat", 2),
        ("dog", "cat", 1),
    ]
    assert pairs[0].examples == (1, 2)  # the two lowest p(cat): highest loss first
    assert pairs[1].examples == (6, 7)


# -------------------------------------------------------------------------- the faces


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("explain-model")
    clf = ImageClassifier("test_efficientnet", "feature-extraction", weights="none")
    clf.config = clf.resolved_config().replace(image_size=SIZE, validation_fraction=0)
    torch.set_num_threads(1)
    clf.fit(load_folder(colour_folder(root / "data", per_class=6)))
    return clf.save(root / "model")


def test_evaluate_writes_the_gallery_with_heatmaps(model_folder, tmp_path, capsys):
    data = colour_folder(tmp_path / "data", per_class=3)
    for i in range(2):  # two blue images filed under red: the model must disagree
        (data / "blue" / f"{i}.png").rename(data / "red" / f"moved-{i}.png")
    out = tmp_path / "eval"
    assert main(["evaluate", str(model_folder), str(data), "--out", str(out), "--explain"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'gallery.html'}" in printed
    saved = json.loads((out / "mistakes.json").read_text())
    sources = {Path(m["source"]).name for m in saved["top_losses"]}
    assert {"moved-0.png", "moved-1.png"} <= sources
    assert ("red", "blue") in {(p["given"], p["predicted"]) for p in saved["confused_pairs"]}
    text = (out / "gallery.html").read_text()
    heatmaps = re.findall(r'<img class="heatmap" alt="[^"]*" src="([^"]+)"', text)
    assert len(heatmaps) >= saved["wrong"] and _decoded(heatmaps[0]).size == (24, 24)


def test_evaluate_explain_needs_out(model_folder, tmp_path, capsys):
    data = colour_folder(tmp_path / "data", per_class=2)
    assert main(["evaluate", str(model_folder), str(data), "--explain"]) != 0
    assert "--out" in capsys.readouterr().err


def test_predict_explain_writes_and_lists_heatmaps(model_folder, tmp_path, capsys):
    wide = tmp_path / "wide.png"
    _wide_image(60, 30).save(wide)
    out = tmp_path / "heat"
    argv = ["predict", str(model_folder), str(wide), "--explain", "--out", str(out)]
    assert main([*argv, "--format", "json"]) == 0
    (answer,) = json.loads(capsys.readouterr().out)
    path = Path(answer["heatmap"])
    assert path.parent == out and path.is_file()
    assert answer["explained"] == answer["predictions"][0]["class"]
    assert Image.open(path).size == (60, 30)
    assert main(argv) == 0
    assert f"heatmap: {path}" in capsys.readouterr().out
    assert main(["predict", str(model_folder), str(wide), "--explain"]) != 0
    assert "--out" in capsys.readouterr().err


def test_an_onnx_model_refuses_explain(model_folder, tmp_path, capsys, monkeypatch):
    """An exported model has no gradients: refused before any image is read, the CLI
    naming its own flag. (The file itself is not exported here: that takes ~25 s.)"""
    pytest.importorskip("onnxruntime")
    import headstart.cli.predict as predict_command
    from headstart.export.runtime import OnnxClassifier

    onnx = object.__new__(OnnxClassifier)  # the real class, without a file behind it
    monkeypatch.setattr(predict_command, "load_model", lambda args: (onnx, {}))
    wide = tmp_path / "wide.png"
    _wide_image(60, 30).save(wide)
    argv = ["predict", "model.onnx", str(wide), "--explain", "--out", str(tmp_path / "h")]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "OnnxClassifier cannot explain" in err and "--explain" in err
    assert not (tmp_path / "h").exists()
    with pytest.raises(ConfigError, match="Grad-CAM needs the gradients"):
        find_mistakes(onnx, load_folder(colour_folder(tmp_path / "d", per_class=2)), explain=True)


# ----------------------------------------------------------------------------- server


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_api_returns_a_heatmap_when_asked(model_folder):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from serve_helpers import GatedModel

    from headstart.serve import create_app, load_predictor

    with TestClient(create_app(load_predictor(model_folder), token="secret")) as client:
        auth = {"Authorization": "Bearer secret"}
        body = [("files", ("wide.png", _png(_wide_image(60, 30)), "image/png"))]
        assert client.get("/v1/model", headers=auth).json()["explain"] is True
        plain = client.post("/v1/predict", files=body, headers=auth).json()["predictions"][0]
        assert "heatmap" not in plain
        broken = ("files", ("broken.jpg", b"<html>not an image</html>", "image/jpeg"))
        asked = client.post("/v1/predict?explain=true", files=[*body, broken], headers=auth)
        answer, unread = asked.json()["predictions"]
        assert answer["class"] == plain["class"] and _decoded(answer["heatmap"]).size == (60, 30)
        assert "error" in unread and "heatmap" not in unread
        assert client.post("/v1/predict?explain=true", files=body).status_code == 401
        other = {**auth, "Origin": "http://elsewhere.example"}
        assert client.post("/v1/predict?explain=true", files=body, headers=other).status_code == 403
    with TestClient(create_app(GatedModel())) as client:  # a model that cannot explain
        refused = client.post("/v1/predict?explain=true", files=body)
        assert refused.status_code == 400 and "cannot explain" in refused.json()["detail"]


def test_the_page_shows_a_heatmap_when_asked(model_folder, tmp_path):
    """In Chromium: tick "Show where the model looked", pick an image, see its heatmap
    beside the prediction. ``HEADSTART_EXPLAIN_SCREENSHOT=docs/explain-page.png`` keeps a
    screenshot (``HEADSTART_EXPLAIN_MODEL``: a model folder to show instead)."""
    import glob
    import os
    import shutil
    import socket
    import threading
    import time

    pytest.importorskip("fastapi")
    if shutil.which("chromium") is None:
        pytest.skip("no chromium: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    import uvicorn

    from headstart.serve import create_app, load_predictor

    shown = os.environ.get("HEADSTART_EXPLAIN_MODEL") or model_folder
    app = create_app(load_predictor(shown))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    images = [("wide.png", _png(_wide_image(60, 30)))]
    if os.environ.get("HEADSTART_EXPLAIN_IMAGES"):  # e.g. real photos for the screenshot
        found = sorted(glob.glob(os.environ["HEADSTART_EXPLAIN_IMAGES"]))
        images = [(Path(p).name, Path(p).read_bytes()) for p in found]
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=shutil.which("chromium"),
                args=["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            )
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"http://127.0.0.1:{port}")
            box = page.get_by_label("Show where the model looked", exact=False)
            sync_api.expect(box).to_be_visible()
            box.check()
            page.set_input_files("#images", files=[
                {"name": name, "mimeType": "image/png", "buffer": data} for name, data in images
            ])  # fmt: skip
            first = page.locator(f'#results li[data-name="{images[0][0]}"] img.heatmap')
            sync_api.expect(first).to_be_visible()
            src = first.get_attribute("src")
            width, height = Image.open(io.BytesIO(images[0][1])).size
            assert _decoded(src).size[0] * height == pytest.approx(
                _decoded(src).size[1] * width, rel=0.05
            )
            shot = os.environ.get("HEADSTART_EXPLAIN_SCREENSHOT")
            if shot:
                page.wait_for_timeout(200)
                page.screenshot(path=shot, full_page=True)
            browser.close()
            assert errors == [], errors
    finally:
        server.should_exit = True
        thread.join(30)
