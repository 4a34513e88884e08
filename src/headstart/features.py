"""Frozen-backbone features: computed once on a fast path, then cached on disk.

Feature extraction trains only a head, so the frozen base needs to see each
image exactly once. ``extract_features`` runs it batched under
``inference_mode`` with the fastest numerics the device offers (BatchNorm folded
into the convolutions, channels_last, and bf16 autocast on CPUs with AVX-512
BF16/AMX; autocast on CUDA), and
``FeatureCache`` stores the result keyed by the *content* of the weights, the
preprocessing and the images, so a second run does no forward pass at all and
any change to those inputs computes afresh.

Layers: ``"final"`` is the pooled input of the classifier head; ``"stage<i>"``
(or ``"stage-<j>"``, counted from the last) is global-average-pooled output of
intermediate stage i (timm's
``forward_intermediates``), which can transfer better to data far from
ImageNet. One cache entry holds any number of layers.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.data.transforms import MaybeToTensor
from timm.layers import BatchNormAct2d, Conv2dSame
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms

from headstart._validation import LAYER_PATTERN, invalid
from headstart.backbones import Backbone, Preprocessing, select_device
from headstart.data import ImageDataset, TorchImageDataset
from headstart.errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locks, so stale temp files stay
    fcntl = None

__all__ = [
    "FeatureCache",
    "extract_features",
    "fast_path_available",
    "feature_key",
    "weights_digest",
]

Progress = Callable[[int, int], None]  # (images done, images in all)
FOLD_CHECK_IMAGES = 2  # random images that check a BatchNorm-folded copy against its model


def fast_path_available(device: torch.device) -> bool:
    """Whether reduced-precision autocast pays off on this device."""
    if device.type == "cuda":
        return True
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(cpu, name, lambda: False)() for name in checks)
    return False


@contextlib.contextmanager
def numerics(model: nn.Module, device: torch.device, fast: bool) -> Iterator[None]:
    """Autocast on the fast path; fp32 otherwise. The model's own weights stay fp32."""
    if fast and fast_path_available(device):
        dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            dtype = torch.bfloat16
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield
    else:
        yield


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    """A plain Conv2d followed by a plain BatchNorm2d (or timm's BatchNormAct2d) over its
    output channels, with running statistics to fold."""
    return (
        type(conv) in (nn.Conv2d, Conv2dSame)  # not weight-standardised convs (StdConv2d)
        and type(norm) in (nn.BatchNorm2d, BatchNormAct2d)
        and norm.running_mean is not None
        and norm.num_features == conv.out_channels
    )


