"""The torch Dataset over a prepared dataset folder, with reproducible on-the-fly augmentation.

A prepared dataset (``clearbg prepare``, see ``clearbg.data.manifest``) holds
``<W>x<H>/images/<id>.png`` and ``<W>x<H>/masks/<id>.png`` for every manifest row.
``PairDataset`` decodes one pair per item and augments it with ``clearbg.data.augment``.

Randomness: item ``i`` in epoch ``e`` uses ``np.random.default_rng([seed, e, i])`` and nothing
else, so a sample is the same whatever the number of DataLoader workers, their order, or
whether a run was resumed. Call ``set_epoch(e)`` before each epoch, as with a
DistributedSampler. The dataset object is copied into worker processes when a DataLoader
starts its workers, so with ``persistent_workers=True`` a later ``set_epoch`` does not reach
them: keep persistent workers off (the default) or make a new DataLoader per epoch.

Tensors are in [0, 1]; normalising to a model's mean/std is the training loop's job (it knows
the model), not the dataset's.

Example:
    >>> ds = PairDataset("data/fashion-prepared", split="train", augment=AugmentConfig(), seed=0)
    >>> loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True, num_workers=2)
    >>> for epoch in range(10):
    ...     ds.set_epoch(epoch)
    ...     for batch in loader:  # batch["image"]: (8, 3, H, W) float32, batch["mask"]: (8, 1, H, W)
    ...         ...
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from PIL import Image

from clearbg import storage
from clearbg.data.augment import AugmentConfig, augment, crop_resize, outline
from clearbg.data.manifest import DatasetError, read_info, read_manifest, size_dir

__all__ = ["PairDataset", "write_augment_preview"]


def _as_size(size: tuple[int, int] | list[int] | int) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    width, height = (int(v) for v in size)
    return (width, height)


def _folder_size(available: list[tuple[int, int]], wanted: tuple[int, int]) -> tuple[int, int]:
    """The prepared size to read for output ``wanted``: itself, else the smallest that is at
    least as large (downscaling keeps detail), else the largest."""
    if wanted in available:
        return wanted
    larger = [s for s in available if s[0] >= wanted[0] and s[1] >= wanted[1]]
    if larger:
        return min(larger, key=lambda s: s[0] * s[1])
    return max(available, key=lambda s: s[0] * s[1])


class PairDataset(torch.utils.data.Dataset):
    """(photo, mask) pairs of a prepared dataset as tensors, augmented on the fly.

    Args:
        dataset: the prepared dataset folder (local path or ``s3://`` prefix).
        split: keep rows whose ``split`` column equals this (``"train"``, ``"val"``, ``"test"``);
            None keeps every row.
        size: output (width, height), or one int for a square; default the dataset's first
            prepared size. Another size is resized from the nearest prepared one.
        augment: augmentation settings; None = ``AugmentConfig.none()`` (resize only, for
            validation).
        seed: base seed; item ``i`` of epoch ``e`` uses ``default_rng([seed, e, i])``.
        manifest: use this table instead of the dataset's ``manifest.parquet`` (e.g. a balanced
            resample, where rows may repeat); needs ``id``, ``image``, ``mask``, and ``split``
            when ``split`` is given.
        masks: pair id -> mask URI to use instead of the prepared mask, at the prepared size (soft
            training targets, e.g. a teacher's blend for distillation).

    Items are dicts (the default collate stacks them):
        ``image``: float32 (3, H, W) in [0, 1], RGB, not normalised (the training loop applies
        the model's mean/std); ``mask``: float32 (1, H, W), 0 or 1 (in [0, 1] for soft masks);
        ``id``: the pair's id; ``index``: the item's index.

    Raises:
        DatasetError: No dataset.json or manifest, no prepared sizes, missing columns, or no
            row in ``split``.

    Example:
        >>> ds = PairDataset("prepared/", split="val")
        >>> ds[0]["image"].shape
        torch.Size([3, 320, 320])
    """

    def __init__(
        self,
        dataset: str,
        split: str | None = "train",
        size: tuple[int, int] | int | None = None,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        manifest: pd.DataFrame | None = None,
        masks: Mapping[str, str] | None = None,
    ) -> None:
        self.dataset = str(dataset)
        info = read_info(self.dataset)
        try:
            sizes = [_as_size(s) for s in info.get("sizes") or []]
        except (TypeError, ValueError) as err:
            raise DatasetError(f"{self.dataset}: 'sizes' in dataset.json must be [[W, H], ...], got {info.get('sizes')!r}") from err
        if not sizes:
            raise DatasetError(f"{self.dataset}: dataset.json lists no prepared sizes; re-run `clearbg prepare`")
        self.size = _as_size(size) if size is not None else sizes[0]
        self.folder = storage.join(self.dataset, size_dir(*_folder_size(sizes, self.size)))

        frame = manifest if manifest is not None else read_manifest(self.dataset)
        missing = [c for c in ("id", "image", "mask") if c not in frame.columns]
        if missing:
            raise DatasetError(f"manifest of {self.dataset} lacks column(s) {', '.join(missing)}")
        if split is not None:
            if "split" not in frame.columns:
                raise DatasetError(f"manifest of {self.dataset} has no 'split' column; pass split=None to use all rows")
            present = sorted({str(v) for v in frame["split"]})
            frame = frame[frame["split"] == split]
            if frame.empty:
                raise DatasetError(
                    f"no pairs in {self.dataset} for split {split!r} (splits present: {', '.join(present) or 'none'}); "
                    "the split comes from the source's split column when it has one: to split the pairs "
                    f"yourself, prepare again with `clearbg prepare SOURCE --out {self.dataset} --split 0.8,0.1,0.1 --restart`"
                )
        if frame.empty:
            raise DatasetError(f"the manifest of {self.dataset} has no rows")
        self.frame = frame.reset_index(drop=True)
        self._ids = [str(v) for v in self.frame["id"]]
        self._images = [storage.join(self.folder, str(p)) for p in self.frame["image"]]
        self._masks = [storage.join(self.folder, str(p)) for p in self.frame["mask"]]
        if masks:
            self._masks = [masks.get(i, default) for i, default in zip(self._ids, self._masks)]
        self.augment = augment if augment is not None else AugmentConfig.none()
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        """Pair ids in item order."""
        return list(self._ids)

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s augmentations from now on (call before each epoch)."""
        self.epoch = int(epoch)

    def rng(self, index: int, epoch: int | None = None) -> np.random.Generator:
        """The generator for item ``index`` in ``epoch`` (default: the current epoch)."""
        return np.random.default_rng([self.seed, self.epoch if epoch is None else int(epoch), int(index)])

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The stored (photo HxWx3 uint8 RGB, mask HxW uint8) of item ``index``, not augmented.

        Raises:
            DatasetError: A file is missing or cannot be decoded.
            StorageError: A remote read failed.
        """
        index = self._check_index(index)
        photo = self._decode(self._images[index], "RGB")
        mask = self._decode(self._masks[index], "L")
        if photo.shape[:2] != mask.shape:
            raise DatasetError(
                f"{self._ids[index]}: photo {photo.shape[1]}x{photo.shape[0]} and mask "
                f"{mask.shape[1]}x{mask.shape[0]} differ in {self.folder}; re-run `clearbg prepare`"
            )
        return photo, mask

    def arrays(self, index: int, epoch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Item ``index`` augmented as numpy arrays (photo HxWx3 uint8, mask HxW uint8)."""
        index = self._check_index(index)
        rng = self.rng(index, epoch)
        photo, mask = self.load_pair(index)
        other = None
        if len(self) > 1:
            def other():  # the partner comes from the same rng, so it is reproducible too
                partner = int(rng.integers(len(self) - 1))
                return self.load_pair(partner + (partner >= index))  # never the item itself
        return augment(photo, mask, rng, self.augment, self.size, other)

    def __getitem__(self, index: int) -> dict:
        index = self._check_index(index)
        photo, mask = self.arrays(index)
        image = torch.from_numpy(np.ascontiguousarray(photo.transpose(2, 0, 1))).float().div_(255)
        target = torch.from_numpy(mask.astype(np.float32) / 255)[None]  # a new array: soft masks may be read-only
        return {"image": image, "mask": target, "id": self._ids[index], "index": index}

    def _check_index(self, index: int) -> int:
        index = int(index)
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} pairs")
        return index

    def _decode(self, uri: str, mode: str) -> np.ndarray:
        data = storage.read_bytes(uri)
        try:
            with Image.open(io.BytesIO(data)) as img:
                img = img.convert(mode) if img.mode != mode else img
                return np.array(img)  # a writable copy: torch.from_numpy warns on read-only arrays
        except Exception as err:  # noqa: BLE001 - Pillow raises many types on corrupt files
            raise DatasetError(f"cannot decode {uri}: {err}; re-run `clearbg prepare` for this dataset") from err


def write_augment_preview(
    dataset: str,
    out: str,
    n: int = 16,
    versions: int = 4,
    seed: int = 0,
    size: tuple[int, int] | int | None = None,
    strength: float = 1.0,
    split: str | None = None,
    gap: int = 4,
    augment: AugmentConfig | None = None,
) -> list[str]:
    """Write a PNG grid to look at augmentation: one row per sampled pair, the original then
    ``versions`` augmented versions, each with the mask's outline drawn in magenta.

    The grid is ``(1 + versions) * W + (2 + versions) * gap`` wide and ``rows * H +
    (rows + 1) * gap`` high, with ``rows = min(n, pairs)``. Written atomically (local or s3://).

    Args:
        dataset: the prepared dataset folder.
        out: the PNG to write.
        n: pairs to sample (without replacement).
        versions: augmented versions per pair (epochs 0..versions-1 of the dataset's rng).
        seed: picks the pairs and seeds the augmentation.
        size: output size per cell (see PairDataset).
        strength: ``AugmentConfig.strength`` (when ``augment`` is not given).
        split: only rows of this split (None: all).
        gap: pixels between cells.
        augment: the whole augmentation config (e.g. a training config's ``augment``).

    Returns:
        The ids shown, top to bottom.

    Example:
        >>> write_augment_preview("prepared/", "grid.png", n=8)
    """
    from clearbg.imageio import encode_image

    augment = augment if augment is not None else AugmentConfig(strength=strength)
    ds = PairDataset(dataset, split=split, size=size, augment=augment, seed=seed)
    rows = min(int(n), len(ds))
    picked = np.random.default_rng(seed).choice(len(ds), size=rows, replace=False)
    width, height = ds.size
    cols = 1 + versions
    grid = np.full((rows * height + (rows + 1) * gap, cols * width + (cols + 1) * gap, 3), 40, dtype=np.uint8)
    for r, index in enumerate(picked):
        photo, mask = ds.load_pair(int(index))
        h, w = mask.shape
        cells = [crop_resize(photo, mask, (0.0, 0.0, float(w), float(h)), ds.size)]
        cells += [ds.arrays(int(index), epoch=e) for e in range(versions)]
        y = gap + r * (height + gap)
        for c, (p, m) in enumerate(cells):
            x = gap + c * (width + gap)
            grid[y : y + height, x : x + width] = outline(p, m)
    storage.write_bytes(out, encode_image(Image.fromarray(grid), "png"))
    return [ds.ids[int(i)] for i in picked]
