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

import contextlib
import hashlib
import json
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
from headstart.evaluation.active_section import check_active_data, comparison_active_curve
from headstart.evaluation.compare_budget import ComparisonBudget, informative_first
from headstart.evaluation.compare_settings import (
    COMPARE_CONSTRAINTS,
    DEFAULT_STRATEGIES,
    CompareSettings,
    shared_overrides,
)
from headstart.evaluation.issues_section import STRATEGY as ISSUES_STRATEGY
from headstart.evaluation.issues_section import comparison_label_issues
from headstart.evaluation.results_file import (
    earlier_runs,
    load_results,
    pending_runs,
    write_results,
)
from headstart.strategies.registry import get_strategy
from headstart.train.callbacks import Callback

__all__ = [
    "COMPARE_CONSTRAINTS",
    "DEFAULT_STRATEGIES",
    "CompareSettings",
    "compare",
    "largest_draw",
    "load_results",
    "shared_overrides",
]


def run_id(
    strategy: str, labels_per_class: int | None, seed: int, backbone: str | None = None
) -> str:
    """``strategy/k=../seed=..``, prefixed by ``backbone:`` when several are compared."""
    size = "all" if labels_per_class is None else str(labels_per_class)
    return f"{backbone + ':' if backbone else ''}{strategy}/k={size}/seed={seed}"


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
    budget: float | str | None = None,
) -> dict[str, Any]:
    """Run every (size, seed, strategy, backbone) once; returns the results (also in
    results.json).

    ``budget`` ("10m", "90s", "1h" or seconds; None: no limit): estimate every run first,
    run those that fit, most informative first, and stop at the budget with the finished
    runs kept; what was skipped or cut is in the notes and under "budget"
    (`headstart.evaluation.compare_budget`)."""
    settings = settings or CompareSettings()
    callback = callback or CompareCallback()
    limit = None if budget is None else ComparisonBudget(budget, callback)
    if settings.active:
        check_active_data(train, settings)  # before any run: it would fail only at the end
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sizes, dropped, smallest = drawn_sizes(train, settings.labels_per_class)
    data_key = f"{train.fingerprint()}:{test.fingerprint()}"
    previous = earlier_runs(folder, settings)
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
    if limit is not None:
        plan = informative_first(plan, settings)
        limit.plan(
            _budget_entries(plan, train, settings, data_key, previous), train, test, settings
        )
    for index, (k, seed, strategy, backbone) in enumerate(plan, start=1):
        rid = run_id(strategy, k, seed, backbone if several else None)
        fingerprint = _fingerprint(settings, strategy, seed, data_key, backbone)
        key = (backbone, strategy, "all" if k is None else str(k), seed)
        old = previous.get(key)
        if _reusable(old, fingerprint):
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
        if limit is not None and not limit.admit(rid):
            continue
        callback.on_run_start(rid, index, len(plan))
        cut: dict[str, Any] = {}
        with limit.limit(rid, cut) if limit is not None else contextlib.nullcontext():
            record = _one_run(
                subset, test, settings, backbone, strategy, seed, cache_dir, callback, unlabelled
            )
        record.update(cut)
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
        write_results(
            folder, {**results, "runs": results["runs"] + pending_runs(previous, results)}
        )
        callback.on_run_end(record, reused=False)
    return _finish(results, previous, (train, test), folder, settings, cache_dir, limit, callback)


def _finish(
    results: dict[str, Any],
    previous: dict[tuple, dict[str, Any]],
    split: tuple[ImageDataset, ImageDataset],
    folder: Path,
    settings: CompareSettings,
    cache_dir: str | Path | None,
    limit: ComparisonBudget | None,
    callback: CompareCallback,
) -> dict[str, Any]:
    """The results once every run is done: the budget's record, the earlier runs kept,
    the label issues section, the active-vs-random curve; written and returned."""
    train, test = split
    if limit is not None:
        results["notes"] += limit.notes
        results["budget"] = limit.record()
    if not results["runs"]:  # every run was skipped: there is nothing to report on
        raise DataError("No run of this comparison could run: " + "; ".join(results["notes"]) + ".")
    # Finished runs this comparison did not ask for (a narrower --labels-per-class,
    # fewer strategies) stay in the file, apart from "runs", ready to be reused.
    earlier = pending_runs(previous, results)
    if earlier:
        results["earlier_runs"] = earlier
    if limit is not None and ISSUES_STRATEGY in settings.strategies:
        # not estimated, and it took 115 s after a 3m budget's runs on the sample
        # (docs/BENCHMARKS.md 15b): a budget leaves it out rather than overrun
        results["notes"].append(
            "no label issues section: a budget leaves it out (its time is not estimated); "
            "compare without a budget, or run headstart clean, for it"
        )
    elif ISSUES_STRATEGY in settings.strategies:  # its features are cached: seconds
        k, draw = largest_draw(train, settings)
        results["label_issues"] = comparison_label_issues(
            draw, k, backbone=settings.compared_backbones[0], weights=settings.weights,
            config=settings.config_for(ISSUES_STRATEGY, settings.seeds[0]),
            cache_dir=cache_dir, folder=folder,
        )  # fmt: skip
    if settings.active:  # after feature extraction ran: its features are cached
        results["active"] = comparison_active_curve(
            train, test, settings, cache_dir=cache_dir, callback=callback
        )
    write_results(folder, results)
    return results


def _reusable(old: dict[str, Any] | None, fingerprint: str) -> bool:
    return bool(old and old.get("status") == "ok" and old.get("fingerprint") == fingerprint)


def _budget_entries(
    plan: list[tuple], train: ImageDataset, settings: CompareSettings, data_key: str, previous: dict
) -> list[tuple[tuple, str, bool]]:
    """(entry, id, reused) of each run a budget must plan for: those compare would run
    (not a strategy that needs unlabelled images at all labels: none are left)."""
    several = len(settings.compared_backbones) > 1
    entries = []
    for k, seed, strategy, backbone in plan:
        if k is None and get_strategy(strategy).uses_unlabelled:
            continue
        key = (backbone, strategy, "all" if k is None else str(k), seed)
        fingerprint = _fingerprint(settings, strategy, seed, data_key, backbone)
        rid = run_id(strategy, k, seed, backbone if several else None)
        entries.append(
            ((k, seed, strategy, backbone), rid, _reusable(previous.get(key), fingerprint))
        )
    return entries


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
            "active": settings.active,
        },
        "runs": [],
        "notes": [],
    }


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
