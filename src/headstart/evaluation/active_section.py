"""The comparison's active-against-random curve (``compare --active``): from a seed set of
the training split, rounds of suggested labels against as many random ones, each arm's
probe scored on the comparison's test images; and the report's section about it.

Both arms read the features feature extraction caches (the first backbone compared, at
its input size and layers), so after the comparison's own extraction the curve costs
seconds: a linear probe per round and arm.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from headstart._internal.atomic import atomic_write
from headstart.active.simulation import active_curve, check_enough, first_reaching
from headstart.data.dataset import ImageDataset
from headstart.evaluation.svg_plot import line_chart_svg
from headstart.train.callbacks import Callback

__all__ = [
    "ACTIVE_PLOT",
    "active_lines",
    "active_verdict",
    "check_active_data",
    "comparison_active_curve",
    "write_active_plot",
]

ACTIVE_PLOT = "active_vs_random.svg"
STRATEGY = "feature-extraction"  # whose features and probe settings both arms use
# How the comparison's settings are named (``{name}``: each face words them its own way).
NAMES = ("active_seed_per_class", "active_batch")


def check_active_data(train: ImageDataset, settings: Any) -> None:
    """DataError, before any run, when the training split cannot hold the seed set and a
    pool of at least one round."""
    check_enough(
        train.labels, len(train.classes), settings.active_seed_per_class,
        settings.active_batch, names=NAMES, class_names=train.classes,
    )  # fmt: skip


def comparison_active_curve(
    train: ImageDataset,
    test: ImageDataset,
    settings: Any,
    *,
    cache_dir: str | os.PathLike[str] | None,
    callback: Callback | None = None,
) -> dict[str, Any]:
    """One active and one random curve per seed of ``settings`` (a CompareSettings), and
    their means; what results.json records under "active"."""
    from headstart.backbones.registry import create_backbone
    from headstart.features.cache import FeatureCache, cached_features

    callback = callback or Callback()
    check_active_data(train, settings)
    config = settings.config_for(STRATEGY, settings.seeds[0])
    backbone = settings.compared_backbones[0]
    model = create_backbone(backbone, settings.weights, image_size=config.image_size)
    store = FeatureCache(cache_dir) if cache_dir is not None else None
    callback.on_stage(
        "active", f"active vs random: features of {len(train)} training and {len(test)} test "
        f"images ({backbone}, {'from the cache' if store else 'no cache'})",
    )  # fmt: skip
    found = {}
    for part, dataset in (("train", train), ("test", test)):
        features, _ = cached_features(
            model, dataset, store, layers=tuple(config.layers), fast=config.fast,
            device=config.device, batch_size=max(config.batch_size, 64),
            progress=lambda done, total, part=part: callback.on_progress(part, done, total),
        )  # fmt: skip
        found[part] = np.concatenate([features[layer] for layer in config.layers], axis=1)
    curves = []
    for seed in settings.seeds:
        started = time.perf_counter()
        curve = active_curve(
            found["train"], train.labels, found["test"], test.labels,
            classes=len(train.classes), seed_per_class=settings.active_seed_per_class,
            rounds=settings.active_rounds, batch=settings.active_batch, seed=seed,
            l2=config.probe_l2,
        )  # fmt: skip
        curves.append({**curve.to_dict(), "seconds": round(time.perf_counter() - started, 2)})
        callback.on_stage(
            "active", f"seed {seed}: active {curve.active_points[-1].accuracy:.1%}, random "
            f"{curve.random_final:.1%} at {curve.random_points[-1].labels_per_class:g} per class "
            f"({curves[-1]['seconds']:.0f}s)",
        )  # fmt: skip
    return _summary(curves, train, test, settings, backbone, config)


def _summary(
    curves: list[dict[str, Any]],
    train: ImageDataset,
    test: ImageDataset,
    settings: Any,
    backbone: str,
    config: Any,
) -> dict[str, Any]:
    """The record: settings, each seed's curves, the mean curves and where active met
    random's final accuracy on them."""
    mean = {
        arm: [
            {
                **curves[0][arm][i],
                "accuracy": float(np.mean([c[arm][i]["accuracy"] for c in curves])),
            }
            for i in range(min(len(c[arm]) for c in curves))
        ]
        for arm in ("active", "random")
    }
    target = mean["random"][-1]["accuracy"]
    return {
        "backbone": backbone,
        "layers": list(config.layers),
        "image_size": config.image_size,
        "seed_per_class": settings.active_seed_per_class,
        "rounds": settings.active_rounds,
        "batch": settings.active_batch,
        "seeds": list(settings.seeds),
        "pool_images": len(train) - settings.active_seed_per_class * len(train.classes),
        "test_images": len(test),
        "test_fingerprint": test.fingerprint(),
        "curves": curves,
        "mean": mean,
        "random_final": target,
        "active_labels_per_class_to_match": first_reaching(mean["active"], target),
    }