def _fold_pairs(model: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """(parent, conv name, norm name) for each conv whose next registered sibling is its norm."""
    pairs = []
    for parent in model.modules():
        names = list(parent._modules)
        for conv, norm in zip(names, names[1:], strict=False):
            if _foldable(parent._modules[conv], parent._modules[norm]):
                pairs.append((parent, conv, norm))
    return pairs


def fold_batchnorm(
    model: nn.Module, sample: torch.Tensor, stages: dict[str, int | None] | None = None
) -> tuple[nn.Module, int]:
    """An inference copy of ``model`` with each BatchNorm folded into the conv before it.

    In eval mode a BatchNorm is an affine map per channel, so it can be merged into the
    preceding convolution's weights and bias: one memory pass fewer per layer, which on
    CPU made the bf16 forward pass of EfficientNet-Lite0 ~1.5x faster
    (docs/BENCHMARKS.md). Pairs are found by registration order (conv, then its norm),
    which is how timm's convolutional blocks are written; because that is a convention,
    not a guarantee, the folded copy must reproduce the model's output on ``sample`` in
    fp32 (the pooled features of ``stages``, when given), or the model itself is
    returned. ``model`` must be in eval mode. Returns (model to run, norms folded); the
    given model is never changed.
    """

    def output(net: nn.Module) -> torch.Tensor:
        if stages is None:
            return net(sample)
        return torch.cat(list(pooled_features(net, sample, stages).values()), dim=1)

    if not _fold_pairs(model):
        return model, 0
    try:
        folded = copy.deepcopy(model).eval()
    except Exception:  # a model that cannot be copied runs as it is
        return model, 0
    pairs = _fold_pairs(folded)
    with torch.no_grad():
        for parent, conv_name, norm_name in pairs:
            conv, norm = parent._modules[conv_name], parent._modules[norm_name]
            scale = norm.running_var.add(norm.eps).rsqrt()
            if norm.weight is not None:
                scale = scale * norm.weight
            bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
            new_bias = (bias - norm.running_mean) * scale
            if norm.bias is not None:
                new_bias = new_bias + norm.bias
            conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
            conv.bias = nn.Parameter(new_bias, requires_grad=False)
            rest = nn.Identity()
            if isinstance(norm, BatchNormAct2d):
                rest = nn.Sequential(norm.drop, norm.act)
            parent._modules[norm_name] = rest
        with _full_fp32():
            expected = output(model).float()
            got = output(folded).float()
    # Relative to the output's largest value: elements near zero of a large output
    # carry that scale's fp32 rounding, and a wrong fold is off by far more.
    scale = expected.abs().max().clamp_min(1e-6)
    if expected.shape != got.shape or (got - expected).abs().max() > 1e-3 * scale:
        return model, 0
    return folded, len(pairs)


@contextlib.contextmanager
def _full_fp32() -> Iterator[None]:
    """True fp32 on CUDA for the fold check: no TF32 in convolutions or matmuls (PyTorch
    allows it by default on recent GPUs, and its rounding would fail a correct fold)."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def parse_layer(layer: str, model: nn.Module) -> int | None:
    """``"final"`` -> None; ``"stage<i>"`` -> i; ``"stage-<j>"`` counts from the last stage
    (``stage-1`` is the last), so one setting suits models with any number of stages."""
    if layer == "final":
        return None
    stages = len(getattr(model, "feature_info", []) or [])
    match = LAYER_PATTERN.fullmatch(layer) if isinstance(layer, str) else None
    if match:
        index = int(match.group(1))
        if 0 <= index < stages or (index < 0 and -index <= stages):
            return index % stages
    raise invalid(
        "extract_features",
        "layers",
        f"'final', 'stage0'..'stage{stages - 1}' or 'stage-1'..'stage-{stages}'",
        layer,
    )


def pooled_features(model: nn.Module, images: torch.Tensor, stages: dict[str, int | None]) -> dict:
    """One batch -> {layer: (B, D) pooled features}."""
    out: dict[str, torch.Tensor] = {}
    wanted = sorted({i for i in stages.values() if i is not None})
    if wanted:
        final, intermediates = model.forward_intermediates(images, indices=wanted)
        by_stage = dict(zip(wanted, intermediates, strict=True))
        for layer, index in stages.items():
            if index is not None:
                out[layer] = by_stage[index].float().mean(dim=(2, 3))
    else:
        final = model.forward_features(images)
    if "final" in stages:
        out["final"] = model.forward_head(final, pre_logits=True).float()
    return out


def inference_model(
    model: nn.Module,
    device: torch.device,
    fast: bool,
    input_size: Sequence[int],
    stages: dict[str, int | None] | None = None,
) -> nn.Module:
    """The eval-mode ``model`` to run for inference: on the fast path a BatchNorm-folded
    copy in channels_last (``model`` itself when nothing folds: the caller puts its
    memory format back afterwards); otherwise ``model`` unchanged."""
    if not (fast and fast_path_available(device)):
        return model
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(FOLD_CHECK_IMAGES, *input_size, generator=generator).to(device)
    with torch.inference_mode():
        folded, _ = fold_batchnorm(model, sample, stages)
    return folded.to(memory_format=torch.channels_last)


def inference_transforms(
    preprocessing: Preprocessing, fast: bool
) -> tuple[Callable, Callable | None]:
    """(per-image transform, batch collate or None for the default) for inference: on
    the fast path, geometry per image (PIL) and one vectorised scaling per batch."""
    transform = preprocessing.transform(training=False)
    split = split_transform(transform) if fast else None
    return split if split is not None else (transform, None)


def extract_features(
    backbone: Backbone,
    dataset: ImageDataset,
    *,
    layers: Sequence[str] = ("final",),
    batch_size: int = 64,
    device: str | torch.device = "auto",
    fast: bool = True,
    progress: Progress | None = None,
) -> dict[str, np.ndarray]:
    """Run the frozen backbone over every image once: {layer: float32 array (N, D)}."""
    if batch_size < 1:
        raise invalid("extract_features", "batch_size", "an int >= 1", batch_size)
    if not layers:
        raise invalid("extract_features", "layers", "a non-empty list", layers)
    device = select_device(device) if isinstance(device, str) else device
    model = backbone.model.to(device).eval()
    stages = {layer: parse_layer(layer, model) for layer in layers}
    model = inference_model(model, device, fast, backbone.preprocessing.input_size, stages)
    transform, collate = inference_transforms(backbone.preprocessing, fast)
    fast_path = fast and fast_path_available(device)
    layout = torch.channels_last if fast_path else torch.contiguous_format
    loader = DataLoader(
        TorchImageDataset(dataset, transform), batch_size, shuffle=False, collate_fn=collate
    )
    chunks: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    done = 0
    try:
        with torch.inference_mode(), numerics(model, device, fast):
            for images, _ in loader:
                images = images.to(device).contiguous(memory_format=layout)
                for layer, values in pooled_features(model, images, stages).items():
                    chunks[layer].append(values.cpu().numpy())
                done += len(images)
                if progress is not None:
                    progress(done, len(dataset))
    finally:  # the caller's model goes back as it came, also after a bad image
        backbone.model.to(memory_format=torch.contiguous_format)
    return {layer: np.concatenate(parts).astype(np.float32) for layer, parts in chunks.items()}


class _BatchFinish:
    """Collate: ``ToTensor`` + ``Normalize`` on a whole batch of uint8 RGB arrays at once.

    The same float32 operations, element by element, as the per-image transforms
    (divide by 255, subtract the mean, divide by the std), so the result is
    bit-identical; it only saves their per-image overhead, which on a 2-core CPU is
    half of all preprocessing time. Anything but same-sized uint8 RGB images goes
    through the per-image transforms instead.
    """

    def __init__(self, to_tensor: Callable, normalize: transforms.Normalize) -> None:
        self.to_tensor = to_tensor
        self.normalize = normalize
        self.mean = torch.as_tensor(normalize.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.as_tensor(normalize.std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, items: list[tuple[Any, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        images = [image for image, _ in items]
        labels = torch.as_tensor([label for _, label in items])
        arrays = [np.asarray(image) for image in images]
        shape = arrays[0].shape
        uniform = all(
            a.dtype == np.uint8 and a.ndim == 3 and a.shape == shape and a.shape[2] == 3
            for a in arrays
        )
        if not uniform:
            return torch.stack([self.normalize(self.to_tensor(i)) for i in images]), labels
        # (B, H, W, C) viewed as (B, C, H, W) is already channels_last, the layout the
        # fast path runs in: no copy to reorder it. In-place ops: one float buffer.
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return batch.to(torch.float32).div_(255).sub_(self.mean).div_(self.std), labels


def split_transform(transform: Any) -> tuple[Callable, Callable] | None:
    """(per-image geometry, batch collate) for a ``Compose`` ending in ToTensor + Normalize."""
    steps = getattr(transform, "transforms", None)
    if not steps or len(steps) < 2:
        return None
    to_tensor, normalize = steps[-2], steps[-1]
    if type(to_tensor) not in (transforms.ToTensor, MaybeToTensor) or not isinstance(
        normalize, transforms.Normalize
    ):
        return None
    return transforms.Compose(steps[:-2]), _BatchFinish(to_tensor, normalize)


def numerics_tag(device: torch.device, fast: bool) -> str:
    """The arithmetic features were computed with, for the cache key."""
    if not (fast and fast_path_available(device)):
        return "fp32"
    if device.type == "cpu":
        return "cpu-bf16-bnfold"
    return "cuda-bf16-bnfold" if torch.cuda.is_bf16_supported() else "cuda-fp16-bnfold"


def weights_digest(model: nn.Module) -> str:
    """sha256 of a model's state dict contents: names, shapes, dtypes and bytes."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def model_key(
    backbone: Backbone, fast: bool, device: torch.device | None = None, options: Any = None
) -> str:
    """What features depend on besides the images: weights, preprocessing, decoding, numerics."""
    device = device or torch.device("cpu")
    parts = {
        "backbone": backbone.name,
        "weights": weights_digest(backbone.model),
        "preprocessing": backbone.preprocessing.to_dict(),
        "decode": repr(options),
        "numerics": numerics_tag(device, fast),
        "format": 2,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def rows_key(dataset: ImageDataset) -> str:
    """The images, in order (labels play no part: features do not depend on them)."""
    return hashlib.sha256("\n".join(dataset.content_hashes()).encode()).hexdigest()[:32]


def feature_key(
    backbone: Backbone, dataset: ImageDataset, fast: bool, device: torch.device | None = None
) -> str:
    """Cache key: any change in weights, preprocessing, images or numerics changes it."""
    return f"{model_key(backbone, fast, device, dataset.options)}/{rows_key(dataset)}"


_KEY = re.compile(r"[0-9a-f]{32}")  # model and rows keys: 32 hex digits of a sha256
_ENTRY_FILE = re.compile(r"[A-Za-z0-9_\-]+\.npy|rows\.txt")
_TEMP_FILE = re.compile(r"\..+\.[A-Za-z0-9_]+\.tmp")  # atomic_write's, see _locked_temp


TAG_FILE = "CACHEDIR.TAG"  # https://bford.info/cachedir/: backup tools skip the folder
_TAG = b"Signature: 8a477f597d28d172789f06886806bc55\n# headstart feature cache\n"


def _key_folders(folder: Path) -> list[Path]:
    try:
        return [
            p
            for p in folder.iterdir()
            if _KEY.fullmatch(p.name) and p.is_dir() and not p.is_symlink()
        ]
    except OSError:
        return []


@dataclass(frozen=True)
class CacheEntry:
    """One cached set of features: ``headstart cache`` lists these."""

    key: str  # "<model key>/<rows key>"
    path: Path
    size: int  # bytes on disk
    images: int | None  # rows, from rows.txt (None for an entry without one)
    layers: tuple[str, ...]
    last_used: float  # POSIX time of the last write or cache hit


@dataclass
class FeatureCache:
    """Features on disk: ``root/<model key>/<rows key>/<layer>.npy`` plus ``rows.txt``
    (the content hash of each row's image), all written atomically.

    A dataset whose images all sit in an entry already cached for the same model
    (a draw from a training set, the unlabelled rest of it) is served by picking
    rows from that entry, with no forward pass.
    """

    root: Path
    max_entries_scanned: int = 64  # per model key, newest first, when looking for rows

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser()

    def _path(self, key: str, layer: str) -> Path:
        return self.root / key / f"{layer}.npy"

    def load(
        self, key: str, layers: Sequence[str], rows: int, mmap: bool = False
    ) -> dict[str, np.ndarray] | None:
        """The cached layers, or None when any is missing or unreadable."""
        found = {}
        for layer in layers:
            path = self._path(key, layer)
            try:
                array = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
            except (OSError, ValueError, EOFError):
                return None
            if array.ndim != 2 or array.shape[0] != rows:
                return None
            found[layer] = array
        return found

    def load_rows(
        self, model: str, hashes: Sequence[str], layers: Sequence[str]
    ) -> dict[str, np.ndarray] | None:
        """Rows for ``hashes`` gathered from the entries of ``model`` (newest first), or
        None unless every one of them is found."""
        folder = self.root / model
        try:
            entries = sorted(
                (e for e in folder.iterdir() if (e / "rows.txt").is_file()),
                key=lambda e: e.stat().st_mtime,
                reverse=True,
            )[: self.max_entries_scanned]
        except OSError:
            return None
        missing = set(hashes)
        sources: list[dict[str, np.ndarray]] = []
        where: dict[str, tuple[int, int]] = {}  # hash -> (source, row in it)
        for entry in entries:
            if not missing:
                break
            try:
                stored = (entry / "rows.txt").read_text().split("\n")
            except (OSError, UnicodeDecodeError):
                continue
            index = {h: i for i, h in enumerate(stored)}
            have = missing.intersection(index)
            if not have:
                continue
            found = self.load(f"{model}/{entry.name}", layers, len(stored), mmap=True)
            if found is None:
                continue
            sources.append(found)
            self.touch(f"{model}/{entry.name}")
            where.update((h, (len(sources) - 1, index[h])) for h in have)
            missing -= have
        if missing:
            return None
        source_of = np.fromiter((where[h][0] for h in hashes), np.int64, len(hashes))
        row_of = np.fromiter((where[h][1] for h in hashes), np.int64, len(hashes))
        out = {}
        try:
            for layer in layers:
                width = sources[0][layer].shape[1]
                if any(source[layer].shape[1] != width for source in sources):
                    return None
                gathered = np.empty((len(hashes), width), dtype=np.float32)
                for number, source in enumerate(sources):
                    mine = np.flatnonzero(source_of == number)
                    gathered[mine] = source[layer][row_of[mine]]
                out[layer] = gathered
        except (OSError, ValueError):  # a file cut short under the memory map
            return None
        return out

    def entries(self) -> list[CacheEntry]:
        """Every entry under ``root``, most recently used first. Only folders laid out
        as this cache writes them count: anything else there is not ours."""
        found = []
        for model in _key_folders(self.root):
            # An entry of the first layout (root/<key>/<layer>.npy) is the model folder.
            try:
                legacy = any(_ENTRY_FILE.fullmatch(p.name) for p in model.iterdir())
            except OSError:
                continue
            for entry in _key_folders(model) + ([model] if legacy else []):
                try:  # another run may be writing or clearing it this very moment
                    found.append(self._describe(model, entry))
                except OSError:
                    continue
        return sorted(found, key=lambda e: e.last_used, reverse=True)

    @staticmethod
    def _describe(model: Path, entry: Path) -> CacheEntry:
        files = [f for f in entry.iterdir() if f.is_file() and not f.is_symlink()]
        stats = [f.stat() for f in files]
        try:
            rows: int | None = (entry / "rows.txt").read_text().count("\n") + 1
        except (OSError, UnicodeDecodeError):
            rows = None
        return CacheEntry(
            key=model.name if entry == model else f"{model.name}/{entry.name}",
            path=entry,
            size=sum(st.st_size for st in stats),
            images=rows,
            layers=tuple(sorted(f.stem for f in files if f.suffix == ".npy")),
            last_used=max([entry.stat().st_mtime] + [st.st_mtime for st in stats]),
        )

    def clear(self, older_than_days: float | None = None) -> tuple[int, int]:
        """Delete entries (those unused for ``older_than_days``, or all): (entries, bytes).

        Only the files this cache writes are removed (layer arrays, ``rows.txt``, temp
        files no live writer holds), and then the folders if that left them empty.
        """
        if older_than_days is not None and not older_than_days >= 0:
            raise invalid("FeatureCache.clear", "older_than_days", "a number >= 0", older_than_days)
        entries = self.entries()
        if entries and not (self.root / TAG_FILE).is_file():
            raise ConfigError(
                f"{self.root} has no {TAG_FILE}, so it was not made by this version of "
                "headstart's feature cache (or is not one): nothing was deleted; remove "
                "old cache folders by hand"
            )
        limit = None if older_than_days is None else time.time() - older_than_days * 86400
        removed, freed = 0, 0
        for entry in entries:
            if limit is not None and entry.last_used >= limit:
                continue
            try:
                paths = list(entry.path.iterdir())
            except OSError:
                continue
            for path in paths:
                if _ENTRY_FILE.fullmatch(path.name) and not path.is_symlink():
                    with contextlib.suppress(OSError):
                        size = path.stat().st_size
                        path.unlink()
                        freed += size
                elif _TEMP_FILE.fullmatch(path.name):
                    _unlink_unless_locked(path)
            with contextlib.suppress(OSError):
                entry.path.rmdir()
                if entry.path.parent != self.root:  # the model's folder, if that emptied it
                    entry.path.parent.rmdir()
            removed += 1
        return removed, freed

    def touch(self, key: str) -> None:
        """Mark an entry as used now (what ``clear(older_than_days=...)`` goes by)."""
        with contextlib.suppress(OSError):
            os.utime(self.root / key)

    def save(self, key: str, features: dict[str, np.ndarray], hashes: Sequence[str] = ()) -> None:
        folder = self.root / key
        folder.mkdir(parents=True, exist_ok=True)
        if not (self.root / TAG_FILE).is_file():  # marks the folder as ours (see `clear`)
            atomic_write(self.root / TAG_FILE, lambda handle: handle.write(_TAG))
        for layer, array in features.items():
            atomic_write(self._path(key, layer), lambda handle, a=array: np.save(handle, a))
        if hashes:  # last: an entry is offered for row picking only once its arrays exist
            text = "\n".join(hashes).encode()
            atomic_write(folder / "rows.txt", lambda handle: handle.write(text))


def atomic_write(path: Path, write: Callable) -> None:
    """Write via a temp file in the same folder, fsync, then rename over ``path``.

    A crash at any moment leaves either the old file or the new one, never half.
    Temp files that a killed writer of ``path`` left behind are removed first.
    """
    atomic_write_files([(Path(path), write)])


def atomic_write_files(files: Sequence[tuple[Path, Callable]]) -> None:
    """Write files that belong together so that a failure while writing replaces none.

    Every file is written and fsynced to its own temp file first; only then are all
    renamed into place. A model's weights and its description must never end up half
    old, half new because the disk filled up while the second was being written.
    """
    staged: list[tuple[int, str, Path]] = []  # (locked fd, temp path, target)
    try:
        for target, write in files:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_temps(path)
            fd, tmp = _locked_temp(path)
            staged.append((fd, tmp, path))
            # mkstemp makes 0600 files; a report or model should read like any other file.
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o666 & ~_UMASK)
            # closefd=False: the descriptor, and with it the lock, stays open until renamed.
            with os.fdopen(fd, "wb", closefd=False) as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
        for _, tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for _, tmp, _ in staged:
            with contextlib.suppress(OSError):  # already renamed, or never created
                os.unlink(tmp)
        raise
    finally:
        for fd, _, _ in staged:
            with contextlib.suppress(OSError):
                os.close(fd)
    for folder in {path.parent for _, _, path in staged}:
        with contextlib.suppress(OSError):  # make the renames themselves durable
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _locked_temp(path: Path) -> tuple[int, str]:
    """A new temp file beside ``path``, locked for as long as this writer lives.

    The lock is what tells `_remove_stale_temps` in another process that the file is
    still being written; the kernel drops it when the writer dies, however it dies.
    """
    while True:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        if fcntl is None:
            return fd, tmp
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a cleaner took it in the instant before the lock
            os.close(fd)
            continue
        except OSError:  # no locks on this filesystem: then nobody removes temp files
            return fd, tmp
        if os.fstat(fd).st_nlink > 0:
            return fd, tmp
        os.close(fd)  # removed by a cleaner before we locked it: take another


