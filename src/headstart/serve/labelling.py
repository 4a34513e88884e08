"""The labelling page's API (``/v1/label/...``) and the page itself (``/label``).

Classes are created and renamed, pool images labelled (one, or a picked handful at
once), suggestions asked for (`headstart.suggest`: which images to label next, with the
model's guess), the model retrained in seconds (feature extraction from a feature cache
shared by every retrain, through the same `TrainingJobs` as the rest of the server,
without the report against scratch), and the labelled images exported as class
folders or a CSV. Labels live in the project folder (`labels.LabelStore`).

Same rules as every route of the server: the token, the Origin and Host checks and the
body limits of the edge middleware apply; a client names a pool image by its path
inside the pool, looked up in the server's own listing, never used as a path.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from headstart.data.decode import DecodeOptions, decode_image
from headstart.errors import ConfigError, HeadstartError
from headstart.serve.labels import LabelConflict, Labelled, LabelStore
from headstart.serve.preview import preview_uri

__all__ = ["EXPORT_FORMATS", "Labelling", "write_export"]

LOG = logging.getLogger("headstart.serve")
PAGE = Path(__file__).parent / "page"
EXPORT_FORMATS = ("folders", "csv")
_MAX_LABELS = 256  # labels in one request (a picked handful, dropped on a class)
_MAX_SUGGESTIONS = 50
_THUMB_SIDE = 128  # pixels: the pool's grid
_SUGGESTION_SIDE = 320  # pixels: the image being labelled
_RETRAIN_STRATEGY = "feature-extraction"  # seconds on cached features


class _ClassName(BaseModel):
    name: str = Field(max_length=1000)


class _Rename(BaseModel):
    old: str = Field(max_length=1000)
    new: str = Field(max_length=1000)


class _Label(BaseModel):
    path: str = Field(max_length=1000)
    label: str = Field(max_length=1000)


class _Labels(BaseModel):
    labels: list[_Label] = Field(min_length=1, max_length=_MAX_LABELS)


class Labelling:
    """The labelling of one server: a pool (``--unlabelled``), a project folder (the
    training ``--data``) and the server's training jobs, which retrain."""

    def __init__(self, store: LabelStore, training: Any) -> None:
        if training is None or training.settings.data is None:
            raise ConfigError("Labelling needs the server's training, with its data folder.")
        self.store = store
        self.training = training
        self.cache = training.settings.out / "labelling-cache"

    # ----------------------------------------------------------------- work

    def suggestions(self, n: int) -> dict[str, Any]:
        """``headstart.suggest`` over the pool, from the labels given so far."""
        try:
            from headstart import suggest
        except ImportError:
            raise HTTPException(501, "Suggestions need headstart.suggest.") from None
        settings = self.training.settings
        source = self.store.data if self.store.summary()["labelled"] else None
        found = suggest(
            source,
            self.store.pool,
            n,
            backbone=settings.backbone,
            cache_dir=self.cache,
            **_accepted(suggest, image_size=settings.image_size, weights=settings.weights),
        )
        items = []
        for item in found:
            rel = self.store.pool_name(item.path)
            if rel is None:
                continue
            items.append(
                {
                    "path": rel,
                    "reason": item.reason,
                    "suggested_label": item.suggested_label,
                    "probability": item.probability,
                    "preview": self.preview(rel, _SUGGESTION_SIDE),
                }
            )
        return {"mode": getattr(found, "mode", None), "suggestions": items}

    def preview(self, rel: str, side: int) -> str | None:
        """The pool image as a small PNG data URI, None where it cannot be decoded."""
        try:
            data = self.store.pool_file(rel).read_bytes()
            image, _ = decode_image(data, DecodeOptions(), name=rel)
        except (HeadstartError, OSError):
            return None
        return preview_uri(image, side)

    def retrain(self, state: Any) -> dict[str, Any]:
        """A feature-extraction job on the labelled images; its test accuracy becomes a
        point of the label-saving curve once the model is served."""
        labelled = self.store.summary()["labelled"]
        started: list[Any] = []

        def served(predictor: Any) -> None:
            state.predictor = predictor  # one assignment: the next batch uses it
            test = (predictor.describe().get("metrics") or {}).get("test") or {}
            if "accuracy" in test and started:
                self.store.add_point(labelled, float(test["accuracy"]), started[0].id)

        job = self.training.start(
            _RETRAIN_STRATEGY,
            None,
            self.store.data,
            "labelled images",
            served,
            compare=False,
            cache=self.cache,
        )
        started.append(job)
        return job.summary()

    def export(self, form: str, to: str) -> Any:
        items = self.store.labelled()
        if not items:
            raise HTTPException(400, "Nothing is labelled yet.")
        if to == "server":
            root = self.training.settings.out / "labelled"
            stamp = time.strftime("%Y%m%d-%H%M%S")
            folder, number = root / f"{stamp}-{form}", 1
            while folder.exists():
                number += 1
                folder = root / f"{stamp}-{form}-{number}"
            folder.mkdir(parents=True)
            write_export(items, form, _folder_sink(folder))
            written = folder.relative_to(self.training.settings.out).as_posix()
            return {"written": written, "images": len(items), "format": form}
        with (
            tempfile.NamedTemporaryFile(suffix=".zip", delete=False) as handle,
            zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as bundle,
        ):
            write_export(items, form, lambda name, data: bundle.writestr(name, data))
        return FileResponse(
            handle.name,
            media_type="application/zip",
            filename=f"labelled-{form}.zip",
            background=BackgroundTask(Path(handle.name).unlink, missing_ok=True),
        )

    # ----------------------------------------------------------------- routes

    def add_routes(self, app: FastAPI, state: Any, require_token: Any) -> None:
        auth = [Depends(require_token)]
        store = self.store

        @app.get("/v1/label", tags=["labelling"], dependencies=auth)
        async def summary() -> dict[str, Any]:
            """Classes with their counts and keys, totals, the label-saving curve."""
            answer = await asyncio.to_thread(store.summary)
            answer["project"], answer["pool"] = store.project.name, store.pool.name
            return answer

        @app.get("/v1/label/pool", tags=["labelling"], dependencies=auth)
        async def pool(
            offset: int = Query(0, ge=0), limit: int = Query(24, ge=1, le=100)
        ) -> dict[str, Any]:
            """A page of the pool's unlabelled images, each with a small preview."""
            total, names = await asyncio.to_thread(store.unlabelled, offset, limit)
            shown = await asyncio.to_thread(
                lambda: [{"path": n, "preview": self.preview(n, _THUMB_SIDE)} for n in names]
            )
            return {"total": total, "offset": offset, "images": shown}

        @app.post("/v1/label/classes", tags=["labelling"], dependencies=auth, status_code=201)
        async def add_class(body: _ClassName) -> dict[str, Any]:
            await _refusing(store.add_class, body.name)
            return await asyncio.to_thread(store.summary)

        @app.post("/v1/label/rename", tags=["labelling"], dependencies=auth)
        async def rename(body: _Rename) -> dict[str, Any]:
            await _refusing(store.rename_class, body.old, body.new)
            return await asyncio.to_thread(store.summary)

        @app.post("/v1/label/labels", tags=["labelling"], dependencies=auth)
        async def label(body: _Labels) -> dict[str, Any]:
            """Label pool images: ``{"labels": [{"path": ..., "label": ...}, ...]}``."""
            done = [await _refusing(store.label, item.path, item.label) for item in body.labels]
            return {"labelled": done, **await asyncio.to_thread(store.summary)}

        @app.get("/v1/label/suggestions", tags=["labelling"], dependencies=auth)
        async def suggestions(n: int = Query(10, ge=1, le=_MAX_SUGGESTIONS)) -> dict[str, Any]:
            """The pool images to label next, best first, with the model's guess."""
            return await _refusing(self.suggestions, n)

        @app.post("/v1/label/retrain", tags=["labelling"], dependencies=auth, status_code=202)
        async def retrain() -> dict[str, Any]:
            """Train on the labelled images; follow ``/v1/train/{id}/events``."""
            return await asyncio.to_thread(self.retrain, state)

        @app.post("/v1/label/export", tags=["labelling"], dependencies=auth)
        async def export(
            format: str = Query("folders", pattern="^(folders|csv)$"),
            to: str = Query("download", pattern="^(download|server)$"),
        ) -> Any:
            """The labelled images as class folders or a CSV: a zip, or a folder written
            under the server's out folder."""
            return await asyncio.to_thread(self.export, format, to)

        @app.get("/label", include_in_schema=False)
        async def page() -> FileResponse:
            return FileResponse(PAGE / "label.html", headers={"Cache-Control": "no-cache"})


