"""``clearbg review``: the review page over the queue, as a FastAPI app (an app factory).

A reviewer opens the page, which claims the worst waiting cutout for them (the queue's lease
makes sure nobody else gets it), shows the photo with the mask as an overlay and the cutout on
a checkerboard and on white, and sends back one of three verdicts: accept, reject with a reason,
or a mask repainted at the photo's full resolution (stored as a lossless PNG). The time spent
and the strokes painted go with each verdict, and feed the progress line's pace.

Routes (JSON errors as ``{"error": message}``; item ids are the queue's 32 hex digits):
    ``GET /``, ``GET /static/{name}``   the page and its own script and style (nothing from a CDN)
    ``POST /api/claim``                 the next item for ``{"reviewer": NAME}``, with its claim token
    ``GET /api/items/{id}``             an item (no token)
    ``GET /api/items/{id}/photo|mask|corrected``   its upright photo, predicted mask, corrected mask
    ``POST /api/items/{id}/renew|release``          keep or give back a claim (``X-Claim-Token``)
    ``POST /api/items/{id}/snap``       a stroke snapped to the photo's edges (:mod:`clearbg.review.snap`)
    ``POST /api/items/{id}/accept|reject``          a verdict, ``{"seconds", "strokes", "reason"}``
    ``POST /api/items/{id}/correct``    the repainted mask: width*height bytes, zlib-compressed;
                                        ``X-Seconds`` and ``X-Strokes`` headers
    ``GET /api/progress?reviewer=NAME`` what is left and the reviewer's pace
    ``GET /types``, ``GET /api/types``, ``GET /api/types/photos/{n}/thumb``, ``POST /api/types/move``
                                        with ``--dataset``: product types corrected by hand
    ``GET /healthz``

Files are only ever read through the queue's rows, and only from inside the queue's image
store: an id is 32 hex digits or 404, and a row that points anywhere else (a tampered
database) is refused. See :mod:`clearbg.review.guard` for the bind rule and the token.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import statistics
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Header, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from clearbg import imageio, storage
from clearbg.errors import ClearbgError, LeaseLost, ReviewError, StorageError, printable
from clearbg.review.guard import ReviewGuard, check_bind, is_loopback
from clearbg.review import types
from clearbg.review.feedback import write_feedback
from clearbg.review.queue import DEFAULT_LEASE_S, DEFAULT_QUEUE, Item, ReviewQueue
from clearbg.review.snap import RING_PX, Stroke, snap_stroke

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {"review.js": "text/javascript", "review.css": "text/css", "index.html": "text/html; charset=utf-8",
                "types.html": "text/html; charset=utf-8", "types.js": "text/javascript"}
ITEM_ID = r"^[0-9a-f]{32}$"
PHOTO_CACHE = 8
"""Decoded photos kept in memory: the ones a few reviewers are on (snap reads the pixels per stroke)."""
MAX_STROKE_POINTS = 20_000
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReviewAppSettings:
    """One review server.

    Attributes:
        queue, images: the review queue (``ReviewQueue``'s ``url`` and ``images``).
        feedback: a training-data folder or ``s3://`` prefix kept up to date after every
            decision (:mod:`clearbg.review.feedback`), or None.
        dataset: a prepared, clustered dataset whose product types ``/types`` corrects
            (:mod:`clearbg.review.types`), or None.
        host: the address it is bound to; not loopback needs ``token``.
        token: the access token (see :mod:`clearbg.review.guard`), or None on loopback.
        lease_s: how long a claim lasts without activity (the page renews it while open).
        max_pixels: largest photo decoded for the page.
    """

    queue: str = DEFAULT_QUEUE
    images: str | None = None
    feedback: str | None = None
    dataset: str | None = None
    host: str = "127.0.0.1"
    token: str | None = None
    lease_s: float = DEFAULT_LEASE_S
    max_pixels: int = 100_000_000


class _NotFound(ClearbgError):
    """No such item, or a file the app will not serve."""


class MoveRequest(BaseModel):
    ids: list[str] = Field(min_length=1, max_length=100_000)
    to: str = Field(min_length=1, max_length=200)
    reviewer: str = Field(min_length=1, max_length=100)


class Verdict(BaseModel):
    seconds: float | None = Field(default=None, ge=0, le=7 * 24 * 3600)
    strokes: int | None = Field(default=None, ge=0, le=1_000_000)
    reason: str = Field(default="", max_length=2000)


class ClaimRequest(BaseModel):
    reviewer: str = Field(min_length=1, max_length=100)


class SnapRequest(BaseModel):
    points: list[tuple[float, float]] = Field(min_length=1, max_length=MAX_STROKE_POINTS)
    radius: float
    tool: str
    mask: str = Field(description="the mask in the stroke's box before the stroke: base64 of its bytes, row by row")


def create_app(settings: ReviewAppSettings = ReviewAppSettings()):
    """Build the review app.

    Args:
        settings: the queue, the address it will be bound to and the token.

    Returns:
        An ASGI app for uvicorn (FastAPI inside :class:`~clearbg.review.guard.ReviewGuard`).

    Raises:
        ReviewError: bound beyond loopback without a token, or the queue cannot be opened.

    Example:
        >>> import uvicorn                                                        # doctest: +SKIP
        >>> uvicorn.run(create_app(ReviewAppSettings("review/queue.db")), port=8700)  # doctest: +SKIP
    """
    check_bind(settings.host, settings.token)
    queue = ReviewQueue(settings.queue, images=settings.images, lease_s=settings.lease_s)
    photos = _Photos(queue, settings.max_pixels)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        queue.close()

    app = FastAPI(title="clearbg review", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.queue = queue
    _add_errors(app)
    _add_page(app)
    _add_items(app, queue, photos, _feedback(queue, settings.feedback))
    if settings.dataset is not None:
        _add_types(app, settings.dataset)
    return ReviewGuard(app, token=settings.token, loopback=is_loopback(settings.host))


def _add_errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = first.get("loc", ())
        if where[:1] == ("path",):  # not an item id: there is no such item, whatever it tried to name
            return JSONResponse({"error": "no such item"}, status_code=404)
        text = ".".join(str(part) for part in where) or "request"
        return JSONResponse({"error": f"{text}: {first.get('msg', 'invalid value')}"}, status_code=422)

    @app.exception_handler(ClearbgError)
    async def clearbg_error(request: Request, err: ClearbgError):
        status = 404 if isinstance(err, _NotFound) else 409 if isinstance(err, LeaseLost) else 400 \
            if isinstance(err, ReviewError) else 422
        return JSONResponse({"error": str(err)}, status_code=status)


def _add_page(app: FastAPI) -> None:
    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.get("/")
    def index():
        return FileResponse(STATIC_DIR / "index.html", media_type=STATIC_FILES["index.html"])

    @app.get("/static/{name}")
    def static(name: str):
        # A fixed list, never a path built from the request: nothing else can be named.
        if name not in STATIC_FILES:
            raise _NotFound(f"no static file {name!r}")
        return FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name])


def _feedback(queue: ReviewQueue, out: str | None):
    """What runs after each decision: bring the training-data folder up to date. A failure there
    (a full disk, S3 away) is logged and does not undo the decision: the queue holds it, and the
    next decision or ``clearbg retrain`` writes it."""
    lock = threading.Lock()  # one writer per process: the CSVs are rewritten whole

    def after(item: Item) -> Item:
        if out is not None:
            try:
                with lock:
                    write_feedback(queue, out)
            except ClearbgError as err:
                _log.error("the decision on %s is recorded, but the feedback folder %s was not updated: %s",
                           item.id, printable(out), printable(str(err)))
        return item

    return after


def _add_items(app: FastAPI, queue: ReviewQueue, photos: _Photos, after: Callable[[Item], Item]) -> None:
    item_id = PathParam(pattern=ITEM_ID)

    @app.post("/api/claim")
    def claim(body: ClaimRequest):
        item = queue.claim(body.reviewer.strip())
        return {"item": None if item is None else {**_view(item), "token": item.token}}

    @app.get("/api/items/{id}")
    def get_item(id: str = item_id):
        return _view(_get(queue, id))

    @app.get("/api/items/{id}/photo")
    def photo(id: str = item_id):
        data, media = photos.display(_get(queue, id))
        return Response(data, media_type=media)

    @app.get("/api/items/{id}/mask")
    def mask(id: str = item_id):
        return Response(_read(queue, _get(queue, id).mask), media_type="image/png")

    @app.get("/api/items/{id}/corrected")
    def corrected(id: str = item_id):
        item = _get(queue, id)
        if not item.corrected:
            raise _NotFound(f"{id} has no corrected mask (it is {item.status})")
        return Response(_read(queue, item.corrected), media_type="image/png")

    @app.post("/api/items/{id}/renew")
    def renew(id: str = item_id, token: str = Header(alias="X-Claim-Token")):
        return _view(queue.renew(id, token))

    @app.post("/api/items/{id}/release")
    def release(id: str = item_id, token: str = Header(alias="X-Claim-Token")):
        queue.release(id, token)
        return {"released": id}

    @app.post("/api/items/{id}/snap")
    def snap(body: SnapRequest, id: str = item_id, token: str = Header(alias="X-Claim-Token")):
        item = queue.renew(id, token)  # only the claimant snaps, and a reviewer at work keeps the lease
        stroke = Stroke(tuple(body.points), body.radius, body.tool)
        box = stroke.box(item.width, item.height, RING_PX)
        x0, y0, x1, y1 = box
        if x1 <= x0 or y1 <= y0:
            raise ReviewError("the stroke lies outside the photo")
        try:
            before = np.frombuffer(base64.b64decode(body.mask, validate=True), dtype=np.uint8)
        except ValueError as err:
            raise ReviewError("the stroke's mask is not base64") from err
        if before.size != (x1 - x0) * (y1 - y0):
            raise ReviewError(f"the stroke's mask has {before.size} bytes; its box {list(box)} has "
                              f"{(x1 - x0) * (y1 - y0)} pixels")
        rgb = photos.pixels(item)[y0:y1, x0:x1]
        after = snap_stroke(rgb, before.reshape(y1 - y0, x1 - x0), stroke, box)
        return {"box": list(box), "mask": base64.b64encode(after.tobytes()).decode()}

    @app.post("/api/items/{id}/accept")
    def accept(body: Verdict, id: str = item_id, token: str = Header(alias="X-Claim-Token")):
        return _view(after(queue.complete(id, token, "accept", reason=body.reason, seconds=body.seconds,
                                          strokes=body.strokes)))

    @app.post("/api/items/{id}/reject")
    def reject(body: Verdict, id: str = item_id, token: str = Header(alias="X-Claim-Token")):
        return _view(after(queue.complete(id, token, "reject", reason=body.reason, seconds=body.seconds,
                                          strokes=body.strokes)))

    @app.post("/api/items/{id}/correct")
    async def correct(request: Request, id: str = item_id, token: str = Header(alias="X-Claim-Token"),
                      seconds: float | None = Header(default=None, alias="X-Seconds", ge=0),
                      strokes: int | None = Header(default=None, alias="X-Strokes", ge=0)):
        item = await run_in_threadpool(_get, queue, id)
        size = item.width * item.height
        body = await _body(request, limit=size + size // 100 + 65536)  # deflate never grows data by more
        mask = _inflate(body, item)
        done = await run_in_threadpool(queue.complete, id, token, "correct", mask=mask, seconds=seconds,
                                       strokes=strokes)
        return _view(await run_in_threadpool(after, done))

    @app.get("/api/progress")
    def progress(reviewer: str = Query(default="", max_length=100)):
        stats = queue.stats()
        mine = queue.efforts(reviewer=reviewer) if reviewer else []
        recent = [e.seconds for e in mine[-20:] if e.seconds is not None]
        # The median: one item left open over lunch should not set the pace.
        pace = statistics.median(recent) if recent else None
        remaining = stats.pending + stats.claimed
        return {"remaining": remaining, "waiting": stats.waiting, "in_review": stats.claimed,
                "decided": stats.accepted + stats.rejected + stats.corrected, "yours": len(mine),
                "pace_s": pace, "eta_s": None if pace is None else pace * remaining}


def _add_types(app: FastAPI, dataset: str) -> None:
    @app.get("/types")
    def types_page():
        return FileResponse(STATIC_DIR / "types.html", media_type=STATIC_FILES["types.html"])

    @app.get("/api/types")
    def list_types():
        return types.table(*types.groups(dataset))

    @app.get("/api/types/photos/{index}/thumb")
    def thumb(index: int = PathParam(ge=0)):
        _, frame = types.groups(dataset)
        try:
            return Response(types.thumbnail(dataset, frame, index), media_type="image/jpeg")
        except ReviewError as err:
            raise _NotFound(str(err)) from err

    @app.post("/api/types/move")
    def move(body: MoveRequest):
        return {"moved": types.move(dataset, body.ids, body.to.strip(), body.reviewer)}


def _view(item: Item) -> dict:
    """An item as the page sees it: no claim token, no storage URIs."""
    return {"id": item.id, "source": item.source, "job": item.job, "model": item.model, "score": item.score,
            "threshold": item.threshold, "width": item.width, "height": item.height, "status": item.status,
            "reviewer": item.reviewer, "created": item.created, "decided": item.decided, "reason": item.reason,
            "corrected": item.corrected is not None}


def _get(queue: ReviewQueue, item_id: str) -> Item:
    try:
        return queue.get(item_id)
    except ReviewError as err:
        if not str(err).startswith("no item"):  # the database is away: that is no 404
            raise
        raise _NotFound(str(err)) from err


def _read(queue: ReviewQueue, uri: str) -> bytes:
    """The bytes of one of the queue's images, refusing anything outside its image store."""
    if not inside(queue.images, uri):
        raise _NotFound("that file is not in the review queue's image store")
    try:
        return storage.read_bytes(uri)
    except StorageError as err:
        _log.error("%s", printable(str(err)))  # the store's paths are the operator's business, not the page's
        raise _NotFound("that file is missing from the review queue's image store (the server's log says more)") from err


def inside(root: str, uri: str) -> bool:
    """True when ``uri`` is a file under ``root`` (a folder or ``s3://`` prefix), after resolving
    ``..`` and symbolic links of local paths; an object key with a ``..`` segment is refused.

    Example:
        >>> inside("/srv/q", "/srv/q/ab/photo.jpg"), inside("/srv/q", "/srv/q/../etc/passwd")
        (True, False)
    """
    if storage.is_remote(root) != storage.is_remote(uri) or ".." in uri.replace("\\", "/").split("/"):
        return False
    (scheme, base), (kind, path) = storage.location(root), storage.location(uri)
    return scheme == kind and path.startswith(base.rstrip("/") + "/")


async def _body(request: Request, limit: int) -> bytes:
    if int(request.headers.get("content-length") or 0) > limit:
        raise ReviewError(f"the mask upload is over {limit} bytes, more than a mask of this photo can take")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ReviewError(f"the mask upload is over {limit} bytes, more than a mask of this photo can take")
        chunks.append(chunk)
    return b"".join(chunks)


def _inflate(body: bytes, item: Item) -> np.ndarray:
    """The repainted mask from its zlib stream: exactly width*height bytes, or an error (a stream
    that would inflate further is cut at one byte more, so it cannot balloon in memory)."""
    size = item.width * item.height
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(body, size + 1)
    except zlib.error as err:
        raise ReviewError(f"the corrected mask of {item.id} is not a zlib stream: {err}") from err
    if len(raw) != size or not inflater.eof:
        raise ReviewError(f"the corrected mask of {item.id} must be {item.width}x{item.height} = {size} bytes "
                          f"(one per pixel, row by row); got {len(raw)}{' or more' if len(raw) > size else ''}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(item.height, item.width)


class _Photos:
    """The photos reviewers are on, decoded once: upright pixels for snapping and a display copy
    the browser shows as is (re-encoded upright, so no EXIF turn and any input format works)."""

    def __init__(self, queue: ReviewQueue, max_pixels: int):
        self.queue, self.max_pixels = queue, max_pixels
        self.cache: OrderedDict[str, tuple[np.ndarray, bytes, str]] = OrderedDict()
        self.lock = threading.Lock()

    def _load(self, item: Item) -> tuple[np.ndarray, bytes, str]:
        with self.lock:
            if item.id in self.cache:
                self.cache.move_to_end(item.id)
                return self.cache[item.id]
        image = imageio.open_image(_read(self.queue, item.photo), max_pixels=self.max_pixels, name=item.source)
        if image.size != (item.width, item.height):
            raise ReviewError(f"the photo of {item.id} is {image.width}x{image.height}, its masks "
                              f"{item.width}x{item.height}")
        if image.mode == "RGBA":
            entry = (np.asarray(imageio.flatten(image)), imageio.encode_image(image, "png"), "image/png")
        else:
            entry = (np.asarray(image), imageio.encode_image(image, "jpg", quality=92), "image/jpeg")
        with self.lock:
            self.cache[item.id] = entry
            while len(self.cache) > PHOTO_CACHE:
                self.cache.popitem(last=False)
        return entry

    def pixels(self, item: Item) -> np.ndarray:
        return self._load(item)[0]

    def display(self, item: Item) -> tuple[bytes, str]:
        _, data, media = self._load(item)
        return data, media
