"""The in-browser page: built as a static folder, run in Debian's Chromium (Playwright), its
mask compared with Python ONNX Runtime on the same input; plus ``clearbg serve``'s ``/app/``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from clearbg.cli import cli
from clearbg.evaluate.metrics import confusion_counts, iou_from_counts
from clearbg.web.site import ISOLATION_HEADERS, MEDIA_TYPES, WebError, ort_dist

@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """``clearbg web build --model u2netp`` into a temporary folder."""
    out = tmp_path_factory.mktemp("web") / "site"
    result = CliRunner().invoke(cli, ["web", "build", "--model", "u2netp", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with the page's MIME types and cross-origin isolation (as /app/ sends)."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MEDIA_TYPES}

    def end_headers(self) -> None:
        for key, value in ISOLATION_HEADERS.items():
            self.send_header(key, value)
        super().end_headers()

    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass


@contextlib.contextmanager
def _serving(folder: Path):
    """A static http server for ``folder`` on a free loopback port; yields its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def site_url(site):
    with _serving(site) as url:
        yield url


def _python_ort_mask(onnx_path: Path, rgb: np.ndarray, meta: dict) -> np.ndarray:
    """Predictor's normalisation + min-max stretch around Python ONNX Runtime."""
    import onnxruntime as ort
    import torch

    from clearbg.models.preprocess import Preprocess

    contract = Preprocess(size=rgb.shape[0], mean=tuple(meta["mean"]), std=tuple(meta["std"]))
    x = contract.normalise(torch.from_numpy(rgb[None]).permute(0, 3, 1, 2)).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    prob = session.run(["mask"], {"image": x})[0][0, 0]
    return (prob - prob.min()) / max(prob.max() - prob.min(), 1e-8)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(iou_from_counts(confusion_counts((a >= 0.5)[None], (b >= 0.5)[None]))[0])


def test_page_in_chromium_matches_python_onnxruntime(chromium, site, site_url, tiny_pairs, tmp_path):
    import json

    from PIL import Image

    from clearbg.models.preprocess import Preprocess

    meta = json.loads((site / "model.json").read_text())
    photo_path = next(row["image"] for row in tiny_pairs if row["domain"] == "fashion")
    page = chromium.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    try:
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(site_url)
        page.wait_for_function("['ready', 'error'].includes(document.body.dataset.state)", timeout=20_000)
        assert page.get_attribute("body", "data-state") == "ready", page.inner_text("#status")
        page.set_input_files("#file", photo_path)
        page.wait_for_function("['done', 'error'].includes(document.body.dataset.state)", timeout=20_000)
        assert page.get_attribute("body", "data-state") == "done", page.inner_text("#status")
        last = page.evaluate("window.clearbgLast")
        shown_ms = float(page.get_attribute("#time", "data-ms"))
        time_text = page.inner_text("#time")
        # Drag and drop: the same photo dropped on the zone gives the same mask.
        page.evaluate("document.body.dataset.state = 'dropping'")
        page.dispatch_event("#drop", "drop", {"dataTransfer": page.evaluate_handle(
            """async (b64) => {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const transfer = new DataTransfer();
                transfer.items.add(new File([bytes], 'dropped.jpg', { type: 'image/jpeg' }));
                return transfer;
            }""", base64.b64encode(Path(photo_path).read_bytes()).decode())})
        page.wait_for_function("['done', 'error'].includes(document.body.dataset.state)", timeout=20_000)
        assert "dropped.jpg" in page.inner_text("#status")
        assert page.evaluate("window.clearbgLast.mask")[::997] == last["mask"][::997]
        with page.expect_download() as download:
            page.click("#download")
        png = tmp_path / "cutout.png"
        download.value.save_as(png)
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        print(f"\nbrowser: {time_text}; screenshot {tmp_path / 'page.png'}")
    finally:
        page.close()
    assert not errors

    size = meta["input_size"]
    browser_input = np.array(last["input"], dtype=np.uint8).reshape(size, size, 3)
    browser_mask = np.array(last["mask"], dtype=np.float32).reshape(size, size)
    # Same 320x320 input through Python ONNX Runtime: the JS normalisation and post-processing
    # must match Predictor's.
    python_mask = _python_ort_mask(site / "model.onnx", browser_input, meta)
    print(f"IoU vs Python ORT {_iou(browser_mask, python_mask):.5f}, max diff {np.abs(browser_mask - python_mask).max():.2e}")
    assert _iou(browser_mask, python_mask) >= 0.99
    assert np.abs(browser_mask - python_mask).max() < 0.02
    # The browser's resize is not PIL's, but the mask must still agree with clearbg's own pipeline.
    photo = Image.open(photo_path)
    pil_mask = _python_ort_mask(site / "model.onnx", Preprocess(size=size).to_array(photo), meta)
    print(f"IoU vs PIL-resized input {_iou(browser_mask, pil_mask):.4f}")
    assert _iou(browser_mask, pil_mask) >= 0.95

    assert 0 < shown_ms < 20_000 and "ms per image" in time_text
    cutout = Image.open(png)
    assert cutout.mode == "RGBA" and cutout.size == photo.size == (last["width"], last["height"])
    alpha = np.asarray(cutout)[..., 3]
    assert alpha.min() == 0 and alpha.max() == 255  # real transparency, not a flat image


