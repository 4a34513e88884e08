"""Ranking candidates without training them: LogME against a direct computation, the
probe and kNN estimates, determinism, and failures that leave the others going."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures_images import colour_data, colour_folder, tiny_weights_file
from scipy.optimize import minimize

from headstart.cli import main
from headstart.errors import DataError
from headstart.rank import Candidate, knn_accuracy, logme, probe_accuracy, rank
from headstart.rank.evidence import log_evidence


def _direct_log_evidence(features, y, alpha, beta):
    """log N(y; 0, I/beta + F F^T/alpha): the evidence with w integrated out, by brute force."""
    cov = np.eye(len(y)) / beta + features @ features.T / alpha
    _, log_det = np.linalg.slogdet(cov)
    return -0.5 * (len(y) * np.log(2 * np.pi) + log_det + y @ np.linalg.solve(cov, y))


@pytest.mark.parametrize("n, d", [(40, 10), (30, 60)])  # more and fewer images than features
def test_logme_matches_a_direct_maximisation_of_the_evidence(n, d):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, n)
    features = rng.normal(size=(n, d))
    features[:, 0] += labels
    for alpha, beta in [(1.0, 1.0), (0.3, 5.0), (10.0, 0.2)]:
        y = (labels == 1).astype(float)
        assert log_evidence(features, y, alpha, beta) == pytest.approx(
            _direct_log_evidence(features, y, alpha, beta), rel=1e-9
        )
    reference = 0.0
    for k in range(3):  # maximised over (log alpha, log beta) by Nelder-Mead
        y = (labels == k).astype(float)
        best = minimize(
            lambda p, y=y: -_direct_log_evidence(features, y, np.exp(p[0]), np.exp(p[1])),
            [0.0, 0.0],
            method="Nelder-Mead",
            options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000},
        )
        reference += -best.fun / n / 3
    assert logme(features, labels) == pytest.approx(reference, abs=1e-5)


def test_scores_prefer_features_that_separate_the_classes():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 20)
    noise = rng.normal(size=(60, 16))
    telling = noise + 3 * np.eye(3)[labels] @ rng.normal(size=(3, 16))
    assert logme(telling, labels) > logme(noise, labels)
    assert probe_accuracy(telling, labels) > 0.9 > probe_accuracy(noise, labels) + 0.3
    assert knn_accuracy(telling, labels) > 0.9 > knn_accuracy(noise, labels) + 0.3


def test_logme_needs_two_classes():
    with pytest.raises(DataError, match="at least 2 classes"):
        logme(np.ones((5, 3)), np.zeros(5, int))


def test_ranking_is_deterministic_and_a_failing_candidate_leaves_the_others(tmp_path):
    data = colour_data(per_class=6, seed=0)
    weights = tiny_weights_file(tmp_path, seed=3)  # the same weights for both runs
    candidates = [
        Candidate("test_efficientnet", 32, ("final",)),
        Candidate("test_efficientnet", 32, ("stage-2", "final")),
        Candidate("test_efficientnet", 32, ("stage9",)),  # a layer it lacks
        Candidate("no_such_net", 32, ("final",)),  # a backbone that cannot be built
    ]
    first = rank(data, candidates, weights=weights, folds=3)
    again = rank(data, candidates, weights=weights, folds=3)
    assert [s.to_dict() | {"latency_ms": 0, "extraction_seconds": 0} for s in first.scores] == [
        s.to_dict() | {"latency_ms": 0, "extraction_seconds": 0} for s in again.scores
    ]
    assert [s.candidate for s in first.ranked] != [] and len(first.ranked) == 2
    bad_layer, bad_backbone = first.failed
    assert bad_layer.candidate.layers == ("stage9",) and "stage9" in bad_layer.error
    assert bad_backbone.candidate.backbone == "no_such_net" and "no_such_net" in bad_backbone.error
    assert first.best.predicted_accuracy == max(s.predicted_accuracy for s in first.ranked)
    assert first.best in first.pareto()
    assert "failed:" in first.format() and "test_efficientnet 32px final" in first.format()


def test_a_class_of_one_image_is_refused_before_any_extraction():
    data = colour_data(per_class=4, seed=0)
    keep = np.r_[np.flatnonzero(data.labels != 2), np.flatnonzero(data.labels == 2)[:1]]
    with pytest.raises(DataError, match="each class needs at least 2.*red has 1"):
        rank(data.subset(keep), [Candidate("test_efficientnet", 32, ("final",))], weights="none")


def test_one_class_is_refused_before_any_extraction():
    data = colour_data(per_class=4, seed=0)
    one = data.subset(np.flatnonzero(data.labels == 0))
    with pytest.raises(DataError, match="at least 2 classes"):
        rank(one, [Candidate("test_efficientnet", 32, ("final",))], weights="none")


def test_cli_rank_prints_the_table_and_writes_the_report(tmp_path, capsys):
    folder = colour_folder(tmp_path / "imgs", per_class=6)
    out = tmp_path / "ranked"
    code = main([
        "rank", str(folder), "--backbones", "test_efficientnet,test_resnet", "--weights", "none",
        "--image-sizes", "32", "--layers", "final", "--no-cache", "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "on 14 training images" in text and "the test part is not looked at" in text
    assert "best: test_" in text and "probe CV" in text
    assert "cross-validated probe" in text.split("best: ")[1]  # and why it won
    saved = json.loads((out / "ranking.json").read_text())
    assert len(saved["scores"]) == 2 and saved["pareto"]
    assert (out / "ranking.png").stat().st_size > 1000
    assert main(["rank", str(folder), "--backbones", "resnet_typo"]) == 2


def test_train_layers_auto_chooses_by_the_ranking_and_says_why(tmp_path, capsys):
    folder = colour_folder(tmp_path / "imgs", per_class=6)
    weights = tiny_weights_file(tmp_path, seed=5)
    run = tmp_path / "run"
    code = main([
        "train", str(folder), "--out", str(run), "--backbone", "test_efficientnet",
        "--weights", weights, "--image-size", "32", "--layers", "auto", "--no-cache",
    ])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "ranking 4 candidates on the 14 training images" in out
    chosen = out.split("chosen: test_efficientnet 32px ")[1].split(":")[0]
    saved = json.loads((run / "headstart.json").read_text())
    assert "+".join(saved["layers"]) == chosen
    assert out.index("chosen:") < out.index("trained in")
    assert "\\n" not in out  # the table's rows are lines, not escaped newlines


def test_auto_choice_is_refused_for_scratch(tmp_path, capsys):
    folder = colour_folder(tmp_path / "imgs", per_class=3)
    code = main(["train", str(folder), "--strategy", "scratch", "--backbone", "auto",
                 "--out", str(tmp_path / "run")])  # fmt: skip
    assert code == 2
    assert "trains from random weights" in capsys.readouterr().err


def test_cli_words_a_failed_candidate_as_its_flags(tmp_path, capsys):
    folder = colour_folder(tmp_path / "imgs", per_class=4)
    code = main(["rank", str(folder), "--backbones", "test_efficientnet", "--weights", "none",
                 "--image-sizes", "32", "--layers", "stage9", "--no-cache"])  # fmt: skip
    assert code == 2
    captured = capsys.readouterr()
    assert "failed: --layers must be" in captured.out  # not the library's extract_features
    assert "each one's reason is listed above" in captured.err


def test_the_order_weighs_probe_logme_and_input_size_as_documented():
    from headstart.rank.ranking import SCORE_WEIGHTS, CandidateScore, _score

    def scored(size, probe, evidence):
        return CandidateScore(Candidate("m", size, ("final",)), probe, logme=evidence)

    small_but_probed_higher = scored(112, 0.86, 0.50)
    large = scored(224, 0.85, 0.52)
    _score([small_but_probed_higher, large])
    # z-scores of two values are -1 and +1: probe +1 for the small one, LogME and size +1
    # for the large one, so the large one leads by 2 * (0.5 + 1.0 - 1.0).
    assert large.score - small_but_probed_higher.score == pytest.approx(
        2 * (SCORE_WEIGHTS["logme"] + SCORE_WEIGHTS["log_image_size"] - SCORE_WEIGHTS["probe"])
    )
    same_size = [scored(64, 0.9, 0.1), scored(64, 0.8, 0.1)]
    _score(same_size)  # no spread in size or LogME: only the probe counts
    assert same_size[0].score == pytest.approx(SCORE_WEIGHTS["probe"]) == -same_size[1].score
