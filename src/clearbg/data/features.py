"""Features of a (photo, mask) pair for grouping products into types.

Everything is computed on a canonical grid: the mask's bounding box (padded by ``PAD`` so some
background is in view) resampled to ``GRID_W`` x ``GRID_H``. That makes the features the same
whether a dataset was prepared with padding, stretching or at another size, and keeps the cost
per pair constant (about 3 ms in numpy: the 702 fashion pairs at 320x320 take ~5 s on 2 cores,
PNG decoding included). Rows are measured from the top of the product, so for
a standing person row 0.2-0.47 is the arms, 0.6-0.9 the legs.

Blocks (``FEATURE_BLOCKS`` maps each name to its column slice; ``feature_names()`` names every
column):

``shape`` (35)    mask geometry: log foreground share of the photo, log bbox aspect (h/w),
                  extent (area / bbox area), 7 Hu moments (log-scaled), a 16-band width
                  profile, an 8-band column profile, and how filled the centre column is in
                  the leg band (a gap between the legs: trousers, shorts). What the
                  silhouette looks like: wide skirt vs straight trousers, spread arms,
                  accessories sticking out.
``silhouette`` (128) the mask averaged to 8 x 16 cells: a coarse picture of the outline.
``colour`` (30)   CIE Lab (D65) of all foreground pixels: mean and std of L*, a*, b*, an 8-bin
                  L* histogram and a 4 x 4 a*b* histogram (shares of the foreground).
``bands`` (25)    mean L*, a*, b* of the non-skin foreground in 8 horizontal bands: what colour
                  the top, the middle and the legs are (dark trousers under a light top ...),
                  and the Lab distance between the upper (0.2-0.45) and lower (0.55-0.85)
                  garment colour (two pieces vs one dress).
``skin`` (12)     share of skin in those 8 bands, in the arm band (0.2-0.47), in the outer
                  quarter on each side of each row of the arm band (where arms hang: bare
                  arms without the neckline), in the leg band (0.6-0.9) and over the whole
                  product: short vs long sleeves, shorts and skirts vs trousers. On the
                  fashion set the outer-arm share correlates 0.69 with the annotated
                  ``arm_skin_ratio`` (the plain arm-band share 0.44).
``light`` (5)     lightness of the product itself: median and 75th percentile L* of the
                  non-skin body (rows 0.15-0.9), the share of it with L* >= 65 and >= 80, and
                  the L* contrast between a ring just inside the outline and one just outside.
                  The light-product rule of ``clearbg.data.cluster`` reads these.
``embed`` (64, optional) U2-NetP encoder output (deepest stage, mean-pooled), see
                  ``dataset_features(..., embeddings=True)``. 0.16-0.8 s per pair on 2 CPU
                  cores for ARI 0.133 instead of 0.129 on the fashion set (within noise;
                  bench/cluster_quality.py --embeddings), so off by default.

Skin is found by colour in two steps: a generic rule in Lab (hue angle 20-70 deg, chroma
8-40, L* >= 25), then only the pixels close to the person's own skin tone, taken from the face
band (rows 0.03-0.15) when the rule finds enough pixels there. Against the fashion set's
hand-labelled skin (702 photos at 160x240) this gives pixel precision 0.66 / recall 0.73 (the
generic rule alone: 0.60 / 0.78; the common YCbCr box: 0.36 / 0.96).
"""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
from PIL import Image

from clearbg.errors import ImageError

__all__ = [
    "FEATURE_BLOCKS",
    "GRID_H",
    "GRID_W",
    "dataset_features",
    "feature_names",
    "pair_features",
    "skin_mask",
    "srgb_to_lab",
    "standardise",
]

GRID_W, GRID_H = 48, 96  # canonical grid (w, h): tall, like most products photographed upright
PAD = 0.04  # bbox padding per side, as a share of its size: a ring of background stays in view
N_BANDS = 8
ARM_BAND = (0.20, 0.47)  # the band the fashion set's arm_skin_ratio uses (see shared/data README)
LEG_BAND = (0.60, 0.90)
FACE_BAND = (0.03, 0.15)
BODY_BAND = (0.15, 0.90)  # without the head and the feet: what the product itself looks like
LIGHT_LEVELS = (65.0, 80.0)

