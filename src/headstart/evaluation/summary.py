"""A comparison's results in rows: per (strategy, backbone, size), the mean, min and max
accuracy over seeds (what the report's table and plots are drawn from)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from headstart.backbones.registry import DEFAULT_BACKBONE

__all__ = ["sizes_in_order", "summarise"]


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
