"""The data doctor's findings: one kind of problem (or one thing loading did) each, with
the files it concerns, worked out from what loading recorded (never a second decode)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from headstart.data.dataset import ImageDataset, LoadReport
from headstart.errors import spell

__all__ = [
    "IMBALANCE_RATIO",
    "MAX_DETAILS",
    "SEVERITIES",
    "Finding",
    "duplicates",
    "imbalance",
    "tiny",
    "too_few_classes",
    "unreadable",
    "what_loading_did",
]

SEVERITIES = ("error", "warning", "info")

# The largest class at least this many times the smallest: the doctor warns, and
# training's class_weights="auto" weights the loss (docs/BENCHMARKS.md, "Imbalance").
IMBALANCE_RATIO = 3.0


# Each finding keeps at most this many detail lines (its count stays exact), so a
# 70,000-image dataset where every image is tiny does not make a 5 MB report.
MAX_DETAILS = 1000


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


def unreadable(reports: list[LoadReport]) -> Finding | None:
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


def duplicates(splits: dict[str, ImageDataset]) -> list[Finding]:
    """Leaks across splits, one image under two labels, and plain repeats: by sha256.

    Repeats and conflicts are counted over every split together, so the training job,
    which checks its training and test split, says the numbers ``check`` says of the
    whole set; a leak is a view on those groups (the copies that land in test)."""
    groups: dict[str, list[_Item]] = defaultdict(list)
    for name, ds in splits.items():
        for index, (digest, label) in enumerate(zip(ds.content_hashes(), ds.labels, strict=True)):
            if digest:
                groups[digest].append(_Item(name, ds.source(index), ds.classes[label]))
    leaks: list[str] = []
    leaked = 0
    conflicts: list[str] = []
    repeats: list[str] = []
    repeated = across = 0
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
        if len(labels) == 1:  # counted over every split: the same number as for the whole set
            repeated += len(items) - 1
            across += len(in_test) if in_train else 0
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
                f"({len(repeats)} image(s) stored more than once"
                + (f"; {across} of the copies across train and test)" if across else ")"),
                advice="each copy counts again in training and in the scores; keep one",
                details=tuple(repeats[:MAX_DETAILS]),
            )
        )
    return findings


def too_few_classes(ds: ImageDataset, split: str) -> Finding | None:
    """Fewer than 2 classes with images: nothing to tell apart, and `fit` refuses it.
    Said here, as an error, so that `check` does not call such a set fine."""
    present = [name for name, count in ds.class_counts().items() if count > 0]
    if len(present) >= 2:
        return None
    named = f" ({', '.join(present)})" if present else ""
    return Finding(
        kind="classes",
        severity="error",
        count=len(present),
        summary=f"{split} has images in {len(present)} class(es){named}; training needs at least 2",
        advice="add one folder of images for each other class (a CSV: rows with other labels)",
    )


def imbalance(ds: ImageDataset, ratio: float, split: str) -> Finding | None:
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
        advice=f"training weights the loss by class where the largest training class holds "
        f"{IMBALANCE_RATIO:g}x the smallest or more ({{no_class_weights}} turns it off); judge "
        "by balanced accuracy",
        details=tuple(f"{name}: {count}" for name, count in ordered),
    )


def tiny(splits: dict[str, ImageDataset], side: int) -> Finding | None:
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


def what_loading_did(reports: list[LoadReport]) -> list[Finding]:
    # A DICOM file's conversion is said once per window rule by the `dicom` finding.
    converted = {
        path: how
        for report in reports
        for path, how in report.converted.items()
        if path not in report.dicom
    }
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
