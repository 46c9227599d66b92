"""Find (photo, mask) pairs in a folder, an s3:// prefix or a CSV manifest, streaming.

Three layouts (``layout=``):

``folders``
    ``SOURCE/images/**`` and ``SOURCE/masks/**``; a photo and a mask pair up when their paths
    relative to ``images/`` and ``masks/`` are equal without the suffix, so
    ``images/shoes/a.jpg`` pairs ``masks/shoes/a.png`` as id ``"shoes/a"``. Other folder names
    and a mask-name suffix are keyword arguments (Kaggle Carvana: ``images_dir="train",
    masks_dir="train_masks", mask_suffix="_mask"``).
``carvana``
    ``NAME.jpg`` next to ``NAME_mask.gif`` (or ``_mask.png``, any image suffix) in the same
    folder, anywhere under SOURCE; the id is ``NAME`` with its folders (``"cars/0cdf_01"``).
``csv``
    A manifest with columns ``image`` and ``mask``: paths relative to the CSV's folder, absolute
    paths or URIs. An ``id`` column is optional (default: the image's stem, else the mask's);
    every other column is passed along in :attr:`Pair.extra` as a string.

``auto`` picks ``csv`` when SOURCE ends in ``.csv``; ``folders`` when ``SOURCE/images`` exists
(or Kaggle's ``SOURCE/train`` + ``SOURCE/train_masks``); else ``carvana`` when a ``*_mask.*``
file is among the first :data:`AUTO_PEEK` images under SOURCE; else it raises.

Nothing is listed up front. :func:`clearbg.storage.iter_images` walks each tree one directory
level at a time in sorted order, and the photo and mask walks are merge-joined in step: only
names still waiting for their partner are held, and a name is given up as unmatched as soon as
the other walk has gone past every place its partner could be. Memory therefore stays at a
directory's worth of names, not the whole bucket's.

Name clashes never lose a file. When two photos (or two masks) share a key (``images/a.jpg`` and
``images/a.png``), the first in walk order is paired and the second comes out on its own, with
its relpath *with* suffix as id (``"a.png"``; ``"a.gif~mask"`` for a mask), no partner, and
``extra["duplicate_of"] = "a"``;
cleaning then reports it as missing its mask and names the clash. In a CSV a repeated id gets
``~2``, ``~3``, ... appended and ``extra["duplicate_of"]`` likewise.

Example:
    >>> for pair in find_pairs("../shared/data/fashion"):  # doctest: +SKIP
    ...     print(pair.id, pair.image, pair.mask)
    ccp_0001 ../shared/data/fashion/images/ccp_0001.jpg ../shared/data/fashion/masks/ccp_0001.png
"""

from __future__ import annotations

import codecs
import csv
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain, islice

from clearbg import storage
from clearbg.data.manifest import DatasetError
from clearbg.errors import StorageError
from clearbg.storage import ImageRef

__all__ = ["AUTO_PEEK", "LAYOUTS", "Pair", "find_pairs", "resolve_layout"]

LAYOUTS = ("auto", "folders", "carvana", "csv")

#: How many images ``layout="auto"`` looks at for a ``*_mask.*`` name before giving up.
AUTO_PEEK = 1000

_IMAGE, _MASK = 0, 1
_SIDE_NAME = ("image", "mask")


@dataclass(frozen=True)
class Pair:
    """One photo and its mask, as found in the source (nothing is read or checked yet).

    Attributes:
        id: Unique name of the pair: the path relative to the layout's root without suffix,
            ``"/"``-joined (``"ccp_0001"``, ``"shoes/a"``), or the CSV's ``id``.
        image: Path or URI of the photo; ``None`` when only a mask was found.
        mask: Path or URI of the mask; ``None`` when only a photo was found.
        extra: More columns of a CSV source (``product_type``, ``split``, ...) as strings, and
            ``duplicate_of`` for the loser of a name clash (see the module docstring).
    """

    id: str
    image: str | None
    mask: str | None
    extra: dict[str, str] = field(default_factory=dict, hash=False, compare=True)


