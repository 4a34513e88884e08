"""ONNX export (issue 12): latency, throughput, file sizes and int8 accuracy, same model.

A feature-extraction model (the strategy's default config at each image size) with the
bundled EfficientNet-Lite0, fitted on the bundled Fashion-MNIST sample's 1,000 training
images, is exported with ``quantize="int8"`` (calibration: the training split; parity
and the int8 accuracy change: the 1,000 test images). Then, all on 2 threads
(``torch.set_num_threads``; ONNX Runtime ``intra_op_num_threads``) and on the same test
images, four ways of running it are timed:

- ``torch fp32``: the fitted ``clf.model_``, eval, ``torch.inference_mode()``, plain
  eager fp32, fed an already normalised float32 NCHW tensor;
- ``torch fast``: headstart's fast path (``inference_model``: BatchNorm folded,
  activations fused on the CPU, channels_last; ``numerics``: bf16 autocast where the CPU has it), same tensor in
  channels_last;
- ``ORT fp32`` and ``ORT int8``: the exported files through ``OnnxClassifier.run``, fed
  uint8 NHWC pixels (the cast, the 1/255 and the mean/std are inside the graph).

Every arm ends in class probabilities (softmax added to the torch arms). Decoding,
resizing and cropping are excluded from every arm: the inputs are made once, before
any timing. Batch-1 latency: p50 and p99 over ``--runs`` single images after a
warm-up. Batch-64 throughput: ``--throughput-images`` images in batches of 64, best of
three passes.

Run: PYTHONPATH=src .venv/bin/python bench/bench_onnx.py [--sizes 224 112] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headstart import ImageClassifier
from headstart.data.idx import load_sample
from headstart.errors import ExportError
from headstart.estimator.results import labels_in_model_order
from headstart.export import export_onnx
from headstart.export.contract import image_pixels
from headstart.export.exporter import int8_path
from headstart.export.runtime import OnnxClassifier
from headstart.features.fastpath import fast_path_available, inference_model, numerics
from headstart.strategies.registry import get_strategy

THREADS = 2
BATCH = 64
ARMS = ("torch fp32", "torch fast", "ORT fp32", "ORT int8")


def torch_runner(model: torch.nn.Module, fast: bool, input_size: tuple[int, int, int]):
    """A function from a normalised float NCHW tensor to probabilities, as headstart's
    ``_proba`` runs it (fast: folded copy, channels_last, bf16 autocast)."""
    device = torch.device("cpu")
    run = inference_model(model, device, fast, input_size)
    layout = torch.channels_last if fast and fast_path_available(device) else None

    def forward(x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode(), numerics(run, device, fast):
            return torch.softmax(run(x).float(), dim=1).numpy()

    def prepare(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=layout) if layout is not None else x.contiguous()

    return forward, prepare


def normalised(pixels: np.ndarray, mean: Any, std: Any) -> torch.Tensor:
    """uint8 NHWC pixels -> the float32 NCHW tensor timm's eval transform makes of them."""
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x.contiguous()


def latency_ms(call, inputs: list[Any], runs: int, warmup: int) -> dict[str, float]:
    for i in range(warmup):
        call(inputs[i % len(inputs)])
    times = []
    for i in range(runs):
        x = inputs[i % len(inputs)]
        start = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - start)
    ms = np.asarray(times) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def throughput(call, batches: list[Any], images: int) -> float:
    call(batches[0])  # warm-up
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for batch in batches:
            call(batch)
        best = min(best, time.perf_counter() - start)
    return images / best


