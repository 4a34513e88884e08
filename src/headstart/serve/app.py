"""The FastAPI app: ``create_app(predictor, limits)``, nothing listening yet.

Every limit in ``ServeLimits`` is enforced here or at the edge middleware below, each
with its own status: 413 for a body or an image count too large, 415 for a media
type that is no image, 503 + ``Retry-After`` for a full queue, 504 for a model that
did not answer in time. An image that cannot be decoded is never an HTTP error: its
entry in the answer carries the decoder's reason, as the CLI's skip notes do. No
value a client sends is ever used as a filesystem path. A DICOM upload's answer carries
the decoded picture (windowed, small, a PNG data URI: ``preview``), which a browser
cannot draw from the file itself; ``preview=true`` asks for it for every image.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hmac
import ipaddress
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from headstart.data.decode import decode_image
from headstart.errors import ConfigError, ImageDecodeError, respell
from headstart.serve.batching import MicroBatcher, QueueFull
from headstart.serve.limits import ServeLimits
from headstart.serve.predictor import Predictor
from headstart.serve.preview import preview_uri

__all__ = ["ServerState", "check_bind", "create_app", "server_config"]

PAGE = Path(__file__).parent / "page"
LOG = logging.getLogger("headstart.serve")
_IMAGE_MEDIA_PREFIX = "image/"
_RAW_MEDIA = "application/octet-stream"
_DICOM_MEDIA = "application/dicom"  # RFC 3240's type for one DICOM file
_MAX_NAME = 200  # characters of a client's file name echoed back (a label, never a path)


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` reaches this machine only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_bind(host: str, token: str | None, insecure: bool) -> None:
    """Refuse to listen beyond this machine without a token, unless told ``insecure``."""
    if token or insecure:
        return
    if not is_loopback(host):
        raise ConfigError(
            f"Refusing to serve on {host} without a token: anyone who reaches it could "
            "use the model.",
            hint="Give {token} (clients send it as a bearer token), or {insecure} to "
            "serve openly on purpose.",
        )


class ServerState:
    """What the app serves now; ``predictor`` is swapped whole when a model is trained."""

    def __init__(self, predictor: Predictor | None, limits: ServeLimits) -> None:
        self.predictor = predictor
        self.limits = limits
        self.batcher = MicroBatcher(
            lambda: self.predictor,
            max_batch_size=limits.max_batch_size,
            max_wait_ms=limits.max_wait_ms,
            max_queued_images=limits.max_queued_images,
        )


def create_app(
    predictor: Predictor | None,
    limits: ServeLimits | None = None,
    *,
    token: str | None = None,
    training: Any = None,
    words: Mapping[str, str] | None = None,
    allowed_hosts: Sequence[str] | None = None,
    labelling: Any = None,
) -> FastAPI:
    """The app serving ``predictor`` (None: no model until one is trained from the page).

    ``token``: clients must send ``Authorization: Bearer <token>`` to ``/v1/``;
    ``training``: a ``TrainingJobs`` that lets the page train; ``words``: how a face
    spells settings in decode reasons (the CLI's ``--max-pixels``); ``allowed_hosts``:
    the Host names a request may carry (None: any), so a web page of another site
    re-pointed at 127.0.0.1 by its DNS (rebinding) is refused; ``labelling``: a
    ``labelling.Labelling`` that serves the labelling page (``/label``) and its API.

    A request that changes state (POST) from a web page of another origin is refused
    with 403 whatever the token: without it, any site the user visits could post to a
    server on their machine (train a model, replace the served one).
    """
    limits = limits or ServeLimits()
    state = ServerState(predictor, limits)

    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        state.batcher.start()
        try:
            yield
        finally:
            state.batcher.stop()
            if training is not None:
                training.close()

    app = FastAPI(
        title="headstart",
        summary="Image classification with a model trained by headstart.",
        lifespan=lifespan,
    )
    app.state.serve = state
    zip_route = "/v1/train"  # a training zip may be larger than a request of images
    app.add_middleware(
        EdgeMiddleware,
        limit_for=lambda path: limits.max_zip_bytes if path == zip_route else limits.max_body_bytes,
        read_timeout_s=limits.request_timeout_s,
        body_timeout_s=limits.body_timeout_s,
        allowed_hosts=allowed_hosts,
    )
    require_token = _token_check(token)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """A model is loaded and the worker runs: predictions can be served."""
        if state.predictor is None:
            return JSONResponse({"ready": False, "reason": "no model yet"}, status_code=503)
        if not state.batcher.running:
            return JSONResponse({"ready": False, "reason": "worker stopped"}, status_code=503)
        return JSONResponse({"ready": True})

    @app.get("/v1/model", tags=["model"], dependencies=[Depends(require_token)])
    async def model() -> dict[str, Any]:
        """Classes, backbone, strategy, metrics and preprocessing of the served model."""
        described = _served(state).describe()
        described["limits"] = {
            "max_images": limits.max_images,
            "max_body_bytes": limits.max_body_bytes,
        }
        described["training"] = training is not None
        return described

    @app.post("/v1/predict", tags=["model"], dependencies=[Depends(require_token)])
    async def predict(
        request: Request,
        top_k: int = Query(3, ge=1, le=1000, description="classes per image"),
        preview: bool = Query(
            False, description="a small PNG data URI of every decoded image (DICOM: always)"
        ),
        explain: bool = Query(False, description="add each image's Grad-CAM heatmap"),
    ) -> dict[str, Any]:
        """Top classes of one or many images: multipart files in the field ``files``, or
        one raw image as the body (``image/*``, ``application/dicom`` or
        ``application/octet-stream``). With ``explain``, each answer also holds
        ``heatmap``: a PNG data URI of where the model looked for its top class."""
        served = _served(state)
        if explain and not getattr(served, "can_explain", False):
            raise HTTPException(400, "This model cannot explain its predictions; omit explain.")
        items = await _uploaded_images(request, limits)
        # Decoding and the model share one deadline, from when the body has arrived.
        deadline = time.monotonic() + limits.request_timeout_s
        request.state.images = len(items)
        options = served.decode_options
        if limits.max_pixels is not None:
            options = dataclasses.replace(options, max_pixels=limits.max_pixels)
        classes, proba = list(served.classes), np.zeros((0, len(served.classes)))
        future = None
        try:
            state.batcher.check_room(len(items))  # refused before decoding, when full
            with state.batcher.arriving() as arrival:  # a gathering batch waits for these
                decoded = await asyncio.wait_for(
                    asyncio.to_thread(_decode_all, items, options, words, deadline, preview),
                    max(deadline - time.monotonic(), 0.0),
                )
                images = [image for _, image, _, _ in decoded if image is not None]
                if images:
                    future = state.batcher.submit(images, arrival)
        except QueueFull as exc:
            raise HTTPException(
                503, exc.message, headers={"Retry-After": str(limits.retry_after_s)}
            ) from None
        except TimeoutError:
            raise HTTPException(
                504, f"The images were not decoded within {limits.request_timeout_s:g} s."
            ) from None
        if future is not None:
            try:
                left = max(deadline - time.monotonic(), 0.001)
                classes, proba = await state.batcher.wait(future, left)
            except TimeoutError:
                raise HTTPException(
                    504, f"No answer from the model within {limits.request_timeout_s:g} s."
                ) from None
            except Exception:  # the model failed on these images: JSON, logged, server lives
                LOG.exception("prediction failed")
                raise HTTPException(
                    500, "The model failed on this request's images; the server logged why."
                ) from None
        rows = iter(proba)
        results = []
        for name, image, reason, shown in decoded:
            if image is None:
                results.append({"name": name, "error": reason})
            else:
                results.append({"name": name, **_top(next(rows), classes, top_k)})
                if shown is not None:
                    results[-1]["preview"] = shown
        if explain:
            await _add_heatmaps(served, decoded, results, deadline, limits)
        return {"predictions": results}

    if training is not None:
        training.add_routes(app, state, require_token)
    if labelling is not None:
        labelling.add_routes(app, state, require_token)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=PAGE), name="static")
    return app


def server_config(app: FastAPI, host: str, port: int, limits: ServeLimits, **options: Any) -> Any:
    """The uvicorn configuration serving ``app``: at most ``limits.max_connections`` open
    connections (beyond, uvicorn answers 503 at once), so clients that hold connections
    open cannot exhaust the process; ``options`` go to ``uvicorn.Config`` as they are."""
    import uvicorn

    # uvicorn counts the connection asking among the open ones: N + 1 lets N be served.
    return uvicorn.Config(
        app, host=host, port=port, limit_concurrency=limits.max_connections + 1, **options
    )


async def _add_heatmaps(
    served: Any, decoded: list, results: list[dict[str, Any]], deadline: float, limits: ServeLimits
) -> None:
    """Each predicted image's Grad-CAM heatmap for its top class, as ``heatmap`` (a PNG
    data URI) in its answer; within the request's deadline, failures as for predictions."""
    shown = [
        (image, answer)
        for (_, image, *_), answer in zip(decoded, results, strict=True)
        if image is not None and "class" in answer
    ]
    if not shown:
        return
    images, classes = [image for image, _ in shown], [answer["class"] for _, answer in shown]
    try:
        pngs = await asyncio.wait_for(
            asyncio.to_thread(served.explain, images, classes),
            max(deadline - time.monotonic(), 0.001),
        )
    except TimeoutError:
        raise HTTPException(
            504, f"No heatmap from the model within {limits.request_timeout_s:g} s."
        ) from None
    except Exception:  # as for predictions: JSON, logged, the server lives
        LOG.exception("explaining failed")
        raise HTTPException(
            500, "The model failed to explain this request's images; the server logged why."
        ) from None
    for (_, answer), png in zip(shown, pngs, strict=True):
        answer["heatmap"] = "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _served(state: ServerState) -> Predictor:
    if state.predictor is None:
        raise HTTPException(503, "No model is loaded yet; train one from the page first.")
    return state.predictor


def _token_check(token: str | None):  # type: ignore[no-untyped-def]
    expected = token.encode() if token else None

    async def require_token(authorization: str | None = Header(None)) -> None:
        if expected is None:
            return
        scheme, _, given = (authorization or "").partition(" ")
        # compare_digest: the time taken says nothing about how much of a guess was right
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise HTTPException(
                401,
                "A valid bearer token is needed (Authorization: Bearer <token>).",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_token


async def _uploaded_images(request: Request, limits: ServeLimits) -> list[tuple[str, bytes]]:
    """(name, bytes) of every image in the request; names are labels, never paths."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        try:
            form = await request.form(max_files=limits.max_images, max_fields=16)
        except StarletteHTTPException as exc:  # what Starlette's form parser raises
            if "too many files" in str(exc.detail).lower():
                raise _too_many(limits) from None
            raise
        try:
            items = []
            for index, value in enumerate(form.getlist("files")):
                if isinstance(value, str):
                    raise HTTPException(400, "The form field 'files' must hold files, not text.")
                name = (value.filename or f"file {index + 1}")[:_MAX_NAME]
                items.append((name, await value.read()))
        finally:
            await form.close()
        if not items:
            raise HTTPException(400, "No images: send them as files in the form field 'files'.")
    elif media.startswith(_IMAGE_MEDIA_PREFIX) or media in (_RAW_MEDIA, _DICOM_MEDIA):
        items = [("body", await request.body())]
    else:
        raise HTTPException(
            415,
            f"Unsupported media type {media or '(none)'!r}: send multipart/form-data with "
            "files in the field 'files', or one image as image/*, application/dicom or "
            "application/octet-stream.",
        )
    if len(items) > limits.max_images:
        raise _too_many(limits)
    return items


def _too_many(limits: ServeLimits) -> HTTPException:
    return HTTPException(413, f"Too many images: at most {limits.max_images} per request.")


def _decode_all(
    items: list[tuple[str, bytes]],
    options: Any,
    words: Mapping[str, str] | None,
    deadline: float | None = None,
    preview: bool = False,
) -> list[tuple[str, Image.Image | None, str | None, str | None]]:
    """Each upload decoded by headstart's own decoder, or the decoder's reason why not
    (without the bytes it quotes), with its preview (`preview_uri`) for a DICOM file, or
    for any image when ``preview``. TimeoutError once ``deadline`` (monotonic) has passed:
    a request's time is not spent decoding images nobody waits for any more."""
    decoded: list[tuple[str, Image.Image | None, str | None, str | None]] = []
    for name, data in items:
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError
        try:
            image, info = decode_image(data, options, name=name)
        except ImageDecodeError as exc:
            decoded.append((name, None, client_reason(respell(exc.reason, words)), None))
            continue
        shown = preview_uri(image) if preview or info.dicom is not None else None
        decoded.append((name, image, None, shown))
    return decoded


# A Python bytes literal in a decoder's reason (b'...' or b"..."): the file's own bytes.
_QUOTED_BYTES = re.compile(r"""(?:;?\s*starts with\s*)?\bb(['"])(?:\\.|(?!\1).)*\1""")


def client_reason(reason: str) -> str:
    """A decoder's reason as a client may read it: the file bytes it quotes (which the
    command line shows, to help its user) are cut, so a server never echoes what it
    was sent, nor a file it read."""
    return _QUOTED_BYTES.sub("", reason)


def _top(row: np.ndarray, classes: list[str], top_k: int) -> dict[str, Any]:
    best = np.argsort(-row, kind="stable")[: min(top_k, len(classes))]
    top = [{"class": classes[i], "probability": float(row[i])} for i in best]
    return {"class": top[0]["class"], "probability": top[0]["probability"], "top": top}


class _BodyTooLarge(Exception):
    pass


class _BodyTooSlow(Exception):
    def __init__(self, whole: bool) -> None:
        super().__init__()
        self.whole = whole  # the whole body's deadline passed (not a pause between chunks)


class EdgeMiddleware:
    """At the edge of every HTTP request: the body limit (413 on the declared length,
    before reading; or as soon as a streamed body passes it), a body that stops coming
    (408 after ``read_timeout_s`` without a byte) or that has not all come within
    ``body_timeout_s`` (408: a client trickling a byte a second cannot hold a request
    open for hours), a client that went away (one log line, no traceback), and one
    structured log line per request."""

    def __init__(
        self,
        app: Any,
        *,
        limit_for: Callable[[str], int],
        read_timeout_s: float,
        body_timeout_s: float | None = None,
        allowed_hosts: Sequence[str] | None = None,
    ) -> None:
        self.app = app
        self.limit_for = limit_for  # the body limit of a request path
        self.read_timeout_s = read_timeout_s
        self.body_timeout_s = body_timeout_s  # None: no deadline on the whole body
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen = {"status": 0, "received": 0, "body_done": False, "disconnected": False}
        state = scope.setdefault("state", {})
        limit = self.limit_for(scope.get("path", ""))
        body_deadline = None if self.body_timeout_s is None else started + self.body_timeout_s

        async def counted_receive() -> dict:
            if seen["body_done"]:  # afterwards only a disconnect comes (awaited by streams)
                return await receive()
            wait, whole = self.read_timeout_s, False
            if body_deadline is not None and body_deadline - time.perf_counter() < wait:
                wait, whole = body_deadline - time.perf_counter(), True
            if wait <= 0:
                raise _BodyTooSlow(whole=True)
            try:
                message = await asyncio.wait_for(receive(), wait)
            except TimeoutError:
                raise _BodyTooSlow(whole) from None
            if message["type"] == "http.request":
                seen["received"] += len(message.get("body", b""))
                seen["body_done"] = not message.get("more_body", False)
                if seen["received"] > limit:
                    raise _BodyTooLarge
            return message

        async def watched_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            await send(message)

        try:
            refused = self._refused(scope)
            if refused is not None:
                status, detail = refused
                await JSONResponse({"detail": detail}, status_code=status)(
                    scope, receive, watched_send
                )
                return
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                raise _BodyTooLarge
            await self.app(scope, counted_receive, watched_send)
        except ClientDisconnect:  # the client went away: nobody to answer, nothing broke
            seen["disconnected"] = True
        except (_BodyTooLarge, _BodyTooSlow) as error:
            if seen["status"]:
                raise
            if isinstance(error, _BodyTooLarge):
                status, detail = 413, f"Request body above the limit of {limit:,} bytes."
            elif error.whole:
                status = 408
                detail = f"The request body did not all arrive within {self.body_timeout_s:g} s."
            else:
                status = 408
                detail = f"No request body received for {self.read_timeout_s:g} s."
            answer = JSONResponse(
                {"detail": detail}, status_code=status, headers={"connection": "close"}
            )
            await answer(scope, receive, watched_send)
        finally:
            LOG.info(
                json.dumps(
                    {
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "status": seen["status"],
                        "ms": round((time.perf_counter() - started) * 1000, 1),
                        "bytes_in": seen["received"],
                        "images": state.get("images"),
                        "client": (scope.get("client") or ("?",))[0],
                        **({"disconnected": True} if seen["disconnected"] else {}),
                    }
                )
            )

    def _refused(self, scope: dict) -> tuple[int, str] | None:
        """(status, why) for a request from where it must not come, else None."""
        headers = {key.lower(): value.decode("latin-1") for key, value in scope.get("headers", ())}
        host = headers.get(b"host", "")
        if self.allowed_hosts is not None and _host_name(host) not in self.allowed_hosts:
            return 400, "Unknown Host header; this server answers to its own address only."
        origin = headers.get(b"origin")
        unsafe = scope.get("method") not in _SAFE_METHODS and origin is not None
        if unsafe and (origin == "null" or urlsplit(origin).netloc.lower() != host.lower()):
            return 403, "Requests from another site's page are refused."
        return None


_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _host_name(host: str) -> str:
    """``example:8000`` -> ``example``; ``[::1]:8000`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _content_length(scope: dict) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
