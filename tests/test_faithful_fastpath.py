"""The bf16 fast path answers as the fp32 model does: rows whose top classes are close
enough for reduced precision to swap them are recomputed in fp32 (issue 21 case 8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures_images import colour_data

from headstart.estimator import prediction as prediction_module
from headstart.estimator.image_classifier import ImageClassifier


@pytest.mark.parametrize("top", [1, 3])
def test_low_margin_rows_keep_the_fp32_top_classes(tiny_model_folder, monkeypatch, top):
    """The fast path's predicted class is fp32's on every row (``FAITHFUL_TOP`` = 1, the
    default); with ``FAITHFUL_TOP`` = 3 the whole order of these 3 classes is."""
    from headstart.features import fastpath

    monkeypatch.setattr(fastpath, "FAITHFUL_TOP", top)
    clf = ImageClassifier.load(tiny_model_folder)
    torch.manual_seed(0)
    with torch.no_grad():  # logits a hair apart: what bf16 cannot tell apart
        head = clf.model_.head
        head.weight.copy_(torch.randn_like(head.weight) * 1e-3 + 0.5)
        head.bias.zero_()
    images = colour_data(per_class=15, seed=7)
    monkeypatch.setattr(prediction_module, "fast_path_available", lambda device: True)
    clf.config_ = clf.config_.replace(fast=True)
    fast = clf.predict_proba(images, device="cpu")
    clf.config_ = clf.config_.replace(fast=False)
    exact = clf.predict_proba(images, device="cpu")
    order = np.argsort(-exact, axis=1, kind="stable")
    margins = np.sort(exact, axis=1)[:, -1] - np.sort(exact, axis=1)[:, -2]
    assert margins.max() < 1e-2  # the case is the hard one: every row is close
    assert (fast.argmax(1) == exact.argmax(1)).all()
    if top == 3:
        assert (np.argsort(-fast, axis=1, kind="stable") == order).all()