def bench_size(size: int, train, test, args, folder: Path) -> dict[str, Any]:
    config = get_strategy("feature-extraction").default_config().replace(image_size=size)
    start = time.perf_counter()
    clf = ImageClassifier(strategy="feature-extraction", config=config).fit(train)
    fit_s = time.perf_counter() - start
    model = clf.model_.cpu().eval()
    prep = clf.preprocessing_
    saved = clf.save(folder / f"model-{size}")
    onnx_path = folder / f"lite0-{size}.onnx"

    result: dict[str, Any] = {"image_size": size, "fit_s": round(fit_s, 1)}
    start = time.perf_counter()
    int8_refused = None
    try:
        exported = export_onnx(
            clf, onnx_path, quantize="int8", images=test, calibration=train,
            images_source="the bundled sample's test split",
        )  # fmt: skip
        quantized = exported.quantized
    except ExportError as exc:
        if not onnx_path.exists():
            raise
        int8_refused = str(exc)
        exported = quantized = None
    result["export_s"] = round(time.perf_counter() - start, 1)
    if int8_refused is not None:
        # The fp32 file passed and was written; make the refused int8 file anyway (same
        # code, same calibration) so that its speed can still be measured.
        from headstart.export.contract import card_from_props
        from headstart.export.graph import with_card
        from headstart.export.quantize import QUANTIZATION, quantize_int8
        from headstart.export.runtime import open_session

        card = card_from_props(
            dict(open_session(onnx_path).get_modelmeta().custom_metadata_map), onnx_path
        )
        data = quantize_int8(onnx_path.read_bytes(), prep, train)
        int8_path(onnx_path).write_bytes(with_card(data, {**card, "quantization": QUANTIZATION}))
        result["int8_refused"] = int8_refused
    else:
        result["parity"] = exported.parity.to_dict()
        result["int8"] = quantized.to_dict()
        result["batchnorms_folded"] = exported.batchnorms_folded

    result["bytes"] = {
        "model.safetensors": (saved / "model.safetensors").stat().st_size,
        "fp32.onnx": onnx_path.stat().st_size,
        "int8.onnx": int8_path(onnx_path).stat().st_size,
    }

    # Inputs, made once: uint8 pixels for ORT, the normalised tensor for torch.
    count = max(args.throughput_images, args.runs)
    pixels = np.stack([image_pixels(test.image(i), prep) for i in range(min(count, len(test)))])
    tensor = normalised(pixels, prep.mean, prep.std)

    ort = {
        "ORT fp32": OnnxClassifier.load(onnx_path, threads=THREADS),
        "ORT int8": OnnxClassifier.load(int8_path(onnx_path), threads=THREADS),
    }
    runners = {}
    for arm, fast in (("torch fp32", False), ("torch fast", True)):
        forward, prepare = torch_runner(model, fast, tuple(prep.input_size))
        runners[arm] = (forward, prepare)

    n = min(args.throughput_images, len(pixels))
    result["load_average_1min_before_timing"] = round(os.getloadavg()[0], 2)
    timings: dict[str, dict[str, float]] = {}
    for arm in ARMS:
        if arm in ort:
            call = ort[arm].run
            singles = [pixels[i : i + 1] for i in range(len(pixels))]
            batches = [pixels[i : i + BATCH] for i in range(0, n, BATCH)]
        else:
            call, prepare = runners[arm]
            singles = [prepare(tensor[i : i + 1]) for i in range(len(tensor))]
            batches = [prepare(tensor[i : i + BATCH]) for i in range(0, n, BATCH)]
        timings[arm] = latency_ms(call, singles, args.runs, args.warmup)
        timings[arm]["batch64_images_per_s"] = throughput(call, batches, n)
    result["timings"] = timings
    result["load_average_1min_after_timing"] = round(os.getloadavg()[0], 2)

    # Accuracy on all test images: every arm on the same pixels.
    truth = labels_in_model_order(test, clf.classes_)
    everything = np.stack([image_pixels(test.image(i), prep) for i in range(len(test))])
    accuracy = {}
    agreement = {}
    answers = {}
    for arm in ARMS:
        chunks = []
        for s in range(0, len(everything), BATCH):
            chunk = everything[s : s + BATCH]
            if arm in ort:
                chunks.append(ort[arm].run(chunk))
            else:
                forward, prepare = runners[arm]
                chunks.append(forward(prepare(normalised(chunk, prep.mean, prep.std))))
        answers[arm] = np.concatenate(chunks).argmax(1)
        accuracy[arm] = float((answers[arm] == truth).mean())
    for arm in ARMS[1:]:
        agreement[arm] = float((answers[arm] == answers["torch fp32"]).mean())
    result["accuracy"] = accuracy
    result["top1_agreement_with_torch_fp32"] = agreement
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        t = r["timings"]
        eager = t["torch fp32"]["p50_ms"]
        lines += [
            f"\nLite0 at {r['image_size']} px ({THREADS} threads)\n",
            "| arm | batch-1 p50 | batch-1 p99 | p50 vs eager | batch-64 img/s | "
            "accuracy (1,000 test) |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for arm in ARMS:
            lines.append(
                f"| {arm} | {t[arm]['p50_ms']:.2f} ms | {t[arm]['p99_ms']:.2f} ms | "
                f"{t[arm]['p50_ms'] / eager:.2f}× | {t[arm]['batch64_images_per_s']:.0f} | "
                f"{100 * r['accuracy'][arm]:.1f} % |"
            )
        b = r["bytes"]
        lines.append(
            f"\nsizes: model.safetensors {b['model.safetensors'] / 1e6:.2f} MB, fp32 .onnx "
            f"{b['fp32.onnx'] / 1e6:.2f} MB, int8 .onnx {b['int8.onnx'] / 1e6:.2f} MB; "
            f"export (parity + int8) {r['export_s']} s"
        )
        if "int8_refused" in r:
            lines.append(f"int8 REFUSED by the exporter: {r['int8_refused']}")
        else:
            q, p = r["int8"], r["parity"]
            lines.append(
                f"parity: max |Δp| {p['max_probability_gap']:.1e}, top-1 agreement "
                f"{p['top1_agreement']:.2%}; int8 costs {q['cost_points']:.2f} points "
                f"(agreement with fp32 {q['agreement']:.2%})"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 112])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--throughput-images", type=int, default=256)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    train, test = load_sample()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        for size in args.sizes:
            results.append(bench_size(size, train, test, args, Path(tmp)))
    import onnxruntime

    report = {
        "threads": THREADS,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "results": results,
    }
    text = json.dumps(report, indent=2)
    if args.json is not None:
        args.json.write_text(text + "\n")
    print(text)
    print(markdown(results))


if __name__ == "__main__":
    main()
