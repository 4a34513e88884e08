"""Successive-halving ranking (issue 25) against the full one it must agree with: the
pick, the rounds (the bottom half dropped, the rest scored on more images), the
unchanged reference, the seed, decoding once, the command line; and warm starts of the
probe, with and without the prior shift, reaching the cold start's optimum."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures_images import colour_folder, tiny_weights_file

from headstart.cli import main
from headstart.data.arrays import from_arrays
from headstart.errors import ConfigError
from headstart.rank import Candidate, knn_accuracy, logme, probe_accuracy, rank
from headstart.rank import halving as halving_module
from headstart.rank.halving import halving_rounds, image_order
from headstart.rank.pairs import DecodedImages
from headstart.train.probe import fit_linear_probe


def _stripes(per_class: int = 64, seed: int = 0):
    """Three classes told apart by their stripes (rows, columns, checks) under noise:
    seen at 32 px they are plain, squeezed to 16 px they blur, so the candidates differ."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), per_class)
    rows, cols = np.mgrid[0:32, 0:32]
    patterns = [rows % 2, cols % 2, (rows + cols) % 2]
    images = rng.integers(0, 120, size=(len(labels), 32, 32, 3)).astype(np.int64)
    for i, label in enumerate(labels):
        images[i] += 110 * patterns[label][:, :, None]
    names = [("rows", "columns", "checks")[k] for k in labels]
    return from_arrays(np.clip(images, 0, 255).astype(np.uint8), names)


def _candidates(sizes=(16, 32, 20, 24)) -> list[Candidate]:
    """Four sizes of one backbone: the sharper the stripes, the better."""
    return [Candidate("test_efficientnet", s, ("final",)) for s in sizes]


def _comparable(ranking) -> list[dict]:
    return [s.to_dict() | {"latency_ms": 0, "extraction_seconds": 0} for s in ranking.scores]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    return tiny_weights_file(tmp_path_factory.mktemp("weights"), seed=3)


@pytest.fixture(scope="module")
def both(weights):
    """The same 192 images and 4 candidates ranked both ways, the rounds' scores seen."""
    data = _stripes()
    rounds: list[list] = []
    original = halving_module._score

    def seen(scores):  # each round's candidates, as scored there
        original(scores)
        rounds.append(sorted(scores, key=halving_module.order_key))

    patch = pytest.MonkeyPatch()
    patch.setattr(halving_module, "_score", seen)
    try:
        notices: list[str] = []
        halving = rank(
            data, _candidates(), weights=weights, method="halving", notice=notices.append
        )
    finally:
        patch.undo()
    full = rank(data, _candidates(), weights=weights, method="full")
    return data, halving, full, rounds, notices


def test_the_rounds_are_halved_and_doubled():
    assert halving_rounds(1000, 10, 24) == [(125, 24), (250, 12), (500, 6)]
    assert halving_rounds(192, 3, 4) == [(24, 4), (48, 2)]  # no round of one candidate
    # a first round of fewer than 8 images per class: everything on everything
    assert halving_rounds(150, 3, 8) == [(150, 8)]
    assert halving_rounds(1000, 10, 2) == [(1000, 2)]


def test_halving_picks_what_full_picks(both):
    _, halving, full, _, _ = both
    assert halving.best.candidate == full.best.candidate
    assert full.best.candidate.image_size == 32  # the data's point: 16 px blurs the stripes
    assert halving.ranked[-1].candidate.image_size == full.ranked[-1].candidate.image_size == 16
    assert len(halving.ranked) == len(full.ranked) == 4


def test_each_round_drops_the_bottom_half_and_scores_the_rest_on_more_images(both):
    _, halving, _, rounds, notices = both
    assert [len(r) for r in rounds] == [4, 2]
    for before, after in zip(rounds, rounds[1:], strict=False):
        assert {s.candidate for s in after} == {s.candidate for s in before[: len(after)]}
    assert [r[0].images_scored for r in rounds] == [24, 48]
    # the order: the last round's two, then round 1's dropped two
    assert [s.images_scored for s in halving.ranked] == [48, 48, 24, 24]
    assert [s.candidate for s in halving.ranked[2:]] == [s.candidate for s in rounds[0][2:]]
    assert "round 2: 2 candidates on 48 images" in notices
    assert "candidates scored on 4 on 24, 2 on 48 of the 192" in halving.notes[0]


