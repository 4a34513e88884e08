"""Common checks over every classifier kind, as scikit-learn's ``parametrize_with_checks``
runs one suite over every estimator: ``ImageClassifier`` fitted by each strategy, the
ensemble, and the exported model run by ``OnnxClassifier`` all answer by the same
rules (shapes, probabilities, ``classes_`` order, ``predict_files`` and its per-file
errors, the batch-size message, top-k order, the save/load round trip).

Each kind is fitted once per session on tiny data (3 colours, 1 epoch), on first use.
A check that does not apply to a kind (saving an ONNX file as a model folder) is not
generated for it, rather than skipped."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixtures_images import colour_data, colour_folder, tiny_weights_file

from headstart.errors import ConfigError, DataError, HeadstartError, ImageDecodeError
from headstart.estimator.ensemble import EnsembleClassifier, EnsembleMember, fit_ensemble
from headstart.estimator.image_classifier import ImageClassifier
from headstart.estimator.results import PredictsFiles
from headstart.strategies.registry import get_strategy

pytest.importorskip("onnxruntime")

TINY = "test_efficientnet"
STRATEGIES = ("feature-extraction", "fine-tune", "scratch", "semi-supervised")
KINDS = (*STRATEGIES, "ensemble", "onnx")
TORCH_KINDS = tuple(k for k in KINDS if k != "onnx")
# Kinds whose head is fitted in closed form (1 epoch of fine-tune or scratch learns little).
PROBED_KINDS = ("feature-extraction", "semi-supervised", "ensemble", "onnx")
MEMBERS = [EnsembleMember(TINY, 32, ("final",)), EnsembleMember(TINY, 24, ("stage-2", "final"))]
# What every fitted PyTorch classifier holds, however it was made (fit, load, ensemble).
FITTED = {
    "model_", "classes_", "history_", "plan_", "config_", "preprocessing_",
    "decode_options_", "weights_info_", "fit_seconds_", "validation_images_", "metrics_",
    "metadata_", "class_weighting_",
}  # fmt: skip


@dataclass
class Case:
    """What the checks run on: the kind's classifier, labelled test images, and a folder
    of image files with one broken file among them."""

    kind: str
    clf: Any
    train_classes: list[str]
    test: Any
    files: Path
    broken: Path
    work: Path


@pytest.fixture(scope="session")
def case_of(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Case]:
    """``case_of(kind)``: that kind fitted on first use, then kept for the session."""
    root = tmp_path_factory.mktemp("common-checks")
    weights = tiny_weights_file(root, seed=1)
    train, test = colour_data(per_class=6, seed=0), colour_data(per_class=3, seed=1)
    files = colour_folder(root / "files", per_class=2, broken=True)
    built: dict[str, Any] = {}

    def fitted(kind: str) -> Any:
        if kind in built:
            return built[kind]
        if kind == "ensemble":
            clf = fit_ensemble(train, MEMBERS, combine="average", weights=weights)
        elif kind == "onnx":
            from headstart.export.runtime import OnnxClassifier

            source = fitted("feature-extraction")
            path = source.export(root / "model.onnx", images=test).path
            clf = OnnxClassifier.load(path)
        else:
            config = get_strategy(kind).default_config()
            config = config.replace(epochs=1, batch_size=8, image_size=32, patience=0)
            clf = ImageClassifier(TINY, kind, config, weights=weights)
            uses = get_strategy(kind).uses_unlabelled
            clf.fit(train, unlabelled=colour_data(per_class=4, seed=2) if uses else None)
        built[kind] = clf
        return clf

    def case(kind: str) -> Case:
        work = root / "work" / kind
        work.mkdir(parents=True, exist_ok=True)
        broken = files / "red" / "not-an-image.jpg"
        return Case(kind, fitted(kind), list(train.classes), test, files, broken, work)

    return case


# ------------------------------------------------------------------------ the checks


def check_classes_are_the_training_classes_in_order(case: Case) -> None:
    assert list(case.clf.classes_) == case.train_classes
    assert all(isinstance(name, str) for name in case.clf.classes_)


def check_predict_proba_is_probabilities_in_classes_order(case: Case) -> None:
    proba = case.clf.predict_proba(case.test)
    assert proba.shape == (len(case.test), len(case.clf.classes_))
    assert np.isfinite(proba).all() and (proba >= 0).all() and (proba <= 1).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def check_columns_are_in_classes_order(case: Case) -> None:
    """The colours are easy: a head fitted in closed form gives each image its own
    colour's column, which it would not if the columns were in another order."""
    proba = case.clf.predict_proba(case.test)
    truth = np.asarray(case.test.classes)[case.test.labels]
    assert (np.asarray(case.clf.classes_)[proba.argmax(axis=1)] == truth).mean() >= 0.8


