"""Connection limits uvicorn does not have: a deadline for request headers, a cap on open connections.

uvicorn times out only idle keep-alive connections; a client that sends its request line and
headers a few bytes at a time keeps its connection (and a file descriptor) forever, and nothing
bounds how many such connections pile up. ``guarded_h11`` returns uvicorn's h11 protocol with:

* a header deadline: from the connection's first byte (or from connecting), the request line and
  headers must be complete within ``header_timeout_s``, else the client gets ``408`` and the
  connection is closed. It restarts with each request on a kept-alive connection. (Their size
  is bounded by h11: 16 KiB.)
* a connection cap: a connection beyond ``max_connections`` gets ``503`` with ``Retry-After``
  at once and is closed, so slow clients cannot exhaust the process's file descriptors.

The body has its own deadline, inside the app (``limits.RequestDeadline``): by then the request
is known, and the answer can be remove.bg's JSON error.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

_COMMON = b"Connection: close\r\nContent-Length: 0\r\nX-Content-Type-Options: nosniff\r\n\r\n"
_HEADERS_TOO_SLOW = b"HTTP/1.1 408 Request Timeout\r\n" + _COMMON
_TOO_MANY = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n" + _COMMON


def guarded_h11(header_timeout_s: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a header deadline and a connection cap; pass it as ``http=``.

    Example:
        >>> uvicorn.run(app, http=guarded_h11(10.0, 256))  # doctest: +SKIP
    """

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections:
                transport.write(_TOO_MANY)
                transport.close()
                return  # never registered: connection_lost below has nothing to undo
            super().connection_made(transport)
            self._start_header_timer()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:  # a request has started but its headers are not all in
                self._start_header_timer()
            else:
                self._stop_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_timer()
            if self.transport is not None:  # None: refused in connection_made
                super().connection_lost(exc)

        def _start_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _stop_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.write(_HEADERS_TOO_SLOW)
                self.transport.close()

    return GuardedH11Protocol
