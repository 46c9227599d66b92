"""Decide which (photo, mask) pairs are fit for training, and say why the others are not.

Two passes, because some problems show in one pair and others only across the dataset:

1. :func:`check_pair`, once per pair (fast, parallel, streaming): reads and decodes both
   files, applies EXIF orientation to both, reads the mask's values the right way (binary,
   anti-aliased, multi-label), checks sizes and the foreground share, and measures what the
   dataset-level checks need: ``sha256`` of the photo bytes, a 64-bit DCT ``phash`` and an
   ``edge_score``. It never raises for bad data; every problem becomes a reason in
   :data:`REASONS` with a detail a person can act on.
2. :func:`find_duplicates` and :func:`find_mismatched`, once over the table of those stats:
   exact and near duplicates (hash bands, not all pairs), and masks that belong to another
   photo (edge alignment, absolute threshold plus a median/MAD outlier rule).

How a mask's values are read (:func:`decode_mask`, :func:`binarise_mask`):

* Greyscale as is; RGB as the max over channels; 16-bit scaled to 8 bits (kept as is when all
  values are <= 255: a 16-bit label map); an alpha channel that is not fully opaque is the mask
  (a cutout used as mask); palette images by palette *index* (multi-label maps are usually
  palette PNGs), except when every used palette colour is grey (a greyscale GIF/PNG stored as
  palette, e.g. Carvana's masks): then by that grey value.
* One value: all background (0) or all foreground. Two values ``{a, b}``: binary, foreground is
  the larger (``{0, 255}``, ``{0, 1}``, ``{0, 8}`` ...).
* More values: the pixels not at the lowest or highest value are "grey". Anti-aliased masks
  have their grey pixels in thin bands along the outline, where neighbours differ; label maps
  have them in flat regions. If at least ``multilabel_flat_share`` of grey pixels have all
  four neighbours equal to themselves, the mask is multi-label (foreground = value != 0, or
  rejected with ``multilabel="reject"``); otherwise it is anti-aliased (stretched to 0..255
  and thresholded at ``mask_threshold``; the stretched values are kept as ``soft_mask``).

Example:
    >>> from clearbg.data.pairs import find_pairs
    >>> checks = [check_pair(p) for p in find_pairs("../shared/data/fashion")]  # doctest: +SKIP
    >>> stats = pandas.DataFrame([{"id": c.pair.id, **c.stats} for c in checks])  # doctest: +SKIP
    >>> dropped = {**find_duplicates(stats, CleanOptions()), **find_mismatched(stats, CleanOptions())}  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas
import scipy.fft
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from clearbg import imageio, storage
from clearbg.data.pairs import Pair
from clearbg.errors import ClearbgError, ImageError

__all__ = [
    "REASONS",
    "CleanOptions",
    "PairCheck",
    "binarise_mask",
    "check_pair",
    "decode_mask",
    "edge_score",
    "find_duplicates",
    "find_mismatched",
    "hamming",
    "phash",
]

REASONS = (
    "missing_mask",
    "missing_image",
    "unreadable_image",
    "unreadable_mask",
    "size_mismatch",
    "empty_mask",
    "full_mask",
    "multilabel_mask",
    "duplicate",
    "near_duplicate",
    "mismatched_pair",
)

MULTILABEL_MODES = ("nonzero", "reject")
MISMATCH_MODES = ("edges", "off")


@dataclass
class CleanOptions:
    """How strict cleaning is. The defaults were calibrated on ../shared/data (fashion + cars;
    see ``bench/mismatch_calibration.py``) and suit most photo/mask sets.

    Attributes:
        mask_threshold: anti-aliased masks: foreground = stretched value >= this (0..255).
        multilabel: ``"nonzero"`` (foreground = any label != 0) or ``"reject"`` (drop the pair
            with reason ``multilabel_mask``).
        multilabel_flat_share: a mask with more than two values is multi-label when at least
            this share of its grey pixels sit in flat areas (all 4 neighbours equal); below
            it, the greys are edge bands of an anti-aliased mask.
        min_foreground: foreground share below this -> ``empty_mask``.
        max_foreground: foreground share above this -> ``full_mask``.
        near_duplicate_bits: two photos whose 64-bit pHash differ in at most this many bits
            are near-duplicates (the later id is dropped). 0 turns the check off.
        mismatch: ``"edges"`` (edge-alignment check, :func:`find_mismatched`) or ``"off"``.
        mismatch_min_edge: edge score below which a pair is always ``mismatched_pair``.
        mismatch_soft_edge: edge score below which a pair is ``mismatched_pair`` when it is
            also a robust outlier of its dataset (see ``mismatch_mad_k``).
        mismatch_mad_k: how many robust standard deviations (1.4826 * MAD) below the
            dataset's median edge score make an outlier.
        mismatch_min_pairs: the outlier rule needs at least this many scored pairs; smaller
            sets use ``mismatch_min_edge`` alone.
        work_size: long side in pixels at which edge score and pHash are computed (fast; the
            scores were calibrated at 320).
        max_pixels: largest width * height decoded per image; None = clearbg's default
            (``CLEARBG_MAX_PIXELS`` or 100 MP). Larger files are ``unreadable_*``.
    """

    mask_threshold: int = 128
    multilabel: str = "nonzero"
    multilabel_flat_share: float = 0.5
    min_foreground: float = 0.001
    max_foreground: float = 0.995
    near_duplicate_bits: int = 7
    mismatch: str = "edges"
    mismatch_min_edge: float = 1.45
    mismatch_soft_edge: float = 2.0
    mismatch_mad_k: float = 3.0
    mismatch_min_pairs: int = 30
    work_size: int = 320
    max_pixels: int | None = None

    def __post_init__(self) -> None:
        if self.multilabel not in MULTILABEL_MODES:
            raise ValueError(f"multilabel must be one of {MULTILABEL_MODES}, got {self.multilabel!r}")
        if self.mismatch not in MISMATCH_MODES:
            raise ValueError(f"mismatch must be one of {MISMATCH_MODES}, got {self.mismatch!r}")
        if not 0 <= self.mask_threshold <= 255:
            raise ValueError(f"mask_threshold must be in 0..255, got {self.mask_threshold}")
        if not 0 <= self.min_foreground < self.max_foreground <= 1:
            raise ValueError(
                f"need 0 <= min_foreground < max_foreground <= 1, got {self.min_foreground} "
                f"and {self.max_foreground}"
            )
        if not 0 <= self.near_duplicate_bits <= 64:
            raise ValueError(f"near_duplicate_bits must be in 0..64, got {self.near_duplicate_bits}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError(f"max_pixels must be a positive pixel count or None, got {self.max_pixels}")
        if self.work_size < 32:
            raise ValueError(f"work_size must be at least 32 pixels, got {self.work_size}")


@dataclass
class PairCheck:
    """What :func:`check_pair` found for one pair.

    Attributes:
        pair: the pair checked.
        reason: None if the pair is kept (so far: duplicates and mismatches are decided over
            the whole dataset), else one of :data:`REASONS`.
        detail: what exactly is wrong (numbers and sizes included), or "" when kept.
        photo: HxWx3 uint8 RGB, upright (EXIF applied), alpha flattened onto white; None if
            the photo could not be read.
        mask: HxW uint8, 0 or 255, the photo's size; None if not available.
        soft_mask: HxW uint8 0..255 before thresholding, for anti-aliased masks only (None
            when the mask had no grey values worth keeping: use ``mask``).
        notes: things done to the data that a person may want to know about.
        stats: JSON-able scalars: ``src_width``, ``src_height``, ``fg_fraction``, ``sha256``
            (of the photo bytes), ``phash`` (16 hex digits), ``edge_score``, ``mask_kind``
            (binary / antialiased / multilabel), ``mask_values`` (distinct values).
    """

    pair: Pair
    reason: str | None = None
    detail: str = ""
    photo: np.ndarray | None = None
    mask: np.ndarray | None = None
    soft_mask: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def kept(self) -> bool:
        return self.reason is None


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


# --------------------------------------------------------------------------- one pair


def check_pair(
    pair: Pair,
    options: CleanOptions | None = None,
    *,
    image_bytes: bytes | None = None,
    mask_bytes: bytes | None = None,
) -> PairCheck:
    """Read, decode and check one pair; never raises for bad data.

    Args:
        pair: the pair (from :func:`clearbg.data.pairs.find_pairs`).
        options: thresholds; default ``CleanOptions()``.
        image_bytes: the photo's bytes if already read (else read from ``pair.image``).
        mask_bytes: the mask's bytes if already read (else read from ``pair.mask``).

    Returns:
        A :class:`PairCheck`. ``reason`` is the first problem found, in this order: missing,
        unreadable photo, unreadable mask, size mismatch, multi-label (``reject`` mode), empty
        or full mask. Stats are filled as far as the check got.

    Example:
        >>> check = check_pair(Pair("ccp_0001", "images/ccp_0001.jpg", "masks/ccp_0001.png"))  # doctest: +SKIP
        >>> check.reason, check.stats["fg_fraction"], check.mask.shape  # doctest: +SKIP
        (None, 0.2381, (832, 550))
    """
    options = options or CleanOptions()
    check = PairCheck(pair=pair)
    try:
        _check(check, options, image_bytes, mask_bytes)
    except _Rejected as rejected:
        check.reason, check.detail = rejected.reason, rejected.detail
    return check


def _check(check: PairCheck, options: CleanOptions, image_bytes: bytes | None, mask_bytes: bytes | None) -> None:
    pair = check.pair
    if pair.image is None and image_bytes is None:
        raise _Rejected("missing_image", f"mask {pair.mask} has no photo{_clash(pair)}")
    if pair.mask is None and mask_bytes is None:
        raise _Rejected("missing_mask", f"photo {pair.image} has no mask{_clash(pair)}")
    image_name, mask_name = pair.image or "<photo bytes>", pair.mask or "<mask bytes>"

    try:
        data = storage.read_bytes(image_name) if image_bytes is None else image_bytes
        check.stats["sha256"] = hashlib.sha256(data).hexdigest()
        image = imageio.flatten(imageio.open_image(data, max_pixels=options.max_pixels, name=image_name))
    except ClearbgError as err:
        raise _Rejected("unreadable_image", str(err)) from None
    width, height = image.size
    check.stats.update(src_width=width, src_height=height)
    check.photo = np.asarray(image)
    grey = _small(image.convert("L"), options.work_size)
    check.stats["phash"] = phash(np.asarray(grey, dtype=np.float32))

    try:
        data = storage.read_bytes(mask_name) if mask_bytes is None else mask_bytes
        values = decode_mask(data, name=mask_name, max_pixels=options.max_pixels)
    except ClearbgError as err:
        raise _Rejected("unreadable_mask", str(err)) from None
    if values.shape != (height, width):
        raise _Rejected("size_mismatch", _size_mismatch_detail(width, height, values.shape))

    mask, soft, kind, notes, n_values = _binarise(values, options)
    check.notes.extend(notes)
    check.stats.update(mask_kind=kind, mask_values=n_values)
    if kind == "multilabel" and options.multilabel == "reject":
        raise _Rejected("multilabel_mask", f"{notes[0]}; rejected because multilabel='reject'")
    check.mask, check.soft_mask = mask, soft
    fg = float(np.count_nonzero(mask)) / mask.size
    check.stats["fg_fraction"] = round(fg, 6)
    if fg < options.min_foreground:
        raise _Rejected("empty_mask", f"foreground is {fg:.4%} of the mask, below min_foreground={options.min_foreground:.4%}")
    if fg > options.max_foreground:
        raise _Rejected("full_mask", f"foreground is {fg:.4%} of the mask, above max_foreground={options.max_foreground:.4%}")

    mask_small = Image.fromarray(mask).resize(grey.size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    score = edge_score(np.asarray(grey, dtype=np.float32), np.asarray(mask_small) >= 128)
    check.stats["edge_score"] = None if score is None else round(score, 4)


def _clash(pair: Pair) -> str:
    other = pair.extra.get("duplicate_of")
    if not other:
        return ""
    return f" of its own: its name clashes with pair {other!r} (same name, another suffix), which took the match"


def _size_mismatch_detail(width: int, height: int, shape: tuple[int, ...]) -> str:
    mh, mw = shape
    detail = f"photo is {width}x{height} (upright, after EXIF) but mask is {mw}x{mh}"
    if (mw, mh) == (height, width) and width != height:
        detail += "; the mask is the photo turned 90 degrees: was it drawn before the photo's EXIF rotation?"
    return detail


def _small(image: Image.Image, work_size: int) -> Image.Image:
    """The image at ``work_size`` long side (never enlarged): scores are computed there.

    Bilinear with Pillow's reducing_gap, as calibrated: BOX is 0.6 ms faster per photo but
    keeps more pixel noise, which pushed low-contrast true pairs (a red car on a red street)
    below the mismatch threshold."""
    width, height = image.size
    scale = min(1.0, work_size / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


# --------------------------------------------------------------------------- masks


def decode_mask(data: bytes, *, name: str = "<mask>", max_pixels: int | None = None) -> np.ndarray:
    """Decode mask bytes to an upright HxW uint8 array of values (labels or grey levels).

    See the module docstring for how each image mode is read.

    Args:
        data: the encoded mask (PNG, GIF, JPEG, TIFF, ...).
        name: what to call it in error messages.
        max_pixels: largest width * height to decode (default: clearbg's limit).

    Returns:
        HxW uint8 values, EXIF orientation applied.

    Raises:
        ImageError: empty, corrupt, truncated, not an image, or too large.

    Example:
        >>> decode_mask(open("masks/ccp_0001.png", "rb").read()).shape  # doctest: +SKIP
        (832, 550)
    """
    limit = imageio.max_pixels() if max_pixels is None else max_pixels
    if not data:
        raise ImageError(f"{name}: empty input (0 bytes)")
    try:
        # Our own size check below replaces Pillow's global bomb guard (as open_image does).
        with imageio._pillow_guard_off(), Image.open(io.BytesIO(data), formats=imageio.DECODE_FORMATS) as lazy:
            width, height = lazy.size
            if width * height > limit:
                raise imageio._too_large(name, width, height, limit)
            lazy.load()
            image = ImageOps.exif_transpose(lazy)
    except UnidentifiedImageError as err:
        raise ImageError(f"{name}: not an image, or not a supported format") from err
    except ClearbgError:
        raise
    except Exception as err:  # noqa: BLE001 - Pillow's readers raise many types on bad data
        raise ImageError(f"{name}: {imageio._describe_decode_error(err)}") from err
    return _mask_values(image)


def _mask_values(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("RGBA", "LA", "PA") or (mode in ("P", "L", "RGB") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"))
        if alpha.min() < 255:  # a cutout used as a mask: its transparency is the mask
            return alpha
        image, mode = rgba.convert("RGB"), "RGB"
    if mode == "1":
        return np.asarray(image.convert("L"))
    if mode == "L":
        return np.asarray(image)
    if mode == "P":
        index = np.asarray(image)
        palette = np.asarray(image.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
        used = np.unique(index)
        if used.max() < len(palette):
            colours = palette[used]
            if (colours.min(axis=1) == colours.max(axis=1)).all():  # greys stored as a palette
                return palette[:, 0][index]
        return index
    if mode == "RGB":
        return np.asarray(image).max(axis=2)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        data = np.asarray(image).astype(np.int64)
        top = int(data.max()) if data.size else 0
        if top <= 255 and data.min() >= 0:
            return data.astype(np.uint8)  # a label map stored in 16 bits
        scale = 65535 if top <= 65535 else top
        return np.clip(data * 255 // scale, 0, 255).astype(np.uint8)
    if mode == "F":
        return imageio._float_to_uint8(np.asarray(image))
    return np.asarray(image.convert("L"))


def binarise_mask(values: np.ndarray, options: CleanOptions | None = None) -> tuple[np.ndarray, np.ndarray | None, str, list[str]]:
    """Turn decoded mask values into a 0/255 mask, deciding binary / anti-aliased / multi-label.

    Args:
        values: HxW uint8 from :func:`decode_mask`.
        options: ``mask_threshold`` and ``multilabel_flat_share`` are used.

    Returns:
        ``(mask, soft, kind, notes)``: the 0/255 mask, the stretched grey mask (anti-aliased
        only, else None), ``"binary"``, ``"antialiased"`` or ``"multilabel"``, and notes.

    Example:
        >>> binarise_mask(np.array([[0, 9], [9, 9]], np.uint8))[0]
        array([[  0, 255],
               [255, 255]], dtype=uint8)
    """
    mask, soft, kind, notes, _ = _binarise(values, options or CleanOptions())
    return mask, soft, kind, notes


def _binarise(
    values: np.ndarray, options: CleanOptions
) -> tuple[np.ndarray, np.ndarray | None, str, list[str], int]:
    """``binarise_mask`` plus the number of distinct values; binary masks take a fast path."""
    lo, hi = int(values.min()), int(values.max())
    grey = (values != lo) & (values != hi)
    n_grey = int(np.count_nonzero(grey))
    if n_grey == 0:  # one or two values: no histogram needed
        notes = []
        if hi == 0:
            mask = np.zeros(values.shape, dtype=np.uint8)
        else:
            mask = _to_255(values == hi)
            if lo != hi and (lo, hi) != (0, 255):
                notes.append(f"binary mask with values {{{lo}, {hi}}}: foreground = {hi}")
        return mask, None, "binary", notes, 1 if lo == hi else 2
    present = np.flatnonzero(np.bincount(values.ravel(), minlength=256))
    flat = _flat_share(values, grey, n_grey)
    labels = len(present)
    if flat >= options.multilabel_flat_share:
        mask = _to_255(values != 0)
        note = (
            f"multi-label mask ({labels} labels: {_value_list(present)}; {flat:.0%} of its "
            f"in-between pixels lie in flat regions): foreground = non-zero"
        )
        return mask, None, "multilabel", [note], labels
    # Anti-aliased: stretch lo..hi to 0..255, so a 0..1 float mask or a 0..200 one thresholds alike.
    stretched = (values.astype(np.float32) - lo) * (255.0 / (hi - lo))
    soft = np.clip(np.rint(stretched), 0, 255).astype(np.uint8)
    mask = _to_255(soft >= options.mask_threshold)
    note = (
        f"mask anti-aliased ({n_grey / values.size:.2%} grey pixels, {labels} values, "
        f"{flat:.0%} of greys in flat regions): thresholded at {options.mask_threshold}"
    )
    return mask, soft, "antialiased", [note], labels


def _to_255(foreground: np.ndarray) -> np.ndarray:
    return foreground.view(np.uint8) * np.uint8(255)


def _flat_share(values: np.ndarray, grey: np.ndarray, n_grey: int) -> float:
    """Share of grey pixels whose 4 neighbours all have the same value (flat-region interiors)."""
    if n_grey == 0 or min(values.shape) < 3:
        return 0.0
    v = values
    same = np.zeros(v.shape, dtype=bool)
    same[1:-1, 1:-1] = (
        (v[1:-1, 1:-1] == v[:-2, 1:-1]) & (v[1:-1, 1:-1] == v[2:, 1:-1])
        & (v[1:-1, 1:-1] == v[1:-1, :-2]) & (v[1:-1, 1:-1] == v[1:-1, 2:])
    )
    return float(np.count_nonzero(same & grey)) / n_grey


def _value_list(present: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(str(int(v)) for v in present[:limit])
    return shown + (", ..." if len(present) > limit else "")


# --------------------------------------------------------------------------- scores


#: Pixels whose gradient magnitude (grey levels per pixel) is at most this count as flat: they
#: are left out of the photo's mean gradient, so a plain studio background does not make every
#: outline look like an edge.
FLAT_GRADIENT = 2.0
#: How far (pixels at work size) the outline is moved to measure what it scores off the edge.
OUTLINE_SHIFT = 6
#: Fewer outline pixels than this (at work size) give no edge score.
MIN_OUTLINE = 16
# E|cos| of a uniformly random angle: an outline that ignores the photo's edges projects the
# gradient onto its normal with this factor on average, so dividing by it puts chance at 1.
_RANDOM_PROJECTION = 2.0 / math.pi


def edge_score(grey: np.ndarray, mask: np.ndarray) -> float | None:
    """How well a mask's outline follows edges in its photo: ~1 by chance, clearly more if true.

    For each outline pixel (a pixel with a 4-neighbour on the other side of the mask) the
    photo's gradient is projected onto the outline's normal (from a 3x3-smoothed mask): a true
    outline crosses the photo's edges head-on. The mean projection is divided by what chance
    would give, the average of two baselines:

    * the same outline moved ``OUTLINE_SHIFT`` pixels in each of 8 directions (a true outline
      is a sharp local maximum; a foreign one scores the same a few pixels off), and
    * 2/pi times the photo's mean gradient over its non-flat pixels (what a random direction
      collects; flat pixels are left out so a plain studio background does not make any
      outline look good).

    Each baseline alone fails somewhere: the shifted one on cars, whose body lines run
    parallel to the outline; the global one on flat products against flat backgrounds, where
    the outline is the only texture. Outline pixels on the image border are ignored (an
    object cut off by the frame). See bench/mismatch_calibration.py for the calibration.

    Args:
        grey: HxW float greyscale photo, at work size (~320 px long side).
        mask: HxW bool mask of the same size.

    Returns:
        The score, or None when the outline is too short (< ``MIN_OUTLINE`` pixels) or the
        photo is flat.

    Example:
        >>> g = np.full((64, 64), 250, np.float32); g[16:48, 16:48] = 60
        >>> m = g < 128
        >>> edge_score(g, m) > 2, edge_score(g, np.roll(m, 9, axis=1)) < 1
        (True, True)
    """
    h, w = grey.shape
    if h < 3 or w < 3:
        return None
    gx, gy = _gradient(grey)
    magnitude = np.hypot(gx, gy)
    outline = np.zeros(mask.shape, dtype=bool)
    changed = mask[:, 1:] != mask[:, :-1]
    outline[:, 1:] |= changed
    outline[:, :-1] |= changed
    changed = mask[1:] != mask[:-1]
    outline[1:] |= changed
    outline[:-1] |= changed
    outline[0] = outline[-1] = False
    outline[:, 0] = outline[:, -1] = False
    ys, xs = np.nonzero(outline)
    if len(ys) < MIN_OUTLINE:
        return None
    textured = magnitude > FLAT_GRADIENT
    if not textured.any():
        return None
    nx, ny = _gradient(ndimage.uniform_filter(mask.astype(np.float32), 3))
    nx, ny = nx[ys, xs], ny[ys, xs]
    norm = np.hypot(nx, ny)
    norm[norm == 0] = 1.0
    nx, ny = nx / norm, ny / norm
    along = np.abs(gx[ys, xs] * nx + gy[ys, xs] * ny).mean()
    shifted = []
    s = OUTLINE_SHIFT
    for dy, dx in ((-s, 0), (s, 0), (0, -s), (0, s), (-s, -s), (s, s), (-s, s), (s, -s)):
        y2, x2 = np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)
        shifted.append(np.abs(gx[y2, x2] * nx + gy[y2, x2] * ny).mean())
    chance = 0.5 * float(np.mean(shifted)) + 0.5 * _RANDOM_PROJECTION * float(magnitude[textured].mean())
    return float(along / chance)


def _gradient(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central differences (zero on the border), in grey levels per pixel."""
    gx = np.zeros_like(image)
    gy = np.zeros_like(image)
    gx[:, 1:-1] = (image[:, 2:] - image[:, :-2]) * 0.5
    gy[1:-1] = (image[2:] - image[:-2]) * 0.5
    return gx, gy