_BLOCK_SIZES = {"shape": 35, "silhouette": 128, "colour": 30, "bands": 3 * N_BANDS + 1, "skin": N_BANDS + 4, "light": 5}
EMBED_DIM = 64


def _slices(sizes: dict[str, int]) -> dict[str, slice]:
    out, start = {}, 0
    for name, size in sizes.items():
        out[name] = slice(start, start + size)
        start += size
    return out


FEATURE_BLOCKS: dict[str, slice] = _slices(_BLOCK_SIZES)
N_FEATURES = sum(_BLOCK_SIZES.values())


def feature_names(embeddings: bool = False) -> list[str]:
    """Name of every column of ``pair_features`` (and of the embedding block when asked).

    Example:
        >>> names = feature_names()
        >>> names[:3], len(names) == N_FEATURES
        (['shape.log_area', 'shape.log_aspect', 'shape.extent'], True)
    """
    names = ["shape.log_area", "shape.log_aspect", "shape.extent"]
    names += [f"shape.hu{i}" for i in range(1, 8)]
    names += [f"shape.width_row{i}" for i in range(16)] + [f"shape.fill_col{i}" for i in range(8)]
    names += ["shape.leg_centre"]
    names += [f"silhouette.r{r}c{c}" for r in range(16) for c in range(8)]
    names += [f"colour.{s}_{c}" for s in ("mean", "std") for c in "Lab"]
    names += [f"colour.L_hist{i}" for i in range(8)] + [f"colour.ab_hist{i}" for i in range(16)]
    names += [f"bands.{c}{i}" for i in range(N_BANDS) for c in "Lab"] + ["bands.two_piece"]
    names += [f"skin.band{i}" for i in range(N_BANDS)] + ["skin.arms", "skin.arms_outer", "skin.legs", "skin.all"]
    names += ["light.median_L", "light.p75_L", "light.share_L65", "light.share_L80", "light.edge_contrast"]
    if embeddings:
        names += [f"embed.{i}" for i in range(EMBED_DIM)]
    return names


