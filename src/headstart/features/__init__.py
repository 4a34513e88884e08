"""Frozen features: the inference fast path, extraction by layer, and the on-disk cache."""

from headstart._internal.lazy import lazy_exports

_EXPORTS = {
    "CacheEntry": ".cache",
    "CacheUse": ".cache",
    "FeatureCache": ".cache",
    "cached_features": ".cache",
    "default_cache_dir": ".cache",
    "weights_digest": ".cache",
    "extract_features": ".extract",
    "fast_path_available": ".fastpath",
    "fold_batchnorm": ".fastpath",
    "inference_model": ".fastpath",
    "inference_transforms": ".fastpath",
    "numerics": ".fastpath",
    "split_transform": ".fastpath",
    "parse_layer": ".layers",
    "pooled_features": ".layers",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
