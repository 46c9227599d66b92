"""The review queue against real databases: a SQLite file and a real PostgreSQL server process,
with real processes claiming at once and real ``kill -9``."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
from PIL import Image

from clearbg.errors import LeaseLost, ReviewError
from clearbg.review import ReviewQueue


@pytest.fixture(params=["sqlite", "postgresql"])
def queue_url(request, tmp_path) -> str:
    """A fresh, empty queue database: a SQLite file, or a new database on the session's server."""
    if request.param == "sqlite":
        return str(tmp_path / "queue.db")
    server = request.getfixturevalue("postgres_url")
    import sqlalchemy as sa

    name = f"q{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(server.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return f"{server.rsplit('/', 1)[0]}/{name}"


def _photo(i: int, size=(24, 16)) -> bytes:
    """A small distinct JPEG per i."""
    rng = np.random.default_rng(i)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _fill(queue: ReviewQueue, n: int) -> list[str]:
    ids = []
    for i in range(n):
        prob = np.full((16, 24), i / max(n, 1), np.float32)
        item, added = queue.enqueue(_photo(i), prob, score=i / n, model="u2netp@test", source=f"shoot/{i}.jpg",
                                    job="test", threshold=0.9)
        assert added
        ids.append(item.id)
    return ids


def _subprocess(code: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_enqueue_stores_photo_and_mask_and_a_rerun_adds_nothing(queue_url, tmp_path, fashion_pair_bytes):
    photo, truth = fashion_pair_bytes
    queue = ReviewQueue(queue_url, images=str(tmp_path / "images"))
    item, added = queue.enqueue(photo, truth, score=0.71, model="u2netp.official@309c8469", source="a/ccp.jpg",
                                job="batch out", output="out/ccp.png", threshold=0.93)
    assert added and item.status == "pending" and (item.width, item.height) == (truth.shape[1], truth.shape[0])
    assert queue.read(item.photo) == photo  # the original bytes, as they were
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(queue.read(item.mask)))), truth)
    again, added = queue.enqueue(photo, truth, score=0.71, model="u2netp.official@309c8469", source="a/ccp.jpg")
    assert not added and again.id == item.id
    # Another model version's mask of the same photo is another item.
    _, added = queue.enqueue(photo, truth, score=0.71, model="u2netp.official@other", source="a/ccp.jpg")
    assert added
    queue.close()
    reopened = ReviewQueue(queue_url)  # a restart: the images' location is kept in the database
    assert reopened.images == str(tmp_path / "images")
    assert reopened.get(item.id).source == "a/ccp.jpg" and reopened.stats().pending == 2
    reopened.close()


@pytest.fixture
def fashion_pair_bytes(tiny_pairs):
    row = next(r for r in tiny_pairs if r["domain"] == "fashion")
    mask = np.asarray(Image.open(row["mask"]).convert("L"))
    with open(row["image"], "rb") as f:
        return f.read(), mask


def test_complete_records_accept_reject_and_a_lossless_corrected_mask(queue_url, tmp_path):
    queue = ReviewQueue(queue_url, images=str(tmp_path / "images"))
    _fill(queue, 3)
    first = queue.claim("ana")
    assert first.score == 0.0 and first.token  # the worst cutout first
    with pytest.raises(ReviewError, match="needs a reason"):
        queue.complete(first.id, first.token, "reject")
    with pytest.raises(ReviewError, match="decision must be one of"):
        queue.complete(first.id, first.token, "maybe")
    rejected = queue.complete(first.id, first.token, "reject", reason="sleeve missing")
    assert (rejected.status, rejected.reason, rejected.reviewer) == ("rejected", "sleeve missing", "ana")
    with pytest.raises(LeaseLost):  # done is done
        queue.complete(first.id, first.token, "accept")

    second = queue.claim("ana")
    with pytest.raises(ReviewError, match="is 5x5, but its photo is 24x16"):
        queue.complete(second.id, second.token, "correct", mask=np.zeros((5, 5), np.uint8))
    painted = np.random.default_rng(0).integers(0, 256, (16, 24), dtype=np.uint8)  # every grey level kept
    corrected = queue.complete(second.id, second.token, "correct", mask=painted)
    assert corrected.status == "corrected"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(queue.read(corrected.corrected)))), painted)
    assert queue.read(corrected.mask) != queue.read(corrected.corrected)  # the prediction is kept beside it

    third = queue.claim("ana")
    assert queue.complete(third.id, third.token, "accept").status == "accepted"
    assert queue.claim("ana") is None
    stats = queue.stats()
    assert (stats.accepted, stats.rejected, stats.corrected, stats.waiting) == (1, 1, 1, 0)
    queue.close()