# --------------------------------------------------------------------------- colour


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIE L*a*b* (D65) of sRGB values.

    Args:
        rgb: uint8 array (..., 3).

    Returns:
        float32 array (..., 3): L* in 0..100, a* and b* roughly -128..127.

    Example:
        >>> srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0]], np.uint8)).round(1)[:, 0].tolist()
        [100.0, 0.0]
    """
    c = rgb.astype(np.float32) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array(
        [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]],
        np.float32,
    )
    xyz = linear @ to_xyz.T / np.array([0.95047, 1.0, 1.08883], np.float32)
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    lab = np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)
    return lab.astype(np.float32)


def skin_mask(lab: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """Skin pixels of the foreground of a crop whose row 0 is the product's top.

    A generic Lab rule, then only pixels near the person's own tone (median of the rule's
    pixels in the face band), which drops beige and brown garments that the rule lets through.

    Args:
        lab: float32 (H, W, 3) from ``srgb_to_lab``.
        fg: bool (H, W) foreground.

    Returns:
        bool (H, W).
    """
    L, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    hue = np.degrees(np.arctan2(b, a))
    chroma = np.hypot(a, b)
    rule = fg & (hue >= 20) & (hue <= 70) & (chroma >= 8) & (chroma <= 40) & (L >= 25)
    h = lab.shape[0]
    lo, hi = int(FACE_BAND[0] * h), int(np.ceil(FACE_BAND[1] * h))
    face = lab[lo:hi][rule[lo:hi]]
    if len(face) < 8:  # no face in view (a garment alone, a cropped photo): trust the rule
        return rule
    tone = np.median(face, axis=0)
    # Lightness varies with shading far more than hue does, so it gets a wide tolerance.
    distance = np.sqrt((((lab - tone) / np.array([20.0, 6.0, 7.0], np.float32)) ** 2).sum(-1))
    return rule & (distance < 2.0)


# --------------------------------------------------------------------------- geometry


def _crop_box(fg: np.ndarray) -> tuple[int, int, int, int, int, int, int, int]:
    """(top, bottom, left, right) of the mask, then the same padded by ``PAD`` (clipped)."""
    rows = np.flatnonzero(fg.any(axis=1))
    cols = np.flatnonzero(fg.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    dy, dx = int(round(PAD * (bottom - top))), int(round(PAD * (right - left)))
    h, w = fg.shape
    return top, bottom, left, right, max(0, top - dy), min(h, bottom + dy), max(0, left - dx), min(w, right + dx)


def _hu_moments(m: np.ndarray) -> np.ndarray:
    """The 7 Hu moment invariants of a (soft) mask, log-scaled: -sign(h) * log10(|h|)."""
    ys, xs = np.mgrid[: m.shape[0], : m.shape[1]].astype(np.float64)
    m00 = m.sum()
    if m00 <= 0:
        return np.zeros(7, np.float32)
    x = xs - (m * xs).sum() / m00
    y = ys - (m * ys).sum() / m00

    def eta(p: int, q: int) -> float:
        return float((m * x**p * y**q).sum() / m00 ** (1 + (p + q) / 2))

    n20, n02, n11 = eta(2, 0), eta(0, 2), eta(1, 1)
    n30, n03, n21, n12 = eta(3, 0), eta(0, 3), eta(2, 1), eta(1, 2)
    a, b = n30 + n12, n21 + n03
    hu = np.array([
        n20 + n02,
        (n20 - n02) ** 2 + 4 * n11**2,
        (n30 - 3 * n12) ** 2 + (3 * n21 - n03) ** 2,
        a**2 + b**2,
        (n30 - 3 * n12) * a * (a**2 - 3 * b**2) + (3 * n21 - n03) * b * (3 * a**2 - b**2),
        (n20 - n02) * (a**2 - b**2) + 4 * n11 * a * b,
        (3 * n21 - n03) * a * (a**2 - 3 * b**2) - (n30 - 3 * n12) * b * (3 * a**2 - b**2),
    ])
    return (-np.sign(hu) * np.log10(np.abs(hu) + 1e-30)).clip(-30, 30).astype(np.float32)


def _shift_or(m: np.ndarray) -> np.ndarray:
    """One step of 3x3 binary dilation (numpy only)."""
    out = m.copy()
    out[1:] |= m[:-1]
    out[:-1] |= m[1:]
    out[:, 1:] |= m[:, :-1]
    out[:, :-1] |= m[:, 1:]
    return out


def _band(values: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    h = values.shape[0]
    return values[int(band[0] * h) : int(np.ceil(band[1] * h))]


def _share(part: np.ndarray, whole: np.ndarray) -> float:
    n = whole.sum()
    return float((part & whole).sum() / n) if n else 0.0


# --------------------------------------------------------------------------- one pair


def pair_features(photo: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The feature vector of one (photo, mask) pair (blocks in ``FEATURE_BLOCKS``).

    Args:
        photo: uint8 (H, W, 3) RGB.
        mask: uint8 (H, W), foreground >= 128 (a bool array works too).

    Returns:
        float32 (N_FEATURES,). An empty mask gives all zeros (no crash inside a batch;
        ``clearbg prepare`` drops empty masks anyway).

    Raises:
        ValueError: shapes do not fit together.

    Example:
        >>> photo = np.full((96, 64, 3), 200, np.uint8); mask = np.zeros((96, 64), np.uint8)
        >>> mask[10:90, 20:44] = 255
        >>> pair_features(photo, mask).shape == (N_FEATURES,)
        True
    """
    if photo.ndim != 3 or photo.shape[2] != 3 or mask.shape != photo.shape[:2]:
        raise ValueError(f"photo must be (H, W, 3) and mask (H, W) of the same size, got {photo.shape} and {mask.shape}")
    fg_full = mask >= 128 if mask.dtype != bool else mask
    if not fg_full.any():
        return np.zeros(N_FEATURES, np.float32)
    top, bottom, left, right, y0, y1, x0, x1 = _crop_box(fg_full)
    crop = Image.fromarray(np.ascontiguousarray(photo[y0:y1, x0:x1]))
    soft = Image.fromarray(fg_full[y0:y1, x0:x1].astype(np.uint8) * 255)
    rgb = np.asarray(crop.resize((GRID_W, GRID_H), Image.Resampling.BOX))
    m = np.asarray(soft.resize((GRID_W, GRID_H), Image.Resampling.BOX), np.float32) / 255.0
    fg = m >= 0.5
    if not fg.any():  # a mask of a few scattered pixels: keep the soft cover instead
        fg = m > 0
    lab = srgb_to_lab(rgb)

    # The mask's box inside the padded grid: rows/cols of the grid the product covers.
    gy0 = int(round((top - y0) / (y1 - y0) * GRID_H))
    gy1 = int(round((bottom - y0) / (y1 - y0) * GRID_H))
    gx0 = int(round((left - x0) / (x1 - x0) * GRID_W))
    gx1 = int(round((right - x0) / (x1 - x0) * GRID_W))
    gy1, gx1 = max(gy1, gy0 + 16), max(gx1, gx0 + 8)  # at least one grid cell per profile band
    skin = np.zeros_like(fg)
    skin[gy0:gy1] = skin_mask(lab[gy0:gy1], fg[gy0:gy1])  # face band counted from the product's top
    cloth = fg & ~skin

    # shape: how the outline sits in its (unpadded) box
    area = float(fg_full.sum())
    box_h, box_w = bottom - top, right - left
    inner = m[gy0:gy1, gx0:gx1]
    width_rows = np.array([c.mean() for c in np.array_split(inner, 16, axis=0)], np.float32)
    fill_cols = np.array([c.mean() for c in np.array_split(inner, 8, axis=1)], np.float32)
    legs = _band(inner, (0.55, 0.90))
    leg_centre = float(legs[:, int(0.4 * legs.shape[1]) : int(np.ceil(0.6 * legs.shape[1]))].mean())
    shape = np.concatenate([
        [np.log(area / fg_full.size), np.log(box_h / box_w), area / (box_h * box_w)],
        _hu_moments(inner.astype(np.float64)),
        width_rows,
        fill_cols,
        [leg_centre],
    ])
    silhouette = [c.mean() for r in np.array_split(inner, 16, axis=0) for c in np.array_split(r, 8, axis=1)]

    # colour of the whole product
    px = lab[fg]
    l_hist = np.histogram(px[:, 0], bins=8, range=(0, 100))[0]
    ab_hist = np.histogram2d(px[:, 1], px[:, 2], bins=4, range=[[-40, 40], [-40, 40]])[0].ravel()
    colour = np.concatenate([px.mean(0), px.std(0), l_hist / len(px), ab_hist / len(px)])

    # colour and skin per band (rows of the padded grid inside the product's own rows)
    band_rows = np.array_split(np.arange(gy0, max(gy1, gy0 + N_BANDS)).clip(0, GRID_H - 1), N_BANDS)
    bands, skin_bands = [], []
    fallback = lab[cloth].mean(0) if cloth.any() else px.mean(0)
    for rows in band_rows:
        c = cloth[rows]
        bands.append(lab[rows][c].mean(0) if c.any() else fallback)
        skin_bands.append(_share(skin[rows], fg[rows]))
    product_rows = slice(gy0, gy1)
    fg_p, skin_p, lab_p, cloth_p = fg[product_rows], skin[product_rows], lab[product_rows], cloth[product_rows]
    upper = _band(lab_p, (0.20, 0.45))[_band(cloth_p, (0.20, 0.45))]
    lower = _band(lab_p, (0.55, 0.85))[_band(cloth_p, (0.55, 0.85))]
    two_piece = float(np.linalg.norm(upper.mean(0) - lower.mean(0))) if len(upper) and len(lower) else 0.0
    arm_fg, arm_skin = _band(fg_p, ARM_BAND), _band(skin_p, ARM_BAND)
    outer = _outer_columns(arm_fg, 0.75)
    skin_feats = np.array(
        skin_bands + [
            _share(arm_skin, arm_fg),
            _share(arm_skin, arm_fg & outer),
            _share(_band(skin_p, LEG_BAND), _band(fg_p, LEG_BAND)),
            _share(skin_p, fg_p),
        ]
    )

    # lightness of the product itself (no head, no feet, no skin)
    body = _band(cloth[product_rows], BODY_BAND)
    body_l = _band(lab[product_rows, :, 0], BODY_BAND)[body]
    if len(body_l) == 0:
        body_l = px[:, 0]
    inside = fg & ~_erode(fg)
    outside = _shift_or(_shift_or(fg)) & ~fg
    contrast = (
        abs(float(np.median(lab[..., 0][inside])) - float(np.median(lab[..., 0][outside])))
        if inside.any() and outside.any() else 0.0
    )
    light = np.array([
        np.median(body_l),
        np.percentile(body_l, 75),
        (body_l >= LIGHT_LEVELS[0]).mean(),
        (body_l >= LIGHT_LEVELS[1]).mean(),
        contrast,
    ])

    out = np.concatenate([shape, silhouette, colour, np.ravel(bands), [two_piece], skin_feats, light])
    return out.astype(np.float32)