def test_a_candidate_too_far_behind_to_catch_up_is_dropped_from_the_half_kept():
    from headstart.rank.ranking import CandidateScore

    def scored(accuracy):
        return CandidateScore(Candidate("test_efficientnet", 32, ("final",)), accuracy)

    lead, close, far = scored(0.80), scored(0.74), scored(0.60)
    # 3 x sqrt(2 p (1 - p) / 250), p near 0.8: 0.107 below the best
    assert halving_module.cannot_catch_up([lead, close, far], 250) == [far]
    assert halving_module.cannot_catch_up([lead, close, far], 2000) == [close, far]
    # a perfect score on few images still has an error: nobody is dropped for 0.95
    assert halving_module.cannot_catch_up([scored(1.0), scored(0.95)], 24) == []


def test_only_those_that_can_catch_up_go_on_and_no_round_scores_one_alone(weights, monkeypatch):
    monkeypatch.setattr(halving_module, "CATCH_UP_Z", 1e-9)  # any gap: cannot catch up
    rounds: list[list] = []
    original = halving_module._score

    def seen(scores):
        original(scores)
        rounds.append(sorted(scores, key=halving_module.order_key))

    monkeypatch.setattr(halving_module, "_score", seen)
    halving = rank(_stripes(), _candidates(), weights=weights, method="halving")
    first = rounds[0]
    best = max(s.predicted_accuracy for s in first)
    level = [s.candidate for s in first[:2] if s.predicted_accuracy == best]
    if len(level) == 2:  # both of the half kept tie with the best: round 2 scores them
        assert [{s.candidate for s in r} for r in rounds[1:]] == [set(level)]
        assert halving.ranked[0].candidate in level
    else:  # one left: it is not scored again alone, and the note says why
        assert len(rounds) == 1 and {s.images_scored for s in halving.ranked} == {24}
        assert "(the rest could not catch up)" in halving.notes[0]
        assert [s.candidate for s in halving.ranked] == [s.candidate for s in first]


def test_full_scores_every_candidate_on_every_image_as_before(both, weights):
    """The reference: each candidate's probe, LogME and kNN on all training features."""
    from headstart.backbones.registry import create_backbone
    from headstart.features.cache import cached_features

    data, _, full, _, _ = both
    assert full.notes == [] and {s.images_scored for s in full.ranked} == {len(data)}
    for size in (16, 32, 20, 24):
        backbone = create_backbone("test_efficientnet", weights, image_size=size)
        features, _ = cached_features(backbone, data, None, layers=["final"])
        for s in [s for s in full.ranked if s.candidate.image_size == size]:
            x = np.concatenate([features[layer] for layer in s.candidate.layers], axis=1)
            assert s.predicted_accuracy == probe_accuracy(x, data.labels)
            assert s.logme == pytest.approx(logme(x, data.labels), rel=1e-6)
            assert s.knn_accuracy == knn_accuracy(x, data.labels)
    assert [s.score for s in full.ranked] == sorted((s.score for s in full.ranked), reverse=True)


def test_a_method_it_does_not_know_is_refused_by_name(weights):
    with pytest.raises(ConfigError, match="'method' parameter of rank must be one of 'halving'"):
        rank(_stripes(per_class=4), _candidates(), weights=weights, method="fast")


def test_halving_is_the_seeds(both, weights):
    data, halving, _, _, _ = both
    again = rank(data, _candidates(), weights=weights, method="halving")
    assert _comparable(again) == _comparable(halving)
    order = image_order(data.labels, seed=0)
    assert not np.array_equal(order, image_order(data.labels, seed=1))
    assert np.array_equal(order, image_order(data.labels, seed=0))
    assert sorted(order) == list(range(len(data)))
    for first in (24, 48, 96):  # every round's images hold the classes evenly
        counts = np.bincount(data.labels[order[:first]], minlength=3)
        assert counts.max() - counts.min() <= 1, (first, counts)


def test_decoding_once_gives_the_features_of_decoding_per_size(tmp_path, weights):
    from headstart.backbones.registry import create_backbone
    from headstart.data.loaders import load_folder
    from headstart.features.cache import cached_features

    data = load_folder(colour_folder(tmp_path / "imgs", per_class=5))
    images = DecodedImages(data)
    rows = [0, 3, 7, 11, 14]
    for size in (16, 32, 20, 24):
        backbone = create_backbone("test_efficientnet", weights, image_size=size)
        once, _ = cached_features(backbone, images.subset(rows), None, layers=["final"])
        fresh, _ = cached_features(backbone, data.subset(rows), None, layers=["final"])
        np.testing.assert_array_equal(once["final"], fresh["final"])
    assert images.decoded == len(rows)  # once, for both sizes
    assert images.subset(rows).content_hashes() == data.subset(rows).content_hashes()


