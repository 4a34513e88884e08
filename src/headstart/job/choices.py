"""The choices a training job makes from a ranking of its training images: the backbone
and layers for ``backbone="auto"`` / ``layers="auto"``, and the members of an ensemble.

Both rank candidates with `headstart.rank.rank` on the training part only (the test part
is never looked at) and say what they chose, and why, through the job's callback."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from headstart.data.dataset import ImageDataset
from headstart.errors import ConfigError, DataError
from headstart.train.callbacks import Callback
from headstart.train.config import TrainConfig

__all__ = ["bundled_backbones", "choose_by_ranking", "choose_members", "rank_images"]


def bundled_backbones(callback: Callback) -> list[str]:
    """The bundled backbones this machine has; a note for each it lacks."""
    from headstart.backbones.registry import list_backbones

    known = list_backbones()
    for row in known:
        if row.source == "bundled" and not row.available:
            callback.on_note(f"note: {row.name} is not installed here ({row.note})")
    return [r.name for r in known if r.source == "bundled" and r.available]


def rank_images(
    train: ImageDataset,
    config: TrainConfig,
    *,
    backbones: Sequence[str] | None,
    rank_layers: bool,
    weights: str,
    cache_dir: Path | None,
    callback: Callback,
    top: int,
) -> Any:
    """The ranking of ``backbones`` (None: every bundled one) at ``config.image_size`` (None:
    each one's own and half), over every default layer set when ``rank_layers`` (else
    ``config.layers``), on ``train``; its table goes to ``callback.on_ranking``."""
    from headstart.backbones.registry import list_backbones
    from headstart.features.cache import FeatureCache
    from headstart.rank.ranking import LAYER_SETS, candidates_for, rank

    names = list(backbones) if backbones is not None else bundled_backbones(callback)
    native = {row.name: row.input_size for row in list_backbones() if row.input_size}
    sizes = [config.image_size] if config.image_size else None
    layer_sets = LAYER_SETS if rank_layers else [config.layers]
    candidates = candidates_for(names, sizes, layer_sets, native)
    callback.on_note(f"ranking {len(candidates)} candidates on the {len(train)} training images:")
    ranking = rank(
        train,
        candidates,
        weights=weights,
        cache=FeatureCache(cache_dir) if cache_dir is not None else None,
        device=config.device,
        batch_size=config.batch_size,
        seed=config.seed,
        notice=lambda line: callback.on_note(f"  {line}"),
    )
    callback.on_ranking(ranking, top)
    if not ranking.ranked:  # the table gave each one's reason
        raise DataError("No candidate could be scored; each one's reason is listed above.")
    return ranking


def choose_by_ranking(ranking: Any, config: TrainConfig, callback: Callback) -> tuple[str, Any]:
    """(backbone, config) of the ranking's best candidate, said with its reason."""
    best = ranking.best
    callback.on_note(f"chosen: {best.candidate.name}: {ranking.why_best()}")
    chosen = best.candidate
    return chosen.backbone, config.replace(image_size=chosen.image_size, layers=chosen.layers)


def choose_members(ranking: Any, k: int, callback: Callback) -> list[Any]:
    """The top ``k`` candidates of ``ranking`` with distinct (backbone, input size), best
    first, as ensemble members; a ConfigError when fewer than two are distinct."""
    from headstart.estimator.ensemble import EnsembleMember

    members, taken = [], set()
    for score in ranking.ranked:  # best first; one member per backbone and input size
        c = score.candidate
        if (c.backbone, c.image_size) not in taken and len(members) < k:
            taken.add((c.backbone, c.image_size))
            members.append(EnsembleMember(c.backbone, c.image_size, tuple(c.layers)))
    if len(members) < 2:
        raise ConfigError(
            f"{{ensemble}} {k}: the ranking has {len(members)} distinct backbone and size "
            "pair(s); an ensemble needs 2. Rank more: {backbone} auto (every bundled "
            "backbone), or leave {image_size} out (each backbone at its own size and half).",
            names_in_message=True,
        )
    if len(members) < k:
        callback.on_note(f"note: only {len(members)} distinct backbone and size pairs were ranked")
    chosen = ", ".join(f"{m.name} ({','.join(m.layers)})" for m in members)
    callback.on_note(f"ensemble of the top {len(members)}: {chosen}")
    return members
