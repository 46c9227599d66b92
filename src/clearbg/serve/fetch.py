"""Fetch a photo by URL for ``image_url``, never reaching the server's own network.

Off unless the server is started with ``--allow-url``. Every hop (the URL and each redirect) is
resolved once, all its addresses must be public (not private, loopback, link-local, shared,
reserved or multicast, nor an IPv6 address embedding such an IPv4 address: mapped, compatible,
NAT64, 6to4, Teredo, ISATAP), and the connection goes to that checked address literally, with the
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

from clearbg.errors import ClearbgError, shown

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_REDIRECTS = 3


class FetchError(ClearbgError):
    """A URL could not be fetched: bad scheme, not allowed, unreachable, too big, HTTP error."""


class BlockedAddress(FetchError):
    """A URL (or a redirect) points at a private, loopback, link-local or otherwise internal address."""


# IPv6 ranges whose addresses carry an IPv4 address in their last 32 bits, which a translator,
# a tunnel or the host's own stack may turn into a connection to that IPv4 address.
_LOW32_IPV4 = (
    ipaddress.ip_network("::/96"),             # IPv4-compatible ::a.b.c.d (deprecated, still parsed)
    ipaddress.ip_network("::ffff:0:0:0/96"),   # IPv4-translated ::ffff:0:a.b.c.d (SIIT)
    ipaddress.ip_network("64:ff9b::/96"),      # NAT64 well-known prefix
)
# NAT64 local-use prefix: the IPv4 address sits where the operator's prefix length puts it, so it
# cannot be read back; IANA lists the range as not globally reachable, and so do we.
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_ISATAP_ID, _ISATAP_MASK = 0x0000_5EFE, 0xFCFF_FFFF  # interface id 0000:5efe or 0200:5efe (u/g bits)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address embeds: mapped, compatible, translated, NAT64, 6to4,
    Teredo (server and client) and ISATAP.

    Example:
        >>> embedded_ipv4(ipaddress.ip_address("2002:a00:1::1"))
        [IPv4Address('10.0.0.1')]
    """
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    found = [ip.ipv4_mapped] if ip.ipv4_mapped is not None else []
    if any(ip in network for network in _LOW32_IPV4):
        found.append(low32)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if (int(ip) >> 32) & _ISATAP_MASK == _ISATAP_ID:
        found.append(low32)
    return found


def is_public(ip: Address) -> bool:
    """True for globally routable unicast addresses only; an IPv6 address that embeds an IPv4
    address (``::ffff:10.0.0.1``, ``2002:a00:1::``, ``64:ff9b::127.0.0.1`` ...) also needs that
    address to be public.

    Example:
        >>> is_public(ipaddress.ip_address("169.254.169.254")), is_public(ipaddress.ip_address("8.8.8.8"))
        (False, True)
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public(ip.ipv4_mapped)  # ::ffff:8.8.8.8 is 8.8.8.8, whatever IPv6 says of the range
        if ip in _NAT64_LOCAL or not all(is_public(v4) for v4 in embedded_ipv4(ip)):
            return False
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
            raise FetchError(f"{shown(url)}: only http:// and https:// URLs with a host are fetched")
        ip = _resolve_checked(parts.hostname, allowed)
        response, connection = _get(parts, ip, default_port(parts.scheme, parts.port), timeout)
        try:
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urljoin(url, response.getheader("Location"))
                continue
            if response.status != 200:
                raise FetchError(f"{shown(url)}: HTTP {response.status}")
            body = response.read(max_bytes + 1)
            if len(body) <= max_bytes and response.length:  # read(n) returns a cut body without a word
                raise FetchError(f"{shown(url)}: the connection closed after {len(body)} of the "
                                 f"{len(body) + response.length} bytes promised")
        except (OSError, http.client.HTTPException) as err:
            raise FetchError(f"{shown(url)}: {err}") from err
        finally:
            connection.close()
        if len(body) > max_bytes:
            raise FetchError(f"{shown(url)}: over the limit of {max_bytes} bytes")
        return body
    raise FetchError(f"{shown(url)}: more than {MAX_REDIRECTS} redirects")


def default_port(scheme: str, port: int | None) -> int:
    """The port a URL names, else its scheme's (443 for https, 80 for http).

    Example:
        >>> default_port("https", None), default_port("http", 8080)
        (443, 8080)
    """
    return port or (443 if scheme == "https" else 80)


def _resolve_checked(host: str, allowed: Callable[[Address], bool]) -> Address:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as err:  # UnicodeError: a label over 63 characters (IDNA)
        raise FetchError(f"{shown(host)}: cannot resolve ({err})") from err
    # ip_address keeps an IPv6 scope (fe80::1%eth0), so a scoped answer is checked as it is.
    return checked_address(host, [ipaddress.ip_address(info[4][0]) for info in infos], allowed)


def checked_address(host: str, addresses: list[Address], allowed: Callable[[Address], bool] = is_public) -> Address:
    """The address to connect to for ``host``, once every one it resolved to is allowed.

    Every answer must pass, not just the one we use: the resolver could rotate them, and a
    client library or a retry might pick another.

    Raises:
        BlockedAddress: any of ``addresses`` is refused (all refused ones are named), or there are none.

    Example:
        >>> checked_address("shop.example", [ipaddress.ip_address("8.8.8.8")])
        IPv4Address('8.8.8.8')
    """
    refused = [str(ip) for ip in addresses if not allowed(ip)]
    if refused or not addresses:
        raise BlockedAddress(f"{shown(host)} resolves to a non-public address ({', '.join(refused)}); not fetched")
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
        raise FetchError(f"{shown(parts.geturl())}: {err}") from err
