"""Training: the config, the loop, checkpoints, callbacks, freezing, the linear probe,
label spreading and the network every strategy trains."""

from headstart._internal.lazy import lazy_exports

_EXPORTS = {
    "Callback": ".callbacks",
    "EpochRecord": ".callbacks",
    "CHECKPOINT_FORMAT": ".checkpoint",
    "load_checkpoint": ".checkpoint",
    "save_checkpoint": ".checkpoint",
    "HEADS": ".config",
    "BN_POLICIES": ".config",
    "TrainConfig": ".config",
    "LayerGroup": ".freezing",
    "layer_groups": ".freezing",
    "resolve_frozen_count": ".freezing",
    "TrainOutcome": ".loop",
    "evaluate_loader": ".loop",
    "train_loop": ".loop",
    "classification_metrics": ".metrics",
    "Classifier": ".network",
    "HeadSpec": ".network",
    "build_head": ".network",
    "LinearProbe": ".probe",
    "fit_linear_probe": ".probe",
    "Propagation": ".spreading",
    "label_spreading": ".spreading",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