CLAIMER = """
import sys
from clearbg.review import ReviewQueue
queue = ReviewQueue(sys.argv[1], images=sys.argv[2], lease_s=120)
print("ready", flush=True)
sys.stdin.readline()  # every claimer starts at the same moment
while (item := queue.claim(sys.argv[3])) is not None:
    print(item.id, flush=True)
"""


def test_processes_claiming_at_once_never_get_the_same_item(queue_url, tmp_path):
    images = str(tmp_path / "images")
    queue = ReviewQueue(queue_url, images=images)
    ids = _fill(queue, 40)
    claimers = [_subprocess(CLAIMER, queue_url, images, f"reviewer{i}") for i in range(4)]
    for proc in claimers:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    for proc in claimers:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    got = []
    for proc in claimers:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        got.extend(out.split())
    assert sorted(got) == sorted(ids)  # each item handed out once, none lost
    assert {item.status for item in queue.items()} == {"claimed"}
    queue.close()


HOLDER = """
import sys, time
from clearbg.review import ReviewQueue
queue = ReviewQueue(sys.argv[1], images=sys.argv[2], lease_s=float(sys.argv[3]))
item = queue.claim("gone")
print(item.id, flush=True)
time.sleep(600)
"""


def test_a_killed_claimers_item_comes_back_after_its_lease(queue_url, tmp_path):
    images = str(tmp_path / "images")
    queue = ReviewQueue(queue_url, images=images)
    [only] = _fill(queue, 1)
    holder = _subprocess(HOLDER, queue_url, images, "3")
    held = holder.stdout.readline().strip()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    claimed_at = time.monotonic()
    assert held == only
    assert queue.claim("next") is None  # still under the dead claimer's lease
    assert queue.stats().waiting == 0
    while (item := queue.claim("next")) is None:
        assert time.monotonic() - claimed_at < 30, "the lease never ran out"
        time.sleep(0.2)
    assert (item.id, item.reviewer, item.claims) == (only, "next", 2)
    assert queue.complete(item.id, item.token, "accept").status == "accepted"
    queue.close()


def test_a_claim_taken_over_after_its_lease_cannot_complete_and_renew_keeps_it(queue_url, tmp_path):
    queue = ReviewQueue(queue_url, images=str(tmp_path / "images"), lease_s=1.0)
    _fill(queue, 2)
    slow = queue.claim("slow")
    kept = queue.claim("steady")
    time.sleep(0.6)
    queue.renew(kept.id, kept.token, lease_s=30)
    time.sleep(0.6)
    other = queue.claim("other")
    assert other.id == slow.id  # slow's lease ran out, steady's was renewed
    with pytest.raises(LeaseLost, match="other claimed it"):
        queue.complete(slow.id, slow.token, "accept")
    queue.release(other.id, other.token)
    assert queue.stats().pending == 1
    assert queue.complete(kept.id, kept.token, "accept").status == "accepted"
    queue.close()


ENQUEUER = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[3])
from test_review_queue import _photo
from clearbg.review import ReviewQueue
queue = ReviewQueue(sys.argv[1], images=sys.argv[2])
for i in range(int(sys.argv[4])):
    queue.enqueue(_photo(i), np.full((16, 24), 0.5, np.float32), score=0.5, model="m", source=f"{i}.jpg")
    print(i, flush=True)
