"""``headstart serve``: refusals before anything listens, and one real server process
answering over a socket."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fixtures_images import colour_data
from PIL import Image
from serve_helpers import colour_png

from headstart.cli import main
from headstart.cli import serve as serve_command


def test_missing_server_packages_say_what_to_install(monkeypatch, capsys, tiny_model_folder):
    monkeypatch.setitem(serve_command.SERVER_PACKAGES, "no_such_module_for_headstart", "fastapi")
    assert main(["serve", str(tiny_model_folder)]) == 2
    err = capsys.readouterr().err
    assert "needs fastapi" in err and "pip install 'headstart[serve]'" in err


def test_binding_beyond_this_machine_needs_a_token(capsys, tiny_model_folder):
    pytest.importorskip("fastapi")
    assert main(["serve", str(tiny_model_folder), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "without a token" in err and "--token" in err and "--insecure" in err


def test_nothing_to_serve(capsys, tmp_path):
    pytest.importorskip("fastapi")
    assert main(["serve"]) == 2
    assert "give a model folder, or --data DIR" in capsys.readouterr().err
    assert main(["serve", "--data", str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_an_onnx_export_is_served_with_the_same_answers(tiny_model_folder, tmp_path):
    """--runtime onnx serves the exported file through the same API, torch-free path."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from headstart.estimator import ImageClassifier
    from headstart.serve import create_app, load_predictor

    clf = ImageClassifier.load(tiny_model_folder)
    exported = tmp_path / "model.onnx"
    clf.export(exported, images=colour_data(per_class=2, seed=5))
    image = tmp_path / "red.png"
    pixels = np.full((24, 24, 3), 30, np.uint8)
    pixels[:, :, 0] = 220
    Image.fromarray(pixels).save(image)
    served = {}
    for runtime, path in (("torch", tiny_model_folder), ("onnx", exported)):
        with TestClient(create_app(load_predictor(path, runtime))) as client:
            assert client.get("/v1/model").json()["classes"] == clf.classes_
            files = [("files", ("red.png", image.read_bytes(), "image/png"))]
            (only,) = client.post("/v1/predict", files=files).json()["predictions"]
            served[runtime] = only["top"][0]
    assert served["onnx"]["class"] == served["torch"]["class"]
    assert served["onnx"]["probability"] == pytest.approx(served["torch"]["probability"], abs=0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_real_server_process_answers_and_logs_each_request(tiny_model_folder):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    command = [
        sys.executable,
        "-m",
        "headstart",
        "serve",
        str(tiny_model_folder),
        "--port",
        str(port),
    ]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.1)
        answer = httpx.post(
            f"{base}/v1/predict",
            files=[("files", ("r.png", colour_png("red"), "image/png"))],
            timeout=30,
        )
        assert answer.json()["predictions"][0]["class"] == "red"
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert f"serving on http://127.0.0.1:{port}/" in out
    logged = [line for line in err.splitlines() if '"path": "/v1/predict"' in line]
    assert len(logged) == 1 and '"status": 200' in logged[0] and '"images": 1' in logged[0]
