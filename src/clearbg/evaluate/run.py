"""Evaluate a model on a prepared dataset's held-out split, at the photos' full resolution.

``evaluate_model`` predicts every photo of a split through the same :class:`Predictor` that
``clearbg remove`` uses (the 320 px map upsampled smoothly to the photo's size) and scores it
against the ORIGINAL mask (the manifest's ``src_mask``), binarised with the rule and options the
dataset was prepared with (``dataset.json``), so the numbers describe what a shop would get.
The result, an :class:`Evaluation`, holds one row of :mod:`clearbg.evaluate.image_metrics` per
image plus small prediction thumbnails for the report, and reduces itself to the summary
(means, medians, pooled IoU, the shares at >= 95/97/99 % IoU, per group, worst cases).

Groups: the dataset's clusters (``cluster_name``, from ``clearbg cluster``) when it has them,
else its ``product_type`` column, else one group ``all``.

Example:
    >>> ev = evaluate_model("u2netp", "data/fashion-320:test")  # doctest: +SKIP
    >>> ev.summary()["overall"]["iou_mean"]  # doctest: +SKIP
    0.861
    >>> ev.save("eval/u2netp")  # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from clearbg import storage
from clearbg.data.manifest import DatasetError, read_info, read_manifest
from clearbg.errors import ClearbgError
from clearbg.evaluate.image_metrics import METRIC_KEYS, image_metrics
from clearbg.evaluate.settings import SPLITS, EvalSettings, package_version, parse_data_arg

__all__ = [
    "GROUP_COLUMN",
    "SPLITS",
    "THUMBNAIL_SIZE",
    "Evaluation",
    "aggregate",
    "evaluate_model",
    "load_pair",
    "parse_data_arg",
    "thumbnail_size",
]

GROUP_COLUMN = "group"
THUMBNAIL_SIZE = 192  # long side (px) of the prediction thumbnails kept for the report
SHARE_BARS = (95, 97, 99)  # the seed's headline figures: share of images at >= 95/97/99 % IoU
SUMMARY_FILE, PER_IMAGE_FILE, THUMBNAILS_FILE = "summary.json", "per_image.csv", "thumbnails.npz"
_INFO_COLUMNS = ("id", GROUP_COLUMN, "image", "mask")  # per_image columns before the metrics


# --------------------------------------------------------------------------- arguments


def thumbnail_size(width: int, height: int, long_side: int = THUMBNAIL_SIZE) -> tuple[int, int]:
    """(width, height) of a thumbnail with the given long side, aspect kept, never enlarged.

    Example:
        >>> thumbnail_size(550, 832)
        (127, 192)
    """
    scale = min(1.0, long_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


# --------------------------------------------------------------------------- aggregates


def aggregate(per_image: pd.DataFrame) -> dict[str, float]:
    """Reduce per-image rows (the columns of ``image_metrics``) to one set of figures.

    Means and medians of per-image scores, ``iou_pooled``/``dice_pooled`` from the summed
    counts (large products weigh more), and ``share_iou_95/97/99``: the share of images whose
    IoU is at least 0.95 / 0.97 / 0.99.

    Example:
        >>> rows = pd.DataFrame({"iou": [1.0, 0.96, 0.5], "tp": [4, 24, 1], "fp": [0, 1, 1],
        ...                      "fn": [0, 0, 0], "tn": [0, 0, 0]})
        >>> figures = aggregate(rows)
        >>> figures["n"], figures["iou_median"], round(figures["share_iou_95"], 4)
        (3, 0.96, 0.6667)
        >>> figures["iou_pooled"]  # 29 / 31
        0.9354838709677419
    """
    from clearbg.evaluate.metrics import dice_from_counts, iou_from_counts

    out: dict[str, float] = {"n": int(len(per_image))}
    if per_image.empty:
        return out
    iou = per_image["iou"].to_numpy(dtype=float)
    counts = per_image[["tp", "fp", "fn", "tn"]].to_numpy(dtype=np.int64).sum(0)
    out["iou_mean"] = float(iou.mean())
    out["iou_median"] = float(np.median(iou))
    out["iou_pooled"] = float(iou_from_counts(counts))
    out["dice_pooled"] = float(dice_from_counts(counts))
    for key in ("dice", "precision", "recall", "mae", "boundary_f", "error_regions"):
        if key in per_image:
            out[f"{key}_mean"] = float(per_image[key].mean())
    for bar in SHARE_BARS:
        out[f"share_iou_{bar}"] = float((iou >= bar / 100).mean())
    return out


# --------------------------------------------------------------------------- the result


@dataclass
class Evaluation:
    """One model scored on one split: per-image rows, thumbnails and how it was run.

    Attributes:
        model: display name (``u2netp``, ``runs/x/best.pt``, ``models:/shop@champion``).
        data: ``DATASET:split``.
        per_image: one row per image: ``id``, ``group``, ``image`` and ``mask`` (source URIs)
            and every :data:`~clearbg.evaluate.image_metrics.METRIC_KEYS` column.
        thumbnails: id -> uint8 (h, w) predicted probability (0..255), long side <=
            :data:`THUMBNAIL_SIZE`; kept for the lowest-IoU images (all of a small split).
        settings: threshold, boundary_tolerance, precision, device, spec, timing ...
        failed: id -> why an image could not be scored (unreadable photo or mask ...).
    """

    model: str
    data: str
    per_image: pd.DataFrame
    thumbnails: dict[str, np.ndarray] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def summary(self, worst_k: int = 12) -> dict[str, Any]:
        """The figures a person reads: overall, per group, and the worst images.

        Args:
            worst_k: how many of the lowest-IoU ids to list.

        Returns:
            ``{"model", "data", "n", "failed", "overall": {...}, "groups": {name: {...}},
            "worst": [ids, lowest IoU first], "settings"}``; the figure keys are those of
            :func:`aggregate` (``iou_mean``, ``iou_median``, ``iou_pooled``, ``share_iou_95`` ...).

        Example:
            >>> ev.summary()["groups"]["light"]["share_iou_95"]  # doctest: +SKIP
            0.42
        """
        frame = self.per_image
        groups = (
            {str(name): aggregate(rows) for name, rows in frame.groupby(GROUP_COLUMN, sort=True)}
            if not frame.empty
            else {}
        )
        worst = frame.sort_values(["iou", "id"], kind="stable")["id"].head(worst_k).astype(str).tolist()
        return {
            "model": self.model,
            "data": self.data,
            "n": int(len(frame)),
            "failed": len(self.failed),
            "overall": aggregate(frame),
            "groups": groups,
            "worst": worst,
            "settings": self.settings,
        }

    def save(self, folder: str) -> None:
        """Write ``summary.json``, ``per_image.csv`` and ``thumbnails.npz`` into ``folder``
        (local or s3://), each atomically; :meth:`load` reads them back.

        Example:
            >>> ev.save("eval/u2netp")  # doctest: +SKIP
        """
        summary = {**self.summary(), "failed_images": self.failed}
        storage.write_bytes(storage.join(folder, SUMMARY_FILE), json.dumps(summary, indent=2, default=str).encode())
        storage.write_bytes(storage.join(folder, PER_IMAGE_FILE), self.per_image.to_csv(index=False).encode())
        ids = sorted(self.thumbnails)
        buffer = io.BytesIO()
        # Ids may hold "/" (nested source folders), so arrays are stored by position.
        np.savez_compressed(
            buffer, ids=np.array(ids, dtype=str), **{f"t{i}": self.thumbnails[k] for i, k in enumerate(ids)}
        )
        storage.write_bytes(storage.join(folder, THUMBNAILS_FILE), buffer.getvalue())

    @classmethod
    def load(cls, folder: str) -> Evaluation:
        """Read an evaluation written by :meth:`save`.

        Raises:
            ClearbgError: the folder holds no saved evaluation.

        Example:
            >>> Evaluation.load("eval/u2netp").summary()["overall"]["iou_mean"]  # doctest: +SKIP
            0.861
        """
        summary_uri = storage.join(folder, SUMMARY_FILE)
        if not storage.exists(summary_uri):
            raise ClearbgError(f"no {SUMMARY_FILE} in {folder}: write one with `clearbg evaluate ... --out {folder}`")
        summary = json.loads(storage.read_bytes(summary_uri))
        per_image = pd.read_csv(
            io.BytesIO(storage.read_bytes(storage.join(folder, PER_IMAGE_FILE))),
            dtype={"id": str, GROUP_COLUMN: str, "image": str, "mask": str},
            keep_default_na=False,
            float_precision="round_trip",
        )
        thumbnails: dict[str, np.ndarray] = {}
        thumbs_uri = storage.join(folder, THUMBNAILS_FILE)
        if storage.exists(thumbs_uri):
            with np.load(io.BytesIO(storage.read_bytes(thumbs_uri))) as npz:
                thumbnails = {str(k): npz[f"t{i}"] for i, k in enumerate(npz["ids"])}
        return cls(
            model=summary["model"],
            data=summary["data"],
            per_image=per_image,
            thumbnails=thumbnails,
            settings=summary.get("settings", {}),
            failed=summary.get("failed_images", {}),
        )


# --------------------------------------------------------------------------- the run


def evaluate_model(
    model: Any,
    data: str,
    split: str = "test",
    settings: EvalSettings | None = None,
    *,
    progress: bool | None = None,
    name: str | None = None,
    keep_thumbnails: int = 1000,
) -> Evaluation:
    """Predict every photo of a split at full resolution and score it against its original mask.

    Args:
        model: any model reference the hub resolves (``u2netp``, ``runs/x/best.pt``, ``.pth``,
            ``.onnx``, ``models:/NAME@ALIAS``, ``runs:/...``), an ``nn.Module``, or a ``Predictor``.
        data: a prepared dataset (folder or s3://), optionally ``DATASET:split``.
        split: ``test`` (default), ``val``, ``train`` or ``all``; a split in ``data`` wins.
        settings: how to score (:class:`EvalSettings`; default fp32, threshold 0.5).
        progress: show a progress bar (default: when stderr is a terminal).
        name: the display name (default: ``model`` as given, or the spec's name for a module).
        keep_thumbnails: keep prediction thumbnails of at most this many lowest-IoU images.

    Returns:
        An :class:`Evaluation`.

    Raises:
        ClearbgError: unknown or empty split; a manifest without source paths, or whose
            sources cannot be reached from here; the model is not found (``UnknownModel``)
            or its weights are not cached (``WeightsNotFound``); no image could be scored.

    Example:
        >>> ev = evaluate_model("u2netp", "data/fashion-320:test", settings=EvalSettings(limit=8))  # doctest: +SKIP
        >>> ev.per_image[["id", "group", "iou", "boundary_f"]].head(2)  # doctest: +SKIP
    """
    settings = settings or EvalSettings()
    dataset, split = parse_data_arg(data, default_split=split)
    rows = split_rows(dataset, split, settings.limit)
    predictor, display = _predictor(model, name, settings)
    started = time.monotonic()
    show = sys.stderr.isatty() if progress is None else progress
    records, thumbnails, failed = score_photos(predictor, rows, clean_options(dataset), settings,
                                               progress=show, label=f"evaluate {display}",
                                               keep_thumbnails=keep_thumbnails)
    if not records:
        first = next(iter(failed.items()))
        raise ClearbgError(
            f"none of the {len(failed)} images of {dataset}:{split} could be scored; e.g. {first[0]}: {first[1]}"
        )
    seconds = time.monotonic() - started
    per_image = pd.DataFrame.from_records(records, columns=[*_INFO_COLUMNS, *METRIC_KEYS])
    per_image = per_image.sort_values("id", kind="stable").reset_index(drop=True)
    record = {
        "dataset": dataset,
        "split": split,
        "threshold": settings.threshold,
        "boundary_tolerance": settings.boundary_tolerance,
        "precision": predictor.precision,
        "tta": predictor.tta,
        "device": str(predictor.device),
        "spec": predictor.spec.name,
        "input_size": predictor.input_size,
        "mask_options": asdict(clean_options(dataset)),  # how truth masks were binarised
        "limit": settings.limit,
        "seconds": round(seconds, 2),
        "images_per_s": round(len(records) / seconds, 3) if seconds else None,
        "clearbg_version": package_version(),
    }
    return Evaluation(
        model=display,
        data=f"{dataset}:{split}",
        per_image=per_image,
        thumbnails=_keep_lowest(thumbnails, records, keep_thumbnails),
        settings=record,
        failed=failed,
    )


def score_photos(predictor: Any, rows: pd.DataFrame, options: Any, settings: EvalSettings, *,
                 progress: bool = False, label: str = "evaluate", keep_thumbnails: int = 1000,
                 ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], dict[str, str]]:
    """Predict each row's photo at full resolution and score it against its original mask.

    The scoring both ``evaluate_model`` and training's validation run, so the two report the
    same numbers for the same model and photos.

    Args:
        predictor: a ``Predictor``.
        rows: ``id``, ``group``, ``image``, ``mask`` (from :func:`split_rows`).
        options: how truth masks are binarised (:func:`clean_options`).
        settings: threshold and boundary tolerance.
        progress, label: a tqdm bar and its label.
        keep_thumbnails: keep prediction thumbnails of at most this many lowest-IoU images.

    Returns:
        (one metrics record per scored photo, id -> thumbnail, id -> why it could not be scored).
    """
    from tqdm import tqdm

    threshold, boundary_tolerance = settings.threshold, settings.boundary_tolerance
    records: list[dict[str, Any]] = []
    thumbnails: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}
    chunk = max(8, 2 * predictor.batch_size)
    items = rows.to_dict("records")

    def load(row: dict[str, Any]) -> tuple[dict[str, Any], Image.Image | None, np.ndarray | None, str]:
        try:
            photo, truth = load_pair(row["image"], row["mask"], options)
            return row, photo, truth, ""
        except ClearbgError as err:
            return row, None, None, str(err)

    def score(item: tuple[dict[str, Any], Image.Image, np.ndarray, np.ndarray]) -> tuple[dict[str, Any], np.ndarray]:
        row, photo, truth, prob = item
        scores = image_metrics(prob, truth, threshold=threshold, boundary_tolerance=boundary_tolerance)
        thumb = Image.fromarray(np.rint(prob * 255).astype(np.uint8)).resize(
            thumbnail_size(photo.width, photo.height), Image.Resampling.BILINEAR, reducing_gap=2.0
        )
        record = {
            "id": row["id"],
            GROUP_COLUMN: row[GROUP_COLUMN],
            "image": row["image"],
            "mask": row["mask"],
            **scores,
        }
        return record, np.asarray(thumb)

    with tqdm(total=len(items), desc=label, unit="img", disable=not progress) as bar:
        for start in range(0, len(items), chunk):
            loaded = predictor.map(load, items[start : start + chunk])
            good = [item for item in loaded if not item[3]]
            failed.update({item[0]["id"]: item[3] for item in loaded if item[3]})
            probs = predictor.predict([item[1] for item in good])
            for record, thumb in predictor.map(
                score, [(r, p, t, prob) for (r, p, t, _), prob in zip(good, probs, strict=True)]
            ):
                records.append(record)
                thumbnails[record["id"]] = thumb
            if len(thumbnails) > 2 * keep_thumbnails:
                thumbnails = _keep_lowest(thumbnails, records, keep_thumbnails)
            bar.update(len(loaded))
    return records, _keep_lowest(thumbnails, records, keep_thumbnails), failed


def _keep_lowest(thumbnails: dict[str, np.ndarray], records: list[dict[str, Any]], keep: int) -> dict[str, np.ndarray]:
    """The thumbnails of the ``keep`` lowest-IoU images (the ones a report shows)."""
    if len(thumbnails) <= keep:
        return thumbnails
    ranked = sorted((r["iou"], r["id"]) for r in records if r["id"] in thumbnails)
    return {i: thumbnails[i] for _, i in ranked[:keep]}


# --------------------------------------------------------------------------- data


def split_rows(dataset: str, split: str, limit: int | None) -> pd.DataFrame:
    """id, group, image, mask (source URIs resolved) of the split's rows, sorted by id."""
    manifest = read_manifest(dataset)
    missing = [c for c in ("src_image", "src_mask") if c not in manifest]
    if missing:
        raise DatasetError(
            f"the manifest of {dataset} has no {' / '.join(missing)} column, so the original photos "
            "and masks cannot be found; prepare it again with `clearbg prepare SRC --out DIR`"
        )
    if split != "all":
        if "split" not in manifest:
            raise DatasetError(f"the manifest of {dataset} has no 'split' column; evaluate with {dataset}:all")
        rows = manifest[manifest["split"] == split]
        if rows.empty:
            sizes = manifest["split"].dropna().astype(str).value_counts().sort_index()
            listed = ", ".join(f"{name} ({count})" for name, count in sizes.items()) or "none"
            raise DatasetError(f"split {split!r} of {dataset} is empty; its splits are {listed}")
    else:
        rows = manifest
    if rows.empty:
        raise DatasetError(f"{dataset} has no images")
    rows = rows.sort_values("id", kind="stable")
    if limit is not None:
        rows = rows.head(max(1, int(limit)))
    out = pd.DataFrame(
        {
            "id": rows["id"].astype(str).to_numpy(),
            GROUP_COLUMN: _groups(rows),
            "image": [_resolve(u, dataset) for u in rows["src_image"]],
            "mask": [_resolve(u, dataset) for u in rows["src_mask"]],
        }
    )
    first = out.iloc[0]
    for column, kind in (("image", "photo"), ("mask", "mask")):
        if not first[column] or not storage.exists(first[column]):
            raise DatasetError(
                f"the original {kind} of {first['id']} ({rows.iloc[0]['src_' + column]!r}) cannot be reached "
                f"from {os.getcwd()} nor from {dataset}; run from the folder `clearbg prepare` ran in, "
                "or make the source reachable (e.g. mount it or set CLEARBG_S3_ENDPOINT_URL)"
            )
    return out


def _groups(rows: pd.DataFrame) -> list[str]:
    """The report's group of each row: cluster name, else product type, else ``all``."""
    for column in ("cluster_name", "product_type"):
        if column in rows and rows[column].notna().any():
            return ["unknown" if pd.isna(v) or v == "" else str(v) for v in rows[column]]
    return ["all"] * len(rows)


def _resolve(uri: Any, dataset: str) -> str:
    """A source path from the manifest, made reachable: remote and absolute paths as they are;
    a relative one (from a manifest written before paths were made absolute) as seen from the
    working folder, else from the dataset folder."""
    if not isinstance(uri, str) or not uri:
        return ""
    if storage.is_remote(uri) or os.path.isabs(uri) or os.path.exists(uri):
        return uri
    beside = storage.join(dataset, uri)
    return beside if storage.exists(beside) else uri


def clean_options(dataset: str):
    """The mask options the dataset was prepared with (threshold, multi-label rule)."""
    from clearbg.data.clean import CleanOptions

    try:
        info = read_info(dataset)
    except DatasetError:
        return CleanOptions()  # a bare manifest: prepare's defaults are what made it
    return CleanOptions(**info.get("config", {}).get("clean", {}))


def load_pair(image: str, mask: str, options: Any = None) -> tuple[Image.Image, np.ndarray]:
    """The upright photo and its truth mask, read and binarised as ``clearbg prepare`` does.

    Args:
        image: the photo's path or URI (a manifest's ``src_image``).
        mask: the mask's path or URI (``src_mask``).
        options: the dataset's ``CleanOptions`` (mask threshold, multi-label rule); default
            ``CleanOptions()``.

    Returns:
        ``(photo, truth)``: RGB or RGBA PIL image and (H, W) bool mask of the same size.

    Raises:
        ClearbgError: a file is missing or unreadable (``StorageError``, ``ImageError``), or
            the mask's size differs from the photo's (``DatasetError``).

    Example:
        >>> photo, truth = load_pair("fashion/images/ccp_0001.jpg", "fashion/masks/ccp_0001.png")  # doctest: +SKIP
        >>> truth.shape == (photo.height, photo.width)  # doctest: +SKIP
        True
    """
    from clearbg.data.clean import CleanOptions, binarise_mask, decode_mask
    from clearbg.imageio import open_image

    options = options or CleanOptions()
    photo = open_image(storage.read_bytes(image), max_pixels=options.max_pixels, name=image)
    values = decode_mask(storage.read_bytes(mask), name=mask, max_pixels=options.max_pixels)
    if values.shape != (photo.height, photo.width):
        raise DatasetError(
            f"{mask} is {values.shape[1]}x{values.shape[0]} but its photo is {photo.width}x{photo.height}"
        )
    return photo, binarise_mask(values, options)[0] > 0


# --------------------------------------------------------------------------- model


def _predictor(model: Any, name: str | None, settings: EvalSettings):
    """A Predictor for any model reference (or the one given), and the name to show for it."""
    from clearbg.inference.predictor import Predictor

    if isinstance(model, Predictor):
        return model, name or model.spec.name
    try:
        predictor = Predictor(model, device=settings.device, precision=settings.precision,
                              batch_size=settings.batch_size, tta=settings.tta)
    except ValueError as err:  # a precision Predictor does not know
        raise ClearbgError(str(err)) from err
    return predictor, name or (predictor.spec.name if not isinstance(model, (str, os.PathLike)) else str(model))
