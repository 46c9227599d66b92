"""The HTTP API against a real ``clearbg serve`` process (uvicorn) on a free loopback port."""

from __future__ import annotations

import base64
import csv
import io
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from clearbg.inference.edges import EdgeOptions, finish_edges
from clearbg.inference.predictor import Predictor
from clearbg.quality.gate import Scorer

KEY = "test-key-123"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(tmp: Path, *options: str, env: dict[str, str] | None = None):
    port = _free_port()
    log = open(tmp / f"serve-{port}.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "clearbg", "serve", "--port", str(port), "--model", "u2netp", "--log-level", "warning", *options],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"clearbg serve exited: {(tmp / f'serve-{port}.log').read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url, log
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("clearbg serve did not become ready in 90 s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # A 50 ms batch window makes concurrent requests batch reliably on a busy 2-core machine.
    proc, url, log = _start(tmp_path_factory.mktemp("serve"), "--batch-wait-ms", "50", "--max-batch", "4", "--allow-url",
                            "--header-timeout", "2")
    yield url
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    """Tight limits: key required (given as CLEARBG_API_KEY), 200 kB uploads, 300k pixels, one request at a time, 0.5 s
    timeout, 1 s for headers, 4 connections; a 3 s batch window keeps a valid request in flight
    until it times out."""
    proc, url, log = _start(
        tmp_path_factory.mktemp("strict"), "--max-upload-mb", "0.2", "--max-pixels", "300000",
        "--max-concurrency", "1", "--timeout", "0.5", "--batch-wait-ms", "3000", "--header-timeout", "1",
        "--max-connections", "4", env={"CLEARBG_API_KEY": KEY},
    )
    yield url
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


@pytest.fixture(scope="module")
def photos(shared_data) -> list[bytes]:
    """Eight tiny-subset fashion photos shrunk to 200 px wide JPEGs (fast on 2 cores)."""
    root = shared_data / "fashion"
    with open(root / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["tiny"] == "1"][:8]
    out = []
    for row in rows:
        image = Image.open(root / row["image"]).convert("RGB")
        image = image.resize((200, round(200 * image.height / image.width)))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


@pytest.fixture(scope="module")
def full_photo(shared_data) -> bytes:
    return (shared_data / "fashion" / "images" / "ccp_0001.jpg").read_bytes()  # 550x832 = 458k pixels


def _post(url: str, data: bytes, path: str = "/v1.0/removebg", **fields) -> httpx.Response:
    name = "file" if path == "/v1/remove" else "image_file"
    return httpx.post(url + path, files={name: ("photo.jpg", data, "image/jpeg")}, data=fields, timeout=60)


def _image(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    [error] = response.json()["errors"]
    assert error["code"] == code
    return error["title"]


def test_health_ready_and_openapi_docs(server):
    assert httpx.get(server + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server + "/readyz").json() == {"status": "ready"}
    spec = httpx.get(server + "/openapi.json").json()
    form = spec["paths"]["/v1.0/removebg"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    fields = spec["components"]["schemas"][form.rsplit("/", 1)[1]]["properties"]
    assert {"image_file", "size", "type", "format", "crop", "crop_margin", "bg_color", "channels"} <= set(fields)
    assert "/v1/remove" in spec["paths"]
    assert "swagger" in httpx.get(server + "/docs").text.lower()


def test_docs_render_in_chromium_without_any_outside_request(chromium, server, tmp_path):
    # FastAPI's default /docs pulls Swagger UI from a CDN (blank offline); ours is served locally.
    page = chromium.new_page(viewport={"width": 1200, "height": 900})
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    try:
        page.goto(server + "/docs")
        page.wait_for_selector(".opblock", timeout=20_000)
        paths = page.eval_on_selector_all(".opblock-summary-path", "nodes => nodes.map(n => n.innerText)")
        page.screenshot(path=str(tmp_path / "docs.png"), full_page=True)
    finally:
        page.close()
    assert {"/v1.0/removebg", "/v1/remove", "/healthz", "/readyz"} <= {p.replace("\u200b", "") for p in paths}
    assert requested and all(url.startswith(server + "/") for url in requested), requested


def _library_alpha(photo: Image.Image, prob: np.ndarray, **options) -> np.ndarray:
    return np.asarray(finish_edges(photo, prob, EdgeOptions(**options))[1])


def test_cutout_equals_library_result_with_confidence(server, photos):
    """The server is a shell over Predictor + the edge pipeline: same alpha, same confidence score (the
    model's calibrated score on the cheap signals: no flipped pass without a review threshold)."""
    response = _post(server, photos[0])
    cutout = _image(response)
    photo = Image.open(io.BytesIO(photos[0]))
    assert cutout.mode == "RGBA" and cutout.size == photo.size
    assert response.headers["content-type"] == "image/png"
    assert (response.headers["x-width"], response.headers["x-height"]) == (str(photo.width), str(photo.height))
    [prediction] = Predictor("u2netp").predict_detailed([photo.convert("RGB")])
    np.testing.assert_array_equal(np.asarray(cutout.getchannel("A")), _library_alpha(photo, prediction.prob))
    assert float(response.headers["x-confidence"]) == pytest.approx(Scorer.for_model("u2netp").score(prediction),
                                                                    abs=1e-4)
    assert "x-review" not in response.headers  # no review threshold on this server


def test_onnxruntime_engine_serves_the_same_cutout(tmp_path, photos):
    proc, url, log = _start(tmp_path, "--engine", "onnxruntime", "--precision", "fp32")
    try:
        response = _post(url, photos[0], "/v1/remove")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
    alpha = np.asarray(_image(response).getchannel("A"))
    photo = Image.open(io.BytesIO(photos[0])).convert("RGB")
    [prediction] = Predictor("u2netp", engine="onnxruntime", precision="fp32").predict_detailed([photo])
    np.testing.assert_array_equal(alpha, _library_alpha(photo, prediction.prob))  # ONNX Runtime fp32 inside
    assert prediction.sides is None  # an ONNX export has the fused map only: the score uses the other signals
    assert float(response.headers["x-confidence"]) == pytest.approx(Scorer.for_model("u2netp").score(prediction),
                                                                    abs=1e-4)


def test_removebg_options(server, photos, full_photo):
    base = np.asarray(_image(_post(server, photos[1])).getchannel("A"))

    white = _post(server, photos[1], bg_color="white")
    assert white.headers["content-type"] == "image/jpeg" and _image(white).mode == "RGB"  # format=auto, opaque

    mask = _image(_post(server, photos[1], channels="alpha"))
    assert mask.mode == "L"
    np.testing.assert_array_equal(np.asarray(mask), base)

    ys, xs = np.nonzero(base >= 16)
    cropped = _post(server, photos[1], crop="true")
    assert _image(cropped).size == (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    margin = _image(_post(server, photos[1], crop="true", crop_margin="10px 5px"))
    assert margin.size == (_image(cropped).width + 10, _image(cropped).height + 20)
    assert margin.getpixel((0, 0))[3] == 0  # the margin is transparent

    preview = _post(server, full_photo, size="preview")
    assert int(preview.headers["x-width"]) * int(preview.headers["x-height"]) <= 250_000

    archive = zipfile.ZipFile(io.BytesIO(_post(server, photos[1], format="zip").content))
    assert sorted(archive.namelist()) == ["alpha.png", "color.jpg"]
    alpha = Image.open(archive.open("alpha.png"))
    assert Image.open(archive.open("color.jpg")).mode == "RGB"
    np.testing.assert_array_equal(np.asarray(alpha), base)

    b64 = httpx.post(server + "/v1.0/removebg", data={"image_file_b64": base64.b64encode(photos[1]).decode(),
                                                      "channels": "alpha"}, timeout=60)
    np.testing.assert_array_equal(np.asarray(_image(b64)), base)


def test_edge_and_shadow_options_match_the_library(server, photos):
    photo = Image.open(io.BytesIO(photos[3])).convert("RGB")
    prob = Predictor("u2netp").predict([photo])[0]
    for fields, options in (({"clean": "false"}, dict(clean=False)),
                            ({"refine": "guided", "drop_fragments": "true"}, dict(refine="guided", drop_fragments=True)),
                            ({"refine": "matting", "alpha_matting_erode_size": "5"}, dict(refine="matting", erode_size=5))):
        mask = _image(_post(server, photos[3], channels="alpha", **fields))
        np.testing.assert_array_equal(np.asarray(mask), _library_alpha(photo, prob, **options))

    plain = np.asarray(_image(_post(server, photos[3], bg_color="white", format="png")), np.int16)
    clean = np.asarray(_image(_post(server, photos[3], bg_color="white", format="png", decontaminate="true")), np.int16)
    edge = (_library_alpha(photo, prob) > 0) & (_library_alpha(photo, prob) < 255)
    assert np.abs(clean - plain)[edge].mean() > 1 and (clean == plain)[~edge].all()  # only the soft edge changes

    shaded = np.asarray(_image(_post(server, photos[3], bg_color="white", format="png", add_shadow="true",
                                     shadow_type="drop", shadow_opacity="80")))
    assert (shaded.sum(axis=-1) < plain.sum(axis=-1)).sum() > 100  # darker pixels beside the product
    ys, xs = np.nonzero(_library_alpha(photo, prob) < 128)
    shade = _image(_post(server, photos[3], "/v1/remove", shadow="drop"))
    assert np.asarray(shade.getchannel("A"))[ys, xs].max() > 0  # semi-transparent shadow on a cutout

    assert "refine" in _error(_post(server, photos[3], refine="sharp"), 400, "invalid_parameter")
    assert "shadow_opacity" in _error(_post(server, photos[3], add_shadow="true", shadow_opacity="150"), 400,
                                      "invalid_parameter")
    assert "channels=rgba" in _error(_post(server, photos[3], add_shadow="true", channels="alpha"), 400,
                                     "invalid_parameter")
    assert "clean-up step" in _error(_post(server, photos[3], clean="false", fill_holes="true"), 400,
                                     "invalid_parameter")


def test_plain_remove_endpoint(server, photos):
    cutout = _image(_post(server, photos[2], "/v1/remove"))
    assert cutout.mode == "RGBA"
    mask = _image(_post(server, photos[2], "/v1/remove", mask="true"))
    assert mask.mode == "L"
    np.testing.assert_array_equal(np.asarray(mask), np.asarray(cutout.getchannel("A")))
    assert _post(server, photos[2], "/v1/remove", format="jpg").headers["content-type"] == "image/jpeg"


def test_concurrent_requests_are_batched_with_unchanged_results(server, photos):
    single = [_post(server, photo, channels="alpha").content for photo in photos]
    with ThreadPoolExecutor(len(photos)) as pool:
        responses = list(pool.map(lambda photo: _post(server, photo, channels="alpha"), photos))
    assert [r.status_code for r in responses] == [200] * len(photos)
    assert max(int(r.headers["x-batch-size"]) for r in responses) > 1
    assert httpx.get(server + "/metrics").json()["largest_batch"] > 1
    # Same masks, each at its own photo: batching neither mixes photos up nor changes pixels.
    assert [r.content for r in responses] == single


def test_bad_requests_are_json_errors(server, photos):
    assert "not an image" in _error(_post(server, b"just some text"), 415, "unsupported_media_type")
    assert "truncated" in _error(_post(server, photos[0][: len(photos[0]) // 2]), 400, "invalid_image")
    _error(httpx.post(server + "/v1.0/removebg", data={"size": "auto"}), 400, "missing_image")
    assert "format" in _error(_post(server, photos[0], format="gif"), 400, "invalid_parameter")
    assert "colour" in _error(_post(server, photos[0], bg_color="notacolour"), 400, "invalid_parameter")
    assert "crop_margin" in _error(_post(server, photos[0], crop="true", crop_margin="600px"), 400, "invalid_parameter")
    # URL fetching is on here, but never towards the server's own network.
    for url in (server + "/healthz", server.replace("127.0.0.1", "localhost") + "/healthz", "http://169.254.169.254/"):
        _error(httpx.post(server + "/v1.0/removebg", data={"image_url": url}), 400, "url_blocked")
    _error(httpx.get(server + "/nope"), 404, "not_found")


def test_result_too_large_for_its_format_is_a_json_422(server):
    def png(width, height):
        buffer = io.BytesIO()
        Image.new("RGB", (width, height), "white").save(buffer, "PNG")
        return buffer.getvalue()

    tall = png(8, 20000)  # WebP stores 16383 px a side
    for path in ("/v1.0/removebg", "/v1/remove"):
        title = _error(_post(server, tall, path, format="webp"), 422, "output_too_large")
        assert "upload" in title and "8x20000" in title and "WEBP" in title
    wide = png(70000, 1)  # JPEG stores 65500: zip's color.jpg and an opaque format=auto result
    assert "JPEG" in _error(_post(server, wide, format="zip"), 422, "output_too_large")
    assert "JPEG" in _error(_post(server, wide, bg_color="white"), 422, "output_too_large")
    assert _post(server, tall, "/v1/remove", mask="true").status_code == 200  # PNG stores it


def test_api_key_is_required_when_set(strict):
    text = b"not an image"
    _error(_post(strict, text), 403, "auth_failed")
    # Refused before the body is read: an oversized upload without the key gets 403, not 413.
    _error(_post(strict, b"x" * 300_000), 403, "auth_failed")
    _error(httpx.post(strict + "/v1/remove", files={"file": text}, headers={"X-Api-Key": "wrong"}), 403, "auth_failed")
    # The right key gets past the check (to the decoder, which refuses the text).
    ok = httpx.post(strict + "/v1.0/removebg", files={"image_file": text}, headers={"X-Api-Key": KEY})
    _error(ok, 415, "unsupported_media_type")
    assert httpx.get(strict + "/healthz").status_code == 200  # probes need no key
    _error(httpx.get(strict + "/metrics"), 403, "auth_failed")  # traffic counters do
    assert "requests" in httpx.get(strict + "/metrics", headers={"X-Api-Key": KEY}).json()
    off = httpx.post(strict + "/v1.0/removebg", data={"image_url": "http://example.com/a.jpg"}, headers={"X-Api-Key": KEY})
    _error(off, 400, "url_fetch_disabled")  # URL fetching is off by default


def test_upload_and_pixel_limits(strict, full_photo):
    headers = {"X-Api-Key": KEY}
    big = b"\xff" * 300_000
    _error(httpx.post(strict + "/v1.0/removebg", files={"image_file": big}, headers=headers), 413, "file_too_large")

    def chunks():  # no Content-Length: the limit must hold while streaming too
        yield b'--abc\r\nContent-Disposition: form-data; name="image_file"; filename="a.jpg"\r\n\r\n'
        for _ in range(30):
            yield b"x" * 10_000

    chunked = httpx.post(strict + "/v1.0/removebg", content=chunks(),
                         headers={**headers, "Content-Type": "multipart/form-data; boundary=abc"})
    _error(chunked, 413, "file_too_large")
    title = _error(httpx.post(strict + "/v1.0/removebg", files={"image_file": full_photo}, headers=headers),
                   413, "image_too_large")
    assert "550x832" in title


def test_busy_server_answers_503_and_slow_request_504(strict, photos):
    headers = {"X-Api-Key": KEY}
    results = {}

    def first():
        results["first"] = httpx.post(strict + "/v1.0/removebg", files={"image_file": photos[0]}, headers=headers)

    thread = threading.Thread(target=first)
    thread.start()
    time.sleep(0.25)  # the first request now waits in the 3 s batch window
    busy = httpx.post(strict + "/v1.0/removebg", files={"image_file": photos[1]}, headers=headers)
    thread.join()
    _error(busy, 503, "server_busy")
    assert busy.headers["retry-after"] == "1"
    _error(results["first"], 504, "timeout")


def test_every_response_says_nosniff(server, strict, photos):
    responses = [
        _post(server, photos[4], "/v1/remove"), httpx.get(server + "/healthz"), httpx.get(server + "/docs"),
        httpx.get(server + "/openapi.json"), _post(server, b"text"), httpx.get(server + "/nope"),
        _post(strict, b"x"),                                                        # 403 from the key guard
        httpx.post(strict + "/v1/remove", content=b"x" * 300_000, headers={"X-Api-Key": KEY}),  # 413 from the size guard
        httpx.get(strict + "/metrics", headers={"X-Api-Key": KEY}),
    ]
    assert [r.headers.get("x-content-type-options") for r in responses] == ["nosniff"] * len(responses), \
        [(r.status_code, r.url) for r in responses]


def test_over_long_values_are_cut_short_in_errors(server, photos):
    long = "z" * 5000
    titles = [
        _error(_post(server, photos[0], bg_color=long), 400, "invalid_parameter"),
        _error(_post(server, photos[0], crop="true", crop_margin="1" * 5000 + "px"), 400, "invalid_parameter"),
        _error(httpx.post(server + "/v1.0/removebg", data={"image_url": f"http://{long}.example/a.jpg"}), 400,
               "url_fetch_failed"),
    ]
    for title in titles:
        assert len(title) < 300 and "…" in title, title[:400]
    assert "zzzz…" in titles[0] and "use hex" in titles[0]  # the advice after the value survives


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _drip(url: str, head: bytes, drip: bytes, seconds: float = 8.0) -> tuple[float, bytes]:
    """Send ``head`` at once, then ``drip`` two bytes every 0.1 s until the server answers and
    closes (or ``seconds`` pass); returns (seconds until closed, what the server sent)."""
    sock = _connect(url)
    sock.settimeout(0.05)
    started, answer = time.monotonic(), b""
    try:
        sock.sendall(head)
        for i in range(0, len(drip), 2):
            if time.monotonic() - started > seconds:
                break
            try:
                sock.sendall(drip[i:i + 2])
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
            except socket.timeout:
                pass
            except OSError:  # reset: the server closed while we were still sending
                break
            time.sleep(0.1)
        return time.monotonic() - started, answer
    finally:
        sock.close()


def test_slow_headers_are_cut_off_while_others_are_served(server, photos):
    slow: dict[int, tuple[float, bytes]] = {}

    def slowloris(i: int) -> None:
        slow[i] = _drip(server, b"", b"POST /v1/remove HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 400)

    threads = [threading.Thread(target=slowloris, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    served = _post(server, photos[3], "/v1/remove")  # a normal client, while they drip
    for thread in threads:
        thread.join()
    assert served.status_code == 200
    for seconds, answer in slow.values():
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert 1.5 < seconds < 5, seconds  # --header-timeout 2, then closed


def test_slow_body_gets_408_within_the_timeout(strict):
    head = (f"POST /v1/remove HTTP/1.1\r\nHost: x\r\nX-Api-Key: {KEY}\r\nContent-Length: 50000\r\n"
            "Content-Type: multipart/form-data; boundary=abc\r\n\r\n--abc\r\n").encode()
    seconds, answer = _drip(strict, head, b"x" * 1000)
    assert seconds < 3  # --timeout 0.5 covers the upload; before, a trickle was never cut off
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 408") and b"connection: close" in status.lower()
    assert b'"code":"request_timeout"' in body and b"--timeout" in body


def test_connections_over_the_limit_get_503_at_once(strict):
    idle = [_connect(strict) for _ in range(4)]  # --max-connections 4, none sends a byte
    try:
        extra = _connect(strict)
        refused = extra.recv(4096)
        assert refused.startswith(b"HTTP/1.1 503") and b"X-Content-Type-Options: nosniff" in refused
        extra.close()
        for sock in idle:  # --header-timeout 1 frees them
            assert sock.recv(4096).startswith(b"HTTP/1.1 408")
    finally:
        for sock in idle:
            sock.close()
    assert httpx.get(strict + "/healthz").status_code == 200


@pytest.mark.parametrize("model, expected", [("no-such-model", "known models"), ("bad.pth", "not a readable")])
def test_unknown_or_unloadable_model_stops_serve_before_binding_the_port(tmp_path, model, expected):
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with socket.socket() as taken:
        # Holding the port: a server that bound before loading would fail on the address instead.
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        run = subprocess.run([sys.executable, "-m", "clearbg", "serve", "--port", str(taken.getsockname()[1]),
                              "--model", model], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode != 0
    assert model in run.stderr and expected in run.stderr, run.stderr
    assert "address already in use" not in run.stderr.lower()
