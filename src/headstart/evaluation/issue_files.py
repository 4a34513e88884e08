"""The files ``headstart clean`` writes: the ranked ``label_issues.csv``, the
``near_duplicates.csv``, a self-contained ``label_issues.html`` gallery (every thumbnail
inside it as a data: URI, nothing fetched from anywhere), and the corrected CSV that
``--apply`` makes from a relabelling file.

A user's files are theirs: nothing here moves, deletes or rewrites an image or a label;
every file is written elsewhere, atomically.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from headstart._internal.atomic import atomic_write
from headstart.data.dataset import ImageDataset
from headstart.errors import ConfigError, DataError, literal
from headstart.evaluation.label_issues import OUTLIER, LabelIssues

__all__ = [
    "DROP",
    "GALLERY_FILE",
    "ISSUES_FILE",
    "NEAR_DUPLICATES_FILE",
    "apply_relabels",
    "refuse_inside",
    "thumbnail_png",
    "write_corrected_csv",
    "write_issue_files",
]

ISSUES_FILE = "label_issues.csv"
GALLERY_FILE = "label_issues.html"
NEAR_DUPLICATES_FILE = "near_duplicates.csv"
DROP = "(drop)"  # a relabelling file's label that leaves the image out of the corrected CSV
THUMBNAIL_SIDE = 96
GALLERY_LIMIT = 500  # issues shown in the page (the CSV has them all)
PAIRS_LIMIT = 200


def refuse_inside(out: str | Path, data: str | Path) -> None:
    """A ConfigError when ``out`` is ``data`` or lies inside it (or inside a CSV's
    folder): what headstart writes never lands among the user's images."""
    data = Path(data).resolve()
    folder = data if data.is_dir() else data.parent
    target = Path(out).resolve()
    if target == folder or folder in target.parents:
        raise ConfigError(
            f"{{out}} {literal(target)} lies inside the data folder {literal(folder)}; headstart "
            "writes nothing "
            "there.",
            hint="Give {out} a folder outside it.",
            names_in_message=True,
        )


def thumbnail_png(image: Image.Image, side: int = THUMBNAIL_SIDE) -> bytes:
    """The image shrunk to fit ``side`` x ``side`` (never enlarged), as PNG bytes: lossless,
    so the page shows exactly this thumbnail of the decoded image."""
    small = image.convert("RGB")
    small.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, format="PNG")
    return buffer.getvalue()


def _write_text(path: Path, text: str) -> Path:
    atomic_write(path, lambda handle: handle.write(text.encode()))
    return path


