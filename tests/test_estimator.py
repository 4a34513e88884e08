"""ImageClassifier edges: one decode path for files and in-memory images, portable
models, damaged model files, and resuming only what was started."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_images import colour_data, tiny_weights_file
from PIL import Image

import headstart
from headstart.backbones.device import select_device
from headstart.data.decode import DecodeOptions
from headstart.errors import ConfigError, DataError, TrainingError
from headstart.estimator.image_classifier import ImageClassifier
from headstart.features import fastpath
from headstart.features.fastpath import fold_batchnorm
from headstart.strategies.registry import get_strategy
from headstart.train.config import TrainConfig
from headstart.train.metrics import classification_metrics

TINY = "test_efficientnet"


def _fitted(tmp_path=None, **changes) -> ImageClassifier:
    config = get_strategy("feature-extraction").default_config().replace(image_size=32, **changes)
    torch.manual_seed(0)
    clf = ImageClassifier(TINY, "feature-extraction", config, weights="none")
    return clf.fit(colour_data())


def test_in_memory_images_decode_like_files(tmp_path):
    """A transparent PNG and a sideways JPEG give the same probabilities as files or PIL."""
    clf = _fitted()
    rgba = Image.new("RGBA", (24, 16), (0, 0, 200, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 12, 16))  # left half fully transparent
    rgba.save(tmp_path / "alpha.png")
    sideways = Image.new("RGB", (30, 18), (200, 20, 20))
    sideways.paste((20, 200, 20), (0, 0, 10, 18))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    sideways.save(tmp_path / "rot.jpg", exif=exif, quality=95)

    from_files = clf.predict_proba([tmp_path / "alpha.png", tmp_path / "rot.jpg"])
    with Image.open(tmp_path / "alpha.png") as a, Image.open(tmp_path / "rot.jpg") as r:
        a.load()
        r.load()
        from_memory = clf.predict_proba([a, r])
    np.testing.assert_allclose(from_memory, from_files, atol=1e-6)
    # and the naive path (alpha dropped, EXIF ignored) would have differed
    naive = clf.predict_proba([rgba.convert("RGB"), sideways])
    assert not np.allclose(naive, from_files, atol=1e-4)


def test_decode_options_travel_with_the_model(tmp_path):
    data = colour_data()
    options = DecodeOptions(max_side=512, background=(0, 0, 0))
    data.options = options
    config = get_strategy("feature-extraction").default_config().replace(image_size=32)
    clf = ImageClassifier(TINY, "feature-extraction", config, weights="none").fit(data)
    clf.save(tmp_path / "m")
    loaded = ImageClassifier.load(tmp_path / "m")
    assert loaded.decode_options_ == options


def test_a_model_trained_for_cuda_predicts_on_this_machine(tmp_path):
    clf = _fitted()
    clf.save(tmp_path / "m")
    meta_path = tmp_path / "m" / "headstart.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["device"] = "cuda"
    meta_path.write_text(json.dumps(meta))
    loaded = ImageClassifier.load(tmp_path / "m")
    assert loaded.config_.device == "cuda"
    np.testing.assert_array_equal(
        loaded.predict_proba(colour_data(2, 5)), clf.predict_proba(colour_data(2, 5))
    )


def test_unavailable_or_unknown_devices_are_config_errors():
    with pytest.raises(ConfigError, match="'device'"):
        TrainConfig(device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            select_device("cuda")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda meta: meta.pop("head"), "head"),
        (lambda meta: meta.update(head={"kind": "linear"}), "invalid model description"),
        (lambda meta: meta.update(backbone="no_such_net"), "Unknown backbone"),
        (lambda meta: meta.update(format=99), "format 99"),
    ],
)
def test_a_damaged_model_description_is_a_data_error_naming_the_file(tmp_path, damage, message):
    _fitted().save(tmp_path / "m")
    meta_path = tmp_path / "m" / "headstart.json"
    meta = json.loads(meta_path.read_text())
    damage(meta)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=message) as caught:
        ImageClassifier.load(tmp_path / "m")
    assert "headstart.json" in str(caught.value)


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    config = (
        get_strategy("scratch")
        .default_config()
        .replace(image_size=32, epochs=2, batch_size=8, patience=0, augment=False)
    )
    torch.manual_seed(0)
    ImageClassifier(TINY, "scratch", config, checkpoint_dir=tmp_path).fit(colour_data())
    assert (tmp_path / "checkpoint-scratch.pt").is_file()
    changed = config.replace(batch_size=4)
    with pytest.raises(TrainingError, match="other settings or data"):
        ImageClassifier(TINY, "scratch", changed, checkpoint_dir=tmp_path).fit(
            colour_data(), resume=True
        )
    # the same settings resume (here: nothing left to do) without complaint
    ImageClassifier(TINY, "scratch", config, checkpoint_dir=tmp_path).fit(
        colour_data(), resume=True
    )


def test_metrics_by_hand():
    truth = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 0, 0, 1, 1, 0, 2, 2])
    metrics = classification_metrics(truth, predicted, ["a", "b", "c"])
    assert metrics["confusion_matrix"] == [[3, 1, 0], [1, 1, 0], [0, 0, 2]]
    assert metrics["accuracy"] == pytest.approx(6 / 8)
    assert metrics["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    a, b, c = metrics["per_class"]
    assert (a["precision"], a["recall"]) == (pytest.approx(3 / 4), pytest.approx(3 / 4))
    assert (b["precision"], b["recall"], b["f1"]) == (0.5, 0.5, 0.5)
    assert (c["precision"], c["recall"], c["support"]) == (1.0, 1.0, 2)


_PLOT_IN_A_FRESH_PROCESS = """
import sys
import matplotlib
if sys.argv[1] == "pyplot":  # the user works in pyplot, with a backend and a figure open
    matplotlib.use("svg")
    import matplotlib.pyplot as plt
    plt.figure(7)
    before = ("svg", [7])
