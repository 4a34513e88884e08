"""Images in: decode safely, load folders, CSVs, IDX files and arrays, split, and diagnose.

This room imports NumPy and Pillow, never torch: ``headstart check`` runs without it.
"""

from headstart._internal.lazy import lazy_exports

_EXPORTS = {
    "IMAGE_EXTENSIONS": ".decode",
    "DecodeInfo": ".decode",
    "DecodeOptions": ".decode",
    "decode_array": ".decode",
    "decode_image": ".decode",
    "normalise_image": ".decode",
    "UNLABELLED": ".dataset",
    "ImageDataset": ".dataset",
    "LoadReport": ".dataset",
    "SkippedFile": ".dataset",
    "TorchImageDataset": ".dataset",
    "image_files": ".loaders",
    "is_image_name": ".loaders",
    "load_csv": ".loaders",
    "load_folder": ".loaders",
    "load_unlabelled": ".loaders",
    "scan_images": ".loaders",
    "from_arrays": ".arrays",
    "FASHION_MNIST_CLASSES": ".idx",
    "find_idx_pair": ".idx",
    "load_fashion_mnist": ".idx",
    "load_idx": ".idx",
    "load_sample": ".idx",
    "evaluation_set": ".layout",
    "is_presplit": ".layout",
    "load_images": ".layout",
    "open_dataset": ".layout",
    "sample_per_class": ".split",
    "split_dataset": ".split",
    "Diagnosis": ".doctor",
    "Finding": ".findings",
    "check_data": ".doctor",
    "diagnose": ".doctor",
    "write_report": ".doctor",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
