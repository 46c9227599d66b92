"""The HTTP API: a thin FastAPI shell over clearbg's decode, predict and compose.

Endpoints:
    ``POST /v1.0/removebg``  remove.bg-compatible (``image_file``, ``image_file_b64`` or
                             ``image_url`` when enabled,
                             ``size``, ``type``, ``format``, ``crop``, ``crop_margin``,
                             ``bg_color``, ``channels``, ``add_shadow``, ``shadow_type``,
                             ``shadow_opacity``), plus the edge options below.
    ``POST /v1/remove``      plain: ``file`` in, PNG cutout (or mask / colour) out; ``shadow``.
    Both take ``clean``, ``drop_fragments``, ``fill_holes``, ``refine`` (off, guided, matting),
    ``alpha_matting_foreground_threshold``, ``alpha_matting_background_threshold``,
    ``alpha_matting_erode_size`` (rembg's names) and ``decontaminate``.
    ``GET /healthz``         the process is up.       ``GET /readyz``  the model is loaded.
    ``GET /metrics``         JSON counters (requests, batches, largest batch, in flight).
    ``GET /docs``            this page (Swagger UI, served by the server itself); ``/openapi.json``.

When the server has an API key, both removal endpoints and ``/metrics`` need it in ``X-Api-Key``.
Every response carries ``X-Content-Type-Options: nosniff``.
Results carry ``X-Width``, ``X-Height``, ``X-Confidence`` (the model's calibrated confidence: a predicted
IoU, 0-1; absent when the model has no calibration), ``X-Review: true`` when it is under the server's
review threshold (the photo went to the review queue) and ``X-Batch-Size`` (how many requests
shared the model call). Errors are JSON in remove.bg's
shape ``{"errors": [{"title": ..., "code": ...}]}`` with 400 (bad image or parameter),
403 (API key), 408 (the upload did not arrive within the timeout), 413 (body or pixels over the limit),
415 (not an image format we decode), 422 (the result is too large for the output format: WebP
16383 px a side, JPEG 65500), 501 (``refine=matting`` or ``decontaminate`` on a server without
the ``matting`` extra),
503 (busy, model not loaded yet, or the review queue could not take a photo under the review
threshold: ``review_unavailable``) or 504 (over the time limit).

The model loads once per process. ``clearbg serve`` loads it before binding the port, so a
mistyped or broken model stops the process with an error. Given only a model name,
``create_app`` loads it in the background: ``/healthz`` answers at once, ``/readyz`` and the
removal endpoints answer 503 until it is ready.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from clearbg import imageio
from clearbg.errors import ClearbgError, ImageError, ImageTooLarge, OutputTooLarge, printable
from clearbg.models.specs import DEFAULT_MODEL
from clearbg.serve.batching import MicroBatcher
from clearbg.serve.docs import mount_docs
from clearbg.serve.fetch import BlockedAddress, FetchError, fetch_url
from clearbg.serve.limits import DEADLINE, ApiKeyGuard, BodySizeLimit, NoSniff, RequestDeadline, ServeSettings
from clearbg.serve.render import RenderOptions, Rendered, fit_size, render
from clearbg.web.mount import mount_web

if TYPE_CHECKING:  # annotations only; the modules are imported where a Predictor is built
    from clearbg.inference.predictor import Predictor
    from clearbg.quality.gate import QualityGate
    from clearbg.review.gate import ReviewSettings

_log = logging.getLogger(__name__)

_CODES = {400: "invalid_request", 403: "auth_failed", 404: "not_found", 405: "method_not_allowed",
          408: "request_timeout", 413: "file_too_large", 415: "unsupported_media_type", 422: "output_too_large",
          501: "not_installed", 503: "server_busy", 504: "timeout"}


REMOVE_PATHS = ("/v1.0/removebg", "/v1/remove")
KEYED_PATHS = (*REMOVE_PATHS, "/metrics")
"""The endpoints that need the API key when one is set: removal, and the counters (traffic
volume is nobody else's business)."""

_CLEAN_HELP = "Harden near-certain regions and keep a narrow soft band at the edge (no haze of the background)."
_FRAGMENTS_HELP = "With clean: drop separate parts far smaller than the product (strangers, smudges)."
_REFINE_HELP = "Redraw the edge at full resolution: guided filter by the photo, or closed-form alpha matting."
_AF_HELP = "refine=matting: mask level (0-255) above which it is product (rembg's name)."
_AB_HELP = "refine=matting: mask level (0-255) below which it is background (rembg's name)."
_AE_HELP = "refine=matting: pixels both regions shrink by, widening the unknown band (rembg's name)."
_DC_HELP = "Replace the old background's colour in the soft edge by the product's own (no halo on bg_color)."

# remove.bg's foreground types: accepted so its clients work unchanged, not used.
_ForegroundType = Literal[
    "auto", "person", "product", "animal", "car", "car_interior", "car_part", "transportation", "graphics", "other"
]


class ApiError(Exception):
    """An error answered as JSON: status, a human title and a stable machine code."""

    def __init__(self, status: int, title: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(title)
        self.status, self.title, self.code = status, title, code or _CODES.get(status, "error")
        self.headers = headers


@dataclass
class _State:
    settings: ServeSettings
    review: ReviewSettings | None = None
    batcher: MicroBatcher | None = None
    gate: QualityGate | None = None
    # Decode and encode run here, one thread per core: more threads would not add speed on
    # CPU-bound work, and each extra thread grows its own malloc arena (RSS creep under load).
    pixels: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(os.cpu_count() or 2, thread_name_prefix="clearbg-pixels")
    )
    load_error: str | None = None
    in_flight: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"requests": 0, "ok": 0, "errors": 0, "busy": 0, "timeouts": 0})


