"""``clearbg batch``: outputs + results table, failures with reasons, retry, S3, and a real kill -9."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from clearbg.batch import RESULT_COLUMNS, Journal, run_batch
from clearbg.cli import cli
from clearbg.errors import StorageError
from clearbg.imageio import is_temp_name, temp_name
from clearbg.inference.predictor import Predictor


@pytest.fixture(scope="module")
def predictor():
    return Predictor("u2netp", batch_size=2)


@pytest.fixture(scope="module")
def fashion(tiny_pairs):
    return [r["image"] for r in tiny_pairs if r["domain"] == "fashion"]


def make_source(folder, photos, *, corrupt=True):
    """Photos under ``folder`` (the first two in a subfolder) plus a corrupt ``bad.jpg``."""
    (folder / "sub").mkdir(parents=True)
    for i, photo in enumerate(photos):
        shutil.copy(photo, folder / ("sub" if i < 2 else "") / os.path.basename(photo))
    if corrupt:
        (folder / "bad.jpg").write_bytes(b"this is not a jpeg")
    return folder


def journal_lines(out):
    path = out / ".batch" / "journal.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_outputs_and_results_with_a_corrupt_photo(tmp_path, predictor, fashion):
    src = make_source(tmp_path / "src", fashion[:4])
    out = tmp_path / "out"
    summary = run_batch([str(src)], str(out), predictor, workers=2, progress=False)
    assert (summary.ok, summary.failed, summary.skipped) == (4, 1, 0)

    table = pd.read_parquet(out / "results.parquet")
    assert tuple(table.columns) == RESULT_COLUMNS
    assert len(table) == 5 and table["relpath"].is_unique
    ok = table[table.status == "ok"]
    assert sorted(ok.relpath) == sorted(("sub/" if i < 2 else "") + os.path.basename(p) for i, p in enumerate(fashion[:4]))
    assert ok.confidence.between(0.5, 1.0).all() and (ok.seconds > 0).all()
    for output in ok.output:
        with Image.open(output) as im:
            assert im.mode == "RGBA" and im.getchannel("A").getextrema() == (0, 255)
    assert os.path.exists(out / "sub" / os.path.basename(fashion[0]).replace(".jpg", ".png"))
    bad = table[table.status == "failed"].iloc[0]
    assert bad.relpath == "bad.jpg" and "not an image" in bad.error and bad.output == ""

    # A rerun does nothing: everything is in the journal, the corrupt photo included.
    again = run_batch([str(src)], str(out), predictor, progress=False)
    assert (again.ok, again.failed, again.skipped) == (0, 0, 5)
    assert len(journal_lines(out)) == 5


def _bar_lines(text: str) -> list[str]:
    return text.replace("\r", "\n").strip().splitlines()


def _last_bar(text: str) -> str:
    return _bar_lines(text)[-1]


def test_progress_bar_has_a_total_and_an_eta_also_when_resuming(tmp_path, predictor, fashion, capsys):
    src = make_source(tmp_path / "src", fashion[:3], corrupt=False)
    out = tmp_path / "out"
    run_batch([str(src)], str(out), predictor, progress=True)
    lines = _bar_lines(capsys.readouterr().err)
    assert any("2/3" in line and "<" in line for line in lines[:-1]), lines  # mid-run: total and ETA
    assert "3/3" in lines[-1] and "100%" in lines[-1] and "<00:00" in lines[-1], lines  # elapsed<remaining
    run_batch([str(src)], str(out), predictor, progress=True)  # all done already: skipped ones count too
    assert "3/3" in _last_bar(capsys.readouterr().err)


def test_retry_failed_attempts_failures_again(tmp_path, predictor, fashion):
    src = make_source(tmp_path / "src", fashion[:2])
    out = tmp_path / "out"
    run_batch([str(src)], str(out), predictor, progress=False)
    shutil.copy(fashion[2], src / "bad.jpg")  # the photo got fixed upstream

    plain = run_batch([str(src)], str(out), predictor, progress=False)
    assert (plain.ok, plain.failed, plain.skipped) == (0, 0, 3)
    retried = run_batch([str(src)], str(out), predictor, retry_failed=True, progress=False)
    assert (retried.ok, retried.failed, retried.skipped) == (1, 0, 2)
    table = pd.read_parquet(out / "results.parquet").set_index("relpath")
    assert table.loc["bad.jpg", "status"] == "ok" and table.loc["bad.jpg", "error"] == ""
    assert Image.open(out / "bad.png").size == Image.open(fashion[2]).size


def test_several_sources_keep_their_names_and_clashing_outputs_are_refused(tmp_path, predictor, fashion):
    # Two shoots with the same file name, and a shoot holding x.jpg and x.png (both -> x.png).
    for shoot in ("shoot1", "shoot2"):
        (tmp_path / shoot).mkdir()
        shutil.copy(fashion[0], tmp_path / shoot / "a.jpg")
    Image.open(fashion[1]).save(tmp_path / "shoot2" / "a.b.png")  # stem "a.b": no clash with "a"
    Image.open(fashion[1]).save(tmp_path / "shoot2" / "a.png")
    out = tmp_path / "out"
    summary = run_batch([str(tmp_path / "shoot1"), str(tmp_path / "shoot2") + "/"], str(out), predictor,
                        progress=False)
    assert (summary.ok, summary.failed) == (3, 1)
    table = pd.read_parquet(out / "results.parquet").set_index("relpath")
    assert sorted(table.index) == ["shoot1/a.jpg", "shoot2/a.b.png", "shoot2/a.jpg", "shoot2/a.png"]
    assert table.loc["shoot2/a.png", "status"] == "failed"
    assert str(tmp_path / "shoot2" / "a.jpg") in table.loc["shoot2/a.png", "error"]
    # The first photo's output is the one kept: a.jpg's cutout, not overwritten by a.png's.
    assert Image.open(out / "shoot2" / "a.png").size == Image.open(fashion[0]).size != Image.open(fashion[1]).size
    assert (out / "shoot1" / "a.png").exists() and (out / "shoot2" / "a.b.png").exists()
    # Inputs that would write the same outputs are refused before anything runs.
    (tmp_path / "other" / "shoot1").mkdir(parents=True)
    with pytest.raises(StorageError, match="would write the same outputs"):
        run_batch([str(tmp_path / "shoot1"), str(tmp_path / "other" / "shoot1")], str(tmp_path / "o2"), predictor)
    with pytest.raises(StorageError, match="would write the same outputs"):
        run_batch([str(tmp_path / "shoot1" / "a.jpg"), str(tmp_path / "shoot2" / "a.png")], str(tmp_path / "o3"),
                  predictor)
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_kill_9_mid_run_then_rerun_does_each_photo_exactly_once(tmp_path, fashion):
    photos = fashion[:8]
    src = make_source(tmp_path / "src", photos, corrupt=False)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "clearbg", "batch", str(src), "--out", str(out), "--batch-size", "2", "--workers", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(journal_lines(out)) < 2:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the batch never journaled a batch"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    first = {r["relpath"] for r in journal_lines(out)}
    assert 2 <= len(first) < len(photos), "killed too late to test anything"
    assert not (out / "results.parquet").exists()
    # What a kill inside atomic_write_bytes leaves behind; the rerun must clear it.
    (out / temp_name("ccp_9999.png")).write_bytes(b"half")

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    lines = journal_lines(out)
    relpaths = [r["relpath"] for r in lines]
    assert len(relpaths) == len(set(relpaths)) == len(photos), "a photo was journaled twice or lost"
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == len(photos) and (table.status == "ok").all()
    assert not [p for p in out.rglob("*") if is_temp_name(p.name)]
    for output in table.output:
        with Image.open(output) as im:
            im.load()  # a truncated file would raise here
    assert f"{len(photos) - len(first)} ok, 0 failed, {len(first)} already done" in rerun.stderr


def test_kill_9_at_random_points_then_rerun_leaves_one_output_and_row_per_photo(tmp_path, fashion):
    seed = random.randrange(2**32)
    print(f"seed {seed}")  # shown on failure: random.Random(seed) replays the same kill points
    rng = random.Random(seed)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    names = []
    for i, photo in enumerate(fashion[:6]):  # tiny photos: the model is not what is under test
        name = ("sub/" if i < 2 else "") + os.path.basename(photo)
        Image.open(photo).convert("RGB").resize((64, 96)).save(src / name)
        names.append(name)
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    planted = {out / "x.jpg.tmp": b"mine", out / "a.1.tmp": b"mine too", out / "sub" / "a.1.tmp": b"and this"}
    for path, data in planted.items():
        path.write_bytes(data)
    command = [sys.executable, "-m", "clearbg", "batch", str(src), "--out", str(out), "--batch-size", "1",
               "--workers", "1", "--model", "u2netp"]

    for _ in range(3):
        done = len(journal_lines(out))
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Wait for 0..all remaining photos to be journaled, then kill a random moment later:
        # during start-up and temp clean-up, mid-write, between a write and its journal line.
        wait_for = done + rng.randint(0, len(names) - done)
        deadline = time.monotonic() + 60
        while len(journal_lines(out)) < wait_for and proc.poll() is None:
            assert time.monotonic() < deadline, "the batch made no progress"
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.4))
        proc.kill()
        proc.wait()
        assert all(path.read_bytes() == data for path, data in planted.items()), "a user file was removed"

    final = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    relpaths = [r["relpath"] for r in journal_lines(out)]
    assert sorted(relpaths) == sorted(names), "a photo was journaled twice or lost"
    table = pd.read_parquet(out / "results.parquet")
    assert sorted(table.relpath) == sorted(names) and (table.status == "ok").all()
    assert all(path.read_bytes() == data for path, data in planted.items()), "a user file was removed"
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".batch" not in p.parts}
    outputs = {name.rsplit(".", 1)[0] + ".png" for name in names}
    assert files == outputs | {"results.parquet"} | {p.relative_to(out).as_posix() for p in planted}
    for name in outputs:
        with Image.open(out / name) as im:
            im.load()  # whole, not cut short


def test_rerun_removes_only_the_temp_files_clearbg_made(tmp_path, predictor):
    src = tmp_path / "src"
    src.mkdir()
    (src / "bad.jpg").write_bytes(b"not a photo")  # enough for a journal; no model call needed
    out = tmp_path / "out"
    run_batch([str(src)], str(out), predictor, progress=False)
    (out / "sub").mkdir()
    users = [out / "x.jpg.tmp", out / "a.1.tmp", out / "sub" / "notes.abc123.tmp", out / ".x.png.tmp"]
    for path in users:
        path.write_bytes(b"the user's own file")
    leftovers = [out / temp_name("a.png"), out / "sub" / temp_name("b" * 250 + ".png")]
    for path in leftovers:
        path.write_bytes(b"half an output")

    run_batch([str(src)], str(out), predictor, progress=False)
    assert all(path.read_bytes() == b"the user's own file" for path in users)
    assert not any(path.exists() for path in leftovers)
    assert all(len(path.name.encode()) <= 255 for path in leftovers)


def test_batch_refuses_an_out_folder_that_would_overwrite_or_reread_its_inputs(tmp_path, predictor, fashion):
    src = tmp_path / "shoot"
    src.mkdir()
    Image.open(fashion[0]).convert("RGBA").save(src / "p.png")
    before = (src / "p.png").read_bytes()
    (tmp_path / "other").mkdir()
    for out, why in {str(src): "is the input folder", str(src / "cut"): "is inside the input folder"}.items():
        with pytest.raises(StorageError, match=why):
            run_batch([str(src)], out, predictor, progress=False)
    # Several inputs are mirrored into DST/<name>/: here that is the input folder itself.
    with pytest.raises(StorageError, match="would mirror the input folder .* onto itself"):
        run_batch([str(src), str(tmp_path / "other")], str(tmp_path), predictor, progress=False)
    assert sorted(p.name for p in src.iterdir()) == ["p.png"] and (src / "p.png").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "shoot"]  # no journal, no results anywhere
    result = CliRunner().invoke(cli, ["batch", str(src), "--out", str(src)])
    assert result.exit_code == 1 and "choose an --out folder outside" in result.output
    # One input inside --out is fine: its outputs land at DST/p.webp, beside it, not in it.
    assert run_batch([str(src)], str(tmp_path), predictor, fmt="webp", progress=False).ok == 1
    assert (tmp_path / "p.webp").is_file() and (src / "p.png").read_bytes() == before


def test_batch_refuses_an_s3_out_prefix_inside_the_input_prefix(s3_bucket, s3_client, predictor, fashion):
    bucket = s3_bucket.removeprefix("s3://")
    s3_client.upload_file(fashion[0], bucket, "raw/a.jpg")
    with pytest.raises(StorageError, match="inside the input folder"):
        run_batch([f"{s3_bucket}/raw"], f"{s3_bucket}/raw/cut/", predictor, progress=False)
    with pytest.raises(StorageError, match="onto itself"):
        run_batch([f"{s3_bucket}/raw/", f"{s3_bucket}/more/"], s3_bucket, predictor, progress=False)
    assert [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]] == ["raw/a.jpg"]


def test_batch_reports_an_unreadable_folder_and_broken_links_and_goes_on(tmp_path, fashion, without_root_override):
    src = make_source(tmp_path / "src", fashion[:3], corrupt=False)  # sub/ holds two, the third is at the top
    locked = src / "a_locked"  # listed first: everything after it must still be done
    locked.mkdir()
    shutil.copy(fashion[3], locked / "x.jpg")
    (src / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (src / "loop.jpg").symlink_to("loop.jpg")
    out = tmp_path / "out"
    command = [*without_root_override, sys.executable, "-m", "clearbg", "batch", str(src), "--out", str(out),
               "--batch-size", "2", "--format", "webp"]
    locked.chmod(0)
    try:
        first = subprocess.run(command, capture_output=True, text=True, timeout=300)
        again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    finally:
        locked.chmod(0o755)
    assert first.returncode == 1 and "Traceback" not in first.stderr, first.stderr
    assert "3 ok, 3 failed, 0 already done" in first.stderr
    table = pd.read_parquet(out / "results.parquet").set_index("relpath")
    assert sorted(table.index) == sorted(["a_locked", "dangling.jpg", "loop.jpg", "sub/" + os.path.basename(fashion[0]),
                                          "sub/" + os.path.basename(fashion[1]), os.path.basename(fashion[2])])
    assert (table.status == "failed").sum() == 3
    assert "Permission denied" in table.loc["a_locked", "error"]
    assert "No such file" in table.loc["dangling.jpg", "error"]
    assert "Too many levels of symbolic links" in table.loc["loop.jpg", "error"]
    # The rerun only skips, yet three are still failed: it names them and exits non-zero.
    assert again.returncode == 1 and "0 ok, 1 failed, 5 already done" in again.stderr, again.stderr
    failed = [line for line in again.stderr.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 3 and "3 still failed" in again.stderr
    assert any("a_locked" in line and "Permission denied" in line for line in failed)


def test_missing_input_is_one_failure_and_the_other_inputs_still_run(tmp_path, predictor):
    (tmp_path / "shoot").mkdir()
    (tmp_path / "shoot" / "bad.jpg").write_bytes(b"not a photo")  # a journal, without a model call
    summary = run_batch([str(tmp_path / "gone"), str(tmp_path / "shoot")], str(tmp_path / "out"), predictor,
                        progress=False)
    assert (summary.ok, summary.failed) == (0, 2)
    assert [row["relpath"] for row in summary.failures] == ["gone", "shoot/bad.jpg"]
    assert summary.failures[0]["error"] == f"no such file or folder: {tmp_path / 'gone'}"
    assert len(pd.read_parquet(tmp_path / "out" / "results.parquet")) == 2


def test_rerun_that_only_skips_still_names_the_failures_and_exits_nonzero(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(25):
        (src / f"bad{i:02}.jpg").write_bytes(b"not a photo")
    runner = CliRunner()
    first = runner.invoke(cli, ["batch", str(src), "--out", str(tmp_path / "out"), "--model", "u2netp"])
    again = runner.invoke(cli, ["batch", str(src), "--out", str(tmp_path / "out"), "--model", "u2netp"])
    assert first.exit_code == again.exit_code == 1
    assert "0 ok, 0 failed, 25 already done" in again.output
    failed = [line for line in again.output.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 20 and "bad00.jpg" in failed[0] and "not an image" in failed[0]
    assert "25 still failed (5 more not shown)" in again.output and "results.parquet" in again.output


def test_photo_too_large_for_the_format_fails_alone_and_the_rerun_finishes(tmp_path, predictor, fashion):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(fashion[0], src / "a.jpg")
    Image.new("RGB", (8, 70000), "white").save(src / "tall.png")  # JPEG stores 65500 px a side
    out = tmp_path / "out"
    summary = run_batch([str(src)], str(out), predictor, fmt="jpg", progress=False)
    assert (summary.ok, summary.failed) == (1, 1)
    [failure] = summary.failures
    assert failure["relpath"] == "tall.png" and "8x70000" in failure["error"] and "too large for JPEG" in failure["error"]
    assert sorted(p.name for p in out.iterdir()) == [".batch", "a.jpg", "results.parquet"]
    again = run_batch([str(src)], str(out), predictor, fmt="jpg", progress=False)
    assert (again.ok, again.failed, again.skipped) == (0, 0, 2)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_journal_keeps_the_latest_record_so_a_fixed_photo_is_not_redone(where, tmp_path, request, predictor, fashion):
    if where == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        src, out = f"{bucket}/raw/", f"{bucket}/cut/"
        put = lambda data: request.getfixturevalue("s3_client").put_object(  # noqa: E731
            Bucket=bucket.removeprefix("s3://"), Key="raw/p.jpg", Body=data)
    else:
        src, out = str(tmp_path / "raw"), str(tmp_path / "cut")
        os.makedirs(src)
        put = (tmp_path / "raw" / "p.jpg").write_bytes
    put(b"corrupt upstream")
    assert run_batch([src], out, predictor, progress=False).failed == 1
    put(open(fashion[0], "rb").read())  # fixed upstream
    assert run_batch([src], out, predictor, retry_failed=True, progress=False).ok == 1
    # The latest record says ok: retrying failures again must leave it alone.
    third = run_batch([src], out, predictor, retry_failed=True, progress=False)
    assert (third.ok, third.failed, third.skipped) == (0, 0, 1) and third.failures == []
    assert [r["status"] for r in Journal(out).records()] == ["failed", "ok"]


def test_s3_in_and_out(s3_bucket, s3_client, predictor, fashion):
    bucket = s3_bucket.removeprefix("s3://")
    for photo in fashion[:3]:
        s3_client.upload_file(photo, bucket, f"raw/shoot/{os.path.basename(photo)}")
    s3_client.put_object(Bucket=bucket, Key="raw/bad.jpg", Body=b"nope")

    summary = run_batch([f"{s3_bucket}/raw/"], f"{s3_bucket}/cut/", predictor, progress=False)
    assert (summary.ok, summary.failed) == (3, 1)
    body = s3_client.get_object(Bucket=bucket, Key="cut/results.parquet")["Body"].read()
    table = pd.read_parquet(io.BytesIO(body)).set_index("relpath")
    name = os.path.basename(fashion[0]).replace(".jpg", ".png")
    assert table.loc[f"shoot/{os.path.basename(fashion[0])}", "output"] == f"{s3_bucket}/cut/shoot/{name}"
    assert table.loc["bad.jpg", "status"] == "failed"
    cutout = s3_client.get_object(Bucket=bucket, Key=f"cut/shoot/{name}")["Body"].read()
    assert Image.open(io.BytesIO(cutout)).mode == "RGBA"

    again = run_batch([f"{s3_bucket}/raw/"], f"{s3_bucket}/cut/", predictor, progress=False)
    assert (again.ok, again.failed, again.skipped) == (0, 0, 4)
    assert len(list(Journal(f"{s3_bucket}/cut/").records())) == 4


def test_spark_engine_reads_and_writes_s3(s3_bucket, s3_client, fashion, tmp_path):
    pytest.importorskip("pyspark")
    from clearbg.batch.spark import run_batch_spark
    from clearbg.review import ReviewQueue
    from clearbg.review.gate import ReviewSettings

    bucket = s3_bucket.removeprefix("s3://")
    for photo in fashion[:4]:
        s3_client.upload_file(photo, bucket, f"raw/{os.path.basename(photo)}")
    s3_client.put_object(Bucket=bucket, Key="raw/bad.jpg", Body=b"nope")

    # The workers get moto's endpoint and keys explicitly: a Spark session started earlier in this
    # process would otherwise hand them the environment from before the S3 fixture set it.
    keys = {name: os.environ[name] for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_CONFIG_FILE",
                                                "AWS_SHARED_CREDENTIALS_FILE", "CLEARBG_S3_ENDPOINT_URL")}
    # The gate on the executors: every good photo under the threshold, its images in the bucket.
    review = ReviewSettings(below=1.0, queue=str(tmp_path / "queue.db"), images=f"{s3_bucket}/review")
    summary = run_batch_spark([f"{s3_bucket}/raw/"], f"{s3_bucket}/cut/", "u2netp", batch_size=2, partitions=2,
                              worker_env=keys, review=review)
    assert (summary.ok, summary.failed, summary.skipped, summary.reviewed) == (4, 1, 0, 4)
    body = s3_client.get_object(Bucket=bucket, Key="cut/results.parquet")["Body"].read()
    table = pd.read_parquet(io.BytesIO(body)).set_index("relpath")
    assert len(table) == 5 and table.loc["bad.jpg", "status"] == "failed"
    assert table.loc["bad.jpg", "error"] and pd.isna(table.loc["bad.jpg", "confidence"])
    ok = table[table.status == "ok"]
    assert ok.confidence.between(0.5, 1.0).all() and ok.review.all() and not table.loc["bad.jpg", "review"]
    with ReviewQueue(review.queue) as queue:
        items = list(queue.items())
        assert len(items) == 4 and all(item.photo.startswith(f"{s3_bucket}/review/") for item in items)
        assert Image.open(io.BytesIO(queue.read(items[0].mask))).mode == "L"
    for output in ok.output:
        key = output.removeprefix(f"{s3_bucket}/")
        assert Image.open(io.BytesIO(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())).mode == "RGBA"
    # Same journal as the local engine: a local rerun finds everything done.
    again = run_batch([f"{s3_bucket}/raw/"], f"{s3_bucket}/cut/", Predictor("u2netp", batch_size=1), progress=False)
    assert (again.ok, again.failed, again.skipped) == (0, 0, 5)


def test_batch_applies_the_edge_and_shadow_options(tmp_path, fashion):
    src = make_source(tmp_path / "src", fashion[:2], corrupt=False)
    args = ["batch", str(src), "--bg-color", "white", "--format", "png"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "plain"), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "shop"), "--batch-size", "2", "-dc",
                                      "--shadow", "contact", "--shadow-opacity", "1"])
    assert result.exit_code == 0, result.output
    name = f"sub/{os.path.basename(fashion[0])}".rsplit(".", 1)[0] + ".png"
    plain, shop = (Image.open(tmp_path / folder / name) for folder in ("plain", "shop"))
    assert plain.mode == shop.mode == "RGB" and plain.size == shop.size
    assert not np.array_equal(np.asarray(plain), np.asarray(shop))


def test_spark_engine_applies_the_edge_and_shadow_options(tmp_path, fashion):
    pytest.importorskip("pyspark")
    from clearbg.batch.spark import run_batch_spark
    from clearbg.removal.api import make_options

    src = make_source(tmp_path / "src", fashion[:2], corrupt=False)
    options = make_options(bg_color="white", shadow="drop", drop_fragments=True, fill_holes=True)
    summary = run_batch_spark([str(src)], str(tmp_path / "spark"), "u2netp", batch_size=2, partitions=1,
                              options=options)
    assert (summary.ok, summary.failed) == (2, 0)
    local = run_batch([str(src)], str(tmp_path / "local"), Predictor("u2netp", batch_size=2), options=options,
                      progress=False)
    assert local.ok == 2
    for photo in fashion[:2]:
        name = "sub/" + os.path.basename(photo).rsplit(".", 1)[0] + ".png"
        spark, mine = (Image.open(tmp_path / folder / name) for folder in ("spark", "local"))
        assert spark.mode == "RGB" and np.array_equal(np.asarray(spark), np.asarray(mine))  # one pipeline, both engines
