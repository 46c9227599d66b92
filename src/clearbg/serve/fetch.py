"""Fetch a photo by URL for ``image_url``, never reaching the server's own network.

Off unless the server is started with ``--allow-url``. Every hop (the URL and each redirect) is
resolved once, all its addresses must be public (not private, loopback, link-local, shared,
reserved or multicast), and the connection goes to that checked address literally, with the
original host name in ``Host`` and in TLS SNI and certificate checks. A DNS answer that changes
between the check and the connection (DNS rebinding) therefore cannot redirect the request.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from typing import Callable
from urllib.parse import urljoin, urlsplit

from clearbg.errors import ClearbgError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_REDIRECTS = 3


class FetchError(ClearbgError):
    """A URL could not be fetched: bad scheme, not allowed, unreachable, too big, HTTP error."""


class BlockedAddress(FetchError):
    """A URL (or a redirect) points at a private, loopback, link-local or otherwise internal address."""


def is_public(ip: Address) -> bool:
    """True for globally routable unicast addresses only.

    Example:
        >>> is_public(ipaddress.ip_address("169.254.169.254")), is_public(ipaddress.ip_address("8.8.8.8"))
        (False, True)
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
    return ip.is_global and not ip.is_multicast


def fetch_url(
    url: str, *, max_bytes: int, timeout: float = 10.0, allowed: Callable[[Address], bool] = is_public
) -> bytes:
    """GET ``url`` (following up to 3 redirects) and return the body.

    Args:
        url: an ``http`` or ``https`` URL.
        max_bytes: refuse bodies larger than this.
        timeout: seconds per connection step.
        allowed: which resolved addresses may be contacted (tests pass a narrower rule).

    Returns:
        The response body.

    Raises:
        BlockedAddress: a hop resolves to an address ``allowed`` refuses.
        FetchError: any other failure (the message says which).

    Example:
        >>> fetch_url("https://example.com/shoe.jpg", max_bytes=25 << 20)   # doctest: +SKIP
    """
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(f"{url}: only http:// and https:// URLs with a host are fetched")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        ip = _resolve_checked(parts.hostname, port, allowed)
        response, connection = _get(parts, ip, port, timeout)
        try:
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise FetchError(f"{url}: HTTP {response.status}")
            body = response.read(max_bytes + 1)
        except (OSError, http.client.HTTPException) as err:
            raise FetchError(f"{url}: {err}") from err
        finally:
            connection.close()
        if len(body) > max_bytes:
            raise FetchError(f"{url}: over the limit of {max_bytes} bytes")
        return body
    raise FetchError(f"{url}: more than {MAX_REDIRECTS} redirects")


def _resolve_checked(host: str, port: int, allowed: Callable[[Address], bool]) -> Address:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as err:
        raise FetchError(f"{host}: cannot resolve ({err})") from err
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    # Every answer must pass, not just the one we use: the resolver could rotate them.
    refused = [str(ip) for ip in addresses if not allowed(ip)]
    if refused or not addresses:
        raise BlockedAddress(f"{host} resolves to a non-public address ({', '.join(refused)}); not fetched")
    return addresses[0]


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a fixed IP while SNI and certificate checks use the URL's host name."""

    def __init__(self, ip: str, port: int, server_name: str, timeout: float):
        super().__init__(ip, port, timeout=timeout, context=ssl.create_default_context())
        self._server_name = server_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._server_name)


def _get(parts, ip: Address, port: int, timeout: float):
    literal = str(ip)
    if parts.scheme == "https":
        connection = _PinnedHTTPSConnection(literal, port, parts.hostname, timeout)
    else:
        connection = http.client.HTTPConnection(literal, port, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        connection.request("GET", path, headers={"Host": parts.netloc.rpartition("@")[2], "User-Agent": "clearbg"})
        return connection.getresponse(), connection
    except (OSError, http.client.HTTPException) as err:
        connection.close()
        raise FetchError(f"{parts.geturl()}: {err}") from err