def resolve_layout(source: str, layout: str = "auto") -> str:
    """The concrete layout ``find_pairs`` uses for ``source``.

    Args:
        source: a local folder, an ``s3://`` prefix, or a ``.csv`` manifest (local or remote).
        layout: one of :data:`LAYOUTS`.

    Returns:
        ``"folders"``, ``"carvana"`` or ``"csv"``.

    Raises:
        ValueError: ``layout`` is not one of :data:`LAYOUTS`.
        DatasetError: ``auto`` cannot tell the layout.
        StorageError: ``source`` does not exist or cannot be listed.

    Example:
        >>> resolve_layout("../shared/data/fashion")  # doctest: +SKIP
        'folders'
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; use one of: {', '.join(LAYOUTS)}")
    if layout != "auto":
        return layout
    if source.lower().endswith(".csv"):
        return "csv"
    if not storage.exists(source):
        raise StorageError(f"no such folder or prefix: {source}")
    if storage.exists(storage.join(source, "images")) or _kaggle_layout(source):
        return "folders"
    if any(_is_mask_name(ref.stem, "_mask") for ref in islice(storage.iter_images([source]), AUTO_PEEK)):
        return "carvana"
    raise DatasetError(
        f"cannot tell the layout of {source}: there is no images/ folder (with masks/ beside it) "
        f"and none of its first {AUTO_PEEK} images is named *_mask.*; arrange it as "
        f"images/ + masks/, NAME.jpg + NAME_mask.png, or pass a CSV manifest with image and mask "
        f"columns (layout='csv')"
    )


def find_pairs(
    source: str,
    layout: str = "auto",
    *,
    images_dir: str | None = None,
    masks_dir: str | None = None,
    mask_suffix: str | None = None,
) -> Iterator[Pair]:
    """Stream the (photo, mask) pairs of ``source``; unmatched files come out half-empty.

    Args:
        source: a local folder, an ``s3://`` prefix, or a ``.csv`` manifest (local or remote).
        layout: ``"auto"``, ``"folders"``, ``"carvana"`` or ``"csv"`` (see the module docstring).
        images_dir: ``folders`` only: the photo folder under ``source`` (default ``"images"``,
            or ``"train"`` for a detected Kaggle Carvana layout).
        masks_dir: ``folders`` only: the mask folder (default ``"masks"`` / ``"train_masks"``).
        mask_suffix: ``folders``: what mask stems end with beyond the photo's stem (default
            ``""``; ``"_mask"`` for Kaggle Carvana). ``carvana``: default ``"_mask"``.

    Yields:
        :class:`Pair` objects, each id once. A photo without a mask has ``mask=None``, a mask
        without a photo ``image=None``. Order follows the walk, not sorted.

    Raises:
        ValueError: ``layout`` is unknown.
        DatasetError: the layout cannot be detected, the ``folders`` layout lacks its masks
            folder, or a CSV lacks its ``image``/``mask`` columns.
        StorageError: ``source`` does not exist or cannot be listed or read.

    Example:
        >>> pairs = list(find_pairs("s3://shop/train/", layout="folders"))  # doctest: +SKIP
        >>> [p.id for p in pairs if p.mask is None]  # doctest: +SKIP
        ['photo_without_mask']
    """
    resolved = resolve_layout(source, layout)
    if resolved == "csv":
        return _csv_pairs(source)
    if resolved == "carvana":
        suffix = "_mask" if mask_suffix is None else mask_suffix
        if not suffix:
            raise ValueError("the carvana layout needs a non-empty mask_suffix such as '_mask'")
        return _carvana_pairs(source, suffix)
    if (
        images_dir is None
        and masks_dir is None
        and not storage.exists(storage.join(source, "images"))
        and _kaggle_layout(source)
    ):
        images_dir, masks_dir = "train", "train_masks"
        mask_suffix = "_mask" if mask_suffix is None else mask_suffix
    return _folder_pairs(source, images_dir or "images", masks_dir or "masks", mask_suffix or "")


# --------------------------------------------------------------------------- folders, carvana


def _kaggle_layout(source: str) -> bool:
    return storage.exists(storage.join(source, "train")) and storage.exists(
        storage.join(source, "train_masks")
    )


def _split_name(relpath: str) -> tuple[tuple[str, ...], str]:
    """``"shoes/a.jpg"`` -> ``(("shoes",), "a")``: folders and the stem (as ImageRef.stem)."""
    *dirs, name = relpath.split("/")
    stem, dot, _ = name.rpartition(".")
    return tuple(dirs), (stem if dot and stem else name)


def _is_mask_name(stem: str, suffix: str) -> bool:
    return len(stem) > len(suffix) and stem.endswith(suffix)


@dataclass
class _Item:
    side: int                # _IMAGE or _MASK
    key: str                 # pair key: relpath without suffix (and without the mask suffix)
    dirs: tuple[str, ...]    # folders of the key
    last: str                # last component of the key
    pos: tuple[str, ...]     # relpath components: where the walk is (its sort order)
    ref: ImageRef


class _MergeJoin:
    """Pairs up photo and mask items arriving in (nearly) the same sorted walk order.

    Both walks list each folder sorted by entry name and recurse depth-first, so a walk's
    position is the tuple of its relpath components and moves forward in tuple order. A name
    on side S for key ``dirs/stem`` is ``stem + tail[S] + "." + ext``, which sorts below
    ``stem + tail[S] + "/"``; once side S's position is at or past that bound, S can no longer
    produce the key. That decides, exactly, when a waiting key is unmatched for good (the
    other side passed it) and when a key can be forgotten for clash detection (its own side
    passed it). Correctness never depends on the two walks agreeing on order; only memory does.
    """

    def __init__(self, tails: tuple[str, str]) -> None:
        self.tails = tails
        self.pos: list[tuple[str, ...] | None] = [(), ()]  # None: that side is exhausted
        self.pending: tuple[OrderedDict[str, _Item], OrderedDict[str, _Item]] = (OrderedDict(), OrderedDict())
        self.seen: tuple[OrderedDict[str, _Item], OrderedDict[str, _Item]] = (OrderedDict(), OrderedDict())

    def _passed(self, side: int, item: _Item) -> bool:
        """Has ``side``'s walk gone past every name it could hold for ``item.key``?"""
        pos = self.pos[side]
        if pos is None:
            return True
        return pos >= item.dirs + (item.last + self.tails[side] + "/",)

    def add(self, item: _Item) -> Iterator[Pair]:
        side, other = item.side, 1 - item.side
        self.pos[side] = item.pos
        if item.key in self.seen[side]:
            # Same key twice on one side (a.jpg and a.png): the first keeps the pairing.
            clash_id = item.ref.relpath + ("~mask" if side == _MASK else "")
            yield _half_pair(item, id=clash_id, extra={"duplicate_of": item.key})
        else:
            self.seen[side][item.key] = item
            partner = self.pending[other].pop(item.key, None)
            if partner is not None:
                yield _full_pair(item, partner)
            else:
                self.pending[side][item.key] = item
        yield from self.moved(side)

    def moved(self, side: int) -> Iterator[Pair]:
        """After ``side``'s walk moved (or ended): forget and give up what it passed."""
        self._forget(side)
        yield from self._give_up(waiting=1 - side, walker=side)
        # What this side holds may already lie behind the other walk (the other walk ran
        # ahead into the next folder): give it up now rather than when the other walk moves.
        yield from self._give_up(waiting=side, walker=1 - side)

    def finish_side(self, side: int) -> Iterator[Pair]:
        self.pos[side] = None
        yield from self.moved(side)

    def _forget(self, side: int) -> None:
        seen = self.seen[side]
        while seen and self._passed(side, next(iter(seen.values()))):
            seen.popitem(last=False)

    def _give_up(self, *, waiting: int, walker: int) -> Iterator[Pair]:
        queue = self.pending[waiting]
        while queue and self._passed(walker, next(iter(queue.values()))):
            _, item = queue.popitem(last=False)
            yield _half_pair(item, id=item.key)

    def finish(self) -> Iterator[Pair]:
        for side in (_IMAGE, _MASK):
            while self.pending[side]:
                _, item = self.pending[side].popitem(last=False)
                yield _half_pair(item, id=item.key)
            self.seen[side].clear()


