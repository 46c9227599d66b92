"""``clearbg prepare``: photo/mask pairs in, a clean, resized dataset with a manifest out.

The source (a folder, an s3:// prefix or a CSV) is only read. Each pair is checked, resized to
every training size and written by a pool of worker processes; a journal of finished pairs is
flushed every few seconds, so an interrupted run picks up where it stopped. Checks that need
the whole set (duplicates, masks that belong to another photo) run at the end, on the
statistics in the journal, so they cost no second pass over the images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from clearbg import storage
from clearbg.data.clean import CleanOptions, check_pair, find_duplicates, find_mismatched
from clearbg.data.manifest import (
    EXCLUDED,
    DatasetError,
    size_dir,
    write_info,
    write_manifest,
    write_table_csv,
)
from clearbg.data.pairs import Pair, find_pairs, resolve_layout
from clearbg.data.resize import ResizeMode, resize_pair

__all__ = ["JOURNAL_DIR", "PrepareConfig", "PrepareReport", "prepare_dataset", "split_for"]

JOURNAL_DIR = ".prepare"
SPLITS = ("train", "val", "test")
_FLUSH_EVERY_S = 10.0
_FLUSH_EVERY_N = 500


@dataclass
class PrepareConfig:
    """How ``prepare`` turns a source into a dataset. Defaults suit U2-Net training."""

    sizes: list[tuple[int, int]] = field(default_factory=lambda: [(320, 320)])  # (width, height) each
    layout: str = "auto"                   # source layout: auto, folders, carvana, csv
    resize: ResizeMode = "stretch"         # stretch: fill the size, as the models see photos; pad: keep aspect, centre
    pad_color: tuple[int, int, int] = (255, 255, 255)  # photo padding (the mask pads with background)
    soft_masks: bool = False               # keep grey mask values (anti-aliased edges) when resizing
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train/val/test, when the source has no split
    resplit: bool = False                  # ignore the source's split column: split every pair by ``split``
    clean: CleanOptions = field(default_factory=CleanOptions)

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PrepareConfig:
        data = dict(data)
        data["clean"] = CleanOptions(**data.get("clean", {}))
        data["sizes"] = [tuple(s) for s in data["sizes"]]
        data["pad_color"] = tuple(data["pad_color"])
        data["split"] = tuple(data["split"])
        return cls(**data)


@dataclass
class PrepareReport:
    """What a ``prepare`` run did."""

    out: str
    kept: int
    excluded: dict[str, int]    # reason -> number of pairs
    processed: int              # pairs checked and written in this run
    resumed: int                # pairs found finished in the journal of an earlier run
    seconds: float

    @property
    def pairs_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds else 0.0


def split_for(pair_id: str, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> str:
    """A stable split from the id alone: the same pair lands in the same split on every run
    and machine, and adding pairs never moves old ones.

    Example:
        >>> split_for("ccp_0001") == split_for("ccp_0001")
        True
    """
    digest = hashlib.sha1(pair_id.encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name, share in zip(SPLITS, fractions, strict=True):
        edge += share
        if position < edge:
            return name
    return SPLITS[-1]


def prepare_dataset(
    source: str,
    out: str,
    config: PrepareConfig | None = None,
    *,
    workers: int | None = None,
    restart: bool = False,
    progress: bool | None = None,
) -> PrepareReport:
    """Check, clean and resize every pair of ``source`` into the dataset folder ``out``.

    Args:
        source: A folder or s3:// prefix (``images/`` + ``masks/``, or Carvana-style
            ``NAME.jpg`` + ``NAME_mask.gif``), or a CSV with ``image`` and ``mask`` columns.
        out: The dataset folder (local or s3://). Gets ``manifest.parquet``, ``excluded.csv``,
            ``dataset.json``, ``report.html`` and ``<W>x<H>/{images,masks}/<id>.png``.
        config: Sizes, resize mode, cleaning options; defaults suit U2-Net at 320 px.
        workers: Processes that decode and resize (default: all cores).
        restart: Forget an earlier, interrupted run into ``out`` instead of resuming it.
        progress: Show a progress bar (default: when stderr is a terminal).

    Returns:
        A :class:`PrepareReport` with counts per exclusion reason and the speed.

    Raises:
        DatasetError: ``out`` holds a run with other options (use ``restart``), the source
            has no pairs at all, or every pair was excluded (``excluded.csv`` is still written).
        StorageError: Writing failed (e.g. a full disk); finished pairs stay in the journal.

    Example:
        >>> report = prepare_dataset("../shared/data/fashion/manifest.csv", "data/fashion-320")  # doctest: +SKIP
        >>> report.kept, report.excluded  # doctest: +SKIP
        (693, {'near_duplicate': 9})
    """
    config = config or PrepareConfig()
    started = time.monotonic()
    journal = _Journal(out)
    journal.open(source, config, restart=restart)
    records = journal.records
    resumed = len(records)
    seen_this_run: set[str] = set()
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(desc="prepare", unit="pair", disable=not show, initial=resumed)

    def handle(record: dict[str, Any]) -> None:
        journal.add(record)
        bar.update(1)

    job = _Job(out=out, config=config)
    workers = workers or os.cpu_count() or 1
    processed = 0
    try:
        with _pool(workers) as pool:
            pending: set[Future] = set()
            for pair in find_pairs(source, layout=config.layout):
                if pair.id in seen_this_run:
                    handle(_record(pair, "duplicate", f"another pair in the source also has the id {pair.id!r}"))
                    continue
                seen_this_run.add(pair.id)
                if pair.id in records:
                    continue
                processed += 1
                if pool is None:
                    handle(_prepare_one(pair, job))
                    continue
                pending.add(pool.submit(_prepare_one, pair, job))
                if len(pending) >= 4 * workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        handle(future.result())
            for future in pending:
                handle(future.result())
    finally:
        bar.close()
        journal.flush()

    if not records:
        raise DatasetError(f"no photo/mask pairs found in {source} (layout {config.layout})")
    kept, excluded = _finish(records, config)
    if kept.empty:
        # No dataset to write, but the list of what was dropped and why is what the user needs.
        write_table_csv(excluded, storage.join(out, EXCLUDED))
        raise DatasetError(_nothing_kept(source, out, config, excluded))
    _write_outputs(out, source, config, kept, excluded)
    return PrepareReport(
        out=out,
        kept=len(kept),
        excluded=dict(Counter(excluded["reason"])),
        processed=processed,
        resumed=resumed,
        seconds=time.monotonic() - started,
    )


# --------------------------------------------------------------------------- one pair (in a worker)


@dataclass(frozen=True)
class _Job:
    out: str
    config: PrepareConfig


def _record(pair: Pair, reason: str | None, detail: str = "", **fields: Any) -> dict[str, Any]:
    return {
        **{f"x_{k}": v for k, v in pair.extra.items()},
        "id": pair.id,
        "src_image": _absolute(pair.image),
        "src_mask": _absolute(pair.mask),
        "reason": reason,
        "detail": detail,
        **fields,
    }


def _absolute(uri: str | None) -> str:
    """Local paths made absolute, so the manifest stays valid from any working directory."""
    if not uri:
        return ""
    return uri if storage.is_remote(uri) else os.path.abspath(uri)


def _prepare_one(pair: Pair, job: _Job) -> dict[str, Any]:
    """Check one pair and, when it is good, write it at every size. Runs in a worker process."""
    config = job.config
    check = check_pair(pair, config.clean)
    stats = {k: _plain(v) for k, v in check.stats.items()}
    if check.reason is not None:
        return _record(pair, check.reason, check.detail, notes="; ".join(check.notes), **stats)
    mask = check.soft_mask if (config.soft_masks and check.soft_mask is not None) else check.mask
    for width, height in config.sizes:
        photo, small_mask = resize_pair(
            check.photo, mask, (width, height), mode=config.resize, pad_color=config.pad_color, soft=config.soft_masks
        )
        folder = storage.join(job.out, size_dir(width, height))
        storage.write_bytes(storage.join(folder, "images", f"{pair.id}.png"), _png(photo, "RGB"))
        storage.write_bytes(storage.join(folder, "masks", f"{pair.id}.png"), _png(small_mask, "L"))
    return _record(pair, None, "", notes="; ".join(check.notes), **stats)


def _png(array: np.ndarray, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so records are JSON."""
    return value.item() if isinstance(value, np.generic) else value


class _InlinePool:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _pool(workers: int):
    if workers <= 1:
        return _InlinePool()
    # spawn, not fork: the parent may hold s3fs's event-loop thread, which fork would copy broken.
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))


