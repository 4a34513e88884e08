"""The strategy registry. Built-in strategies are imported when first asked for, so
listing their names (``headstart --help``) costs no torch; ``register_strategy`` adds
more."""

from __future__ import annotations

import importlib

from headstart._internal.validation import invalid
from headstart.strategies.base import Strategy

__all__ = [
    "STRATEGIES",
    "all_strategies",
    "get_strategy",
    "register_strategy",
    "strategy_names",
]

_BUILTIN = {
    "feature-extraction": "headstart.strategies.feature_extraction",
    "semi-supervised": "headstart.strategies.semi_supervised",
    "fine-tune": "headstart.strategies.fine_tune",
    "scratch": "headstart.strategies.scratch",
}
STRATEGIES: dict[str, Strategy] = {}  # name -> instance, filled as strategies are imported


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a ``Strategy`` subclass available by its ``name``."""
    STRATEGIES[cls.name] = cls()
    return cls


def strategy_names() -> list[str]:
    """Every strategy's name, built-in or registered, without importing any of them."""
    return sorted(set(_BUILTIN) | set(STRATEGIES))


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``; an unknown name is a ConfigError listing the known."""
    if name not in STRATEGIES and isinstance(name, str) and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    if name not in STRATEGIES:
        raise invalid("ImageClassifier", "strategy", f"one of {strategy_names()}", name)
    return STRATEGIES[name]


def all_strategies() -> dict[str, Strategy]:
    """Every strategy, the built-in ones imported: the live registry."""
    for name in _BUILTIN:
        get_strategy(name)
    return STRATEGIES
