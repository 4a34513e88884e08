"""``export_onnx``: a fitted classifier to an ONNX file that is proven to give its answers.

Order of work: every argument and the target are checked first (seconds); then the
graph is built in memory, run by ONNX Runtime on real images and compared with the
PyTorch model (the parity gate); only a file that passes is written, atomically, with
its JSON sidecar. A file that fails is written beside the target as
``NAME.rejected.onnx`` for inspection, never under the target's name. ``quantize="int8"``
then makes an int8 file from the passed fp32 one and refuses it when it costs more
accuracy than ``max_accuracy_drop`` points (the fp32 file stays: it passed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from headstart._internal.atomic import atomic_write, atomic_write_files
from headstart._internal.validation import invalid, positive_int
from headstart._internal.version import __version__
from headstart.data.dataset import ImageDataset
from headstart.data.dicom import describe_rule
from headstart.errors import DataError, ExportError, OutputError
from headstart.estimator.tta import check_tta
from headstart.export.contract import (
    CARD_FORMAT,
    INPUT_NAME,
    OUTPUT_NAMES,
    SOURCE_FIELD,
    sidecar_path,
)
from headstart.export.parity import (
    MAX_PROBABILITY_GAP,
    MIN_TOP1_AGREEMENT,
    ParityReport,
    compare_probabilities,
    onnx_probabilities,
    torch_probabilities,
)
from headstart.export.runtime import INSTALL_HINT

__all__ = [
    "DEFAULT_OPSET",
    "ExportResult",
    "check_images",
    "export_onnx",
    "int8_path",
    "supported_opsets",
]

DEFAULT_OPSET = 18
_MIN_OPSET = 18  # torch.onnx's exporter (dynamo) writes opset 18 and later
# The highest opset measured to export and pass parity with this stack (torch 2.14,
# onnxscript 0.7, onnxruntime 1.32): 26-28 are known to onnx but fail in the exporter.
_MAX_OPSET = 25
MAX_CHECK_IMAGES = 1000  # enough to resolve a 99.9 % agreement; fast on a laptop
CALIBRATION_IMAGES = 128


@dataclass(frozen=True)
class QuantizationReport:
    path: Path
    agreement: float  # top-1 agreement of int8 with fp32 on the check images
    accuracy: float | None  # int8's accuracy on them, when their labels are the model's
    fp32_accuracy: float | None
    cost_points: float  # accuracy points lost (or, without labels, disagreeing share)
    measured_by: str  # "accuracy" or "agreement"
    bytes: int
    calibrated_on_check_images: bool = False  # no separate calibration images were given

    def to_dict(self) -> dict[str, Any]:
        """For the sidecar: the file's name, not this machine's folder."""
        fields = dataclasses.asdict(self)
        return {k: v.name if isinstance(v, Path) else v for k, v in fields.items()}


@dataclass(frozen=True)
class ExportResult:
    path: Path
    sidecar: Path
    parity: ParityReport
    bytes: int
    batchnorms_folded: int
    quantized: QuantizationReport | None = None
    tta_parity: ParityReport | None = None  # the same check with the card's TTA, if any


def supported_opsets() -> range:
    """The opsets an export can be asked for: the exporter's floor to onnx's ceiling."""
    import onnx

    return range(_MIN_OPSET, min(onnx.defs.onnx_opset_version(), _MAX_OPSET) + 1)


def int8_path(path: str | os.PathLike[str]) -> Path:
    """Where the int8 file goes beside the fp32 one: ``model.onnx`` -> ``model.int8.onnx``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.int8{path.suffix or '.onnx'}")