def active_verdict(record: dict[str, Any]) -> str:
    """Where active labelling reached random labelling's final accuracy, or that it did
    not, in one sentence."""
    mean = record["mean"]
    last = mean["random"][-1]
    seeds = record["seeds"]
    over = f"mean over seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else f"seed {seeds[0]}"
    matched = record["active_labels_per_class_to_match"]
    target = f"({last['accuracy']:.1%} at {last['labels_per_class']:g} labels per class)"
    if matched is None:
        return (
            f"Active labelling did not reach random labelling's final accuracy {target} "
            f"within {record['rounds']} rounds ({over}); it ended at "
            f"{mean['active'][-1]['accuracy']:.1%}."
        )
    if matched <= mean["random"][0]["labels_per_class"]:
        return (
            f"The seed set alone reached random labelling's final accuracy {target} ({over}): "
            "this data leaves no labels to save, so the curve cannot measure any."
        )
    saved = 1 - matched / last["labels_per_class"]
    return (
        f"Active labelling reached random labelling's final accuracy {target} at "
        f"{matched:g} labels per class ({over}): {saved:.0%} fewer labels."
    )


def active_lines(record: dict[str, Any] | None, plot: str | None) -> list[str]:
    """The report's "Active against random labelling" section (Markdown): what was run,
    where active reached random's final accuracy (or that it did not), the curve, a table."""
    if not record:
        return []
    mean = record["mean"]
    lines = [
        "## Active against random labelling",
        "",
        f"From {record['seed_per_class']} labels per class of the training split, "
        f"{record['rounds']} rounds of {record['batch']} labels: `headstart suggest`'s picks "
        f"from the other {record['pool_images']} training images (their labels read only "
        "once picked) against as many drawn at random. Each round a linear probe on "
        f"{record['backbone']}'s features ({', '.join(record['layers'])}) is refitted "
        f"per arm and scored on the same {record['test_images']} test images. Labels per "
        "class: labelled images / classes (active picks need not be balanced).",
        "",
        active_verdict(record),
        "",
    ]
    if plot:
        lines += [f"![Active against random labelling]({plot})", ""]
    lines += ["| labels/class | active | random | active − random |", "| --- | --- | --- | --- |"]
    for act, rnd in zip(mean["active"], mean["random"], strict=True):
        gap = 100 * (act["accuracy"] - rnd["accuracy"])
        lines.append(
            f"| {act['labels_per_class']:g} | {100 * act['accuracy']:.1f} % | "
            f"{100 * rnd['accuracy']:.1f} % | {gap:+.1f} |"
        )
    return [*lines, ""]


def write_active_plot(record: dict[str, Any], folder: Path) -> Path:
    """The mean curves as ``ACTIVE_PLOT`` in ``folder`` (an SVG the HTML page inlines)."""
    seeds = record["seeds"]
    svg = line_chart_svg(
        _series(record),
        title="Active against random labelling"
        + (f" (mean over {len(seeds)} seeds)" if len(seeds) > 1 else ""),
        x_label="labelled training images per class",
        y_label="test accuracy (%)",
        y_limits=(0, 100),
    )
    path = Path(folder) / ACTIVE_PLOT
    atomic_write(path, lambda handle: handle.write(svg.encode()))
    return path


def _series(record: dict[str, Any]) -> list[tuple[str, str, list[tuple[float, float]]]]:
    """(name, colour, points) of the mean curves, accuracy in percent: what the plot draws."""
    return [
        (name, colour, [(p["labels_per_class"], 100 * p["accuracy"]) for p in record["mean"][arm]])
        for arm, name, colour in (
            ("active", "active (suggest)", "#d62728"),
            ("random", "random", "#1f77b4"),
        )
    ]