else:  # the user never touched pyplot: headstart must not import it for them
    matplotlib.use("pdf")
    before = ("pdf", None)
import headstart.evaluation.report
from headstart.evaluation.plots import save_confusion_matrix
save_confusion_matrix([[3, 1], [0, 4]], ["a", "b"], sys.argv[2])
figures = sys.modules["matplotlib.pyplot"].get_fignums() if before[1] is not None else None
print(repr((before, (dict.__getitem__(matplotlib.rcParams, "backend"), figures),
            "matplotlib.pyplot" in sys.modules)))
"""


@pytest.mark.parametrize("user", ["pyplot", "no-pyplot"])
def test_plots_leave_the_users_matplotlib_backend_and_pyplot_alone(tmp_path, user):
    """In a fresh process, so that nothing imported the plotting code before the check:
    drawing a plot keeps the user's backend, their pyplot figures, and a program that
    never imported pyplot free of it."""
    png = tmp_path / "matrix.png"
    done = subprocess.run(
        [sys.executable, "-c", _PLOT_IN_A_FRESH_PROCESS, user, str(png)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(headstart.__file__).parents[1])},
    )
    assert done.returncode == 0, done.stderr
    before, after, pyplot_imported = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert after == before
    assert pyplot_imported is (user == "pyplot")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_hold_out_below_twenty_images_per_class_and_it_is_said(tmp_path):
    """With 1 image per class held out, early stopping is noise: train on everything."""
    from headstart.train.callbacks import Callback

    class Stages(Callback):
        def __init__(self):
            self.lines = []

        def on_stage(self, stage, message):
            self.lines.append((stage, message))

    weights = tiny_weights_file(tmp_path, seed=1)
    config = TrainConfig(epochs=1, batch_size=8, image_size=32, lp_ft=False, patience=1)
    for per_class, held_out in ((10, False), (20, True)):
        stages = Stages()
        clf = ImageClassifier("test_efficientnet", "fine-tune", config, weights=weights)
        clf.callback = stages
        clf.fit(colour_data(per_class, seed=0))
        said = any("no hold-out" in message for stage, message in stages.lines)
        assert said is not held_out
        assert (clf.history_[0]["val_accuracy"] is not None) is held_out


def _record_folds(monkeypatch) -> list[int]:
    """The number of norms folded, per call of fold_batchnorm (which still runs)."""
    folds: list[int] = []

    def recording(model, sample, stages=None):
        result = fold_batchnorm(model, sample, stages)
        folds.append(result[1])
        return result

    monkeypatch.setattr(fastpath, "fold_batchnorm", recording)
    return folds


@pytest.mark.usefixtures("bf16_cpu")
def test_fast_prediction_agrees_with_fp32_and_leaves_the_model_alone(monkeypatch):
    """predict runs the fast path (folded BatchNorm, channels_last, bf16 where the CPU
    has it): the probabilities stay those of the fp32 model, which is not changed."""
    clf = _fitted()
    folds = _record_folds(monkeypatch)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # statistics far from the identity, so folding has work to do
        for module in clf.model_.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
    before = {name: value.clone() for name, value in clf.model_.state_dict().items()}
    data = colour_data(per_class=4, seed=3)
    fast = clf.predict_proba(data)
    after = clf.model_.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert clf.model_.body.conv_stem.weight.is_contiguous()
    assert folds and folds[0] > 0
    clf.config_ = clf.config_.replace(fast=False)
    exact = clf.predict_proba(data)
    assert not np.array_equal(fast, exact)  # the fast path really ran: bf16 is not fp32
    np.testing.assert_allclose(fast, exact, atol=0.02)
    assert (fast.argmax(1) == exact.argmax(1)).mean() >= 0.9


def test_without_bf16_prediction_folds_nothing(monkeypatch):
    """On a CPU without bf16 there is no fast path: nothing is folded, nor kept."""
    clf = _fitted()
    folds = _record_folds(monkeypatch)
    monkeypatch.setattr(fastpath, "fast_path_available", lambda device: False)
    data = colour_data(per_class=2, seed=4)
    np.testing.assert_array_equal(clf.predict_proba(data), clf.predict_proba(data))
    assert folds == []


@pytest.mark.usefixtures("bf16_cpu")
def test_the_folded_copy_is_kept_between_predictions_until_the_weights_change(monkeypatch):
    clf = _fitted()
    folds = _record_folds(monkeypatch)
    data = colour_data(per_class=2, seed=4)
    first = clf.predict_proba(data)
    np.testing.assert_array_equal(clf.predict_proba(data), first)
    assert len(folds) == 1  # the second call reused the folded copy
    with torch.no_grad():
        head = next(m for m in clf.model_.head.modules() if isinstance(m, torch.nn.Linear))
        head.bias.add_(torch.arange(head.bias.numel(), dtype=torch.float32) * 5)
    changed = clf.predict_proba(data)
    assert len(folds) == 2 and not np.allclose(changed, first)


def test_fit_folder_is_load_split_fit_and_score_in_one_call(tmp_path):
    """The README's one-call helper: a folder in, a fitted classifier and its test
    metrics out, with the held-out part's score recorded for save."""
    from fixtures_images import build_image_folder

    root = build_image_folder(tmp_path / "photos", {"cat": 10, "dog": 10})
    config = get_strategy("feature-extraction").default_config().replace(image_size=32)
    clf, metrics = headstart.fit_folder(
        root, backbone="test_efficientnet", config=config, weights="none", test_size=0.3
    )
    assert metrics["n"] == 6 and clf.classes_ == ["cat", "dog"]
    assert clf.metrics_["test"]["accuracy"] == metrics["accuracy"]
