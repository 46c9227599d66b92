"""Where the review queue keeps its rows: one SQLite file by default, any SQLAlchemy URL for a
shared deployment (PostgreSQL).

The schema is three tables: ``items`` (one row per photo sent to review), ``effort`` (how long each
decision took and how many strokes) and ``meta`` (the queue's own settings, e.g. where its images
live, so a queue opened by its URL alone finds them). A queue made before ``effort`` existed gets
the table when it is opened (``create_all`` adds missing tables). Time
comes from the database's clock, never from the reviewers' machines, so leases hold however far
their clocks drift apart.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

from clearbg.errors import ReviewError

SCHEMA_VERSION = "1"

metadata = sa.MetaData()

items = sa.Table(
    "review_items", metadata,
    sa.Column("id", sa.String(64), primary_key=True),        # sha256 of (source, photo bytes, model)
    sa.Column("created", sa.Float, nullable=False),           # seconds since the epoch, database clock
    sa.Column("source", sa.Text, nullable=False),             # the photo's URI, "upload" over HTTP
    sa.Column("job", sa.Text, nullable=False),                # what sent it: "batch DST", "remove DIR", "serve"
    sa.Column("output", sa.Text, nullable=False),             # where its cutout was written ("" over HTTP)
    sa.Column("model", sa.Text, nullable=False),              # the model version that made the mask
    sa.Column("score", sa.Float, nullable=False),             # its confidence (predicted IoU)
    sa.Column("threshold", sa.Float, nullable=True),          # the gate's threshold at the time
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("photo", sa.Text, nullable=False),              # image keys, relative to the image root
    sa.Column("mask", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),       # pending|claimed|accepted|rejected|corrected
    sa.Column("reviewer", sa.Text, nullable=True),
    sa.Column("token", sa.String(64), nullable=True),         # the current claim's secret
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Column("claims", sa.Integer, nullable=False, default=0),
    sa.Column("decided", sa.Float, nullable=True),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("corrected", sa.Text, nullable=True),           # key of the corrected mask (PNG)
    sa.Index("review_items_queue", "status", "score", "created"),
)

effort = sa.Table(
    "review_effort", metadata,
    sa.Column("item", sa.String(64), primary_key=True),      # review_items.id; an item is decided once
    sa.Column("reviewer", sa.Text, nullable=False),
    sa.Column("decided", sa.Float, nullable=False),           # database clock, as review_items.decided
    sa.Column("seconds", sa.Float, nullable=True),            # time the reviewer spent on it (their page's count)
    sa.Column("strokes", sa.Integer, nullable=True),          # brush and eraser strokes painted
    sa.Index("review_effort_reviewer", "reviewer", "decided"),
)

meta = sa.Table(
    "review_meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


def database_url(url: str) -> str:
    """A SQLAlchemy URL for ``url``: a URL as it is, a plain path as a SQLite file.

    Example:
        >>> database_url("postgresql://clearbg@db/review")
        'postgresql://clearbg@db/review'
        >>> database_url("/srv/review/queue.db")
        'sqlite:////srv/review/queue.db'
    """
    if "://" in url:
        if url.startswith(("postgresql://", "postgres://")) and "+" not in url.split("://", 1)[0]:
            return "postgresql+psycopg://" + url.split("://", 1)[1]  # psycopg 3, not the psycopg2 default
        return url
    return f"sqlite:///{os.path.abspath(url)}"


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and for in-memory SQLite)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def open_engine(url: str) -> sa.Engine:
    """An engine for the queue's database, its tables created if missing.

    SQLite runs in WAL mode with full fsync: a ``kill -9`` (or a power cut) at any moment leaves
    every committed row in place, and readers never block the one writer. Writers wait up to
    30 s for each other instead of failing.

    Raises:
        ReviewError: the database cannot be reached or created; the message names it.
    """
    full = database_url(url)
    path = sqlite_path(full)
    kwargs: dict = {}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    try:
        engine = sa.create_engine(full, **kwargs)
    except (sa.exc.ArgumentError, ImportError) as err:
        raise ReviewError(f"cannot open the review queue {url!r}: {err}; give a file path (SQLite) or a "
                          "database URL such as postgresql://user@host/db") from err
    if path is not None:
        @sa.event.listens_for(engine, "connect")
        def _pragmas(connection, _record) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            if conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema")).scalar() is None:
                insert_ignore(conn, meta, {"key": "schema", "value": SCHEMA_VERSION})
    except sa.exc.SQLAlchemyError as err:
        engine.dispose()
        raise ReviewError(f"cannot open the review queue {url!r}: {err.__class__.__name__}: "
                          f"{str(err).splitlines()[0]}") from err
    return engine


def now(conn: sa.Connection) -> sa.ColumnElement:
    """The database's current time in seconds since the epoch, as a SQL expression."""
    if conn.dialect.name == "sqlite":
        return (sa.func.julianday("now") - 2440587.5) * 86400.0
    if conn.dialect.name == "postgresql":
        return sa.cast(sa.func.extract("epoch", sa.func.clock_timestamp()), sa.Float)
    raise ReviewError(f"the review queue supports SQLite and PostgreSQL, not {conn.dialect.name}")


def insert_ignore(conn: sa.Connection, table: sa.Table, row: dict) -> bool:
    """Insert ``row`` unless its primary key is there already; True when it was inserted.

    One statement, so two processes inserting the same row at once cannot both succeed.
    """
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    key = list(table.primary_key.columns)
    # RETURNING, not rowcount: drivers do not all report a count for INSERT.
    return conn.execute(insert(table).values(**row).on_conflict_do_nothing().returning(*key)).first() is not None

