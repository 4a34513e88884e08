"""The estimator: ``ImageClassifier`` (fit, predict, score, save, load) and the model
folder it reads and writes."""

from headstart._internal.lazy import lazy_exports

_EXPORTS = {
    "ImageClassifier": ".image_classifier",
    "EnsembleClassifier": ".ensemble",
    "EnsembleMember": ".ensemble",
    "fit_ensemble": ".ensemble",
    "Prediction": ".results",
    "META_FILE": ".model_files",
    "WEIGHTS_FILE": ".model_files",
    "load_model": ".model_files",
    "save_model": ".model_files",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