def create_app(
    settings: ServeSettings = ServeSettings(),
    model: str = DEFAULT_MODEL,
    *,
    device: str | None = None,
    precision: str = "auto",
    engine: str = "auto",
    predictor: Predictor | None = None,
    review: ReviewSettings | None = None,
):
    """Build the ASGI app (FastAPI inside the upload-size guard).

    Args:
        settings: limits, batching and the optional API key.
        model: registry name, checkpoint path, clearbg ``.onnx`` or MLflow URI, loaded once
            when the app starts.
        device, precision, engine: see ``Predictor``.
        predictor: ``model`` already loaded. ``clearbg serve`` loads it before binding the port,
            so a mistyped or broken model stops the process instead of serving 503s; without it
            the model loads in the background and ``/healthz`` answers meanwhile.
        review: the quality gate's options (``clearbg.review.gate``): every answer carries the
            model's confidence when it has a calibration; with a threshold, uploads under it go
            to the review queue and their answers carry ``X-Review: true``.

    Returns:
        An ASGI app for uvicorn: FastAPI inside the body-size guard, the API-key guard when a
        key is set, the request deadline (``--timeout`` from the headers on, upload included)
        and the ``nosniff`` header.

    Example:
        >>> import uvicorn                                                         # doctest: +SKIP
        >>> uvicorn.run(create_app(ServeSettings(api_key="s3cret")), port=8000)   # doctest: +SKIP
    """
    state = _State(settings, review)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if predictor is not None:
            loader = asyncio.create_task(_start_batcher(state, model, predictor))
        else:
            loader = asyncio.create_task(_load(state, model, device, precision, engine))
        yield
        loader.cancel()
        if state.batcher is not None:
            await state.batcher.stop()
        state.pixels.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="clearbg",
        summary="Background removal for product photos.",
        description=__doc__,
        version="1.0",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's page loads Swagger UI from a CDN; mount_docs serves it locally
        redoc_url=None,
    )
    mount_docs(app)
    _add_error_handlers(app, state)
    _add_routes(app, state)
    mount_web(app, model)  # GET /app/: the same model, run in the visitor's browser
    guarded = BodySizeLimit(app, settings.max_upload_bytes)
    if settings.api_key:
        guarded = ApiKeyGuard(guarded, settings.api_key, KEYED_PATHS)
    return NoSniff(RequestDeadline(guarded, settings.timeout_s))


async def _load(state: _State, model: str, device: str | None, precision: str, engine: str) -> None:
    from clearbg.inference.predictor import Predictor

    try:
        predictor = await asyncio.to_thread(Predictor, model, device=device, precision=precision, engine=engine)
    except (ClearbgError, ValueError, OSError) as err:
        state.load_error = f"model {model!r} could not be loaded: {err}"
        _log.error(printable(state.load_error))
        return
    await _start_batcher(state, model, predictor)


