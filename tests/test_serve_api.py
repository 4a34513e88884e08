"""The HTTP API: every endpoint, and every limit a client can run into (``ServeLimits``),
through FastAPI's TestClient (the app in-process, with its lifespan and worker)."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install .[serve]")

from fastapi.testclient import TestClient  # noqa: E402
from fixtures_images import png_header_only  # noqa: E402
from serve_helpers import GatedModel, colour_png  # noqa: E402

from headstart.errors import ConfigError  # noqa: E402
from headstart.serve import ServeLimits, check_bind, create_app, load_predictor  # noqa: E402


@pytest.fixture(scope="module")
def predictor(tiny_model_folder):
    return load_predictor(tiny_model_folder)


@pytest.fixture
def client(predictor):
    with TestClient(create_app(predictor, ServeLimits(max_images=4, max_body_bytes=200_000))) as c:
        yield c


def files(*named: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in named]


def test_health_ready_model_and_openapi(client, predictor):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"ready": True}
    model = client.get("/v1/model").json()
    assert model["classes"] == ["blue", "green", "red"]
    assert model["backbone"] == "test_efficientnet" and model["strategy"] == "feature-extraction"
    assert model["preprocessing"]["input_size"][-1] == 32 and model["runtime"] == "torch"
    assert "test" in model["metrics"] or model["metrics"] == {}
    assert model["limits"]["max_images"] == 4
    schema = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/model", "/healthz", "/readyz"} <= set(schema["paths"])
    assert "swagger" in client.get("/docs").text.lower()


def test_not_ready_without_a_model():
    with TestClient(create_app(None)) as c:
        assert c.get("/healthz").status_code == 200
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["reason"] == "no model yet"
        assert c.post("/v1/predict", content=colour_png("red"), headers=_png).status_code == 503


_png = {"content-type": "image/png"}


def test_predicts_many_images_with_a_reason_for_each_bad_one(client):
    answer = client.post(
        "/v1/predict?top_k=2",
        files=files(
            ("r.png", colour_png("red")),
            ("text.jpg", b"just some words, saved under an image name\n"),
            ("b.png", colour_png("blue")),
            ("bomb.png", png_header_only(20_000, 20_000)),
        ),
    )
    assert answer.status_code == 200
    red, text, blue, bomb = answer.json()["predictions"]
    assert (red["name"], red["class"]) == ("r.png", "red") and len(red["top"]) == 2
    assert red["top"][0]["probability"] >= red["top"][1]["probability"]
    assert blue["class"] == "blue"
    assert text["name"] == "text.jpg" and "not an image" in text["error"]
    assert "plain text" in text["error"]  # the decoder's own words
    assert "decompression bomb" in bomb["error"] and "89,478,485 pixels" in bomb["error"]


def test_raw_body_image(client):
    answer = client.post("/v1/predict", content=colour_png("green"), headers=_png)
    assert answer.status_code == 200
    (only,) = answer.json()["predictions"]
    assert only["class"] == "green" and only["name"] == "body" and len(only["top"]) == 3


def test_pixel_limit_of_the_server_words_its_flag(predictor):
    limits = ServeLimits(max_pixels=100)
    with TestClient(create_app(predictor, limits, words={"max_pixels": "--max-pixels"})) as c:
        (only,) = c.post("/v1/predict", files=files(("x.png", colour_png("red")))).json()[
            "predictions"
        ]
    assert "above the limit of 100 pixels (--max-pixels)" in only["error"]


def test_a_client_file_name_is_a_label_never_a_path(client, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(colour_png("red"))
    answer = client.post("/v1/predict", files=files((str(secret), b"")))
    (only,) = answer.json()["predictions"]
    assert only["error"] == "empty file (0 bytes)"  # the uploaded bytes, not the file there


def test_oversized_body_is_413_whether_declared_or_streamed(client):
    big = b"\0" * 200_001
    declared = client.post("/v1/predict", content=big, headers=_png)
    assert declared.status_code == 413 and "200,000 bytes" in declared.json()["detail"]

    def chunks():
        for _ in range(30):
            yield b"\0" * 10_000

    streamed = client.post("/v1/predict", content=chunks(), headers=_png)  # no length given
    assert streamed.status_code == 413


def test_too_many_images_is_413(client):
    answer = client.post("/v1/predict", files=files(*[(f"{i}.png", b"x") for i in range(5)]))
    assert answer.status_code == 413 and "at most 4" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("text/plain", b"hello"), ("application/json", b"{}"), (None, b"")],
)
def test_unsupported_media_type_is_415(client, content_type, body):
    headers = {"content-type": content_type} if content_type else {}
    answer = client.post("/v1/predict", content=body, headers=headers)
    assert answer.status_code == 415 and "Unsupported media type" in answer.json()["detail"]


def test_form_without_files_is_400(client):
    answer = client.post("/v1/predict", data={"other": "x"}, files=files())
    assert answer.status_code in (400, 415)
    answer = client.post(
        "/v1/predict",
        content=b'--b\r\nContent-Disposition: form-data; name="files"\r\n\r\ntext\r\n--b--\r\n',
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert answer.status_code == 400 and "must hold files" in answer.json()["detail"]


def test_token_missing_wrong_and_right(predictor):
    with TestClient(create_app(predictor, token="s3cret")) as c:
        missing = c.get("/v1/model")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert c.get("/v1/model", headers={"authorization": "Bearer nope"}).status_code == 401
        assert c.get("/v1/model", headers={"authorization": "Basic s3cret"}).status_code == 401
        body = {"content": colour_png("red"), "headers": _png}
        assert c.post("/v1/predict", **body).status_code == 401
        good = {"authorization": "Bearer s3cret"}
        assert c.get("/v1/model", headers=good).status_code == 200
        answer = c.post("/v1/predict", content=colour_png("red"), headers={**_png, **good})
        assert answer.json()["predictions"][0]["class"] == "red"
        assert c.get("/healthz").status_code == 200  # probes need no token


def test_binding_beyond_this_machine_needs_a_token_or_insecure():
    for host in ("127.0.0.1", "::1", "localhost"):
        check_bind(host, None, False)
    with pytest.raises(ConfigError, match="without a token"):
        check_bind("0.0.0.0", None, False)
    check_bind("0.0.0.0", "t", False)
    check_bind("0.0.0.0", None, True)


def _post_in_thread(client, results, key):
    def post():
        results[key] = client.post("/v1/predict", content=colour_png("red"), headers=_png)

    thread = threading.Thread(target=post)
    thread.start()
    return thread


def _wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.005)


def test_full_queue_is_503_with_retry_after():
    model = GatedModel()
    limits = ServeLimits(max_queued_images=2, retry_after_s=3, max_wait_ms=0)
    app = create_app(model, limits)
    results: dict = {}
    with TestClient(app) as c:
        first = _post_in_thread(c, results, "first")
        assert model.entered.wait(10)  # the worker holds the first image
        second = _post_in_thread(c, results, "second")
        _wait_until(lambda: app.state.serve.batcher.pending == 2)
        refused = c.post("/v1/predict", content=colour_png("red"), headers=_png)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "3"
        assert "at most 2" in refused.json()["detail"]
        model.release.set()
        first.join(10), second.join(10)
    assert results["first"].status_code == results["second"].status_code == 200
    assert results["second"].json()["predictions"][0]["class"] == "b"


def test_slow_model_is_504_and_the_server_goes_on():
    model = GatedModel()
    with TestClient(create_app(model, ServeLimits(request_timeout_s=0.2))) as c:
        answer = c.post("/v1/predict", content=colour_png("red"), headers=_png)
        assert answer.status_code == 504 and "0.2 s" in answer.json()["detail"]
        model.release.set()
        assert c.post("/v1/predict", content=colour_png("red"), headers=_png).status_code == 200


def test_one_structured_log_line_per_request(client, caplog):
    with caplog.at_level(logging.INFO, logger="headstart.serve"):
        client.post("/v1/predict", files=files(("a.png", colour_png("red"))))
        client.get("/v1/nothing-here")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "headstart.serve"]
    assert [(x["method"], x["path"], x["status"]) for x in lines] == [
        ("POST", "/v1/predict", 200),
        ("GET", "/v1/nothing-here", 404),
    ]
    assert lines[0]["images"] == 1 and lines[0]["bytes_in"] > 0 and lines[0]["ms"] >= 0


def test_the_onnx_runtime_plugs_in_through_the_same_adapter(monkeypatch, tmp_path):
    """Anything with OnnxClassifier's four (load, classes_, decode_options_, metadata,
    predict_proba) is served as the torch estimator is; a stand-in here, so this holds
    whether or not the ONNX room is in this build."""
    import sys
    import types

    import numpy as np

    from headstart.data.decode import DecodeOptions

    class StandIn:
        classes_ = ["cat", "dog"]
        decode_options_ = DecodeOptions()

        @classmethod
        def load(cls, path):  # noqa: ANN001, ANN206
            cls.loaded = path
            return cls()

        def metadata(self) -> dict:
            test = {"accuracy": 1.0, "data": {"path": "/srv/secret/photos", "seed": 0}}
            return {
                "backbone": "b",
                "strategy": "s",
                "classes": self.classes_,
                "metrics": {"test": test},
            }

        def predict_proba(self, images):  # noqa: ANN001, ANN201
            return np.tile([[0.2, 0.8]], (len(images), 1))

    export = types.ModuleType("headstart.export")
    runtime = types.ModuleType("headstart.export.runtime")
    runtime.OnnxClassifier = StandIn
    monkeypatch.setitem(sys.modules, "headstart.export", export)
    monkeypatch.setitem(sys.modules, "headstart.export.runtime", runtime)
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "headstart.export" else real_find_spec(name, *a),
    )
    predictor = load_predictor(tmp_path / "model.onnx", "onnx")
    assert StandIn.loaded == tmp_path / "model.onnx"
    with TestClient(create_app(predictor)) as c:
        model = c.get("/v1/model").json()
        assert model["runtime"] == "onnx"
        assert model["metrics"] == {"test": {"accuracy": 1.0, "data": {"seed": 0}}}  # no path
        answer = c.post("/v1/predict", content=colour_png("red"), headers=_png)
    assert answer.json()["predictions"][0]["class"] == "dog"


def test_a_body_that_stops_coming_is_408_and_streams_are_left_alone():
    import asyncio

    from headstart.serve.app import EdgeMiddleware

    async def echo_app(scope, receive, send):  # noqa: ANN001, ANN202
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        message = await receive()  # a streaming response waits for the disconnect
        assert message["type"] == "http.disconnect"

    edge = EdgeMiddleware(echo_app, limit_for=lambda path: 100, read_timeout_s=0.05)
    scope = {"type": "http", "method": "POST", "path": "/v1/predict", "headers": []}

    async def call(messages, after_body_delay=0.0):  # noqa: ANN001, ANN202
        sent = []
        queue = list(messages)

        async def receive():  # noqa: ANN202
            if queue:
                return queue.pop(0)
            await asyncio.sleep(after_body_delay if after_body_delay else 3600)
            return {"type": "http.disconnect"}

        async def send(message):  # noqa: ANN001, ANN202
            sent.append(message)

        await edge(dict(scope), receive, send)
        return sent[0]["status"]

    stalled = [{"type": "http.request", "body": b"abc", "more_body": True}]
    assert asyncio.run(call(stalled)) == 408
    whole = [{"type": "http.request", "body": b"abc", "more_body": False}]
    assert asyncio.run(call(whole, after_body_delay=0.2)) == 200  # waited past the timeout


def test_a_post_from_another_sites_page_is_refused(predictor):
    """A page the user visits must not reach a server on their machine: a POST with a
    foreign Origin is 403, and with allowed_hosts a foreign Host (DNS rebinding) is 400."""
    app = create_app(predictor, allowed_hosts=["testserver", "127.0.0.1"])
    with TestClient(app) as c:
        image = colour_png("red")
        foreign = {**_png, "origin": "http://evil.example"}
        assert c.post("/v1/predict", content=image, headers=foreign).status_code == 403
        own = c.post("/v1/predict", content=image, headers={**_png, "origin": "http://testserver"})
        assert own.status_code == 200
        assert c.get("/v1/model", headers={"host": "evil.example:8000"}).status_code == 400
        assert c.get("/v1/model").status_code == 200
