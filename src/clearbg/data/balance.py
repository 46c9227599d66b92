"""Give each product-type cluster a chosen share of training, whatever its size.

Product types are unbalanced (the Wehkamp seed: "making our model prone to perform worse for
the product types underrepresented"), so training draws pairs by cluster rather than
uniformly. Three tools, one rule:

* ``cluster_weights(clusters, shares)``: a sampling weight per row such that the rows of each
  cluster add up to its share (default: equal shares; a partial ``shares`` leaves the rest to
  the other clusters in equal parts).
* ``BalancedSampler``: a ``torch.utils.data.Sampler`` drawing from those weights, reproducible
  under a seed and ``set_epoch`` (a new draw every epoch, the same one on every rerun).
* ``resample_manifest(frame, shares, n, seed)``: a resampled manifest for tools that read a
  table rather than take a sampler; per-cluster counts are exact, not drawn.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Sampler

from clearbg.errors import ClearbgError

__all__ = ["BalanceError", "BalancedSampler", "cluster_shares", "cluster_weights", "resample_manifest"]


class BalanceError(ClearbgError, ValueError):
    """Shares that cannot be honoured: unknown clusters, negative, or not summing to 1."""


def _labels(clusters: Sequence[Any]) -> np.ndarray:
    values = pd.Series(list(clusters) if not isinstance(clusters, pd.Series) else clusters, dtype=object)
    if values.isna().any():
        raise BalanceError(
            f"{int(values.isna().sum())} rows have no cluster; run `clearbg cluster DATASET` first"
        )
    return values.to_numpy()


def cluster_shares(clusters: Sequence[Any], shares: Mapping[Any, float] | None = None) -> dict[Any, float]:
    """The share of every cluster present in ``clusters``, after filling in the unnamed ones.

    Args:
        clusters: cluster of each row (ids or names, e.g. the manifest's ``cluster`` or
            ``cluster_name`` column).
        shares: share per cluster (0..1); clusters left out split the rest equally. A key
            matches a cluster equal to it or written the same (``"3"`` matches ``3``).

    Returns:
        cluster -> share, summing to 1, in order of first appearance.

    Raises:
        BalanceError: a key names no cluster, a share is negative or not a number, the shares
            sum to more than 1, or every cluster is named and they sum to less than 1.

    Example:
        >>> cluster_shares(["a", "b", "b", "c"], {"a": 0.5})
        {'a': 0.5, 'b': 0.25, 'c': 0.25}
    """
    values = _labels(clusters)
    present = list(dict.fromkeys(values.tolist()))
    if not present:
        raise BalanceError("no rows to balance")
    by_text = {str(c): c for c in present}
    resolved: dict[Any, float] = {}
    for key, share in (shares or {}).items():
        cluster = key if key in present else by_text.get(str(key))
        if cluster is None:
            raise BalanceError(f"share for {key!r}, but there is no such cluster; clusters: {', '.join(map(str, present))}")
        if cluster in resolved:
            raise BalanceError(f"two shares for cluster {cluster!r}")
        try:
            share = float(share)
        except (TypeError, ValueError) as err:
            raise BalanceError(f"share for {key!r} is not a number: {share!r}") from err
        if not math.isfinite(share) or share < 0:
            raise BalanceError(f"share for {key!r} must be between 0 and 1, got {share}")
        resolved[cluster] = share
    total = sum(resolved.values())
    if total > 1 + 1e-9:
        raise BalanceError(f"shares sum to {total:.4g}, more than 1: {resolved}")
    rest = [c for c in present if c not in resolved]
    if not rest and total < 1 - 1e-9:
        raise BalanceError(f"shares name every cluster but sum to {total:.4g}; they must sum to 1")
    left = max(0.0, 1.0 - total)  # may be 0: the unnamed clusters then get nothing, like an explicit 0
    return {c: resolved[c] if c in resolved else left / len(rest) for c in present}


def cluster_weights(clusters: Sequence[Any], shares: Mapping[Any, float] | None = None) -> np.ndarray:
    """Per-row sampling weights giving each cluster its share.

    A row of cluster ``c`` weighs ``share[c] / size[c]``, so the weights sum to 1 and a draw
    lands in ``c`` with probability ``share[c]``.

    Args:
        clusters: cluster of each row.
        shares: see ``cluster_shares`` (default: every cluster the same share).

    Returns:
        float64 (n,) weights summing to 1.

    Raises:
        BalanceError: see ``cluster_shares``.

    Example:
        >>> cluster_weights([0, 0, 0, 1]).round(3).tolist()
        [0.167, 0.167, 0.167, 0.5]
    """
    values = _labels(clusters)
    resolved = cluster_shares(values, shares)
    sizes = pd.Series(values).value_counts()
    return np.array([resolved[c] / sizes[c] for c in values], np.float64)


class BalancedSampler(Sampler[int]):
    """Draw row indices with given weights (e.g. ``cluster_weights``), reproducibly.

    Every epoch is a fresh draw seeded by ``(seed, epoch)``: call ``set_epoch(epoch)`` before
    each epoch (as with ``DistributedSampler``); the same seed and epoch give the same indices.

    Args:
        weights: non-negative weight per row (need not sum to 1).
        num_samples: indices per epoch (default: the number of rows).
        replacement: draw with replacement (default). Without it a row appears at most once
            per epoch, so a small cluster cannot reach a large share.
        seed: base seed.

    Raises:
        BalanceError: negative or all-zero weights, or more samples than non-zero rows
            without replacement.

    Example:
        >>> sampler = BalancedSampler(cluster_weights([0, 0, 0, 1]), num_samples=8, seed=1)
        >>> sampler.set_epoch(0); len(list(sampler))
        8
    """

    def __init__(
        self,
        weights: Sequence[float] | np.ndarray | torch.Tensor,
        num_samples: int | None = None,
        *,
        replacement: bool = True,
        seed: int = 0,
    ):
        self.weights = torch.as_tensor(np.asarray(weights, np.float64), dtype=torch.float64)
        if self.weights.ndim != 1 or len(self.weights) == 0:
            raise BalanceError("weights must be a non-empty 1-D sequence")
        if not torch.isfinite(self.weights).all() or (self.weights < 0).any():
            raise BalanceError("weights must be finite and >= 0")
        if self.weights.sum() <= 0:
            raise BalanceError("all weights are 0: nothing to draw")
        self.num_samples = len(self.weights) if num_samples is None else int(num_samples)
        if self.num_samples < 1:
            raise BalanceError(f"num_samples must be >= 1, got {num_samples}")
        nonzero = int((self.weights > 0).sum())
        if not replacement and self.num_samples > nonzero:
            raise BalanceError(f"{self.num_samples} samples without replacement from {nonzero} rows with weight > 0")
        self.replacement = replacement
        self.seed = int(seed)
        self.epoch = 0

    @classmethod
    def from_clusters(
        cls,
        clusters: Sequence[Any],
        shares: Mapping[Any, float] | None = None,
        num_samples: int | None = None,
        *,
        replacement: bool = True,
        seed: int = 0,
    ) -> BalancedSampler:
        """``BalancedSampler(cluster_weights(clusters, shares), ...)``."""
        return cls(cluster_weights(clusters, shares), num_samples, replacement=replacement, seed=seed)

    def set_epoch(self, epoch: int) -> None:
        """Choose the draw of this epoch (reproducible; a different one per epoch)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
        drawn = torch.multinomial(self.weights, self.num_samples, self.replacement, generator=generator)
        return iter(drawn.tolist())

    def __len__(self) -> int:
        return self.num_samples


