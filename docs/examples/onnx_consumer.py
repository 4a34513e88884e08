"""Classify an image with a model from `headstart export`, using onnxruntime, Pillow and
numpy only: no headstart, no torch.  python onnx_consumer.py model.onnx photo.jpg"""

import json
import math
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
card = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
prep = card["preprocessing"]  # crop_mode "center": shorter side to size / crop_pct, centre crop
_, height, width = prep["input_size"]
image = ImageOps.exif_transpose(Image.open(sys.argv[2])).convert("RGB")
scale, (w, h) = math.floor(height / prep["crop_pct"]), image.size
size = (scale, int(scale * h / w)) if w <= h else (int(scale * w / h), scale)
image = image.resize(size, Image.Resampling[prep["interpolation"].upper()])
left, top = round((size[0] - width) / 2), round((size[1] - height) / 2)
pixels = np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.uint8)
probabilities = session.run(["probabilities"], {"image": pixels[None]})[0][0]  # uint8 NHWC
best = int(probabilities.argmax())
print(card["classes"][best], f"{probabilities[best]:.4f}")
