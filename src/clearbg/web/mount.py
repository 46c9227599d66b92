"""``clearbg serve``'s ``/app/``: the browser page, the served model as ONNX and onnxruntime-web.

The page and the runtime are served from the package and ``node_modules``; ``model.onnx`` is
exported from the server's model on the first request for it (a few seconds) and kept in a
temporary folder for the life of the process.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse, Response

from clearbg.errors import ClearbgError
from clearbg.web.site import ISOLATION_HEADERS, MEDIA_TYPES, ORT_FILES, PAGE_DIR, PAGE_FILES, model_json, ort_dist


def mount_web(app: FastAPI, model: str | Path, *, node_root: str | Path | None = None) -> None:
    """Add ``GET /app/`` (the page) and its files to ``app``.

    Args:
        app: the FastAPI app of ``create_app``.
        model: the server's model (registry name, checkpoint, MLflow URI or clearbg ``.onnx``).
        node_root: the folder holding ``node_modules`` (default: the clearbg checkout).

    Example:
        >>> mount_web(app, "u2netp")  # doctest: +SKIP
    """
    exported: dict[str, Path] = {}
    lock = asyncio.Lock()
    workdir = tempfile.TemporaryDirectory(prefix="clearbg-web-")

    def export() -> None:
        from clearbg.inference.onnx_export import export_file

        onnx_path = Path(workdir.name) / "model.onnx"
        if str(model).endswith(".onnx") and Path(model).is_file():
            onnx_path = Path(model)
        else:
            export_file(model, onnx_path)
        meta_path = Path(workdir.name) / "model.json"
        meta_path.write_text(json.dumps(model_json(onnx_path)))
        exported.update({"model.onnx": onnx_path, "model.json": meta_path})

    async def model_file(name: str) -> Path:
        async with lock:
            if not exported:
                await asyncio.to_thread(export)
        return exported[name]

    @app.get("/app", include_in_schema=False)
    async def app_root():
        return RedirectResponse("/app/")

    @app.get("/app/{name:path}", include_in_schema=False)
    async def app_file(name: str) -> Response:
        name = name or "index.html"
        try:
            if name in PAGE_FILES:
                path = PAGE_DIR / name
            elif name.startswith("ort/") and name[4:] in ORT_FILES:
                path = ort_dist(node_root) / name[4:]
            elif name in ("model.onnx", "model.json"):
                path = await model_file(name)
            else:
                return PlainTextResponse("not found", status_code=404)
        except ClearbgError as err:
            return PlainTextResponse(str(err), status_code=503)
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=ISOLATION_HEADERS)

    app.state.web_workdir = workdir  # keeps the temporary folder alive as long as the app