async def _start_batcher(state: _State, model: str, predictor: Predictor) -> None:
    from clearbg.review.gate import build_gate

    try:
        state.gate = await asyncio.to_thread(build_gate, predictor, state.review, job="serve")
    except ClearbgError as err:
        state.load_error = f"the quality gate of {model!r} could not be set up: {err}"
        _log.error(printable(state.load_error))
        return
    gate = state.gate

    def predict(images):
        if gate is None:
            return predictor.predict(images)
        return predictor.predict_detailed(images, flip=gate.scorer.flip)

    batcher = MicroBatcher(predict, max_batch=state.settings.max_batch, max_wait_ms=state.settings.max_wait_ms)
    await batcher.start()
    state.batcher = batcher
    _log.info("model %s ready on %s (%s, %s)", model, predictor.device, predictor.engine, predictor.precision)


def _error_response(status: int, title: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"errors": [{"title": title, "code": code}]}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI, state: _State) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return _error_response(err.status, err.title, err.code, err.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        return _error_response(err.status_code, str(err.detail), _CODES.get(err.status_code, "error"), err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
        return _error_response(400, f"{where}: {first.get('msg', 'invalid value')}", "invalid_parameter")


def _add_routes(app: FastAPI, state: _State) -> None:
    image_responses = {
        200: {"content": {"image/png": {}, "image/jpeg": {}, "application/zip": {}}, "description": "The result."},
        **{status: {"description": code} for status, code in _CODES.items() if status not in (404, 405)},
    }

    @app.get("/healthz", tags=["ops"], summary="Liveness")
    async def healthz():
        """The process is up (the model may still be loading)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Readiness: the model is loaded")
    async def readyz():
        """200 once the model is loaded, 503 before (or if it failed to load)."""
        if state.batcher is None:
            raise ApiError(503, state.load_error or "model is loading", "not_ready")
        return {"status": "ready"}

    @app.get("/metrics", tags=["ops"], summary="Counters: requests, batches, in flight")
    async def metrics():
        """Request and batching counters since start (needs ``X-Api-Key`` when the server has a key)."""
        stats = state.batcher.stats if state.batcher else None
        return {
            **state.counts, "in_flight": state.in_flight,
            "batches": stats.batches if stats else 0, "images": stats.images if stats else 0,
            "largest_batch": stats.largest if stats else 0,
        }

    @app.post("/v1.0/removebg", tags=["remove"], responses=image_responses, response_class=Response,
              summary="Remove the background (remove.bg's parameters)")
    async def removebg(
        request: Request,
        image_file: UploadFile | None = File(default=None, description="The photo (JPEG, PNG, WebP, HEIC, ...)."),
        image_file_b64: str | None = Form(default=None, description="The photo, base64-encoded."),
        image_url: str | None = Form(default=None, description="Fetch the photo from a public http(s) URL "
                                     "(only when the server runs with --allow-url)."),
        size: Literal["auto", "preview", "small", "regular", "medium", "hd", "full", "4k", "50mp"] = Form("auto"),
        type: _ForegroundType = Form("auto", description="Accepted for compatibility; one model serves all."),
        format: Literal["auto", "png", "jpg", "zip", "webp"] = Form("auto"),
        crop: bool = Form(False, description="Trim empty background around the product."),
        crop_margin: str = Form("0", description="Margin after crop: 30px, 10%, or 2/4 values."),
        bg_color: str | None = Form(None, description="Hex (81d4fa, #fff) or white/black/grey."),
        channels: Literal["rgba", "alpha"] = Form("rgba"),
        add_shadow: bool = Form(False, description="A soft shadow under the product."),
        shadow_type: Literal["contact", "drop"] = Form("contact", description="contact: on the floor at its "
                                                       "base; drop: its silhouette offset down-right."),
        shadow_opacity: int = Form(50, ge=0, le=100, description="Shadow darkness, 0-100."),
        clean: bool = Form(True, description=_CLEAN_HELP),
        drop_fragments: bool = Form(False, description=_FRAGMENTS_HELP),
        fill_holes: bool = Form(False, description="With clean: fill pin holes in the product."),
        refine: Literal["off", "guided", "matting"] = Form("off", description=_REFINE_HELP),
        alpha_matting_foreground_threshold: int = Form(240, ge=0, le=255, description=_AF_HELP),
        alpha_matting_background_threshold: int = Form(10, ge=0, le=255, description=_AB_HELP),
        alpha_matting_erode_size: int = Form(10, ge=0, le=1000, description=_AE_HELP),
        decontaminate: bool = Form(False, description=_DC_HELP),
    ):
        """Remove the background, remove.bg style."""
        source = "upload"
        if image_url and image_file is None and not image_file_b64:
            data, source = await _fetch(state, image_url), image_url
        else:
            data = await _upload_bytes(image_file, image_file_b64)
        options = _parse_options(
            size=size, crop=crop, crop_margin=crop_margin, bg_color=bg_color, channels=channels, format=format,
            add_shadow=add_shadow, shadow_type=shadow_type, shadow_opacity=shadow_opacity, clean=clean,
            drop_fragments=drop_fragments, fill_holes=fill_holes, refine=refine,
            alpha_matting_foreground_threshold=alpha_matting_foreground_threshold,
            alpha_matting_background_threshold=alpha_matting_background_threshold,
            alpha_matting_erode_size=alpha_matting_erode_size, decontaminate=decontaminate)
        return await _process(state, data, options, request.scope[DEADLINE], source)

    @app.post("/v1/remove", tags=["remove"], responses=image_responses, response_class=Response,
              summary="Remove the background: photo in, PNG cutout out")
    async def remove(
        request: Request,
        file: UploadFile = File(description="The photo."),
        format: Literal["png", "jpg", "webp"] = Form("png"),
        mask: bool = Form(False, description="Return the 8-bit mask instead of a cutout."),
        bg_color: str | None = Form(None, description="Solid background, e.g. #ffffff."),
        shadow: Literal["none", "contact", "drop"] = Form("none", description="A soft shadow under the product."),
        clean: bool = Form(True, description=_CLEAN_HELP),
        drop_fragments: bool = Form(False, description=_FRAGMENTS_HELP),
        fill_holes: bool = Form(False, description="With clean: fill pin holes in the product."),
        refine: Literal["off", "guided", "matting"] = Form("off", description=_REFINE_HELP),
        alpha_matting_foreground_threshold: int = Form(240, ge=0, le=255, description=_AF_HELP),
        alpha_matting_background_threshold: int = Form(10, ge=0, le=255, description=_AB_HELP),
        alpha_matting_erode_size: int = Form(10, ge=0, le=1000, description=_AE_HELP),
        decontaminate: bool = Form(False, description=_DC_HELP),
    ):
        """Remove the background: PNG cutout by default."""
        data = await _upload_bytes(file, None)
        options = _parse_options(
            bg_color=bg_color, channels="alpha" if mask else "rgba", format=format, add_shadow=shadow != "none",
            shadow_type="contact" if shadow == "none" else shadow, clean=clean, drop_fragments=drop_fragments,
            fill_holes=fill_holes, refine=refine,
            alpha_matting_foreground_threshold=alpha_matting_foreground_threshold,
            alpha_matting_background_threshold=alpha_matting_background_threshold,
            alpha_matting_erode_size=alpha_matting_erode_size, decontaminate=decontaminate)
        return await _process(state, data, options, request.scope[DEADLINE])


def _parse_options(**values) -> RenderOptions:
    """``RenderOptions.parse`` with its refusals as API errors."""
    try:
        return RenderOptions.parse(**values)
    except ValueError as err:
        raise ApiError(400, str(err), "invalid_parameter") from err
    except ImportError as err:  # refine=matting / decontaminate where PyMatting is not installed
        raise ApiError(501, str(err), "not_installed") from err


async def _fetch(state: _State, url: str) -> bytes:
    if not state.settings.allow_url:
        raise ApiError(400, "URL fetching is off on this server; upload image_file instead", "url_fetch_disabled")
    try:
        return await run_in_threadpool(fetch_url, url, max_bytes=state.settings.max_upload_bytes,
                                       timeout=min(10.0, state.settings.timeout_s))
    except BlockedAddress as err:
        raise ApiError(400, str(err), "url_blocked") from err
    except FetchError as err:
        raise ApiError(400, str(err), "url_fetch_failed") from err


async def _upload_bytes(upload: UploadFile | None, b64: str | None) -> bytes:
    if upload is not None:
        data = await upload.read()
    elif b64:
        try:
            data = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as err:
            raise ApiError(400, "image_file_b64 is not valid base64", "invalid_parameter") from err
    else:
        raise ApiError(400, "No image given: send image_file (multipart) or image_file_b64", "missing_image")
    if not data:
        raise ApiError(400, "The uploaded image is empty", "invalid_image")
    return data


async def _process(state: _State, data: bytes, options: RenderOptions, deadline: float,
                   source: str = "upload") -> Response:
    state.counts["requests"] += 1
    if state.batcher is None:
        raise ApiError(503, state.load_error or "model is loading; retry shortly", "not_ready", {"Retry-After": "5"})
    if state.in_flight >= state.settings.max_concurrency:
        state.counts["busy"] += 1
        raise ApiError(503, f"Server busy ({state.in_flight} requests in flight); retry shortly", "server_busy",
                       {"Retry-After": "1"})
    state.in_flight += 1
    try:
        # What the upload left of --timeout (RequestDeadline started the clock at the headers).
        left = max(deadline - time.monotonic(), 0.0)
        rendered, score, review, batch = await asyncio.wait_for(_work(state, data, options, source), left)
    except TimeoutError:
        state.counts["timeouts"] += 1
        raise ApiError(504, f"Request took over {state.settings.timeout_s:g} s", "timeout") from None
    except ApiError:
        state.counts["errors"] += 1
        raise
    finally:
        state.in_flight -= 1
    state.counts["ok"] += 1
    headers = {"X-Width": str(rendered.width), "X-Height": str(rendered.height), "X-Batch-Size": str(batch)}
    if score is not None:
        headers["X-Confidence"] = f"{score:.4f}"
    if review:
        headers["X-Review"] = "true"
    return Response(rendered.body, media_type=rendered.media_type, headers=headers)


async def _work(state: _State, data: bytes, options: RenderOptions,
                source: str) -> tuple[Rendered, float | None, bool, int]:
    loop = asyncio.get_running_loop()
    image, size = await loop.run_in_executor(state.pixels, _decode, data, state.settings.max_pixels, options)
    predicted, batch = await state.batcher.predict(image)
    gate = state.gate

    def finish() -> tuple[Rendered, float | None, bool]:
        prob = predicted if gate is None else predicted.prob
        try:
            rendered = render(image, prob, options)
        except OutputTooLarge as err:  # a crop margin made it larger than the photo
            raise _too_large_for_format(err) from err
        if gate is None:
            return rendered, None, False
        try:
            # Before answering: a photo the client got back as doubtful is in the queue.
            score, review = gate.judge(predicted, source=source, image=image, data=data, size=size)
        except ClearbgError as err:
            raise ApiError(503, f"the result could not be sent to review: {err}", "review_unavailable",
                           {"Retry-After": "5"}) from err
        return rendered, score, review

    rendered, score, review = await loop.run_in_executor(state.pixels, finish)
    return rendered, score, review, batch


def _decode(data: bytes, max_pixels: int, options: RenderOptions) -> tuple[Image.Image, tuple[int, int]]:
    try:
        image = imageio.open_image(data, max_pixels=max_pixels, name="upload")
    except ImageTooLarge as err:
        raise ApiError(413, str(err), "image_too_large") from err
    except ImageError as err:
        if isinstance(err.__cause__, UnidentifiedImageError):
            raise ApiError(415, str(err), "unsupported_media_type") from err
        raise ApiError(400, str(err), "invalid_image") from err
    size = image.size  # the photo's own: what review gets its mask at
    image = fit_size(image, options.size)
    if not options.crop:  # the size of a crop is known only after the model; render checks it then
        try:
            for fmt in options.encodings():
                imageio.check_encodable(image.size, fmt, "upload")
        except OutputTooLarge as err:
            raise _too_large_for_format(err) from err
    return image, size


def _too_large_for_format(err: OutputTooLarge) -> ApiError:
    return ApiError(422, str(err), "output_too_large")
