"""What the server accepts: its settings, and the guards around the app.

The guards are raw ASGI middleware, so a request without the API key is refused before its
body is read, and an oversized upload is refused from its
``Content-Length`` before any of it is read, and a chunked upload (no length) is cut off as soon
as it passes the limit, instead of being spooled to disk first. ``RequestDeadline`` starts the
``--timeout`` clock when the headers are in, so a body that trickles in gets 408 instead of
holding the request open. ``NoSniff`` marks every response ``X-Content-Type-Options: nosniff``. (Headers and open connections are bounded below the app, in
``connections``.)
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from dataclasses import dataclass

from starlette.exceptions import HTTPException

MiB = 1024 * 1024


@dataclass(frozen=True)
class ServeSettings:
    """Limits and switches of one server process.

    Attributes:
        max_upload_bytes: largest request body (413 above it).
        max_pixels: largest photo, width * height from its header (413 above it).
        timeout_s: most seconds one request may take from its headers to the answer: the
            upload must be in by then (408 otherwise), the answer too (504 otherwise).
        header_timeout_s: most seconds from connecting (or a kept-alive request's first byte)
            to the end of the request headers (408 and closed after).
        max_connections: open connections at most; one more is answered 503 and closed.
        max_concurrency: requests being processed at once; more are refused with 503 at once
            (with ``Retry-After``) instead of queueing without bound.
        max_batch, max_wait_ms: micro-batching (see ``MicroBatcher``).
        api_key: when set, removal endpoints require it in ``X-Api-Key`` (403 otherwise).
        allow_url: accept ``image_url`` (public addresses only, see ``fetch``); off by default.
    """

    max_upload_bytes: int = 25 * MiB
    max_pixels: int = 50_000_000
    timeout_s: float = 30.0
    max_concurrency: int = 16
    max_batch: int = 8
    max_wait_ms: float = 5.0
    api_key: str | None = None
    allow_url: bool = False
    header_timeout_s: float = 10.0
    max_connections: int = 256

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_pixels", "max_concurrency", "max_batch", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("timeout_s", "header_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_connections < self.max_concurrency:
            raise ValueError(f"max_connections ({self.max_connections}) is below max_concurrency "
                             f"({self.max_concurrency}), so that many requests could never be in flight; "
                             "raise max_connections")


def error_body(status: int, title: str, code: str) -> bytes:
    """remove.bg's error shape: ``{"errors": [{"title": ..., "code": ...}]}``."""
    return json.dumps({"errors": [{"title": title, "code": code}]}).encode()


class BodySizeLimit:
    """ASGI middleware answering 413 for request bodies over ``max_bytes``.

    Args:
        app: the wrapped ASGI app.
        max_bytes: the limit.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(send)
        seen = 0

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # An HTTPException reaches the app's JSON error handler (413), unlike others.
                    raise HTTPException(413, self._title())
            return message

        await self.app(scope, counted_receive, send)

    def _title(self) -> str:
        return f"Request body is over the limit of {self.max_bytes} bytes"

    async def _refuse(self, send) -> None:
        body = error_body(413, self._title(), "file_too_large")
        await send({
            "type": "http.response.start", "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")],
        })
        await send({"type": "http.response.body", "body": body})



DEADLINE = "clearbg.deadline"
"""Scope key: the ``time.monotonic()`` by which the request must be answered."""


class RequestDeadline:
    """ASGI middleware: the request must be answered ``timeout_s`` after its headers arrived.

    It records the deadline in the scope (``DEADLINE``) for the app's own 504, and answers 408
    when the body is not all in by then, so an upload sent a few bytes at a time cannot hold a
    request open. The 408 closes the connection (the rest of the body is never read).

    Args:
        app: the wrapped ASGI app.
        timeout_s: seconds from the headers to the answer.
    """

    def __init__(self, app, timeout_s: float):
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        deadline = scope[DEADLINE] = time.monotonic() + self.timeout_s
        body_done = False

        async def timed_receive():
            nonlocal body_done
            if body_done:  # later receives wait for a disconnect, which is no upload
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                # An HTTPException reaches the app's JSON error handler, like BodySizeLimit's 413.
                raise HTTPException(408, f"Request body not received within {self.timeout_s:g} s (the server's "
                                         "--timeout); send it faster, or ask for a longer timeout",
                                    headers={"Connection": "close"}) from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed_receive, send)


class NoSniff:
    """ASGI middleware adding ``X-Content-Type-Options: nosniff`` to every response.

    Without it a browser may guess a type from the bytes (an uploaded "image" that is really
    HTML, echoed in an error or served back) and run it as a page on the server's origin.

    Args:
        app: the wrapped ASGI app.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_nosniff(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-content-type-options", b"nosniff")]}
            await send(message)

        await self.app(scope, receive, send_nosniff)


class ApiKeyGuard:
    """ASGI middleware answering 403 on ``paths`` without the right ``X-Api-Key``.

    It runs before anything reads the body, so a client without the key cannot make the server
    receive and parse an upload. Other paths (probes, docs) stay open.

    Args:
        app: the wrapped ASGI app.
        api_key: the expected key.
        paths: the protected request paths.
    """

    def __init__(self, app, api_key: str, paths: tuple[str, ...]):
        self.app = app
        self.api_key = api_key.encode()
        self.paths = paths

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] in self.paths:
            given = dict(scope["headers"]).get(b"x-api-key", b"")
            if not hmac.compare_digest(given, self.api_key):
                body = error_body(403, "Missing or invalid X-Api-Key", "auth_failed")
                await send({
                    "type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                })
                return await send({"type": "http.response.body", "body": body})
        await self.app(scope, receive, send)
