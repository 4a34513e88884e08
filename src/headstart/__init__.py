"""headstart: transfer learning on small image collections, measured against scratch.

The curated public API is listed in ``__all__``; everything else is internal. Names
are imported on first use (PEP 562), so ``import headstart`` costs no torch.
"""

from headstart._internal.lazy import lazy_exports
from headstart._internal.version import __version__ as __version__

_EXPORTS = {
    "Backbone": "headstart.backbones.registry",
    "create_backbone": "headstart.backbones.registry",
    "list_backbones": "headstart.backbones.registry",
    "Preprocessing": "headstart.backbones.preprocessing",
    "CompareSettings": "headstart.evaluation.comparison",
    "compare": "headstart.evaluation.comparison",
    "build_report": "headstart.evaluation.report",
    "Suggestion": "headstart.active.suggestions",
    "SuggestionList": "headstart.active.suggestions",
    "suggest": "headstart.active.suggesting",
    "LabelIssues": "headstart.evaluation.label_issues",
    "find_label_issues": "headstart.evaluation.label_issues",
    "TrainConfig": "headstart.train.config",
    "LinearProbe": "headstart.train.probe",
    "fit_linear_probe": "headstart.train.probe",
    "label_spreading": "headstart.train.spreading",
    "DecodeOptions": "headstart.data.decode",
    "decode_image": "headstart.data.decode",
    "ImageDataset": "headstart.data.dataset",
    "LoadReport": "headstart.data.dataset",
    "from_arrays": "headstart.data.arrays",
    "load_csv": "headstart.data.loaders",
    "load_folder": "headstart.data.loaders",
    "load_unlabelled": "headstart.data.loaders",
    "load_fashion_mnist": "headstart.data.idx",
    "load_idx": "headstart.data.idx",
    "load_sample": "headstart.data.idx",
    "load_images": "headstart.data.layout",
    "open_dataset": "headstart.data.layout",
    "sample_per_class": "headstart.data.split",
    "split_dataset": "headstart.data.split",
    "check_data": "headstart.data.doctor",
    "BackboneError": "headstart.errors",
    "ConfigError": "headstart.errors",
    "DataError": "headstart.errors",
    "ExportError": "headstart.errors",
    "HeadstartError": "headstart.errors",
    "ImageDecodeError": "headstart.errors",
    "NotFittedError": "headstart.errors",
    "OutputError": "headstart.errors",
    "TrainingError": "headstart.errors",
    "TrainingInterrupted": "headstart.errors",
    "WeightsError": "headstart.errors",
    "ImageClassifier": "headstart.estimator.image_classifier",
    "fit_folder": "headstart.job.training",
    "TrainingJob": "headstart.job.training",
    "TrainingResult": "headstart.job.training",
    "EnsembleClassifier": "headstart.estimator.ensemble",
    "EnsembleMember": "headstart.estimator.ensemble",
    "fit_ensemble": "headstart.estimator.ensemble",
    "OnnxClassifier": "headstart.export.runtime",
    "export_onnx": "headstart.export.exporter",
    "logme": "headstart.rank.evidence",
    "FeatureCache": "headstart.features.cache",
    "extract_features": "headstart.features.extract",
    "STRATEGIES": "headstart.strategies",
    "get_strategy": "headstart.strategies.registry",
    "register_strategy": "headstart.strategies.registry",
}

__all__ = sorted([*_EXPORTS, "__version__"])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
