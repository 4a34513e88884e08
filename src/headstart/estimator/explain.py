"""Where the model looks: Grad-CAM heatmaps of a fitted model, in the image's own frame.

Grad-CAM (Selvaraju et al., 2017) weighs each channel of a feature map by the mean
gradient of one class's score over it, sums the channels and keeps the positive part.
The map is the one the model's own forward pass made (``pooled_features(keep=...)``),
found through timm's model contract, never by a module name:

- a model fed by ``"final"``: the final output of ``forward_features`` when it is a map
  (EfficientNet: after ``conv_head``/``bn2``, past the last block; ResNet: ``layer4``;
  ConvNeXt: the last stage, ``stages.3``), or, for a model whose final output is tokens
  (ViT), the input of its last block (timm's ``feature_info[-1]["module"]``,
  ``blocks.<last>``) as a map of patches: the last block's own output reaches a
  class-token head only through that token, so its gradient on the patches is zero;
- a model fed by stages only: the deepest of them.

Written here with autograd rather than taken from the ``grad-cam`` package: that package
needs a target module per architecture and a token-reshaping function per ViT, while
timm's contract already names the map every family computes, so one function serves
every strategy, every family and the ensemble (its members' maps, each weighed by the
ensemble's own score, resized to the ensemble's input and summed), with no dependency.

A heatmap covers the whole image at its own aspect ratio: the model saw a resized,
centre-cropped square, so the map is placed back on that crop, and what the crop cut
off (which the model never saw) is 0.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from headstart._internal.validation import invalid, positive_int
from headstart.backbones.device import select_device
from headstart.backbones.preprocessing import Preprocessing
from headstart.data.dataset import ImageDataset
from headstart.errors import ConfigError
from headstart.estimator.results import check_image_inputs, image_input
from headstart.features.layers import parse_layer, pooled_features
from headstart.train.network import Classifier, EnsembleNetwork

__all__ = ["Explanation", "explain_images", "grad_cam", "in_frame", "overlay"]

MAX_HEATMAP_SIDE = 1024  # a heatmap's longer edge at most (the image's aspect kept)


@dataclass(frozen=True, eq=False)  # holds arrays and an image: compared by identity
class Explanation:
    """Where the model looked for one class in one image."""

    source: str  # the file, or "images[i]" for an in-memory image
    target: str  # the class explained
    probability: float  # the model's probability of ``target`` for this image
    predicted: str  # the model's top class
    heatmap: np.ndarray  # (height, width) float32 in [0, 1], the image's own aspect
    layer: str  # the map it was computed on, e.g. "final" or "stage4"
    image: Image.Image = field(repr=False)  # the decoded image it explains

    def overlay(self, alpha: float = 0.5) -> Image.Image:
        return overlay(self.image, self.heatmap, alpha)

    def png(self, alpha: float = 0.5) -> bytes:
        """The heatmap over the image, as PNG bytes."""
        buffer = io.BytesIO()
        self.overlay(alpha).save(buffer, format="PNG")
        return buffer.getvalue()


def _member_maps(network: Classifier, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(pooled features the head takes, the tensor Grad-CAM reads, the function that lays
    it and its gradient out as (B, C, h, w), the layer's name) of one forward pass of
    ``network`` (see the module's docstring for which tensor)."""
    body = network.body
    stages = {layer: parse_layer(layer, body) for layer in network.layers}
    keep: dict[Any, torch.Tensor] = {}
    tokens: list[torch.Tensor] = []  # the input of the last block, if the model has tokens
    last = (getattr(body, "feature_info", None) or [{}])[-1]
    hook = None
    if None in stages.values() and "module" in last:
        try:
            block = body.get_submodule(last["module"])
        except AttributeError:  # a name timm's feature_info gives but the model lacks
            block = None
        if block is not None:
            hook = block.register_forward_pre_hook(lambda _, args: tokens.append(args[0]))
    try:
        pooled = pooled_features(body, images, stages, keep=keep)
    finally:
        if hook is not None:
            hook.remove()
    features = torch.cat([pooled[layer] for layer in network.layers], dim=1)
    layout: Callable[[torch.Tensor], torch.Tensor] = _as_is
    if None not in stages.values():
        deepest = max(i for i in stages.values() if i is not None)
        found, name = keep[deepest], f"stage{deepest}"
    else:
        found, name = keep["final"], "final"
        if found.ndim == 4 and getattr(body, "output_fmt", "NCHW") == "NHWC":
            layout = _channels_first
        elif found.ndim == 3 and tokens:
            found, name = tokens[-1], f"input of {last['module']}"
            size = tuple(images.shape[-2:])
            layout = functools.partial(_token_map, body, size=size, last=last)
    shape = layout(found.detach()).shape
    if len(shape) != 4:
        raise ConfigError(
            f"Grad-CAM: the {name} output of {type(body).__name__} is not a map "
            f"(shape {tuple(found.shape)}); nothing to lay over the image"
        )
    return features, found, layout, name


