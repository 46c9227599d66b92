"""The batch journal on its own: what a rerun skips, what a crash leaves, what results.parquet says.

Fast and direct (no model), so mutation testing (bench/mutation.py) can run it per mutant; the
whole-batch behaviour (kill -9, resume) is in test_batch.py.
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from clearbg.batch.journal import BATCH_DIR, RESULTS_NAME, Journal, remove_temp_files
from clearbg.imageio import temp_name
from clearbg.removal.record import RESULT_COLUMNS


def record(relpath: str, status: str = "ok", **extra) -> dict:
    row = {"relpath": relpath, "uri": f"/in/{relpath}", "status": status, "error": "" if status == "ok" else "bad",
           "confidence": 0.9, "seconds": 0.1, "output": f"/out/{relpath}" if status == "ok" else ""}
    return {**row, **extra}


def journal_with(out, *batches: list[dict]) -> Journal:
    journal = Journal(str(out))
    journal.open()
    for batch in batches:
        journal.add(batch)
    journal.close()
    return Journal(str(out))  # read back through a fresh instance, as a rerun does


def test_the_latest_record_of_a_photo_decides_whether_a_rerun_skips_it(tmp_path):
    journal = journal_with(
        tmp_path,
        [record("fixed.jpg", "failed"), record("broke.jpg"), record("bad.jpg", "failed"), record("good.jpg")],
        [record("fixed.jpg"), record("broke.jpg", "failed")],
    )
    assert journal.done() == {"fixed.jpg", "broke.jpg", "bad.jpg", "good.jpg"}
    # --retry-failed redoes what failed last time, and nothing that succeeded last time
    assert journal.done(retry_failed=True) == {"fixed.jpg", "good.jpg"}
    assert [r["relpath"] for r in journal.records()] == ["fixed.jpg", "broke.jpg", "bad.jpg", "good.jpg",
                                                        "fixed.jpg", "broke.jpg"]


def test_a_journal_cut_inside_its_first_line_starts_empty(tmp_path):
    (tmp_path / BATCH_DIR).mkdir()
    (tmp_path / BATCH_DIR / "journal.jsonl").write_text('{"relpath": "a.jp')
    Journal(str(tmp_path)).open()
    assert (tmp_path / BATCH_DIR / "journal.jsonl").read_text() == ""


def test_an_empty_or_missing_journal_skips_nothing(tmp_path):
    assert Journal(str(tmp_path / "new")).done() == set()
    journal = journal_with(tmp_path, [])
    assert journal.done() == set() and list(journal.records()) == []
    assert (tmp_path / BATCH_DIR / "journal.jsonl").read_text() == ""


def test_added_records_are_on_disk_before_add_returns(tmp_path):
    journal = Journal(str(tmp_path))
    journal.open()
    journal.add([record("a.jpg")])
    # not closed: another reader (a crash right now) already sees the line
    lines = (tmp_path / BATCH_DIR / "journal.jsonl").read_text().splitlines()
    assert [json.loads(line)["relpath"] for line in lines] == ["a.jpg"]
    journal.add([record("b.jpg"), record("c.jpg")])
    assert Journal(str(tmp_path)).done() == {"a.jpg", "b.jpg", "c.jpg"}
    journal.close()


def test_open_trims_a_line_cut_short_by_a_crash_and_keeps_whole_ones(tmp_path):
    journal_with(tmp_path, [record("a.jpg"), record("b.jpg")])
    path = tmp_path / BATCH_DIR / "journal.jsonl"
    with path.open("a") as f:
        f.write('{"relpath": "c.jpg", "sta')  # kill -9 mid-write
    journal = Journal(str(tmp_path))
    journal.open()
    assert path.read_text().endswith("\n") and path.read_text().count("\n") == 2
    journal.add([record("d.jpg")])
    journal.close()
    assert Journal(str(tmp_path)).done() == {"a.jpg", "b.jpg", "d.jpg"}


def test_open_removes_only_clearbgs_own_temp_files(tmp_path):
    journal_with(tmp_path, [record("a.jpg")])
    (tmp_path / "sub").mkdir()
    stray = tmp_path / "sub" / temp_name("a.png")
    stray.write_bytes(b"half")
    mine = [tmp_path / "x.jpg.tmp", tmp_path / "a.1.tmp", tmp_path / "a.png"]
    for path in mine:
        path.write_bytes(b"user data")
    Journal(str(tmp_path)).open()
    assert not stray.exists()
    assert all(path.read_bytes() == b"user data" for path in mine)
    stray.write_bytes(b"again")
    (tmp_path / temp_name("b.png")).write_bytes(b"half")
    assert remove_temp_files(str(tmp_path)) == 2 and remove_temp_files(str(tmp_path)) == 0


def test_results_keep_each_photos_latest_record_sorted_with_failures_listed(tmp_path):
    journal = journal_with(
        tmp_path,
        [record("b.jpg", "failed"), record("a.jpg"), record("c.jpg", review=True)],
        [record("b.jpg"), record("a.jpg", "failed")],
    )
    uri, failed = journal.write_results(extra=[record("unreadable.jpg", "failed", error="cannot list")])
    assert uri == str(tmp_path / RESULTS_NAME)
    assert pq.read_schema(uri).names == list(RESULT_COLUMNS)  # no index column for other readers to trip on
    table = pd.read_parquet(uri)
    assert list(table["relpath"]) == ["a.jpg", "b.jpg", "c.jpg", "unreadable.jpg"]
    assert list(table["status"]) == ["failed", "ok", "ok", "failed"]
    assert list(table["review"]) == [False, False, True, False] and table["review"].dtype == bool
    assert [row["relpath"] for row in failed] == ["a.jpg", "unreadable.jpg"]
    assert failed[1]["error"] == "cannot list"


def test_on_s3_each_batch_is_one_object_read_back_in_order(s3_bucket, s3_client):
    out = f"{s3_bucket}/cutouts"
    journal = Journal(out)
    journal.open()
    journal.add([record("a.jpg", "failed")])
    journal.add([])
    journal.add([record("a.jpg"), record("b.jpg", "failed")])
    journal.close()
    bucket = s3_bucket.removeprefix("s3://")
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket, Prefix="cutouts/")["Contents"]]
    assert len(keys) == 2 and all(k.startswith(f"cutouts/{BATCH_DIR}/journal/part-") for k in keys)
    # a foreign object in the journal folder is not a batch
    s3_client.put_object(Bucket=bucket, Key=f"cutouts/{BATCH_DIR}/journal/notes.txt", Body=b'{"relpath": "x"}\n')
    again = Journal(out)
    assert again.done() == {"a.jpg", "b.jpg"} and again.done(retry_failed=True) == {"a.jpg"}
    uri, failed = again.write_results()
    assert uri == f"{out}/{RESULTS_NAME}" and [r["relpath"] for r in failed] == ["b.jpg"]


@pytest.mark.parametrize("status", ["ok", "failed"])
def test_records_round_trip_every_field(tmp_path, status):
    row = record("deep/dir/p.jpg", status, review=status == "ok")
    assert list(journal_with(tmp_path, [row]).records()) == [row]