def check_predict_is_the_argmax_of_predict_proba(case: Case) -> None:
    proba = case.clf.predict_proba(case.test)
    predicted = case.clf.predict(case.test)
    assert len(predicted) == len(case.test)
    assert list(predicted) == [case.clf.classes_[i] for i in proba.argmax(axis=1)]


def check_images_in_memory_answer_as_the_dataset(case: Case) -> None:
    images = [case.test.image(i) for i in range(len(case.test))]
    arrays = [np.asarray(image) for image in images[:3]]
    expected = case.clf.predict_proba(case.test)
    np.testing.assert_allclose(case.clf.predict_proba(images), expected, atol=1e-5)
    np.testing.assert_allclose(case.clf.predict_proba(arrays), expected[:3], atol=1e-5)


def check_batch_size_does_not_change_the_answers(case: Case) -> None:
    np.testing.assert_allclose(
        case.clf.predict_proba(case.test, batch_size=1),
        case.clf.predict_proba(case.test, batch_size=64),
        atol=1e-5,
    )


def check_no_images_give_an_empty_answer(case: Case) -> None:
    assert case.clf.predict_proba([]).shape == (0, len(case.clf.classes_))


def check_bad_inputs_raise_headstart_errors(case: Case) -> None:
    with pytest.raises(HeadstartError, match="images"):
        case.clf.predict_proba(str(case.broken))  # a path, not a list of them
    with pytest.raises(DataError, match=r"images\[1\]"):
        case.clf.predict_proba([case.test.image(0), None])


BAD_BATCH_SIZES = (0, -1, True, 2.0, "8")


def check_batch_size_is_validated_by_name(case: Case) -> None:
    for bad in BAD_BATCH_SIZES:
        with pytest.raises(ConfigError, match="'batch_size' parameter") as caught:
            case.clf.predict_proba(case.test, batch_size=bad)
        assert caught.value.parameter == "batch_size" and caught.value.value == bad
        with pytest.raises(ConfigError, match="'batch_size' parameter") as caught:
            case.clf.predict_files([case.files], batch_size=bad)
        # named as the classifier's own predict_files, before any file is decoded
        assert f"{type(case.clf).__name__}.predict_files" in str(caught.value)


def check_predict_files_gives_top_k_most_probable_first(case: Case) -> None:
    predictions, _ = case.clf.predict_files([case.files], top_k=2)
    assert len(predictions) == 6  # 2 per colour; the broken file is not among them
    sources = [p.source for p in predictions]
    proba = case.clf.predict_proba(sources)
    for row, prediction in zip(proba, predictions, strict=True):
        names = [name for name, _ in prediction.top]
        scores = [score for _, score in prediction.top]
        assert len(prediction.top) == 2 and scores == sorted(scores, reverse=True)
        assert names == [case.clf.classes_[i] for i in np.argsort(-row, kind="stable")[:2]]
        np.testing.assert_allclose(scores, np.sort(row)[::-1][:2], atol=1e-5)
    assert [p.label for p in predictions] == list(case.clf.predict(sources))
    everything, _ = case.clf.predict_files([case.files], top_k=10)
    assert all(len(p.top) == len(case.clf.classes_) for p in everything)  # at most them all
    with pytest.raises(ConfigError, match="'top_k'"):
        case.clf.predict_files([case.files], top_k=0)


def check_predict_files_skips_a_bad_or_missing_file_with_its_reason(case: Case) -> None:
    missing = case.work / "gone.png"
    good = case.files / "green" / "0.png"
    predictions, skipped = case.clf.predict_files([good, case.broken, missing])
    assert [p.source for p in predictions] == [str(good)]
    reasons = {s.path: s.reason for s in skipped}
    assert set(reasons) == {str(case.broken), str(missing)}
    assert "file not found" in reasons[str(missing)] and reasons[str(case.broken)]
    with pytest.raises(ImageDecodeError, match="not-an-image"):
        case.clf.predict_files([good, case.broken], strict=True)
    empty = case.work / "empty"
    empty.mkdir(exist_ok=True)
    with pytest.raises(DataError, match="No image files"):
        case.clf.predict_files([empty])


def check_predict_files_is_the_one_shared_interface(case: Case) -> None:
    assert type(case.clf).predict_files is PredictsFiles.predict_files
    assert list(inspect.signature(case.clf.predict_files).parameters) == [
        "paths", "top_k", "chunk_size", "batch_size", "device", "strict", "tta",
    ]  # fmt: skip


