"""Shared data fixtures: tiny image folders built in tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from fixtures_images import build_image_folder

from headstart.features.fastpath import fast_path_available


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread per test: on two shared cores a second thread only contends
    (a training step of the tiny test model ran ~100x slower with two under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def bf16_cpu() -> None:
    """For tests of the CPU fast path: skip, saying why, where this CPU has no bf16.
    There the fast path is plain fp32, and "fast agrees with fp32" would compare fp32
    with itself and pass whatever the fast path did."""
    if not fast_path_available(torch.device("cpu")):
        pytest.skip("this CPU has no bf16 (AVX512-BF16 or AMX): no fast path to check here")


@pytest.fixture
def make_image_folder(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_image_folder({"cat": 4, "dog": 4}, name="pets")`` -> folder path."""

    def make(counts: dict[str, int], *, name: str = "images", size: tuple[int, int] = (16, 16)):
        return build_image_folder(tmp_path / name, counts, size=size)

    return make


@pytest.fixture
def image_folder(make_image_folder: Callable[..., Path]) -> Path:
    """Three classes ("cat", "dog", "fox") of six 16x16 PNGs each."""
    return make_image_folder({"cat": 6, "dog": 6, "fox": 6})


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved model that tells red, green and blue images apart (a tiny random-weight
    backbone at 32 px; feature extraction on colour_folder scores 100 % in ~0.1 s)."""
    from fixtures_images import colour_folder

    from headstart import ImageClassifier, load_images

    root = tmp_path_factory.mktemp("tiny-model")
    train, _ = load_images(colour_folder(root / "data", per_class=8), test_size=0.25, seed=0)
    clf = ImageClassifier("test_efficientnet", "feature-extraction", weights="none")
    clf.config = clf.resolved_config().replace(image_size=32)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        clf.fit(train)
    finally:
        torch.set_num_threads(before)
    return clf.save(root / "model")
