"""The data doctor on DICOM sets: what the scans were and how they became pictures.

A clinic's export is rarely uniform: 12-bit and 16-bit files, a window in some files and
none in others, CT beside MR, 512x512 beside 256x256. Each of these changes what the
model sees, and some let it tell the classes apart without looking at the anatomy
(every ``tumour`` scan a CT, every ``normal`` one an MR). :func:`dicom_facts` counts
them from what loading recorded (``LoadReport.dicom`` and the stored sizes: no second
decode) and :func:`dicom_findings` turns the counts into findings.

Privacy: only pixel-module facts (``DicomInfo``) and sizes are counted; no patient,
study or institution attribute is read or written (``dicom.IDENTIFYING_KEYWORDS``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from headstart.data.dataset import ImageDataset
from headstart.data.decode import split_frame
from headstart.data.dicom import WINDOW_PRESETS
from headstart.data.findings import MAX_DETAILS, Finding

__all__ = ["DicomFacts", "dicom_facts", "dicom_findings"]

# How each window rule is named in the counts (DicomInfo.window without its numbers).
IN_FILE = "window in the file"
VOI_LUT = "VOI LUT in the file"
NO_WINDOW = "no window in the file (full range of the stored bits)"
_FROM_THE_FILE = (IN_FILE, VOI_LUT, NO_WINDOW)
_EXAMPLES = 3  # files named beside a count

_WINDOW_ADVICE = (
    "choose one window for every file with {dicom_window}: a preset ("
    + ", ".join(WINDOW_PRESETS)
    + "), 'CENTER,WIDTH' in the files' units (Hounsfield for CT), or 'none' for the full "
    "range; a model trained with it decodes its predictions the same way"
)


@dataclass
class DicomFacts:
    """Counts over every DICOM image of a dataset (a frame read as an image counts once)."""

    images: int = 0
    files: set[str] = field(default_factory=set)
    bits: Counter[str] = field(default_factory=Counter)  # "12 unsigned" -> images
    photometric: Counter[str] = field(default_factory=Counter)
    windows: Counter[str] = field(default_factory=Counter)  # rule (no numbers) -> images
    file_windows: Counter[str] = field(default_factory=Counter)  # "C=40 W=400" -> images
    modalities: Counter[str] = field(default_factory=Counter)
    sizes: Counter[str] = field(default_factory=Counter)  # "rows x columns" -> images
    syntaxes: Counter[str] = field(default_factory=Counter)
    by_class: dict[str, dict[str, Counter[str]]] = field(default_factory=dict)  # class -> fact
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # files
    unwindowed: list[str] = field(default_factory=list)  # images with no window in the file

    def to_dict(self) -> dict[str, Any]:
        """For check.json: counts only, keyed by what was counted."""
        return {
            "images": self.images,
            "files": len(self.files),
            "bits_stored": dict(self.bits.most_common()),
            "photometric": dict(self.photometric.most_common()),
            "windows": dict(self.windows.most_common()),
            "file_windows": dict(self.file_windows.most_common()),
            "modalities": dict(self.modalities.most_common()),
            "sizes": dict(self.sizes.most_common()),
            "transfer_syntaxes": dict(self.syntaxes.most_common()),
            "by_class": {
                name: {
                    "modalities": dict(facts["modality"].most_common()),
                    "sizes": dict(facts["size"].most_common()),
                }
                for name, facts in self.by_class.items()
            },
        }


def window_rule(window: str) -> str:
    """``DicomInfo.window`` without its numbers: the rule that made the picture."""
    if window.startswith("file window"):
        return IN_FILE
    if window == "file VOI LUT":
        return VOI_LUT
    if window.startswith("no window in the file"):
        return NO_WINDOW
    if window.startswith("none:"):
        return "none (full range of the stored bits, as chosen)"
    if window.startswith(("preset ", "given ")):
        return window.split(" C=")[0] + " window" + window[window.find(" C=") :]
    return "colour (no window applies)"


def dicom_facts(splits: dict[str, ImageDataset]) -> DicomFacts | None:
    """What the DICOM images of ``splits`` were, or None when there are none."""
    facts = DicomFacts()
    for ds in splits.values():
        sizes = ds.original_sizes()
        for index, label in enumerate(ds.labels):
            source = ds.source(index)
            info = ds.report.dicom.get(source)
            if info is None:
                continue
            facts.images += 1
            file = str(split_frame(source)[0])
            facts.files.add(file)
            size = sizes[index] if index < len(sizes) else None
            shape = f"{size[1]}x{size[0]}" if size is not None else "unknown"
            modality = info.modality or "unknown"
            rule = window_rule(info.window)
            facts.bits[f"{info.bits_stored} {'signed' if info.signed else 'unsigned'}"] += 1
            facts.photometric[info.photometric] += 1
            facts.windows[rule] += 1
            facts.modalities[modality] += 1
            facts.sizes[shape] += 1
            facts.syntaxes[info.transfer_syntax] += 1
            if rule == IN_FILE:
                facts.file_windows[info.window.removeprefix("file window ")] += 1
            if rule == NO_WINDOW and len(facts.unwindowed) < MAX_DETAILS:
                facts.unwindowed.append(source)
            if len(facts.examples[rule]) < _EXAMPLES and file not in facts.examples[rule]:
                facts.examples[rule].append(file)  # a file, not each of its frames
            per_class = facts.by_class.setdefault(
                ds.classes[int(label)], {"modality": Counter(), "size": Counter()}
            )
            per_class["modality"][modality] += 1
            per_class["size"][shape] += 1
    return facts if facts.images else None


def _counted(counter: Counter[str], limit: int = 4) -> str:
    shown = [f"{name} {count}" for name, count in counter.most_common(limit)]
    more = len(counter) - limit
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def dicom_findings(facts: DicomFacts | None) -> list[Finding]:
    """The DICOM summary, how values became gray, and shortcuts (modality, size)."""
    if facts is None:
        return []
    found = [_summary(facts), _windows(facts), _mixed(facts, "modality"), _mixed(facts, "size")]
    return [finding for finding in found if finding is not None]


def _summary(facts: DicomFacts) -> Finding:
    """One line for the whole set, and one per window rule instead of one per file."""
    files = len(facts.files)
    frames = f" from {files} file(s)" if files != facts.images else ""
    details = [
        f"bits stored: {_counted(facts.bits)}",
        f"photometric interpretation: {_counted(facts.photometric)}",
        f"transfer syntax: {_counted(facts.syntaxes)}",
    ]
    for rule, count in facts.windows.most_common():
        examples = ", ".join(facts.examples[rule])
        more = ", ..." if count > len(facts.examples[rule]) else ""
        details.append(f"converted to RGB by {rule}: {count} image(s) ({examples}{more})")
    return Finding(
        kind="dicom",
        severity="info",
        count=len(details),  # lines of counts (the images are in Diagnosis.dicom)
        summary=f"{facts.images} DICOM image(s){frames}: bits stored {_counted(facts.bits)}; "
        f"{_counted(facts.photometric)}; modality {_counted(facts.modalities)}",
        details=tuple(details),
    )


def _windows(facts: DicomFacts) -> Finding | None:
    """How the files' own windows went, when the rule was the file's (the default).

    A warning where files lack a window (the full range of 16 stored bits leaves soft
    tissue a few gray levels) or where some have one and others not; windows that merely
    differ (MR files are often windowed each on its own) are said, as information."""
    counts = {rule: facts.windows[rule] for rule in _FROM_THE_FILE}
    total = sum(counts.values())
    if total == 0:  # a window was chosen for every file (or all are colour)
        return None
    summary = (
        f"windows of {total} gray DICOM image(s): {counts[IN_FILE]} from a window in the "
        f"file, {counts[VOI_LUT]} from a VOI LUT, {counts[NO_WINDOW]} with none (full range)"
    )
    distinct = len(facts.file_windows)
    if distinct > 1:
        summary += f"; the files' windows differ ({_counted(facts.file_windows, 3)})"
    mixed = sum(count > 0 for count in counts.values()) > 1
    if mixed or distinct > 1:
        summary += "; the same tissue can come out differently from file to file"
    if counts[NO_WINDOW]:
        summary += "; a full range can squeeze the tissue into a few gray levels"
    # The files with none, unless that is all of them (the summary says so then).
    details = [f"{source}: no window in the file" for source in facts.unwindowed]
    details = details if counts[NO_WINDOW] < total else []
    return Finding(
        kind="dicom_window",
        severity="warning" if mixed or counts[NO_WINDOW] else "info",
        count=counts[NO_WINDOW] if details else total,  # details: the files with none
        summary=summary,
        advice=_WINDOW_ADVICE if mixed or counts[NO_WINDOW] or distinct > 1 else "",
        details=tuple(details[:MAX_DETAILS]),
    )


def _separable(per_class: dict[str, Counter[str]]) -> bool:
    """Whether knowing the value names the class, for every image, with values shared
    by images (two at least on average): a shortcut a model learns, not a coincidence
    of sizes that are each one image's own."""
    owners: dict[str, set[str]] = defaultdict(set)
    for name, counts in per_class.items():
        for value in counts:
            owners[value].add(name)
    images = sum(sum(counts.values()) for counts in per_class.values())
    return (
        len(per_class) > 1
        and len(owners) * 2 <= images
        and all(len(classes) == 1 for classes in owners.values())
    )


