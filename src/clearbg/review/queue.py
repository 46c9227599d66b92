"""The review queue: cutouts the quality gate doubts wait here for a person.

A photo whose confidence is under the gate's threshold is *enqueued* with its photo, its
predicted mask, its score and the model version that made it. A reviewer *claims* the next item
(the lowest score first) and holds it under a lease; *complete* records the verdict: accept,
reject (with a reason) or a corrected mask (stored as a lossless PNG). A reviewer who goes away
loses the item when the lease runs out, and the next claim hands it to someone else.

Rows live in a database (:mod:`clearbg.review.store`: one SQLite file by default, PostgreSQL for
a shared deployment); images live in a folder or an ``s3://`` prefix, written atomically before
their row, so a row never points at a missing file, whatever moment a process is killed at.
Enqueuing is idempotent: an item's id is a hash of its source, its photo's bytes and the model
version, so running the same batch again adds nothing.

Example:
    >>> queue = ReviewQueue("review/queue.db")                                   # doctest: +SKIP
    >>> item, added = queue.enqueue(photo_bytes, prob, score=0.81, model="u2netp.official@309c8469",
    ...                             source="photos/a.jpg")                      # doctest: +SKIP
    >>> claim = queue.claim("ana")                                              # doctest: +SKIP
    >>> queue.complete(claim.id, claim.token, "reject", reason="sleeve missing")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import hashlib
import io
import secrets
from dataclasses import asdict, dataclass, fields
from typing import Iterator

import numpy as np
import sqlalchemy as sa
from PIL import Image

from clearbg import storage
from clearbg.errors import ImageError, LeaseLost, ReviewError
from clearbg.imageio import encode_image
from clearbg.inference.compose import alpha_from_prob
from clearbg.review import DEFAULT_QUEUE, store
from clearbg.review.store import items as T

DEFAULT_LEASE_S = 600.0
"""Ten minutes: long enough to repaint a mask, short enough that a closed laptop costs little."""

PENDING, CLAIMED = "pending", "claimed"
DECISIONS = {"accept": "accepted", "reject": "rejected", "correct": "corrected"}
STATUSES = (PENDING, CLAIMED, *DECISIONS.values())
_SUFFIXES = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif",
             "HEIF": "heic", "AVIF": "avif"}


@dataclass(frozen=True)
class Item:
    """One photo in the queue.

    Attributes:
        id: stable id (a hash of source, photo bytes and model version).
        created: when it was enqueued (seconds since the epoch).
        source: the photo's URI (``upload`` for an HTTP request).
        job: what sent it (``batch DST``, ``remove DIR``, ``serve``).
        output: where its cutout was written ("" when it was answered over HTTP).
        model: the model version that made the mask; score: its confidence; threshold: the gate's.
        width, height: the photo's upright size (the masks' size).
        photo, mask: URIs of the photo (its original bytes) and the predicted mask (8-bit PNG).
        status: ``pending``, ``claimed``, ``accepted``, ``rejected`` or ``corrected``.
        reviewer, lease_until, claims: who holds or held it, until when, how often it was claimed.
        decided, reason, corrected: when it was completed, the reject reason, the corrected
            mask's URI (a PNG of the photo's size).
        token: the claim's secret, set only on the item ``claim`` returns; ``complete`` needs it.
    """

    id: str
    created: float
    source: str
    job: str
    output: str
    model: str
    score: float
    threshold: float | None
    width: int
    height: int
    photo: str
    mask: str
    status: str
    reviewer: str | None = None
    lease_until: float | None = None
    claims: int = 0
    decided: float | None = None
    reason: str = ""
    corrected: str | None = None
    token: str | None = None


@dataclass(frozen=True)
class Effort:
    """What one decision cost: who made it, when, the seconds spent and the strokes painted
    (None where the reviewer's tool did not say)."""

    item: str
    reviewer: str
    decided: float
    seconds: float | None
    strokes: int | None


@dataclass(frozen=True)
class QueueStats:
    """Counts by status; ``waiting`` = pending plus claims whose lease ran out (claimable now)."""

    pending: int
    claimed: int
    accepted: int
    rejected: int
    corrected: int
    waiting: int
    oldest_waiting: float | None

    @property
    def total(self) -> int:
        return self.pending + self.claimed + self.accepted + self.rejected + self.corrected


EXPORT_COLUMNS = tuple(f.name for f in fields(Item) if f.name != "token")


class ReviewQueue:
    """A durable queue of cutouts waiting for review.

    Args:
        url: a SQLite file (``review/queue.db``, the default) or a database URL
            (``postgresql://user@host/db``; ``sqlite:///path``).
        images: folder or ``s3://`` prefix for the photos and masks. Default: what the queue
            was created with (kept in the database), else ``<file>-images/`` beside a SQLite
            file. A server database needs it the first time.
        lease_s: how long a claim lasts before the item goes back to the queue.

    Raises:
        ReviewError: the database cannot be opened, or no image location is known.
    """

    def __init__(self, url: str = DEFAULT_QUEUE, *, images: str | None = None, lease_s: float = DEFAULT_LEASE_S):
        if lease_s <= 0:
            raise ReviewError(f"lease_s must be positive, got {lease_s}")
        self.url, self.lease_s = url, float(lease_s)
        self.engine = store.open_engine(url)
        self.images = self._image_root(images)

    def _image_root(self, images: str | None) -> str:
        with self.engine.begin() as conn:
            kept = conn.execute(sa.select(store.meta.c.value).where(store.meta.c.key == "images")).scalar()
            if images is None and kept is None:
                path = store.sqlite_path(store.database_url(self.url))
                if path is None:
                    raise ReviewError(f"the review queue {self.url} has no image location yet: give one "
                                      "(images=... or --queue-images), a folder or s3:// prefix every reviewer can read")
                images = str(path.with_name(f"{path.stem}-images"))
            if kept is None:
                store.insert_ignore(conn, store.meta, {"key": "images", "value": images})
            return images or kept

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    def __enter__(self) -> ReviewQueue:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------------- producers

    def enqueue(self, photo: bytes, mask: np.ndarray | Image.Image, *, score: float, model: str,
                source: str = "upload", job: str = "", output: str = "",
                threshold: float | None = None) -> tuple[Item, bool]:
        """Add a photo and its predicted mask, unless it is there already.

        Args:
            photo: the photo's original bytes (stored as they are).
            mask: the predicted mask at the photo's upright size: a probability map (float
                0..1), an 8-bit array or a mode-L image.
            score, model, threshold: its confidence, the model version, the gate's threshold.
            source, job, output: where it came from, what sent it, where its cutout went.

        Returns:
            (the item, True if it was added now; False if it was already queued, whatever its
            status: a rerun never enqueues twice).

        Raises:
            ReviewError: the images or the row could not be written.
        """
        item_id = item_key(source, photo, model)
        found = self._row(item_id)
        if found is not None:
            return found, False
        alpha = _mask_image(mask)
        folder = f"{item_id[:2]}/{item_id}"
        photo_key, mask_key = f"{folder}/photo.{_suffix(photo)}", f"{folder}/mask.png"
        self._write(photo_key, photo)
        self._write(mask_key, encode_image(alpha, "png"))
        row = {"id": item_id, "source": source, "job": job, "output": output, "model": model,
               "score": float(score), "threshold": None if threshold is None else float(threshold),
               "width": alpha.width, "height": alpha.height, "photo": photo_key, "mask": mask_key,
               "status": PENDING, "claims": 0, "reason": ""}
        with self._begin() as conn:
            added = store.insert_ignore(conn, T, {**row, "created": conn.execute(sa.select(store.now(conn))).scalar()})
        return self.get(item_id), added

    # ----------------------------------------------------------------------- reviewers

    def claim(self, reviewer: str, *, lease_s: float | None = None) -> Item | None:
        """Hand the next item (lowest score first) to ``reviewer`` alone, under a lease.

        Claimable are pending items and claimed ones whose lease ran out. Each candidate is
        taken with one compare-and-set UPDATE, so two reviewers (threads, processes, machines)
        racing for it never both get it; the loser moves on to the next.

        Returns:
            The item with its ``token`` set (``complete``, ``renew`` and ``release`` need it),
            or None when nothing waits.
        """
        lease = self.lease_s if lease_s is None else float(lease_s)
        token = secrets.token_hex(16)
        while True:
            with self._begin() as conn:
                candidates = conn.execute(
                    sa.select(T.c.id).where(_claimable(conn)).order_by(T.c.score, T.c.created, T.c.id).limit(16)
                ).scalars().all()
            if not candidates:
                return None
            for item_id in candidates:
                with self._begin() as conn:
                    now = store.now(conn)
                    taken = conn.execute(
                        sa.update(T).where(T.c.id == item_id, _claimable(conn)).values(
                            status=CLAIMED, reviewer=reviewer, token=token, lease_until=now + lease,
                            claims=T.c.claims + 1)
                    ).rowcount
                if taken == 1:
                    claimed = self.get(item_id)
                    return Item(**{**asdict(claimed), "token": token})

    def renew(self, item_id: str, token: str, *, lease_s: float | None = None) -> Item:
        """Extend a claim's lease from now (a reviewer still at work).

        Raises:
            LeaseLost: the claim is no longer this token's.
        """
        lease = self.lease_s if lease_s is None else float(lease_s)
        with self._begin() as conn:
            done = conn.execute(sa.update(T).where(T.c.id == item_id, T.c.token == token, T.c.status == CLAIMED)
                                .values(lease_until=store.now(conn) + lease)).rowcount
        if done != 1:
            raise self._lost(item_id)
        return self.get(item_id)

    def release(self, item_id: str, token: str) -> None:
        """Give a claimed item back to the queue at once (the reviewer skips it).

        Raises:
            LeaseLost: the claim is no longer this token's.
        """
        with self._begin() as conn:
            done = conn.execute(sa.update(T).where(T.c.id == item_id, T.c.token == token, T.c.status == CLAIMED)
                                .values(status=PENDING, token=None, lease_until=None)).rowcount
        if done != 1:
            raise self._lost(item_id)

    def complete(self, item_id: str, token: str, decision: str, *, reason: str = "",
                 mask: np.ndarray | Image.Image | bytes | None = None, seconds: float | None = None,
                 strokes: int | None = None) -> Item:
        """Record a reviewer's verdict on a claimed item.

        Args:
            item_id, token: from ``claim``.
            decision: ``accept`` (the cutout is fine), ``reject`` (unusable; ``reason`` says
                why) or ``correct`` (``mask`` is the right one).
            reason: required for ``reject``, kept for the others.
            mask: for ``correct``: the photo's size, a mode-L/1 image, a (H, W) uint8/bool
                array or encoded image bytes; stored as an 8-bit PNG, value for value.
            seconds, strokes: the reviewer's effort on it, recorded with the decision (``efforts``).

        Returns:
            The completed item.

        Raises:
            ReviewError: an unknown decision, a reject without reason, a correction without a
                mask or of the wrong size.
            LeaseLost: the lease ran out and another reviewer claimed the item meanwhile (a
                claim whose lease ran out but that nobody took over still completes).
        """
        if decision not in DECISIONS:
            raise ReviewError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
        if decision == "reject" and not reason.strip():
            raise ReviewError(f"rejecting {item_id} needs a reason (what is wrong with the cutout)")
        if (decision == "correct") != (mask is not None):
            raise ReviewError(f"{item_id}: a corrected mask goes with decision 'correct', and only with it")
        current = self.get(item_id)
        corrected = None
        if mask is not None:
            image = _corrected_image(mask, item_id)
            if image.size != (current.width, current.height):
                raise ReviewError(f"the corrected mask of {item_id} is {image.width}x{image.height}, but its photo is "
                                  f"{current.width}x{current.height}; send a mask of the photo's size")
            # Named after the claim: a reviewer who lost the item cannot overwrite the winner's mask.
            corrected = f"{item_id[:2]}/{item_id}/corrected-{token[:16]}.png"
            self._write(corrected, encode_image(image, "png"))
        if seconds is not None and not (np.isfinite(seconds) and seconds >= 0):
            raise ReviewError(f"seconds spent on {item_id} must be a non-negative number, got {seconds}")
        if strokes is not None and strokes < 0:
            raise ReviewError(f"strokes on {item_id} must be a non-negative count, got {strokes}")
        with self._begin() as conn:
            done = conn.execute(sa.update(T).where(T.c.id == item_id, T.c.token == token, T.c.status == CLAIMED)
                                .values(status=DECISIONS[decision], decided=store.now(conn), reason=reason.strip(),
                                        corrected=corrected, token=None, lease_until=None)).rowcount
            if done == 1:  # in the same transaction: a decision is never recorded without its effort
                row = conn.execute(sa.select(T.c.reviewer, T.c.decided).where(T.c.id == item_id)).one()
                conn.execute(sa.insert(store.effort).values(
                    item=item_id, reviewer=row.reviewer, decided=row.decided,
                    seconds=None if seconds is None else float(seconds), strokes=None if strokes is None else int(strokes)))
        if done != 1:
            raise self._lost(item_id)
        return self.get(item_id)

    # ----------------------------------------------------------------------- reading

    def get(self, item_id: str) -> Item:
        """One item by id (its ``token`` is never shown).

        Raises:
            ReviewError: no such item.
        """
        found = self._row(item_id)
        if found is None:
            raise ReviewError(f"no item {item_id!r} in the review queue {self.url}")
        return found

    def items(self, status: str | None = None, *, limit: int | None = None, offset: int = 0) -> Iterator[Item]:
        """Items, lowest score first (the order reviewers get them), optionally of one status.

        Raises:
            ReviewError: an unknown status.
        """
        query = sa.select(T).order_by(T.c.score, T.c.created, T.c.id).offset(offset)
        if status is not None:
            if status not in STATUSES:
                raise ReviewError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
            query = query.where(T.c.status == status)
        if limit is not None:
            query = query.limit(limit)
        with self._begin() as conn:
            rows = conn.execute(query).mappings().all()
        for row in rows:
            yield self._item(row)

    def stats(self) -> QueueStats:
        """Counts by status, how many wait (claimable now) and since when."""
        with self._begin() as conn:
            counts = dict(conn.execute(sa.select(T.c.status, sa.func.count()).group_by(T.c.status)).all())
            waiting, oldest = conn.execute(
                sa.select(sa.func.count(), sa.func.min(T.c.created)).where(_claimable(conn))).one()
        return QueueStats(**{s: int(counts.get(s, 0)) for s in STATUSES}, waiting=int(waiting),
                          oldest_waiting=oldest)

    def efforts(self, *, reviewer: str | None = None, since: float | None = None) -> list[Effort]:
        """The effort recorded with each decision (oldest first), optionally one reviewer's or
        since a time (seconds since the epoch, the database's clock)."""
        query = sa.select(store.effort).order_by(store.effort.c.decided)
        if reviewer is not None:
            query = query.where(store.effort.c.reviewer == reviewer)
        if since is not None:
            query = query.where(store.effort.c.decided >= since)
        with self._begin() as conn:
            return [Effort(**row) for row in conn.execute(query).mappings()]

    def read(self, uri: str) -> bytes:
        """The bytes of one of an item's images (``item.photo``, ``item.mask``, ``item.corrected``)."""
        return storage.read_bytes(uri)

    def export_csv(self, out: str, status: str | None = None) -> int:
        """Write every item (or those of one status) as CSV to a file or ``s3://`` key, atomically.

        Returns:
            The number of rows written.
        """
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        count = 0
        for item in self.items(status):
            writer.writerow({k: v for k, v in asdict(item).items() if k != "token"})
            count += 1
        storage.write_bytes(out, buffer.getvalue().encode())
        return count

    # ----------------------------------------------------------------------- internals

    def _begin(self):
        try:
            return self.engine.begin()
        except sa.exc.SQLAlchemyError as err:
            raise ReviewError(f"the review queue {self.url} cannot be reached: {str(err).splitlines()[0]}") from err

    def _row(self, item_id: str) -> Item | None:
        with self._begin() as conn:
            row = conn.execute(sa.select(T).where(T.c.id == item_id)).mappings().first()
        return None if row is None else self._item(row)

    def _item(self, row) -> Item:
        values = {k: row[k] for k in EXPORT_COLUMNS}
        for key in ("photo", "mask", "corrected"):
            if values[key]:
                values[key] = storage.join(self.images, values[key])
        return Item(**values)

    def _write(self, key: str, data: bytes) -> None:
        storage.write_bytes(storage.join(self.images, key), data)

    def _lost(self, item_id: str) -> ReviewError:
        current = self.get(item_id)
        if current.status == CLAIMED:
            return LeaseLost(f"{item_id} is no longer yours: its lease ran out and {current.reviewer} claimed it; "
                             "claim another item")
        return LeaseLost(f"{item_id} is not claimed by you (it is {current.status}); claim an item first")


def item_key(source: str, photo: bytes, model: str) -> str:
    """The id of a photo in the queue: the same source, bytes and model give the same id.

    Example:
        >>> item_key("a.jpg", b"x", "u2netp") == item_key("a.jpg", b"x", "u2netp")
        True
    """
    digest = hashlib.sha256()
    for part in (source.encode(), model.encode()):
        digest.update(len(part).to_bytes(8, "big") + part)
    digest.update(photo)
    return digest.hexdigest()[:32]


def _claimable(conn: sa.Connection) -> sa.ColumnElement:
    return sa.or_(T.c.status == PENDING, sa.and_(T.c.status == CLAIMED, T.c.lease_until < store.now(conn)))


def _suffix(photo: bytes) -> str:
    try:
        with Image.open(io.BytesIO(photo)) as image:
            return _SUFFIXES.get(image.format or "", (image.format or "bin").lower())
    except Exception:  # noqa: BLE001 - a format Pillow cannot sniff is still stored, as .bin
        return "bin"


def _mask_image(mask: np.ndarray | Image.Image) -> Image.Image:
    if isinstance(mask, Image.Image):
        return mask.convert("L")
    if mask.dtype == np.uint8:
        return Image.fromarray(mask, mode="L")
    return alpha_from_prob(np.clip(mask, 0.0, 1.0))


def _corrected_image(mask: np.ndarray | Image.Image | bytes, item_id: str) -> Image.Image:
    if isinstance(mask, (bytes, bytearray)):
        from clearbg.data.clean import decode_mask  # pulls in pandas: only where a mask comes encoded

        try:
            mask = decode_mask(bytes(mask), name=f"the corrected mask of {item_id}")
        except ImageError as err:
            raise ReviewError(str(err)) from err
    if isinstance(mask, np.ndarray):
        if mask.ndim != 2 or mask.dtype not in (np.uint8, np.bool_):
            raise ReviewError(f"a corrected mask must be (H, W) uint8 or bool, got {mask.dtype} {mask.shape}")
        mask = Image.fromarray(mask.astype(np.uint8) * (255 if mask.dtype == np.bool_ else 1), mode="L")
    if mask.mode in ("RGB", "RGBA", "LA", "P"):
        raise ReviewError(f"a corrected mask must be greyscale (mode L or 1), got a {mask.mode} image for {item_id}")
    return mask.convert("L")
