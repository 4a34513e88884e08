"""Experiment tracking: a real tiny fit logged to TensorBoard and to an MLflow file
store, read back with each tool's own reader; the ``--log`` spec and missing extras."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fixtures_images import colour_data, colour_folder

from headstart import ImageClassifier
from headstart.cli import main
from headstart.errors import ConfigError
from headstart.tracking import (
    MLflowLogger,
    TensorBoardLogger,
    loggers_from_specs,
    parse_log_spec,
)
from headstart.train.callbacks import Callback, CallbackList

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

TINY = ["--backbone", "test_efficientnet", "--weights", "none", "--image-size", "32"]


@dataclass
class JobResult:  # what the training job hands on_job_end
    metrics: dict[str, Any]
    evaluation: dict[str, Any]
    folder: Path | None
    classifier: Any


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One fine-tune of 2 epochs, logged to both trackers; (root, result)."""
    root = tmp_path_factory.mktemp("tracking")
    tensorboard = TensorBoardLogger(root / "tb")
    mlflow = MLflowLogger(f"file:{root / 'mlruns'}", experiment="tests", run_name="tiny")
    loggers = CallbackList([tensorboard, mlflow])
    clf = ImageClassifier("test_efficientnet", "fine-tune", weights="none", callback=loggers)
    clf.config = clf.resolved_config().replace(
        image_size=32, epochs=2, batch_size=8, patience=0, lp_ft=False
    )
    params = {"strategy": "fine-tune", "backbone": "test_efficientnet", "data": "colours"}
    params.update(clf.config.to_dict())
    loggers.on_job_start(params)
    clf.fit(colour_data(per_class=8), colour_data(per_class=3, seed=2))
    test = colour_data(per_class=4, seed=1)
    evaluation = clf.evaluate(test)
    metrics = {k: evaluation[k] for k in ("accuracy", "balanced_accuracy", "n")}
    metrics["data"] = {"train_images": 24, "test_images": len(test)}
    folder = clf.save(root / "model")
    loggers.on_job_end(JobResult(metrics, evaluation, folder, clf))
    return root, metrics, clf


def _accumulator(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_tensorboard_events_hold_the_epochs_and_the_test_metrics(logged):
    root, metrics, clf = logged
    events = _accumulator(root / "tb")
    scalars = events.Tags()["scalars"]
    epochs = clf.history_  # every epoch of every stage
    assert len(epochs) == 2 and all(e["val_accuracy"] is not None for e in epochs)
    losses = events.Scalars("train/loss")
    assert [s.step for s in losses] == list(range(1, len(epochs) + 1))
    assert [s.value for s in losses] == pytest.approx([e["train_loss"] for e in epochs])
    assert [s.value for s in events.Scalars("val/accuracy")] == pytest.approx(
        [e["val_accuracy"] for e in epochs]
    )
    assert {"train/accuracy", "val/loss", "train/lr", "test/data/test_images"} <= set(scalars)
    assert events.Scalars("test/accuracy")[-1].value == pytest.approx(metrics["accuracy"])
    assert "confusion_matrix" in events.Tags()["images"]
    assert {"params", "plan", "model_folder"} <= {t.split("/")[0] for t in events.Tags()["tensors"]}


def _client(root: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"file:{root / 'mlruns'}")


def test_mlflow_run_holds_params_metrics_and_artifacts(logged):
    root, metrics, clf = logged
    client = _client(root)
    experiment = client.get_experiment_by_name("tests")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tiny" and run.info.status == "FINISHED"
    assert run.data.params["strategy"] == "fine-tune"
    assert run.data.params["epochs"] == "2"
    assert run.data.params["image_size"] == "32"
    assert run.data.metrics["test/accuracy"] == pytest.approx(metrics["accuracy"])
    assert run.data.metrics["test/data/test_images"] == 12
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(
        [e["train_loss"] for e in clf.history_]
    )
    assert len(client.get_metric_history(run.info.run_id, "val/accuracy")) == len(clf.history_)
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"plan.txt", "plots", "model"} <= top
    model = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "model")}
    assert "headstart.json" in model
    plan = Path(client.download_artifacts(run.info.run_id, "plan.txt", str(root / "dl")))
    assert plan.read_text().startswith("plan: fine-tune")


def test_compare_logs_a_parent_run_and_a_child_per_run(tmp_path, capsys):
    folder = colour_folder(tmp_path / "data", per_class=6)
    store = tmp_path / "mlruns"
    args = ["compare", str(folder), "--strategies", "feature-extraction,fine-tune"]
    args += ["--labels-per-class", "all", "--epochs", "1", "--no-cache", *TINY]
    args += ["--out", str(tmp_path / "out"), "--log", f"mlflow:file:{store}"]
    args += ["--log", f"tensorboard:{tmp_path / 'tb'}"]
    assert main(args) == 0, capsys.readouterr().err
    client = _client(tmp_path)
    experiment = client.get_experiment_by_name("headstart")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.data.params["strategy"] for r in children} == {"feature-extraction", "fine-tune"}
    assert all("test/accuracy" in r.data.metrics for r in children)
    assert all(r.info.status == "FINISHED" for r in runs)
    subfolders = sorted(p.name for p in (tmp_path / "tb").iterdir())
    assert len(subfolders) == 2
    for sub in subfolders:
        assert "test/accuracy" in _accumulator(tmp_path / "tb" / sub).Tags()["scalars"]


