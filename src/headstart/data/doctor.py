"""The data doctor: what is wrong with a dataset, found before any training.

Loading already decodes every file once; the doctor reads what that pass
recorded (the load report, each item's sha256 and stored size) and turns it
into findings a person can act on:

- ``unreadable``: files that would be skipped, each with the reason;
- ``leak``: byte-identical images in both train and test, which inflate test
  accuracy without anyone noticing;
- ``conflict``: the same bytes under two different labels (a labelling error,
  or a class boundary the model cannot learn);
- ``duplicate``: repeated files inside one split and class (extra weight on
  those images);
- ``imbalance``: largest class at least ``imbalance_ratio`` times the smallest;
- ``tiny``: images smaller than ``tiny_side`` pixels on a side, which are
  upscaled to the backbone's input and carry little detail;
- ``converted``, ``rotated``, ``downscaled``, ``ignored``: what loading did
  on its own, listed so that nothing about the data is decided silently.

:func:`diagnose` is pure: datasets in, a :class:`Diagnosis` out. Nothing is
decoded again. :func:`check_data` loads a path the way ``load_images`` does
and diagnoses it; :func:`write_report` writes ``check.txt`` and ``check.json``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headstart._internal.atomic import atomic_write
from headstart._internal.validation import invalid
from headstart.data.dataset import ImageDataset, LoadReport
from headstart.data.decode import DecodeOptions
from headstart.data.layout import is_presplit, load_images, open_dataset
from headstart.errors import spell

__all__ = [
    "Diagnosis",
    "Finding",
    "check_data",
    "diagnose",
    "write_report",
]

SEVERITIES = ("error", "warning", "info")
# Each finding keeps at most this many detail lines (its count stays exact), so a
# 70,000-image dataset where every image is tiny does not make a 5 MB report.
MAX_DETAILS = 1000
_TEXT_DETAILS = 20  # detail lines per finding in the text report


@dataclass(frozen=True)
class Finding:
    """One kind of problem (or one thing loading did), with the files it concerns."""

    kind: str  # "unreadable", "leak", "conflict", "duplicate", "imbalance", "tiny", ...
    severity: str  # "error": files would be skipped; "warning": act on it; "info": FYI
    count: int  # how many images (or groups, as the summary says) it concerns
    summary: str  # one line, no trailing period
    advice: str = ""  # what to do about it, if anything; parameters written as {name}
    details: tuple[str, ...] = ()  # one line per file or group, at most MAX_DETAILS

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "count": self.count,
            "summary": self.summary,
            "advice": spell(self.advice),
            "details": list(self.details),
            "details_truncated": self.count > len(self.details) and bool(self.details),
        }


@dataclass(frozen=True)
class Diagnosis:
    """Everything the doctor found about one dataset (one split, or train and test)."""

    source: str  # what was checked, as the user named it
    images: dict[str, int]  # split name ("data", or "train" and "test") -> images loaded
    class_counts: dict[str, dict[str, int]]  # split -> class -> images
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    def find(self, kind: str) -> Finding | None:
        """The finding of one kind, or None when the doctor found nothing of it."""
        return next((f for f in self.findings if f.kind == kind), None)

    @property
    def skipped(self) -> int:
        """Files that loading skips (unreadable, truncated, not images, too large)."""
        found = self.find("unreadable")
        return found.count if found else 0

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity in ("error", "warning")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "images": dict(self.images),
            "class_counts": {split: dict(c) for split, c in self.class_counts.items()},
            "skipped": self.skipped,
            "findings": [finding.to_dict() for finding in self.findings],
        }

    def to_text(
        self, max_details: int = _TEXT_DETAILS, words: Mapping[str, str] | None = None
    ) -> str:
        """The human report: what was checked, then every finding, worst first; ``words``
        spell the parameters the advice names (the CLI passes its flags)."""
        lines = [f"headstart check: {self.source}"]
        for split, total in self.images.items():
            counts = self.class_counts[split]
            per_class = ", ".join(f"{name} {count}" for name, count in counts.items())
            lines.append(f"  {split}: {total} images in {len(counts)} classes ({per_class})")
        if not self.warnings:
            lines.append("No problems found.")
        for finding in self.findings:
            lines.append(f"[{finding.severity}] {finding.summary}.")
            if finding.advice:
                lines.append(f"  -> {spell(finding.advice, words)}")
            shown = finding.details[:max_details]
            lines += [f"  {detail}" for detail in shown]
            hidden = finding.count - len(shown) if finding.details else 0
            if hidden > 0:
                lines.append(f"  ... and {hidden} more (see check.json)")
        return "\n".join(lines)

    def brief(self, data: str, *, skip: tuple[str, ...] = (), limit: int = 3) -> list[str]:
        """At most ``limit`` warning lines and a pointer to the full check, for `train`.

        ``skip`` names kinds the caller already printed (the CLI prints skipped files
        and imbalance from the load report), so nothing is said twice.
        """
        shown = [f for f in self.warnings if f.kind not in skip]
        if not shown:
            return []
        lines = [f"check: {finding.summary}" for finding in shown[:limit]]
        if len(shown) > limit:
            lines[-1] += f" (and {len(shown) - limit} more finding(s))"
        lines[-1] += f" (run `headstart check {data}` for details)"
        return lines


# ------------------------------------------------------------------- diagnosing


def _check_number(name: str, value: object, low: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= low:
        raise invalid("diagnose", name, f"a number >= {low}", value)


def diagnose(
    train: ImageDataset,
    test: ImageDataset | None = None,
    *,
    source: str | None = None,
    tiny_side: int = 32,
    imbalance_ratio: float = 3.0,
) -> Diagnosis:
    """Findings about ``train`` (and its ``test`` split, when given), worst first.

    With one dataset the doctor looks at the whole set; with two it also checks
    leakage across them. Reads only what loading recorded: never decodes again.
    """
    if not isinstance(train, ImageDataset):
        raise invalid("diagnose", "train", "an ImageDataset", type(train).__name__)
    if test is not None and not isinstance(test, ImageDataset):
        raise invalid("diagnose", "test", "an ImageDataset or None", type(test).__name__)
    _check_number("tiny_side", tiny_side, 1)
    _check_number("imbalance_ratio", imbalance_ratio, 1)
    splits = {"data": train} if test is None else {"train": train, "test": test}
    reports = _distinct_reports([ds.report for ds in splits.values()])
    findings = [
        _unreadable(reports),
        *_duplicates(splits),
        _imbalance(train, imbalance_ratio, "data" if test is None else "train"),
        _tiny(splits, tiny_side),
        *_what_loading_did(reports),
    ]
    order = {severity: rank for rank, severity in enumerate(SEVERITIES)}
    kept = sorted((f for f in findings if f is not None), key=lambda f: order[f.severity])
    return Diagnosis(
        source=source if source is not None else train.report.source,
        images={name: len(ds) for name, ds in splits.items()},
        class_counts={name: ds.class_counts() for name, ds in splits.items()},
        findings=tuple(kept),
    )


def _distinct_reports(reports: list[LoadReport]) -> list[LoadReport]:
    """A set split in two carries (copies of) one report: read it once."""
    seen: dict[str, LoadReport] = {}
    for report in reports:
        seen.setdefault(report.source, report)
    return list(seen.values())


def _unreadable(reports: list[LoadReport]) -> Finding | None:
    skipped = {s.path: s.reason for report in reports for s in report.skipped}
    if not skipped:
        return None
    return Finding(
        kind="unreadable",
        severity="error",
        count=len(skipped),
        summary=f"{len(skipped)} file(s) cannot be decoded and would be skipped",
        advice="fix or remove them; {strict} refuses to train while any remain",
        details=tuple(f"{path}: {reason}" for path, reason in list(skipped.items())[:MAX_DETAILS]),
    )


@dataclass(frozen=True)
class _Item:
    split: str
    source: str
    label: str


def _duplicates(splits: dict[str, ImageDataset]) -> list[Finding]:
    """Leaks across splits, one image under two labels, and plain repeats: by sha256."""
    groups: dict[str, list[_Item]] = defaultdict(list)
    for name, ds in splits.items():
        for index, (digest, label) in enumerate(zip(ds.content_hashes(), ds.labels, strict=True)):
            if digest:
                groups[digest].append(_Item(name, ds.source(index), ds.classes[label]))
    leaks: list[str] = []
    leaked = 0
    conflicts: list[str] = []
    repeats: list[str] = []
    repeated = 0
    for items in groups.values():
        if len(items) < 2:
            continue
        labels = sorted({item.label for item in items})
        in_train = [item for item in items if item.split == "train"]
        in_test = [item for item in items if item.split == "test"]
        if len(labels) > 1:
            conflicts.append(" = ".join(f"{item.source} ({item.label})" for item in items))
        if in_train and in_test:
            leaked += len(in_test)
            leaks += [f"{item.source} = {in_train[0].source}" for item in in_test]
        elif len(labels) == 1:
            repeated += len(items) - 1
            repeats.append(" = ".join(item.source for item in items))
    findings = []
    if leaked:
        findings.append(
            Finding(
                kind="leak",
                severity="warning",
                count=leaked,
                summary=f"{leaked} exact duplicate(s) across train and test",
                advice="remove them from one side: the test score counts images the model "
                "was trained on",
                details=tuple(leaks[:MAX_DETAILS]),
            )
        )
    if conflicts:
        findings.append(
            Finding(
                kind="conflict",
                severity="warning",
                count=len(conflicts),
                summary=f"{len(conflicts)} image(s) appear under two or more different labels",
                advice="decide on one label for each and delete the other copies",
                details=tuple(conflicts[:MAX_DETAILS]),
            )
        )
    if repeated:
        findings.append(
            Finding(
                kind="duplicate",
                severity="warning",
                count=repeated,
                summary=f"{repeated} duplicate file(s) with the same label "
                f"({len(repeats)} image(s) stored more than once)",
                advice="each copy counts again in training and in the scores; keep one",
                details=tuple(repeats[:MAX_DETAILS]),
            )
        )
    return findings


def _imbalance(ds: ImageDataset, ratio: float, split: str) -> Finding | None:
    counts = ds.class_counts()
    present = [count for count in counts.values() if count > 0]
    if len(present) < 2:
        return None
    smallest, largest = min(present), max(present)
    if largest / smallest < ratio:
        return None
    ordered = sorted(counts.items(), key=lambda item: -item[1])
    return Finding(
        kind="imbalance",
        severity="warning",
        count=len(counts),
        summary=f"classes are imbalanced in {split}: {smallest} to {largest} images per class "
        f"(ratio {largest / smallest:.1f}, warned from {ratio:g})",
        advice="train with {balanced_class_weights}, and judge by balanced accuracy",
        details=tuple(f"{name}: {count}" for name, count in ordered),
    )


def _tiny(splits: dict[str, ImageDataset], side: int) -> Finding | None:
    tiny: list[str] = []
    known = 0
    shapes: Counter[tuple[int, int]] = Counter()
    for ds in splits.values():
        for index, size in enumerate(ds.original_sizes()):
            if size is None:
                continue
            known += 1
            if min(size) < side:
                shapes[size] += 1
                tiny.append(f"{ds.source(index)}: {size[0]}x{size[1]}")
    if not tiny:
        return None
    if len(tiny) == known:  # a property of the dataset (e.g. MNIST), not stray thumbnails
        sizes = ", ".join(f"{w}x{h}" for (w, h), _ in shapes.most_common(3))
        return Finding(
            kind="tiny",
            severity="info",
            count=len(tiny),
            summary=f"all {len(tiny)} images are smaller than {side} px on a side ({sizes}); "
            "they are upscaled to the backbone's input size",
        )
    return Finding(
        kind="tiny",
        severity="warning",
        count=len(tiny),
        summary=f"{len(tiny)} of {known} images are smaller than {side} px on a side",
        advice="thumbnails or icons carry little detail once upscaled; check they belong",
        details=tuple(tiny[:MAX_DETAILS]),
    )


def _info(kind: str, summary: str, details: list[str]) -> Finding:
    return Finding(
        kind=kind,
        severity="info",
        count=len(details),
        summary=summary,
        details=tuple(details[:MAX_DETAILS]),
    )


def _what_loading_did(reports: list[LoadReport]) -> list[Finding]:
    converted = {path: how for report in reports for path, how in report.converted.items()}
    rotated = sorted({path for report in reports for path in report.rotated})
    downscaled = sorted({path for report in reports for path in report.downscaled})
    ignored = sorted({path for report in reports for path in report.ignored})
    findings = []
    if converted:
        kinds = Counter(converted.values())
        described = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
        findings.append(
            _info(
                "converted",
                f"{len(converted)} image(s) converted to RGB: {described}",
                [f"{p}: {how}" for p, how in converted.items()],
            )
        )
    if rotated:
        summary = (
            f"EXIF orientation applied to {len(rotated)} image(s) "
            "(identically in training and prediction)"
        )
        findings.append(_info("rotated", summary, rotated))
    if downscaled:
        summary = f"{len(downscaled)} large image(s) downscaled while decoding"
        findings.append(_info("downscaled", summary, downscaled))
    if ignored:
        findings.append(
            _info("ignored", f"{len(ignored)} non-image or hidden entries ignored", ignored)
        )
    return findings


# ---------------------------------------------------------------- paths and files


def check_data(
    path: str | Path,
    *,
    options: DecodeOptions | None = None,
    tiny_side: int = 32,
    imbalance_ratio: float = 3.0,
) -> Diagnosis:
    """Load ``path`` as ``load_images`` would and diagnose it.

    A folder with ``train/`` and ``test/`` (or MNIST-style IDX files) is checked as
    two splits, including leakage across them; a folder of class folders or a CSV
    is checked as one set. Every bad file is listed rather than stopping at a share
    of them (``max_bad_fraction=1``); only a class with no readable image at all is
    an error, because such a set cannot be loaded.
    """
    folder = Path(path)
    options = options if options is not None else DecodeOptions()
    presplit = is_presplit(folder)
    thresholds = {"tiny_side": tiny_side, "imbalance_ratio": imbalance_ratio}
    if presplit:
        train, test = load_images(folder, max_bad_fraction=1.0, options=options)
        return diagnose(train, test, source=str(path), **thresholds)
    dataset = open_dataset(folder, max_bad_fraction=1.0, options=options)
    return diagnose(dataset, source=str(path), **thresholds)


def write_report(
    diagnosis: Diagnosis, folder: str | Path, words: Mapping[str, str] | None = None
) -> tuple[Path, Path]:
    """Write ``check.txt`` (the text report, advice spelled by ``words``) and
    ``check.json`` atomically into ``folder``."""
    folder = Path(folder)
    text_path, json_path = folder / "check.txt", folder / "check.json"
    text = diagnosis.to_text(max_details=MAX_DETAILS, words=words) + "\n"
    payload = json.dumps(diagnosis.to_dict(), indent=2) + "\n"
    atomic_write(text_path, lambda handle: handle.write(text.encode()))
    atomic_write(json_path, lambda handle: handle.write(payload.encode()))
    return text_path, json_path