def _outer_columns(fg: np.ndarray, frac: float) -> np.ndarray:
    """Per row, the columns farther than ``frac`` of the half-width from the row's centre.

    The row's extent is that of its foreground, so for a standing person the outer quarter
    (``frac=0.75``) of the arm band is where the arms hang, whatever the pose's width.
    """
    cols = np.arange(fg.shape[1])
    any_fg = fg.any(axis=1)
    first = np.where(any_fg, fg.argmax(axis=1), 0)
    last = np.where(any_fg, fg.shape[1] - 1 - fg[:, ::-1].argmax(axis=1), 0)
    mid, half = (first + last) / 2, (last - first) / 2 + 1e-6
    return np.abs(cols[None, :] - mid[:, None]) >= frac * half[:, None]


def _erode(m: np.ndarray) -> np.ndarray:
    return ~_shift_or(~m)


# --------------------------------------------------------------------------- standardising


def standardise(
    matrix: np.ndarray,
    block_weights: dict[str, float] | None = None,
    blocks: dict[str, slice] | None = None,
) -> np.ndarray:
    """Z-score every column, then scale each block so that it weighs ``weight`` in total.

    Without the block scaling the 128 silhouette cells would outvote the 11 skin features
    by their number alone; with it every block adds the same variance (times its weight)
    to k-means' distances. Constant columns become 0.

    Args:
        matrix: (n, d) raw features (rows from ``pair_features``).
        block_weights: weight per block name (default 1 each); 0 drops a block.
        blocks: column slices per block (default ``FEATURE_BLOCKS``, plus ``embed`` when the
            matrix has the extra columns).

    Returns:
        float32 (n, d).

    Example:
        >>> x = standardise(np.random.default_rng(0).normal(size=(10, N_FEATURES)))
        >>> x.shape
        (10, 235)
    """
    if blocks is None:
        blocks = dict(FEATURE_BLOCKS)
        if matrix.shape[1] == N_FEATURES + EMBED_DIM:
            blocks["embed"] = slice(N_FEATURES, N_FEATURES + EMBED_DIM)
    x = np.asarray(matrix, np.float64)
    std = x.std(axis=0)
    z = np.where(std > 1e-9, (x - x.mean(axis=0)) / np.where(std > 1e-9, std, 1.0), 0.0)
    weights = block_weights or {}
    unknown = set(weights) - set(blocks)
    if unknown:
        raise ValueError(f"unknown feature block(s) {sorted(unknown)}; blocks are {list(blocks)}")
    out = np.zeros_like(z)
    for name, cols in blocks.items():
        width = cols.stop - cols.start
        out[:, cols] = z[:, cols] * (weights.get(name, 1.0) / np.sqrt(width))
    return out.astype(np.float32)


