"""Which training items each rank sees: seeded shards that resume mid-epoch exactly."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from clearbg.data.balance import BalancedSampler


class ShardSampler(torch.utils.data.Sampler[int]):
    """This rank's part of a base order, from position ``skip`` on (exact mid-epoch resume).

    The base order is a seeded permutation (or a balanced draw) of the whole split for the
    epoch; rank r takes every world_size-th index starting at r, padded by wrapping so all
    ranks run the same number of steps (as DistributedSampler does).
    """

    def __init__(self, n: int, seed: int, rank: int, world: int, weights: np.ndarray | None = None):
        self.n, self.seed, self.rank, self.world, self.weights = n, seed, rank, world, weights
        self.epoch, self.skip = 0, 0
        self.per_rank = math.ceil(n / world)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = int(epoch), int(skip)

    def order(self) -> list[int]:
        if self.weights is not None:
            sampler = BalancedSampler(self.weights, num_samples=self.n, seed=self.seed)
            sampler.set_epoch(self.epoch)
            full = list(sampler)
        else:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            full = torch.randperm(self.n, generator=g).tolist()
        full += full[: self.per_rank * self.world - len(full)]
        return full[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.skip :])

    def __len__(self) -> int:
        return self.per_rank - self.skip
