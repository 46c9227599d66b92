"""Evaluation reports in MLflow: the files as artifacts, the figures as metrics.

The store is found as everywhere in clearbg (:func:`clearbg.mlflow_store.resolve_tracking_uri`):
an explicit URI, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///<abs runs>/mlflow.db``.

Example:
    >>> write_report([evaluation], "eval/u2netp")  # doctest: +SKIP
    >>> log_evaluation("eval/u2netp")              # doctest: +SKIP
    '3f0c...'
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clearbg.errors import ClearbgError
from clearbg.evaluate.run import SUMMARY_FILE
from clearbg.mlflow_store import connect, experiment_id, log_metrics, log_params, resolve_tracking_uri

__all__ = ["EXPERIMENT", "log_evaluation", "summary_metrics"]

EXPERIMENT = "clearbg-evaluate"  # MLflow experiment of `clearbg evaluate` runs


def log_evaluation(
    evaluation_dir: str | os.PathLike,
    run_id: str | None = None,
    tracking_uri: str | None = None,
    *,
    experiment: str = EXPERIMENT,
    run_name: str | None = None,
    artifact_path: str = "evaluation",
) -> str:
    """Log a report folder (from :func:`clearbg.evaluate.report.write_report`) to MLflow.

    Every file goes under the run's ``artifact_path`` (``report.html``, ``summary.json``,
    ``per_image.csv`` ...). The figures become metrics: ``iou_mean``, ``share_iou_95`` ...
    overall and ``iou_mean/<group>`` per group; with two models each name is prefixed by the
    model's folder (``u2netp/iou_mean``). Model and data are tagged ``clearbg.eval.*``.

    Args:
        evaluation_dir: the folder ``write_report`` wrote.
        run_id: log into this existing run (left open); None creates a run in ``experiment``
            and ends it.
        tracking_uri: the store (default: :func:`clearbg.mlflow_store.resolve_tracking_uri`).
        experiment: experiment of a new run.
        run_name: name of a new run (default: ``<model> on <data>``).
        artifact_path: folder of the files inside the run's artifacts.

    Returns:
        The run id.

    Raises:
        ClearbgError: the folder holds no evaluation, or MLflow failed.

    Example:
        >>> run_id = log_evaluation("eval/u2netp", tracking_uri="sqlite:///runs/mlflow.db")  # doctest: +SKIP
    """
    from mlflow.entities import RunTag
    from mlflow.exceptions import MlflowException

    from clearbg.evaluate.report import REPORT_FILE

    folder = Path(evaluation_dir)
    summaries = _read_summaries(folder)
    uri = resolve_tracking_uri(tracking_uri)
    models = " vs ".join(s["model"] for _, s in summaries)
    data = summaries[0][1]["data"]
    created = run_id is None
    client = None
    try:
        client = connect(uri)
        if created:
            run = client.create_run(experiment_id(client, experiment), run_name=run_name or f"{models} on {data}")
            run_id = run.info.run_id
            log_params(client, run_id, summaries[0][1].get("settings", {}), prefix="eval.")
        metrics: dict[str, float] = {}
        for prefix, summary in summaries:
            metrics.update(summary_metrics(summary, prefix))
        log_metrics(client, run_id, metrics)
        client.log_batch(run_id, tags=[RunTag("clearbg.eval.models", models), RunTag("clearbg.eval.data", data),
                                       RunTag("clearbg.eval.report", f"{artifact_path}/{REPORT_FILE}")])
        client.log_artifacts(run_id, str(folder), artifact_path=artifact_path)
        if created:
            client.set_terminated(run_id, "FINISHED")
    except MlflowException as err:
        if created and run_id is not None and client is not None:
            client.set_terminated(run_id, "FAILED")
        raise ClearbgError(f"logging {folder} to MLflow at {uri} failed: {err.message}") from err
    return run_id


def summary_metrics(summary: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Run metrics of an evaluation summary: ``<prefix>iou_mean`` overall, ``<prefix>iou_mean/<group>``
    per group (the names ``clearbg evaluate``, ``register`` and ``promote`` log).

    Example:
        >>> summary_metrics({"overall": {"iou_mean": 0.9}, "groups": {"shorts": {"iou_mean": 0.8}}}, "a/")
        {'a/iou_mean': 0.9, 'a/iou_mean/shorts': 0.8}
    """
    out = {f"{prefix}{k}": float(v) for k, v in summary["overall"].items() if isinstance(v, (int, float))}
    for group, figures in summary["groups"].items():
        out.update({f"{prefix}{k}/{group}": float(v) for k, v in figures.items() if isinstance(v, (int, float))})
    return out


def _read_summaries(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """(metric prefix, summary) of each model in a report folder."""
    if (folder / SUMMARY_FILE).is_file():
        return [("", json.loads((folder / SUMMARY_FILE).read_text()))]
    found = sorted(p.parent for p in folder.glob(f"*/{SUMMARY_FILE}"))
    if not found:
        raise ClearbgError(f"no {SUMMARY_FILE} in {folder} or its subfolders: write it with `clearbg evaluate`")
    return [(f"{p.name}/", json.loads((p / SUMMARY_FILE).read_text())) for p in found]
