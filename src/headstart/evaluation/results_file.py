"""A comparison's results file, results.json: written after every run (atomically, by
rank 0 under torchrun), read back so that a run again reuses every finished run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from headstart._internal.atomic import atomic_write
from headstart.parallel import world

__all__ = ["RESULTS_FILE", "earlier_runs", "load_results", "pending_runs", "write_results"]

RESULTS_FILE = "results.json"


def _run_key(record: dict[str, Any], backbone: str) -> tuple[str, str, str, int]:
    """What a run is, whatever its id says: results of older versions have no backbone
    field (they compared one, ``backbone``: the one their settings name)."""
    return (
        record.get("backbone", backbone),
        record["strategy"],
        str(record["labels_per_class"]),
        record["seed"],
    )


def load_results(folder: Path) -> dict[str, Any]:
    """The results file of a comparison folder (empty when there is none yet)."""
    path = Path(folder) / RESULTS_FILE
    if not path.is_file():
        return {"runs": []}
    try:
        return json.loads(path.read_text())
    except ValueError:
        return {"runs": []}  # a results file cut short by an old crash: start afresh


def write_results(folder: Path, results: dict[str, Any]) -> None:
    if not world().is_main:  # under torchrun every rank runs the comparison; rank 0 writes
        return
    text = json.dumps(results, indent=2, sort_keys=True)
    atomic_write(Path(folder) / RESULTS_FILE, lambda handle: handle.write(text.encode()))


def earlier_runs(folder: Path, settings: Any) -> dict[tuple, dict[str, Any]]:
    """The runs ``results.json`` in ``folder`` holds already, by (backbone, strategy, size,
    seed), each named by its backbone (should the settings name another one now)."""
    loaded = load_results(folder)
    old_backbone = loaded.get("settings", {}).get("backbone", settings.backbone)
    previous = {}
    for r in [*loaded.get("earlier_runs", []), *loaded.get("runs", [])]:
        key = _run_key(r, old_backbone)
        previous[key] = {**r, "backbone": key[0]}
    return previous


def pending_runs(previous: dict[str, Any], results: dict[str, Any]) -> list[dict[str, Any]]:
    """Earlier finished runs not yet reached in this pass: kept, so a crash loses nothing."""
    backbone = results["settings"]["backbone"]
    done = {_run_key(r, backbone) for r in results["runs"]}
    return [r for key, r in previous.items() if key not in done and r.get("status") == "ok"]
