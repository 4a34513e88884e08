"""One training job for every face: the command line, Python and the server train the
same folder into the same model (weights, plan, metrics), and the job's choices and
checks are the library's, in its own words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_images import colour_folder
from safetensors.numpy import load_file

from headstart.cli import main
from headstart.errors import ConfigError, DataError
from headstart.job import TrainingJob, TrainingResult
from headstart.train.callbacks import Callback

TINY = {"backbone": "test_efficientnet", "weights": "none"}


def _model(folder: Path) -> tuple[dict, dict]:
    meta = json.loads((folder / "headstart.json").read_text())
    return load_file(str(folder / "model.safetensors")), meta


def _same_model(a: Path, b: Path) -> None:
    weights_a, meta_a = _model(a)
    weights_b, meta_b = _model(b)
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert (weights_a[name] == weights_b[name]).all(), name
    assert meta_a["metrics"] == meta_b["metrics"]
    for meta in (meta_a, meta_b):
        meta.pop("fit_seconds", None)
        meta.pop("created", None)
        meta.pop("history", None)  # per-epoch seconds differ; losses are checked below
    assert meta_a == meta_b


def _losses(folder: Path) -> list:
    history = json.loads((folder / "headstart.json").read_text()).get("history") or []
    return [(h["train_loss"], h["val_loss"]) for h in history]


def test_the_cli_python_and_the_server_train_the_same_model(tmp_path):
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    from fastapi.testclient import TestClient

    from headstart.serve import ServeLimits, TrainingJobs, create_app
    from headstart.serve.training import TrainingSettings

    data = colour_folder(tmp_path / "colours", per_class=8)
    settings = ["--image-size", "32", "--epochs", "2", "--test-size", "0.25"]
    cli_out = tmp_path / "cli"
    code = main(
        ["train", str(data), "--strategy", "fine-tune", "--backbone", "test_efficientnet",
         "--weights", "none", *settings, "--out", str(cli_out), "--cache-dir", str(tmp_path / "c1")]
    )  # fmt: skip
    assert code == 0

    result = TrainingJob(
        data, strategy="fine-tune", config={"image_size": 32, "epochs": 2}, test_size=0.25,
        out=tmp_path / "python", cache_dir=tmp_path / "c2", **TINY,
    ).run()  # fmt: skip
    assert isinstance(result, TrainingResult) and result.folder == tmp_path / "python"

    limits = ServeLimits()
    served = TrainingSettings(
        out=tmp_path / "runs", data=data, image_size=32, test_size=0.25, **TINY
    )
    app = create_app(None, limits, training=TrainingJobs(served, limits))
    with TestClient(app) as client:
        job = client.post("/v1/train?strategy=fine-tune&epochs=2").json()
        with client.stream("GET", f"/v1/train/{job['id']}/events") as stream:
            for line in stream.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:])["type"] == "end":
                    assert json.loads(line[6:])["status"] == "done"
                    break
    server_out = tmp_path / "runs" / job["id"] / "model"

    _same_model(cli_out, tmp_path / "python")
    _same_model(cli_out, server_out)
    assert _losses(cli_out) == _losses(server_out) == _losses(tmp_path / "python")
    metrics = json.loads((cli_out / "headstart.json").read_text())["metrics"]["test"]
    assert metrics["data"] == {"path": str(data.resolve()), "test_size": 0.25, "seed": 0}
    assert result.metrics == metrics


class Recorder(Callback):
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.notes: list[str] = []

    def on_job_start(self, params):
        self.calls.append("start")
        self.params = params

    def on_note(self, text):
        self.notes.append(text)

    def on_dataset(self, label, dataset):
        self.calls.append(f"dataset:{label}")

    def on_data(self, train, test):
        self.calls.append("data")

    def on_diagnosis(self, diagnosis, said):
        self.calls.append("diagnosis")

    def on_job_end(self, result):
        self.calls.append("end")
        self.result = result


def test_the_job_reports_through_its_callback_and_saves_nothing_without_out(tmp_path):
    data = colour_folder(tmp_path / "colours", per_class=6)
    rec = Recorder()
    result = TrainingJob(data, config={"image_size": 32}, **TINY).run(rec)
    assert rec.calls == ["start", "dataset:data", "data", "diagnosis", "end"]
    assert rec.result is result and result.folder is None
    assert rec.params["strategy"] == "feature-extraction" and rec.params["image_size"] == 32
    assert any(note.startswith("trained in") for note in rec.notes)
    assert result.metrics["n"] == len(result.test) and "data" in result.metrics
    assert not list(tmp_path.glob("headstart-*"))  # nothing written anywhere else


def test_the_job_takes_datasets_in_memory(tmp_path):
    from headstart.data.layout import load_images

    train, test = load_images(colour_folder(tmp_path / "c", per_class=6), test_size=0.25)
    result = TrainingJob((train, test), config={"image_size": 32}, **TINY).run()
    assert result.metrics["n"] == len(test) and "data" not in result.metrics


@pytest.mark.parametrize(
    ("job", "error", "words"),
    [
        ({"ensemble": 1}, ConfigError, "ensemble takes 2 or more members"),
        ({"combine": "average"}, ConfigError, "combine joins the members of ensemble K"),
        ({"strategy": "semi-supervised"}, ConfigError, "needs unlabelled DIR"),
        ({"unlabelled": "nowhere"}, ConfigError, "unlabelled is only used by strategy"),
        ({"strategy": "scratch", "backbone": "auto"}, ConfigError, "rank pretrained features"),
        ({"config": {"epochs": 3}}, ConfigError, "would ignore a setting"),
        ({"labels_per_class": 0}, ConfigError, "labels_per_class"),
    ],
)
def test_the_jobs_checks_come_before_any_image_in_the_apis_words(tmp_path, job, error, words):
    with pytest.raises(error, match=words):
        TrainingJob(tmp_path / "no-such-folder", **{**TINY, **job}).check()


def test_an_unlabelled_folder_holding_only_training_images_is_refused(tmp_path):
    data = colour_folder(tmp_path / "colours", per_class=6)
    job = TrainingJob(
        data, strategy="semi-supervised", unlabelled=data, config={"image_size": 32}, **TINY
    )
    with pytest.raises(DataError, match="every image in it is also in"):
        job.run()


def test_fit_folder_still_works_and_is_the_job(tmp_path):
    import headstart

    data = colour_folder(tmp_path / "colours", per_class=6)
    clf, evaluation = headstart.fit_folder(data, config={"image_size": 32}, **TINY)
    assert evaluation["n"] == clf.metrics_["test"]["n"] and "confusion_matrix" in evaluation


def test_fit_folder_takes_its_old_keywords_and_bad_types_are_worded(tmp_path):
    import headstart

    data = colour_folder(tmp_path / "colours", per_class=6)
    clf, _ = headstart.fit_folder(
        data, config={"image_size": 32}, checkpoint_dir=tmp_path / "ckpt", **TINY
    )
    assert clf.classes_ == ["blue", "green", "red"]
    with pytest.raises(ConfigError) as raised:
        TrainingJob(data, ensemble="3", **TINY).check()
    assert str(raised.value) == "ensemble takes an int. Got '3'."
