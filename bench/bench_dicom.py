"""DICOM decode throughput against PNG of the same pixels, both through ``decode_image``.

The bench writes ``--files`` uncompressed 512x512 16-bit MONOCHROME2 DICOM files
(Explicit VR Little Endian, RescaleSlope/Intercept and a window, as a CT is stored) and
the same stored values as 16-bit grayscale PNGs, then decodes them through
``headstart.data.decode.decode_image`` (the path training and prediction take: read the
file, decode, to 8-bit RGB). On a shared machine absolute numbers move with the load, so
the two kinds alternate within one run, round by round (which goes first alternates
too), and the table gives each kind's median images/s and the median of the per-round
ratios. ``--profile`` adds where a DICOM decode spends its time, stage by stage.

Run: PYTHONPATH=src .venv/bin/python bench/bench_dicom.py [--files 20] [--rounds 15] [--profile]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from headstart.data.decode import DecodeOptions, decode_image

SIZE = 512
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def scan(seed: int) -> np.ndarray:
    """Stored values of a CT-like slice: a body of soft tissue around air, with bone."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    hu = np.full((SIZE, SIZE), -1000.0)
    body = (y - SIZE / 2) ** 2 / 0.8 + (x - SIZE / 2) ** 2 < (SIZE * 0.42) ** 2
    hu[body] = 40.0
    hu[(y - SIZE / 2) ** 2 + (x - SIZE / 2 - 60) ** 2 < 30**2] = 900.0
    hu += rng.normal(0, 20, hu.shape)
    return np.clip(np.rint(hu + 1024), 0, 65535).astype(np.uint16)  # intercept -1024


def write_dicom(path: Path, stored: np.ndarray) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows = ds.Columns = SIZE
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = stored.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_png(path: Path, stored: np.ndarray) -> None:
    Image.fromarray(stored).save(path)  # uint16: mode I;16


def decode_all(paths: list[Path], options: DecodeOptions) -> float:
    """Images per second decoding every file once."""
    start = time.perf_counter()
    for path in paths:
        image, _ = decode_image(path, options)
        assert image.mode == "RGB" and image.size == (SIZE, SIZE)
    return len(paths) / (time.perf_counter() - start)


def profile(path: Path, repeat: int) -> list[tuple[str, float]]:
    """Milliseconds (mean of ``repeat``) of each stage of one DICOM decode, as
    ``data.dicom`` runs them, and of the whole ``decode_bytes`` measured in turn. Means,
    not medians: on a loaded machine a longer call is preempted more often, so stage
    medians add up to less than the whole's; means add up."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, pixel_array

    from headstart.data import dicom
    from headstart.data.decode import decode_bytes

    options = DecodeOptions()
    data = path.read_bytes()
    names = ["read file", "dcmread", "pixel_array", "modality LUT", "to float64",
             "window (LINEAR)", "clip, rint to uint8", "Pillow gray to RGB",
             "whole decode_bytes"]  # fmt: skip
    stages: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeat):
        ticks = [time.perf_counter()]
        path.read_bytes()
        ticks.append(time.perf_counter())
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        ticks.append(time.perf_counter())
        stored = pixel_array(ds)
        ticks.append(time.perf_counter())
        values = apply_modality_lut(stored, ds)
        ticks.append(time.perf_counter())
        values = values.astype(np.float64)
        ticks.append(time.perf_counter())
        gray = dicom._linear(values, 40.0, 400.0, "LINEAR")
        ticks.append(time.perf_counter())
        picture = np.rint(np.clip(gray, 0.0, 1.0) * 255.0).astype(np.uint8)
        ticks.append(time.perf_counter())
        Image.fromarray(picture).convert("RGB")
        ticks.append(time.perf_counter())
        decode_bytes(data, options, "x.dcm")
        ticks.append(time.perf_counter())
        for name, before, after in zip(names, ticks[:-1], ticks[1:], strict=True):
            stages[name].append((after - before) * 1000)
    return [(name, statistics.fmean(times)) for name, times in stages.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20, help="files of each kind")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--profile", action="store_true", help="time each DICOM stage too")
    parser.add_argument("--profile-repeat", type=int, default=200)
    args = parser.parse_args()
    options = DecodeOptions()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        dicoms, pngs = [], []
        for i in range(args.files):
            stored = scan(i)
            write_dicom(root / f"{i}.dcm", stored)
            write_png(root / f"{i}.png", stored)
            dicoms.append(root / f"{i}.dcm")
            pngs.append(root / f"{i}.png")
        sizes = [sum(p.stat().st_size for p in kind) / len(kind) / 1e3 for kind in (dicoms, pngs)]
        decode_all(dicoms[:2], options), decode_all(pngs[:2], options)  # warm imports
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        dicom_rates, png_rates, ratios = [], [], []
        for round_ in range(args.rounds):
            if round_ % 2 == 0:
                d, p = decode_all(dicoms, options), decode_all(pngs, options)
            else:
                p, d = decode_all(pngs, options), decode_all(dicoms, options)
            dicom_rates.append(d)
            png_rates.append(p)
            ratios.append(d / p)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        print(f"{args.files} files of each kind, {args.rounds} alternating rounds\n")
        print("| kind | file size | images/s (median) | slowest round | fastest round |")
        print("| --- | --- | --- | --- | --- |")
        for kind, rates, size in (("DICOM", dicom_rates, sizes[0]), ("PNG", png_rates, sizes[1])):
            print(f"| {kind} 512x512 16-bit | {size:.0f} kB | {statistics.median(rates):.1f} "
                  f"| {min(rates):.1f} | {max(rates):.1f} |")  # fmt: skip
        print(f"\nDICOM / PNG: median of per-round ratios {statistics.median(ratios):.2f}x "
              f"(range {min(ratios):.2f}-{max(ratios):.2f})")  # fmt: skip
        if args.profile:
            stages = profile(dicoms[0], repeat=args.profile_repeat)
            parts = sum(ms for name, ms in stages[:-1])
            print("\n| DICOM stage | ms (mean) | share of the stages |\n| --- | --- | --- |")
            for name, ms in stages:
                share = f"{100 * ms / parts:.0f} %" if name != "whole decode_bytes" else ""
                print(f"| {name} | {ms:.2f} | {share} |")
            print(f"\nstages added up: {parts:.2f} ms")


if __name__ == "__main__":
    main()