def test_serve_mounts_the_page_under_app(site):
    from clearbg.serve.app import create_app

    # The lifespan (model loading) is not started: /app/ needs only the files and the export.
    client = TestClient(create_app(model=str(site / "model.onnx")))
    assert client.get("/app", follow_redirects=False).headers["location"] == "/app/"
    page = client.get("/app/")
    assert page.status_code == 200 and 'src="app.js"' in page.text
    assert page.headers["cross-origin-embedder-policy"] == "require-corp"
    runtime = client.get("/app/ort/ort.wasm.bundle.min.mjs")
    assert runtime.status_code == 200 and runtime.headers["content-type"].startswith("text/javascript")
    assert client.get("/app/ort/ort-wasm-simd-threaded.wasm").headers["content-type"] == "application/wasm"
    assert client.get("/app/model.json").json()["input_size"] == 320
    assert client.get("/app/model.onnx").content == (site / "model.onnx").read_bytes()
    # Only the page's own files: no other node_modules file, no path tricks.
    assert client.get("/app/ort/ort.min.js").status_code == 404
    assert client.get("/app/ort/%2E%2E/package.json").status_code == 404


def test_missing_onnxruntime_web_says_run_setup(tmp_path):
    """Without node_modules the build fails with what to do, before exporting anything."""
    from clearbg.web.site import build_site

    with pytest.raises(WebError, match=r"run \./setup\.sh"):
        ort_dist(tmp_path)
    with pytest.raises(WebError, match="onnxruntime-web is not installed"):
        build_site("u2netp", tmp_path / "site", node_root=tmp_path)
    assert not (tmp_path / "site").exists()


def test_int8_export_runs_in_the_browser(chromium, tiny_pairs, tmp_path):
    """`clearbg export --int8` (opset 21: one conv keeps 16-bit weights) loads and runs in
    onnxruntime-web, giving Python ONNX Runtime's mask for the same file."""
    import json

    from PIL import Image

    from clearbg.inference.onnx_export import export_onnx, save_onnx
    from clearbg.models import create_model, get_spec
    from clearbg.web.site import build_site

    photos = [row["image"] for row in tiny_pairs if row["domain"] == "fashion"]
    calibration = [Image.open(path).convert("RGB") for path in photos[1:3]]
    int8 = save_onnx(export_onnx(create_model("u2netp"), get_spec("u2netp"), precision="int8",
                                 calibration=calibration), tmp_path / "int8.onnx")
    site = build_site(int8, tmp_path / "site")
    meta = json.loads((site / "model.json").read_text())
    page = chromium.new_page()
    try:
        with _serving(site) as url:
            page.goto(url)
            page.wait_for_function("['ready', 'error'].includes(document.body.dataset.state)", timeout=20_000)
            page.set_input_files("#file", photos[0])
            page.wait_for_function("['done', 'error'].includes(document.body.dataset.state)", timeout=20_000)
            assert page.get_attribute("body", "data-state") == "done", page.inner_text("#status")
            last = page.evaluate("window.clearbgLast")
    finally:
        page.close()
    size = meta["input_size"]
    browser_mask = np.array(last["mask"], dtype=np.float32).reshape(size, size)
    browser_input = np.array(last["input"], dtype=np.uint8).reshape(size, size, 3)
    assert _iou(browser_mask, _python_ort_mask(int8, browser_input, meta)) >= 0.99


_ALPHA_JS = """() => {
    const c = document.getElementById('on-checker');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let s = '';
    for (let i = 3; i < d.length; i += 4) s += String.fromCharCode(d[i]);
    return btoa(s);
}"""


def test_page_cleans_edges_by_default_and_adds_a_shadow_on_request(chromium, site_url, tiny_pairs):
    photo_path = next(row["image"] for row in tiny_pairs if row["domain"] == "fashion")
    page = chromium.new_page(viewport={"width": 1100, "height": 900})
    try:
        page.goto(site_url)
        page.wait_for_function("document.body.dataset.state === 'ready'", timeout=20_000)
        page.set_input_files("#file", photo_path)
        page.wait_for_function("['done', 'error'].includes(document.body.dataset.state)", timeout=20_000)
        assert page.get_attribute("body", "data-state") == "done", page.inner_text("#status")

        def alpha() -> np.ndarray:
            return np.frombuffer(base64.b64decode(page.evaluate(_ALPHA_JS)), np.uint8)

        cleaned = alpha()
        page.uncheck("#clean")
        raw = alpha()
        page.check("#clean")
        page.check("#shadow")
        shaded = alpha()
    finally:
        page.close()

    def soft(a: np.ndarray) -> int:
        return int(np.count_nonzero((a > 0) & (a < 255)))

    assert soft(cleaned) < 0.7 * soft(raw)  # a narrower soft edge, no haze far from it ...
    assert np.mean((cleaned > 127) == (raw > 127)) > 0.999  # ... around the same outline
    assert np.count_nonzero(shaded) > np.count_nonzero(cleaned) + 1000  # the shadow beside the product