def export_onnx(
    clf: Any,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    quantize: str | None = None,
    max_accuracy_drop: float = 1.0,
    images: ImageDataset | None = None,
    calibration: ImageDataset | None = None,
    images_source: str = "the given images",
    batch_size: int = 32,
    tta: str | None = None,
) -> ExportResult:
    """Export a fitted ``ImageClassifier`` to ``path`` (ONNX), behind the parity gate.

    ``images`` are what parity (and int8's accuracy change) is measured on, and
    ``calibration`` what int8 ranges are fixed from; by default both come from
    ``check_images(clf)``: the run's own test and training images when they can be
    found again, else the bundled sample. ``max_accuracy_drop`` is in accuracy points.
    Raises ExportError when the file fails the gate or int8 costs too much. ``tta``:
    the test-time augmentation ``OnnxClassifier`` applies by default (recorded in the
    card as ``tta``; the graph is the same); other than "none", the gate also compares
    both models' answers with it.
    """
    owner = "export_onnx"
    meta = clf.metadata()  # NotFittedError first, before any other complaint
    tta = check_tta(owner, tta)
    _require_packages()
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in supported_opsets():
        allowed = supported_opsets()
        raise invalid(owner, "opset", f"an int in {allowed.start}..{allowed.stop - 1}", opset)
    if quantize not in (None, "int8"):
        raise invalid(owner, "quantize", "None or 'int8'", quantize)
    if isinstance(max_accuracy_drop, bool) or not isinstance(max_accuracy_drop, int | float) \
            or not 0 <= max_accuracy_drop <= 100:  # fmt: skip
        raise invalid(owner, "max_accuracy_drop", "a number of points in 0..100", max_accuracy_drop)
    positive_int(owner, "batch_size", batch_size)
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise OutputError(
            f"{path}: an exported model's name must end in .onnx (such as "
            f"{path.with_suffix('.onnx').name}); other names could overwrite a model's own "
            "files, and `headstart predict` tells an exported file by it."
        )
    targets = [path, sidecar_path(path)] + ([int8_path(path)] if quantize else [])
    for target in targets:
        _check_writable(target)
    prep = clf.preprocessing_
    try:
        prep.resize_crop(_probe_image())
    except ValueError as exc:
        raise ExportError(
            f"This model's preprocessing cannot be done outside PyTorch ({exc}); "
            "the exported file could not be fed as the model was."
        ) from exc
    if images is None:
        calibration_found, images, images_source = check_images(clf)
        calibration = calibration if calibration is not None else calibration_found
        if quantize and "bundled" in images_source and not _sample_classes(clf.classes_):
            raise ExportError(
                f"int8 needs images like the model's own to calibrate and measure on, and "
                f"only {images_source} were found; they are not what this model was "
                "trained on.",
                hint="Give {images} (labelled images of the model's classes).",
            )
    if not len(images):
        raise DataError(f"No images to check the export on ({images_source}).")

    from headstart.export.graph import onnx_bytes
    from headstart.export.runtime import session_from_bytes

    saved = getattr(clf, "metadata_", None) or {}
    card = {**model_card(meta, opset, saved.get(SOURCE_FIELD)), "tta": tta}
    data, folded = onnx_bytes(clf.model_, prep, card, opset)
    session = session_from_bytes(data, f"the exported graph (opset {opset})")
    rejected = path.with_name(f"{path.stem}.rejected{path.suffix}")
    reports = [
        _gate(clf, session, images, images_source, batch_size, mode, data, path, rejected)
        for mode in dict.fromkeys(("none", tta))
    ]
    report, tta_report = reports[0], (reports[1] if len(reports) > 1 else None)
    sidecar = {**card, "file": path.name, "sha256": hashlib.sha256(data).hexdigest(),
               "parity": _shippable(report),
               **({"parity_tta": _shippable(tta_report)} if tta_report else {})}  # fmt: skip
    _write_with_sidecar(path, data, sidecar)
    rejected.unlink(missing_ok=True)  # an earlier failure's file no longer describes it
    result = ExportResult(path, sidecar_path(path), report, len(data), folded,
                          tta_parity=tta_report)  # fmt: skip
    if quantize:
        quantized = _quantize(data, card, path, clf, images, calibration, report, batch_size,
                              max_accuracy_drop)  # fmt: skip
        result = dataclasses.replace(result, quantized=quantized)
    return result


def _ensemble_summary(ensemble: dict[str, Any]) -> dict[str, Any]:
    """What an ensemble's card says of its members: each one's backbone, input size
    (resized inside the graph) and layers, and how they are combined."""
    members = [
        {"backbone": m["backbone"], "input_size": m["input"]["size"], "layers": m["layers"]}
        for m in ensemble["members"]
    ]
    return {"combine": ensemble["combine"], "members": members}


