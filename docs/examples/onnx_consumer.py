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
prep, decode = card["preprocessing"], card["decode_options"]
assert prep["crop_mode"] == "center", "this example does the 'center' crop only"
image = ImageOps.exif_transpose(Image.open(sys.argv[2])).convert("RGBA")  # 8-bit images
rgb = Image.new("RGB", image.size, tuple(decode["background"]))  # transparency on it
rgb.paste(image, mask=image.getchannel("A"))
rgb.thumbnail((decode["max_side"],) * 2, Image.Resampling.LANCZOS)  # huge photos first
_, height, width = prep["input_size"]  # shorter side to size / crop_pct, then centre crop
scale, (w, h) = math.floor(height / prep["crop_pct"]), rgb.size
size = (scale, int(scale * h / w)) if w <= h else (int(scale * w / h), scale)
rgb = rgb.resize(size, Image.Resampling[prep["interpolation"].upper()])
left, top = round((size[0] - width) / 2), round((size[1] - height) / 2)
pixels = np.asarray(rgb.crop((left, top, left + width, top + height)), dtype=np.uint8)
probabilities = session.run(["probabilities"], {"image": pixels[None]})[0][0]  # uint8 NHWC
best = int(probabilities.argmax())
print(card["classes"][best], f"{probabilities[best]:.4f}")