def check_a_device_it_cannot_use_is_refused_before_any_file(case: Case) -> None:
    with pytest.raises(ConfigError, match="'device' parameter") as caught:
        case.clf.predict_files([case.files], device="tpu")
    assert f"{type(case.clf).__name__}.predict_files" in str(caught.value)


def check_evaluate_agrees_with_predict(case: Case) -> None:
    metrics = case.clf.evaluate(case.test)
    truth = np.asarray(case.test.classes)[case.test.labels]
    assert metrics["accuracy"] == pytest.approx(np.mean(case.clf.predict(case.test) == truth))
    assert np.asarray(metrics["confusion_matrix"]).sum() == len(case.test)


def check_fitted_state_is_complete(case: Case) -> None:
    clf = case.clf
    assert {name for name in vars(clf) if name.endswith("_")} - {"ensemble_"} == FITTED
    assert clf.fit_seconds_ >= 0 and clf.metadata_ is None  # fitted here, not loaded
    assert isinstance(clf.validation_images_, int)
    assert hasattr(clf, "ensemble_") == (case.kind == "ensemble")


def check_save_then_load_gives_the_same_kind_and_answers(case: Case) -> None:
    clf = case.clf
    kept = clf.metrics_
    clf.metrics_ = {"accuracy": 0.5}  # what a training job sets before saving
    try:
        folder = clf.save(case.work / "model")
    finally:
        clf.metrics_ = kept
    loaded = ImageClassifier.load(folder)
    assert type(loaded) is type(clf)
    assert {name for name in vars(loaded) if name.endswith("_")} == {
        name for name in vars(clf) if name.endswith("_")
    }
    assert loaded.classes_ == clf.classes_ and loaded.metrics_ == {"accuracy": 0.5}
    assert loaded.config_ == clf.config_ and loaded.backbone == clf.backbone
    np.testing.assert_array_equal(loaded.predict_proba(case.test), clf.predict_proba(case.test))
    assert loaded.predict_files([case.files]) == clf.predict_files([case.files])


CHECKS: list[tuple[Callable[[Case], None], tuple[str, ...]]] = [
    (check_classes_are_the_training_classes_in_order, KINDS),
    (check_predict_proba_is_probabilities_in_classes_order, KINDS),
    (check_columns_are_in_classes_order, PROBED_KINDS),
    (check_predict_is_the_argmax_of_predict_proba, KINDS),
    (check_images_in_memory_answer_as_the_dataset, KINDS),
    (check_batch_size_does_not_change_the_answers, KINDS),
    (check_no_images_give_an_empty_answer, KINDS),
    (check_bad_inputs_raise_headstart_errors, KINDS),
    (check_batch_size_is_validated_by_name, KINDS),
    (check_predict_files_gives_top_k_most_probable_first, KINDS),
    (check_predict_files_skips_a_bad_or_missing_file_with_its_reason, KINDS),
    (check_predict_files_is_the_one_shared_interface, KINDS),
    (check_a_device_it_cannot_use_is_refused_before_any_file, KINDS),
    (check_evaluate_agrees_with_predict, KINDS),
    (check_fitted_state_is_complete, TORCH_KINDS),
    (check_save_then_load_gives_the_same_kind_and_answers, TORCH_KINDS),
]


@pytest.mark.parametrize(
    "kind, check",
    [pytest.param(kind, check, id=f"{kind}-{check.__name__[6:]}")
     for check, kinds in CHECKS for kind in kinds],
)  # fmt: skip
def test_common_check(kind: str, check: Callable[[Case], None], case_of) -> None:
    check(case_of(kind))


def test_every_kind_is_checked_and_every_check_runs_somewhere() -> None:
    """A kind or a check added later is not silently left out of the suite."""
    names = {name for name in globals() if name.startswith("check_")}
    assert names == {check.__name__ for check, _ in CHECKS}
    assert {kind for _, kinds in CHECKS for kind in kinds} == set(KINDS)


def test_an_unfitted_classifier_names_what_to_do() -> None:
    from headstart.errors import NotFittedError

    clf = ImageClassifier(TINY)
    for call in (
        lambda: clf.predict_proba([]),
        lambda: clf.predict_files(["x.png"]),
        lambda: clf.save("never"),
    ):
        with pytest.raises(NotFittedError, match=r"fit\(train\)"):
            call()


def test_the_ensemble_is_its_own_kind(case_of) -> None:
    assert isinstance(case_of("ensemble").clf, EnsembleClassifier)
    assert not isinstance(case_of("feature-extraction").clf, EnsembleClassifier)
