"""The evaluation report: self-contained HTML rendered in a real Chromium, and MLflow (issue 6)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from clearbg.errors import ClearbgError
from clearbg.evaluate.report import summary_table, write_report
from clearbg.evaluate.settings import EvalSettings
from clearbg.evaluate.run import Evaluation, evaluate_model
from clearbg.evaluate.tracking import log_evaluation

N_IMAGES = 3
WORST = 2
# The second model of the paired report, named as a checkpoint path: long names must not push
# the table columns out of view.
LONG_NAME = "runs/u2netp-fashion320-cut-at-0.95-with-a-long-run-name-lr1e-4/checkpoints/best.pt"
LONG_FOLDER = "runs_u2netp-fashion320-cut-at-0.95-with-a-long-run-name-lr1e-4_checkpoints_best.pt"


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory, shared_data) -> list[Evaluation]:
    """u2netp on 3 real fashion photos, at the usual cut and at a strict 0.95 cut (a worse model)."""
    from clearbg.data.prepare import PrepareConfig, prepare_dataset

    root = shared_data / "fashion"
    rows = pd.read_csv(root / "manifest.csv")
    rows = rows[rows["tiny"] == 1].sort_values("id").head(N_IMAGES).reset_index(drop=True)
    rows["image"] = [str(root / p) for p in rows["image"]]
    rows["mask"] = [str(root / p) for p in rows["mask"]]
    work = tmp_path_factory.mktemp("report-data")
    rows.to_csv(work / "pairs.csv", index=False)
    prepare_dataset(str(work / "pairs.csv"), str(work / "ds"), PrepareConfig(sizes=[(64, 64)]), workers=1)
    data = f"{work / 'ds'}:test"
    return [
        evaluate_model("u2netp", data, progress=False),
        evaluate_model("u2netp", data, settings=EvalSettings(threshold=0.95), name="u2netp@0.95", progress=False),
    ]


@pytest.fixture(scope="module")
def single_report(evaluations, tmp_path_factory) -> Path:
    return write_report(evaluations[:1], tmp_path_factory.mktemp("single"), worst_k=WORST)


@pytest.fixture(scope="module")
def paired_report(evaluations, tmp_path_factory) -> Path:
    a, b = evaluations
    b = Evaluation(LONG_NAME, b.data, b.per_image, b.thumbnails, b.settings)
    return write_report([a, b], tmp_path_factory.mktemp("paired"), worst_k=WORST, title="cut 0.5 vs 0.95")


def render(browser, report: Path, screenshot: Path) -> dict:
    """Open the report in Chromium; what the page shows, and a full-page screenshot."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(report.as_uri(), wait_until="load")
        found = page.evaluate("""() => ({
            images: document.images.length,
            broken: Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),
            tables: document.querySelectorAll('table').length,
            cases: document.querySelectorAll('.case').length,
            title: document.title,
            text: document.body.innerText,
            height: document.body.scrollHeight,
            // tables (outside the collapsed settings) whose columns do not all fit
            clipped: Array.from(document.querySelectorAll('.tablewrap'))
                .filter(t => !t.closest('details') && t.scrollWidth > t.clientWidth + 1)
                .map(t => t.querySelector('th').innerText),
        })""")
        page.screenshot(path=str(screenshot), full_page=True)
    finally:
        page.close()
    return found


def test_single_report_is_self_contained_and_keeps_the_numbers(single_report, evaluations):
    folder = single_report.parent
    assert {p.name for p in folder.iterdir()} >= {"report.html", "summary.json", "per_image.csv", "thumbnails.npz"}
    page = single_report.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched from anywhere
    assert not re.search(r"url\(\s*['\"]?https?:", page)
    assert len(page) < 2_000_000
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["overall"]["iou_mean"] == pytest.approx(evaluations[0].summary()["overall"]["iou_mean"])
    assert f"{summary['overall']['iou_mean']:.4f}" in page
    assert Evaluation.load(str(folder)).per_image["id"].tolist() == evaluations[0].per_image["id"].tolist()


def test_single_report_renders_in_chromium(chromium, single_report, tmp_path):
    shot = tmp_path / "single-report.png"
    found = render(chromium, single_report, shot)
    assert found["broken"] == [] and found["clipped"] == []
    # 3 charts + 4 tiles (photo, truth, prediction, errors) per worst case
    assert found["images"] == 3 + 4 * WORST
    assert found["cases"] == WORST and found["tables"] >= 3
    assert "lowest-IoU images" in found["text"] and "u2netp" in found["title"]
    with Image.open(shot) as image:
        assert image.width == 1280 and image.height == found["height"] > 1500


