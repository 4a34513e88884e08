"""Training from the page: one job at a time, in a background thread, on the server's
own folder (``--data``) or an uploaded zip; progress as server-sent events; the
model trained by the library's training job (`headstart.job`, as `headstart train` runs
it), which replaces the served one in one assignment, between two batches; then a side by
side report against training from scratch (``evaluation.compare`` + ``build_report``).

The browser never names a server path: it picks "the server's folder" or sends a zip.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from headstart.backbones import DEFAULT_BACKBONE
from headstart.errors import HeadstartError
from headstart.evaluation.comparison import CompareCallback
from headstart.serve.limits import ServeLimits
from headstart.serve.predictor import EstimatorPredictor
from headstart.serve.uploads import remove_tree, unpack_zip

__all__ = ["TrainingJob", "TrainingJobs", "TrainingSettings"]

LOG = logging.getLogger("headstart.serve")
_ZIP_MEDIA = ("application/zip", "application/x-zip-compressed", "application/octet-stream")
_STEP_EVERY_S = 0.25  # at most this often a step event (an epoch of many steps floods)
BASELINE = "scratch"  # what the report compares the chosen strategy against


@dataclass(frozen=True)
class TrainingSettings:
    """What every job trains with; set by whoever starts the server, not by the page."""

    out: Path  # each job writes out/<job id>/{report,model,cache}
    data: Path | None = None  # the server-side folder the page may train on
    backbone: str = DEFAULT_BACKBONE
    weights: str = "auto"
    image_size: int | None = None
    max_epochs: int = 50
    test_size: float = 0.25
    tta: str | None = None  # test-time augmentation the trained model is served with


class TrainingJob:
    """One training run and the events it has sent so far."""

    def __init__(
        self,
        strategy: str,
        source: str,
        folder: Path,
        *,
        compare: bool = True,
        cache: Path | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.strategy = strategy
        self.source = source  # "server folder" or "uploaded zip": never a path
        self.folder = folder
        self.compare = compare  # False: the model only, no report against scratch
        self.cache = cache  # the feature cache shared by jobs; None: the job's own
        self.status = "running"
        self.report: Path | None = None
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def emit(self, kind: str, **fields: Any) -> None:
        with self._lock:
            self.events.append({"type": kind, "time": round(time.time(), 3), **fields})

    def events_from(self, index: int) -> list[dict[str, Any]]:
        with self._lock:
            return self.events[index:]

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "strategy": self.strategy,
            "source": self.source,
            "status": self.status,
            "report": self.report is not None,
            "events": len(self.events),
        }


class TrainingJobs:
    """The jobs of one server; at most one runs at a time."""

    def __init__(self, settings: TrainingSettings, limits: ServeLimits) -> None:
        self.settings = settings
        self.limits = limits
        self.jobs: dict[str, TrainingJob] = {}
        self._running: TrainingJob | None = None
        self._lock = threading.Lock()
        self._uploads = Path(tempfile.mkdtemp(prefix="headstart-uploads-"))

    def strategies(self) -> list[str]:
        from headstart.strategies.registry import get_strategy, strategy_names

        return [s for s in strategy_names() if not get_strategy(s).uses_unlabelled]

    def busy(self) -> bool:
        with self._lock:
            return self._running is not None and self._running.status == "running"

    def start(
        self,
        strategy: str,
        epochs: int | None,
        data: Path,
        source: str,
        on_model: Callable[[EstimatorPredictor], None],
        *,
        compare: bool = True,
        cache: Path | None = None,
    ) -> TrainingJob:
        """Start a job; ``compare=False`` skips the report against scratch (a retrain
        from the labelling page wants its model in seconds), ``cache``: a feature cache
        shared with other jobs, so an image's features are computed once."""
        with self._lock:
            if self._running is not None and self._running.status == "running":
                raise HTTPException(409, "A model is being trained already; wait for it.")
            job = TrainingJob(strategy, source, Path(), compare=compare, cache=cache)
            job.folder = self.settings.out / job.id
            self.jobs[job.id] = self._running = job
        thread = threading.Thread(
            target=self._run,
            args=(job, epochs, data, on_model),
            name=f"headstart-train-{job.id}",
            daemon=True,
        )
        thread.start()
        return job

    def close(self) -> None:
        remove_tree(self._uploads)

    # ----------------------------------------------------------------- the job

    def _run(
        self,
        job: TrainingJob,
        epochs: int | None,
        data: Path,
        on_model: Callable[[EstimatorPredictor], None],
    ) -> None:
        try:
            self._train(job, epochs, data, on_model)
            job.status = "done"
        except HeadstartError as error:
            job.emit("error", message=_without_root(str(error), data))
            job.status = "failed"
        except Exception:  # a bug or out of memory: logged here, said without its details
            LOG.exception("training job %s failed", job.id)
            job.emit("error", message="Training failed unexpectedly; the server logged why.")
            job.status = "failed"
        finally:
            if data.parent == self._uploads:  # an unpacked upload: used, then gone
                remove_tree(data)
            job.emit("end", status=job.status)

    def _train(
        self,
        job: TrainingJob,
        epochs: int | None,
        data: Path,
        on_model: Callable[[EstimatorPredictor], None],
    ) -> None:
        """The library's training job, as `headstart train --out <job>/model` would run
        it with the server's settings; then the report against scratch on the same split."""
        from headstart.data.layout import is_presplit
        from headstart.evaluation.comparison import CompareSettings, compare, shared_overrides
        from headstart.evaluation.report import build_report
        from headstart.job.training import TrainingJob as Job
        from headstart.strategies.registry import get_strategy

        settings = self.settings
        job.emit("stage", name="data", detail=f"reading the {job.source}")
        callback = _JobCallback(job)
        strategy = get_strategy(job.strategy)
        unused = strategy.unused_settings(strategy.default_config())  # epochs of a probe
        changes = {"image_size": settings.image_size, "epochs": epochs}
        changes = {k: v for k, v in changes.items() if v is not None and k not in unused}
        cache = job.cache or job.folder / "cache"
        result = Job(
            data,
            strategy=job.strategy,
            backbone=settings.backbone,
            config=changes,
            test_size=None if is_presplit(data) else settings.test_size,
            weights=settings.weights,
            cache_dir=cache,
            out=job.folder / "model",
        ).run(callback)
        on_model(EstimatorPredictor(result.classifier, source=str(result.folder),
                                    tta=settings.tta))  # fmt: skip
        job.emit("model", classes=list(result.classifier.classes_),
                 test_accuracy=result.metrics["accuracy"])  # fmt: skip
        if not job.compare:
            return
        strategies = tuple(dict.fromkeys((BASELINE, job.strategy)))
        overrides, _ = shared_overrides(strategies, {"epochs": epochs}) if epochs else ({}, [])
        compared = CompareSettings(
            strategies=strategies,
            labels_per_class=(None,),
            backbone=settings.backbone,
            weights=settings.weights,
            image_size=settings.image_size,
            overrides=overrides,
        )
        report = job.folder / "report"
        compare(result.train, result.test, report, compared, cache_dir=cache,
                callback=callback, data_description=f"the {job.source}")  # fmt: skip
        job.report = build_report(report, title=f"headstart: {job.strategy} against scratch")[
            "html"
        ]
        job.emit("report", url=f"/v1/train/{job.id}/report")

    # ----------------------------------------------------------------- routes

    def add_routes(self, app: FastAPI, state: Any, require_token: Any) -> None:
        jobs = self
        auth = [Depends(require_token)]

        def swap(predictor: EstimatorPredictor) -> None:
            state.predictor = predictor  # one assignment: the next batch uses it

        @app.get("/v1/train", tags=["training"], dependencies=auth)
        async def training() -> dict[str, Any]:
            """What the page may train on and with, and the latest job."""
            latest = jobs._running.summary() if jobs._running is not None else None
            return {
                "server_data": jobs.settings.data is not None,
                "data_name": jobs.settings.data.name if jobs.settings.data else None,
                "strategies": jobs.strategies(),
                "max_epochs": jobs.settings.max_epochs,
                "max_zip_bytes": jobs.limits.max_zip_bytes,
                "job": latest,
            }

        @app.post("/v1/train", tags=["training"], dependencies=auth, status_code=202)
        async def start(
            request: Request,
            strategy: str = Query("feature-extraction"),
            epochs: int | None = Query(None, ge=1),
            source: str = Query("server", pattern="^(server|upload)$"),
        ) -> dict[str, Any]:
            """Start training on the server's folder, or on a zip of class folders sent as
            the body (``source=upload``)."""
            if strategy not in jobs.strategies():
                raise HTTPException(
                    400, f"Unknown strategy {strategy!r}; one of {', '.join(jobs.strategies())}."
                )
            if epochs is not None and epochs > jobs.settings.max_epochs:
                raise HTTPException(400, f"epochs must be at most {jobs.settings.max_epochs}.")
            if source == "server":
                if jobs.settings.data is None:
                    raise HTTPException(400, "This server has no data folder; upload a zip.")
                data, label = jobs.settings.data, "server folder"
            else:
                if jobs.busy():  # before a 200 MB body is read and unpacked for nothing
                    raise HTTPException(409, "A model is being trained already; wait for it.")
                data, label = await jobs._receive_zip(request), "uploaded zip"
            try:
                job = jobs.start(strategy, epochs, data, label, swap)
            except BaseException:
                if source == "upload":
                    remove_tree(data)
                raise
            return job.summary()

        @app.get("/v1/train/{job_id}", tags=["training"], dependencies=auth)
        async def job_summary(job_id: str) -> dict[str, Any]:
            return jobs._job(job_id).summary()

        @app.get("/v1/train/{job_id}/events", tags=["training"], dependencies=auth)
        async def events(job_id: str, request: Request) -> StreamingResponse:
            """Progress as server-sent events, from the first (or after Last-Event-ID)."""
            job = jobs._job(job_id)
            start_at = _int_or(request.headers.get("last-event-id"), -1) + 1
            return StreamingResponse(
                _event_stream(job, start_at, request),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )

        @app.get("/v1/train/{job_id}/report", tags=["training"], dependencies=auth)
        async def report(job_id: str) -> HTMLResponse:
            """The comparison report (HTML, plots inlined) once written."""
            job = jobs._job(job_id)
            if job.report is None:
                raise HTTPException(404, "No report yet.")
            return HTMLResponse(job.report.read_text(encoding="utf-8"))

    def _job(self, job_id: str) -> TrainingJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, "No such training job.")
        return job

    async def _receive_zip(self, request: Request) -> Path:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in _ZIP_MEDIA:
            raise HTTPException(415, "Send the zip as application/zip.")
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024, dir=self._uploads) as spool:
            async for chunk in request.stream():  # the edge middleware caps the size
                spool.write(chunk)
            spool.seek(0)
            target = self._uploads / uuid.uuid4().hex
            try:
                return await asyncio.to_thread(unpack_zip, spool, target, self.limits)
            except HeadstartError as error:
                remove_tree(target)
                raise HTTPException(400, _without_root(str(error), target)) from None
            except Exception:  # an OSError while unpacking: said without server paths
                remove_tree(target)
                LOG.exception("unpacking an upload failed")
                raise HTTPException(400, "The zip could not be unpacked on the server.") from None


