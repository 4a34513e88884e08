"""The edge of every HTTP request, before any route: the body limit, a body that stops
coming or comes too slowly, the Host and Origin rules, a client that went away, and one
structured log line per request."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

__all__ = ["EdgeMiddleware"]

LOG = logging.getLogger("headstart.serve")


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
