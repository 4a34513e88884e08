"""Strategies: each turns (backbone, data, config) into a trained ``Classifier``.

- ``feature-extraction``: the whole base frozen; features computed once (cached
  on disk), the new head trained on them. With augmentation asked for, the
  cache cannot be used: the frozen base then runs every epoch, and we say so.
- ``fine-tune``: the first N layer groups frozen, the rest retrained with small,
  optionally layer-wise decayed learning rates; BatchNorm in frozen groups keeps
  its statistics. By default the head is first fitted on cached features
  (LP-FT): a random head's gradients would otherwise damage the pre-trained
  features in the first steps.
- ``semi-supervised``: feature extraction that also uses unlabelled images:
  labels spread to them over a nearest-neighbour graph of the cached features,
  and the head trains on labelled and newly labelled images alike.
- ``scratch``: the same architecture from random initialisation, all of it
  trained: the baseline that shows what transfer buys.

Every strategy reports its plan before it trains. One module per strategy; the
registry imports a built-in strategy only when it is first asked for.
"""

from typing import Any

from headstart.strategies.base import FitContext, FitResult, Plan, PlanRow, Strategy
from headstart.strategies.registry import (
    all_strategies,
    get_strategy,
    register_strategy,
    strategy_names,
)

__all__ = [
    "STRATEGIES",
    "FitContext",
    "FitResult",
    "Plan",
    "PlanRow",
    "Strategy",
    "all_strategies",
    "get_strategy",
    "register_strategy",
    "strategy_names",
]


def __getattr__(name: str) -> Any:
    if name == "STRATEGIES":  # the live registry, with every built-in strategy loaded
        return all_strategies()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"STRATEGIES"})