def phash(grey: np.ndarray) -> str:
    """64-bit DCT perceptual hash of a greyscale image, as 16 hex digits.

    The image is resized to 32x32, transformed with a 2-D DCT, and each of the 63 lowest
    non-DC frequencies (the top-left 8x8 block without its corner) gives one bit: above the
    median of those 63 or not. The DC bit (overall brightness) is always 0, so 63 bits carry
    information. Re-encoding, mild resizing and small colour changes flip few bits; a
    different photo flips about half.

    Example:
        >>> g = np.random.default_rng(0).random((64, 64), dtype=np.float32) * 200
        >>> len(phash(g)), phash(g) == phash(g + 10), phash(g) == phash(g.T)
        (16, True, False)
    """
    small = Image.fromarray(np.asarray(grey, dtype=np.float32), mode="F").resize((32, 32), Image.Resampling.BOX)
    coeffs = scipy.fft.dctn(np.asarray(small, dtype=np.float64), type=2, norm="ortho")[:8, :8].ravel()
    ac = coeffs[1:]
    bits = ac > np.median(ac)
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return f"{value:016x}"


def hamming(a: str, b: str) -> int:
    """Bits that differ between two hex hashes: ``hamming("00ff", "00fe") == 1``."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


# --------------------------------------------------------------------------- dataset level


_BANDS = 4
_BAND_BITS = 64 // _BANDS


def find_duplicates(stats: pandas.DataFrame, options: CleanOptions | None = None) -> dict[str, tuple[str, str]]:
    """Exact and near-duplicate photos: which pairs to drop, the earliest id of each group kept.

    Exact duplicates have the same ``sha256`` (photo bytes). Near-duplicates have a ``phash``
    within ``options.near_duplicate_bits`` bits of a photo kept earlier (in id order); the
    closest kept one is named. Rows without a hash (unreadable photos) are ignored.

    Scales to millions of rows: each hash is split into 4 bands of 16 bits; two hashes within
    ``t`` bits agree in some band on all but ``t // 4`` bits (pigeonhole), so only kept hashes
    found by probing each band's value with up to ``t // 4`` flipped bits are compared.

    Args:
        stats: a table with columns ``id``, ``sha256``, ``phash`` (from :attr:`PairCheck.stats`).
        options: ``near_duplicate_bits`` is used (0: exact duplicates only).

    Returns:
        ``{id: ("duplicate" | "near_duplicate", detail)}`` for each pair to drop.

    Example:
        >>> frame = pandas.DataFrame({"id": ["a", "b", "c"], "sha256": ["1", "1", "2"],
        ...                           "phash": ["ffff000000000000", "ffff000000000000", "ffff000000000001"]})
        >>> sorted(find_duplicates(frame, CleanOptions()).items())
        [('b', ('duplicate', 'same photo bytes as a (sha256 1)')), ('c', ('near_duplicate', 'photo nearly the same as a (pHash differs in 1 of 64 bits; near_duplicate_bits=7)'))]
    """
    options = options or CleanOptions()
    bits = options.near_duplicate_bits
    frame = stats[["id", "sha256", "phash"]].sort_values("id", kind="stable")
    dropped: dict[str, tuple[str, str]] = {}
    first_by_sha: dict[str, str] = {}
    flips = _flip_masks(bits // _BANDS) if bits else []
    buckets: dict[tuple[int, int], list[tuple[int, str]]] = {}
    for pair_id, sha, hash_hex in frame.itertuples(index=False):
        if not isinstance(sha, str) or not sha:
            continue
        first = first_by_sha.setdefault(sha, pair_id)
        if first != pair_id:
            dropped[pair_id] = ("duplicate", f"same photo bytes as {first} (sha256 {sha[:12]})")
            continue
        if not bits or not isinstance(hash_hex, str) or not hash_hex:
            continue
        value = int(hash_hex, 16)
        bands = [(value >> (band * _BAND_BITS)) & 0xFFFF for band in range(_BANDS)]
        best: tuple[int, str] | None = None
        seen: set[str] = set()
        for band, band_value in enumerate(bands):
            for flip in flips:
                for other_value, other_id in buckets.get((band, band_value ^ flip), ()):
                    if other_id in seen:
                        continue
                    seen.add(other_id)
                    distance = (value ^ other_value).bit_count()
                    if distance <= bits and (best is None or distance < best[0]):
                        best = (distance, other_id)
        if best is not None:
            dropped[pair_id] = (
                "near_duplicate",
                f"photo nearly the same as {best[1]} (pHash differs in {best[0]} of 64 bits; "
                f"near_duplicate_bits={bits})",
            )
            continue
        for band, band_value in enumerate(bands):
            buckets.setdefault((band, band_value), []).append((value, pair_id))
    return dropped


def _flip_masks(radius: int) -> list[int]:
    """All 16-bit masks with at most ``radius`` bits set (0 first)."""
    masks = [0]
    for r in range(1, min(radius, _BAND_BITS) + 1):
        for positions in combinations(range(_BAND_BITS), r):
            masks.append(sum(1 << p for p in positions))
    return masks


def find_mismatched(stats: pandas.DataFrame, options: CleanOptions | None = None) -> dict[str, tuple[str, str]]:
    """Masks that do not belong to their photo, by how well their outline follows its edges.

    A pair is flagged when its ``edge_score`` is below ``mismatch_min_edge`` (a mask whose
    outline ignores the photo's edges), or below ``mismatch_soft_edge`` while also more than
    ``mismatch_mad_k`` robust standard deviations below the dataset's median (a dataset of
    crisp masks makes a merely-fair score suspicious). The outlier rule needs
    ``mismatch_min_pairs`` scored pairs. Rows without a score are ignored.

    Args:
        stats: a table with columns ``id`` and ``edge_score`` (from :attr:`PairCheck.stats`).
        options: the ``mismatch*`` fields are used; ``mismatch="off"`` returns ``{}``.

    Returns:
        ``{id: ("mismatched_pair", detail)}``.

    Example:
        >>> frame = pandas.DataFrame({"id": ["a", "b"], "edge_score": [4.2, 1.1]})
        >>> find_mismatched(frame, CleanOptions())["b"][0]
        'mismatched_pair'
    """
    options = options or CleanOptions()
    if options.mismatch == "off" or stats.empty:
        return {}
    scores = pandas.to_numeric(stats["edge_score"], errors="coerce").to_numpy(dtype=np.float64)
    ids = stats["id"].to_numpy()
    valid = np.isfinite(scores)
    median = spread = None
    if np.count_nonzero(valid) >= options.mismatch_min_pairs:
        median = float(np.median(scores[valid]))
        spread = 1.4826 * float(np.median(np.abs(scores[valid] - median)))
    flagged: dict[str, tuple[str, str]] = {}
    for pair_id, score in zip(ids[valid], scores[valid]):
        if score < options.mismatch_min_edge:
            flagged[str(pair_id)] = (
                "mismatched_pair",
                f"the mask's outline does not follow edges in the photo (edge score {score:.2f} < "
                f"mismatch_min_edge={options.mismatch_min_edge}; about 1 by chance): a mask of another photo?",
            )
        elif median is not None and spread and score < options.mismatch_soft_edge:
            z = (median - score) / spread
            if z > options.mismatch_mad_k:
                flagged[str(pair_id)] = (
                    "mismatched_pair",
                    f"the mask's outline follows the photo's edges much less than the rest of the "
                    f"dataset (edge score {score:.2f}, {z:.1f} robust SDs below the median "
                    f"{median:.2f}): a mask of another photo?",
                )
    return flagged
