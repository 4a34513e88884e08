"""The training job every face runs: `TrainingJob` (folder, CSV or datasets in; a
trained, evaluated and saved model out) and the one-call `fit_folder`."""

from headstart._internal.lazy import lazy_exports

_EXPORTS = {
    "TrainingJob": ".training",
    "TrainingResult": ".training",
    "fit_folder": ".training",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
