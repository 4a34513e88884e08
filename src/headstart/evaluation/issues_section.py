"""The comparison's label issues: `headstart clean` run on the training draw the largest
runs trained on, from the features their feature extraction cached, with the gallery
written next to the report; and the report's lines about it."""

from __future__ import annotations

import os
from typing import Any

from headstart.data.dataset import ImageDataset
from headstart.errors import HeadstartError
from headstart.evaluation.issue_files import GALLERY_FILE, ISSUES_FILE, write_issue_files
from headstart.evaluation.label_issues import find_label_issues
from headstart.parallel import world

__all__ = ["comparison_label_issues", "label_issue_lines"]

STRATEGY = "feature-extraction"  # whose cached features the label issues reuse


def comparison_label_issues(
    draw: ImageDataset,
    labels_per_class: int | None,
    *,
    backbone: str,
    weights: str,
    config: Any,
    cache_dir: str | os.PathLike[str] | None,
    folder: os.PathLike[str],
) -> dict[str, Any]:
    """Find the label issues of ``draw`` (``config``: the feature-extraction run's
    TrainConfig, so its features come from the cache) and write the issue files into
    ``folder`` (rank 0). Returns what results.json records: the counts and file names,
    or why none were looked for."""
    where = {"labels_per_class": "all" if labels_per_class is None else labels_per_class}
    where |= {"seed": config.seed, "images": len(draw), "backbone": backbone}
    if cache_dir is None:
        return {**where, "skipped": "no feature cache to take the features from"}
    try:
        found = find_label_issues(
            draw, backbone=backbone, weights=weights, image_size=config.image_size,
            layers=config.layers, cache_dir=cache_dir, device=config.device,
            batch_size=max(config.batch_size, 64), seed=config.seed,
        )  # fmt: skip
    except HeadstartError as exc:  # e.g. a class of one image: the comparison goes on
        return {**where, "skipped": str(exc)}
    if world().is_main:
        write_issue_files(found, draw, folder, title="Label issues of the training draw")
    return {
        **where,
        "count": len(found.label_issues),
        "outliers": sum(issue.kind == "outlier" for issue in found.issues),
        "near_duplicates": sum(not pair.exact for pair in found.near_duplicates),
        "gallery": GALLERY_FILE,
        "csv": ISSUES_FILE,
    }


def label_issue_lines(record: dict[str, Any] | None) -> list[str]:
    """The report's "Label issues" section (Markdown), from results.json's record."""
    if not record:
        return []
    draw = (
        f"the {record['images']} training images of the largest draw "
        f"({record['labels_per_class']} per class, seed {record['seed']})"
    )
    if "skipped" in record:
        return ["## Label issues", "", f"Not looked for in {draw}: {record['skipped']}.", ""]
    return [
        "## Label issues",
        "",
        f"`headstart clean` flags {record['count']} label issue(s) in {draw}, from the "
        f"features feature extraction cached ({record['backbone']}), with "
        f"{record['outliers']} outlier(s) and {record['near_duplicates']} near-duplicate "
        f"pair(s). Gallery: [{record['gallery']}]({record['gallery']}); ranked list: "
        f"{record['csv']}.",
        "",
    ]
