"""Several feature-extraction models as one: ``fit_ensemble``.

Each member is a frozen pretrained body (a backbone at an input size, read at a set of
layers). The members become one ``EnsembleNetwork`` with one image input (the largest
member's; the others resize it inside the network), so the fitted ensemble, an
``EnsembleClassifier``, is an ``ImageClassifier`` but in the few places it differs: one
model to evaluate, predict, save, load, serve and export as one ONNX graph.

Its training features are computed once, through that same network (so training and
prediction see the same pixels), and both ways of combining the members are scored by
stratified cross-validation on them: each member's own linear probe with the
probabilities averaged, or one probe on the features concatenated. The better one is
kept, and the plan says what each scored.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from torch import nn

from headstart._internal.validation import (
    IMAGE_SIZE_RANGE,
    image_size_fits,
    invalid,
    is_layer_name,
)
from headstart.backbones.device import select_device
from headstart.backbones.weights import WeightsInfo
from headstart.data.dataset import ImageDataset
from headstart.errors import ConfigError, DataError
from headstart.estimator.ensemble_features import member_features
from headstart.estimator.fitting import checked_backbone
from headstart.estimator.image_classifier import ImageClassifier
from headstart.estimator.model_files import ModelFiles
from headstart.strategies.base import Plan, PlanRow
from headstart.strategies.common import loss_weights
from headstart.strategies.registry import get_strategy
from headstart.train.callbacks import Callback
from headstart.train.config import TrainConfig
from headstart.train.network import Classifier, EnsembleNetwork, HeadSpec, MemberInput
from headstart.train.probe import fit_linear_probe, stratified_folds
from headstart.train.weighting import PROBE_PRIOR_SHIFT, class_weighting

__all__ = ["COMBINE_CHOICES", "EnsembleClassifier", "EnsembleMember", "EnsembleFit", "fit_ensemble"]

COMBINE_CHOICES = ("auto", "average", "concat")
_STRATEGY = "feature-extraction"  # every member is a frozen body with a probe on top


@dataclass(frozen=True)
class EnsembleMember:
    """One member: a backbone, its input size (None: its own) and the layers read."""

    backbone: str
    image_size: int | None = None
    layers: tuple[str, ...] | None = None  # None: feature extraction's default

    def __post_init__(self) -> None:
        owner = "EnsembleMember"
        if not isinstance(self.backbone, str) or not self.backbone:
            raise invalid(owner, "backbone", "a timm architecture name", self.backbone)
        if self.image_size is not None and not image_size_fits(self.image_size):
            raise invalid(owner, "image_size", f"None or {IMAGE_SIZE_RANGE}", self.image_size)
        if self.layers is not None:
            layers = self.layers
            if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
                raise invalid(owner, "layers", "a list of layer names, e.g. ['final']", layers)
            if not all(is_layer_name(layer) for layer in layers):
                raise invalid(owner, "layers", "names such as 'final' or 'stage-1_2x2'", layers)
            object.__setattr__(self, "layers", tuple(layers))  # a list is fine, and hashable

    @property
    def name(self) -> str:
        size = f"@{self.image_size}" if self.image_size else ""
        return f"{self.backbone}{size}"


class EnsembleClassifier(ImageClassifier):
    """A fitted ensemble, from ``fit_ensemble`` or ``ImageClassifier.load`` of its
    folder: an ``ImageClassifier`` whose network is several frozen bodies as one, with
    ``ensemble_`` describing them (how they combine, each member's input, layers and
    width). It differs in four places: it is trained by ``fit_ensemble``, not ``fit``;
    its predictions never come from the feature cache; a dataset (the test pass) is
    scored from its members' features, as its training features were extracted, not by
    the network's forward pass; and its saved description lists its members' layers in
    its ``ensemble`` block instead of one set of layers."""

    def prepare(self) -> NoReturn:
        self._refuse_training("prepare")

    def fit(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse_training("fit")

    def _refuse_training(self, method: str) -> NoReturn:
        raise ConfigError(
            f"EnsembleClassifier.{method}: this model is an ensemble ({self.backbone}); "
            f"{method} cannot train one. Use headstart.fit_ensemble(train, members) instead."
        )

    def _set_fitted(self, *, ensemble: dict[str, Any], **state: Any) -> None:
        super()._set_fitted(**state)
        self.ensemble_ = ensemble

    def _saved_state(self, files: ModelFiles, folder: Path) -> dict[str, Any]:
        return {**super()._saved_state(files, folder), "ensemble": files.metadata["ensemble"]}

    def _features_cached(self) -> bool:
        return False  # its members see the input resized: cached body features are not theirs

    def _dataset_proba(self, images: ImageDataset, *, batch_size: int, device: Any) -> np.ndarray:
        """Each member's fast-path features in one pass (as in training), then the
        members' heads in fp32: see ``headstart.estimator.ensemble_features``."""
        import torch

        names = [f"{m['backbone']} {m['input']['size'][-1]} px" for m in self.ensemble_["members"]]
        callback = self.callback or Callback()
        features, _ = member_features(
            self.model_, names, images, self.preprocessing_,
            self.config_.replace(batch_size=batch_size), device, callback,
            stage="features (every member)", budgeted=False,
        )  # fmt: skip
        with torch.inference_mode():
            logits = self.model_.logits_of([torch.from_numpy(f).float() for f in features])
            return torch.softmax(logits, dim=1).numpy()

    def metadata(self) -> dict[str, Any]:
        # Its members each read their own layers: its "ensemble" block lists them.
        return {**super().metadata(), "layers": None, "ensemble": self.ensemble_}


