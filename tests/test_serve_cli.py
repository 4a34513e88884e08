"""``headstart serve``: refusals before anything listens, and one real server process
answering over a socket."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
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


@pytest.mark.skipif(
    importlib.util.find_spec("headstart.export") is not None, reason="the ONNX runtime exists"
)
def test_onnx_runtime_not_built_yet_is_a_clear_error(capsys, tiny_model_folder):
    pytest.importorskip("fastapi")
    assert main(["serve", str(tiny_model_folder), "--runtime", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "ONNX runtime is not part of this headstart build" in err and "--runtime torch" in err


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
