"""Micro-batching: concurrent requests share one forward pass; the queue is bounded;
a failing model fails its requests, not the worker."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import numpy as np
import pytest
from PIL import Image
from serve_helpers import GatedModel

from headstart.serve.batching import MicroBatcher, QueueFull

IMAGE = Image.new("RGB", (4, 4))


def batcher_for(model, **settings) -> MicroBatcher:
    options = {"max_batch_size": 8, "max_wait_ms": 0, "max_queued_images": 100, **settings}
    batcher = MicroBatcher(lambda: model, **options)
    batcher.start()
    return batcher


def _wait_pending(batcher: MicroBatcher, count: int) -> None:
    event = threading.Event()
    for _ in range(2000):
        if batcher.pending == count:
            return
        event.wait(0.005)
    raise AssertionError(f"pending stayed {batcher.pending}, expected {count}")


def test_requests_waiting_together_share_one_forward_pass():
    model = GatedModel()
    batcher = batcher_for(model)
    try:
        first = batcher.submit([IMAGE])
        assert model.entered.wait(10)  # the worker is busy with the first request
        waiting = [batcher.submit([IMAGE] * n) for n in (1, 2, 3)]
        _wait_pending(batcher, 7)
        model.release.set()
        classes, rows = first.result(10)
        assert classes == ["a", "b"] and rows.shape == (1, 2)
        assert [f.result(10)[1].shape[0] for f in waiting] == [1, 2, 3]
        assert model.batch_sizes == [1, 6]  # three requests, one pass
        assert batcher.pending == 0
    finally:
        model.release.set()
        batcher.stop()


def test_batches_never_exceed_max_batch_size():
    model = GatedModel()
    batcher = batcher_for(model, max_batch_size=4)
    try:
        blocker = batcher.submit([IMAGE])
        assert model.entered.wait(10)
        big = batcher.submit([IMAGE] * 10)  # one request larger than a batch: split
        small = [batcher.submit([IMAGE] * 3) for _ in range(2)]
        _wait_pending(batcher, 17)
        model.release.set()
        blocker.result(10)
        assert big.result(10)[1].shape == (10, 2)
        assert all(f.result(10)[1].shape == (3, 2) for f in small)
        assert max(model.batch_sizes) <= 4 and sum(model.batch_sizes) == 17
    finally:
        model.release.set()
        batcher.stop()


def test_queue_is_bounded_in_images():
    model = GatedModel()
    batcher = batcher_for(model, max_queued_images=3)
    try:
        running = batcher.submit([IMAGE, IMAGE])
        with pytest.raises(QueueFull, match="at most 3"):
            batcher.submit([IMAGE, IMAGE])
        queued = batcher.submit([IMAGE])  # exactly at the bound is accepted
        model.release.set()
        running.result(10), queued.result(10)
        assert batcher.pending == 0
        batcher.submit([IMAGE, IMAGE, IMAGE]).result(10)  # room again
    finally:
        model.release.set()
        batcher.stop()


class Broken:
    classes = ["a"]

    def __init__(self) -> None:
        self.calls = 0

    def predict_proba(self, images):  # noqa: ANN001, ANN201
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("model fell over")
        return np.ones((len(images), 1), np.float32)


def test_a_failing_model_fails_its_requests_and_the_worker_lives_on():
    batcher = batcher_for(Broken())
    try:
        with pytest.raises(RuntimeError, match="fell over"):
            batcher.submit([IMAGE]).result(10)
        assert batcher.submit([IMAGE]).result(10)[1].shape == (1, 1)
        assert batcher.running and batcher.pending == 0
    finally:
        batcher.stop()


def test_a_request_that_gave_up_is_dropped_before_its_batch_runs():
    model = GatedModel()
    batcher = batcher_for(model)
    try:
        blocker = batcher.submit([IMAGE])
        assert model.entered.wait(10)
        with pytest.raises(TimeoutError):
            asyncio.run(batcher.predict([IMAGE, IMAGE], timeout=0.05))
        model.release.set()
        blocker.result(10)
        batcher.submit([IMAGE]).result(10)
        assert model.batch_sizes == [1, 1]  # the two abandoned images never ran
        assert batcher.pending == 0
    finally:
        model.release.set()
        batcher.stop()


def test_the_model_is_looked_up_per_batch_so_a_swap_takes_effect():
    class Constant:
        def __init__(self, classes):
            self.classes = classes

        def predict_proba(self, images):  # noqa: ANN001, ANN201
            return np.full((len(images), len(self.classes)), 1 / len(self.classes), np.float32)

    served = {"model": Constant(["a", "b"])}
    batcher = MicroBatcher(
        lambda: served["model"], max_batch_size=4, max_wait_ms=0, max_queued_images=10
    )
    batcher.start()
    try:
        assert batcher.submit([IMAGE]).result(10)[0] == ["a", "b"]
        served["model"] = Constant(["x", "y", "z"])
        classes, rows = batcher.submit([IMAGE]).result(10)
        assert classes == ["x", "y", "z"] and rows.shape == (1, 3)
    finally:
        batcher.stop()
    assert not batcher.running
    assert isinstance(batcher.submit([IMAGE]), concurrent.futures.Future)  # queued, unserved


def test_a_lone_request_never_waits_for_company():
    model = GatedModel()
    model.release.set()
    batcher = batcher_for(model, max_wait_ms=600_000)  # ten minutes, were it waited for
    try:
        classes, rows = batcher.submit([IMAGE]).result(timeout=10)
        assert rows.shape == (1, 2) and model.batch_sizes == [1]
    finally:
        batcher.stop()


def test_a_batch_waits_for_a_request_announced_as_arriving():
    model = GatedModel()
    model.release.set()
    batcher = batcher_for(model, max_wait_ms=600_000)
    try:
        with batcher.arriving() as one, batcher.arriving() as two:  # two being decoded
            first = batcher.submit([IMAGE], one)
            second = batcher.submit([IMAGE, IMAGE], two)
        first.result(timeout=10), second.result(timeout=10)
        assert model.batch_sizes == [3]  # one pass for both
    finally:
        batcher.stop()


def test_an_announced_request_that_gives_up_wakes_the_gathering_batch():
    model = GatedModel()
    model.release.set()
    batcher = batcher_for(model, max_wait_ms=600_000)
    try:
        with batcher.arriving() as one:
            first = batcher.submit([IMAGE], one)
            with batcher.arriving():  # decoded to nothing: it never submits
                pass
        first.result(timeout=10)  # not ten minutes
        assert model.batch_sizes == [1]
    finally:
        batcher.stop()


class ChokesOnSmall:
    """Fails any pass that holds a 7x7 image: one client's bad image."""

    classes = ["a"]

    def predict_proba(self, images):  # noqa: ANN001, ANN201
        if any(image.size == (7, 7) for image in images):
            raise RuntimeError("model choked on a 7x7 image")
        return np.ones((len(images), 1), np.float32)


def test_one_requests_failing_image_does_not_fail_the_others_in_its_batch():
    model = GatedModel()
    batcher = batcher_for(model)
    try:
        blocker = batcher.submit([IMAGE])
        assert model.entered.wait(10)
        batcher._model_of = lambda: ChokesOnSmall()  # the next batch meets the choking model
        good = batcher.submit([IMAGE, IMAGE])
        bad = batcher.submit([Image.new("RGB", (7, 7))])
        _wait_pending(batcher, 4)
        model.release.set()
        blocker.result(10)
        assert good.result(10)[1].shape == (2, 1)  # retried alone after the shared pass failed
        with pytest.raises(RuntimeError, match="7x7"):
            bad.result(10)
    finally:
        model.release.set()
        batcher.stop()
