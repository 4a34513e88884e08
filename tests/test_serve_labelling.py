"""The labelling API: classes and labels kept in the project folder across a restart,
concurrent labels, refused pool paths and class names, export."""

from __future__ import annotations

import io
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install .[serve]")

from fastapi.testclient import TestClient  # noqa: E402
from fixtures_images import colour_folder  # noqa: E402

from headstart.serve import ServeLimits, TrainingJobs, create_app  # noqa: E402
from headstart.serve.labelling import Labelling  # noqa: E402
from headstart.serve.labels import LabelStore  # noqa: E402
from headstart.serve.training import TrainingSettings  # noqa: E402


def make_app(tmp_path: Path, labels_as: str = "folders"):  # noqa: ANN201
    pool = tmp_path / "pool"
    if not pool.exists():
        colour_folder(pool, per_class=3)
    store = LabelStore(tmp_path / "project", pool, labels_as=labels_as)
    settings = TrainingSettings(
        out=tmp_path / "runs", data=store.data, backbone="test_efficientnet", weights="none"
    )
    limits = ServeLimits()
    training = TrainingJobs(settings, limits)
    return create_app(None, limits, training=training, labelling=Labelling(store, training))


@pytest.mark.parametrize("labels_as", ["folders", "csv"])
def test_labels_survive_a_restart_and_export(tmp_path, labels_as):
    with TestClient(make_app(tmp_path, labels_as)) as client:
        assert client.post("/v1/label/classes", json={"name": "warm"}).status_code == 201
        assert client.post("/v1/label/classes", json={"name": "cool"}).status_code == 201
        assert client.post("/v1/label/classes", json={"name": "Warm"}).status_code == 409
        body = {"labels": [{"path": "red/0.png", "label": "warm"},
                           {"path": "blue/0.png", "label": "cool"}]}  # fmt: skip
        assert client.post("/v1/label/labels", json=body).status_code == 200
        renamed = client.post("/v1/label/rename", json={"old": "cool", "new": "cold"})
        assert renamed.status_code == 200, renamed.text
    with TestClient(make_app(tmp_path, labels_as)) as client:  # a restart
        summary = client.get("/v1/label").json()
        counts = {c["name"]: c["count"] for c in summary["classes"]}
        assert counts == {"warm": 1, "cold": 1} and summary["unlabelled"] == 7
        assert [c["key"] for c in summary["classes"]] == [1, 2]
        zipped = client.post(f"/v1/label/export?format={labels_as}")
        names = sorted(zipfile.ZipFile(io.BytesIO(zipped.content)).namelist())
        written = client.post(f"/v1/label/export?format={labels_as}&to=server").json()
        assert (tmp_path / "runs" / written["written"]).is_dir()
    if labels_as == "folders":
        assert (tmp_path / "project" / "cold" / "0.png").is_file()
        assert names == ["cold/0.png", "warm/0.png"]
    else:
        text = (tmp_path / "project" / "labels.csv").read_text()
        assert "../pool/blue/0.png,cold" in text and "../pool/red/0.png,warm" in text
        assert names == ["images/cold/0.png", "images/warm/0.png", "labels.csv"]
    assert (tmp_path / "pool" / "red" / "0.png").is_file()  # the pool is never changed


def test_concurrent_labels_are_all_kept(tmp_path):
    with TestClient(make_app(tmp_path)) as client:
        client.post("/v1/label/classes", json={"name": "any"})
        paths = [f"{c}/{i}.png" for c in ("red", "green", "blue") for i in range(3)]

        def post(path: str) -> int:
            body = {"labels": [{"path": path, "label": "any"}]}
            return client.post("/v1/label/labels", json=body).status_code

        with ThreadPoolExecutor(6) as pool:
            assert set(pool.map(post, paths)) == {200}
    with TestClient(make_app(tmp_path)) as client:
        assert client.get("/v1/label").json()["classes"] == [{"name": "any", "count": 9, "key": 1}]


def test_paths_outside_the_pool_and_bad_class_names_are_refused(tmp_path):
    secret = tmp_path / "secret.png"
    colour_folder(tmp_path / "other", per_class=1)
    os.replace(tmp_path / "other" / "red" / "0.png", secret)
    colour_folder(tmp_path / "pool", per_class=1)
    os.symlink(secret, tmp_path / "pool" / "red" / "link.png")
    with TestClient(make_app(tmp_path)) as client:
        client.post("/v1/label/classes", json={"name": "ok"})
        for path in (
            "../secret.png",
            str(secret),
            "red/link.png",
            "red\\0.png",
            "red/../red/0.png",
        ):
            answer = client.post(
                "/v1/label/labels", json={"labels": [{"path": path, "label": "ok"}]}
            )
            assert answer.status_code == 400, (path, answer.text)
        for name in ("a/b", "..", ".hidden", "x" * 65, "", "a\\b", "con"):
            assert client.post("/v1/label/classes", json={"name": name}).status_code == 400, name
        assert not (tmp_path / "project" / "ok").exists()
        foreign = client.post(
            "/v1/label/classes", json={"name": "z"}, headers={"origin": "http://evil.example"}
        )
        assert foreign.status_code == 403
