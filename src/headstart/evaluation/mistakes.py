"""What the model gets wrong: its top losses (the images it is most confidently wrong
about), the class pairs it confuses most, and a gallery of both as one HTML page.

The page is self-contained: every image is a ``data:`` URI and a Content-Security-Policy
forbids anything else, so it opens offline, from a mail attachment or an archive, and
never fetches a thing. With ``explain=True`` each image also gets its Grad-CAM heatmap
for the class the model wrongly gave (``ImageClassifier.explain``): where it looked.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from headstart._internal.atomic import atomic_write
from headstart._internal.validation import positive_int
from headstart.data.dataset import ImageDataset
from headstart.estimator.results import labels_in_model_order
from headstart.evaluation.heatmaps import check_explainable

__all__ = [
    "ConfusedPair",
    "Mistake",
    "Mistakes",
    "confused_pairs",
    "find_mistakes",
    "gallery_html",
    "top_losses",
    "write_gallery",
]

THUMBNAIL_SIDE = 160  # pixels, the longer edge of every image on the page


@dataclass(frozen=True)
class Mistake:
    """One image the model got wrong."""

    index: int  # in the evaluated dataset
    source: str  # its file (or "array[i]")
    given: str  # the label it has
    predicted: str  # the model's top class
    probability: float  # the model's probability of ``predicted``
    given_probability: float  # ... and of ``given``
    loss: float  # cross-entropy: -ln(given_probability)


@dataclass(frozen=True)
class ConfusedPair:
    """Images labelled ``given`` that the model called ``predicted``."""

    given: str
    predicted: str
    count: int
    examples: tuple[int, ...]  # dataset indices, highest loss first


@dataclass
class Mistakes:
    """The top losses and most-confused pairs of one evaluation."""

    total: int  # images evaluated
    wrong: int  # of them, how many the model got wrong
    top_losses: list[Mistake]
    pairs: list[ConfusedPair]
    by_index: dict[int, Mistake]  # every wrong image, for the pairs' examples
    explanations: dict[int, Any] = field(default_factory=dict)  # index -> Explanation

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "wrong": self.wrong,
            "top_losses": [asdict(m) for m in self.top_losses],
            "confused_pairs": [
                {**asdict(p), "examples": [self.by_index[i].source for i in p.examples]}
                for p in self.pairs
            ],
        }


def _losses(proba: np.ndarray, truth: np.ndarray) -> np.ndarray:
    given = proba[np.arange(len(truth)), truth]
    return -np.log(np.clip(given, 1e-12, None))


def _wrong(
    proba: np.ndarray, truth: np.ndarray, classes: Sequence[str], sources: Sequence[str]
) -> list[Mistake]:
    """Every wrong image, highest loss first (ties: dataset order)."""
    proba = np.asarray(proba, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.int64)
    predicted = proba.argmax(1)
    losses = _losses(proba, truth)
    wrong = np.flatnonzero(predicted != truth)
    order = wrong[np.lexsort((wrong, -losses[wrong]))]
    return [
        Mistake(
            index=int(i), source=str(sources[i]), given=classes[truth[i]],
            predicted=classes[predicted[i]], probability=float(proba[i, predicted[i]]),
            given_probability=float(proba[i, truth[i]]), loss=float(losses[i]),
        )
        for i in order
    ]  # fmt: skip


def top_losses(
    proba: np.ndarray,
    truth: np.ndarray,
    classes: Sequence[str],
    sources: Sequence[str],
    top: int = 16,
) -> list[Mistake]:
    """The ``top`` wrong images with the highest loss: the model's most confident errors.
    ``proba``: (N, K) probabilities; ``truth``: (N,) class indices into ``classes``."""
    positive_int("top_losses", "top", top)
    return _wrong(proba, truth, classes, sources)[:top]


def confused_pairs(
    proba: np.ndarray, truth: np.ndarray, classes: Sequence[str], top: int = 5, examples: int = 4
) -> list[ConfusedPair]:
    """The ``top`` (given, predicted) pairs of classes the model mixes up most often, each
    with up to ``examples`` images (its highest losses first); ties: by class order."""
    positive_int("confused_pairs", "top", top)
    positive_int("confused_pairs", "examples", examples)
    sources = [str(i) for i in range(len(truth))]
    found: dict[tuple[str, str], list[int]] = {}
    for mistake in _wrong(proba, truth, classes, sources):
        found.setdefault((mistake.given, mistake.predicted), []).append(mistake.index)
    rank = {name: i for i, name in enumerate(classes)}
    ordered = sorted(found.items(), key=lambda kv: (-len(kv[1]), rank[kv[0][0]], rank[kv[0][1]]))
    return [
        ConfusedPair(given, predicted, len(indices), tuple(indices[:examples]))
        for (given, predicted), indices in ordered[:top]
    ]


def find_mistakes(
    clf: Any,
    dataset: ImageDataset,
    *,
    top: int = 16,
    pairs: int = 5,
    examples: int = 4,
    explain: bool = False,
    batch_size: int = 64,
    **where: Any,
) -> Mistakes:
    """The top losses and most-confused pairs of ``clf`` (any fitted classifier, ONNX's
    too) on a labelled ``dataset``; ``explain``: a Grad-CAM heatmap of each of their
    images for the class the model gave (PyTorch models only). ``where``: what
    ``predict_proba`` takes besides ``batch_size`` (``device``)."""
    positive_int("find_mistakes", "top", top)
    if explain:
        check_explainable(clf)
    truth = labels_in_model_order(dataset, clf.classes_)
    proba = np.asarray(clf.predict_proba(dataset, batch_size=batch_size, **where))
    sources = [dataset.source(i) for i in range(len(dataset))]
    wrong = _wrong(proba, truth, clf.classes_, sources)
    found = Mistakes(
        total=len(dataset),
        wrong=len(wrong),
        top_losses=wrong[:top],
        pairs=confused_pairs(proba, truth, clf.classes_, pairs, examples),
        by_index={m.index: m for m in wrong},
    )
    if explain:
        shown = sorted({m.index for m in found.top_losses} | _examples(found))
        subset = dataset.subset(shown)
        wanted = [found.by_index[i].predicted for i in shown]
        heatmaps = clf.explain(subset, classes=wanted, **where)
        found.explanations = dict(zip(shown, heatmaps, strict=True))
    return found


def _examples(found: Mistakes) -> set[int]:
    return {i for pair in found.pairs for i in pair.examples}


def _data_uri(image: Image.Image) -> str:
    image = image.convert("RGB")
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _card(found: Mistakes, dataset: ImageDataset, index: int, rank: int | None) -> str:
    m = found.by_index[index]
    text = html.escape
    images = f'<img class="image" alt="{text(m.source)}" src="{_data_uri(dataset.image(index))}">'
    explained = found.explanations.get(index)
    if explained is not None:
        images += (
            f'<img class="heatmap" alt="where the model looked for {text(m.predicted)}" '
            f'src="{_data_uri(explained.overlay())}">'
        )
    head = f"#{rank} " if rank is not None else ""
    return (
        f'<figure class="mistake" data-index="{index}" data-loss="{m.loss:.6g}" '
        f'data-source="{text(m.source)}">{images}<figcaption>{head}'
        f"<b>given</b> {text(m.given)} ({m.given_probability:.1%})<br>"
        f"<b>predicted</b> {text(m.predicted)} ({m.probability:.1%})<br>"
        f'loss {m.loss:.2f}<br><span class="source">{text(m.source)}</span>'
        "</figcaption></figure>"
    )


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; padding: 8px; border: 1px solid #ddd; border-radius: 6px; width: 288px; }
figure img { width: 128px; height: 128px; object-fit: contain; background: #111;
  margin: 0 4px 4px 0; vertical-align: top; }
.source { color: #666; font-size: 12px; word-break: break-all; }
h2 { margin-top: 1.5em; }
"""


