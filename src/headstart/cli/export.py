"""``headstart export``: a trained model as an ONNX file, proven to give its answers."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from headstart._internal.text import printable
from headstart.cli.arguments import add_tta_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="write a trained model as ONNX, checked against PyTorch",
        description="Export a model folder written by `headstart train` to ONNX. The file is "
        "run by ONNX Runtime on real images and compared with the PyTorch model before it "
        "is written: the run's test images when they can be found again, else the bundled "
        "sample (or --data). Its input is uint8 RGB pixels (N, H, W, 3), resized and "
        "cropped as its metadata says; the normalisation is inside the graph.",
    )
    parser.add_argument("model", help="a folder written by `headstart train`")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="onnx (the only one)")
    parser.add_argument(
        "--out", type=Path, help="the file to write (default: MODEL/model.onnx)", metavar="FILE"
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    parser.add_argument(
        "--quantize",
        choices=("int8",),
        help="also write an int8 model beside it (FILE.int8.onnx), if it keeps the accuracy",
    )
    parser.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=1.0,
        metavar="POINTS",
        help="accuracy points int8 may cost before it is refused (1)",
    )
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="labelled images to check the export on (its test part; default: the run's own)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch (32)")
    add_tta_argument(parser, " the file applies by default (recorded in its card; checked too)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from headstart.estimator.image_classifier import ImageClassifier
    from headstart.export.exporter import DEFAULT_OPSET, export_onnx

    args.words["images"] = "--data DIR"  # the library's images= is this command's --data
    clf = ImageClassifier.load(args.model)
    out = args.out if args.out is not None else Path(args.model) / "model.onnx"
    images = calibration = None
    source = "the given images"
    if args.data:
        from headstart.data.layout import load_images

        calibration, images = load_images(args.data, options=clf.decode_options_)
        source = f"the test part of {args.data}"
    opset = DEFAULT_OPSET if args.opset is None else args.opset
    print(
        printable(
            f"exporting {args.model} ({clf.strategy}, {clf.backbone}, {len(clf.classes_)} "
            f"classes, {clf.preprocessing_.image_size} px) to ONNX opset {opset}"
        )
    )
    print(
        "building the graph, then running it and the PyTorch model on the check images"
        + (", then quantizing" if args.quantize else "")
        + " (about a minute at 224 px on a 2-core CPU)",
        flush=True,
    )
    result = export_onnx(
        clf,
        out,
        opset=opset,
        quantize=args.quantize,
        max_accuracy_drop=args.max_accuracy_drop,
        images=images,
        calibration=calibration,
        images_source=source,
        batch_size=args.batch_size,
        tta=args.tta,
    )
    parity = result.parity
    print(
        printable(
            f"checked on {parity.images} images ({parity.source}): max |Δp| "
            f"{parity.max_probability_gap:.1e}, top-1 agreement {parity.top1_agreement:.1%}"
        )
    )
    if "bundled" in parity.source:
        print("  give --data DIR (labelled images like the model's own) to check on those")
    if parity.near_ties:
        print(f"  ({parity.near_ties} near-tie image(s) in PyTorch's own answers not counted)")
    if parity.images < 100:
        print(
            f"  note: only {parity.images} images; the check says more with --data "
            "DIR of a few hundred labelled images"
        )
    if parity.accuracy is not None:
        print(f"accuracy: PyTorch {parity.reference_accuracy:.1%}, ONNX {parity.accuracy:.1%}")
    if result.tta_parity is not None:
        tta = result.tta_parity
        print(
            f"with test-time augmentation {args.tta}: max |Δp| {tta.max_probability_gap:.1e}, "
            f"top-1 agreement {tta.top1_agreement:.1%}; the file applies it by default"
        )
    print(
        printable(
            f"wrote {result.path} ({result.bytes / 1e6:.1f} MB) and {result.sidecar.name}; "
            f"{result.batchnorms_folded} BatchNorms folded into their convolutions"
        )
    )
    q = result.quantized
    if q is not None:
        if q.measured_by == "accuracy":
            change = f"accuracy {q.accuracy:.1%} (fp32 {q.fp32_accuracy:.1%})"
        else:
            change = f"top-1 agreement with fp32 {q.agreement:.1%} (no labels to score)"
        print(printable(f"int8: wrote {q.path} ({q.bytes / 1e6:.1f} MB), {change}"))
    print(printable(f"predict with: headstart predict {shlex.quote(str(result.path))} IMAGE..."))
    return 0
