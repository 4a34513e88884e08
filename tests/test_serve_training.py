"""Training from the page's API: a job on the server's folder or an uploaded zip, its
progress as server-sent events, the comparison report, then the new model served; and
the limits on uploaded zips (size, members, bombs, names that would escape)."""

from __future__ import annotations

import io
import json
import stat
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install .[serve]")

from fastapi.testclient import TestClient  # noqa: E402
from fixtures_images import colour_folder  # noqa: E402
from serve_helpers import colour_png  # noqa: E402

from headstart.errors import DataError  # noqa: E402
from headstart.serve import ServeLimits, TrainingJobs, create_app  # noqa: E402
from headstart.serve.training import TrainingSettings  # noqa: E402
from headstart.serve.uploads import unpack_zip  # noqa: E402


def tiny_settings(tmp_path: Path, data: Path | None) -> TrainingSettings:
    return TrainingSettings(
        out=tmp_path / "runs",
        data=data,
        backbone="test_efficientnet",
        weights="none",
        image_size=32,
    )


def read_events(client: TestClient, job_id: str) -> list[dict]:
    events = []
    with client.stream("GET", f"/v1/train/{job_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
                if events[-1]["type"] == "end":
                    break
    return events


def test_train_on_the_server_folder_then_predict_with_the_new_model(tmp_path):
    data = colour_folder(tmp_path / "colours", per_class=8)
    limits = ServeLimits()
    app = create_app(None, limits, training=TrainingJobs(tiny_settings(tmp_path, data), limits))
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 503
        info = client.get("/v1/train").json()
        assert info["server_data"] and info["data_name"] == "colours"
        assert "feature-extraction" in info["strategies"]
        assert "semi-supervised" not in info["strategies"]  # it needs unlabelled images
        started = client.post("/v1/train?strategy=feature-extraction&epochs=2")
        assert started.status_code == 202
        job = started.json()
        events = read_events(client, job["id"])
        kinds = [e["type"] for e in events]
        assert kinds[-1] == "end" and events[-1]["status"] == "done", events
        assert {"data", "run", "run_end", "report", "model"} <= set(kinds)
        data_event = next(e for e in events if e["type"] == "data")
        assert data_event["classes"] == ["blue", "green", "red"]
        runs = [e for e in events if e["type"] == "run_end"]
        assert [r["id"].split("/")[0] for r in runs] == ["scratch", "feature-extraction"]
        assert str(tmp_path) not in json.dumps(events)  # no server path reaches the page
        report = client.get(f"/v1/train/{job['id']}/report")
        assert report.status_code == 200 and "scratch" in report.text and "<table>" in report.text
        assert client.get("/readyz").json() == {"ready": True}
        answer = client.post(
            "/v1/predict", content=colour_png("green"), headers={"content-type": "image/png"}
        )
        assert answer.json()["predictions"][0]["class"] == "green"
        assert client.get(f"/v1/train/{job['id']}").json()["status"] == "done"
        assert (tmp_path / "runs" / job["id"] / "model" / "headstart.json").is_file()
        # the stream can be resumed after the last event seen
        resumed = client.get(
            f"/v1/train/{job['id']}/events", headers={"last-event-id": str(len(events) - 2)}
        )
        assert resumed.text.count("data: ") == 1 and "event: end" in resumed.text


def zip_of(folder: Path, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(folder.rglob("*.png")):
            bundle.write(path, prefix + path.relative_to(folder).as_posix())
    return buffer.getvalue()


def test_train_on_an_uploaded_zip(tmp_path):
    archive = zip_of(colour_folder(tmp_path / "colours", per_class=8), prefix="photos/")
    limits = ServeLimits()
    jobs = TrainingJobs(tiny_settings(tmp_path, None), limits)
    with TestClient(create_app(None, limits, training=jobs)) as client:
        assert client.get("/v1/train").json()["server_data"] is False
        refused = client.post("/v1/train?source=server")
        assert refused.status_code == 400 and "upload a zip" in refused.json()["detail"]
        wrong = client.post(
            "/v1/train?source=upload", content=b"x", headers={"content-type": "text/plain"}
        )
        assert wrong.status_code == 415
        bad = client.post(
            "/v1/train?source=upload",
            content=b"not a zip",
            headers={"content-type": "application/zip"},
        )
        assert bad.status_code == 400 and "not a readable zip" in bad.json()["detail"]
        started = client.post(
            "/v1/train?source=upload&strategy=fine-tune&epochs=1",
            content=archive,
            headers={"content-type": "application/zip"},
        )
        assert started.status_code == 202, started.text
        events = read_events(client, started.json()["id"])
        assert events[-1]["status"] == "done", events
        model = client.get("/v1/model").json()
        assert model["classes"] == ["blue", "green", "red"] and model["strategy"] == "fine-tune"
        assert client.post("/v1/train?strategy=nope").status_code == 400
        assert client.post("/v1/train?source=upload&epochs=51").status_code == 400
        assert client.get("/v1/train/doesnotexist/events").status_code == 404


def test_uploaded_zip_above_the_size_limit_is_413(tmp_path):
    limits = ServeLimits(max_zip_bytes=1000)
    jobs = TrainingJobs(tiny_settings(tmp_path, None), limits)
    with TestClient(create_app(None, limits, training=jobs)) as client:
        answer = client.post(
            "/v1/train?source=upload",
            content=b"\0" * 1001,
            headers={"content-type": "application/zip"},
        )
        assert answer.status_code == 413


def one_member_zip(name: str, data: bytes = b"x", *, link: bool = False) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        if link:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        bundle.writestr(info, data)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(
    ("name", "link", "message"),
    [
        ("../evil.png", False, "'..' is not accepted"),
        ("cat/../../evil.png", False, "'..' is not accepted"),
        ("/etc/evil.png", False, "absolute path"),
        ("C:/evil.png", False, "absolute path"),
        ("..\\evil.png", False, "'..' is not accepted"),
        ("cat/link.png", True, "links are not accepted"),
    ],
)
def test_zip_names_that_would_escape_are_refused(tmp_path, name, link, message):
    with pytest.raises(DataError, match=message):
        unpack_zip(one_member_zip(name, link=link), tmp_path / "out", ServeLimits())
    assert not (tmp_path / "evil.png").exists()


def test_zip_bombs_and_counts_are_refused(tmp_path):
    zeros = one_member_zip("cat/a.png", b"\0" * 2_000_000)  # ~1000:1
    with pytest.raises(DataError, match="possible zip bomb"):
        unpack_zip(zeros, tmp_path / "a", ServeLimits())
    with pytest.raises(DataError, match="more than 1,000 bytes"):
        unpack_zip(
            one_member_zip("cat/a.png", b"y" * 2000),
            tmp_path / "b",
            ServeLimits(max_zip_unpacked_bytes=1000),
        )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for i in range(4):
            bundle.writestr(f"cat/{i}.png", b"x")
    with pytest.raises(DataError, match="holds 4 files; at most 3"):
        unpack_zip(buffer, tmp_path / "c", ServeLimits(max_zip_members=3))


def test_zip_hidden_files_are_skipped_and_a_top_folder_is_entered(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("photos/cat/a.png", b"x")
        bundle.writestr("photos/dog/b.png", b"x")
        bundle.writestr("__MACOSX/photos/._a.png", b"x")
        bundle.writestr("photos/.DS_Store", b"x")
    root = unpack_zip(buffer, tmp_path / "out", ServeLimits())
    assert root == tmp_path / "out" / "photos"
    assert sorted(p.name for p in root.iterdir()) == ["cat", "dog"]


def test_one_job_at_a_time(tmp_path, monkeypatch):
    import threading

    release = threading.Event()

    def held(self, job, epochs, data, on_model):  # noqa: ANN001, ANN202
        assert release.wait(30)

    monkeypatch.setattr(TrainingJobs, "_train", held)
    data = colour_folder(tmp_path / "colours", per_class=2)
    limits = ServeLimits()
    app = create_app(None, limits, training=TrainingJobs(tiny_settings(tmp_path, data), limits))
    with TestClient(app) as client:
        first = client.post("/v1/train")
        assert first.status_code == 202
        busy = client.post("/v1/train")
        assert busy.status_code == 409 and "being trained already" in busy.json()["detail"]
        release.set()
        assert read_events(client, first.json()["id"])[-1]["status"] == "done"
        assert client.post("/v1/train").status_code == 202  # free again
        assert client.get("/v1/train").json()["job"]["status"] in ("running", "done")


def test_a_zip_with_a_file_and_a_folder_of_one_name_is_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("cat", "x")
        bundle.writestr("cat/1.png", "y")
    with pytest.raises(DataError, match="cat"):
        unpack_zip(io.BytesIO(buffer.getvalue()), tmp_path / "out", ServeLimits())


def test_an_uploaded_zip_is_removed_once_its_job_ends(tmp_path):
    archive = zip_of(colour_folder(tmp_path / "colours", per_class=8))
    limits = ServeLimits()
    jobs = TrainingJobs(tiny_settings(tmp_path, None), limits)
    with TestClient(create_app(None, limits, training=jobs)) as client:
        started = client.post("/v1/train?source=upload&epochs=1", content=archive,
                              headers={"content-type": "application/zip"})  # fmt: skip
        assert started.status_code == 202
        read_events(client, started.json()["id"])
        assert list(jobs._uploads.iterdir()) == []  # nothing unpacked stays behind
