"""Active learning: which unlabelled images to label next (``suggest``), and how much
that saves against labelling images at random (``active_curve``).

A room between ``evaluation`` (whose comparison draws the active-vs-random curve) and
``estimator`` (whose model folders it reads); it ranks from cached features only.
"""

from headstart._internal.lazy import lazy_exports

_EXPORTS = {
    "Suggestion": ".suggestions",
    "SuggestionList": ".suggestions",
    "suggest": ".suggesting",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
