"""Strategies side by side: identical splits and seeds, several data sizes.

The user's question is "what does transfer buy me here, and which strategy
should I use?". ``compare`` answers it by measurement: every strategy is trained
on the same ``labels_per_class`` draw (nested across sizes: the 10-per-class
images are among the 30-per-class ones) and scored on the same test set.

Each finished run is written to ``results.json`` at once (atomically), so an
interrupted comparison loses nothing, and running it again reuses every finished
run whose settings are unchanged. A run that fails (out of memory, say) is
recorded as failed, with its error, and the others go on.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headstart._internal.atomic import atomic_write
from headstart._internal.validation import Constraints, Interval, Items, Optional, invalid, validate
from headstart.backbones.registry import DEFAULT_BACKBONE
from headstart.data.dataset import ImageDataset
from headstart.data.split import sample_per_class
from headstart.errors import (
    BackboneError,
    ConfigError,
    DataError,
    TrainingInterrupted,
    WeightsError,
)
from headstart.estimator.image_classifier import ImageClassifier
from headstart.evaluation.issues_section import STRATEGY as ISSUES_STRATEGY
from headstart.evaluation.issues_section import comparison_label_issues
from headstart.parallel import world
from headstart.strategies.registry import get_strategy, strategy_names
from headstart.train.callbacks import Callback

__all__ = ["CompareSettings", "compare", "largest_draw", "load_results"]

RESULTS_FILE = "results.json"
DEFAULT_STRATEGIES = ("scratch", "feature-extraction", "fine-tune")


# The requirements a table can state (strategies and overrides are checked against the
# strategy registry, backbones against each other, in ``__post_init__``).
COMPARE_CONSTRAINTS: Constraints = {
    "labels_per_class": Items(
        Optional(Interval(int, 1, None)), "at least one size", each="ints >= 1 or None (all)"
    ),
    "seeds": Items(Interval(int, 0, None), "one or more ints >= 0"),
}


@dataclass(frozen=True)
class CompareSettings:
    """What to compare. ``None`` in ``labels_per_class`` means every training image."""

    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    labels_per_class: tuple[int | None, ...] = (10, 30, 100, None)
    seeds: tuple[int, ...] = (0,)
    backbone: str = DEFAULT_BACKBONE
    # Several backbones side by side: every run repeated per backbone (empty: just
    # ``backbone``). Runs are then named "backbone:strategy/k=../seed=..".
    backbones: tuple[str, ...] = ()
    weights: str = "auto"
    # One resolution for every strategy, for a fair race; None: the backbone's own, as
    # `train` uses by default, so the comparison measures what training would do.
    image_size: int | None = None
    # per-strategy TrainConfig changes, e.g. {"scratch": {"epochs": 5}}
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        owner = "CompareSettings"
        if not self.strategies:
            raise invalid(owner, "strategies", "at least one strategy", self.strategies)
        for name in self.strategies:
            get_strategy(name)
        unknown = sorted(set(self.overrides) - set(strategy_names()))
        if unknown:
            raise invalid(owner, "overrides", f"keys among {strategy_names()}", unknown[0])
        validate(owner, COMPARE_CONSTRAINTS, self)
        if len(set(self.backbones)) != len(self.backbones):
            raise invalid(owner, "backbones", "distinct names", self.backbones)

    @property
    def compared_backbones(self) -> tuple[str, ...]:
        """The backbones every run is repeated for, in the order given."""
        return self.backbones or (self.backbone,)

    def config_for(self, strategy: str, seed: int) -> Any:
        config = get_strategy(strategy).default_config()
        changes = {"seed": seed, **self.overrides.get(strategy, {})}
        if self.image_size is not None:
            changes.setdefault("image_size", self.image_size)
        return config.replace(**changes)


def shared_overrides(
    strategies: Sequence[str], changes: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Settings given once for all ``strategies``: each goes to the strategies that use
    it, never dropped in silence. Returns (per-strategy overrides, notes saying which
    strategies ignore which setting, with settings written as ``{name}``); a setting
    that none of them would use is a ConfigError."""
    overrides: dict[str, dict[str, Any]] = {}
    notes = []
    for name, value in changes.items():
        users, ignoring = [], []
        for strategy_name in strategies:
            strategy = get_strategy(strategy_name)
            why = strategy.unused_settings(strategy.default_config().replace(**changes)).get(name)
            if why is None:
                users.append(strategy_name)
                overrides.setdefault(strategy_name, {})[name] = value
            else:
                ignoring.append(f"{strategy_name}: {why}")
        if not users:
            raise ConfigError(
                f"None of the strategies compared ({', '.join(strategies)}) would use a "
                "setting you gave.",
                hint=f"{{{name}}} is not used ({'; '.join(ignoring)}). Leave it out.",
            )
        if ignoring:
            notes.append(f"{{{name}}} applies to {', '.join(users)} ({'; '.join(ignoring)})")
    return overrides, notes


