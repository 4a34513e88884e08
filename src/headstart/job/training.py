"""One training job for every face: images in, a trained, evaluated (and saved) model out.

``headstart train``, ``headstart.fit_folder`` and the server's training all run a
``TrainingJob``, so a model trained from the page has the same plan, metrics and files
as one trained from the command line. The job makes the choices a run needs (the
backbone and layers by ranking, the ensemble's members, which unlabelled images to
use, the test split, the out folder and its lock) and says what it chose through its
``Callback``; it never prints.

    result = TrainingJob("photos/", strategy="fine-tune", out="run1").run(callback)
    result.classifier, result.metrics, result.folder

Every check that takes no image comes first (``check``): the settings, the backbone,
the out folder; only then is an image decoded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from headstart._internal.validation import positive_int
from headstart.backbones import DEFAULT_BACKBONE
from headstart.data.dataset import ImageDataset
from headstart.data.decode import DecodeOptions
from headstart.errors import ConfigError, DataError, literal
from headstart.parallel import broadcast, close_distributed, world
from headstart.train.callbacks import Callback
from headstart.train.config import TrainConfig

__all__ = ["TrainingJob", "TrainingResult", "fit_folder"]

AUTO = "auto"
DEFAULT_TEST_SIZE = 0.2


@dataclass
class TrainingResult:
    """What a job made: the fitted ``classifier``; ``metrics`` as saved in its model
    folder (accuracy, balanced accuracy, n, and where the test images came from);
    ``evaluation``, the full test evaluation (per-class scores, confusion matrix);
    ``folder``, where the model was saved (None: not saved); the images it used."""

    classifier: Any
    metrics: dict[str, Any]
    evaluation: dict[str, Any]
    folder: Path | None
    train: ImageDataset
    test: ImageDataset
    config: TrainConfig
    backbone: str
    ranking: Any = None


@dataclass(frozen=True)
class TrainingJob:
    """A training run, described: what to train on and how. ``run`` does it.

    ``data``: a folder of class folders (or ``train/`` and ``test/``), a CSV, an IDX
    folder, or a ``(train, test)`` pair of datasets. ``config``: a ``TrainConfig``, or
    a mapping of changes to the strategy's defaults (a change the strategy would ignore
    is refused). ``backbone="auto"`` and ``layers="auto"`` rank candidates on the
    training images and train the best; ``ensemble=K`` joins the top K. ``test_size``:
    the held-out share or count (default 0.2), unused when the data brings its own
    split. ``out``: the model folder to save to (claimed and locked for the run; None:
    not saved, no checkpoints).
    """

    data: str | os.PathLike[str] | tuple[ImageDataset, ImageDataset]
    strategy: str | None = None  # None: feature extraction; with a budget, its choice
    backbone: str | None = None  # None: the default backbone; for an ensemble, auto
    layers: str | Sequence[str] | None = None
    config: TrainConfig | Mapping[str, Any] | None = None
    test_size: float | int | None = None
    split_seed: int | None = None  # None: the config's seed
    labels_per_class: int | None = None
    unlabelled: str | os.PathLike[str] | None = None
    ensemble: int | None = None
    combine: str = AUTO
    weights: str = AUTO
    cache_dir: str | os.PathLike[str] | None = None
    out: str | os.PathLike[str] | None = None
    checkpoint_dir: str | os.PathLike[str] | None = None  # without out: where checkpoints go
    overwrite: bool = False
    resume: bool = False
    strict: bool = False
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    budget: str | float | None = None  # "90s", "10m", "1h" or seconds (headstart.job.budget)
    strategy_given: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy_given", self.strategy)
        if self.strategy is None:
            object.__setattr__(self, "strategy", "feature-extraction")
        if self.backbone is None:
            ranked = self.ensemble is not None or self.budget is not None
            chosen = AUTO if ranked else DEFAULT_BACKBONE
            object.__setattr__(self, "backbone", chosen)

    # ------------------------------------------------------------------ checks

    @property
    def ranks(self) -> bool:
        """Whether the job ranks candidates before it trains."""
        return self.backbone == AUTO or self.layers == AUTO or self.ensemble is not None

    def check(self, processes: int = 1) -> TrainConfig:
        """Every check that needs no image, in the order a user fixes them; the config
        the job will train with (before ranking). ``processes``: how many will run it."""
        from headstart.backbones.device import select_device
        from headstart.backbones.registry import check_backbone_name
        from headstart.strategies.registry import get_strategy

        strategy = get_strategy(self.strategy)
        self._check_ensemble()
        self._check_budget()
        if processes > 1 and self.ranks:
            raise ConfigError(
                "{backbone} auto, {layers} auto and {ensemble} rank candidates in one "
                "process; rank first (`headstart rank`), then train the choice on several "
                "processes.",
                names_in_message=True,
            )
        if self.backbone != AUTO:
            check_backbone_name(self.backbone)
        if self.labels_per_class is not None:
            positive_int("TrainingJob", "labels_per_class", self.labels_per_class)
        if self.ensemble is not None and self.strategy != "feature-extraction":
            raise ConfigError(
                f"{{ensemble}} K joins frozen pretrained bodies under linear heads (feature "
                f"extraction); {{strategy}} {literal(self.strategy)} trains the body. Leave "
                "{strategy} out.",
                names_in_message=True,
            )
        if (self.backbone == AUTO or self.layers == AUTO) and not strategy.pretrained:
            raise ConfigError(
                f"{{backbone}} auto and {{layers}} auto rank pretrained features; {{strategy}} "
                f"{literal(self.strategy)} trains from random weights. Name a {{backbone}} "
                "instead.",
                names_in_message=True,
            )
        config = self._config(strategy)
        select_device(config.device)
        self._check_split()
        self._check_unlabelled(strategy)
        return config

    def _check_budget(self) -> None:
        """A budget chooses the strategy, backbone and size: a named strategy constrains
        it to that strategy's options, one it cannot plan is refused."""
        from headstart.job.budget import parse_budget

        if self.budget is None:
            return
        parse_budget(self.budget)
        if self.strategy_given not in (None, "feature-extraction", "fine-tune"):
            raise ConfigError(
                f"{{budget}} chooses among feature extraction, an ensemble and fine-tuning; "
                f"it cannot plan {{strategy}} {literal(self.strategy)}. Leave {{strategy}} "
                "out (the budget chooses), name feature-extraction or fine-tune (the budget "
                "picks its size and epochs), or leave {budget} out.",
                names_in_message=True,
            )
        given = [n for n, v in (("ensemble", self.ensemble), ("resume", self.resume)) if v]
        if self.layers == AUTO or given or isinstance(self.config, TrainConfig):
            what = "{" + (given or ["layers"])[0] + "}"
            if isinstance(self.config, TrainConfig):
                what = "a whole TrainConfig (give a mapping of changes)"
            raise ConfigError(
                f"{{budget}} chooses the ensemble, layers and epochs itself: leave {what} out",
                names_in_message=True,
            )

    @property
    def config_changes(self) -> dict[str, Any]:
        """The config changes given (a budget plans on top of them)."""
        return dict(self.config or {}) if not isinstance(self.config, TrainConfig) else {}

    def _check_ensemble(self) -> None:
        if self.ensemble is None:
            if self.combine != AUTO:
                raise ConfigError(
                    "{combine} joins the members of {ensemble} K; give {ensemble} too",
                    names_in_message=True,
                )
            return
        if isinstance(self.ensemble, bool) or not isinstance(self.ensemble, int):
            raise ConfigError(
                f"{{ensemble}} takes an int. Got {literal(repr(self.ensemble))}.",
                names_in_message=True,
            )
        if self.ensemble < 2:
            raise ConfigError(
                f"{{ensemble}} takes 2 or more members. Got {self.ensemble}.",
                names_in_message=True,
            )
        if self.resume:
            raise ConfigError(
                "{ensemble} has no checkpoints to {resume}: its heads fit in seconds",
                names_in_message=True,
            )

    def _config(self, strategy: Any) -> TrainConfig:
        """The config to train with: ``config`` as given, or the strategy's defaults with
        the given changes (one the strategy would ignore is refused)."""
        if isinstance(self.config, TrainConfig):
            config = self.config
            given: list[str] = []
        else:
            changes = dict(self.config or {})
            given = list(changes)
            config = strategy.default_config().replace(**changes)
        if self.layers not in (None, AUTO):
            layers = (self.layers,) if isinstance(self.layers, str) else tuple(self.layers)
            config = config.replace(layers=layers)
            given.append("layers")
        if self.ensemble is not None and (config.head != "linear" or config.augment):
            raise ConfigError(
                "{ensemble} fits a linear probe per member on features computed once: leave "
                "{head} and {augment} out",
                names_in_message=True,
            )
        strategy.refuse_unused(config, given)
        return config

    def _check_split(self) -> None:
        from headstart.data.layout import is_presplit

        if isinstance(self.data, tuple) or self.test_size is None:
            return
        if is_presplit(self.data):
            raise ConfigError(
                f"{{test_size}} does not apply: {literal(self.data)} has its own train/test "
                "split, which is used as it is. Leave {test_size} out.",
                names_in_message=True,
            )

    def _check_unlabelled(self, strategy: Any) -> None:
        if strategy.uses_unlabelled and not self.unlabelled:
            raise ConfigError(
                f"{{strategy}} {literal(self.strategy)} needs {{unlabelled}} DIR, a folder "
                "of images without labels",
                names_in_message=True,
            )
        if self.unlabelled and not strategy.uses_unlabelled:
            raise ConfigError(
                "{unlabelled} is only used by {strategy} semi-supervised, not "
                f"{literal(self.strategy)}",
                names_in_message=True,
            )
        if self.unlabelled and not Path(self.unlabelled).is_dir():
            raise ConfigError(
                f"{{unlabelled}} {literal(self.unlabelled)}: folder not found",
                names_in_message=True,
            )

    # ------------------------------------------------------------------ running

    def run(self, callback: Callback | None = None) -> TrainingResult:
        """Check, claim the out folder, load, (rank,) fit, evaluate, save. Under torchrun
        every rank runs the job: rank 0 alone reads the folder, writes and reports."""
        from headstart.estimator.out_folder import ModelFolder
        from headstart.job.steps import run_job

        config = self.check(world().size)
        callback = callback or Callback()
        if self.out is None or not world().is_main:
            return run_job(self, config, callback, None)
        with ModelFolder(Path(self.out), overwrite=self.overwrite, resume=self.resume) as out:
            return run_job(self, config, callback, out)

    def load(self, seed: int, callback: Callback) -> tuple[ImageDataset, ImageDataset]:
        """The training and test images: rank 0 alone decode-checks the folder and hands
        the result (paths, labels, hashes: never pixels) to the other ranks."""
        loaded = self._load(seed, callback) if world().is_main else None
        return broadcast(loaded)

    def _load(self, seed: int, callback: Callback) -> tuple[ImageDataset, ImageDataset]:
        from headstart.data.layout import load_images
        from headstart.data.split import sample_per_class

        if isinstance(self.data, tuple):
            train, test = self.data
        else:
            train, test = load_images(
                self.data,
                test_size=self.held_out,
                seed=seed,
                strict=self.strict,
                options=self.decode,
            )
        one_set = train.report is test.report or train.report.source == test.report.source
        if one_set:
            callback.on_dataset("data", train)
        else:
            callback.on_dataset("train", train)
            callback.on_dataset("test", test)
        callback.on_note(self._split_note(train, test, one_set, seed))
        if self.labels_per_class is not None:
            drawn = sample_per_class(train, self.labels_per_class, seed=seed)
            callback.on_note(
                f"draw: {self.labels_per_class} per class, {len(drawn)} of the {len(train)} "
                f"training images (seed {seed}); the other {len(train) - len(drawn)} are unused"
            )
            train = drawn
        callback.on_data(train, test)
        return train, test

    def _split_note(self, train: ImageDataset, test: ImageDataset, one_set: bool, seed: int) -> str:
        """Which images train and which test, with counts that add up to what was loaded."""
        both = f"{len(train)} training + {len(test)} test"
        if isinstance(self.data, tuple):
            return f"split: as given, {both} images"
        if not one_set:
            return f"split: the data's own, {both} images"
        report = train.report
        skipped = (
            f" ({len(report.skipped)} of {report.total} files skipped)" if report.skipped else ""
        )
        share = self.held_out
        held = f"{share:.0%}" if isinstance(share, float) else f"{share} images"
        return (
            f"split: the {report.loaded} images loaded{skipped} = {both} (the test split: a "
            f"stratified {held} of them, seed {seed})"
        )

    def load_unlabelled(
        self, train: ImageDataset, test: ImageDataset, callback: Callback
    ) -> ImageDataset | None:
        """The unlabelled images, without any the training or test part holds."""
        from headstart.data.loaders import load_unlabelled

        if not self.unlabelled:
            return None
        pool = broadcast(
            load_unlabelled(self.unlabelled, strict=self.strict, options=self.decode)
            if world().is_main
            else None
        )
        callback.on_dataset("unlabelled", pool)
        pool, dropped = pool.unlabelled_apart_from(train, test)
        if not len(pool):
            raise DataError(
                f"{{unlabelled}} {literal(self.unlabelled)}: every image in it is also in "
                f"{literal(self.data_name)} (training or test part); give a folder of images "
                "that are not",
                names_in_message=True,
            )
        also = f" ({dropped} also in the training or test images, left out)" if dropped else ""
        callback.on_note(f"unlabelled: {len(pool)} images from {self.unlabelled}{also}")
        return pool

    @property
    def held_out(self) -> float | int:
        return DEFAULT_TEST_SIZE if self.test_size is None else self.test_size

    @property
    def data_name(self) -> str:
        return "the given datasets" if isinstance(self.data, tuple) else str(self.data)

    def source(self, seed: int) -> dict[str, Any] | None:
        """Where the test images came from, so `headstart export` can check its file on
        them; None for datasets given in memory."""
        if isinstance(self.data, tuple):
            return None
        return {"path": str(Path(self.data).resolve()), "test_size": self.held_out, "seed": seed}

    def params(self, config: TrainConfig) -> dict[str, Any]:
        """The job's settings, flat, for an experiment tracker."""
        flat = {
            "strategy": self.strategy,
            "backbone": self.backbone,
            "data": self.data_name,
            "test_size": self.held_out,
            "labels_per_class": self.labels_per_class,
            "ensemble": self.ensemble,
            "weights": self.weights,
            "budget": self.budget,
        }
        for name, value in asdict(config).items():
            flat[name] = ",".join(map(str, value)) if isinstance(value, list | tuple) else value
        return flat

    def close_group(self) -> bool:
        """After fitting on several processes, evaluating and saving are rank 0's alone,
        outside the group: True where this process goes on to them."""
        if world().size > 1:
            close_distributed()
            return world().is_main
        return True


def fit_folder(
    path: str | os.PathLike[str],
    strategy: str | None = None,
    *,
    backbone: str | None = None,
    config: TrainConfig | Mapping[str, Any] | None = None,
    test_size: float | int | None = None,
    seed: int = 0,
    callback: Callback | None = None,
    **options: Any,
) -> tuple[Any, dict[str, Any]]:
    """The one-call helper: load a folder, split it, fit, and evaluate on the held-out
    part; the fitted classifier and its test evaluation. ``options`` are the other
    `TrainingJob` fields (``weights``, ``cache_dir``, ``out``, ``layers``, ``budget``...).
    ``strategy`` None: feature extraction, or with ``budget`` the budget's choice."""
    job = TrainingJob(
        path,
        strategy=strategy,
        backbone=backbone,
        config=config,
        test_size=test_size,
        split_seed=seed,
        **options,
    )
    result = job.run(callback)
    return result.classifier, result.evaluation
