"""Backbones: timm architectures, where their weights come from, and the device they run on."""

from headstart._internal.lazy import lazy_exports

# The bundled backbone (real ImageNet weights, installed with headstart). Defined here,
# not in the registry, so the command line can name it without importing timm.
DEFAULT_BACKBONE = "tf_efficientnet_lite0"

_EXPORTS = {
    "Backbone": ".registry",
    "BackboneInfo": ".registry",
    "check_backbone_name": ".registry",
    "create_backbone": ".registry",
    "list_backbones": ".registry",
    "Preprocessing": ".preprocessing",
    "BUNDLED_WEIGHTS": ".weights",
    "WeightsInfo": ".weights",
    "read_state_dict": ".weights",
    "select_device": ".device",
}
__all__ = sorted([*_EXPORTS, "DEFAULT_BACKBONE"])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
