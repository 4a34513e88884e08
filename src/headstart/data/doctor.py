"""The data doctor: what is wrong with a dataset, found before any training.

Loading already decodes every file once; the doctor reads what that pass
recorded (the load report, each item's sha256 and stored size) and turns it
into findings a person can act on:

- ``unreadable``: files that would be skipped, each with the reason;
- ``classes``: fewer than 2 classes with images, which cannot train;
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
  on its own, listed so that nothing about the data is decided silently;
- ``dicom``, ``dicom_window``, ``dicom_modality``, ``dicom_size``: for DICOM files,
  their bits, photometric interpretations and windows (the conversions counted per
  window rule, not listed per file), and modalities or sizes that differ, which a
  model could separate the classes by (`dicom_findings`).

:func:`diagnose` is pure: datasets in, a :class:`Diagnosis` out. Nothing is
decoded again. :func:`check_data` loads a path the way ``load_images`` does
and diagnoses it; :func:`write_report` writes ``check.txt`` and ``check.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headstart._internal.atomic import atomic_write
from headstart._internal.text import printable
from headstart._internal.validation import invalid
from headstart.data.dataset import ImageDataset, LoadReport
from headstart.data.decode import DecodeOptions
from headstart.data.dicom_findings import dicom_facts, dicom_findings
from headstart.data.findings import (
    MAX_DETAILS,
    SEVERITIES,
    Finding,
    duplicates,
    imbalance,
    tiny,
    too_few_classes,
    unreadable,
    what_loading_did,
)
from headstart.data.layout import is_presplit, load_images, open_dataset
from headstart.errors import respell, spell

__all__ = [
    "Diagnosis",
    "Finding",
    "check_data",
    "diagnose",
    "write_report",
]

_TEXT_DETAILS = 20  # detail lines per finding in the text report


@dataclass(frozen=True)
class Diagnosis:
    """Everything the doctor found about one dataset (one split, or train and test)."""

    source: str  # what was checked, as the user named it
    images: dict[str, int]  # split name ("data", or "train" and "test") -> images loaded
    class_counts: dict[str, dict[str, int]]  # split -> class -> images
    findings: tuple[Finding, ...] = field(default_factory=tuple)
    dicom: dict[str, Any] | None = None  # counts over the DICOM images; None: there are none

    def find(self, kind: str) -> Finding | None:
        """The finding of one kind, or None when the doctor found nothing of it."""
        return next((f for f in self.findings if f.kind == kind), None)

    @property
    def skipped(self) -> int:
        """Files that loading skips (unreadable, truncated, not images, too large)."""
        found = self.find("unreadable")
        return found.count if found else 0

    @property
    def scope(self) -> str:
        """Which images were counted, in words: the numbers of another scope differ."""
        if set(self.images) == {"data"}:
            return (
                f"all {self.images['data']} images as loaded, before any split: training "
                "holds a test split out of these"
            )
        parts = " + ".join(f"{total} {split}" for split, total in self.images.items())
        return f"{parts} = {sum(self.images.values())} images"

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
            "dicom": self.dicom,
        }

    def to_text(
        self, max_details: int = _TEXT_DETAILS, words: Mapping[str, str] | None = None
    ) -> str:
        """The human report: what was checked, then every finding, worst first; ``words``
        spell the parameters the advice names (the CLI passes its flags). File and class
        names are escaped (a name with a newline or an escape code stays on its line and
        inert); ``to_dict`` keeps them exact."""
        lines = [f"data check: {printable(self.source)} ({self.scope})"]
        for split, total in self.images.items():
            counts = self.class_counts[split]
            per_class = ", ".join(f"{printable(name)} {count}" for name, count in counts.items())
            lines.append(f"  {split}: {total} images in {len(counts)} classes ({per_class})")
        if not self.warnings:
            lines.append("No problems found.")
        for finding in self.findings:
            lines.append(f"[{finding.severity}] {printable(finding.summary)}.")
            if finding.advice:
                lines.append(f"  -> {spell(finding.advice, words)}")
            shown = finding.details[:max_details]
            lines += [f"  {printable(respell(detail, words))}" for detail in shown]
            hidden = finding.count - len(shown) if finding.details else 0
            if hidden > 0:
                more = spell("{all_findings}", words)
                lines.append(f"  ... and {hidden} more ({more})")
        return "\n".join(lines)

    def brief(
        self,
        data: str,
        *,
        skip: tuple[str, ...] = (),
        limit: int = 3,
        words: Mapping[str, str] | None = None,
    ) -> list[str]:
        """At most ``limit`` warning lines and a pointer to the full check, for `train`.

        ``skip`` names kinds the caller already printed (the CLI prints skipped files
        and imbalance from the load report), so nothing is said twice.
        """
        shown = [f for f in self.warnings if f.kind not in skip]
        if not shown:
            return []
        lines = [f"check: {printable(finding.summary)}" for finding in shown[:limit]]
        if len(shown) > limit:
            lines[-1] += f" (and {len(shown) - limit} more finding(s))"
        pointer = spell("{check_data}", words).replace("DATA", printable(data))
        lines[-1] += f" (counted over {self.scope}; details: {pointer})"
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
    dicom = dicom_facts(splits)
    findings = [
        unreadable(reports),
        too_few_classes(train, "data" if test is None else "train"),
        *duplicates(splits),
        imbalance(train, imbalance_ratio, "data" if test is None else "train"),
        tiny(splits, tiny_side),
        *what_loading_did(reports),
        *dicom_findings(dicom),
    ]
    order = {severity: rank for rank, severity in enumerate(SEVERITIES)}
    kept = sorted((f for f in findings if f is not None), key=lambda f: order[f.severity])
    return Diagnosis(
        source=source if source is not None else train.report.source,
        images={name: len(ds) for name, ds in splits.items()},
        class_counts={name: ds.class_counts() for name, ds in splits.items()},
        findings=tuple(kept),
        dicom=dicom.to_dict() if dicom is not None else None,
    )


def _distinct_reports(reports: list[LoadReport]) -> list[LoadReport]:
    """A set split in two carries (copies of) one report: read it once."""
    seen: dict[str, LoadReport] = {}
    for report in reports:
        seen.setdefault(report.source, report)
    return list(seen.values())


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
