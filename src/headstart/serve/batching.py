"""Micro-batching: images of concurrent requests share one forward pass.

Requests put their decoded images on a queue; one worker thread takes the first job,
waits up to ``max_wait_ms`` for more, and runs the model once over up to
``max_batch_size`` images. A forward pass over 32 images costs far less than 32
passes over one, so throughput under load rises. The worker waits only while another
request is on its way (announced with ``arriving()`` while it is read and decoded),
so a lone client pays no wait at all; under load, requests that came while the model
ran are already queued and join the next batch at once.

The queue is bounded in images: past ``max_queued_images`` a request is refused at
once (``QueueFull``, a 503 with ``Retry-After``) instead of waiting behind work it
cannot outlive.

Both bounds count forward passes: a model that predicts with test-time augmentation
runs ``views`` passes per image (its ``views`` attribute; 1 when it has none), so a
batch holds ``max_batch_size // views`` images and the queue ``max_queued_images //
views`` (at least one each).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from headstart.errors import HeadstartError

__all__ = ["Arrival", "MicroBatcher", "QueueFull"]


class QueueFull(HeadstartError):
    """The server holds as many images as it may; the client should retry later."""


@dataclass
class _Job:
    images: Sequence[Image.Image]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class Arrival:
    """A request announced to the batcher, until it submits or gives up."""

    def __init__(self) -> None:
        self.open = True


_STOP = object()
_WAKE = object()  # an announced request arrived or gave up: look again


class MicroBatcher:
    """One worker thread running a model over batches gathered from many requests.

    The model is looked up at every batch (``model_of()``), so a newly trained model can
    be swapped in between two batches without stopping the worker; each request gets
    the classes of the model that scored it with its probabilities.
    """

    def __init__(
        self,
        model_of: Callable[[], Any],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queued_images: int,
    ) -> None:
        self._model_of = model_of  # -> anything with .classes and .predict_proba(images)
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queued_images = max_queued_images
        self._queue: queue.Queue = queue.Queue()
        self._pending = 0  # images queued or in the running batch
        self._arriving = 0  # requests being read and decoded: worth waiting for
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.batches = 0  # forward passes run (for tests and the log)
        self.images = 0

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if not self.running:
            self._thread = threading.Thread(
                target=self._work, name="headstart-batcher", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    def check_room(self, count: int) -> None:
        """Raise QueueFull unless ``count`` more images fit now (a request is refused
        before its images are decoded; ``submit`` checks again)."""
        with self._lock:
            self._refuse_beyond(count)

    def _views(self) -> int:
        """Forward passes per image of the model served now (test-time augmentation)."""
        return max(1, int(getattr(self._model_of(), "views", 1)))

    def _per_batch(self) -> int:
        return max(1, self.max_batch_size // self._views())

    def _refuse_beyond(self, count: int) -> None:
        views = self._views()
        room = max(1, self.max_queued_images // views)
        if self._pending + count > room:
            each = f" ({views} forward passes each: test-time augmentation)" if views > 1 else ""
            raise QueueFull(
                f"The server is busy: {self._pending} images{each} are waiting or running, "
                f"at most {room} may."
            )

    def submit(
        self, images: Sequence[Image.Image], arrival: Arrival | None = None
    ) -> concurrent.futures.Future:
        """Queue ``images``; the future holds (classes, probabilities: one row per image).
        Raises QueueFull when the server holds ``max_queued_images`` already. With the
        ``arrival`` that announced it, the request stops being awaited in the same step
        as its images are queued, so a gathering batch never waits on it in vain."""
        job = _Job(images)
        with self._lock:
            self._refuse_beyond(len(images))
            self._pending += len(images)
            if arrival is not None and arrival.open:
                arrival.open = False
                self._arriving -= 1
            self._queue.put(job)
        return job.future

    @contextlib.contextmanager
    def arriving(self) -> Iterator[Arrival]:
        """Announce a request that will ``submit`` soon (wrap its decoding and its
        ``submit(images, arrival)``): a batch being gathered waits for it, up to
        ``max_wait_ms``. A request that ends without submitting wakes the gatherer."""
        arrival = Arrival()
        with self._lock:
            self._arriving += 1
        try:
            yield arrival
        finally:
            with self._lock:
                gave_up = arrival.open
                if gave_up:
                    arrival.open = False
                    self._arriving -= 1
            if gave_up:
                self._queue.put(_WAKE)

    async def wait(self, future: concurrent.futures.Future, timeout: float) -> Any:
        """The result of ``submit``'s future, waiting at most ``timeout`` seconds
        (TimeoutError); a request that gave up is dropped from its batch if that has
        not started yet."""
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    async def predict(
        self, images: Sequence[Image.Image], timeout: float
    ) -> tuple[list[str], np.ndarray]:
        """``submit`` for a coroutine, waiting at most ``timeout`` seconds (TimeoutError);
        a request that gave up is dropped from its batch if that has not started yet."""
        return await self.wait(self.submit(images), timeout)

    # ------------------------------------------------------------------ worker

    def _work(self) -> None:
        carried: _Job | None = None
        while True:
            first = carried if carried is not None else self._queue.get()
            carried = None
            if first is _STOP:
                return
            if first is _WAKE:
                continue
            jobs = [first]
            count = len(first.images)
            deadline = time.monotonic() + self.max_wait_s
            per_batch = self._per_batch()
            while count < per_batch:
                wait = deadline - time.monotonic()
                if self._arriving == 0 or wait <= 0:
                    wait = 0  # nobody is on the way: take what is queued, nothing more
                try:
                    job = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is _WAKE:
                    continue
                if job is _STOP or count + len(job.images) > per_batch:
                    carried = job  # starts the next batch (or stops after this one)
                    break
                jobs.append(job)
                count += len(job.images)
            self._run(jobs)

    def _predict(self, model: Any, images: list[Any]) -> tuple[np.ndarray, int]:
        """(probabilities, forward passes): at most ``max_batch_size`` forward passes
        (images x the model's ``views``) a pass."""
        step = max(1, self.max_batch_size // max(1, int(getattr(model, "views", 1))))
        rows = [
            model.predict_proba(images[start : start + step])
            for start in range(0, len(images), step)
        ]
        return (np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)), len(rows)

    def _run_alone(self, job: _Job) -> None:
        """One request's images in a pass of their own (after a shared pass failed)."""
        try:
            model = self._model_of()
            job.future.set_result((list(model.classes), self._predict(model, job.images)[0]))
        except Exception as error:
            job.future.set_exception(error)

    def _run(self, jobs: list[_Job]) -> None:
        live = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        try:
            if not live:
                return
            images = [image for job in live for image in job.images]
            model = self._model_of()
            proba, passes = self._predict(model, images)
            self.batches += passes
            self.images += len(images)
            start = 0
            for job in live:
                job.future.set_result((list(model.classes), proba[start : start + len(job.images)]))
                start += len(job.images)
        except Exception as error:  # the worker lives on
            if len(live) > 1:  # one request's image must not fail the others: each alone
                for job in live:
                    if not job.future.done():
                        self._run_alone(job)
            else:
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(error)
        finally:
            with self._lock:
                self._pending -= sum(len(job.images) for job in jobs)
