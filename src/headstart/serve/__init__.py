"""The HTTP face: a prediction server (FastAPI) and its web page.

A room on top, beside the command line: it predicts through the estimator's public
API and never touches the core's private names. FastAPI and uvicorn are an optional
extra (``pip install headstart[serve]``); importing this package costs nothing.
"""

from headstart._internal.lazy import lazy_exports

_EXPORTS = {
    "create_app": ".app",
    "check_bind": ".app",
    "ServeLimits": ".limits",
    "MicroBatcher": ".batching",
    "QueueFull": ".batching",
    "Predictor": ".predictor",
    "EstimatorPredictor": ".predictor",
    "load_predictor": ".predictor",
    "TrainingJobs": ".training",
    "TrainingSettings": ".training",
    "LabelStore": ".labels",
    "Labelling": ".labelling",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