@dataclass
class EnsembleFit:
    """How the combination was chosen: cross-validated accuracy of each way tried."""

    combine: str
    scores: dict[str, float | None] = field(default_factory=dict)
    folds: int = 0


def fit_ensemble(
    train: ImageDataset,
    members: Sequence[EnsembleMember],
    *,
    combine: str = "auto",
    weights: str = "auto",
    config: TrainConfig | None = None,
    folds: int = 5,
    callback: Callback | None = None,
) -> EnsembleClassifier:
    """A fitted ``EnsembleClassifier``: the ``members`` as one network.

    ``combine``: "average" (each member's probe, probabilities averaged), "concat" (one
    probe on the members' features side by side) or "auto" (the one with the better
    ``folds``-fold cross-validated accuracy on ``train``; ties go to "average").
    ``config``: feature extraction's (its ``seed``, ``probe_l2``, ``class_weights``,
    ``device``, ``fast`` and ``batch_size`` are used; ``image_size`` and ``layers`` are
    each member's).
    """
    owner = "fit_ensemble"
    started = time.perf_counter()
    members = _checked_members(members, owner)
    if combine not in COMBINE_CHOICES:
        raise invalid(owner, "combine", " or ".join(map(repr, COMBINE_CHOICES)), combine)
    if not isinstance(train, ImageDataset):
        raise invalid(owner, "train", "an ImageDataset", type(train).__name__)
    if len(train.classes) < 2:
        raise DataError(f"{owner}: training needs at least 2 classes; got {train.classes}.")
    strategy = get_strategy(_STRATEGY)
    config = _checked_config(strategy.default_config() if config is None else config, owner)
    callback = callback or Callback()
    device = select_device(config.device, owner="TrainConfig")
    backbones = [
        checked_backbone(
            m.backbone,
            weights,
            strategy,
            config.replace(image_size=m.image_size, layers=m.layers or config.layers),
        )
        for m in members
    ]
    layers = [m.layers or config.layers for m in members]
    # The largest member's input is the ensemble's: the others are resized down from it.
    lead = max(range(len(members)), key=lambda i: math.prod(backbones[i].preprocessing.input_size))
    prep = backbones[lead].preprocessing
    bodies = [
        Classifier(b.model, ls, nn.Identity()) for b, ls in zip(backbones, layers, strict=True)
    ]
    inputs = [MemberInput.between(prep, b.preprocessing) for b in backbones]
    # Headless for extraction: its output is every member's features side by side.
    extractor = EnsembleNetwork(bodies, inputs, "concat", head=nn.Identity())
    names = [f"{b.name} {b.preprocessing.input_size[1]} px" for b in backbones]
    features, kept = member_features(extractor, names, train, prep, config, device, callback)
    if len(kept) < len(members):  # a budget stopped some: the ensemble is of those kept
        members, backbones, layers, bodies, inputs = (
            [xs[k] for k in kept] for xs in (members, backbones, layers, bodies, inputs)
        )
    labels = train.labels
    num_classes = len(train.classes)
    weighting = class_weighting(labels, num_classes, config.class_weights, strategy.auto_balance)
    config = config.replace(class_weights=weighting.used)  # saved as it trained
    class_weights = loss_weights(labels, num_classes, config, probe=True)

    def probe(x: np.ndarray, y: np.ndarray) -> Any:
        return fit_linear_probe(
            x,
            y,
            num_classes,
            l2=config.probe_l2,
            class_weights=class_weights,
            prior_shift=0.0 if class_weights is None else PROBE_PRIOR_SHIFT,
            seed=config.seed,
        )

    chosen = _choose(features, labels, combine, folds, config.seed, probe, callback)
    widths = [f.shape[1] for f in features]
    if chosen.combine == "concat":
        fitted = probe(np.concatenate(features, axis=1), labels)
        network = EnsembleNetwork(bodies, inputs, "concat", head=fitted.head)
        spec = HeadSpec("linear", sum(widths), num_classes)
    else:
        for body, x in zip(bodies, features, strict=True):
            body.head = probe(x, labels).head
        network = EnsembleNetwork(bodies, inputs, "average")
        spec = HeadSpec("linear", max(widths), num_classes)
    network = network.eval()
    plan = _plan(members, backbones, layers, widths, chosen, prep, num_classes)
    plan.notes += [note for note in (weighting.note(),) if note is not None]
    callback.on_plan(plan)
    return _as_classifier(
        network, train, config, weights, backbones, layers, widths, spec, plan, chosen, started,
        prep,
    )  # fmt: skip


