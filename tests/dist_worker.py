"""One training run as tests/test_distributed.py needs it, alone or under torchrun.

``python tests/dist_worker.py DATA OUT [--resume CHECKPOINTS]`` (or under
``torchrun --nproc-per-node N``): feature extraction into a feature cache and a
fine-tune with checkpoints, each rank given folders of its *own* (``cache-rank<r>``,
``checkpoints-rank<r>``) so the test can see which ranks wrote; then each rank saves
what it ended with (features, weights, history) to ``OUT/rank<r>.pt`` for comparison.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from headstart import ImageClassifier, load_images
from headstart.backbones.registry import create_backbone
from headstart.features.cache import FeatureCache, cached_features
from headstart.parallel import init_distributed, world
from headstart.train.callbacks import Callback
from headstart.train.config import TrainConfig

# Same data order at any world size, and nothing random but the data order: no
# augmentation, BatchNorm in eval mode (batch statistics would be per rank), no dropout.
CONFIG = TrainConfig(
    image_size=32, epochs=4, batch_size=5, augment=False, bn_policy="eval", lp_ft=False
)


def run(data: Path, out: Path, resume: Path | None = None, callback: Callback | None = None):
    """Fit and return (features, classifier); files go under ``out``."""
    rank = world().rank
    train, _ = load_images(data, test_size=0.25, seed=0)
    torch.manual_seed(0)
    backbone = create_backbone("test_efficientnet", "none", image_size=32)
    backbone.model.reset_classifier(0)
    features, _ = cached_features(backbone, train, FeatureCache(out / f"cache-rank{rank}"))
    checkpoints = resume if resume is not None and rank == 0 else out / f"checkpoints-rank{rank}"
    clf = ImageClassifier(
        "test_efficientnet",
        "fine-tune",
        CONFIG,
        weights="none",
        checkpoint_dir=checkpoints,
        callback=callback,
    )
    clf.fit(train, resume=resume is not None)
    return features["final"], clf


def main() -> None:
    torch.set_num_threads(1)
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    resume = Path(sys.argv[4]) if sys.argv[3:4] == ["--resume"] else None
    w = init_distributed()
    features, clf = run(data, out, resume)
    result = {
        "world": w.size,
        "features": torch.from_numpy(features),
        "state": clf.model_.state_dict(),
        "history": clf.history_,
        "class_weights": clf.config_.class_weights,  # what auto came to on this rank
    }
    torch.save(result, out / f"rank{w.rank}.pt")


if __name__ == "__main__":
    main()
