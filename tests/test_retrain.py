"""``clearbg retrain`` on a real MLflow store, real reviewed pairs and real fine-tuning.

The story, built once for the module: the official u2netp is the champion (v1) of ``shop``; a
reviewer accepts and corrects a few photos, one of them a photo of the champion's own test
split. Round 1 fine-tunes with a learning rate that wrecks the weights, is killed with SIGKILL
mid-training, is continued by running the same command again, and its worse challenger (v2) is
refused with the gate's reasons. Run again, it says there is nothing new. After one more
decision, round 2 fine-tunes sanely with a gate that takes any result (``--margin -1``) and its
challenger (v3) becomes champion with its own confidence calibration.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from clearbg.cli import cli
from clearbg.models.mlflow_uris import resolve_confidence_uri
from clearbg.retrain import RETRAIN_EXPERIMENT
from clearbg.retrain.run import ROUND_TAG, UNTIL_TAG
from clearbg.review import ReviewQueue
from clearbg.review.feedback import write_feedback

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

pytestmark = pytest.mark.slow
TRAIN = ["--max-steps", "3", "--set", "batch_size=2", "--set", "workers=0", "--set", "checkpoint_every=1",
         "--set", "tensorboard=false", "--no-onnx"]
NEW_PHOTOS = ("ccp_0001", "ccp_0002", "ccp_0003", "ccp_0004", "ccp_0005")  # not in the tiny subset


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A private clearbg cache that still sees the official weights of the user cache."""
    from clearbg.models.download import cache_dir

    root = tmp_path_factory.mktemp("clearbg-home")
    (root / "weights").symlink_to(cache_dir() / "weights", target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLEARBG_HOME", str(root))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield root


def _half(path: Path, out: Path, resample) -> None:
    with Image.open(path) as image:
        image.resize((image.width // 2, image.height // 2), resample).save(out)


@pytest.fixture(scope="module")
def base(tmp_path_factory, shared_data) -> str:
    """The champion's dataset: the 24 tiny fashion pairs at half size, 8 per split (the
    calibration needs 8 validation photos)."""
    from clearbg.data.prepare import PrepareConfig, prepare_dataset

    work = tmp_path_factory.mktemp("base")
    rows = pd.read_csv(shared_data / "fashion" / "manifest.csv")
    rows = rows[rows["tiny"] == 1].sort_values("id").reset_index(drop=True)
    (work / "images").mkdir()
    (work / "masks").mkdir()
    for row in rows.itertuples():
        _half(shared_data / "fashion" / row.image, work / "images" / f"{row.id}.png", Image.Resampling.BILINEAR)
        _half(shared_data / "fashion" / row.mask, work / "masks" / f"{row.id}.png", Image.Resampling.NEAREST)
    rows["image"] = [f"images/{i}.png" for i in rows["id"]]
    rows["mask"] = [f"masks/{i}.png" for i in rows["id"]]
    rows["split"] = (["train", "val", "test"] * 8)[: len(rows)]
    rows[["id", "image", "mask", "split", "product_type"]].to_csv(work / "pairs.csv", index=False)
    prepare_dataset(str(work / "pairs.csv"), str(work / "ds"), PrepareConfig(sizes=[(320, 320)]), workers=1)
    return str(work / "ds")


@pytest.fixture(scope="module")
def story(tmp_path_factory, home, make_mlflow_store, base, shared_data) -> SimpleNamespace:
    from clearbg.registry import promote, register_model

    work = tmp_path_factory.mktemp("retrain")
    uri = make_mlflow_store(work / "store")
    register_model("u2netp", "shop", f"{base}:test", tracking_uri=uri, onnx=False, progress=False)
    promote("shop", f"{base}:test", tracking_uri=uri, progress=False)

    queue = ReviewQueue(str(work / "queue.db"))
    fashion = shared_data / "fashion"
    for i, name in enumerate(NEW_PHOTOS):
        truth = np.asarray(Image.open(fashion / "masks" / f"{name}.png"))
        queue.enqueue((fashion / "images" / f"{name}.jpg").read_bytes(), _miss(truth), score=0.5 + i / 100,
                      model="models:/shop/1", source=f"shoot/{name}.jpg")
    # A reviewer also gets a photo that is in the champion's test split: never to be trained on.
    test_photo = Path(base).parent / "images" / f"{_first_test_id(base)}.png"
    held = np.asarray(Image.open(test_photo.parent.parent / "masks" / test_photo.name))
    held_item, _ = queue.enqueue(test_photo.read_bytes(), held, score=0.1, model="models:/shop/1", source="shoot/held.png")
    truths = {f"shoot/{n}.jpg": np.asarray(Image.open(fashion / "masks" / f"{n}.png")) for n in NEW_PHOTOS}
    for _ in range(len(NEW_PHOTOS)):  # the last new photo stays pending: round 2 will have it
        item = queue.claim("ana")
        if item.source in truths:
            queue.complete(item.id, item.token, "correct", mask=truths[item.source], seconds=20.0, strokes=2)
        else:
            queue.complete(item.id, item.token, "accept", seconds=3.0, strokes=0)
    feedback = str(work / "feedback")
    args = ["retrain", "--name", "shop", "--data", base, "--feedback", feedback, "--queue", str(work / "queue.db"),
            "--out", str(work / "rounds"), "--tracking-uri", uri, *TRAIN]
    env = {**os.environ, "CLEARBG_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)

    # Round 1, killed once training has checkpointed, then the same command again.
    wrecking = [*args, "--set", "lr=0.05", "--set", "warmup_steps=0"]
    proc = subprocess.Popen([sys.executable, "-m", "clearbg", *wrecking], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    latest = work / "rounds" / "shop-v1-r1" / "runs" / "challenger" / "checkpoints" / "latest.pt"
    deadline = time.monotonic() + 600
    while not latest.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    killed_at = None
    if proc.poll() is None:
        killed_at = torch.load(latest, map_location="cpu", weights_only=False)["position"]["step"] if latest.exists() else None
        proc.send_signal(signal.SIGKILL)
    output = proc.communicate()[0].decode(errors="replace")
    assert killed_at is not None, f"round 1 was not caught mid-training:\n{output[-3000:]}"
    state_after_kill = json.loads((work / "rounds" / "shop-v1-r1" / "round.json").read_text())
    runner = CliRunner()
    first = runner.invoke(cli, wrecking, env={"CLEARBG_HOME": str(home)})
    again = runner.invoke(cli, wrecking, env={"CLEARBG_HOME": str(home)})

    # One more decision, then round 2. Its challenger must pass the gate whatever a few steps
    # on CPU do, so they change no weight (lr 1e-12), and the gate asks for no gain (margin 0).
    # Only BatchNorm's running statistics move: measured +0.0008 mean IoU (fp32, 8 photos).
    refused_early = runner.invoke(cli, [*args, "--margin", "-1"], env={"CLEARBG_HOME": str(home)})
    item = queue.claim("ana")
    queue.complete(item.id, item.token, "accept", seconds=5.0, strokes=0)
    queue.close()
    second = runner.invoke(cli, [*args, "--set", "lr=1e-12", "--set", "precision=fp32", "--margin", "0",
                                 "--tolerance", "1"], env={"CLEARBG_HOME": str(home)})
    return SimpleNamespace(uri=uri, work=work, base=base, feedback=feedback, held=held_item.id, killed_at=killed_at,
                           state_after_kill=state_after_kill, first=first, again=again, second=second,
                           refused_early=refused_early)


def _miss(truth: np.ndarray) -> np.ndarray:
    """A model's mask of a photo: the truth with its top quarter of product missing."""
    predicted = truth.copy()
    predicted[: truth.shape[0] // 4] = 0
    return predicted


def _first_test_id(dataset: str) -> str:
    from clearbg.data.manifest import read_manifest

    manifest = read_manifest(dataset)
    return sorted(manifest[manifest["split"] == "test"]["id"])[0]


def test_an_interrupted_round_continues_and_a_worse_challenger_is_refused_saying_why(story):
    assert story.state_after_kill["stage"] == "merged" and story.killed_at >= 1
    assert story.first.exit_code == 0, story.first.output
    out = story.first.output
    assert "challenger v2 refused" in out and "mean IoU" in out, out
    client = MlflowClient(story.uri)
    v2 = client.get_model_version("shop", "2")
    assert v2.tags["clearbg.promotion"].startswith("refused vs v1")
    assert v2.tags[ROUND_TAG].endswith("shop-v1-r1") and float(v2.tags[UNTIL_TAG]) > 0
    # Training was continued, not restarted: one MLflow run for the challenger, 3 steps in all.
    state = json.loads((story.work / "rounds" / "shop-v1-r1" / "round.json").read_text())
    latest = torch.load(Path(state["checkpoint"]).with_name("latest.pt"), map_location="cpu", weights_only=False)
    assert latest["position"]["step"] == 3
    train_runs = client.search_runs([client.get_experiment_by_name("clearbg").experiment_id])
    assert len([r for r in train_runs if r.data.tags.get("mlflow.runName", "").startswith("challenger")]) == 2  # r1, r2
    # The decision is logged with what the round learnt from.
    retrain_runs = client.search_runs([client.get_experiment_by_name(RETRAIN_EXPERIMENT).experiment_id],
                                      order_by=["attributes.start_time ASC"])
    run = retrain_runs[0]
    assert run.data.tags["clearbg.decision"] == "keep" and "refused" in run.data.tags["clearbg.reasons"]
    assert run.data.params["corrections"] == "5" and run.data.params["added"] == "4" and run.data.params["held_out"] == "1"
    assert run.data.metrics["challenger/iou_mean"] < run.data.metrics["champion/iou_mean"]
    # The photo of the champion's own test split was gathered but never trained on.
    assert list(state["held_out"]) == [story.held] and "the same photo as held-out" in state["held_out"][story.held]
    merged = pd.read_parquet(story.work / "rounds" / "shop-v1-r1" / "dataset" / "manifest.parquet")
    assert story.held not in set(merged["id"])
    assert (merged["origin"] == "review").sum() == 4 and set(merged[merged["origin"] == "review"]["split"]) == {"train"}
    assert merged[merged["origin"] == "review"]["reviewer"].eq("ana").all()


def test_a_rerun_of_a_decided_round_says_there_is_nothing_new_and_bad_settings_stop_before_any_work(story):
    assert story.again.exit_code == 0, story.again.output
    assert "nothing new since" in story.again.output
    assert story.refused_early.exit_code == 1 and "margin and tolerance must be >= 0" in story.refused_early.output
    assert len(MlflowClient(story.uri).search_model_versions("name='shop'")) == 3  # v1, v2 (round 1), v3 (round 2)


def test_a_challenger_that_passes_the_gate_becomes_champion_with_its_own_calibration(story):
    assert story.second.exit_code == 0, story.second.output
    assert "challenger v3 promoted" in story.second.output
    client = MlflowClient(story.uri)
    assert str(client.get_registered_model("shop").aliases["champion"]) == "3"
    assert (story.work / "rounds" / "shop-v1-r2" / "round.json").exists()
    state = json.loads((story.work / "rounds" / "shop-v1-r2" / "round.json").read_text())
    assert state["corrections"] == 6 and state["stage"] == "decided"  # old + the new decision, since v1
    calibration = resolve_confidence_uri("models:/shop@champion", tracking_uri=story.uri)
    assert calibration is not None and json.loads(Path(calibration).read_text())["model"] == "models:/shop/3"
    # The next round starts from v3 and only from what was decided after v3's corrections.
    assert float(client.get_model_version("shop", "3").tags[UNTIL_TAG]) >= float(
        client.get_model_version("shop", "2").tags[UNTIL_TAG])


def test_the_whole_loop_batch_gate_queue_review_page_feedback_retrain_decision(tmp_path, home, make_mlflow_store,
                                                                                base, shared_data, chromium):
    """The loop on the tiny subset, every step through its real interface: `clearbg batch` with
    the gate sends photos to the queue; a reviewer in Chromium accepts, rejects and repaints them
    on the `clearbg review` page; the feedback folder follows; `clearbg retrain` trains a
    challenger on it and the gate's decision is logged."""
    from test_review_app import Server, _drag, _state, _wait_for_item_change, _wait_state

    from clearbg.registry import promote, register_model
    from clearbg.review.feedback import read_pairs

    uri = make_mlflow_store(tmp_path / "store")
    register_model("u2netp", "shop", f"{base}:test", tracking_uri=uri, onnx=False, progress=False)
    promote("shop", f"{base}:test", tracking_uri=uri, progress=False)
    photos = tmp_path / "shoot"
    photos.mkdir()
    for name in NEW_PHOTOS[:4]:
        (photos / f"{name}.jpg").write_bytes((shared_data / "fashion" / "images" / f"{name}.jpg").read_bytes())
    env = {**os.environ, "CLEARBG_HOME": str(home), "MLFLOW_TRACKING_URI": uri}
    queue = tmp_path / "review" / "queue.db"
    batch = subprocess.run([sys.executable, "-m", "clearbg", "batch", str(photos), "--out", str(tmp_path / "cut"),
                            "--model", "models:/shop@champion", "--precision", "fp32",  # no int8 export to build
                            "--review-below", "0.9999", "--queue", str(queue)],
                           env=env, capture_output=True, text=True, timeout=900)
    assert batch.returncode == 0, batch.stderr[-3000:]
    results = pd.read_parquet(tmp_path / "cut" / "results.parquet")
    assert results["review"].all() and len(results) == 4 and results["confidence"].between(0, 1).all()
    with ReviewQueue(str(queue)) as q:
        assert q.stats().pending == 4 and len({i.model for i in q.items()}) == 1
        made_by = next(q.items()).model

    feedback = tmp_path / "feedback"
    server = Server(queue, "--feedback", str(feedback)).wait()
    try:
        context = chromium.new_context(viewport={"width": 1280, "height": 860})
        page = context.new_page()
        page.goto(server.url + "/?reviewer=ana")
        _wait_state(page, "ready")
        first = _state(page)["id"]
        page.keyboard.press("a")                                   # 1: accept
        _wait_for_item_change(page, first)
        second = _state(page)["id"]
        page.keyboard.press("r")                                   # 2: reject, with a reason
        page.wait_for_selector("#reject-dialog[open]")
        page.keyboard.type("two people in the photo")
        page.keyboard.press("Enter")
        _wait_for_item_change(page, second)
        third = _state(page)["id"]
        page.keyboard.press("s")                                   # 3: a snapped brush stroke, saved
        _drag(page, [(250, 200), (260, 300)])
        _wait_state(page, "ready")
        page.keyboard.press("Control+Enter")
        _wait_for_item_change(page, third)
        fourth = _state(page)["id"]
        page.keyboard.press("e")                                   # 4: an eraser stroke, saved
        _drag(page, [(20, 20), (60, 40)])
        _wait_state(page, "ready")
        page.keyboard.press("Control+Enter")
        _wait_state(page, "decided")
        context.close()
    finally:
        server.stop()
    pairs = {r["id"]: r for r in read_pairs(str(feedback))}
    assert {pairs[i]["action"] for i in (first, third, fourth)} == {"accept", "correct"} and second not in pairs
    assert pairs[third]["strokes"] == "1" and pairs[third]["model"] == made_by
    assert "two people in the photo" in (feedback / "rejected.csv").read_text()

    retrain = subprocess.run([sys.executable, "-m", "clearbg", "retrain", "--name", "shop", "--data", base,
                              "--feedback", str(feedback), "--queue", str(queue), "--out", str(tmp_path / "rounds"),
                              *TRAIN], env=env, capture_output=True, text=True, timeout=1500)
    assert retrain.returncode == 0, retrain.stderr[-3000:]
    assert ("challenger v2 promoted" in retrain.stdout) != ("challenger v2 refused" in retrain.stdout), retrain.stdout
    state = json.loads((tmp_path / "rounds" / "shop-v1-r1" / "round.json").read_text())
    assert state["stage"] == "decided" and state["corrections"] == 3 and state["added"] == 3
    merged = pd.read_parquet(tmp_path / "rounds" / "shop-v1-r1" / "dataset" / "manifest.parquet")
    reviewed = merged[merged["origin"] == "review"].set_index("id")
    assert set(reviewed.index) == {first, third, fourth} and set(reviewed["reviewer"]) == {"ana"}
    client = MlflowClient(uri)
    run = client.get_run(state["run_id"])
    assert run.data.tags["clearbg.decision"] in ("promote", "keep") and run.data.params["added"] == "3"
    promote_run = client.get_run(run.data.tags["clearbg.promote_run"])
    assert promote_run.data.tags["clearbg.decision"] == run.data.tags["clearbg.decision"]
    assert "challenger/iou_mean" in run.data.metrics and "champion/iou_mean" in run.data.metrics