def _checked_config(config: Any, owner: str) -> TrainConfig:
    if not isinstance(config, TrainConfig):
        raise invalid(owner, "config", "a TrainConfig or None", config)
    if config.head != "linear" or config.augment:
        raise ConfigError(
            f"{owner}: an ensemble's heads are linear probes on features computed once; "
            f"got head={config.head!r}, augment={config.augment}.",
            hint="Leave {head} and {augment} at their defaults for an ensemble.",
        )
    return config


def _checked_members(members: Any, owner: str) -> list[EnsembleMember]:
    if isinstance(members, str | bytes) or not isinstance(members, Sequence):
        raise invalid(owner, "members", "a list of EnsembleMember", members)
    members = list(members)
    if not all(isinstance(m, EnsembleMember) for m in members):
        raise invalid(owner, "members", "a list of EnsembleMember", members)
    if len(members) < 2:
        raise ConfigError(
            f"{owner}: an ensemble needs at least 2 members; got {len(members)}.",
            hint="Train a single model instead, or give {ensemble} 2 or more.",
        )
    if len({(m.backbone, m.image_size, m.layers) for m in members}) != len(members):
        raise invalid(owner, "members", "distinct members", [m.name for m in members])
    return members


def _choose(
    features: list[np.ndarray],
    labels: np.ndarray,
    combine: str,
    folds: int,
    seed: int,
    probe: Callable[[np.ndarray, np.ndarray], Any],
    callback: Callback,
) -> EnsembleFit:
    if combine != "auto" or len(features) == 1:  # one member: both ways are the same
        return EnsembleFit(combine if combine != "auto" else "average")
    fold_of = stratified_folds(labels, folds, seed)
    if fold_of is None:
        callback.on_stage("ensemble", "a class has 1 image: no cross-validation, average")
        return EnsembleFit("average", {"average": None, "concat": None})
    n_folds = int(fold_of.max()) + 1
    callback.on_stage(
        "ensemble", f"{n_folds}-fold cross-validation of averaged and concatenated probes"
    )
    correct = {"average": 0, "concat": 0}
    for fold in range(n_folds):
        held = fold_of == fold
        y = labels[~held]
        mean = np.mean([probe(x[~held], y).predict_proba(x[held]) for x in features], axis=0)
        correct["average"] += int((mean.argmax(1) == labels[held]).sum())
        wide = np.concatenate(features, axis=1)
        guess = probe(wide[~held], y).predict_proba(wide[held]).argmax(1)
        correct["concat"] += int((guess == labels[held]).sum())
    scores = {k: v / len(labels) for k, v in correct.items()}
    best = "concat" if scores["concat"] > scores["average"] else "average"
    return EnsembleFit(best, scores, n_folds)