def _without_root(text: str, root: Path) -> str:
    """A message for the page, with the server's folder of the data written as words:
    no server path reaches a client."""
    for form in (str(root.resolve()), str(root)):
        text = text.replace(form + "/", "").replace(form, "the training data")
    return text


def _int_or(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


async def _event_stream(job: TrainingJob, index: int, request: Request) -> AsyncIterator[str]:
    while True:
        fresh = job.events_from(index)
        for event in fresh:
            yield f"id: {index}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n"
            index += 1
            if event["type"] == "end":
                return
        if await request.is_disconnected():
            return
        if not fresh:
            await asyncio.sleep(0.1)


class _JobCallback(CompareCallback):
    """The library's progress hooks, turned into the job's events."""

    def __init__(self, job: TrainingJob) -> None:
        self.job = job
        self._last_step = 0.0

    def on_run_start(self, run: str, index: int, total: int) -> None:
        self.job.emit("run", run=run, index=index, total=total)

    def on_run_end(self, record: dict[str, Any], reused: bool) -> None:
        keep = ("id", "status", "accuracy", "balanced_accuracy", "train_seconds", "error")
        self.job.emit("run_end", **{k: record[k] for k in keep if k in record})

    def on_data(self, train: Any, test: Any) -> None:
        self.job.emit(
            "data",
            classes=list(train.classes),
            train_images=len(train),
            test_images=len(test),
            skipped=len(train.report.skipped) + len(test.report.skipped),
        )

    def on_stage(self, name: str, detail: str) -> None:
        self.job.emit("stage", name=name, detail=detail)

    def on_progress(self, label: str, done: int, total: int) -> None:
        self.job.emit("progress", label=label, done=done, total=total)

    def on_step(self, epoch: int, step: int, steps: int, loss: float) -> None:
        now = time.monotonic()
        if step == steps or now - self._last_step >= _STEP_EVERY_S:
            self._last_step = now
            self.job.emit("step", epoch=epoch, step=step, steps=steps, loss=loss)

    def on_epoch(self, record: Any) -> None:
        self.job.emit("epoch", **record.to_dict())