# --------------------------------------------------------------------------- the journal


class _Journal:
    """Finished pairs, flushed as numbered JSON-lines parts under ``out/.prepare/run-<id>/``.

    Parts (rather than one appended file) work the same on local disks and object stores,
    and each is written atomically: a crash loses at most the pairs since the last flush,
    which a rerun simply does again. A restart starts a new run folder, so parts of the old
    run can never leak into the new one.
    """

    def __init__(self, out: str) -> None:
        self.out = out
        self.root = storage.join(out, JOURNAL_DIR)
        self.records: dict[str, dict[str, Any]] = {}
        self._buffer: list[dict[str, Any]] = []
        self._next_part = 0
        self._last_flush = time.monotonic()
        self.folder = ""

    def open(self, source: str, config: PrepareConfig, *, restart: bool) -> None:
        options_uri = storage.join(self.root, "options.json")
        wanted = {"source": source, "config": config.to_json()}
        earlier = json.loads(storage.read_bytes(options_uri)) if storage.exists(options_uri) else None
        if earlier is not None and not restart:
            run = earlier.pop("run")
            if earlier != wanted:
                raise DatasetError(
                    f"{self.out} was prepared from another source or with other options "
                    f"({_changes(earlier, wanted)}); rerun with --restart to prepare it again from scratch, "
                    "or choose another --out folder"
                )
            self.folder = storage.join(self.root, f"run-{run}")
            parts = _list_names(self.folder, "part-")
            for name in parts:
                for line in storage.read_bytes(storage.join(self.folder, name)).decode().splitlines():
                    if line.strip():
                        record = json.loads(line)
                        self.records[record["id"]] = record
            self._next_part = len(parts)
            return
        if earlier is not None:
            _remove_tree(storage.join(self.root, f"run-{earlier['run']}"))
        run = uuid.uuid4().hex[:12]
        self.folder = storage.join(self.root, f"run-{run}")
        storage.write_bytes(options_uri, json.dumps({**wanted, "run": run}, sort_keys=True).encode())

    def add(self, record: dict[str, Any]) -> None:
        self.records[record["id"]] = record
        self._buffer.append(record)
        if len(self._buffer) >= _FLUSH_EVERY_N or time.monotonic() - self._last_flush > _FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self._buffer)
        storage.write_bytes(storage.join(self.folder, f"part-{self._next_part:06d}.jsonl"), lines.encode())
        self._next_part += 1
        self._buffer = []


