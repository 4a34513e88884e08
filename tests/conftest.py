"""Shared data fixtures: tiny image folders built in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures_images import build_image_folder


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