def _csv_text(header: list[str], rows: Iterable[list[object]]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_issue_files(
    found: LabelIssues, dataset: ImageDataset, folder: str | Path, *, title: str = ""
) -> dict[str, Path]:
    """Write label_issues.csv, near_duplicates.csv and label_issues.html into ``folder``
    (made if missing); returns their paths by kind ("csv", "duplicates", "html")."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    issues = _csv_text(
        ["rank", "path", "given_label", "suggested_label", "confidence", "self_confidence",
         "reason"],
        (
            [rank, i.path, i.given, i.suggested, f"{i.confidence:.4f}",
             f"{i.self_confidence:.4f}", i.reason]
            for rank, i in enumerate(found.issues, start=1)
        ),
    )  # fmt: skip
    pairs = _csv_text(
        ["first_path", "second_path", "first_label", "second_label", "similarity", "exact"],
        (
            [d.first_path, d.second_path, d.first_label, d.second_label,
             f"{d.similarity:.4f}", "yes" if d.exact else "no"]
            for d in found.near_duplicates
        ),
    )  # fmt: skip
    return {
        "csv": _write_text(folder / ISSUES_FILE, issues),
        "duplicates": _write_text(folder / NEAR_DUPLICATES_FILE, pairs),
        "html": _write_text(folder / GALLERY_FILE, gallery_html(found, dataset, title=title)),
    }


# ---------------------------------------------------------------- the gallery


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
    ".grid{display:flex;flex-wrap:wrap;gap:10px}"
    "figure{margin:0;width:150px;border:1px solid #ddd;padding:6px;font-size:12px}"
    "figure img{width:96px;height:96px;object-fit:contain;image-rendering:pixelated;"
    "display:block;margin:0 auto 4px;background:#f4f4f4}"
    ".path{word-break:break-all;color:#555}.pair{display:flex;gap:4px}"
    ".pair figure{width:120px}"
)


def _figure(dataset: ImageDataset, index: int, caption: str, cache: dict[int, str]) -> str:
    if index not in cache:
        cache[index] = base64.b64encode(thumbnail_png(dataset.image(index))).decode()
    path = html.escape(dataset.source(index))
    return (
        f'<figure><img alt="{path}" data-path="{path}" '
        f'src="data:image/png;base64,{cache[index]}">'
        f'<figcaption><div class="path">{path}</div>{caption}</figcaption></figure>'
    )


def gallery_html(found: LabelIssues, dataset: ImageDataset, *, title: str = "") -> str:
    """One HTML page, grouped by given -> suggested label (outliers apart), with the
    near-duplicate pairs below; every image inline, so the file is all there is."""
    thumbs: dict[int, str] = {}
    shown = found.issues[:GALLERY_LIMIT]
    groups: dict[tuple[str, str], list] = {}
    for issue in shown:
        key = ("outlier", "") if issue.kind == OUTLIER else (issue.given, issue.suggested)
        groups.setdefault(key, []).append(issue)
    body = [f"<h1>{html.escape(title or 'Label issues')}</h1>"]
    body.append(f"<p>{html.escape(found.summary())}.</p>")
    if len(found.issues) > len(shown):
        body.append(
            f"<p>The {len(shown)} worst are shown; {ISSUES_FILE} lists all {len(found.issues)}.</p>"
        )
    body.append(
        "<p>Probabilities come from a linear probe that never saw the image (held out "
        "over folds); an image is flagged when confident learning counts it among the "
        "images its label's class has too many of.</p>"
    )
    for (given, suggested), members in sorted(groups.items(), key=lambda g: -len(g[1])):
        heading = (
            "Outliers far from every class"
            if given == "outlier"
            else f"labelled {given} &rarr; looks like {suggested}"
        )
        if given != "outlier":
            heading = (
                html.escape(f"labelled {given}")
                + " &rarr; "
                + html.escape(f"looks like {suggested}")
            )
        cards = [
            _figure(
                dataset, i.index,
                html.escape(f"{i.reason}; {i.suggested} {i.confidence:.0%}, "
                            f"{i.given} {i.self_confidence:.0%}"),
                thumbs,
            )
            for i in members
        ]  # fmt: skip
        body.append(f"<h2>{heading} ({len(members)})</h2><div class='grid'>{''.join(cards)}</div>")
    body += _duplicate_section(found, dataset, thumbs)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title or 'Label issues')}</title><style>{_STYLE}</style>"
        f"</head><body>{''.join(body)}</body></html>\n"
    )


def _duplicate_section(
    found: LabelIssues, dataset: ImageDataset, thumbs: dict[int, str]
) -> list[str]:
    pairs = found.near_duplicates[:PAIRS_LIMIT]
    if not pairs:
        return ["<h2>Near-duplicates</h2><p>None above the similarity threshold.</p>"]
    out = [f"<h2>Near-duplicates ({len(found.near_duplicates)} pair(s))</h2><div class='grid'>"]
    for d in pairs:
        what = "identical files" if d.exact else f"cosine {d.similarity:.3f}"
        labels = (
            d.first_label
            if d.first_label == d.second_label
            else (f"{d.first_label} / {d.second_label}")
        )
        caption = html.escape(f"{what}; {labels}")
        out.append(
            "<div class='pair'>"
            + _figure(dataset, d.first, caption, thumbs)
            + _figure(dataset, d.second, caption, thumbs)
            + "</div>"
        )
    out.append("</div>")
    return out


# ---------------------------------------------------------------- --apply


def apply_relabels(
    dataset: ImageDataset, relabel_file: str | Path
) -> tuple[list[tuple[str, str]], int, int]:
    """Every image of ``dataset`` as (absolute path, label), with the labels that
    ``relabel_file`` (a CSV with ``path`` and ``label`` columns, or the ``suggested_label``
    column of label_issues.csv) gives; a label of ``(drop)`` leaves the image out.
    Returns (rows, relabelled, dropped). Unknown paths and classes are errors that name
    the file and line."""
    relabel_file = Path(relabel_file)
    try:
        text = relabel_file.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise DataError(f"{relabel_file}: cannot read the relabelling file ({error})") from None
    files = [dataset.source(i) for i in range(len(dataset))]
    if not all(Path(source).is_file() for source in files):
        raise DataError(
            f"{dataset.report.source}: its images are not all files (IDX or arrays), so a "
            "CSV of paths could not be read back; relabel them in their own format"
        )
    by_path = {}
    for i in range(len(dataset)):
        by_path[dataset.source(i)] = i
        by_path.setdefault(str(Path(dataset.source(i)).resolve()), i)
    changes = _read_relabels(relabel_file, text, by_path, set(dataset.classes))
    rows, relabelled, dropped = [], 0, 0
    for i in range(len(dataset)):
        label = changes.get(i, dataset.classes[dataset.labels[i]])
        if label == DROP:
            dropped += 1
            continue
        relabelled += label != dataset.classes[dataset.labels[i]]
        rows.append((str(Path(dataset.source(i)).resolve()), label))
    return rows, relabelled, dropped


def _read_relabels(
    relabel_file: Path, text: str, by_path: dict[str, int], classes: set[str]
) -> dict[int, str]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [cell.strip().lower() for cell in next(reader, [])]
    column = "label" if "label" in header else "suggested_label"
    if "path" not in header or column not in header:
        raise DataError(
            f"{relabel_file}: line 1: expected a header with 'path' and 'label' columns "
            f"(or label_issues.csv's 'suggested_label'); got {header}"
        )
    at_path, at_label = header.index("path"), header.index(column)
    changes: dict[int, str] = {}
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        line = reader.line_num
        path = row[at_path].strip() if at_path < len(row) else ""
        label = row[at_label].strip() if at_label < len(row) else ""
        index = by_path.get(path, by_path.get(str(Path(path).resolve())) if path else None)
        if index is None:
            raise DataError(f"{relabel_file}: line {line}: {path!r} is not an image of the data")
        if label != DROP and label not in classes:
            raise DataError(
                f"{relabel_file}: line {line}: label {label!r} is not a class of the data; "
                f"accepted: {', '.join(sorted(classes))}, or {DROP} to leave the image out"
            )
        changes[index] = label
    return changes


def write_corrected_csv(rows: list[tuple[str, str]], path: str | Path) -> Path:
    """A ``path,label`` CSV that ``load_csv`` (and every command) reads as the data."""
    return _write_text(Path(path), _csv_text(["path", "label"], ([p, label] for p, label in rows)))
