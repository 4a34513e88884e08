"""What ``suggest`` returns: the images to label next, best first, each with the reason
it was chosen and the label the current model would give it; written as a CSV (for a
spreadsheet or a labelling tool) or as one self-contained HTML page of thumbnails
(images inlined as data: URIs, so it opens offline and can be mailed as one file)."""

from __future__ import annotations

import base64
import csv
import html
import io
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from headstart._internal.atomic import atomic_write

__all__ = ["CSV_COLUMNS", "Suggestion", "SuggestionList"]

CSV_COLUMNS = ("rank", "path", "why", "suggested_label", "probability", "score")
THUMBNAIL_PX = 96


@dataclass(frozen=True)
class Suggestion:
    """One pool image worth labelling next.

    ``path``: the image's file (or ``"<source>[k]"`` for an in-memory array);
    ``reason``: why, in words ("uncertain between shirt and T-shirt/top", "far from
    every labelled image", "few labels in class bag (3 labelled)"); ``suggested_label``:
    the current model's guess (None without one, in a cold start) with its
    ``probability`` (None when no model gave one); ``score``: what ranked it (higher
    first; comparable within one list only).
    """

    path: str
    reason: str
    suggested_label: str | None
    probability: float | None
    score: float


class SuggestionList(list):
    """Suggestions, best first (a plain ``list`` of `Suggestion`), plus what was asked and
    seen: ``mode`` ("uncertainty" or "cold start"), ``pool_size`` (distinct pool images
    considered), ``notes`` (pool images left out and why), and the pool's images by path
    for the thumbnails (``image_of``)."""

    def __init__(
        self,
        items: Iterable[Suggestion] = (),
        *,
        mode: str = "uncertainty",
        pool_size: int = 0,
        notes: Iterable[str] = (),
        image_of: Callable[[str], Image.Image] | None = None,
    ) -> None:
        super().__init__(items)
        self.mode = mode
        self.pool_size = pool_size
        self.notes = list(notes)
        self._image_of = image_of

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """The suggestions as CSV (``CSV_COLUMNS``), best first; returns the path."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for rank, s in enumerate(self, start=1):
            probability = "" if s.probability is None else f"{s.probability:.4f}"
            writer.writerow(
                [rank, s.path, s.reason, s.suggested_label or "", probability, f"{s.score:.6f}"]
            )
        target = Path(path)
        atomic_write(target, lambda handle: handle.write(buffer.getvalue().encode()))
        return target

    def to_html(self, path: str | os.PathLike[str], title: str = "Images to label next") -> Path:
        """One page of thumbnails with path, reason and suggested label; every image is
        inlined (data: URIs), nothing is fetched. Returns the path."""
        cards = [_card(rank, s, self._thumbnail(s.path)) for rank, s in enumerate(self, 1)]
        notes = "".join(f"<li>{html.escape(note)}</li>" for note in self.notes)
        page = _PAGE.format(
            title=html.escape(title),
            summary=html.escape(
                f"{len(self)} of {self.pool_size} pool images ({self.mode}), best first"
            ),
            notes=f"<ul>{notes}</ul>" if notes else "",
            cards="\n".join(cards),
        )
        target = Path(path)
        atomic_write(target, lambda handle: handle.write(page.encode()))
        return target

    def _thumbnail(self, path: str) -> str | None:
        """A PNG data: URI of the image at ``path``, at most THUMBNAIL_PX a side."""
        if self._image_of is None:
            return None
        try:
            image = self._image_of(path).convert("RGB")
        except Exception:  # a file gone since: its card says so, the page is still written
            return None
        image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        if max(image.size) < THUMBNAIL_PX // 2:  # 28 px digits: enlarge, sharp
            factor = THUMBNAIL_PX // max(image.size)
            image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
        out = io.BytesIO()
        image.save(out, format="PNG")
        return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def _card(rank: int, s: Suggestion, uri: str | None) -> str:
    picture = (
        f'<img src="{uri}" alt="{html.escape(s.path)}">'
        if uri
        else '<div class="missing">image not readable</div>'
    )
    label = "no guess" if s.suggested_label is None else html.escape(s.suggested_label)
    if s.probability is not None:
        label += f" ({s.probability:.0%})"
    return (
        f'<figure><span class="rank">{rank}</span>{picture}<figcaption>'
        f"<b>{label}</b><br>{html.escape(s.reason)}<br><code>{html.escape(s.path)}</code>"
        "</figcaption></figure>"
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; \
style-src 'unsafe-inline'">
<title>{title}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }}
main {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ width: 180px; margin: 0; padding: 8px; border: 1px solid #ddd; border-radius: 6px;
  position: relative; }}
figure img {{ width: 96px; height: 96px; object-fit: contain; image-rendering: pixelated;
  display: block; margin: 0 auto 6px; background: #f4f4f4; }}
.missing {{ width: 96px; height: 96px; margin: 0 auto 6px; background: #fee; font-size: 11px; }}
.rank {{ position: absolute; top: 4px; left: 6px; color: #888; }}
figcaption {{ font-size: 12px; overflow-wrap: anywhere; }}
</style></head>
<body><h1>{title}</h1><p>{summary}</p>{notes}
<main>
{cards}
</main></body></html>
"""
