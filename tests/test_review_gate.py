"""The quality gate in every shell: ``clearbg remove``, ``clearbg batch`` and ``clearbg serve`` score
each photo and send those under the threshold to the review queue, once; ``clearbg queue`` shows them."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from clearbg.cli import cli
from clearbg.models.download import cached_weights
from clearbg.models.specs import get_spec
from clearbg.quality.store import model_version
from clearbg.review import ReviewQueue


@pytest.fixture(scope="module")
def fashion(tiny_pairs):
    return [r["image"] for r in tiny_pairs if r["domain"] == "fashion"][:3]


def _source(folder, photos):
    folder.mkdir()
    for photo in photos:
        shutil.copy(photo, folder)
    (folder / "bad.jpg").write_bytes(b"not a photo at all")
    return folder


def test_batch_sends_photos_under_the_threshold_to_review_once_and_queue_shows_them(tmp_path, fashion):
    src, out, queue = _source(tmp_path / "src", fashion), tmp_path / "out", str(tmp_path / "review" / "queue.db")
    runner = CliRunner()
    args = ["batch", str(src), "--out", str(out), "--review-below", "1.0", "--queue", queue, "--workers", "1"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 1, result.output  # bad.jpg failed
    assert "3 under the confidence threshold sent to review" in result.output
    table = pd.read_parquet(out / "results.parquet").set_index("relpath")
    ok = table[table.status == "ok"]
    assert ok.review.all() and ok.confidence.between(0.5, 1.0).all()
    assert not table.loc["bad.jpg", "review"]  # a photo that failed to decode is never enqueued

    with ReviewQueue(queue) as q:
        items = list(q.items())
        assert len(items) == 3 and {i.model for i in items} == {model_version("u2netp")}
        assert sorted(i.source for i in items) == sorted(str(src / os.path.basename(p)) for p in fashion)
        for item in items:
            photo = Image.open(io.BytesIO(q.read(item.photo)))
            mask = Image.open(io.BytesIO(q.read(item.mask)))
            assert mask.size == photo.size == (item.width, item.height) and item.output.startswith(str(out))
            assert item.score == pytest.approx(table.loc[os.path.basename(item.source), "confidence"])

    # Rerun (the failure again, the rest skipped) and a fresh run into another folder: nothing twice.
    assert runner.invoke(cli, [*args, "--retry-failed"]).exit_code == 1
    assert runner.invoke(cli, ["batch", str(src), "--out", str(tmp_path / "again"), "--review-below", "1.0",
                               "--queue", queue, "--workers", "1"]).exit_code == 1
    with ReviewQueue(queue) as q:
        assert q.stats().pending == 3

    status = runner.invoke(cli, ["queue", "status", "--queue", queue])
    assert status.exit_code == 0 and "waiting  3" in status.output and "pending  3" in status.output
    listing = runner.invoke(cli, ["queue", "list", "--queue", queue])
    assert listing.exit_code == 0 and len(listing.output.strip().splitlines()) == 4
    exported = runner.invoke(cli, ["queue", "export", "--queue", queue, "--out", str(tmp_path / "items.csv")])
    assert exported.exit_code == 0
    assert len(pd.read_csv(tmp_path / "items.csv")) == 3


def test_remove_with_a_review_share_sends_the_doubtful_ones_and_without_calibration_refuses(tmp_path, fashion):
    queue = str(tmp_path / "queue.db")
    runner = CliRunner()
    result = runner.invoke(cli, ["remove", *fashion, "--out", str(tmp_path / "cut"), "--review-share", "0.5",
                                 "--queue", queue])
    assert result.exit_code == 0, result.output
    with ReviewQueue(queue) as q:
        sent = q.stats().pending
        threshold = {item.threshold for item in q.items()}
    assert f"{sent} under confidence" in result.output and len(threshold) <= 1

    # A checkpoint nobody calibrated: scoring is skipped quietly, a review threshold is refused.
    checkpoint = tmp_path / "mine.pth"
    shutil.copy(cached_weights(get_spec("u2netp")), checkpoint)
    plain = runner.invoke(cli, ["remove", fashion[0], "--out", str(tmp_path / "plain"), "--model", str(checkpoint)])
    assert plain.exit_code == 0, plain.output
    refused = runner.invoke(cli, ["remove", fashion[0], "--out", str(tmp_path / "gated"), "--model", str(checkpoint),
                                  "--review-below", "0.9", "--queue", queue])
    assert refused.exit_code == 1
    assert "no confidence calibration" in refused.output and "clearbg calibrate --model" in refused.output
    assert not (tmp_path / "gated").exists()
    assert runner.invoke(cli, ["remove", fashion[0], "--out", str(tmp_path / "x"), "--review-below", "0.9",
                               "--review-share", "0.1", "--queue", queue]).exit_code == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_server_answers_with_confidence_and_x_review_and_enqueues_the_upload(tmp_path, fashion):
    queue = str(tmp_path / "queue.db")
    port = _free_port()
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "clearbg", "serve", "--port", str(port), "--log-level", "warning",
                             "--review-below", "1.0", "--queue", queue], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "clearbg serve did not become ready"
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        with open(fashion[0], "rb") as f:
            data = f.read()
        answers = [httpx.post(f"{url}/v1.0/removebg", files={"image_file": ("a.jpg", data, "image/jpeg")},
                              data={"size": "preview"}, timeout=60) for _ in range(2)]
        bad = httpx.post(f"{url}/v1/remove", files={"file": ("b.jpg", b"nope", "image/jpeg")}, timeout=60)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-review"] == "true" and 0.5 < float(answer.headers["x-confidence"]) <= 1
    assert bad.status_code == 415 and "x-review" not in bad.headers
    with ReviewQueue(queue) as q:
        [item] = list(q.items())  # the same upload twice is one item
        assert q.read(item.photo) == data and item.source == "upload" and item.job == "serve"
        photo = Image.open(fashion[0])
        # Answered at "preview" size; review gets the photo's own size.
        assert Image.open(io.BytesIO(q.read(item.mask))).size == photo.size
        assert item.score == pytest.approx(float(answers[0].headers["x-confidence"]), abs=1e-4)
