"""``clearbg evaluate``: real photos, real model, a real MLflow store read back (issue 6)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from clearbg.cli import cli


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, shared_data) -> str:
    """3 real fashion pairs (test split) prepared at 64x64."""
    from clearbg.data.prepare import PrepareConfig, prepare_dataset

    root = shared_data / "fashion"
    rows = pd.read_csv(root / "manifest.csv")
    rows = rows[rows["tiny"] == 1].sort_values("id").head(3).reset_index(drop=True)
    rows["image"] = [str(root / p) for p in rows["image"]]
    rows["mask"] = [str(root / p) for p in rows["mask"]]
    work = tmp_path_factory.mktemp("cli-eval-data")
    rows.to_csv(work / "pairs.csv", index=False)
    prepare_dataset(str(work / "pairs.csv"), str(work / "ds"), PrepareConfig(sizes=[(64, 64)]), workers=1)
    return str(work / "ds")


def test_evaluate_writes_the_report_prints_the_table_and_logs_to_mlflow(dataset, tmp_path, make_mlflow_store):
    from mlflow import MlflowClient

    uri = make_mlflow_store(tmp_path)
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--model",
            "u2netp",
            "--data",
            f"{dataset}:test",
            "--out",
            str(out),
            "--limit",
            "2",
            "--worst",
            "2",
            "--tracking-uri",
            uri,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "mean IoU" in result.output and "IoU ≥ 99 %" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 2 and summary["settings"]["precision"] == "fp32"
    assert (out / "report.html").stat().st_size > 10_000
    assert f"{summary['overall']['iou_mean']:.4f}" in result.output

    client = MlflowClient(uri)
    [experiment] = [e for e in client.search_experiments() if e.name == "clearbg-evaluate"]
    [run] = client.search_runs([experiment.experiment_id])
    assert run.data.metrics["iou_mean"] == pytest.approx(summary["overall"]["iou_mean"])
    assert "evaluation/report.html" in {f.path for f in client.list_artifacts(run.info.run_id, "evaluation")}


def test_evaluate_without_mlflow_touches_no_store(dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "--model",
            "u2netp",
            "--data",
            dataset,
            "--out",
            "eval",
            "--limit",
            "1",
            "--no-mlflow",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "eval" / "report.html").is_file()
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "u2netp", "--data", "{ds}:holdout"], "unknown split 'holdout'"),
        (["--model", "u2netp", "--data", "{ds}:train"], "split 'train' of"),
        (["--model", "nonesuch", "--data", "{ds}"], "unknown model 'nonesuch'"),
        (["--model", "u2netp", "--data", "{tmp}/no-dataset"], "no manifest at"),
        (["--model", "a", "--model", "b", "--model", "c", "--data", "{ds}"], "give --model once, or twice"),
    ],
)
def test_evaluate_explains_what_is_wrong(dataset, tmp_path, args, message):
    args = [a.format(ds=dataset, tmp=tmp_path) for a in args]
    result = CliRunner().invoke(cli, ["evaluate", *args, "--out", str(tmp_path / "out"), "--no-mlflow"])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