def test_callback_list_forwards_every_hook_to_the_members_that_have_it():
    seen = []

    class Runs(Callback):
        def on_run_start(self, run, index, total):
            seen.append(("start", run, index, total))

        def on_job_start(self, params):
            seen.append(("job", params))

    both = CallbackList([Runs(), Callback(), None, Runs()])
    both.on_run_start("a", 1, 2)
    both.on_job_start({"x": 1})
    both.on_epoch(None)  # no member overrides it: nothing happens, nothing fails
    assert seen == [("start", "a", 1, 2)] * 2 + [("job", {"x": 1})] * 2


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("tensorboard:runs/tb", ("tensorboard", "runs/tb")),
        ("mlflow:file:./mlruns", ("mlflow", "file:./mlruns")),
        ("MLflow:http://127.0.0.1:5000", ("mlflow", "http://127.0.0.1:5000")),
    ],
)
def test_log_specs_parse(spec, expected):
    assert parse_log_spec(spec) == expected


@pytest.mark.parametrize("spec", ["wandb:x", "tensorboard", "mlflow:", "tensorboard:  ", ""])
def test_bad_log_specs_name_the_value_and_both_forms(spec):
    with pytest.raises(ConfigError) as caught:
        loggers_from_specs([spec])
    message = str(caught.value)
    assert repr(spec) in message
    assert "tensorboard:DIR" in message and "mlflow:URI" in message


@pytest.mark.parametrize(
    ("kind", "modules"),
    [("tensorboard", ["tensorboard", "torch.utils.tensorboard"]), ("mlflow", ["mlflow"])],
)
def test_a_missing_extra_is_one_line_naming_it(kind, modules, monkeypatch, tmp_path):
    for module in [m for m in list(sys.modules) if m.split(".")[0] == modules[0]]:
        monkeypatch.delitem(sys.modules, module)
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    with pytest.raises(ConfigError) as caught:
        loggers_from_specs([f"{kind}:{tmp_path / 'x'}"])
    message = str(caught.value)
    assert message == f"--log {kind} needs the {kind} package: pip install 'headstart[{kind}]'"


def test_the_cli_refuses_a_bad_log_before_training(tmp_path, capsys):
    folder = colour_folder(tmp_path / "data", per_class=4)
    code = main(["compare", str(folder), *TINY, "--log", "wandb:x"])
    assert code == 2
    assert "--log 'wandb:x'" in capsys.readouterr().err


def test_an_interrupted_comparison_leaves_its_mlflow_runs_failed(tmp_path):
    logger = MLflowLogger(f"file:{tmp_path / 'mlruns'}")
    logger.on_run_start("feature-extraction@all", 1, 2)
    logger.close(failed=True)
    runs = _client(tmp_path).search_runs([logger.experiment_id])
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED"]
    assert logger.parent_id is None and logger.child_id is None


def test_train_logs_its_job_to_both_trackers(tmp_path, capsys):
    """`headstart train --log ...`: the training job's own hooks reach the loggers: its
    params, every epoch, the test metrics it saved, the plan and the model folder."""
    folder = colour_folder(tmp_path / "data", per_class=8)
    out = tmp_path / "model"
    args = ["train", str(folder), "--strategy", "fine-tune", "--epochs", "2", *TINY]
    args += ["--out", str(out), "--log", f"mlflow:file:{tmp_path / 'mlruns'}"]
    args += ["--log", f"tensorboard:{tmp_path / 'tb'}", "--no-cache"]
    assert main(args) == 0, capsys.readouterr().err
    saved = json.loads((out / "headstart.json").read_text())
    client = _client(tmp_path)
    (run,) = client.search_runs([client.get_experiment_by_name("headstart").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["strategy"] == "fine-tune"
    assert run.data.params["epochs"] == "2"
    assert run.data.metrics["test/accuracy"] == pytest.approx(saved["metrics"]["test"]["accuracy"])
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(history) == len(saved["history"]) == 2
    model = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"headstart.json", "model.safetensors"} <= model
    events = _accumulator(tmp_path / "tb")
    assert [s.value for s in events.Scalars("train/loss")] == pytest.approx(
        [e["train_loss"] for e in saved["history"]]
    )
    assert events.Scalars("test/accuracy")[-1].value == pytest.approx(
        saved["metrics"]["test"]["accuracy"]
    )