def model_card(meta: dict[str, Any], opset: int, source_hash: str | None = None) -> dict[str, Any]:
    """What an exported file says about itself (its ONNX metadata and sidecar);
    ``source_hash``: the sha256 of the saved weights it was exported from, if saved."""
    import onnx
    import torch

    prep = meta["preprocessing"]
    channels, height, width = prep["input_size"]
    return {
        "format": CARD_FORMAT,
        "input": {
            "name": INPUT_NAME,
            "dtype": "uint8",
            "layout": "NHWC",
            "shape": ["batch", height, width, channels],
            "colour": "RGB",
            "normalised_in_graph": "(pixel / 255 - mean) / std",
            "before": "resize and crop as 'preprocessing' says (Pillow resampling)",
            # DICOM files become pixels by decode_options' window rule; written out so
            # a consumer without headstart decodes a scan as training did.
            "dicom": describe_rule(
                meta["decode_options"].get("dicom_window", "file"),
                meta["decode_options"].get("frames", "middle"),
            ),
        },
        "outputs": {name: ["batch", len(meta["classes"])] for name in OUTPUT_NAMES},
        "classes": list(meta["classes"]),
        "preprocessing": prep,
        "decode_options": meta["decode_options"],
        "backbone": meta["backbone"],
        "strategy": meta["strategy"],
        "layers": meta["layers"],
        **({"ensemble": _ensemble_summary(meta["ensemble"])} if meta.get("ensemble") else {}),
        # Where the backbone's weights came from, without this machine's paths: the
        # file is made to be shipped.
        "weights": {k: v for k, v in meta["weights"].items() if k != "location"},
        "metrics": _without_paths(meta["metrics"]),
        "source_model": {SOURCE_FIELD: source_hash},
        "opset": opset,
        "quantization": None,
        "headstart_version": __version__,
        "exported_with": {
            "torch": torch.__version__.split("+")[0],
            "onnx": onnx.__version__,
            "python": platform.python_version(),
        },
    }


def _gate(clf: Any, session: Any, images: ImageDataset, images_source: str, batch_size: int,
          tta: str, data: bytes, path: Path, rejected: Path) -> ParityReport:  # fmt: skip
    """The parity gate: the graph's answers against the fp32 PyTorch model's on
    ``images``, each through its own whole path, with test-time augmentation ``tta``; an
    ExportError (the graph left as ``rejected``) when they differ."""
    prep = clf.preprocessing_
    reference = torch_probabilities(clf.model_, prep, images, batch_size, tta=tta)
    got = onnx_probabilities(session, prep, images, batch_size, tta=tta)
    report = compare_probabilities(reference, got, images, clf.classes_, images_source)
    if report.passed(MAX_PROBABILITY_GAP, MIN_TOP1_AGREEMENT):
        return report
    atomic_write(rejected, lambda f: f.write(data))
    kept = f" {path} is unchanged (an earlier export)." if path.exists() else ""
    with_tta = f" with test-time augmentation {tta!r}" if tta != "none" else ""
    raise ExportError(
        f"The exported model does not give the PyTorch model's answers{with_tta} on "
        f"{report.images} images ({images_source}): max |Δp| "
        f"{report.max_probability_gap:.2e} (limit {MAX_PROBABILITY_GAP:.0e}), top-1 "
        f"agreement {report.top1_agreement:.2%} (limit {MIN_TOP1_AGREEMENT:.1%}). "
        f"Not written as {path.name}; the failed file is {rejected} for inspection.{kept}"
    )


def check_images(clf: Any) -> tuple[ImageDataset, ImageDataset, str]:
    """(calibration, check images, where they came from) for an export of ``clf``: the
    run's own training and test images when the model records where they were and they
    are still there (the same split again), else the bundled sample's."""
    from headstart.data.idx import load_sample
    from headstart.data.layout import load_images

    source = (clf.metrics_ or {}).get("test", {}).get("data") or {}
    where = source.get("path")
    why = "the model does not record where its training images were"
    if where and not Path(where).exists():
        why = f"the run's data {where} is no longer there"
    elif where:
        try:
            train, test = load_images(
                where,
                test_size=source.get("test_size", 0.2),
                seed=source.get("seed", 0),
                options=clf.decode_options_,
            )
        except DataError as exc:
            why = f"the run's data {where} cannot be read again ({exc})"
        else:
            if len(test):
                found = f"the run's test images from {where}"
                return _some(train, CALIBRATION_IMAGES), _some(test, MAX_CHECK_IMAGES), found
            why = f"the run's data {where} has no test images"
    train, test = load_sample()
    found = f"the bundled Fashion-MNIST sample's test images: {why}"
    return _some(train, CALIBRATION_IMAGES), _some(test, MAX_CHECK_IMAGES), found


def _shippable(report: ParityReport) -> dict[str, Any]:
    """The report for the sidecar: which kind of images, not this machine's folders."""
    out = report.to_dict()
    source = out.pop("source")
    kinds = ("the run's test images", "the bundled Fashion-MNIST sample's test images")
    out["images_from"] = next((k for k in kinds if source.startswith(k)), "given images")
    return out