# --------------------------------------------------------------------------- a dataset


def _decode(data: bytes, mode: str, uri: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert(mode))
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for bad files
        raise ImageError(f"{uri}: cannot decode ({err}); re-run `clearbg prepare` for this dataset") from err


def load_pair(dataset: str, size: str, image: str, mask: str) -> tuple[np.ndarray, np.ndarray]:
    """Photo (RGB) and mask (L) of one manifest row of a prepared dataset, as uint8 arrays."""
    from clearbg import storage

    image_uri, mask_uri = storage.join(dataset, size, image), storage.join(dataset, size, mask)
    return (
        _decode(storage.read_bytes(image_uri), "RGB", image_uri),
        _decode(storage.read_bytes(mask_uri), "L", mask_uri),
    )


def dataset_size(dataset: str) -> str:
    """The folder name of the first size in the dataset's ``dataset.json`` (``"320x320"``)."""
    from clearbg.data.manifest import DatasetError, read_info, size_dir

    sizes = read_info(dataset).get("sizes") or []
    if not sizes:
        raise DatasetError(f"{dataset}/dataset.json lists no sizes; re-run `clearbg prepare`")
    width, height = sizes[0]
    return size_dir(int(width), int(height))


def dataset_features(
    dataset: str,
    *,
    frame=None,
    embeddings: bool = False,
    progress: bool | None = None,
    workers: int | None = None,
) -> tuple[list[str], np.ndarray]:
    """Raw (unstandardised) features of every pair of a prepared dataset.

    Args:
        dataset: a prepared dataset folder or ``s3://`` prefix (manifest + ``<size>/images``,
            ``<size>/masks``); the first size of ``dataset.json`` is used.
        frame: the manifest, if already read (default: read it).
        embeddings: append the U2-NetP encoder block (needs ``clearbg download u2netp``;
            about 20 ms per pair on a CPU core).
        progress: show a progress bar (default: when stderr is a terminal).
        workers: threads for reading and decoding (default: min(8, cores)).

    Returns:
        (ids, matrix): the manifest's ids in order and a float32 (n, d) matrix whose columns
        are ``feature_names(embeddings)``.

    Raises:
        DatasetError: no manifest or dataset.json.
        StorageError / ImageError: a file is missing or does not decode.

    Example:
        >>> ids, x = dataset_features("data/prepared")  # doctest: +SKIP
        >>> x.shape  # doctest: +SKIP
        (702, 235)
    """
    import sys

    from tqdm import tqdm

    from clearbg.data.manifest import read_manifest

    size = dataset_size(dataset)
    frame = read_manifest(dataset) if frame is None else frame
    ids = frame["id"].astype(str).tolist()
    rows = list(zip(frame["image"].astype(str), frame["mask"].astype(str)))
    show = sys.stderr.isatty() if progress is None else progress
    workers = workers or min(8, os.cpu_count() or 1)

    def one(row: tuple[str, str]) -> np.ndarray:
        photo, mask = load_pair(dataset, size, *row)
        return pair_features(photo, mask)

    with ThreadPoolExecutor(workers) as pool:
        feats = list(tqdm(pool.map(one, rows), total=len(rows), desc="features", unit="pair", disable=not show))
    matrix = np.stack(feats) if feats else np.zeros((0, N_FEATURES), np.float32)
    if embeddings:
        matrix = np.concatenate([matrix, encoder_embeddings(dataset, size, rows, progress=show)], axis=1)
    return ids, matrix