def _mixed(facts: DicomFacts, fact: str) -> Finding | None:
    """Several modalities (or sizes) in one set: a warning for modalities, and for sizes
    where they tell the classes apart."""
    overall = facts.modalities if fact == "modality" else facts.sizes
    if len(overall) < 2:
        return None
    per_class = {name: counts[fact] for name, counts in facts.by_class.items()}
    alone = _separable(per_class)
    what = "modalities" if fact == "modality" else "sizes (rows x columns)"
    summary = f"DICOM images of {len(overall)} {what}: {_counted(overall)}"
    if alone:
        summary += f"; each {fact} occurs in one class only: a model can tell the classes "
        summary += f"apart by {fact} alone, whatever the images show"
    elif fact == "modality" and len({frozenset(c) for c in per_class.values()}) > 1:
        summary += "; the classes hold different modalities"
    if fact == "modality":
        advice = "train on one modality, or make sure every class holds each modality alike"
    else:
        advice = "each image is resized to the backbone's input, so the same anatomy comes "
        advice += "out at other scales; check the classes were imaged alike"
    return Finding(
        kind=f"dicom_{fact}",
        severity="warning" if alone or fact == "modality" else "info",
        count=len(per_class),  # classes, one line each
        summary=summary,
        advice=advice if alone or fact == "modality" else "",
        details=tuple(f"{name}: {_counted(counts)}" for name, counts in per_class.items()),
    )
