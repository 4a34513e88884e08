"""Ensembles: several frozen bodies as one model that saves, loads, predicts and exports
as one, with the combination chosen by cross-validation and bad members named."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fixtures_images import colour_data, colour_folder, tiny_weights_file

from headstart.backbones.registry import create_backbone
from headstart.cli import main
from headstart.errors import ConfigError, HeadstartError
from headstart.estimator import ImageClassifier
from headstart.estimator.ensemble import EnsembleMember, fit_ensemble
from headstart.train.config import TrainConfig
from headstart.train.network import EnsembleNetwork

MEMBERS = [
    EnsembleMember("test_efficientnet", 32, ("final", "stage-2_2x2")),  # a grid layer too
    EnsembleMember("test_efficientnet", 24, ("stage-2", "final")),
]


@pytest.fixture(scope="module")
def data():
    return colour_data(per_class=8, seed=0, size=20)


@pytest.mark.parametrize("combine", ["average", "concat"])
def test_an_ensemble_saves_and_loads_as_one_model_with_identical_predictions(
    tmp_path, data, combine
):
    weights = tiny_weights_file(tmp_path, seed=1)
    clf = fit_ensemble(data, MEMBERS, combine=combine, weights=weights)
    assert isinstance(clf.model_, EnsembleNetwork) and clf.model_.combine == combine
    proba = clf.predict_proba(data)
    assert proba.shape == (len(data), 3) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert clf.score(data) > 0.9  # the colours are easy: the heads did learn
    loaded = ImageClassifier.load(clf.save(tmp_path / "model"))
    assert np.array_equal(loaded.predict_proba(data), proba)
    assert list(loaded.predict(data)) == list(clf.predict(data))
    meta = json.loads((tmp_path / "model" / "headstart.json").read_text())
    assert meta["ensemble"]["combine"] == combine
    assert [m["input"]["size"] for m in meta["ensemble"]["members"]] == [[32, 32], [24, 24]]
    assert meta["preprocessing"]["input_size"] == [3, 32, 32]  # the largest member's
    with pytest.raises(ConfigError, match="fit_ensemble"):
        loaded.fit(data)  # refit says how, rather than failing on the name "ensemble:..."


def test_the_smaller_member_sees_the_ensemble_input_resized_inside_the_network(tmp_path, data):
    clf = fit_ensemble(data, MEMBERS, combine="average", weights="none")
    x = torch.zeros(2, 3, 32, 32)
    shapes = [tuple(t.shape) for t in clf.model_.member_inputs(x)]
    assert shapes == [(2, 3, 32, 32), (2, 3, 24, 24)]
    # averaged: softmax of the output is the mean of the members' probabilities
    with torch.no_grad():
        members = [torch.softmax(m(t), 1) for m, t in zip(clf.model_.members,
                   clf.model_.member_inputs(x), strict=True)]  # fmt: skip
        together = torch.softmax(clf.model_(x), 1)
    assert torch.allclose(together, torch.stack(members).mean(0), atol=1e-6)


@pytest.mark.parametrize("combine", ["average", "concat"])
def test_a_dataset_is_scored_from_the_members_features_not_the_networks_forward(
    data, combine, monkeypatch
):
    # The test pass goes the way the training features went (one pass of the members'
    # bodies, then their heads): the forward pass on the fast path rechecks most rows of
    # averaged probabilities in fp32, 2.5x slower. Exact in fp32: the same as images.
    config = TrainConfig(fast=False)
    clf = fit_ensemble(data, MEMBERS, combine=combine, weights="none", config=config)
    images = [data.image(i) for i in range(len(data))]
    through_network = clf.predict_proba(images)
    calls = []
    forward = EnsembleNetwork.forward
    monkeypatch.setattr(EnsembleNetwork, "forward", lambda *a: calls.append(1) or forward(*a))
    from_features = clf.predict_proba(data)
    assert calls == []  # no forward pass through the joined network
    assert np.allclose(from_features, through_network, atol=1e-5)
    assert clf.evaluate(data)["accuracy"] == float(
        (through_network.argmax(1) == data.labels).mean()
    )


def test_auto_keeps_the_combination_with_the_better_cross_validated_accuracy(data):
    clf = fit_ensemble(data, MEMBERS, combine="auto", weights="none", folds=3)
    scores = clf.ensemble_["cross_validation"]
    assert set(scores) == {"average", "concat"} and all(0 <= v <= 1 for v in scores.values())
    best = "concat" if scores["concat"] > scores["average"] else "average"
    assert clf.ensemble_["combine"] == clf.model_.combine == best
    assert f"combine: {best} (3-fold CV" in clf.plan_.format()


def test_an_ensemble_exports_as_one_onnx_graph_that_matches_it(tmp_path, data):
    pytest.importorskip("onnxruntime")
    from headstart.export.runtime import OnnxClassifier

    clf = fit_ensemble(data, MEMBERS, combine="average", weights="none")
    result = clf.export(tmp_path / "ensemble.onnx", images=data)
    assert result.parity.max_probability_gap <= 1e-4
    card = json.loads((tmp_path / "ensemble.onnx.json").read_text())
    assert [m["input_size"] for m in card["ensemble"]["members"]] == [[32, 32], [24, 24]]
    import onnx

    graph = onnx.load(str(tmp_path / "ensemble.onnx")).graph
    assert len(graph.input) == 1  # one image input: the members' resizing is inside
    onnx = OnnxClassifier.load(tmp_path / "ensemble.onnx")
    images = [data.image(i) for i in range(6)]
    assert np.allclose(onnx.predict_proba(images), clf.predict_proba(images), atol=1e-4)


@pytest.mark.parametrize(
    "members, combine, error, words",
    [
        (MEMBERS[:1], "auto", ConfigError, "at least 2 members"),
        ([MEMBERS[0], MEMBERS[0]], "auto", ConfigError, "distinct members"),
        (MEMBERS, "vote", ConfigError, "'combine'"),
        (
            [MEMBERS[0], EnsembleMember("test_efficientnet", 32, ("stage9",))],
            "auto",
            ConfigError,
            "stage9",
        ),  # fmt: skip
        ([MEMBERS[0], EnsembleMember("no_such_net", 32)], "auto", HeadstartError, "no_such_net"),
    ],
)
def test_bad_members_are_named(data, members, combine, error, words):
    with pytest.raises(error, match=words):
        fit_ensemble(data, members, combine=combine, weights="none")


def test_an_ensemble_refuses_a_head_it_would_not_train(data):
    with pytest.raises(ConfigError, match="linear probes"):
        fit_ensemble(data, MEMBERS, weights="none", config=TrainConfig(head="mlp"))


def test_cli_train_ensemble_ranks_then_saves_one_model_that_predicts(tmp_path, capsys):
    folder = colour_folder(tmp_path / "imgs", per_class=6)
    weights = tiny_weights_file(tmp_path, seed=2)
    run = tmp_path / "run"
    code = main([
        "train", str(folder), "--out", str(run), "--backbone", "test_efficientnet",
        "--weights", weights, "--ensemble", "2", "--no-cache",
    ])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "ranking 8 candidates" in out  # 2 sizes (a non-bundled backbone: 224, 112) x 4 sets
    assert "ensemble of the top 2: test_efficientnet@" in out
    assert out.index("ensemble of the top 2") < out.index("plan: ensemble") < out.index("trained")
    meta = json.loads((run / "headstart.json").read_text())
    assert len(meta["ensemble"]["members"]) == 2 and meta["metrics"]["test"]["accuracy"] >= 0
    image = next(folder.rglob("*.png"))
    assert main(["predict", str(run), str(image)]) == 0
    assert str(image) in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--ensemble", "1"], "2 or more members"),
        (["--combine", "concat"], "give --ensemble too"),
        (["--ensemble", "2", "--strategy", "fine-tune"], "Leave --strategy out"),
        (["--ensemble", "2", "--resume"], "no checkpoints"),
        (["--ensemble", "2", "--head", "mlp"], "leave --head and --augment out"),
    ],
)
def test_cli_refuses_ensemble_flags_that_cannot_work(tmp_path, capsys, flags, words):
    folder = colour_folder(tmp_path / "imgs", per_class=3)
    code = main(["train", str(folder), "--out", str(tmp_path / "run"), *flags])
    assert code == 2
    assert words in capsys.readouterr().err


def test_members_with_other_normalisations_get_their_own(data):
    """A ViT member (ImageNet mean and std) beside an EfficientNet (0.5, 0.5): each sees
    the ensemble's input renormalised to its own, and resized to its own size."""
    members = [EnsembleMember("test_efficientnet", 32), EnsembleMember("test_vit", 32, ["final"])]
    clf = fit_ensemble(data, members, combine="average", weights="none")
    ensemble_prep = clf.preprocessing_
    own = [create_backbone(m.backbone, "none", image_size=32).preprocessing for m in members]
    assert own[0].mean != own[1].mean  # the case this test is for
    pixels = torch.rand(2, 3, 32, 32)  # in [0, 1], as ToTensor gives

    def normalised(prep):
        return (pixels - torch.tensor(prep.mean).view(1, 3, 1, 1)) / torch.tensor(prep.std).view(
            1, 3, 1, 1
        )

    inputs = clf.model_.member_inputs(normalised(ensemble_prep))
    for x, prep in zip(inputs, own, strict=True):
        torch.testing.assert_close(x, normalised(prep), rtol=1e-5, atol=1e-5)