def _full_pair(a: _Item, b: _Item) -> Pair:
    image, mask = (a, b) if a.side == _IMAGE else (b, a)
    return Pair(id=a.key, image=image.ref.uri, mask=mask.ref.uri)


def _half_pair(item: _Item, *, id: str, extra: dict[str, str] | None = None) -> Pair:
    uri = item.ref.uri
    if item.side == _IMAGE:
        return Pair(id=id, image=uri, mask=None, extra=extra or {})
    return Pair(id=id, image=None, mask=uri, extra=extra or {})


def _item(side: int, ref: ImageRef, mask_suffix: str) -> _Item:
    dirs, stem = _split_name(ref.relpath)
    if side == _MASK and mask_suffix and _is_mask_name(stem, mask_suffix):
        stem = stem[: -len(mask_suffix)]
    key = "/".join(dirs + (stem,))
    return _Item(side, key, dirs, stem, tuple(ref.relpath.split("/")), ref)


def _folder_pairs(source: str, images_dir: str, masks_dir: str, mask_suffix: str) -> Iterator[Pair]:
    images_root, masks_root = storage.join(source, images_dir), storage.join(source, masks_dir)
    if not storage.exists(images_root):
        raise DatasetError(
            f"no {images_dir}/ folder in {source}: the folders layout needs photos under {images_root}"
        )
    if not storage.exists(masks_root):
        raise DatasetError(
            f"{source} has {images_dir}/ but no {masks_dir}/ beside it: put each photo's mask at "
            f"{masks_dir}/<same relative path>.png, or pick another layout"
        )
    return _join_walks(
        iter(storage.iter_images([images_root])), iter(storage.iter_images([masks_root])), mask_suffix
    )