def _sample_classes(classes: list[str]) -> bool:
    from headstart.data.idx import FASHION_MNIST_CLASSES

    return set(classes) <= set(FASHION_MNIST_CLASSES)


def _without_paths(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics without the local folder train records beside them (``test.data.path``)."""
    out = {}
    for name, value in (metrics or {}).items():
        if isinstance(value, dict) and isinstance(value.get("data"), dict):
            value = {**value, "data": {k: v for k, v in value["data"].items() if k != "path"}}
        out[name] = value
    return out


def _some(dataset: ImageDataset, most: int) -> ImageDataset:
    """At most ``most`` images, drawn evenly (seeded) when there are more."""
    if len(dataset) <= most:
        return dataset
    picked = np.sort(np.random.default_rng(0).choice(len(dataset), most, replace=False))
    return dataset.subset(picked)


def _quantize(data: bytes, card: dict[str, Any], path: Path, clf: Any, images: ImageDataset,
              calibration: ImageDataset | None, fp32: ParityReport, batch_size: int,
              max_drop: float) -> QuantizationReport:  # fmt: skip
    from headstart.export.graph import with_card
    from headstart.export.quantize import QUANTIZATION, quantize_int8
    from headstart.export.runtime import session_from_bytes

    target = int8_path(path)
    int8_card = {**card, "quantization": QUANTIZATION}
    int8 = with_card(
        quantize_int8(data, clf.preprocessing_, images if calibration is None else calibration),
        int8_card,
    )
    session = session_from_bytes(int8, "the int8 model")
    fp32_session = session_from_bytes(data, "the exported graph")
    reference = onnx_probabilities(fp32_session, clf.preprocessing_, images, batch_size)
    got = onnx_probabilities(session, clf.preprocessing_, images, batch_size)
    versus = compare_probabilities(reference, got, images, clf.classes_, fp32.source)
    if versus.accuracy is not None and versus.reference_accuracy is not None:
        cost, measured_by = 100 * (versus.reference_accuracy - versus.accuracy), "accuracy"
    else:  # no labels the model knows: the share of answers int8 changes bounds the cost
        cost, measured_by = 100 * (1 - versus.top1_agreement), "agreement"
    report = QuantizationReport(
        path=target,
        agreement=versus.top1_agreement,
        accuracy=versus.accuracy,
        fp32_accuracy=versus.reference_accuracy,
        cost_points=cost,
        measured_by=measured_by,
        bytes=len(int8),
        calibrated_on_check_images=calibration is None,
    )
    if cost > max_drop:
        what = "of accuracy" if measured_by == "accuracy" else "of answers changed, no labels"
        raise ExportError(
            f"int8 costs {cost:.2f} points ({what}) on {versus.images} images "
            f"({fp32.source}), more than the {max_drop:g} allowed; not written. The fp32 "
            f"model {path} passed its check and is kept.",
            hint="Allow more with {max_accuracy_drop}, or keep the fp32 model.",
        )
    sidecar = {**int8_card, "file": target.name, "sha256": hashlib.sha256(int8).hexdigest(),
               "parity": _shippable(fp32), "int8": report.to_dict()}  # fmt: skip
    _write_with_sidecar(target, int8, sidecar)
    return report


def _write_with_sidecar(path: Path, data: bytes, sidecar: dict[str, Any]) -> None:
    text = json.dumps(sidecar, indent=2, ensure_ascii=False).encode() + b"\n"
    atomic_write_files(
        [(path, lambda f: f.write(data)), (sidecar_path(path), lambda f: f.write(text))]
    )


def _check_writable(target: Path) -> None:
    """An OutputError now, before the work, for a target that cannot be written."""
    if target.is_dir():
        raise OutputError(
            f"{target} is a folder; give a file name such as {target / 'model.onnx'}."
        )
    folder = target.parent
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise OutputError(f"{target}: {existing} is a file, not a folder.")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{target}: {existing} is not writable.")
    if target.exists() and not os.access(target, os.W_OK):
        raise OutputError(f"{target} exists and is not writable.")


def _require_packages() -> None:
    missing = []
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(
            f"ONNX export needs {', '.join(missing)}, not installed here ({INSTALL_HINT})."
        )


def _probe_image() -> Any:
    from PIL import Image

    return Image.new("RGB", (37, 23))
