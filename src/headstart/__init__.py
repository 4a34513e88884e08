"""headstart: transfer learning on small image collections, measured against scratch.

The curated public API is listed in ``__all__``; everything else is internal.
"""

from headstart.backbones import Backbone, Preprocessing, create_backbone, list_backbones
from headstart.compare import CompareSettings, compare
from headstart.config import TrainConfig
from headstart.data import (
    DecodeOptions,
    ImageDataset,
    LoadReport,
    decode_image,
    from_arrays,
    load_csv,
    load_fashion_mnist,
    load_folder,
    load_idx,
    load_images,
    load_sample,
    load_unlabelled,
    open_dataset,
    sample_per_class,
    split_dataset,
)
from headstart.errors import (
    BackboneError,
    ConfigError,
    DataError,
    HeadstartError,
    ImageDecodeError,
    NotFittedError,
    TrainingError,
    WeightsError,
)
from headstart.estimator import ImageClassifier, fit_folder
from headstart.features import FeatureCache, extract_features
from headstart.probe import LinearProbe, fit_linear_probe
from headstart.propagate import label_spreading
from headstart.report import build_report
from headstart.strategies import STRATEGIES

__version__ = "0.1.0"

__all__ = [
    "Backbone",
    "BackboneError",
    "CompareSettings",
    "ConfigError",
    "DataError",
    "DecodeOptions",
    "FeatureCache",
    "HeadstartError",
    "ImageClassifier",
    "ImageDataset",
    "ImageDecodeError",
    "LinearProbe",
    "LoadReport",
    "NotFittedError",
    "Preprocessing",
    "STRATEGIES",
    "TrainConfig",
    "TrainingError",
    "WeightsError",
    "__version__",
    "build_report",
    "compare",
    "create_backbone",
    "decode_image",
    "extract_features",
    "fit_folder",
    "fit_linear_probe",
    "label_spreading",
    "from_arrays",
    "list_backbones",
    "load_csv",
    "load_fashion_mnist",
    "load_folder",
    "load_idx",
    "load_images",
    "load_sample",
    "load_unlabelled",
    "open_dataset",
    "sample_per_class",
    "split_dataset",
]
