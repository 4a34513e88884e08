"""Classify a DICOM scan with a model from `headstart export`, using pydicom, onnxruntime
and numpy only: no headstart, no Pillow, no torch.  python dicom_consumer.py model.onnx scan.dcm

Pixels are made as headstart made them in training, by the card's rule (card["input"]
["dicom"]): Modality LUT, the window of card["decode_options"]["dicom_window"],
MONOCHROME1 inverted, rint to uint8; then the card's resize and centre crop, with
Pillow's resampling written out in numpy (its fixed-point arithmetic included, so the
pixels are Pillow's; Pillow 13 runs some resizes of tall images shrunk on both axes
vertical pass first, where this example's pixels can be 1 grey level off). Prints the
top class and its probability, then every class's."""

import json
import math
import sys

import numpy as np
import onnxruntime as ort
import pydicom
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi


def window(stored, values, ds, rule):
    """Modality-LUT ``values`` (float64) of the ``stored`` ones onto 0..1 by the card's rule."""
    if "center" in rule:  # a preset or CENTER,WIDTH: the card gives the numbers
        return linear(values, rule["center"], rule["width"], "LINEAR")
    if rule["dicom_window"] == "file" and "WindowCenter" in ds and "WindowWidth" in ds:
        first = [float(ds[k].value[0] if ds[k].VM > 1 else ds[k].value)
                 for k in ("WindowCenter", "WindowWidth")]  # fmt: skip
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
        return linear(values, first[0], first[1], function)
    if rule["dicom_window"] == "file" and "VOILUTSequence" in ds:
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        mapped = apply_voi(stored if "ModalityLUTSequence" in ds else values, ds, index=0)
        return np.asarray(mapped, np.float64) / float(2**bits - 1)
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)  # the full range
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    ends = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if signed else [0, 2**bits - 1])
    if "ModalityLUTSequence" in ds:
        ends = np.clip(ends, 0, None).astype(np.uint16)
    ends = np.asarray(apply_modality_lut(ends, ds), np.float64)
    low, high = float(ends.min()), float(ends.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def linear(x, c, w, function):
    """DICOM PS3.3 C.11.2.1.2: LINEAR, LINEAR_EXACT and SIGMOID."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    if function == "LINEAR_EXACT":
        return np.clip((x - c) / w + 0.5, 0.0, 1.0)
    if w <= 1:
        return (x > c - 0.5).astype(np.float64)
    return np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0)


def bicubic(x):
    x = np.abs(x)  # Pillow's a = -0.5, in its order of operations
    near, far = (1.5 * x - 2.5) * x * x + 1.0, (((x - 5.0) * x + 8.0) * x - 4.0) * -0.5
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


FILTERS = {  # Pillow's resampling filters and their supports (libImaging/Resample.c)
    "bilinear": (1.0, lambda x: np.maximum(1.0 - np.abs(x), 0.0)),
    "bicubic": (2.0, bicubic),
    "lanczos": (3.0, lambda x: np.where(np.abs(x) < 3.0, np.sinc(x) * np.sinc(x / 3.0), 0.0)),
}


def weights(size_in, size_out, name):
    """(size_out, size_in) fixed-point weights, as Pillow's precompute_coeffs makes them."""
    support, kernel = FILTERS[name]
    scale = size_in / size_out
    filterscale = max(scale, 1.0)
    matrix = np.zeros((size_out, size_in))
    for out in range(size_out):
        center = (out + 0.5) * scale
        low = max(int(center - support * filterscale + 0.5), 0)
        high = min(int(center + support * filterscale + 0.5), size_in)
        k = kernel((np.arange(low, high) - center + 0.5) * (1.0 / filterscale))
        total = np.cumsum(k)[-1] if len(k) else 0.0  # summed in order, as Pillow does
        matrix[out, low:high] = k / total if total != 0 else k
    return np.trunc(matrix * (1 << 22) + np.where(matrix < 0, -0.5, 0.5))  # 22 bits


def resize(gray, width, height, name):
    """Pillow's Image.resize of an 8-bit image: horizontal pass, 8-bit rounding, vertical
    (Pillow's documented order; Pillow 13 sometimes goes vertical first)."""
    for axis, size in ((1, width), (0, height)):
        if gray.shape[axis] != size:  # exact in float64: integers far below 2**53
            moved = np.moveaxis(gray, axis, -1)
            rows = np.ascontiguousarray(moved, np.float64).reshape(-1, moved.shape[-1])
            summed = rows @ weights(moved.shape[-1], size, name).T + (1 << 21)
            out = np.clip(np.floor(summed / (1 << 22)), 0, 255).reshape(*moved.shape[:-1], size)
            gray = np.moveaxis(out, -1, axis)
    return gray.astype(np.uint8)


def pixels_of(path, card):
    """The model's input row for a DICOM file: uint8 (height, width, 3), as headstart's."""
    prep, decode, rule = card["preprocessing"], card["decode_options"], card["input"]["dicom"]
    assert prep["crop_mode"] == "center", "this example does the 'center' crop only"
    assert prep["crop_pct"] <= 1, "this example crops; it does not pad"
    assert prep["interpolation"] in FILTERS, "this example does bicubic, bilinear, lanczos"
    ds = pydicom.dcmread(path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    stored = ds.pixel_array[frames // 2] if frames > 1 else ds.pixel_array  # middle frame
    photometric = str(ds.PhotometricInterpretation).strip().upper()
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        gray = window(stored, apply_modality_lut(stored, ds).astype(np.float64), ds, rule)
        gray = 1.0 - gray if photometric == "MONOCHROME1" else gray  # high values bright
        image = np.rint(np.clip(gray, 0.0, 1.0) * 255.0).astype(np.uint8)[:, :, None]
    else:  # colour: no window, BitsStored scaled to 8 bits
        palette = photometric == "PALETTE COLOR"
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2] if palette
                   else ds.get("BitsStored", 8) or 8)  # fmt: skip
        rgb = apply_color_lut(stored, ds) if palette else stored
        top = float(2 ** min(bits, 32) - 1)
        image = np.rint(np.clip(rgb / top, 0.0, 1.0) * 255.0).astype(np.uint8)
    h, w = image.shape[:2]
    if max(w, h) > decode["max_side"]:  # Pillow's thumbnail; exact below 4x (no reduce())
        side, aspect = decode["max_side"], w / h
        if aspect <= 1:  # tall: the width follows
            w = max(min(math.floor(side * aspect), math.ceil(side * aspect),
                        key=lambda n: abs(aspect - n / side)), 1)  # fmt: skip
            h = side
        else:  # wide: the height follows
            h = max(min(math.floor(side / aspect), math.ceil(side / aspect),
                        key=lambda n: 0 if n == 0 else abs(aspect - side / n)), 1)  # fmt: skip
            w = side
        image = resize(image, w, h, "lanczos")
    _, height, width = prep["input_size"]  # shorter side to size / crop_pct, centre crop
    scale = math.floor(height / prep["crop_pct"])
    size = (scale, int(scale * h / w)) if w <= h else (int(scale * w / h), scale)
    image = resize(image, size[0], size[1], prep["interpolation"])
    left, top = round((size[0] - width) / 2), round((size[1] - height) / 2)
    crop = image[top : top + height, left : left + width]
    return np.ascontiguousarray(np.broadcast_to(crop, (height, width, 3)))  # gray: R = G = B


def main():
    session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    card = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    pixels = pixels_of(sys.argv[2], card)
    probabilities = session.run(["probabilities"], {"image": pixels[None]})[0][0]  # NHWC
    best = int(probabilities.argmax())
    print(card["classes"][best], f"{probabilities[best]:.6f}")
    for name, p in zip(card["classes"], probabilities, strict=True):
        print(f"  {name} {p:.6f}")


if __name__ == "__main__":
    main()
