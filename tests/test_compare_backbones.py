"""compare --backbones and the report's Ranking section: runs for every backbone on
the same axes, older results still resumed, the ranking scored on the largest
training draw only, and predicted accuracy set beside measured."""

from __future__ import annotations

import json

from fixtures_images import colour_data, colour_folder
from PIL import Image

from headstart.cli import main
from headstart.estimator.image_classifier import ImageClassifier
from headstart.evaluation import report as report_module
from headstart.evaluation.comparison import CompareCallback, CompareSettings, compare
from headstart.evaluation.report import build_report
from headstart.rank import ranking as ranking_module
from headstart.rank.ranking import LAYER_SETS

BACKBONES = ("test_efficientnet", "test_resnet")


def _settings(**changes) -> CompareSettings:
    base = dict(
        strategies=("feature-extraction",),
        labels_per_class=(4,),
        backbone=BACKBONES[0],
        weights="none",
        image_size=32,
    )
    return CompareSettings(**{**base, **changes})


class Recorder(CompareCallback):
    def __init__(self):
        self.ends = []

    def on_run_end(self, record, reused):
        self.ends.append((record["id"], reused))


def test_two_backbones_run_side_by_side_on_the_same_curves(tmp_path, monkeypatch):
    train, test = colour_data(6, 0), colour_data(2, 1)
    results = compare(train, test, tmp_path, _settings(backbones=BACKBONES))
    assert [(r["id"], r["backbone"]) for r in results["runs"]] == [
        (f"{b}:feature-extraction/k=4/seed=0", b) for b in BACKBONES
    ]
    assert results["settings"]["backbones"] == list(BACKBONES)
    figures = []
    new_figure = report_module.new_figure

    def keep(*size):
        figure, axes = new_figure(*size)
        figures.append(axes)
        return figure, axes

    monkeypatch.setattr(report_module, "new_figure", keep)
    build_report(tmp_path)
    labels_axes, time_axes = figures[:2]
    for axes in (labels_axes, time_axes):
        legend = [t.get_text() for t in axes.get_legend().get_texts()]
        assert legend == [f"feature-extraction ({b})" for b in BACKBONES]
    markdown = (tmp_path / "report.md").read_text()
    assert "| labels/class | strategy | backbone | balanced acc. | accuracy" in markdown
    for b in BACKBONES:
        assert f"| 4 | feature-extraction | {b} | " in markdown


def test_one_backbone_keeps_the_table_without_a_backbone_column(tmp_path):
    compare(colour_data(6, 0), colour_data(2, 1), tmp_path, _settings())
    build_report(tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert "| labels/class | strategy | balanced acc. | accuracy" in markdown
    assert "| 4 | feature-extraction | " in markdown and "## Ranking" not in markdown


def test_results_without_a_backbone_field_still_resume(tmp_path, monkeypatch):
    """results.json from before --backbones: its runs are its settings' backbone's."""
    train, test = colour_data(6, 0), colour_data(2, 1)
    compare(train, test, tmp_path, _settings())
    path = tmp_path / "results.json"
    old = json.loads(path.read_text())
    for run in old["runs"]:
        del run["backbone"]
    del old["settings"]["backbones"]
    path.write_text(json.dumps(old))

    recorder = Recorder()
    compare(train, test, tmp_path, _settings(backbones=BACKBONES), callback=recorder)
    assert recorder.ends == [
        (f"{BACKBONES[0]}:feature-extraction/k=4/seed=0", True),
        (f"{BACKBONES[1]}:feature-extraction/k=4/seed=0", False),
    ]

    def no_training(self, *args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(ImageClassifier, "fit", no_training)
    recorder = Recorder()
    compare(train, test, tmp_path, _settings(), callback=recorder)  # back to one backbone
    assert recorder.ends == [("feature-extraction/k=4/seed=0", True)]


def test_backbone_with_backbones_is_refused(tmp_path, capsys):
    folder = colour_folder(tmp_path / "imgs", per_class=4)
    code = main([
        "compare", str(folder), "--backbone", "test_resnet", "--backbones", ",".join(BACKBONES),
        "--out", str(tmp_path / "out"),
    ])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "--backbone and --backbones" in err and "Give one" in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_compare_backbones_ranks_the_largest_training_draw_into_the_report(
    tmp_path, monkeypatch, capsys
):
    folder = colour_folder(tmp_path / "imgs", per_class=10)
    out = tmp_path / "out"
    seen = []
    rank = ranking_module.rank

    def spy(dataset, *args, **kwargs):
        seen.append(dataset)
        return rank(dataset, *args, **kwargs)

    monkeypatch.setattr(ranking_module, "rank", spy)
    code = main([
        "compare", str(folder), "--backbones", ",".join(BACKBONES), "--weights", "none",
        "--strategies", "feature-extraction", "--labels-per-class", "2,4", "--image-size", "32",
        "--test-size", "0.3", "--no-cache", "--out", str(out),
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    ranking = json.loads((out / "ranking.json").read_text())
    # the ranking saw the largest draw of the first seed, the very training images of
    # the k=4 runs, and no test image
    largest = [r for r in results["runs"] if r["labels_per_class"] == 4]
    assert {r["train_images"] for r in largest} == {12} == {ranking["images"]}
    (draw,) = seen
    assert len(draw) == 12 and ranking["draw"] == {"labels_per_class": 4, "seed": 0}
    from headstart.data.layout import load_images

    _, test = load_images(folder, test_size=0.3, seed=0)
    assert not set(draw.content_hashes()) & set(test.content_hashes())

    markdown = (out / "report.md").read_text()
    section = markdown[markdown.index("## Ranking") :]
    names = [s["candidate"]["name"] for s in ranking["scores"]]
    assert len(names) == 2 * len(LAYER_SETS)  # 2 backbones x 32 px x every layer set
    for name in names:
        assert f"| {name} | " in section
    assert f"for {ranking['why_best']}" in section
    # feature extraction's own layers at 32 px, on the ranked draw: trained, so measured
    for run in largest:
        name = f"{run['backbone']} 32px stage-3+stage-2+stage-1+final"
        row = next(line for line in section.splitlines() if f"| {name} | " in line)
        assert f"| {100 * run['accuracy']:.1f} % |" in row
    assert "![Candidates: predicted accuracy against latency](ranking.png)" in section
    with Image.open(out / "ranking.png") as image:
        image.verify()
    assert "<h2>Ranking</h2>" in (out / "report.html").read_text()


def test_no_rank_leaves_the_ranking_out(tmp_path):
    folder = colour_folder(tmp_path / "imgs", per_class=4)
    out = tmp_path / "out"
    code = main([
        "compare", str(folder), "--backbones", ",".join(BACKBONES), "--weights", "none",
        "--strategies", "feature-extraction", "--labels-per-class", "2", "--image-size", "32",
        "--no-cache", "--out", str(out), "--no-rank",
    ])  # fmt: skip
    assert code == 0
    assert not (out / "ranking.json").exists()
    assert "## Ranking" not in (out / "report.md").read_text()
