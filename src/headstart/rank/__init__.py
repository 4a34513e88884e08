"""Choose for me: rank backbone x input size x feature layers on the user's labelled
images without training them all (LogME, a cross-validated probe, kNN).

A face on top of the library: it uses the public functions of the rooms below.
"""

from headstart._internal.lazy import lazy_exports

_EXPORTS = {
    "Candidate": ".ranking",
    "CandidateScore": ".ranking",
    "LAYER_SETS": ".ranking",
    "Ranking": ".ranking",
    "candidates_for": ".ranking",
    "rank": ".ranking",
    "save_ranking": ".ranking",
    "logme": ".evidence",
    "knn_accuracy": ".scores",
    "probe_accuracy": ".scores",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