def _mix(seed: int, epoch: int) -> int:
    """One 63-bit seed from (seed, epoch) so that (1, 0) and (0, 1) differ."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def resample_manifest(
    frame: pd.DataFrame,
    shares: Mapping[Any, float] | None = None,
    n: int | None = None,
    seed: int = 0,
    *,
    column: str = "cluster",
) -> pd.DataFrame:
    """A manifest of ``n`` rows in which each cluster has its share (exact counts).

    Counts per cluster are ``share * n`` rounded by largest remainder. Within a cluster every
    row is used once before any is repeated (a cluster asked for 3x its size repeats each row
    3 times); the rows chosen and the final order are shuffled under ``seed``.

    Args:
        frame: a manifest with a ``column`` of clusters (``clearbg cluster`` writes it).
        shares: see ``cluster_shares`` (default: equal shares).
        n: rows of the result (default: as many as ``frame``).
        seed: for which rows are picked and their order.
        column: the cluster column (``cluster`` or ``cluster_name``).

    Returns:
        The resampled rows (index reset); repeated rows are repeated whole.

    Raises:
        BalanceError: no such column, or bad shares (see ``cluster_shares``).

    Example:
        >>> frame = pd.DataFrame({"id": list("abcd"), "cluster": [0, 0, 0, 1]})
        >>> resample_manifest(frame, n=6, seed=0)["cluster"].value_counts().sort_index().tolist()
        [3, 3]
    """
    if column not in frame.columns:
        raise BalanceError(f"the manifest has no {column!r} column; run `clearbg cluster DATASET` first")
    n = len(frame) if n is None else int(n)
    if n < 0:
        raise BalanceError(f"n must be >= 0, got {n}")
    values = _labels(frame[column])
    resolved = cluster_shares(values, shares)
    counts = _largest_remainder([resolved[c] for c in resolved], n)
    rng = np.random.default_rng(seed)
    picked = []
    for cluster, count in zip(resolved, counts):
        rows = np.flatnonzero(values == cluster)
        whole, extra = divmod(count, len(rows))
        picked.append(np.tile(rows, whole))
        picked.append(rng.choice(rows, size=extra, replace=False))
    order = rng.permutation(np.concatenate(picked).astype(np.int64)) if picked else np.array([], np.int64)
    return frame.iloc[order].reset_index(drop=True)


def _largest_remainder(shares: Sequence[float], n: int) -> list[int]:
    """Integer counts summing to ``n`` closest to ``shares * n`` (Hamilton's method)."""
    exact = np.asarray(shares, np.float64) * n
    counts = np.floor(exact).astype(int)
    short = n - counts.sum()
    for i in np.argsort(-(exact - counts), kind="stable")[:short]:
        counts[i] += 1
    return counts.tolist()