async def _refusing(work: Callable[..., Any], *args: Any) -> Any:
    """``work(*args)`` in a thread; the library's refusals as 400 (bad input) or 409."""
    try:
        return await asyncio.to_thread(work, *args)
    except LabelConflict as error:
        raise HTTPException(409, str(error)) from None
    except HeadstartError as error:
        raise HTTPException(400, str(error)) from None


def _accepted(function: Callable[..., Any], **options: Any) -> dict[str, Any]:
    """The options ``function`` takes by keyword (those it does not are left out)."""
    import inspect

    parameters = inspect.signature(function).parameters
    return {k: v for k, v in options.items() if k in parameters and v is not None}


def _folder_sink(folder: Path) -> Callable[[str, bytes], None]:
    from headstart._internal.atomic import atomic_write

    def put(name: str, data: bytes) -> None:
        atomic_write(folder.joinpath(*name.split("/")), lambda handle: handle.write(data))

    return put


def write_export(items: Iterable[Labelled], form: str, put: Callable[[str, bytes], None]) -> None:
    """``put(name, bytes)`` for every file of the export: ``<class>/<file>`` (folders), or
    ``images/<class>/<file>`` and ``labels.csv`` listing them (csv)."""
    rows = io.StringIO()
    table = csv.writer(rows, lineterminator="\n")
    table.writerow(["path", "label"])
    for item in items:
        name = f"{item.label}/{item.name}"
        name = name if form == "folders" else f"images/{name}"
        put(name, item.path.read_bytes())
        table.writerow([name, item.label])
    if form == "csv":
        put("labels.csv", rows.getvalue().encode())
