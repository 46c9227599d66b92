"""What keeps the review app to its reviewers: the bind rule, the access token, and headers.

The app shows product photos and rewrites training masks, so:

* it binds to 127.0.0.1 unless told otherwise, and bound anywhere else it refuses to start
  without an access token (:func:`check_bind`);
* with a token, every request needs it: ``Authorization: Bearer TOKEN`` or the cookie the page
  gets from opening ``/?token=TOKEN`` once (HttpOnly, SameSite=Strict);
* on loopback, a ``Host`` other than a loopback name is refused, so a web page that rebinds its
  own domain to 127.0.0.1 (DNS rebinding) cannot reach the queue;
* a request that changes anything must carry ``X-Clearbg: review``: a browser sends a custom
  header across origins only after a CORS preflight, which this app never grants, so another
  site cannot make a reviewer's browser accept or repaint anything;
* every answer says ``nosniff`` and carries a Content-Security-Policy that allows only this
  origin's own scripts, styles and images (nothing from a CDN could run even if a page asked).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from urllib.parse import parse_qsl, urlencode

from clearbg.errors import ReviewError

TOKEN_COOKIE = "clearbg_review_token"
CSRF_HEADER = b"x-clearbg"
TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~-]{16,256}")
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
                                 b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("0.0.0.0"), is_loopback("localhost")
        (True, False, True)
    """
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


def host_name(value: str) -> str:
    """The name in a ``Host`` header, without the port.

    Example:
        >>> host_name("127.0.0.1:8000"), host_name("[::1]:8000"), host_name("localhost")
        ('127.0.0.1', '::1', 'localhost')
    """
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve beyond this machine without an access token, or with a guessable one.

    Raises:
        ReviewError: ``host`` is not a loopback address and no token was given, or the token
            is shorter than 16 characters or has characters a cookie cannot carry.
    """
    if token and not TOKEN_CHARS.fullmatch(token):
        raise ReviewError("the access token must be 16 to 256 letters, digits or ._~- characters; make one with: "
                          "python3 -c 'import secrets; print(secrets.token_urlsafe())'")
    if not is_loopback(host) and not token:
        raise ReviewError(
            f"binding the review app to {host} lets anyone who can reach this machine see the photos and change "
            "the masks; give an access token (--token, or better the CLEARBG_REVIEW_TOKEN environment variable) "
            "or bind to 127.0.0.1")


class ReviewGuard:
    """ASGI middleware enforcing the rules of this module's docstring.

    Args:
        app: the wrapped ASGI app.
        token: the access token, or None (only allowed on loopback).
        loopback: the app is bound to a loopback address (then ``Host`` must be a loopback name).
    """

    def __init__(self, app, *, token: str | None, loopback: bool):
        self.app = app
        self.token = token.encode() if token else None
        self.loopback = loopback

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.loopback and not is_loopback(host_name(headers.get(b"host", b"").decode("latin-1"))):
            return await _refuse(send, 403, "this review app answers to 127.0.0.1 / localhost only")
        if self.token is not None:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            if scope["method"] == "GET" and "token" in query:
                return await self._login(scope, send, query)
            if not self._authorised(headers):
                return await _refuse(send, 401, "this review app needs its access token: open the link with ?token=... "
                                                "once, or send Authorization: Bearer TOKEN")
        if scope["method"] not in SAFE_METHODS and headers.get(CSRF_HEADER) != b"review":
            return await _refuse(send, 403, "a request that changes anything needs the header X-Clearbg: review")

        async def secured_send(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, secured_send)

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        bearer = headers.get(b"authorization", b"")
        if bearer.lower().startswith(b"bearer ") and hmac.compare_digest(bearer[7:].strip(), self.token):
            return True
        for part in headers.get(b"cookie", b"").split(b";"):
            name, _, value = part.strip().partition(b"=")
            if name == TOKEN_COOKIE.encode() and hmac.compare_digest(value, self.token):
                return True
        return False

    async def _login(self, scope, send, query: dict[str, str]) -> None:
        """``GET /path?token=T``: set the cookie and send the browser to the path without the token
        (so it leaves the address bar and the history)."""
        if not hmac.compare_digest(query["token"].encode(), self.token):
            return await _refuse(send, 401, "wrong access token")
        rest = urlencode({k: v for k, v in query.items() if k != "token"})
        location = scope["path"] + (f"?{rest}" if rest else "")
        cookie = f"{TOKEN_COOKIE}={query['token']}; HttpOnly; SameSite=Strict; Path=/"
        await send({"type": "http.response.start", "status": 303, "headers": [
            (b"location", location.encode()), (b"set-cookie", cookie.encode()), (b"content-length", b"0"),
            *SECURITY_HEADERS]})
        await send({"type": "http.response.body", "body": b""})


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})