def _changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``"resize 'pad' -> 'stretch', clean.mask_threshold 128 -> 100"``: only what differs, so the
    user sees at a glance which option (or the source) changed instead of two full dumps."""
    old_flat, new_flat = _flatten(old), _flatten(new)
    keys = sorted(set(old_flat) | set(new_flat), key=lambda k: (k != "source", k))
    return ", ".join(
        f"{k} {json.dumps(old_flat.get(k))} -> {json.dumps(new_flat.get(k))}"
        for k in keys if old_flat.get(k) != new_flat.get(k)
    )


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    # "config." is dropped: the options are what the user typed, the nesting is ours.
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}" if key != "config" else ""
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}." if name else ""))
        else:
            flat[name] = value
    return flat


def _list_names(folder: str, prefix: str) -> list[str]:
    """Sorted names (not paths) in ``folder`` that start with ``prefix``; [] if it is absent."""
    fs, path = storage.get_filesystem(folder)
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    names = (e.rstrip("/").rsplit("/", 1)[-1] for e in entries)
    return sorted(n for n in names if n.startswith(prefix))


def _remove_tree(folder: str) -> None:
    fs, path = storage.get_filesystem(folder)
    try:
        fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------- whole-set checks and outputs

_OWN_COLUMNS = (
    "id", "image", "mask", "src_image", "src_mask", "src_width", "src_height", "fg_fraction", "split",
)


def _finish(records: dict[str, dict[str, Any]], config: PrepareConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the whole-set checks on the journal and split it into kept and excluded rows."""
    frame = pd.DataFrame(list(records.values())).sort_values("id", kind="stable").reset_index(drop=True)
    good = frame["reason"].isna()
    drops: dict[str, tuple[str, str]] = {}
    if good.any():
        drops.update(find_duplicates(frame[good], config.clean))
        still_good = good & ~frame["id"].isin(drops)
        if still_good.any():
            drops.update(find_mismatched(frame[still_good], config.clean))
    for pair_id, (reason, detail) in drops.items():
        row = frame["id"] == pair_id
        frame.loc[row, "reason"] = reason
        frame.loc[row, "detail"] = detail

    excluded = frame[frame["reason"].notna()]
    excluded = pd.DataFrame(
        {
            "id": excluded["id"],
            "image": excluded["src_image"],
            "mask": excluded["src_mask"],
            "reason": excluded["reason"],
            "detail": excluded["detail"],
        }
    ).sort_values(["reason", "id"], kind="stable")

    kept = frame[frame["reason"].isna()].copy()
    if kept.empty:  # the columns below come from good pairs only; with none, there is nothing to select
        return pd.DataFrame(columns=list(_OWN_COLUMNS)), excluded.reset_index(drop=True)
    kept["image"] = "images/" + kept["id"] + ".png"
    kept["mask"] = "masks/" + kept["id"] + ".png"
    given = kept["x_split"] if "x_split" in kept else pd.Series(None, index=kept.index, dtype=object)
    kept["split"] = [
        g if g in SPLITS and not config.resplit else split_for(i, config.split)
        for g, i in zip(given, kept["id"], strict=True)
    ]
    stats = [c for c in ("notes", "sha256", "phash", "edge_score") if c in kept]
    extras = {c: c[2:] for c in kept.columns if c.startswith("x_") and c[2:] not in _OWN_COLUMNS + tuple(stats)}
    kept = kept[list(_OWN_COLUMNS) + stats + list(extras)].rename(columns=extras)
    return kept.reset_index(drop=True), excluded.reset_index(drop=True)