def test_paired_report_renders_both_models_in_chromium(chromium, paired_report, evaluations, tmp_path):
    shot = tmp_path / "paired-report.png"
    found = render(chromium, paired_report, shot)
    assert found["broken"] == [] and found["clipped"] == []
    assert found["title"] == "cut 0.5 vs 0.95"
    assert LONG_NAME in found["text"] and "Largest drops from A to B" in found["text"]
    # 5 charts; photo, truth and two images per model in every case of both grids
    assert found["images"] == 5 + 6 * found["cases"]
    assert shot.stat().st_size > 50_000


def test_paired_report_writes_each_model_and_the_comparison(paired_report, evaluations):
    folder = paired_report.parent
    assert (folder / "u2netp" / "summary.json").is_file() and (folder / LONG_FOLDER / "per_image.csv").is_file()
    paired = pd.read_csv(folder / "comparison.csv", dtype={"id": str})
    assert len(paired) == N_IMAGES
    pd.testing.assert_series_equal(paired["iou_delta"], paired["iou_b"] - paired["iou_a"], check_names=False)
    assert (paired["iou_delta"] < 0).all()  # a 0.95 cut drops the soft edges on every photo
    comparison = json.loads((folder / "comparison.json").read_text())
    assert comparison["b_worse"] == N_IMAGES
    overall = comparison["overall"]["iou_mean"]
    assert overall["delta"] == pytest.approx(overall["b"] - overall["a"]) and overall["delta"] < 0


def test_report_takes_one_or_two_models(evaluations, tmp_path):
    with pytest.raises(ClearbgError, match="one model or two"):
        write_report([*evaluations, evaluations[0]], tmp_path)


def test_unreachable_photos_still_give_a_report(evaluations, tmp_path):
    ev = evaluations[0]
    moved = Evaluation(ev.model, ev.data, ev.per_image.assign(image="gone/photo.jpg"), ev.thumbnails, ev.settings)
    page = write_report([moved], tmp_path, worst_k=1).read_text()
    assert "gone/photo.jpg" in page  # the reason, next to a placeholder tile


def test_summary_table_lists_overall_and_groups(evaluations):
    text = summary_table(evaluations)
    assert "mean IoU" in text and "IoU ≥ 95 %" in text and "change" in text
    assert "light_coloured (" in text


def test_log_evaluation_to_a_real_mlflow_store(paired_report, single_report, evaluations, tmp_path, make_mlflow_store):
    from mlflow import MlflowClient

    uri = make_mlflow_store(tmp_path)
    run_id = log_evaluation(single_report.parent, tracking_uri=uri)
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    summary = evaluations[0].summary()
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "clearbg-evaluate"
    assert run.data.metrics["iou_mean"] == pytest.approx(summary["overall"]["iou_mean"])
    assert run.data.metrics["share_iou_95"] == pytest.approx(summary["overall"]["share_iou_95"])
    assert run.data.metrics["iou_mean/light_coloured"] == pytest.approx(summary["groups"]["light_coloured"]["iou_mean"])
    assert run.data.params["eval.precision"] == "fp32"
    assert run.data.tags["clearbg.eval.models"] == "u2netp"
    files = {f.path for f in client.list_artifacts(run_id, "evaluation")}
    assert {"evaluation/report.html", "evaluation/summary.json", "evaluation/per_image.csv"} <= files
    local = client.download_artifacts(run_id, "evaluation/report.html", str(tmp_path / "back"))
    assert Path(local).read_bytes() == single_report.read_bytes()
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(tmp_path / "mlartifacts")  # beside the database, not ./mlruns

    # Into an existing run (as `clearbg register` does): left open, models prefixed.
    open_run = client.create_run(run.info.experiment_id).info.run_id
    assert log_evaluation(paired_report.parent, run_id=open_run, tracking_uri=uri) == open_run
    again = client.get_run(open_run)
    assert again.info.status == "RUNNING"
    assert again.data.metrics[f"{LONG_FOLDER}/iou_mean"] < again.data.metrics["u2netp/iou_mean"]
    assert "evaluation/comparison.json" in {f.path for f in client.list_artifacts(open_run, "evaluation")}
