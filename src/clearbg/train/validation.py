"""Validation that measures what users get: the number ``clearbg evaluate`` reports.

Each rank scores its share of the ``val`` split's ORIGINAL photos at full resolution through the
same ``Predictor`` and scoring as ``clearbg evaluate`` (fp32, threshold 0.5, the dataset's mask
rules), then the per-image sums are all-reduced. So ``val/iou`` is the mean per-image IoU that
``clearbg evaluate --model best.pt --data DATASET:val`` prints for the same checkpoint, not a
figure on the prepared 320 px squares, and ``best.pt`` and ``clearbg tune`` select on it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from clearbg.errors import ClearbgError
from clearbg.evaluate.run import GROUP_COLUMN, clean_options, score_photos, split_rows
from clearbg.evaluate.settings import EvalSettings
from clearbg.inference.predictor import Predictor
from clearbg.models.hub import ResolvedModel
from clearbg.models.specs import ModelSpec
from clearbg.train.process_group import all_reduce_sum

SHARE_AT = 0.95  # the seed's headline bar: share of images at >= 95 % IoU


class ValidationSet:
    """The ``val`` split of a prepared dataset as ``clearbg evaluate`` sees it.

    Args:
        dataset: the prepared dataset (its manifest must name the original photos and masks).

    Raises:
        DatasetError: no ``val`` rows, or the originals cannot be reached.
    """

    def __init__(self, dataset: str):
        self.dataset = dataset
        self.rows = split_rows(dataset, "val", None)
        self.options = clean_options(dataset)
        self.groups: list[str] = sorted(set(self.rows[GROUP_COLUMN]))

    def __len__(self) -> int:
        return len(self.rows)

    def shard(self, rank: int, world: int) -> pd.DataFrame:
        """This rank's rows: every ``world``-th from ``rank`` (no padding, no double counting)."""
        return self.rows.iloc[rank::world]


@torch.no_grad()
def validate(model: nn.Module, spec: ModelSpec, val: ValidationSet, device: torch.device, *,
             rank: int = 0, world: int = 1) -> dict[str, float]:
    """Mean per-image IoU / Dice / boundary F at full resolution over the val split, all ranks.

    Args:
        model: the plain model being trained (not the DDP wrapper); it is copied, not changed.
        spec: its spec (preprocessing).
        val: the validation photos.
        device: where to predict.
        rank, world: this process's place in the process group.

    Returns:
        ``iou``, ``dice``, ``boundary_f``, ``share_iou_95`` and ``iou/<group>`` for every group
        with images; the same on every rank.

    Raises:
        ClearbgError: no val photo could be scored on any rank.
    """
    network = copy.deepcopy(model).float().eval().to(memory_format=torch.contiguous_format)
    predictor = Predictor(ResolvedModel(network, spec, "training"), device=str(device), precision="fp32")
    records, _, failed = score_photos(predictor, val.shard(rank, world), val.options, EvalSettings(),
                                      keep_thumbnails=0)
    return _reduce(records, val.groups, failed)


def _reduce(records: Sequence[dict], groups: list[str], failed: dict[str, str]) -> dict[str, float]:
    index = {g: i for i, g in enumerate(groups)}
    # [n, sum iou, sum dice, sum boundary_f, n >= 95 %] then per group [n, sum iou]
    totals = np.zeros(5 + 2 * len(groups), dtype=np.float64)
    for r in records:
        totals[:5] += (1, r["iou"], r["dice"], r["boundary_f"], r["iou"] >= SHARE_AT)
        g = 5 + 2 * index[r[GROUP_COLUMN]]
        totals[g : g + 2] += (1, r["iou"])
    flat = torch.from_numpy(totals)
    all_reduce_sum(flat)
    totals = flat.numpy()
    n = totals[0]
    if n == 0:
        first = next(iter(failed.items()), ("?", "no photos on this rank"))
        raise ClearbgError(f"no validation photo could be scored; e.g. {first[0]}: {first[1]}")
    metrics = {"iou": totals[1] / n, "dice": totals[2] / n, "boundary_f": totals[3] / n,
               "share_iou_95": totals[4] / n, "images": n}
    for g, name in enumerate(groups):
        count, iou_sum = totals[5 + 2 * g : 7 + 2 * g]
        if count:
            metrics[f"iou/{name}"] = iou_sum / count
    return {k: float(v) for k, v in metrics.items()}