def _nothing_kept(source: str, out: str, config: PrepareConfig, excluded: pd.DataFrame) -> str:
    counts = ", ".join(f"{reason} {n}" for reason, n in sorted(Counter(excluded["reason"]).items()))
    message = (f"no pair of {source} was kept: all {len(excluded)} excluded ({counts}); "
               f"{storage.join(out, EXCLUDED)} lists each pair and why")
    if resolve_layout(source, config.layout) == "csv":
        local = source.removeprefix("file://")
        base = source.rsplit("/", 1)[0] if storage.is_remote(source) else os.path.dirname(os.path.abspath(local))
        message += (f". Relative paths in a CSV are read from the CSV's own folder ({base}), "
                    "not from the current directory: fix the paths, or use absolute paths or URIs")
    return message


def _write_outputs(out: str, source: str, config: PrepareConfig, kept: pd.DataFrame, excluded: pd.DataFrame) -> None:
    from clearbg.data.prepare_report import write_prepare_report

    write_table_csv(excluded, storage.join(out, EXCLUDED))
    info = {
        "source": source,
        "sizes": [list(s) for s in config.sizes],
        "config": config.to_json(),
        "counts": {
            "pairs": int(len(kept) + len(excluded)),
            "kept": int(len(kept)),
            "excluded": {k: int(v) for k, v in Counter(excluded["reason"]).items()},
            "splits": {k: int(v) for k, v in Counter(kept["split"]).items()},
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_info(out, info)
    write_prepare_report(out, kept, excluded, info)
    # The manifest goes last: its presence means the dataset is complete.
    write_manifest(kept, out)