@pytest.mark.parametrize("method", ["halving", "full"])
def test_cli_rank_takes_either_method(tmp_path, capsys, method):
    folder = colour_folder(tmp_path / "imgs", per_class=80)
    out = tmp_path / "ranked"
    code = main([
        "rank", str(folder), "--backbones", "test_efficientnet", "--weights", "none",
        "--image-sizes", "32", "--rank-method", method, "--no-cache", "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert ("successive halving" in text) == (method == "halving")
    saved = json.loads((out / "ranking.json").read_text())
    scored = [s["images_scored"] for s in saved["scores"]]
    assert len(scored) == 4
    assert (len(set(scored)) > 1) == (method == "halving")
    assert bool(saved["notes"]) == (method == "halving")
    assert max(scored) == (192 if method == "full" else 48)  # halving: 4 on 24, 2 on 48


def test_cli_refuses_a_method_it_does_not_know(tmp_path, capsys):
    folder = colour_folder(tmp_path / "imgs", per_class=4)
    with pytest.raises(SystemExit):
        main(["rank", str(folder), "--rank-method", "fast"])
    assert "--rank-method" in capsys.readouterr().err


def test_full_is_the_default_and_train_backbone_auto_ranks_with_it(tmp_path, capsys):
    """Full, since halving missed the weighted-tau target on Fashion-MNIST (BENCHMARKS 19)."""
    from headstart.rank.ranking import DEFAULT_METHOD

    assert DEFAULT_METHOD == "full"
    folder = colour_folder(tmp_path / "imgs", per_class=80)
    run = tmp_path / "run"
    code = main([
        "train", str(folder), "--out", str(run), "--backbone", "auto", "--weights", "none",
        "--image-size", "32", "--no-cache",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "chosen:" in out and "round 1:" not in out and "successive halving" not in out
    saved = json.loads((run / "headstart.json").read_text())
    assert saved["backbone"] == out.split("chosen: ")[1].split(" ")[0]  # trained the pick


def _imbalanced(seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(200, int), np.ones(70, int), np.full(30, 2)]
    features = rng.normal(size=(300, 20)) + np.eye(3)[labels] @ rng.normal(size=(3, 20)) * 0.8
    return features, labels


@pytest.mark.parametrize("prior_shift", [0.0, 1.0])
def test_a_warm_start_from_a_fitted_probe_is_its_optimum(prior_shift):
    """The shift is added to the bias after the solve; a probe as the start has it taken
    back off, so starting at an optimum stays there (no iterations, the same head)."""
    x, y = _imbalanced()
    cold = fit_linear_probe(x, y, 3, prior_shift=prior_shift)
    warm = fit_linear_probe(x, y, 3, prior_shift=prior_shift, init=cold)
    assert warm.iterations == 0
    np.testing.assert_allclose(warm.head.weight.detach(), cold.head.weight.detach(), atol=1e-6)
    np.testing.assert_allclose(warm.head.bias.detach(), cold.head.bias.detach(), atol=1e-5)
    if prior_shift:  # the shift is applied once, not twice
        unshifted = fit_linear_probe(x, y, 3)
        shift = (cold.head.bias - unshifted.head.bias).detach().numpy()
        log_share = np.log(np.bincount(y) / len(y))
        np.testing.assert_allclose(shift, -prior_shift * log_share, atol=1e-4)


@pytest.mark.parametrize("prior_shift", [0.0, 1.0])
def test_a_warm_start_from_elsewhere_reaches_the_cold_optimum(prior_shift):
    x, y = _imbalanced()
    cold = fit_linear_probe(x, y, 3, prior_shift=prior_shift)
    elsewhere = fit_linear_probe(x[:150], y[:150], 3, prior_shift=prior_shift)
    warm = fit_linear_probe(x, y, 3, prior_shift=prior_shift, init=elsewhere)
    assert warm.train_loss == pytest.approx(cold.train_loss, rel=1e-3)
    assert (warm.predict_proba(x).argmax(1) == cold.predict_proba(x).argmax(1)).all()
    np.testing.assert_allclose(warm.predict_proba(x), cold.predict_proba(x), atol=1e-3)
