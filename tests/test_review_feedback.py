"""Verdicts back into the data: the feedback folder, read by a real ``clearbg prepare``, locally
and on an S3 server (moto)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image

from clearbg.data.manifest import read_manifest
from clearbg.data.prepare import PrepareConfig, prepare_dataset
from clearbg.review import ReviewQueue
from clearbg.review.feedback import PAIR_COLUMNS, read_pairs, write_feedback

NAMES = ("ccp_0089", "ccp_0127", "ccp_0359", "ccp_0460")


@pytest.fixture
def decided(tmp_path, shared_data) -> tuple[ReviewQueue, dict[str, str], np.ndarray]:
    """A queue where ana accepted one photo, corrected one and rejected one; one still waits."""
    queue = ReviewQueue(str(tmp_path / "queue.db"))
    for i, name in enumerate(NAMES):
        photo = (shared_data / "fashion" / "images" / f"{name}.jpg").read_bytes()
        mask = np.asarray(Image.open(shared_data / "fashion" / "masks" / f"{name}.png"))
        queue.enqueue(photo, mask, score=0.1 * (i + 1), model="shop/3", source=f"shoot/{name}.jpg", job="test")
    ids = {}
    accepted = queue.claim("ana")
    queue.complete(accepted.id, accepted.token, "accept", seconds=4.0, strokes=0)
    corrected = queue.claim("ana")
    fixed = np.asarray(Image.open(io.BytesIO(queue.read(corrected.mask)))).copy()
    fixed[:40] = 0  # the reviewer erased a band at the top
    queue.complete(corrected.id, corrected.token, "correct", mask=fixed, seconds=31.5, strokes=3)
    rejected = queue.claim("ana")
    queue.complete(rejected.id, rejected.token, "reject", reason="two products in one photo", seconds=6.0, strokes=0)
    ids.update(accepted=accepted.id, corrected=corrected.id, rejected=rejected.id)
    yield queue, ids, fixed
    queue.close()


def test_accepted_and_corrected_pairs_with_provenance_rejected_apart_and_a_rerun_adds_nothing(decided, tmp_path):
    queue, ids, fixed = decided
    out = tmp_path / "feedback"
    report = write_feedback(queue, str(out))
    assert (report.pairs, report.rejected, report.added) == (2, 1, 2)
    rows = {row["id"]: row for row in read_pairs(str(out))}
    assert set(rows) == {ids["accepted"], ids["corrected"]} and tuple(next(iter(rows.values()))) == PAIR_COLUMNS
    fix = rows[ids["corrected"]]
    assert (fix["action"], fix["reviewer"], fix["model"], fix["source"], fix["seconds"], fix["strokes"], fix["split"]) \
        == ("correct", "ana", "shop/3", f"shoot/{NAMES[1]}.jpg", "31.5", "3", "train")
    assert fix["decided"].endswith("Z") and rows[ids["accepted"]]["action"] == "accept"
    assert np.array_equal(np.asarray(Image.open(out / fix["mask"])), fixed)  # lossless, as the reviewer left it
    assert (out / fix["image"]).read_bytes() == queue.read(queue.get(ids["corrected"]).photo)
    with open(out / "rejected.csv", newline="") as f:
        rejected = list(csv.DictReader(f))
    assert [(r["item"], r["reason"], r["reviewer"]) for r in rejected] == [
        (ids["rejected"], "two products in one photo", "ana")]
    assert not list((out / "images").glob(f"{ids['rejected']}*"))  # never a training pair
    assert write_feedback(queue, str(out)).added == 0

    # `clearbg prepare` reads the folder as it is, provenance columns included.
    dataset = tmp_path / "dataset"
    prepare_dataset(str(out / "pairs.csv"), str(dataset), PrepareConfig(sizes=[(48, 64)]), workers=1)
    manifest = read_manifest(str(dataset)).set_index("id")
    assert set(manifest.index) == set(rows)
    assert manifest.loc[ids["corrected"], "action"] == "correct" and manifest.loc[ids["corrected"], "reviewer"] == "ana"
    assert set(manifest["split"]) == {"train"}


def test_feedback_on_s3(decided, s3_bucket, s3_client):
    queue, ids, _ = decided
    prefix = f"{s3_bucket}/feedback"
    assert write_feedback(queue, prefix).pairs == 2
    bucket = s3_bucket.removeprefix("s3://")
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert {"feedback/pairs.csv", "feedback/rejected.csv", f"feedback/masks/{ids['corrected']}.png"} <= keys
    assert {r["id"] for r in read_pairs(prefix)} == {ids["accepted"], ids["corrected"]}