"""


def test_enqueue_killed_mid_run_then_rerun_leaves_each_photo_once_with_its_images(queue_url, tmp_path):
    images = str(tmp_path / "images")
    ReviewQueue(queue_url, images=images).close()
    n = 60
    proc = _subprocess(ENQUEUER, queue_url, images, os.path.dirname(__file__), str(n))
    for _ in range(10):
        assert proc.stdout.readline(), proc.stderr.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    queue = ReviewQueue(queue_url)
    before = list(queue.items())
    assert 10 <= len(before) < n
    for item in before:  # a row never points at a missing or partial image
        Image.open(io.BytesIO(queue.read(item.photo))).load()
        Image.open(io.BytesIO(queue.read(item.mask))).load()
    added = [queue.enqueue(_photo(i), np.full((16, 24), 0.5, np.float32), score=0.5, model="m",
                           source=f"{i}.jpg")[1] for i in range(n)]
    assert sum(added) == n - len(before)
    assert queue.stats().pending == n
    queue.close()


def test_listing_export_and_clear_errors(tmp_path):
    queue = ReviewQueue(str(tmp_path / "queue.db"))
    assert queue.images == str(tmp_path / "queue-images")  # beside the SQLite file by default
    _fill(queue, 3)
    assert [i.score for i in queue.items()] == sorted(i.score for i in queue.items())
    assert len(list(queue.items("pending", limit=2))) == 2
    with pytest.raises(ReviewError, match="status must be one of"):
        list(queue.items("waiting"))
    with pytest.raises(ReviewError, match="no item 'nope'"):
        queue.get("nope")
    rows = queue.export_csv(str(tmp_path / "out" / "queue.csv"))
    text = (tmp_path / "out" / "queue.csv").read_text().splitlines()
    assert rows == 3 and text[0].startswith("id,created,source") and "token" not in text[0]
    queue.close()


def test_a_server_database_needs_an_image_location(postgres_url):
    with pytest.raises(ReviewError, match="has no image location yet"):
        ReviewQueue(postgres_url)


def test_a_server_database_that_is_down_is_a_clear_error():
    with pytest.raises(ReviewError, match="cannot open the review queue"):
        ReviewQueue("postgresql://clearbg@127.0.0.1:1/none", images="/tmp/x")


def test_effort_is_recorded_with_the_decision_and_never_for_a_lost_claim(tmp_path):
    queue = ReviewQueue(str(tmp_path / "queue.db"), lease_s=0.2)
    _fill(queue, 2)
    first = queue.claim("ana")
    queue.complete(first.id, first.token, "accept", seconds=12.5, strokes=0)
    second = queue.claim("ana")
    time.sleep(0.3)
    taken = queue.claim("ben")  # ana's lease ran out: ben has it now
    assert taken.id == second.id
    with pytest.raises(LeaseLost):
        queue.complete(second.id, second.token, "reject", reason="blurred", seconds=99, strokes=4)
    with pytest.raises(ReviewError, match="non-negative"):
        queue.complete(taken.id, taken.token, "accept", seconds=-1)
    queue.complete(taken.id, taken.token, "reject", reason="blurred", seconds=3, strokes=2)
    efforts = queue.efforts()
    assert [(e.item, e.reviewer, e.seconds, e.strokes) for e in efforts] == [
        (first.id, "ana", 12.5, 0), (second.id, "ben", 3.0, 2)]
    assert [e.item for e in queue.efforts(reviewer="ben")] == [second.id]
    assert efforts[0].decided == queue.get(first.id).decided
    queue.close()


def _one(queue: ReviewQueue, i: int, score: float) -> str:
    item, _ = queue.enqueue(_photo(i), np.full((16, 24), 0.5, np.float32), score=score, model="m", source=f"{i}.jpg")
    return item.id


def test_claims_come_lowest_score_first_then_oldest(tmp_path):
    queue = ReviewQueue(str(tmp_path / "q.db"), images=str(tmp_path / "images"))
    first, second = _one(queue, 0, 0.5), _one(queue, 1, 0.5)  # equal scores: the older one first
    if first < second:  # make the id order disagree with the creation order
        queue.close()
        queue = ReviewQueue(str(tmp_path / "q2.db"), images=str(tmp_path / "images2"))
        first, second = _one(queue, 1, 0.5), _one(queue, 0, 0.5)
    low = _one(queue, 2, 0.1)
    assert [queue.claim("r").id for _ in range(3)] == [low, first, second]
    assert queue.claim("r") is None
    queue.close()


def test_a_claim_lease_and_a_renewal_last_as_long_as_asked(tmp_path):
    queue = ReviewQueue(str(tmp_path / "q.db"), images=str(tmp_path / "images"), lease_s=600)
    a, b = _one(queue, 0, 0.1), _one(queue, 1, 0.2)
    short = queue.claim("short", lease_s=0.3)
    assert short.id == a and len(short.token) == 32  # 16 random bytes, hex
    renewed = queue.claim("renewed")
    assert renewed.id == b
    before = time.time()
    item = queue.renew(b, renewed.token, lease_s=0.3)
    assert before + 0.2 < item.lease_until < time.time() + 0.4  # from now, not from the claim
    time.sleep(0.5)
    assert {queue.claim("next").id, queue.claim("next").id} == {a, b}  # both leases ran out
    queue.close()


def test_renew_and_release_need_the_same_item_its_token_and_a_live_claim(tmp_path):
    queue = ReviewQueue(str(tmp_path / "q.db"), images=str(tmp_path / "images"))
    a, b = _one(queue, 0, 0.1), _one(queue, 1, 0.2)
    held_a, held_b = queue.claim("r"), queue.claim("r")
    for act in (queue.renew, queue.release):
        with pytest.raises(LeaseLost, match=f"^{b} is no longer yours"):
            act(b, held_a.token)  # another item's token
        with pytest.raises(LeaseLost, match=f"^{a} is no longer yours"):
            act(a, "0" * 32)
    queue.release(a, held_a.token)
    released = queue.get(a)
    assert (released.status, released.lease_until) == ("pending", None)
    with pytest.raises(LeaseLost, match=f"^{a} is not claimed by you \\(it is pending\\)"):
        queue.release(a, held_a.token)
    queue.complete(b, held_b.token, "accept")
    for act in (queue.renew, queue.release):
        with pytest.raises(LeaseLost, match=f"^{b} is not claimed by you \\(it is accepted\\)"):
            act(b, held_b.token)
    queue.close()


def test_an_enqueued_item_records_what_it_was_given_and_its_storage_layout(tmp_path):
    queue = ReviewQueue(str(tmp_path / "q.db"), images=str(tmp_path / "images"))
    item, added = queue.enqueue(_photo(0), np.full((16, 24), 0.5, np.float32), score=0.4, model="m", threshold=0.9)
    assert added and (item.source, item.job, item.output, item.reason) == ("upload", "", "", "")
    assert (item.threshold, item.corrected, item.status, item.claims) == (0.9, None, "pending", 0)
    assert item.photo.endswith(f"{item.id[:2]}/{item.id}/photo.jpg")
    assert item.mask.endswith(f"{item.id[:2]}/{item.id}/mask.png")
    photo_file = tmp_path / "images" / item.id[:2] / item.id / "photo.jpg"
    written = photo_file.stat().st_mtime_ns
    time.sleep(0.01)
    again, added = queue.enqueue(_photo(0), np.full((16, 24), 0.5, np.float32), score=0.4, model="m", threshold=0.9)
    assert not added and again.id == item.id and photo_file.stat().st_mtime_ns == written  # not rewritten
    queue.close()


def test_item_ids_are_stable_across_versions():
    from clearbg.review.queue import item_key

    # Reruns find their earlier items by this id: changing the scheme would enqueue every photo twice.
    assert item_key("a.jpg", b"x", "u2netp") == "6a881be976d9d91c6ebd1a901f88bb18"


def test_complete_checks_its_arguments_and_clears_the_claim(tmp_path):
    queue = ReviewQueue(str(tmp_path / "q.db"), images=str(tmp_path / "images"))
    a, b = _one(queue, 0, 0.1), _one(queue, 1, 0.2)
    held_a, held_b = queue.claim("r"), queue.claim("r")
    wrong_size = np.zeros((3, 3), np.uint8)
    for kwargs, message in [
        ({"decision": "maybe"}, "decision must be one of accept, reject, correct, got 'maybe'"),
        ({"decision": "accept", "mask": np.zeros((16, 24), np.uint8)},
         f"{a}: a corrected mask goes with decision 'correct', and only with it"),
        ({"decision": "correct", "mask": wrong_size}, f"the corrected mask of {a} is 3x3, but its photo is"),
        ({"decision": "correct", "mask": Image.new("RGB", (24, 16))},
         f"a corrected mask must be greyscale (mode L or 1), got a RGB image for {a}"),
        ({"decision": "accept", "seconds": -1.0}, f"seconds spent on {a} must be a non-negative number, got -1.0"),
        ({"decision": "accept", "strokes": -1}, f"strokes on {a} must be a non-negative count, got -1"),
    ]:
        with pytest.raises(ReviewError) as info:
            queue.complete(a, held_a.token, **kwargs)
        assert str(info.value).startswith(message)
    with pytest.raises(LeaseLost, match=f"^{b} is no longer yours"):
        queue.complete(b, held_a.token, "accept")  # a's token does not complete b
    assert queue.get(b).status == "claimed"
    done = queue.complete(a, held_a.token, "accept", seconds=0.0, strokes=0)
    assert (done.status, done.corrected, done.lease_until) == ("accepted", None, None)
    fixed = queue.complete(b, held_b.token, "correct", mask=np.full((16, 24), 255, np.uint8), seconds=0.5)
    assert fixed.corrected.endswith(f"{b[:2]}/{b}/corrected-{held_b.token[:16]}.png")
    queue.close()
