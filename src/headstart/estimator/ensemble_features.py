"""An ensemble's features, every member's, in one pass over the images through the
ensemble's own network: its training features (so prediction later sees exactly these
inputs), and a labelled dataset's when it is scored (the test pass), which then costs
what the members' timed extraction says: the network's forward pass on the fast path
rechecks every row whose top classes are close in fp32, and an ensemble's averaged
probabilities are close on most rows (269 of 400 sample images with two members, 2.7x
the time of this pass). The probes are fitted on these fast-path features, so scoring
them the same way is what cross-validation measured; on the sample's 1,000 test images
(Lite0 224 and Lite1 240, region-pooled) both ways, and fp32 features, score 87.6 %.
Images given one by one (``predict`` on files, the server) keep the forward pass.

Under a job's budget (`headstart.train.deadline`) the pass can stop a member: each
member is timed on every batch, and after each batch the members whose remaining images
would not finish in time, at the pace measured so far, are dropped, the last given
first (a budget gives them best first); the first always runs to the end. What was
dropped is said and recorded as a cut, and the ensemble is built from the members kept
(one: that member alone). This is what keeps an ensemble's fit inside the budget when
the machine turns slower than its timed passes said (docs/BENCHMARKS.md section 15).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from headstart.data.dataset import ImageDataset, TorchImageDataset
from headstart.features.fastpath import (
    inference_model,
    inference_transforms,
    micro_batches,
    numerics,
)
from headstart.strategies.estimates import ENSEMBLE_PROBE_SHARE
from headstart.train.callbacks import Callback
from headstart.train.config import TrainConfig
from headstart.train.deadline import active
from headstart.train.network import EnsembleNetwork

__all__ = ["member_features", "members_within"]


def members_within(
    seconds_per_image: Sequence[float], shared_per_image: float, images_left: int, left: float
) -> int:
    """How many of the members (best first, each with its measured ``seconds_per_image``;
    ``shared_per_image``: what every image costs whatever the members, decoding and
    resizing) finish the ``images_left`` in ``left`` seconds, with the probes' share
    kept back; at least 1."""
    room = left / (1 + ENSEMBLE_PROBE_SHARE)
    cost = shared_per_image
    for count, each in enumerate(seconds_per_image):
        cost += each
        if cost * images_left > room:
            return max(count, 1)
    return len(seconds_per_image)


def member_features(
    network: EnsembleNetwork,
    names: Sequence[str],
    train: ImageDataset,
    prep: object,
    config: TrainConfig,
    device: torch.device,
    callback: Callback,
    *,
    stage: str = "features train (every member)",
    budgeted: bool = True,
) -> tuple[list[np.ndarray], list[int]]:
    """(each kept member's features of every image of ``train``, the kept members'
    indices); every member is kept unless ``budgeted`` and a budget's deadline drops
    some (see the module). ``stage`` names the pass in the progress."""
    transform, collate = inference_transforms(prep, config.fast)
    loader = DataLoader(
        TorchImageDataset(train, transform),
        batch_size=max(config.batch_size, 64),
        shuffle=False,
        collate_fn=collate,
    )
    network = network.to(device).eval()
    run = inference_model(network, device, config.fast, prep.input_size)
    kept = list(range(len(network.members)))
    chunks: list[list[np.ndarray]] = [[] for _ in network.members]
    spent = [0.0] * len(kept)  # seconds each member has taken
    limit, done, started = active() if budgeted else None, 0, time.perf_counter()
    try:
        with torch.inference_mode(), numerics(run, device, config.fast):
            for batch, _ in loader:
                inputs = run.member_inputs(batch.to(device))
                for k in kept:
                    began = time.perf_counter()
                    member = run.members[k]
                    for part in micro_batches(inputs[k], device, config.fast):
                        chunks[k].append(member.features(part).float().cpu().numpy())
                    spent[k] += time.perf_counter() - began
                done += len(batch)
                callback.on_progress(stage, done, len(train))
                if limit is None or done == len(train):
                    continue
                shared = (time.perf_counter() - started - sum(spent)) / done
                count = members_within(
                    [spent[k] / done for k in kept], shared, len(train) - done, limit.remaining()
                )
                if count < len(kept):
                    dropped, kept = kept[count:], kept[:count]
                    _say_dropped(dropped, kept, names, done, len(train), limit, callback)
    finally:
        network.to(memory_format=torch.contiguous_format).cpu()
    return [np.concatenate(chunks[k]) for k in kept], kept


def _say_dropped(
    dropped: list[int],
    kept: list[int],
    names: Sequence[str],
    done: int,
    total: int,
    limit: object,
    callback: Callback,
) -> None:
    left = max(limit.remaining(), 0.0)  # type: ignore[attr-defined]
    gone = ", ".join(names[k] for k in dropped)
    alone = f"{names[kept[0]]} alone" if len(kept) == 1 else ", ".join(names[k] for k in kept)
    cut = (
        f"ensemble: stopped {gone} at the budget after {done} of {total} training images "
        f"(at the pace measured, every member would not finish in the {left:.0f}s left); "
        f"kept {len(kept)} of {len(names)} members: {alone}"
    )
    limit.cuts.append(cut)  # type: ignore[attr-defined]
    callback.on_note(cut)