def _remove_stale_temps(path: Path) -> None:
    """Delete temp files of ``path`` whose writer was killed mid-write (SIGKILL, OOM).

    Only files no process holds a lock on are taken, so a concurrent writer of the
    same file (two runs sharing a feature cache) is never disturbed.
    """
    if fcntl is None:
        return
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]+\.tmp")
    try:
        names = [name for name in os.listdir(path.parent) if pattern.fullmatch(name)]
    except OSError:
        return
    for name in names:
        _unlink_unless_locked(path.parent / name)


def _unlink_unless_locked(stale: Path) -> None:
    """Delete a temp file unless a live writer holds its lock (see `_locked_temp`)."""
    if fcntl is None:
        return
    try:
        fd = os.open(stale, os.O_RDONLY)
    except OSError:
        return  # removed meanwhile, or not ours to read
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(stale)
    except OSError:
        pass  # a live writer holds it (or it is gone already): leave it
    finally:
        os.close(fd)


def _stored_name(layer: str, model: nn.Module) -> str:
    index = parse_layer(layer, model)
    return "final" if index is None else f"stage{index}"


def cached_features(
    backbone: Backbone,
    dataset: ImageDataset,
    cache: FeatureCache | None,
    *,
    layers: Sequence[str] = ("final",),
    fast: bool = True,
    notice: Callable[[str], None] | None = None,
    **kwargs,
) -> tuple[dict[str, np.ndarray], bool]:
    """Features from the cache when there, else extracted and stored: (features, was_cached).

    A cache that cannot be written (full disk, no permission) is reported through
    ``notice`` (default: a RuntimeWarning), and the features are returned all the same.
    """
    if cache is None:
        return extract_features(backbone, dataset, layers=layers, fast=fast, **kwargs), False
    device = kwargs.get("device", "auto")
    device = select_device(device) if isinstance(device, str) else device
    model = model_key(backbone, fast, device, dataset.options)
    key = f"{model}/{rows_key(dataset)}"
    # Stored under one name per stage ("stage-1" of a 5-stage model is "stage4"), so
    # the two spellings share an entry.
    names = {layer: _stored_name(layer, backbone.model) for layer in layers}
    stored = list(dict.fromkeys(names.values()))
    found = cache.load(key, stored, len(dataset))
    if found is not None:
        cache.touch(key)
    elif len(dataset):
        found = cache.load_rows(model, dataset.content_hashes(), stored)
    if found is not None:
        return {layer: found[names[layer]] for layer in layers}, True
    features = extract_features(backbone, dataset, layers=layers, fast=fast, **kwargs)
    try:
        cache.save(
            key, {names[layer]: features[layer] for layer in layers}, dataset.content_hashes()
        )
    except OSError as error:  # a full disk must not cost the features just computed
        text = (
            f"could not store features in the cache at {cache.root} ({error}); "
            "going on without caching them"
        )
        if notice is None:
            warnings.warn(text, RuntimeWarning, stacklevel=2)
        else:
            notice(text)
    return features, False
