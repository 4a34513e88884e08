"""Parallel: which process this is among how many (torchrun's process group, `world`).

A room of its own, below every room that computes in a group (``features`` extracts a
share of the images, ``train`` trains a slice of each batch, ``evaluation`` and ``cli``
decide who reports) and above ``data``, which never needs it. Without torchrun it is a
world of one, and every collective here is a no-op.
"""

from headstart._internal.lazy import lazy_exports

_EXPORTS = {
    name: ".group"
    for name in (
        "TIMEOUT_ENV",
        "World",
        "any_across",
        "broadcast",
        "close_distributed",
        "gather_to_all",
        "init_distributed",
        "launched_by_torchrun",
        "sum_across",
        "world",
    )
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