def _join_walks(images: Iterator[ImageRef], masks: Iterator[ImageRef], mask_suffix: str) -> Iterator[Pair]:
    """Merge-join two walks, always advancing the one that is behind."""
    join = _MergeJoin(("", mask_suffix))
    walks = {_IMAGE: images, _MASK: masks}
    while walks:
        if len(walks) == 2:
            side = _IMAGE if join.pos[_IMAGE] <= join.pos[_MASK] else _MASK
        else:
            side = next(iter(walks))
        ref = next(walks[side], None)
        if ref is None:
            del walks[side]
            yield from join.finish_side(side)
            continue
        yield from join.add(_item(side, ref, mask_suffix))
    yield from join.finish()


def _carvana_pairs(source: str, mask_suffix: str) -> Iterator[Pair]:
    """One walk; ``*_mask.*`` names are masks, the rest photos, joined as they stream by."""
    join = _MergeJoin(("", mask_suffix))
    for ref in storage.iter_images([source]):
        side = _MASK if _is_mask_name(_split_name(ref.relpath)[1], mask_suffix) else _IMAGE
        item = _item(side, ref, mask_suffix)
        # One walk feeds both sides, so both are at the same position.
        join.pos[1 - side] = item.pos
        join._forget(1 - side)
        yield from join.add(item)
    yield from join.finish()


# --------------------------------------------------------------------------- csv


def _csv_rows(source: str) -> Iterator[dict[str, str]]:
    """Rows of a local or remote CSV, read as a stream (never the whole file at once)."""
    if storage.is_remote(source):
        fs, path = storage.get_filesystem(source)
        try:
            raw = fs.open(path, "rb")
        except Exception as err:  # noqa: BLE001 - backends raise their own types (botocore, aiohttp)
            raise StorageError(f"cannot read manifest {source}: {err}") from err
    else:
        try:
            raw = open(source.removeprefix("file://"), "rb")  # noqa: SIM115 - closed below
        except OSError as err:
            raise StorageError(f"cannot read manifest {source}: {err.strerror or err}") from err
    with raw:
        # utf-8-sig: spreadsheets write a byte-order mark that would stick to the first header.
        lines = codecs.iterdecode(raw, "utf-8-sig")
        yield from csv.DictReader(lines)


def _csv_base(source: str) -> str:
    if storage.is_remote(source):
        return source.rsplit("/", 1)[0]
    return os.path.dirname(source.removeprefix("file://")) or "."


def _resolve(base: str, value: str) -> str | None:
    value = value.strip()
    if not value:
        return None
    if storage.is_remote(value) or value.startswith("file://") or os.path.isabs(value):
        return value
    return storage.join(base, value)


def _stem(path: str) -> str:
    return _split_name(path.replace("\\", "/"))[1]


def _csv_pairs(source: str) -> Iterator[Pair]:
    base = _csv_base(source)
    rows: Iterable[dict[str, str]] = _csv_rows(source)
    first = next(iter(rows), None)
    if first is None:
        return
    missing = [c for c in ("image", "mask") if c not in first]
    if missing:
        raise DatasetError(
            f"manifest {source} has no {' or '.join(missing)} column (columns: {', '.join(first)}); "
            f"it needs image and mask columns with paths relative to its folder, or URIs"
        )
    # Ids seen so far: a CSV can repeat an id anywhere, so clash detection needs them all
    # (about 100 bytes per row; 100 MB for a million rows).
    seen: dict[str, int] = {}
    for row in chain([first], rows):
        image, mask = _resolve(base, row.get("image") or ""), _resolve(base, row.get("mask") or "")
        if image is None and mask is None:
            continue  # a blank line in a spreadsheet export
        pair_id = (row.get("id") or "").strip() or _stem(image or mask or "")
        extra = {k: (v or "") for k, v in row.items() if k not in ("id", "image", "mask") and k is not None}
        count = seen.get(pair_id, 0) + 1
        seen[pair_id] = count
        if count > 1:
            extra["duplicate_of"] = pair_id
            pair_id = f"{pair_id}~{count}"
        yield Pair(id=pair_id, image=image, mask=mask, extra=extra)
