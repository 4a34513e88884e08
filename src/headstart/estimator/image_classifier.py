"""``ImageClassifier``: the scikit-learn-shaped entry point.

``__init__`` only stores arguments; ``fit`` does the work and returns ``self``;
fitted state ends in ``_`` and is set in one place, ``_set_fitted``, whatever made
it (``fit``, ``load``, ``fit_ensemble``); using an unfitted estimator raises
``NotFittedError``. ``predict_files`` is ``results.PredictsFiles``, shared with the
ONNX runtime.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from headstart._internal.validation import invalid, positive_int
from headstart.backbones.device import select_device
from headstart.backbones.preprocessing import Preprocessing
from headstart.backbones.registry import DEFAULT_BACKBONE
from headstart.backbones.weights import WeightsInfo
from headstart.data.dataset import ImageDataset, TorchImageDataset
from headstart.data.decode import DecodeOptions
from headstart.errors import DataError, NotFittedError
from headstart.estimator.explain import Explanation, explain_images
from headstart.estimator.fitting import (
    MIN_PER_CLASS_FOR_HOLDOUT,
    carve_validation,
    check_unlabelled,
    checked_backbone,
    head_spec_of,
    run_key,
)
from headstart.estimator.model_files import META_FILE, ModelFiles, load_model, save_model
from headstart.estimator.prediction import (
    ImageList,
    network_proba,
    proba_from_cached_features,
    views_transforms,
)
from headstart.estimator.results import (
    PredictsFiles,
    check_finite_scores,
    labels_in_model_order,
)
from headstart.estimator.tta import check_tta, view_count
from headstart.features.cache import FeatureCache, missing_images
from headstart.features.fastpath import inference_model, inference_transforms
from headstart.strategies.base import FitContext, Plan
from headstart.strategies.registry import get_strategy
from headstart.train.callbacks import Callback
from headstart.train.config import TrainConfig
from headstart.train.metrics import classification_metrics
from headstart.train.network import Classifier, HeadSpec
from headstart.train.weighting import class_weighting

__all__ = ["ImageClassifier"]

# Export formats: (module, function) of the face that writes each, imported on use.
_EXPORTERS = {"onnx": ("headstart.export.exporter", "export_onnx")}
# Kinds of saved model other than a plain ImageClassifier: the block of headstart.json
# that marks one, and (module, class) of its type, imported on use (that module builds
# on this one).
_SAVED_KINDS = {"ensemble": ("headstart.estimator.ensemble", "EnsembleClassifier")}

ImageInput = ImageDataset | Sequence[str | os.PathLike[str] | Image.Image | np.ndarray]


class ImageClassifier(PredictsFiles):
    """Transfer learning in one object: ``fit``, ``predict``, ``score``, ``save``, ``load``.

    ``strategy`` is one of ``headstart.strategies.STRATEGIES`` ("feature-extraction",
    "fine-tune", "semi-supervised", "scratch"); ``config`` a ``TrainConfig`` (default:
    the strategy's own); ``weights`` where the backbone's weights come from ("auto", "bundled",
    "hub" or a file). ``cache_dir`` keeps extracted features between runs;
    ``checkpoint_dir`` keeps resumable checkpoints.
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        strategy: str = "feature-extraction",
        config: TrainConfig | None = None,
        *,
        weights: str | os.PathLike[str] = "auto",
        cache_dir: str | os.PathLike[str] | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        callback: Callback | None = None,
    ) -> None:
        self.backbone = backbone
        self.strategy = strategy
        self.config = config
        self.weights = weights
        self.cache_dir = cache_dir
        self.checkpoint_dir = checkpoint_dir
        self.callback = callback

    # ------------------------------------------------------------------ fitting

    def resolved_config(self) -> TrainConfig:
        """The config ``fit`` will use: the given one, or the strategy's defaults."""
        strategy = get_strategy(self.strategy)
        if self.config is None:
            return strategy.default_config()
        if not isinstance(self.config, TrainConfig):
            raise invalid("ImageClassifier", "config", "a TrainConfig or None", self.config)
        return self.config

    def prepare(self) -> None:
        """Build the backbone and check the settings that depend on it, before any data
        is loaded, so weights that cannot be had or settings the architecture lacks fail
        in seconds, not after a folder of images is decoded. The next ``fit`` with the
        same settings trains this backbone instead of building another."""
        config = self.resolved_config()
        strategy = get_strategy(self.strategy)
        backbone = checked_backbone(self.backbone, self.weights, strategy, config)
        self._prepared = (self._settings(config), backbone, torch.get_rng_state())

    def missing_features(self, dataset: ImageDataset) -> int | None:
        """After `prepare`: how many of ``dataset``'s images the feature cache lacks for
        this model's frozen features (0: fitting or scoring them runs no forward pass).
        None when no cache is set, the strategy trains the body, or nothing is prepared."""
        prepared = getattr(self, "_prepared", None)
        if prepared is None or not self._features_cached():
            return None
        config, backbone = prepared[0][3], prepared[1]
        device = select_device(config.device, owner="TrainConfig")
        cache = FeatureCache(Path(self.cache_dir))
        return missing_images(
            backbone, dataset, cache, layers=config.layers, fast=config.fast, device=device
        )

    def _settings(self, config: TrainConfig) -> tuple:
        return (self.backbone, os.fspath(self.weights), self.strategy, config)

    def fit(
        self,
        train: ImageDataset,
        validation: ImageDataset | None = None,
        *,
        unlabelled: ImageDataset | None = None,
        resume: bool = False,
    ) -> ImageClassifier:
        """Train on ``train``; early stopping watches ``validation`` (or a split of train).

        ``unlabelled``: images without labels, for the ``semi-supervised`` strategy
        (which needs them; the other strategies refuse them rather than ignore them).
        """
        if not isinstance(train, ImageDataset):
            raise invalid("ImageClassifier.fit", "train", "an ImageDataset", type(train).__name__)
        if len(train.classes) < 2:
            raise DataError(f"Training needs at least 2 classes; got {train.classes}.")
        strategy = get_strategy(self.strategy)
        check_unlabelled(strategy, unlabelled)
        config = self.resolved_config()
        if validation is not None and list(validation.classes) != list(train.classes):
            raise DataError(
                f"Validation classes {validation.classes} differ from training classes "
                f"{train.classes}."
            )
        callback = self.callback or Callback()
        started = time.perf_counter()
        prepared, self._prepared = getattr(self, "_prepared", None), None  # used once
        if prepared and prepared[0] == self._settings(config):
            backbone = prepared[1]
            torch.set_rng_state(prepared[2])  # as if built here: the same seeded run
        else:
            backbone = checked_backbone(self.backbone, self.weights, strategy, config)
        if validation is None and config.validation_fraction > 0:
            given = len(train)
            train, validation = carve_validation(train, config)
            if validation is None:
                callback.on_stage(
                    "validation",
                    f"no hold-out: some class has fewer than {MIN_PER_CLASS_FOR_HOLDOUT} "
                    "images, too few to spare; every epoch runs, no early stopping",
                )
            else:
                callback.on_stage(
                    "validation",
                    f"{len(validation)} of the {given} training images held out for early "
                    f"stopping; {len(train)} train",
                )
        if unlabelled is not None:
            # Labels are hidden for good, and images also given labelled are left out.
            unlabelled, _ = unlabelled.unlabelled_apart_from(train, validation)
            if not len(unlabelled):
                raise DataError(
                    "ImageClassifier.fit: every unlabelled image is also among the "
                    "labelled ones; semi-supervised needs images that are not"
                )
        # Decided on the images that train: after the hold-out, before the run's key.
        weighting = class_weighting(
            train.labels, len(train.classes), config.class_weights, strategy.auto_balance
        )
        config = config.replace(class_weights=weighting.used)
        ctx = FitContext(
            backbone=backbone,
            train=train,
            validation=validation,
            config=config,
            device=select_device(config.device, owner="TrainConfig"),
            cache=FeatureCache(Path(self.cache_dir)) if self.cache_dir is not None else None,
            checkpoint_dir=Path(self.checkpoint_dir).expanduser() if self.checkpoint_dir else None,
            resume=resume,
            callback=callback,
            run_key=run_key(self.backbone, backbone.weights, config, train, validation, unlabelled),
            unlabelled=unlabelled,
            weighting=weighting,
        )
        result = strategy.fit(ctx)
        self._set_fitted(
            model=result.model,
            classes=train.classes,
            config=config,
            preprocessing=backbone.preprocessing,
            decode_options=train.options,
            weights_info=backbone.weights,
            head_spec=head_spec_of(result.model, len(train.classes), config),
            history=[record.to_dict() for record in result.history],
            plan=result.plan,
            fit_seconds=time.perf_counter() - started,
            validation_images=len(validation) if validation is not None else 0,
            class_weighting=weighting.to_dict(),
        )
        return self

    def _set_fitted(
        self,
        *,
        model: Classifier,
        classes: Sequence[str],
        config: TrainConfig,
        preprocessing: Preprocessing,
        decode_options: DecodeOptions,
        weights_info: WeightsInfo,
        head_spec: HeadSpec,
        history: Sequence[dict[str, Any]] = (),
        plan: Plan | None = None,
        fit_seconds: float = 0.0,
        validation_images: int | None = 0,
        class_weighting: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        folder: Path | None = None,
    ) -> None:
        """Every fitted attribute, set here and nowhere else (``fit``, ``load`` and
        ``fit_ensemble`` all come through), so a fitted classifier holds the same
        state whichever made it; a kind with more state extends this method."""
        self.model_ = model.cpu().eval()
        self.classes_ = list(classes)
        self.config_ = config
        self.preprocessing_ = preprocessing
        self.decode_options_ = decode_options
        self.weights_info_ = weights_info
        self._head_spec = head_spec
        self.history_ = list(history)
        self.plan_ = plan  # None when loaded: the folder keeps it as a dict (metadata_)
        self.fit_seconds_ = float(fit_seconds)
        # Images held out of training for early stopping (0: none, every epoch ran;
        # None: not recorded, for a model loaded from a folder).
        self.validation_images_ = validation_images
        # What class_weights came to on the training images, and why (None: not
        # recorded, a model saved before "auto", or an ensemble's own heads).
        self.class_weighting_ = class_weighting
        self.metrics_ = dict(metrics or {})  # the caller's to fill (test metrics)
        self.metadata_ = metadata  # the description it was loaded from; None if fitted here
        self._folder = folder  # named by errors about what the model does
        self._kept_inference = None  # a refit or reloaded model is no earlier one's

    # --------------------------------------------------------------- prediction

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(
                "This ImageClassifier is not fitted yet; call fit(train) or "
                "ImageClassifier.load(folder) first."
            )

    def _check_ready(self, owner: str, device: str) -> None:
        self._check_fitted()
        select_device(device, owner=owner)  # a device this machine lacks fails first

    def _model_origin(self) -> Path | None:
        return self._folder

    def _proba_of_images(
        self, images: list[Image.Image], *, batch_size: int, device: str, tta: str | None = None
    ) -> np.ndarray:
        return self._proba(images, batch_size=batch_size, device=device, tta=tta)

    def tta_views(self, tta: str | None = None) -> int:
        """Forward passes per image that predicting with ``tta`` makes (1 without; see
        ``headstart.estimator.tta``)."""
        self._check_fitted()
        return view_count(check_tta(f"{type(self).__name__}.predict_proba", tta),
                          self.preprocessing_)  # fmt: skip

    def _loader(self, images: ImageInput, batch_size: int, fast: bool, tta: str) -> DataLoader:
        if view_count(tta, self.preprocessing_) > 1:
            transform, collate = views_transforms(self.preprocessing_, tta)
        else:
            transform, collate = inference_transforms(self.preprocessing_, fast)
        if isinstance(images, ImageDataset):
            data: Dataset = TorchImageDataset(images, transform)
        elif isinstance(images, (str, os.PathLike, Image.Image)):
            raise invalid("predict", "images", "a dataset or a list of paths/images", images)
        else:
            data = ImageList(images, transform, self.decode_options_)
        return DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate)

    def predict_proba(
        self,
        images: ImageInput,
        *,
        batch_size: int = 64,
        device: str = "auto",
        tta: str | None = None,
    ) -> np.ndarray:
        """Class probabilities, shape (N, len(classes_)), columns in ``classes_`` order;
        a WeightsError naming the images if any of their scores is not finite.
        ``tta``: test-time augmentation, one of ``tta.TTA_MODES`` ("none", "flip",
        "flip+crops"; None: ``tta.DEFAULT_TTA``): the mean of the probabilities of each
        image's views (``batch_size`` counts images; a pass runs their views)."""
        proba = self._proba(images, batch_size=batch_size, device=device, tta=tta)
        return check_finite_scores(proba, images, self._folder)

    def _proba(
        self, images: ImageInput, *, batch_size: int, device: str, tta: str | None = None
    ) -> np.ndarray:
        self._check_fitted()
        owner = "ImageClassifier.predict_proba"
        positive_int(owner, "batch_size", batch_size)
        tta = check_tta(owner, tta)
        views = view_count(tta, self.preprocessing_)
        # The device of this machine, not the one the model was trained on: a model
        # trained on a GPU must still predict on a laptop.
        device = select_device(device, owner=owner)
        if isinstance(images, ImageDataset) and len(images) and views == 1:
            proba = self._dataset_proba(images, batch_size=batch_size, device=device)
            if proba is not None:  # views are never cached
                return proba
        fast = self.config_.fast
        model = self.model_.to(device).eval()
        try:
            run = self._inference_model(model, device, fast)
            batches = (batch for batch, _ in self._loader(images, batch_size, fast, tta))
            chunks = network_proba(model, run, batches, device=device, fast=fast, views=views)
        finally:  # the fitted model goes back as it came: on the CPU, contiguous
            self.model_.to(memory_format=torch.contiguous_format).cpu()
        if not chunks:
            return np.zeros((0, len(self.classes_)), dtype=np.float32)
        return np.concatenate(chunks)

    def _dataset_proba(
        self, images: ImageDataset, *, batch_size: int, device: torch.device
    ) -> np.ndarray | None:
        """A labelled dataset's probabilities by a shorter way than the network, or None:
        a frozen body's from the feature cache."""
        if not self._features_cached():
            return None
        return proba_from_cached_features(self, images, batch_size=batch_size, device=device)

    def _features_cached(self) -> bool:
        """Whether predictions may come from the feature cache: a cache is set and the
        strategy never trains the body, so cached body features are the model's own."""
        return self.cache_dir is not None and get_strategy(self.strategy).frozen_body

    def _inference_model(self, model: Classifier, device: torch.device, fast: bool) -> Classifier:
        """The model to predict with; on the CPU the fast path's folded copy is kept for
        the next call (one image at a time would otherwise pay the copy and its check
        every time), as long as the fitted weights have not changed in place."""
        tensors = [*model.parameters(), *model.buffers()]
        key = (device.type, fast, sum(t._version for t in tensors))
        kept = getattr(self, "_kept_inference", None)
        if kept is not None and kept[0] is model and kept[1] == key:
            return kept[2]
        run = inference_model(model, device, fast, self.preprocessing_.input_size)
        keep = device.type == "cpu" and run is not model
        self._kept_inference = (model, key, run) if keep else None
        return run

    def explain(
        self,
        images: ImageInput,
        *,
        classes: Sequence[str] | None = None,
        batch_size: int = 16,
        device: str = "auto",
    ) -> list[Explanation]:
        """Grad-CAM: where the model looks for ``classes`` (one name per image; None: its
        top class) in each image, as ``Explanation`` objects whose ``heatmap`` has the
        image's own aspect ratio (``headstart.estimator.explain`` says which map)."""
        self._check_fitted()
        return explain_images(self, images, classes=classes, batch_size=batch_size, device=device)

    def predict(
        self, images: ImageInput, *, batch_size: int = 64, tta: str | None = None
    ) -> np.ndarray:
        """Predicted class names."""
        proba = self.predict_proba(images, batch_size=batch_size, tta=tta)
        return np.asarray(self.classes_, dtype=object)[proba.argmax(1)]

    def score(
        self,
        dataset: ImageDataset,
        *,
        batch_size: int = 64,
        device: str = "auto",
        tta: str | None = None,
    ) -> float:
        """Accuracy on a labelled dataset."""
        metrics = self.evaluate(dataset, batch_size=batch_size, device=device, tta=tta)
        return float(metrics["accuracy"])

    def evaluate(
        self,
        dataset: ImageDataset,
        *,
        batch_size: int = 64,
        device: str = "auto",
        tta: str | None = None,
    ) -> dict[str, Any]:
        """Accuracy, balanced accuracy, per-class precision/recall/F1, confusion matrix;
        ``tta`` and ``tta_views`` say how it predicted (see ``predict_proba``)."""
        self._check_fitted()
        tta = check_tta("ImageClassifier.evaluate", tta)
        truth = labels_in_model_order(dataset, self.classes_)
        proba = self.predict_proba(dataset, batch_size=batch_size, device=device, tta=tta)
        metrics = classification_metrics(truth, proba.argmax(1), self.classes_)
        return {**metrics, "tta": tta, "tta_views": view_count(tta, self.preprocessing_)}

    # ---------------------------------------------------------------- save/load

    def metadata(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "backbone": self.backbone,
            "weights": {
                "source": self.weights_info_.source,
                "location": self.weights_info_.location,
                "sha256": self.weights_info_.sha256,
            },
            "strategy": self.strategy,
            "classes": self.classes_,
            "class_to_idx": {name: i for i, name in enumerate(self.classes_)},
            "preprocessing": self.preprocessing_.to_dict(),
            "decode_options": dataclasses.asdict(self.decode_options_),
            "layers": list(self.config_.layers),
            "head": self._head_spec.__dict__,
            "config": self.config_.to_dict(),
            "seed": self.config_.seed,
            "plan": self.plan_.to_dict() if self.plan_ is not None else None,
            "class_weights": self.class_weighting_,
            "history": self.history_,
            "fit_seconds": self.fit_seconds_,
            "metrics": self.metrics_,
            **({"budget": self.budget_} if getattr(self, "budget_", None) else {}),
        }

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Weights as safetensors plus ``headstart.json``; returns the folder."""
        self._check_fitted()
        return save_model(Path(folder), self.model_, self.metadata())

    def export(self, path: str | os.PathLike[str], format: str = "onnx", **options: Any) -> Any:
        """Write the fitted model as a file other runtimes read, checked against this
        model first; returns what was written and measured. ``format="onnx"`` (the only
        one) takes ``headstart.export.export_onnx``'s options (``opset``, ``quantize``,
        ``max_accuracy_drop``, ``images``, ...). The exporter is a face above the
        estimator, so it is looked up by name, as a plugin is."""
        self._check_fitted()
        if format not in _EXPORTERS:
            raise invalid("ImageClassifier.export", "format", " or ".join(_EXPORTERS), format)
        module, function = _EXPORTERS[format]
        return getattr(importlib.import_module(module), function)(self, path, **options)

    @classmethod
    def load(
        cls, folder: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None
    ) -> ImageClassifier:
        """A fitted classifier from a folder written by ``save`` (never unpickles), of
        the kind that saved it (an ensemble's folder gives an ``EnsembleClassifier``);
        ``cache_dir``: a feature cache its predictions on datasets may use."""
        if not isinstance(folder, str | os.PathLike):
            raise invalid(f"{cls.__name__}.load", "folder", "a path to a model folder", folder)
        files = load_model(Path(folder))
        kind = _saved_kind(cls, files.metadata, Path(folder))
        config = TrainConfig.from_dict(files.metadata["config"])
        meta = files.metadata
        clf = kind(meta["backbone"], meta["strategy"], config, cache_dir=cache_dir)
        clf._set_fitted(**clf._saved_state(files, Path(folder)))
        return clf

    def _saved_state(self, files: ModelFiles, folder: Path) -> dict[str, Any]:
        """``_set_fitted``'s arguments from a loaded folder (``self.config`` read from it)."""
        meta = files.metadata
        return {
            "model": files.model,
            "classes": meta["classes"],
            "config": self.config,
            "preprocessing": Preprocessing.from_dict(meta["preprocessing"]),
            "decode_options": DecodeOptions(**(meta.get("decode_options") or {})),
            "weights_info": WeightsInfo(**meta["weights"]),
            "head_spec": HeadSpec(**meta["head"]),
            "history": meta.get("history", []),
            "fit_seconds": meta.get("fit_seconds", 0.0),
            "validation_images": None,
            "class_weighting": meta.get("class_weights"),
            "metrics": meta.get("metrics", {}),
            "metadata": meta,
            "folder": folder,
        }


def _saved_kind(
    cls: type[ImageClassifier], meta: dict[str, Any], folder: Path
) -> type[ImageClassifier]:
    """The type a saved model loads as: ``cls``, or the kind its description names
    (``ImageClassifier.load`` of an ensemble gives an ``EnsembleClassifier``)."""
    for block, (module, name) in _SAVED_KINDS.items():
        kind = getattr(importlib.import_module(module), name)
        if block in meta:
            return cls if issubclass(cls, kind) else kind
        if issubclass(cls, kind):
            raise DataError(
                f"{folder}: not a saved {name} (its {META_FILE} has no {block!r} block); "
                "load it with ImageClassifier.load."
            )
    return cls
