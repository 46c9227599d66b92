"""``--batch-size auto``: real training steps on CPU against a real memory budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clearbg.errors import ClearbgError
from clearbg.models.unet import UNet
from clearbg.train.batch_size import (
    BatchSizeError,
    _largest_fitting,
    find_batch_size,
    search_batch_size,
)


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models gain nothing from a second thread, and on a busy 2-core machine OpenMP's
    # barrier waits for a descheduled thread (seconds per step); one thread keeps these fast.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


MiB = 2**20


def wide_model() -> nn.Module:
    # Full-resolution 1x1 convs: ~19 MiB of activations per 192x192 sample for almost no
    # compute, so memory is large against allocator noise and each try takes milliseconds.
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 1, 1))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


CROSSING = """
import json, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from test_batch_size import snapshot, wide_model
from clearbg.train.batch_size import measure_step_memory, search_batch_size
model = wide_model()
before = snapshot(model)
five, six = (measure_step_memory(model, 192, b) for b in (5, 6))
budget = (five + six) // 2
search = search_batch_size(model, 192, "cpu", memory_limit_bytes=budget)
after = model.state_dict()
print(json.dumps({
    "five": five, "six": six, "budget": budget, "batch": search.batch_size,
    "tries": [[t.batch, t.fits, t.bytes, t.reason] for t in search.tries],
    "per_sample": search.bytes_per_sample(),
    "unchanged": all(torch.equal(before[k], after[k]) for k in before),
}))
"""


def test_search_stops_where_the_cpu_budget_is_crossed():
    # Run in a fresh interpreter: RSS is the process's whole footprint, and memory freed by
    # earlier tests (a 31 M-parameter U-Net, 320x320 inference) is reused in ways that add
    # 10-60 MiB of noise, enough to blur 19 MiB steps (at 320x320 a sample is ~560 MiB).
    proc = subprocess.run([sys.executable, "-c", CROSSING, str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout.splitlines()[-1])
    assert r["six"] > r["five"] > 0
    assert r["batch"] == 5
    measured = sorted((b, m) for b, _, m, _ in r["tries"] if m is not None)
    assert all(m1 < m2 for (_, m1), (_, m2) in zip(measured, measured[1:])), measured  # monotone in the batch
    assert all(m <= r["budget"] for _, fits, m, _ in r["tries"] if fits)
    assert any(b == 6 and not fits for b, fits, _, _ in r["tries"])
    assert 14 * MiB < r["per_sample"] < 25 * MiB, r["per_sample"] / MiB
    assert r["unchanged"]


def test_unet_is_left_exactly_as_it_was():
    torch.manual_seed(0)
    model = UNet(base=4).eval()
    before = snapshot(model)
    assert find_batch_size(model, (64, 48), "cpu", memory_limit_bytes=1 << 40, max_batch=4) == 4
    assert not model.training  # the search trains a copy, never the caller's model
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics


def test_max_batch_caps_the_search():
    search = search_batch_size(wide_model(), 64, "cpu", memory_limit_bytes=1 << 40, start=2, max_batch=6)
    assert search.batch_size == 6
    assert [t.batch for t in search.tries] == [2, 4, 6]


def test_the_cpu_allocators_error_counts_as_out_of_memory():
    seen = []

    def step_fn(model, images, masks):
        seen.append(len(images))
        if len(images) > 3:  # a real allocation the CPU allocator refuses (40 TB)
            torch.empty(10**13)
        return F.binary_cross_entropy_with_logits(model(images), masks)

    search = search_batch_size(wide_model(), 32, "cpu", memory_limit_bytes=1 << 40, step_fn=step_fn)
    assert search.batch_size == 3
    assert {t.reason for t in search.tries if not t.fits} == {"oom"}
    assert 4 in seen and 3 in seen


def test_a_budget_below_one_sample_is_a_clear_error():
    with pytest.raises(BatchSizeError, match=r"batch of 1 at 192x192 does not fit.*budget 1 MiB") as err:
        find_batch_size(wide_model(), 192, "cpu", memory_limit_bytes=1 * MiB)
    assert isinstance(err.value, ClearbgError)


def test_doubling_then_bisection_finds_the_edge_in_few_tries():
    for edge in (1, 2, 3, 37, 64, 100):
        calls = []

        def fits(batch, edge=edge):
            calls.append(batch)
            return batch <= edge

        assert _largest_fitting(fits, 2, 256) == edge
        assert len(calls) == len(set(calls)) <= 2 * 8 + 1
    assert _largest_fitting(lambda b: False, 8, 256) == 0
    assert _largest_fitting(lambda b: b <= 5, 8, 256) == 5  # start too big: halve, then bisect
    assert _largest_fitting(lambda b: True, 3, 10) == 10