def _plan(
    members: list[EnsembleMember],
    backbones: list[Any],
    layers: list[tuple[str, ...]],
    widths: list[int],
    chosen: EnsembleFit,
    prep: Any,
    num_classes: int,
) -> Plan:
    rows = []
    for m, b in zip(members, backbones, strict=True):
        size = b.preprocessing.input_size[1]
        params = sum(p.numel() for p in b.model.parameters())
        rows.append(PlanRow(f"{m.backbone}@{size}", params, False, None))
    notes = [
        f"input: {prep.input_size[1]}x{prep.input_size[2]} px; smaller members get it "
        "resized (bilinear, antialiased) inside the network",
        *(
            f"member {i + 1} reads {', '.join(ls)} ({w:,} features)"
            for i, (ls, w) in enumerate(zip(layers, widths, strict=True))
        ),
    ]
    if chosen.scores and None not in chosen.scores.values():
        tried = ", ".join(f"{k} {v:.1%}" for k, v in chosen.scores.items())
        notes.append(f"combine: {chosen.combine} ({chosen.folds}-fold CV on training: {tried})")
    else:
        notes.append(f"combine: {chosen.combine}")
    if chosen.combine == "concat":
        head = "new head (linear, all features)"
    else:
        head = f"new heads ({len(widths)} linear, averaged)"
    heads = sum(widths) * num_classes + num_classes * (
        1 if chosen.combine == "concat" else len(widths)
    )
    heads = [PlanRow(head, heads, True, None)]
    stages = ["features (every member, one pass)", "cross-validated combine", "linear probes"]
    return Plan("ensemble", rows + heads, "frozen (running statistics kept)", stages, notes)


def _as_classifier(
    network: EnsembleNetwork,
    train: ImageDataset,
    config: TrainConfig,
    weights: str,
    backbones: list[Any],
    layers: list[tuple[str, ...]],
    widths: list[int],
    spec: HeadSpec,
    plan: Plan,
    chosen: EnsembleFit,
    started: float,
    prep: Any,
) -> EnsembleClassifier:
    """An ``EnsembleClassifier`` holding the ensemble, fitted as ``fit`` would leave it;
    ``prep``: its input, the largest member's (also when a budget dropped that member:
    the features the probes learned from were made from it)."""
    name = "ensemble:" + "+".join(f"{b.name}@{b.preprocessing.input_size[1]}" for b in backbones)
    clf = EnsembleClassifier(backbone=name, strategy=_STRATEGY, config=config, weights=weights)
    digests = "".join((b.weights.sha256 or b.weights.location) for b in backbones)
    clf._set_fitted(
        model=network,
        classes=train.classes,
        config=config.replace(image_size=prep.input_size[1]),
        preprocessing=prep,
        decode_options=train.options,
        weights_info=WeightsInfo(
            source="+".join(sorted({b.weights.source for b in backbones})),
            location="",
            sha256=hashlib.sha256(digests.encode()).hexdigest(),
        ),
        head_spec=spec,
        plan=plan,
        fit_seconds=time.perf_counter() - started,
        validation_images=0,
        ensemble={
            "combine": chosen.combine,
            "cross_validation": chosen.scores,
            "members": [
                {
                    "backbone": b.name,
                    "weights": {"source": b.weights.source, "sha256": b.weights.sha256},
                    "layers": list(ls),
                    "input": {
                        "size": list(i.size),
                        "scale": list(i.scale),
                        "shift": list(i.shift),
                    },
                    "width": w,
                }
                for b, ls, i, w in zip(backbones, layers, network.inputs, widths, strict=True)
            ],
        },
    )
    return clf
