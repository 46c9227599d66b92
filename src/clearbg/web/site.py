"""The browser page as a static folder: page files, ``model.onnx``, ``model.json`` and the
onnxruntime-web runtime, copied from ``node_modules`` (installed by ``./setup.sh``; never a CDN).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from clearbg.errors import ClearbgError

PAGE_DIR = Path(__file__).parent / "static"
PAGE_FILES = ("index.html", "app.js", "style.css")
# ort.wasm.bundle.min.mjs has the WebAssembly glue inside (the plain wasm build, no WebGPU/WebGL)
# and loads the one .wasm beside it: the smallest pair that runs the 'wasm' execution provider.
ORT_FILES = ("ort.wasm.bundle.min.mjs", "ort-wasm-simd-threaded.wasm")
REPO_ROOT = Path(__file__).resolve().parents[3]

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".mjs": "text/javascript",
    ".css": "text/css", ".wasm": "application/wasm", ".json": "application/json",
    ".onnx": "application/octet-stream",
}
# Cross-origin isolation lets onnxruntime-web use several threads (~2x faster on two cores).
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}


class WebError(ClearbgError):
    """The browser page cannot be built or served (onnxruntime-web missing, bad output folder)."""


def ort_dist(root: str | Path | None = None) -> Path:
    """The onnxruntime-web ``dist`` folder under ``node_modules``.

    Args:
        root: the folder holding ``node_modules`` (default: the clearbg checkout).

    Returns:
        ``<root>/node_modules/onnxruntime-web/dist``.

    Raises:
        WebError: the folder or one of ``ORT_FILES`` is missing.

    Example:
        >>> ort_dist().name  # doctest: +SKIP
        'dist'
    """
    dist = Path(root or REPO_ROOT) / "node_modules" / "onnxruntime-web" / "dist"
    missing = [name for name in ORT_FILES if not (dist / name).is_file()]
    if missing:
        raise WebError(
            f"onnxruntime-web is not installed ({dist / missing[0]} missing); run ./setup.sh "
            "(or `npm ci` in the clearbg checkout)"
        )
    return dist


def model_json(onnx_path: str | Path) -> dict:
    """What the page needs to feed the model: ``read_metadata`` plus the tensor names.

    Raises:
        ExportError: the file is not a clearbg export.
    """
    from clearbg.inference.onnx_export import INPUT_NAME, OUTPUT_NAME, read_metadata

    meta = read_metadata(onnx_path)
    return {
        "model": meta.model, "input_size": meta.input_size, "mean": list(meta.mean), "std": list(meta.std),
        "resize": meta.preprocess.resize, "pad_color": list(meta.preprocess.pad_color), "variant": meta.variant, "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
    }


def build_site(model: str | Path, out: str | Path, *, node_root: str | Path | None = None) -> Path:
    """Write the browser page as a static folder, ready for any http server.

    Args:
        model: registry name, checkpoint or MLflow URI (exported to fp32 ONNX), or a
            ``.onnx`` file from ``clearbg export`` (copied as is).
        out: the folder to write (created; files in it are replaced).
        node_root: the folder holding ``node_modules`` (default: the clearbg checkout).

    Returns:
        ``out`` as a Path, holding index.html, app.js, style.css, model.onnx, model.json and
        ort/ (the onnxruntime-web files).

    Raises:
        WebError: onnxruntime-web is missing.
        ClearbgError: the model cannot be loaded or exported.

    Example:
        >>> build_site("u2netp", "site")  # doctest: +SKIP
        PosixPath('site')
    """
    from clearbg.inference.onnx_export import export_file

    dist = ort_dist(node_root)
    out = Path(out)
    (out / "ort").mkdir(parents=True, exist_ok=True)
    for name in PAGE_FILES:
        shutil.copyfile(PAGE_DIR / name, out / name)
    for name in ORT_FILES:
        shutil.copyfile(dist / name, out / "ort" / name)
    onnx_path = out / "model.onnx"
    if str(model).endswith(".onnx") and Path(model).is_file():
        shutil.copyfile(model, onnx_path)
    else:
        export_file(model, onnx_path)
    (out / "model.json").write_text(json.dumps(model_json(onnx_path), indent=2) + "\n")
    return out
