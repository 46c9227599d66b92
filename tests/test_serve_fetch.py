"""image_url fetching: public addresses only, checked again at every redirect."""

from __future__ import annotations

import http.server
import ipaddress
import re
import socket
import threading
import time

import pytest

from clearbg.errors import shown
from clearbg.serve.fetch import BlockedAddress, FetchError, checked_address, default_port, fetch_url, is_public

PHOTO = b"\xff\xd8 pretend jpeg bytes"


@pytest.fixture(scope="module")
def origin():
    """A local HTTP server: /photo.jpg, /big, and redirects to itself or to 127.0.0.2."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            port = self.server.server_address[1]
            targets = {"/to-photo": "/photo.jpg", "/to-other-loopback": f"http://127.0.0.2:{port}/photo.jpg",
                       "/loop": "/loop"}
            status = 302
            if self.path.startswith("/hops/"):  # /hops/N: N redirects, then the photo
                n = int(self.path.rsplit("/", 1)[1])
                targets[self.path] = f"/hops/{n - 1}" if n > 1 else "/photo.jpg"
            if self.path.startswith("/status/"):  # /status/CODE: that status, Location: the photo
                status = int(self.path.rsplit("/", 1)[1])
                targets[self.path] = "/photo.jpg"
            if self.path in targets:
                self.send_response(status)
                self.send_header("Location", targets[self.path])
                self.end_headers()
                return
            if self.path == "/no-location":
                self.send_response(302)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path == "/stall":  # the first 1001 bytes of a long body, then nothing for a while
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(b"x" * 1001)
                self.wfile.flush()
                time.sleep(3)
                return
            if self.path == "/cut":  # promises 100 bytes, sends 10, hangs up
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                self.wfile.write(b"x" * 10)
                self.wfile.flush()
                self.close_connection = True
                return
            if self.path == "/slow-body":  # headers at once, the body never
                self.send_response(200)
                self.send_header("Content-Length", "100")
                self.end_headers()
                self.wfile.flush()
                time.sleep(3)
                return
            if self.path == "/" or self.path.startswith("/echo"):  # what the server was asked for, and by whom
                body = f"{self.headers['Host']}|{self.path}|{self.headers['User-Agent']}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            body = {"/photo.jpg": PHOTO, "/big": b"x" * 5000}.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def only_127_0_0_1(ip) -> bool:
    return str(ip) == "127.0.0.1"


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "224.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
])
def test_internal_addresses_are_not_public(address):
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", [
    "::127.0.0.1", "::10.0.0.1", "::169.254.169.254",        # IPv4-compatible
    "::ffff:0:10.0.0.1",                                     # IPv4-translated (SIIT)
    "2002:7f00:1::1", "2002:a00:1::", "2002:a9fe:a9fe::1",   # 6to4 of 127.0.0.1, 10.0.0.1, 169.254.169.254
    "64:ff9b::127.0.0.1", "64:ff9b::10.0.0.1",               # NAT64 well-known prefix
    "64:ff9b:1::a00:1", "64:ff9b:1:7f00:1::",                # NAT64 local-use prefix (any layout)
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",                  # Teredo, client 10.0.0.1
    "2606:4700::5efe:a00:1", "2606:4700::200:5efe:7f00:1",   # ISATAP interface ids
])
def test_ipv6_forms_embedding_a_private_ipv4_are_not_public(address):
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", [
    "8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::8.8.8.8",
])
def test_public_addresses_are_public(address):
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("order", [["public", "private"], ["private", "public"]])
def test_every_resolved_address_is_checked_not_only_the_first(order):
    addresses = {"public": ipaddress.ip_address("93.184.216.34"), "private": ipaddress.ip_address("10.0.0.1")}
    with pytest.raises(BlockedAddress, match="10.0.0.1"):
        checked_address("shop.example", [addresses[name] for name in order])
    both_public = [addresses["public"], ipaddress.ip_address("2606:4700:4700::1111")]
    assert checked_address("shop.example", both_public) == addresses["public"]


def test_default_policy_refuses_loopback_names_and_literals(origin):
    with pytest.raises(BlockedAddress):
        fetch_url(origin + "/photo.jpg", max_bytes=1000)
    with pytest.raises(BlockedAddress):
        fetch_url(origin.replace("127.0.0.1", "localhost") + "/photo.jpg", max_bytes=1000)


def test_fetch_follows_allowed_redirects_and_rechecks_each_hop(origin):
    assert fetch_url(origin + "/photo.jpg", max_bytes=1000, allowed=only_127_0_0_1) == PHOTO
    assert fetch_url(origin + "/to-photo", max_bytes=1000, allowed=only_127_0_0_1) == PHOTO
    with pytest.raises(BlockedAddress, match="127.0.0.2"):
        fetch_url(origin + "/to-other-loopback", max_bytes=1000, allowed=only_127_0_0_1)


def test_fetch_limits_and_errors(origin):
    with pytest.raises(FetchError, match="over the limit"):
        fetch_url(origin + "/big", max_bytes=1000, allowed=only_127_0_0_1)
    with pytest.raises(FetchError, match="redirects"):
        fetch_url(origin + "/loop", max_bytes=1000, allowed=only_127_0_0_1)
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_url(origin + "/missing", max_bytes=1000, allowed=only_127_0_0_1)
    with pytest.raises(FetchError, match="only http"):
        fetch_url("file:///etc/passwd", max_bytes=1000)


def test_redirects_up_to_the_limit_are_followed_and_one_more_is_refused(origin):
    assert fetch_url(origin + "/hops/3", max_bytes=1000, allowed=only_127_0_0_1) == PHOTO
    with pytest.raises(FetchError, match="more than 3 redirects"):
        fetch_url(origin + "/hops/4", max_bytes=1000, allowed=only_127_0_0_1)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_every_redirect_status_is_followed(origin, status):
    assert fetch_url(f"{origin}/status/{status}", max_bytes=1000, allowed=only_127_0_0_1) == PHOTO


@pytest.mark.parametrize("path, message", [("/status/304", "HTTP 304"), ("/status/300", "HTTP 300"),
                                           ("/no-location", "HTTP 302")])
def test_other_statuses_and_a_redirect_without_location_are_errors(origin, path, message):
    with pytest.raises(FetchError, match=message):
        fetch_url(origin + path, max_bytes=1000, allowed=only_127_0_0_1)


def test_the_request_names_the_host_without_credentials_and_keeps_the_query(origin):
    host = origin.removeprefix("http://")
    body = fetch_url(f"http://us@er:secret@{host}/echo?size=full&v=2", max_bytes=1000, allowed=only_127_0_0_1)
    assert body.decode() == f"{host}|/echo?size=full&v=2|clearbg"
    assert fetch_url(f"{origin}/echo", max_bytes=1000, allowed=only_127_0_0_1).decode().split("|")[1] == "/echo"


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/photo.jpg", "http:///photo.jpg", "https:///photo.jpg",
                                 "gopher://127.0.0.1:70/"])
def test_only_http_and_https_urls_with_a_host_are_fetched(url):
    with pytest.raises(FetchError, match="only http:// and https:// URLs with a host"):
        fetch_url(url, max_bytes=1000, allowed=only_127_0_0_1)


@pytest.mark.parametrize("v6, v4", [("::ffff:10.0.0.1", "10.0.0.1"), ("64:ff9b::7f00:1", "127.0.0.1"),
                                    ("2002:a00:1::1", "10.0.0.1"), ("2001:db8::1", None)])
def test_embedded_ipv4_reads_each_form(v6, v4):
    from clearbg.serve.fetch import embedded_ipv4

    found = embedded_ipv4(ipaddress.ip_address(v6))
    assert found == ([ipaddress.ip_address(v4)] if v4 else [])


@pytest.fixture(scope="module")
def tls_origin(tmp_path_factory):
    """A local HTTPS server with a self-signed certificate for 127.0.0.1 (no CA trusts it)."""
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(PHOTO)))
            self.end_headers()
            self.wfile.write(PHOTO)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_https_goes_to_the_checked_address_and_verifies_the_certificate(tls_origin):
    # The TLS handshake happens (on the URL's port, with the host name for SNI) and the
    # certificate check refuses a certificate no CA signed: the connection is really verified.
    with pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch_url(tls_origin + "/photo.jpg", max_bytes=1000, allowed=only_127_0_0_1)


def test_errors_name_the_url_they_are_about(origin):
    for path, message in [("/missing", "HTTP 404"), ("/big", "over the limit of 1000 bytes"),
                          ("/loop", "more than 3 redirects")]:
        with pytest.raises(FetchError, match="^" + re.escape(f"{shown(origin + path)}: {message}")):
            fetch_url(origin + path, max_bytes=1000, allowed=only_127_0_0_1)
    with pytest.raises(FetchError, match=re.escape(f"{shown('ftp://127.0.0.1/x')}: only http")):
        fetch_url("ftp://127.0.0.1/x", max_bytes=1000)
    with pytest.raises(FetchError, match="^" + re.escape(f"{shown('no-such-host.invalid')}: cannot resolve")):
        fetch_url("http://no-such-host.invalid/x", max_bytes=1000)


def test_a_refusal_names_the_host_and_every_refused_address():
    refused = [ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("127.0.0.1")]
    with pytest.raises(BlockedAddress, match=re.escape(f"{shown('shop.example')} resolves to a non-public address "
                                                       "(10.0.0.1, 127.0.0.1); not fetched")):
        checked_address("shop.example", refused)
    with pytest.raises(BlockedAddress, match=re.escape(f"{shown('127.0.0.1')} resolves to a non-public address (127.0.0.1);")):
        fetch_url("http://127.0.0.1:9/x", max_bytes=1000)  # one answer, listed once


def test_a_body_of_exactly_the_limit_is_fetched_and_one_byte_more_is_not(origin):
    assert len(fetch_url(origin + "/big", max_bytes=5000, allowed=only_127_0_0_1)) == 5000
    with pytest.raises(FetchError, match="over the limit of 4999 bytes"):
        fetch_url(origin + "/big", max_bytes=4999, allowed=only_127_0_0_1)


def test_an_oversized_body_is_refused_without_reading_the_rest(origin):
    # The server sends 1001 of 100000 bytes and stalls: reading past the limit would wait for it.
    started = time.monotonic()
    with pytest.raises(FetchError, match="over the limit"):
        fetch_url(origin + "/stall", max_bytes=1000, allowed=only_127_0_0_1, timeout=2)
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_server_that_never_answers_times_out(scheme):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # the kernel completes the TCP handshake; nothing ever replies
    try:
        started = time.monotonic()
        with pytest.raises(FetchError, match="timed out"):
            fetch_url(f"{scheme}://127.0.0.1:{silent.getsockname()[1]}/x", max_bytes=1000,
                      allowed=only_127_0_0_1, timeout=0.5)
        assert time.monotonic() - started < 3
    finally:
        silent.close()


def test_a_url_without_a_path_asks_for_the_root(origin):
    assert fetch_url(origin, max_bytes=1000, allowed=only_127_0_0_1).decode().split("|")[1] == "/"


def test_the_host_header_is_the_name_not_the_address(origin):
    if [info[4][0] for info in socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)] != ["127.0.0.1"]:
        pytest.skip("localhost does not resolve to 127.0.0.1 alone here")
    named = origin.replace("127.0.0.1", "localhost")
    assert fetch_url(named + "/echo", max_bytes=1000, allowed=only_127_0_0_1).decode().split("|")[0] == named[7:]


@pytest.mark.parametrize("scheme, port, expected", [("https", None, 443), ("http", None, 80), ("https", 8443, 8443),
                                                    ("http", 8080, 8080)])
def test_default_ports(scheme, port, expected):
    assert default_port(scheme, port) == expected


def test_a_body_cut_short_or_a_refused_connection_is_an_error_naming_the_url(origin):
    with pytest.raises(FetchError) as info:
        fetch_url(origin + "/cut", max_bytes=1000, allowed=only_127_0_0_1)
    assert str(info.value).startswith(f"{shown(origin + '/cut')}: ") and str(info.value).endswith("closed after 10 of the 100 bytes promised")
    with pytest.raises(FetchError, match="closed after 10 of the 100 bytes"):  # cut exactly at the limit
        fetch_url(origin + "/cut", max_bytes=10, allowed=only_127_0_0_1)
    with pytest.raises(FetchError) as info:
        fetch_url(origin + "/slow-body", max_bytes=1000, allowed=only_127_0_0_1, timeout=0.5)
    assert str(info.value) == f"{shown(origin + '/slow-body')}: timed out"
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    with pytest.raises(FetchError) as info:
        fetch_url(f"http://127.0.0.1:{port}/x", max_bytes=1000, allowed=only_127_0_0_1)
    assert str(info.value).startswith(f"{shown(f'http://127.0.0.1:{port}/x')}: ") and "refused" in str(info.value)