def encoder_embeddings(
    dataset: str, size: str, rows: Sequence[tuple[str, str]], *, progress: bool = False, batch: int = 8
) -> np.ndarray:
    """U2-NetP's deepest encoder stage (``stage6``, 64 channels), mean-pooled over the photo.

    The photo is prepared as the official weights expect (resized to 320, divided by its own
    maximum, ImageNet mean/std), like ``clearbg.inference.Predictor``.

    Raises:
        WeightsNotFound: the official u2netp weights are not cached (``clearbg download u2netp``).
    """
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from clearbg.models import create_model, get_spec

    spec = get_spec("u2netp")
    model = create_model("u2netp").eval()
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    out = []
    starts = range(0, len(rows), batch)
    with torch.inference_mode():
        for start in tqdm(starts, desc="embeddings", unit="batch", disable=not progress):
            photos = []
            for image, mask in rows[start : start + batch]:
                photo, _ = load_pair(dataset, size, image, mask)
                photos.append(np.asarray(Image.fromarray(photo).resize((spec.input_size,) * 2, Image.Resampling.BILINEAR)))
            x = torch.from_numpy(np.stack(photos)).permute(0, 3, 1, 2).float()
            x = x / x.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
            hx = model.stage1((x - mean) / std)
            for i in range(2, 7):
                hx = getattr(model, f"stage{i}")(F.max_pool2d(hx, 2, stride=2, ceil_mode=True))
            out.append(hx.mean(dim=(2, 3)).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, EMBED_DIM), np.float32)