def gallery_html(found: Mistakes, dataset: ImageDataset, title: str = "headstart") -> str:
    """The page: a summary line, the top losses in order, then each confused pair."""
    text = html.escape
    cards = "".join(_card(found, dataset, m.index, r) for r, m in enumerate(found.top_losses, 1))
    pairs = []
    for pair in found.pairs:
        examples = "".join(_card(found, dataset, i, None) for i in pair.examples)
        pairs.append(
            f'<section class="pair" data-given="{text(pair.given)}" '
            f'data-predicted="{text(pair.predicted)}" data-count="{pair.count}">'
            f"<h3>{text(pair.given)} taken for {text(pair.predicted)}: {pair.count} "
            f'image(s)</h3><div class="grid">{examples}</div></section>'
        )
    summary = f"{found.wrong} of {found.total} images wrong."
    if found.explanations:
        summary += " Beside each image: where the model looked for the class it gave (Grad-CAM)."
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
        f"<title>{text(title)}: top losses</title><style>{_STYLE}</style></head><body>"
        f"<h1>{text(title)}: what the model gets wrong</h1><p>{summary}</p>"
        f'<h2>Top losses</h2><div class="grid" id="top-losses">{cards}</div>'
        f'<h2>Most confused pairs</h2><div id="confused-pairs">{"".join(pairs)}</div>'
        "</body></html>"
    )


def write_gallery(
    found: Mistakes, dataset: ImageDataset, folder: Path, title: str = "headstart"
) -> tuple[Path, Path]:
    """``gallery.html`` and ``mistakes.json`` (the same, as data) in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    page = gallery_html(found, dataset, title).encode()
    data = json.dumps(found.to_dict(), indent=2).encode()
    atomic_write(folder / "gallery.html", lambda handle: handle.write(page))
    atomic_write(folder / "mistakes.json", lambda handle: handle.write(data))
    return folder / "gallery.html", folder / "mistakes.json"