def _as_is(found: torch.Tensor) -> torch.Tensor:
    return found


def _channels_first(found: torch.Tensor) -> torch.Tensor:
    return found.permute(0, 3, 1, 2)


def _token_map(
    body: torch.nn.Module, tokens: torch.Tensor, *, size: Sequence[int], last: dict
) -> torch.Tensor:
    """A ViT's tokens (B, N, D) as a map of patches (B, D, h, w): its prefix tokens (class,
    registers) dropped, the rest laid out on the grid the input size and patch size make."""
    prefix = int(getattr(body, "num_prefix_tokens", 0))
    reduction = int(last.get("reduction", 16))
    height, width = int(size[0]) // reduction, int(size[1]) // reduction
    if tokens.ndim != 3 or tokens.shape[1] - prefix != height * width:
        return tokens  # not laid out as expected: the caller says it is no map
    patches = tokens[:, prefix:, :]
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], height, width)


def grad_cam(
    network: Classifier | EnsembleNetwork, images: torch.Tensor, targets: Sequence[int] | None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(logits (B, K), maps (B, H, W) in [0, 1] at the input's size, layer name) for a
    batch of model inputs (B, 3, H, W); ``targets``: the class index to explain per image
    (None: each image's top class). A map that is 0 everywhere means no positive evidence."""
    network = network.eval()
    images = images.detach().requires_grad_(True)  # a graph even when every weight is frozen
    with torch.enable_grad():
        if isinstance(network, EnsembleNetwork):
            inputs = network.member_inputs(images)
            parts = [_member_maps(m, x) for m, x in zip(network.members, inputs, strict=True)]
            logits = network.logits_of([part[0] for part in parts])
            name = ", ".join(part[3] for part in parts)
        else:
            parts = [_member_maps(network, images)]
            logits, name = network.head(parts[0][0]).float(), parts[0][3]
        if targets is None:
            targets = logits.argmax(1).tolist()
        chosen = logits.gather(1, torch.as_tensor(list(targets)).view(-1, 1).to(logits.device))
        grads = torch.autograd.grad(chosen.sum(), [part[1] for part in parts])
    size = tuple(images.shape[-2:])
    cam = torch.zeros(images.shape[0], *size)
    for (_, found, layout, _), grad in zip(parts, grads, strict=True):
        found, grad = layout(found.detach()).float(), layout(grad).float()
        weights = grad.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        heat = F.relu((weights * found).sum(1, keepdim=True))
        cam += F.interpolate(heat, size=size, mode="bilinear", align_corners=False)[:, 0].cpu()
    top = cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return logits.detach(), cam / top, name


def in_frame(cam: torch.Tensor, preprocessing: Preprocessing, size: tuple[int, int]) -> np.ndarray:
    """A map over the model's input (H, W) as a map over the original image of ``size``
    (width, height), at most ``MAX_HEATMAP_SIDE`` on its longer edge: the input was the
    image resized and centre-cropped (or squashed), so each image pixel reads the input
    pixel it became; pixels the crop cut off read 0."""
    width, height = size
    shrink = min(1.0, MAX_HEATMAP_SIDE / max(width, height))
    out_w, out_h = max(1, round(width * shrink)), max(1, round(height * shrink))
    in_h, in_w = cam.shape[-2:]
    scale = math.floor(in_h / preprocessing.crop_pct)
    if preprocessing.crop_mode == "squash":
        fx, fy = scale / width, scale / height
    else:  # "center": the shorter edge to ``scale``, the aspect kept ("border": near it)
        fx = fy = scale / min(width, height)
    box_w, box_h = in_w / fx, in_h / fy  # the crop, in the image's pixels, centred
    xs = (torch.arange(out_w) + 0.5) / shrink  # pixel centres in the image
    ys = (torch.arange(out_h) + 0.5) / shrink
    gx = (xs - (width - box_w) / 2) / box_w * 2 - 1  # grid_sample's [-1, 1] over the crop
    gy = (ys - (height - box_h) / 2) / box_h * 2 - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None].float()
    placed = F.grid_sample(
        cam.float()[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return placed[0, 0].clamp(0, 1).numpy().astype(np.float32)


def explain_images(
    clf: Any,
    images: ImageDataset | Sequence[Any],
    *,
    classes: Sequence[str] | None = None,
    batch_size: int = 16,
    device: str = "auto",
) -> list[Explanation]:
    """One ``Explanation`` per image of ``images`` (a dataset, or paths, PIL images or
    arrays as ``predict`` takes them), for ``classes`` (one class name per image; None:
    each image's top class). ``clf`` is a fitted ``ImageClassifier`` or ensemble."""
    owner = f"{type(clf).__name__}.explain"
    positive_int(owner, "batch_size", batch_size)
    decoded = _decoded(images, clf.decode_options_)
    if classes is not None:
        classes = list(classes)
        if len(classes) != len(decoded):
            raise invalid(owner, "classes", f"{len(decoded)} class names, one per image", classes)
        unknown = [c for c in classes if c not in clf.classes_]
        if unknown:
            raise invalid(owner, "classes", f"names among {clf.classes_}", unknown[0])
    device = select_device(device, owner=owner)
    transform = clf.preprocessing_.transform(training=False)
    network = clf.model_.to(device)
    found: list[Explanation] = []
    try:
        for start in range(0, len(decoded), batch_size):
            chunk = decoded[start : start + batch_size]
            batch = torch.stack([transform(image) for _, image in chunk]).to(device)
            wanted = None if classes is None else classes[start : start + len(chunk)]
            targets = None if wanted is None else [clf.classes_.index(c) for c in wanted]
            logits, cams, layer = grad_cam(network, batch, targets)
            proba = torch.softmax(logits.float(), dim=1).cpu()
            chosen = logits.argmax(1).tolist() if targets is None else targets
            for (source, image), cam, row, k in zip(chunk, cams, proba, chosen, strict=True):
                heat = in_frame(cam, clf.preprocessing_, image.size)
                found.append(
                    Explanation(
                        source, clf.classes_[k], float(row[k]), clf.classes_[int(row.argmax())],
                        heat, layer, image,
                    )
                )  # fmt: skip
    finally:  # the fitted model goes back as it came: on the CPU
        clf.model_.cpu()
    return found


def _decoded(images: Any, options: Any) -> list[tuple[str, Image.Image]]:
    if isinstance(images, ImageDataset):
        return [(images.source(i), images.image(i).convert("RGB")) for i in range(len(images))]
    if isinstance(images, (str, bytes, Image.Image, np.ndarray)) or not isinstance(
        images, Sequence
    ):
        raise invalid("explain", "images", "a dataset or a list of paths/images", images)
    items = check_image_inputs(images)
    return [
        (str(item) if not isinstance(item, Image.Image | np.ndarray) else f"images[{i}]",
         image_input(item, i, options))
        for i, item in enumerate(items)
    ]  # fmt: skip


# A perceptual colour ramp (dark blue -> cyan -> yellow -> red), anchors in RGB.
_RAMP = np.array(
    [[0, 0, 80], [0, 90, 200], [0, 200, 200], [250, 230, 0], [230, 40, 0]], dtype=np.float32
)


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """``heatmap`` (values in [0, 1]) coloured and laid over ``image``, at the heatmap's
    size; where the map is 0 the image shows through darkened, not coloured."""
    heat = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0)
    height, width = heat.shape
    base = np.asarray(image.convert("RGB").resize((width, height), Image.BILINEAR), np.float32)
    position = heat * (len(_RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(_RAMP) - 2)
    frac = (position - low)[..., None]
    colour = _RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac
    weight = (alpha * np.sqrt(heat))[..., None]  # faint evidence stays faint
    mixed = base * (1 - weight) * (0.55 + 0.45 * heat[..., None]) + colour * weight
    return Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8), "RGB")
