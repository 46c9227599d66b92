"""``GET /docs``: Swagger UI for the API, served from ``node_modules`` (no CDN at run time).

FastAPI's own ``/docs`` page loads Swagger UI from a CDN, so it is blank on a machine without
internet. Here the page is FastAPI's, pointed at the ``swagger-ui-dist`` files that
``./setup.sh`` installs from npm (pinned by package-lock.json). Without them, ``/docs`` says how
to install them and lists the endpoints from ``/openapi.json``.
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from clearbg.web.site import MEDIA_TYPES, REPO_ROOT

SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")


def swagger_dist(root: str | Path | None = None) -> Path | None:
    """``<root>/node_modules/swagger-ui-dist`` if it holds ``SWAGGER_FILES``, else None."""
    dist = Path(root or REPO_ROOT) / "node_modules" / "swagger-ui-dist"
    return dist if all((dist / name).is_file() for name in SWAGGER_FILES) else None


def mount_docs(app: FastAPI, *, node_root: str | Path | None = None) -> None:
    """Add ``GET /docs`` and ``GET /docs/static/{name}`` to an app created with ``docs_url=None``.

    Example:
        >>> app = FastAPI(docs_url=None, redoc_url=None); mount_docs(app)  # doctest: +SKIP
    """
    dist = swagger_dist(node_root)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        if dist is None:
            return HTMLResponse(_plain_docs(app))
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} API",
            swagger_js_url="/docs/static/swagger-ui-bundle.js", swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon-32x32.png",
        )

    @app.get("/docs/static/{name}", include_in_schema=False)
    async def docs_file(name: str) -> FileResponse:
        if dist is None or name not in SWAGGER_FILES:
            from fastapi import HTTPException

            raise HTTPException(404, f"no such file: {name}")
        return FileResponse(dist / name, media_type=MEDIA_TYPES.get(Path(name).suffix))


def _plain_docs(app: FastAPI) -> str:
    rows = "".join(
        f"<li><code>{html.escape(method.upper())} {html.escape(path)}</code> {html.escape(op.get('summary', ''))}</li>"
        for path, item in app.openapi()["paths"].items() for method, op in item.items()
    )
    return (f"<!doctype html><title>{html.escape(app.title)} API</title><h1>{html.escape(app.title)} API</h1>"
            "<p>Swagger UI is not installed (run <code>./setup.sh</code>, or <code>npm ci</code> in the clearbg "
            f"checkout). The schema: <a href='{app.openapi_url}'>{app.openapi_url}</a>.</p><ul>{rows}</ul>")
