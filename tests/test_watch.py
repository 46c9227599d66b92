"""`clearbg watch`: a real watcher process while photos appear in its folder, half-written, broken,
and across a restart."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image




def _start(folder: Path, out: Path, log: Path, *more: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "clearbg", "watch", str(folder), "--out", str(out), "--interval", "0.2",
         "--settle", "1.5", "--batch-size", "1", *more],
        stdout=subprocess.DEVNULL, stderr=open(log, "ab"), env={**os.environ, "OMP_NUM_THREADS": "1"})


def _wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)


@pytest.mark.slow
def test_hot_folder_takes_complete_photos_once_and_moves_failures_aside(tmp_path, fashion_photo):
    folder, out, log = tmp_path / "capture", tmp_path / "cut", tmp_path / "watch.log"
    folder.mkdir()
    jpeg = io.BytesIO()
    fashion_photo.resize((140, 210)).save(jpeg, "JPEG")
    data = jpeg.getvalue()
    proc = _start(folder, out, log)
    try:
        # Written in two halves, 0.6 s apart (the capture software is slow): never taken half-written.
        with open(folder / "a.jpg", "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            time.sleep(0.6)
            f.write(data[len(data) // 2 :])
        (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
        _wait_for(lambda: (out / "a.png").is_file() and (folder / ".failed" / "broken.jpg").is_file())
        with Image.open(out / "a.png") as cutout:
            assert cutout.mode == "RGBA" and cutout.size == (140, 210)
        assert "could not" not in (folder / ".failed" / "broken.jpg.error.txt").read_text()
        assert not (folder / "broken.jpg").exists()
        first = (out / "a.png").stat().st_mtime_ns
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert text.count("ok a.jpg") == 1 and "FAILED" in text and "broken.jpg" in text

    # Restarted, now with the quality gate: what was done stays done; a new photo is taken and,
    # under the threshold (1.0: every photo), lands in the review queue.
    queue = tmp_path / "review" / "queue.db"
    proc = _start(folder, out, log, "--review-below", "1.0", "--queue", str(queue))
    try:
        (folder / "b.jpg").write_bytes(data)
        _wait_for(lambda: (out / "b.png").is_file())
        time.sleep(1.0)  # a few more polls
        assert _stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (out / "a.png").stat().st_mtime_ns == first  # never processed twice
    assert log.read_text().count("ok a.jpg") == 1
    import pandas as pd

    results = pd.read_parquet(out / "results.parquet")
    assert sorted(results["relpath"]) == ["a.jpg", "b.jpg", "broken.jpg"]
    assert dict(zip(results["relpath"], results["status"]))["broken.jpg"] == "failed"
    from clearbg.review.queue import ReviewQueue

    queued = list(ReviewQueue(str(queue)).items())
    assert [Path(item.source).name for item in queued] == ["b.jpg"] and "sent to review" in log.read_text()


@pytest.mark.slow
def test_hot_folder_refuses_a_bucket_and_an_output_inside_it(tmp_path):
    from clearbg.batch.watch import watch_folder
    from clearbg.errors import StorageError

    with pytest.raises(StorageError, match="existing local folder"):
        watch_folder("s3://bucket/in", str(tmp_path / "out"), predictor=None)
    (tmp_path / "in").mkdir()
    with pytest.raises(StorageError):
        watch_folder(str(tmp_path / "in"), str(tmp_path / "in" / "out"), predictor=None)


@pytest.mark.parametrize("command", ["remove", "batch", "watch"])
def test_every_removal_command_takes_the_edge_options(command, tmp_path):
    from click.testing import CliRunner

    from clearbg.cli import cli

    result = CliRunner().invoke(cli, [command, str(tmp_path), "--out", str(tmp_path / "o"), "--shadow-opacity", "0.5"])
    assert result.exit_code == 2 and "add --shadow contact or --shadow drop" in result.output, result.output
