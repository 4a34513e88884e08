"""Backbones: the bundled weights are the real ImageNet ones; preprocessing is the model's."""

from __future__ import annotations

from pathlib import Path

import pytest
import sklearn.datasets
import torch
from PIL import Image

from headstart.backbones.registry import create_backbone, list_backbones
from headstart.backbones.weights import BUNDLED_WEIGHTS, bundled_weights_path
from headstart.errors import BackboneError, ConfigError

SAMPLE_IMAGES = Path(sklearn.datasets.__file__).parent / "images"
DAISY = 985  # ImageNet class index
PALACE = 698


def _top1(backbone, image_path: Path) -> int:
    image = Image.open(image_path).convert("RGB")
    batch = backbone.preprocessing.transform()(image).unsqueeze(0)
    with torch.inference_mode():
        return int(backbone.model(batch).argmax(1))


def test_bundled_lite0_classifies_sklearn_flower_as_daisy():
    backbone = create_backbone("tf_efficientnet_lite0", weights="bundled")
    assert backbone.weights.source == "bundled"
    assert backbone.weights.sha256 == BUNDLED_WEIGHTS["tf_efficientnet_lite0"].sha256
    assert _top1(backbone, SAMPLE_IMAGES / "flower.jpg") == DAISY


@pytest.mark.parametrize("name", sorted(BUNDLED_WEIGHTS))
def test_every_bundled_backbone_sees_a_palace(name):
    if bundled_weights_path(BUNDLED_WEIGHTS[name]) is None:
        pytest.skip(f"{BUNDLED_WEIGHTS[name].distribution} is not installed")
    backbone = create_backbone(name, weights="bundled")
    assert _top1(backbone, SAMPLE_IMAGES / "china.jpg") == PALACE


def test_random_weights_do_not_know_daisies():
    """The check above can fail: the same architecture without the weights misses it."""
    torch.manual_seed(0)
    backbone = create_backbone("tf_efficientnet_lite0", weights="none")
    assert backbone.weights.source == "none"
    assert _top1(backbone, SAMPLE_IMAGES / "flower.jpg") != DAISY


def test_preprocessing_comes_from_the_pretrained_config():
    backbone = create_backbone("tf_efficientnet_lite0", weights="none")
    prep = backbone.preprocessing
    assert prep.input_size == (3, 224, 224)
    assert prep.mean == (0.5, 0.5, 0.5) and prep.std == (0.5, 0.5, 0.5)
    assert prep.interpolation == "bicubic"
    smaller = create_backbone("tf_efficientnet_lite0", weights="none", image_size=112)
    assert smaller.preprocessing.input_size == (3, 112, 112)
    assert smaller.preprocessing.mean == prep.mean
    tensor = smaller.preprocessing.transform()(Image.new("RGB", (28, 28), (255, 255, 255)))
    assert tuple(tensor.shape) == (3, 112, 112)
    assert torch.allclose(tensor, torch.ones_like(tensor))  # (1 - 0.5) / 0.5


def test_unknown_backbone_is_named():
    with pytest.raises(BackboneError, match="no_such_net"):
        create_backbone("no_such_net", weights="none")


def test_bad_image_size_is_a_config_error():
    with pytest.raises(ConfigError, match="'image_size'"):
        create_backbone("tf_efficientnet_lite0", weights="none", image_size=3)


def test_list_backbones_reports_bundled_and_sizes():
    rows = {row.name: row for row in list_backbones()}
    lite0 = rows["tf_efficientnet_lite0"]
    assert lite0.available and lite0.source == "bundled"
    assert lite0.input_size == 224
    assert 4.0e6 < lite0.parameters < 5.0e6
