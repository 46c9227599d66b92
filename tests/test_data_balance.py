"""Balancing clusters: weights, the torch sampler and a resampled manifest give each cluster its share."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from torch.utils.data import DataLoader

from clearbg.data.balance import (
    BalancedSampler,
    BalanceError,
    cluster_shares,
    cluster_weights,
    resample_manifest,
)
from clearbg.errors import ClearbgError

# Unbalanced like the fashion set: 188 long pants, 29 shorts, 110 light.
CLUSTERS = np.array([0] * 188 + [1] * 29 + [6] * 110)


def _shares(drawn, clusters=CLUSTERS) -> dict:
    counts = pd.Series(clusters[np.asarray(drawn)]).value_counts(normalize=True)
    return counts.to_dict()


def test_default_weights_give_every_cluster_the_same_share():
    weights = cluster_weights(CLUSTERS)
    assert np.isclose(weights.sum(), 1.0)
    for c in (0, 1, 6):
        assert np.isclose(weights[CLUSTERS == c].sum(), 1 / 3)
    # every row of a cluster weighs the same
    assert np.allclose(weights[CLUSTERS == 1], 1 / 3 / 29)


def test_partial_shares_leave_the_rest_to_the_other_clusters_equally():
    assert cluster_shares(CLUSTERS, {6: 0.5}) == {0: 0.25, 1: 0.25, 6: 0.5}
    weights = cluster_weights(CLUSTERS, {"6": 0.5, 1: 0.1})  # "6" matches cluster 6 (CLI input is text)
    assert np.isclose(weights[CLUSTERS == 6].sum(), 0.5)
    assert np.isclose(weights[CLUSTERS == 1].sum(), 0.1)
    assert np.isclose(weights[CLUSTERS == 0].sum(), 0.4)
    names = ["pants", "shorts", "pants", "light"]
    assert cluster_shares(names, {"light": 0.0}) == {"pants": 0.5, "shorts": 0.5, "light": 0.0}


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        ({7: 0.2}, "no such cluster"),
        ({0: 0.7, 1: 0.5}, "more than 1"),
        ({0: -0.1}, "between 0 and 1"),
        ({0: "lots"}, "not a number"),
        ({0: 0.2, 1: 0.2, 6: 0.2}, "must sum to 1"),
        ({0: 0.3, "0": 0.3}, "two shares"),
    ],
)
def test_bad_shares_are_clear_errors(shares, message):
    with pytest.raises(BalanceError, match=message) as info:
        cluster_weights(CLUSTERS, shares)
    assert isinstance(info.value, ClearbgError) and isinstance(info.value, ValueError)


def test_rows_without_a_cluster_are_an_error():
    with pytest.raises(BalanceError, match="clearbg cluster"):
        cluster_weights([0, None, 1])
    with pytest.raises(BalanceError, match="no 'cluster' column"):
        resample_manifest(pd.DataFrame({"id": ["a"]}))


def test_sampler_draws_requested_shares_within_tolerance():
    sampler = BalancedSampler.from_clusters(CLUSTERS, {6: 0.5}, num_samples=20_000, seed=7)
    shares = _shares(list(sampler))
    assert len(sampler) == 20_000
    assert shares[6] == pytest.approx(0.5, abs=0.02)
    assert shares[0] == pytest.approx(0.25, abs=0.02)
    assert shares[1] == pytest.approx(0.25, abs=0.02)  # 29 rows, drawn with replacement


def test_sampler_is_reproducible_per_epoch_and_differs_between_epochs():
    def draw(seed, epoch):
        sampler = BalancedSampler(cluster_weights(CLUSTERS), num_samples=500, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert draw(1, 0) == draw(1, 0)
    assert draw(1, 0) != draw(1, 1)
    assert draw(1, 0) != draw(2, 0)
    assert draw(0, 1) != draw(1, 0)  # (seed, epoch) are mixed, not added


def test_sampler_feeds_a_dataloader():
    data = list(range(len(CLUSTERS)))
    loader = DataLoader(data, batch_size=64, sampler=BalancedSampler.from_clusters(CLUSTERS, seed=0))
    seen = np.concatenate([batch.numpy() for batch in loader])
    assert len(seen) == len(CLUSTERS)
    assert _shares(seen)[1] == pytest.approx(1 / 3, abs=0.08)  # 29 of 327 rows, a third of the draws


def test_sampler_without_replacement_and_its_errors():
    sampler = BalancedSampler(cluster_weights(CLUSTERS), num_samples=100, replacement=False, seed=0)
    drawn = list(sampler)
    assert len(set(drawn)) == 100
    with pytest.raises(BalanceError, match="without replacement"):
        BalancedSampler([1.0, 0.0, 1.0], num_samples=3, replacement=False)
    with pytest.raises(BalanceError, match="all weights are 0"):
        BalancedSampler([0.0, 0.0])
    with pytest.raises(BalanceError, match=">= 0"):
        BalancedSampler([1.0, -1.0])


def test_resample_manifest_gives_exact_shares_and_uses_rows_before_repeating():
    frame = pd.DataFrame({"id": [f"p{i}" for i in range(len(CLUSTERS))], "cluster": CLUSTERS})
    out = resample_manifest(frame, {6: 0.5}, n=1000, seed=3)
    assert len(out) == 1000 and list(out.columns) == ["id", "cluster"]
    assert out["cluster"].value_counts().to_dict() == {6: 500, 0: 250, 1: 250}
    # 250 draws from 29 shorts: each row 8 or 9 times; 250 of 188 pants: each at least once
    shorts = out.loc[out["cluster"] == 1, "id"].value_counts()
    assert len(shorts) == 29 and set(shorts) <= {8, 9}
    assert out.loc[out["cluster"] == 0, "id"].nunique() == 188
    assert out["cluster"].iloc[:50].nunique() == 3  # shuffled, not grouped by cluster
    again = resample_manifest(frame, {6: 0.5}, n=1000, seed=3)
    pd.testing.assert_frame_equal(out, again)
    assert not out.equals(resample_manifest(frame, {6: 0.5}, n=1000, seed=4))


def test_resample_manifest_by_cluster_name_and_default_size():
    frame = pd.DataFrame({"id": list("abcdefg"), "cluster_name": ["pants"] * 5 + ["light"] * 2})
    out = resample_manifest(frame, column="cluster_name", seed=0)
    assert len(out) == 7
    counts = out["cluster_name"].value_counts().to_dict()
    assert counts in ({"pants": 4, "light": 3}, {"pants": 3, "light": 4})  # 3.5 each, rounded