def run_id(
    strategy: str, labels_per_class: int | None, seed: int, backbone: str | None = None
) -> str:
    """``strategy/k=../seed=..``, prefixed by ``backbone:`` when several are compared."""
    size = "all" if labels_per_class is None else str(labels_per_class)
    return f"{backbone + ':' if backbone else ''}{strategy}/k={size}/seed={seed}"


def _run_key(record: dict[str, Any], backbone: str) -> tuple[str, str, str, int]:
    """What a run is, whatever its id says: results of older versions have no backbone
    field (they compared one, ``backbone``: the one their settings name)."""
    return (
        record.get("backbone", backbone),
        record["strategy"],
        str(record["labels_per_class"]),
        record["seed"],
    )


def _fingerprint(
    settings: CompareSettings, strategy: str, seed: int, data_key: str, backbone: str
) -> str:
    """Changes when anything that shapes a run's result changes."""
    parts = {
        "config": settings.config_for(strategy, seed).to_dict(),
        "backbone": backbone,
        "weights": settings.weights,
        "data": data_key,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def load_results(folder: Path) -> dict[str, Any]:
    """The results file of a comparison folder (empty when there is none yet)."""
    path = Path(folder) / RESULTS_FILE
    if not path.is_file():
        return {"runs": []}
    try:
        return json.loads(path.read_text())
    except ValueError:
        return {"runs": []}  # a results file cut short by an old crash: start afresh


def _write_results(folder: Path, results: dict[str, Any]) -> None:
    if not world().is_main:  # under torchrun every rank runs the comparison; rank 0 writes
        return
    text = json.dumps(results, indent=2, sort_keys=True)
    atomic_write(Path(folder) / RESULTS_FILE, lambda handle: handle.write(text.encode()))


class CompareCallback(Callback):
    """Adds run-level events to the training callback."""

    def on_run_start(self, run: str, index: int, total: int) -> None:
        """A run begins."""

    def on_run_end(self, record: dict[str, Any], reused: bool) -> None:
        """A run finished (or failed, or was reused)."""


def drawn_sizes(
    train: ImageDataset, labels_per_class: Sequence[int | None]
) -> tuple[list[int | None], list[int], int]:
    """(the sizes a comparison draws, smallest first and None for all; those dropped;
    the smallest class's count). A size above the smallest class cannot be drawn for
    every class, so it is dropped and the report says so."""
    smallest = min(train.class_counts().values())
    sizes = sorted(
        {k for k in labels_per_class if k is None or k <= smallest},
        key=lambda k: float("inf") if k is None else k,
    )
    dropped = sorted(k for k in labels_per_class if k is not None and k > smallest)
    return sizes or [None], dropped, smallest


def largest_draw(train: ImageDataset, settings: CompareSettings) -> tuple[int | None, Any]:
    """(labels per class, images) of the largest labelled draw of the first seed: the
    very images that comparison's largest runs train on (the ranking scores these)."""
    k = drawn_sizes(train, settings.labels_per_class)[0][-1]
    seed = settings.seeds[0]
    return k, train if k is None else sample_per_class(train, k, seed=seed)


def compare(
    train: ImageDataset,
    test: ImageDataset,
    folder: str | Path,
    settings: CompareSettings | None = None,
    *,
    cache_dir: str | Path | None = None,
    callback: CompareCallback | None = None,
    data_description: str = "",
) -> dict[str, Any]:
    """Run every (size, seed, strategy, backbone) once; returns the results (also in
    results.json)."""
    settings = settings or CompareSettings()
    callback = callback or CompareCallback()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sizes, dropped, smallest = drawn_sizes(train, settings.labels_per_class)
    data_key = f"{train.fingerprint()}:{test.fingerprint()}"
    previous = _earlier_runs(folder, settings)
    results = _fresh_results(train, test, settings, data_key, data_description, sizes)
    results["notes"] = [
        f"labels per class {k} skipped: the smallest class has only {smallest} images"
        for k in dropped
    ]
    several = len(settings.compared_backbones) > 1
    plan = [
        (k, seed, s, b)
        for k in sizes
        for seed in settings.seeds
        for b in settings.compared_backbones
        for s in settings.strategies
    ]
    for index, (k, seed, strategy, backbone) in enumerate(plan, start=1):
        rid = run_id(strategy, k, seed, backbone if several else None)
        fingerprint = _fingerprint(settings, strategy, seed, data_key, backbone)
        key = (backbone, strategy, "all" if k is None else str(k), seed)
        old = previous.get(key)
        if old and old.get("status") == "ok" and old.get("fingerprint") == fingerprint:
            old = {**old, "id": rid, "backbone": backbone}  # named as this comparison names it
            results["runs"].append(old)
            callback.on_run_end(old, reused=True)
            continue
        subset = train if k is None else sample_per_class(train, k, seed=seed)
        unlabelled = None
        if get_strategy(strategy).uses_unlabelled:
            # The training images not drawn (the usual semi-supervised race); fit hides
            # their labels, for every caller.
            unlabelled, _ = train.excluding(subset)
            if not len(unlabelled):
                note = f"{strategy} skipped at all labels: no unlabelled images are left"
                if note not in results["notes"]:
                    results["notes"].append(note)
                continue
        callback.on_run_start(rid, index, len(plan))
        record = _one_run(
            subset, test, settings, backbone, strategy, seed, cache_dir, callback, unlabelled
        )
        record.update(
            id=rid,
            backbone=backbone,
            strategy=strategy,
            labels_per_class=k if k is not None else "all",
            train_images=len(subset),
            seed=seed,
            fingerprint=fingerprint,
        )
        results["runs"].append(record)
        _write_results(folder, {**results, "runs": results["runs"] + _pending(previous, results)})
        callback.on_run_end(record, reused=False)
    if not results["runs"]:  # every run was skipped: there is nothing to report on
        raise DataError("No run of this comparison could run: " + "; ".join(results["notes"]) + ".")
    # Finished runs this comparison did not ask for (a narrower --labels-per-class,
    # fewer strategies) stay in the file, apart from "runs", ready to be reused.
    earlier = _pending(previous, results)
    if earlier:
        results["earlier_runs"] = earlier
    if ISSUES_STRATEGY in settings.strategies:  # its features are cached: seconds
        k, draw = largest_draw(train, settings)
        results["label_issues"] = comparison_label_issues(
            draw, k, backbone=settings.compared_backbones[0], weights=settings.weights,
            config=settings.config_for(ISSUES_STRATEGY, settings.seeds[0]),
            cache_dir=cache_dir, folder=folder,
        )  # fmt: skip
    _write_results(folder, results)
    return results


def _earlier_runs(folder: Path, settings: CompareSettings) -> dict[tuple, dict[str, Any]]:
    """The runs ``results.json`` in ``folder`` holds already, by (backbone, strategy, size,
    seed), each named by its backbone (should the settings name another one now)."""
    loaded = load_results(folder)
    old_backbone = loaded.get("settings", {}).get("backbone", settings.backbone)
    previous = {}
    for r in [*loaded.get("earlier_runs", []), *loaded.get("runs", [])]:
        key = _run_key(r, old_backbone)
        previous[key] = {**r, "backbone": key[0]}
    return previous


def _fresh_results(
    train: ImageDataset,
    test: ImageDataset,
    settings: CompareSettings,
    data_key: str,
    data_description: str,
    sizes: list[int | None],
) -> dict[str, Any]:
    """The results file before any run: the data and the settings compared."""
    return {
        "data": {
            "description": data_description,
            "train_images": len(train),
            "test_images": len(test),
            "classes": list(train.classes),
            "fingerprint": data_key,
        },
        "settings": {
            "strategies": list(settings.strategies),
            "labels_per_class": [k if k is not None else "all" for k in sizes],
            "seeds": list(settings.seeds),
            "backbone": settings.compared_backbones[0],
            "backbones": list(settings.compared_backbones),
            "image_size": settings.image_size,
            "configs": {s: settings.config_for(s, 0).to_dict() for s in settings.strategies},
        },
        "runs": [],
        "notes": [],
    }


def _pending(previous: dict[str, Any], results: dict[str, Any]) -> list[dict[str, Any]]:
    """Earlier finished runs not yet reached in this pass: kept, so a crash loses nothing."""
    backbone = results["settings"]["backbone"]
    done = {_run_key(r, backbone) for r in results["runs"]}
    return [r for key, r in previous.items() if key not in done and r.get("status") == "ok"]


def _one_run(
    subset: ImageDataset,
    test: ImageDataset,
    settings: CompareSettings,
    backbone: str,
    strategy: str,
    seed: int,
    cache_dir: str | Path | None,
    callback: Callback,
    unlabelled: ImageDataset | None = None,
) -> dict[str, Any]:
    config = settings.config_for(strategy, seed)
    started = time.perf_counter()
    try:
        clf = ImageClassifier(
            backbone,
            strategy,
            config,
            weights=settings.weights,
            cache_dir=cache_dir,
            callback=callback,
        ).fit(subset, unlabelled=unlabelled)
        metrics = clf.evaluate(test, batch_size=config.batch_size, device=config.device)
    except (KeyboardInterrupt, TrainingInterrupted, ConfigError, BackboneError, WeightsError):
        raise  # a mistake in the settings would fail every run alike: say it once, now
    except Exception as exc:  # one strategy failing (e.g. out of memory) must not stop the rest
        return {
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=5),
            "seconds": time.perf_counter() - started,
        }
    return {
        "status": "ok",
        "accuracy": metrics["accuracy"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "train_seconds": clf.fit_seconds_,
        "held_out_images": clf.validation_images_,
        "trainable_parameters": clf.plan_.trainable_parameters,
        "epochs": len([h for h in clf.history_ if h["stage"] != "head"]) or None,
        "confusion_matrix": metrics["confusion_matrix"],
        "test_images": metrics["n"],
        "image_size": int(clf.preprocessing_.input_size[-1]),
        **({"layers": list(config.layers)} if getattr(config, "layers", None) else {}),
        **({"unlabelled_images": len(unlabelled)} if unlabelled is not None else {}),
    }


def summarise(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (strategy, backbone, size): mean/min/max accuracy and mean training time over
    seeds."""
    default = results.get("settings", {}).get("backbone", DEFAULT_BACKBONE)
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in results["runs"]:
        key = (run["strategy"], run.get("backbone", default), str(run["labels_per_class"]))
        groups.setdefault(key, []).append(run)
    rows = []
    for (strategy, backbone, k), runs in groups.items():
        ok = [r for r in runs if r.get("status") == "ok"]
        accuracies = [r["accuracy"] for r in ok]
        rows.append(
            {
                "strategy": strategy,
                "backbone": backbone,
                "labels_per_class": k,
                "runs": len(runs),
                "failed": len(runs) - len(ok),
                "accuracy_mean": sum(accuracies) / len(ok) if ok else None,
                "accuracy_min": min(accuracies) if ok else None,
                "accuracy_max": max(accuracies) if ok else None,
                "balanced_accuracy_mean": (
                    sum(r["balanced_accuracy"] for r in ok) / len(ok) if ok else None
                ),
                "train_seconds_mean": sum(r["train_seconds"] for r in ok) / len(ok) if ok else None,
                "trainable_parameters": ok[0]["trainable_parameters"] if ok else None,
                "errors": [r.get("error") for r in runs if r.get("status") != "ok"],
            }
        )
    return rows


def sizes_in_order(values: Sequence[Any]) -> list[str]:
    """Label-per-class keys sorted numerically, 'all' last."""
    unique = {str(v) for v in values}
    return sorted(unique, key=lambda v: float("inf") if v == "all" else float(v))
