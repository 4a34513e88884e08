"""What both ways of ranking share: each training image decoded once for every
(backbone, size), one open backbone per (backbone, size) whose features grow as more of
the training images are asked for, and a candidate scored from its features.

Decoding once matters for folders of photos (a JPEG decode costs about as much as a
small network's forward pass); the resize to each candidate size still happens per
size, in the backbone's own preprocessing, so the features are bit-identical to those
of images decoded afresh.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from headstart.data.dataset import ImageDataset
from headstart.errors import HeadstartError
from headstart.rank.evidence import logme
from headstart.rank.ranking import Candidate, CandidateScore
from headstart.rank.scores import knn_accuracy

__all__ = [
    "DecodedImages",
    "OpenPair",
    "candidate_score",
    "group_pairs",
    "latency_ms",
    "open_pair",
    "with_known_layers",
]

DECODED_BYTES = 2 << 30  # past this many bytes of decoded pixels, images decode per use


class DecodedImages:
    """The training images, each decoded on first use and kept (up to ``max_bytes``),
    so every (backbone, size) and every round of a ranking reads the same pixels."""

    def __init__(self, dataset: ImageDataset, max_bytes: int = DECODED_BYTES) -> None:
        self.dataset = dataset
        self.max_bytes = max_bytes
        self.decoded = 0  # images decoded so far (each at most once while they fit)
        self._arrays: dict[int, np.ndarray] = {}
        self._bytes = 0
        self._hashes = dataset.content_hashes()
        self._sizes = dataset.original_sizes()

    def subset(self, rows: Sequence[int]) -> ImageDataset:
        """``dataset.subset(rows)``, its images from memory: the same content hashes,
        decode options and labels, so the feature cache keys them as the originals."""
        rows = [int(r) for r in rows]
        for row in rows:
            if row not in self._arrays:
                pixels = np.asarray(self.dataset.image(row))
                self.decoded += 1
                if self._bytes + pixels.nbytes > self.max_bytes:
                    return self.dataset.subset(rows)  # too many to hold: decode per use
                self._arrays[row] = pixels
                self._bytes += pixels.nbytes
        return ImageDataset(
            classes=self.dataset.classes,
            labels=self.dataset.labels[rows],
            sources=[self.dataset.source(r) for r in rows],
            content_hashes=[self._hashes[r] for r in rows],
            report=self.dataset.report,
            options=self.dataset.options,
            arrays=[self._arrays[r] for r in rows],
            original_sizes=[self._sizes[r] for r in rows],
        )


@dataclass
class OpenPair:
    """One (backbone, size): its model, the candidates it serves, and the features of
    the training rows extracted so far (row order as asked)."""

    backbone: Any
    members: list[Any]  # its Candidates whose layers the model has
    layers: list[str]
    parameters: int
    latency_ms: float
    rows: list[int] = field(default_factory=list)
    features: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0  # extraction so far, this run
    from_cache: int = 0
    extracted: int = 0

    def grow(
        self,
        rows: Sequence[int],
        images: DecodedImages,
        cache: Any,
        *,
        device: str,
        batch_size: int,
        notice: Callable[[str], None],
    ) -> dict[str, np.ndarray]:
        """The features of ``rows`` (a prefix-extension of the rows had so far): only the
        new rows go to the cache or the backbone."""
        from headstart.features.cache import cached_features

        have = set(self.rows)
        new = [int(r) for r in rows if int(r) not in have]
        if new:
            began = time.perf_counter()
            features, use = cached_features(
                self.backbone, images.subset(new), cache, layers=self.layers, device=device,
                batch_size=batch_size, notice=notice,
            )  # fmt: skip
            self.seconds += time.perf_counter() - began
            self.from_cache += use.from_cache
            self.extracted += use.extracted
            self.rows += new
            self.features = {
                layer: np.concatenate([self.features[layer], features[layer]])
                if layer in self.features
                else features[layer]
                for layer in self.layers
            }
        where = {r: i for i, r in enumerate(self.rows)}
        index = np.array([where[int(r)] for r in rows], dtype=np.int64)
        if len(index) == len(self.rows) and (index == np.arange(len(index))).all():
            return self.features
        return {layer: values[index] for layer, values in self.features.items()}


def group_pairs(candidates: Sequence[Candidate]) -> dict[tuple[str, int], list[Candidate]]:
    """The candidates of each (backbone, size), in their first appearance's order."""
    groups: dict[tuple[str, int], list[Candidate]] = {}
    for candidate in candidates:
        groups.setdefault((candidate.backbone, candidate.image_size), []).append(candidate)
    return groups