def test_member_layers_may_be_a_list_and_bad_ones_are_named():
    assert EnsembleMember("m", 32, ["final", "stage-1_2x2"]).layers == ("final", "stage-1_2x2")
    with pytest.raises(ConfigError, match="'layers' parameter of EnsembleMember"):
        EnsembleMember("m", 32, "final")
    with pytest.raises(ConfigError, match="'image_size' parameter of EnsembleMember"):
        EnsembleMember("m", 3)


@pytest.mark.parametrize(
    "field, value",
    [("width", -1), ("size", [24]), ("size", [0, 0]), ("scale", ["a", 1, 1]), ("layers", [])],
)
def test_a_tampered_ensemble_description_is_a_named_error(tmp_path, data, field, value):
    from headstart.errors import DataError

    clf = fit_ensemble(data, MEMBERS, combine="average", weights="none")
    folder = clf.save(tmp_path / "model")
    meta_path = folder / "headstart.json"
    meta = json.loads(meta_path.read_text())
    member = meta["ensemble"]["members"][1]
    if field in ("size", "scale"):
        member["input"][field] = value
    else:
        member[field] = value
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=f"headstart.json.*{field}"):
        ImageClassifier.load(folder)


def test_an_ensemble_is_its_own_type_and_loads_as_it(tmp_path, data, tiny_model_folder):
    """fit_ensemble gives an EnsembleClassifier, ImageClassifier.load of its folder too;
    the ensemble refuses the training methods it cannot do, and loading a plain model
    folder as an ensemble is an error naming the folder."""
    import headstart
    from headstart.errors import DataError

    clf = fit_ensemble(data, MEMBERS, combine="average", weights="none")
    assert type(clf) is headstart.EnsembleClassifier and isinstance(clf, ImageClassifier)
    folder = clf.save(tmp_path / "model")
    for loader in (ImageClassifier.load, headstart.EnsembleClassifier.load):
        loaded = loader(folder)
        assert type(loaded) is headstart.EnsembleClassifier
        assert loaded.ensemble_ == clf.ensemble_ and loaded.metadata()["layers"] is None
    for method in (loaded.prepare, lambda: loaded.fit(data)):
        with pytest.raises(ConfigError, match="fit_ensemble"):
            method()
    assert type(ImageClassifier.load(tiny_model_folder)) is ImageClassifier
    with pytest.raises(DataError, match=f"{tiny_model_folder}: not a saved EnsembleClassifier"):
        headstart.EnsembleClassifier.load(tiny_model_folder)
