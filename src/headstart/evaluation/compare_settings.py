"""What a comparison compares (`CompareSettings`: strategies, sizes, seeds, backbones,
per-strategy overrides, the active-vs-random curve), checked when made, and settings
given once for all the strategies compared (`shared_overrides`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from headstart._internal.validation import (
    Constraints,
    Interval,
    Items,
    Optional,
    Satisfies,
    invalid,
    validate,
)
from headstart.backbones.registry import DEFAULT_BACKBONE
from headstart.errors import ConfigError
from headstart.strategies.registry import get_strategy, strategy_names

__all__ = ["COMPARE_CONSTRAINTS", "DEFAULT_STRATEGIES", "CompareSettings", "shared_overrides"]

DEFAULT_STRATEGIES = ("scratch", "feature-extraction", "fine-tune")


# The requirements a table can state (strategies and overrides are checked against the
# strategy registry, backbones against each other, in ``__post_init__``).
COMPARE_CONSTRAINTS: Constraints = {
    "labels_per_class": Items(
        Optional(Interval(int, 1, None)), "at least one size", each="ints >= 1 or None (all)"
    ),
    "seeds": Items(Interval(int, 0, None), "one or more ints >= 0"),
    "active": Satisfies(lambda v: isinstance(v, bool), "True or False", "yes"),
    "active_rounds": Interval(int, 1, None),
    "active_batch": Interval(int, 1, None),
    "active_seed_per_class": Interval(int, 1, None),
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
    # Active against random labelling (``active_section``): from ``active_seed_per_class``
    # labels per class of the training split, ``active_rounds`` rounds of ``active_batch``
    # suggested labels vs as many random ones, a probe on cached features, per seed.
    active: bool = False
    active_rounds: int = 5
    active_batch: int = 20
    active_seed_per_class: int = 2

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