def open_pair(
    name: str,
    size: int,
    members: list[Candidate],
    scores: list[CandidateScore],
    *,
    weights: str,
    device: str,
    seed: int,
) -> Any:
    """The ``OpenPair`` of one (backbone, size), or None when none of its ``members``
    can be scored (each then goes to ``scores`` with its reason). Raises the
    HeadstartError of a backbone that cannot be built."""
    import torch

    from headstart.backbones.registry import create_backbone

    # Seeded: a random start (weights "none") is the seed's, the same on every run and
    # on every rank of a distributed one.
    torch.manual_seed(seed)
    backbone = create_backbone(name, weights, image_size=size)
    members = with_known_layers(members, backbone, scores)
    if not members:
        return None
    return OpenPair(
        backbone=backbone,
        members=members,
        layers=list(dict.fromkeys(layer for c in members for layer in c.layers)),
        parameters=sum(p.numel() for p in backbone.model.parameters()),
        latency_ms=latency_ms(backbone, device),
    )


def candidate_score(
    candidate: Candidate, x: np.ndarray, labels: np.ndarray, pair: Any, accuracy: float | None
) -> CandidateScore:
    """A scored candidate: its features ``x`` (one row per label), its probe ``accuracy``."""
    return CandidateScore(
        candidate,
        predicted_accuracy=accuracy,
        logme=logme(x, labels),
        knn_accuracy=knn_accuracy(x, labels),
        feature_width=int(x.shape[1]),
        extraction_seconds=pair.seconds,
        images_from_cache=pair.from_cache,
        images_scored=len(labels),
        parameters=pair.parameters,
        latency_ms=pair.latency_ms,
    )


def with_known_layers(
    members: list[Candidate], backbone: Any, scores: list[CandidateScore]
) -> list[Candidate]:
    """The candidates whose layers ``backbone`` has (a grid on a ViT's final tokens is
    not one); the others go to ``scores`` failed, so the rest of its candidates go on."""
    from headstart.features.layers import check_grid_layers, parse_layer

    kept = []
    for candidate in members:
        try:
            for layer in candidate.layers:
                parse_layer(layer, backbone.model)
            check_grid_layers(candidate.layers, backbone.model, backbone.preprocessing.input_size)
        except HeadstartError as exc:
            scores.append(CandidateScore(candidate, error=str(exc), exception=exc))
        else:
            kept.append(candidate)
    return kept


def latency_ms(backbone: Any, device: str) -> float:
    """The median batch-1 forward pass of the backbone on the fast path, in ms."""
    import torch

    from headstart.backbones.device import select_device
    from headstart.features.fastpath import inference_model, numerics

    where = select_device(device)
    model = backbone.model.to(where).eval()
    run = inference_model(model, where, True, backbone.preprocessing.input_size)
    x = torch.randn(1, *backbone.preprocessing.input_size, device=where)
    times = []
    try:
        with torch.inference_mode(), numerics(run, where, True):
            for i in range(13):
                began = time.perf_counter()
                run(x)
                if where.type == "cuda":  # the pass itself, not its launch
                    torch.cuda.synchronize(where)
                if i >= 3:  # the first passes warm up oneDNN
                    times.append(time.perf_counter() - began)
    finally:
        backbone.model.to(memory_format=torch.contiguous_format).cpu()
    return 1000 * float(np.median(times))
