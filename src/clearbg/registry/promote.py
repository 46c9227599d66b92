"""Promotion by a paired gate, and rollback: the ``champion`` alias moves only when earned.

:func:`promote` scores ``champion`` and ``challenger`` on the same held-out images (reusing the
evaluations stored at registration when they measured exactly the same thing) and moves the
alias only if the challenger wins (:mod:`clearbg.evaluate.compare`); :func:`rollback` undoes the
last promotion. Every decision is recorded as a run of the ``clearbg-promote`` experiment.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clearbg.errors import ClearbgError, RegistryError
from clearbg.evaluate.compare import Decision, compare_evaluations, first_champion
from clearbg.evaluate.report import write_report
from clearbg.evaluate.run import Evaluation, evaluate_model
from clearbg.evaluate.settings import EvalSettings
from clearbg.evaluate.tracking import summary_metrics
from clearbg.mlflow_store import experiment_id, log_metrics, log_params, mlflow_errors, open_store, using_tracking_uri
from clearbg.models.mlflow_uris import find_version, registered_model, resolve_model_uri
from clearbg.registry.register import CHALLENGER, CHAMPION, EVALUATION_ARTIFACTS, PREVIOUS_CHAMPION

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

PROMOTE_EXPERIMENT = "clearbg-promote"

log = logging.getLogger(__name__)


def _evaluate_version(client: MlflowClient, uri: str, name: str, version: ModelVersion, role: str, data: str,
                      settings: EvalSettings, fresh: bool, progress: bool | None) -> tuple[Evaluation, bool]:
    """The version's evaluation on ``data``: the one attached at registration when it measured
    exactly the same thing (same key), else a new one. Returns (evaluation, reused)."""
    from mlflow.exceptions import MlflowException

    label = f"{role} v{version.version}"  # short: it heads table columns and names report folders
    wanted = settings.fingerprint(data)
    if not fresh and wanted and (version.tags or {}).get("eval.key") == wanted and version.run_id:
        with tempfile.TemporaryDirectory(prefix="clearbg-eval-") as tmp:
            try:
                with using_tracking_uri(uri):
                    folder = client.download_artifacts(version.run_id, EVALUATION_ARTIFACTS, tmp)
                evaluation = Evaluation.load(folder)
            except (OSError, ClearbgError, MlflowException) as err:
                log.warning("the evaluation stored with %s cannot be read (%s); evaluating again", label, err)
            else:
                evaluation.model = label
                return evaluation, True
    checkpoint = resolve_model_uri(f"models:/{name}/{version.version}", tracking_uri=uri)
    evaluation = evaluate_model(str(checkpoint), data, settings=settings, name=label, progress=progress)
    return evaluation, False


@dataclass(frozen=True)
class Promotion:
    """The outcome of :func:`promote`.

    Attributes:
        name: the registered model.
        decision: the gate's :class:`~clearbg.evaluate.compare.Decision` (``promote``, reasons, rows).
        champion_version: the champion compared against (None: there was none).
        challenger_version: the challenger compared.
        champion: the version the ``champion`` alias points to now.
        run_id: the ``clearbg-promote`` run that records it all.
        data: ``DATASET:split`` both were scored on.
        reused: role -> whether the evaluation attached at registration was reused.
        evaluations: role -> the :class:`Evaluation` (``"champion"``, ``"challenger"``).
    """

    name: str
    decision: Decision
    champion_version: str | None
    challenger_version: str
    champion: str
    run_id: str
    data: str
    reused: dict[str, bool]
    evaluations: dict[str, Evaluation]

    @property
    def promoted(self) -> bool:
        return self.decision.promote

    def table(self) -> str:
        """What ``clearbg promote`` prints: the comparison table, the decision and what moved."""
        challenger = f"challenger v{self.challenger_version}"
        n = len(self.evaluations[CHALLENGER].per_image)
        if self.champion_version is None:
            head = f"{self.name}: {challenger} on {self.data} ({n} images); no champion yet"
            iou = self.evaluations[CHALLENGER].per_image["iou"]
            body = f"{challenger}: mean IoU {iou.mean():.4f}, IoU >= 95 % on {(iou >= 0.95).mean():.1%}\n" + self.decision.table()
        else:
            head = f"{self.name}: champion v{self.champion_version} vs {challenger} on {self.data} ({n} images, paired)"
            body = self.decision.table(f"champion v{self.champion_version}", challenger)
        reused = [role for role, flag in self.reused.items() if flag]
        lines = [head]
        if reused:
            lines.append(f"(reused the evaluation stored at registration for: {', '.join(reused)}; --fresh re-evaluates)")
        lines.append(body)
        if self.promoted:
            moved = f"champion -> v{self.champion}"
            if self.champion_version is not None:
                moved += (f", {PREVIOUS_CHAMPION} -> v{self.champion_version} "
                          f"(roll back with: clearbg promote --name {self.name} --rollback)")
            lines.append(moved)
        else:
            lines.append(f"champion stays v{self.champion}; the challenger keeps its alias")
        lines.append(f"recorded in MLflow run {self.run_id} (experiment {PROMOTE_EXPERIMENT})")
        return "\n".join(lines)


def promote(
    name: str,
    data: str,
    *,
    margin: float = 0.005,
    tolerance: float = 0.01,
    tracking_uri: str | None = None,
    fresh: bool = False,
    settings: EvalSettings | None = None,
    progress: bool | None = None,
) -> Promotion:
    """Compare ``champion`` and ``challenger`` on the same images and move ``champion`` if earned.

    The challenger is promoted only if its mean IoU beats the champion's by at least ``margin``
    AND no group's mean IoU drops by more than ``tolerance`` (paired, per image:
    :func:`clearbg.evaluate.compare.compare_evaluations`). With no champion yet, the challenger
    becomes the first one. On promotion ``previous-champion`` keeps the old champion (see
    :func:`rollback`) and the ``challenger`` alias is removed (it is the champion now). Either
    way a run in the ``clearbg-promote`` experiment records the params, both models' metrics,
    the decision (tag ``clearbg.decision``), the table and the side-by-side report, and both
    versions are tagged with the outcome.

    Args:
        name: the registered model.
        data: the held-out set, ``DATASET[:split]``.
        margin: how much higher the challenger's mean IoU must be.
        tolerance: how much any group's mean IoU may drop.
        tracking_uri: the store (default: :func:`resolve_tracking_uri`).
        fresh: evaluate both again even when the evaluation stored at registration measured
            exactly this (same :meth:`EvalSettings.fingerprint`).
        settings, progress: how to evaluate (:class:`EvalSettings`; default fp32).

    Returns:
        The :class:`Promotion` (``print(result.table())``).

    Raises:
        UnknownModel: no such registered model, or it has no ``challenger``.
        RegistryError: the challenger already is the champion; the store refused a write.
        ComparisonError: the two evaluations do not cover the same images.

    Example:
        >>> result = promote("shop", "data/fashion:test", margin=0.005, tolerance=0.01)  # doctest: +SKIP
        >>> result.promoted, result.champion                                          # doctest: +SKIP
        (True, '4')
    """
    client, uri = open_store(tracking_uri, create=False)
    challenger = find_version(client, name, alias=CHALLENGER, version=None, uri=uri)
    aliases = dict(client.get_registered_model(name).aliases or {})
    champion = find_version(client, name, alias=CHAMPION, version=None, uri=uri) if CHAMPION in aliases else None
    if champion is not None and champion.version == challenger.version:
        raise RegistryError(f"{name}: the challenger (v{challenger.version}) already is the champion; "
                            f"register a new version (clearbg register --name {name} ...) to compare")
    settings = settings or EvalSettings()
    evaluations: dict[str, Evaluation] = {}
    reused: dict[str, bool] = {}
    roles = [(CHAMPION, champion), (CHALLENGER, challenger)] if champion is not None else [(CHALLENGER, challenger)]
    for role, version in roles:
        evaluations[role], reused[role] = _evaluate_version(client, uri, name, version, role, data, settings, fresh, progress)
    if champion is None:
        decision = first_champion(margin, tolerance)
    else:
        decision = compare_evaluations(evaluations[CHAMPION].per_image, evaluations[CHALLENGER].per_image,
                                       margin=margin, tolerance=tolerance)
    run_id = _record_promotion(client, uri, name, data, decision, champion, challenger, evaluations, reused)
    with mlflow_errors(f"moving the aliases of {name}", uri):
        _apply(client, name, decision, champion, challenger, run_id)
    now = challenger.version if decision.promote else champion.version
    return Promotion(name=name, decision=decision, champion_version=str(champion.version) if champion else None,
                     challenger_version=str(challenger.version), champion=str(now), run_id=run_id,
                     data=evaluations[CHALLENGER].data, reused=reused, evaluations=evaluations)


def _record_promotion(client: MlflowClient, uri: str, name: str, data: str, decision: Decision,
                      champion: ModelVersion | None, challenger: ModelVersion, evaluations: dict[str, Evaluation],
                      reused: dict[str, bool]) -> str:
    """One run in ``clearbg-promote``: params, both models' metrics, the decision, table and report."""
    with mlflow_errors(f"recording the promotion of {name}", uri):
        experiment = experiment_id(client, PROMOTE_EXPERIMENT)
        run = client.create_run(experiment, run_name=f"promote {name}", tags={
            "clearbg.decision": decision.verdict, "clearbg.reasons": "; ".join(decision.reasons)[:5000],
            "clearbg.registered_model": name})
        run_id = run.info.run_id
        try:
            log_params(client, run_id, {
                "name": name, "data": evaluations[CHALLENGER].data, "margin": decision.margin,
                "tolerance": decision.tolerance, "challenger_version": challenger.version,
                "champion_version": champion.version if champion else "none",
                "reused_evaluations": ",".join(r for r, f in reused.items() if f) or "none",
            })
            metrics: dict[str, float] = {}
            for role, evaluation in evaluations.items():
                metrics.update(summary_metrics(evaluation.summary(), prefix=f"{role}/"))
            for row in decision.rows():  # delta/iou, delta/iou/<group>, p_value/iou ...
                where = "" if row.group is None else f"/{row.group}"
                metrics[f"delta/{row.metric}{where}"] = row.delta
                metrics[f"p_value/{row.metric}{where}"] = row.p_value
            log_metrics(client, run_id, metrics)
            client.log_dict(run_id, decision.to_dict(), "decision.json")
            labels = (f"champion v{champion.version}" if champion else "champion", f"challenger v{challenger.version}")
            client.log_text(run_id, decision.table(*labels) + "\n", "comparison.txt")
            with tempfile.TemporaryDirectory(prefix="clearbg-promote-") as tmp:
                order = [evaluations[r] for r in (CHAMPION, CHALLENGER) if r in evaluations]
                write_report(order, tmp, title=f"{name}: {' vs '.join(e.model for e in order)} on {data}: "
                                               f"{decision.verdict}")
                client.log_artifacts(run_id, tmp, "report")
        except BaseException:
            client.set_terminated(run_id, status="FAILED")
            raise
        client.set_terminated(run_id, status="FINISHED")
    return run_id


def _apply(client: MlflowClient, name: str, decision: Decision, champion: ModelVersion | None,
           challenger: ModelVersion, run_id: str) -> None:
    """Move the aliases (on promotion) and tag both versions with the outcome."""
    against = f"v{champion.version}" if champion else "no champion"
    if not decision.promote:
        client.set_model_version_tag(name, challenger.version, "clearbg.promotion", f"refused vs {against} (run {run_id})")
        return
    if champion is not None:
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, champion.version)
        client.set_model_version_tag(name, champion.version, "clearbg.replaced_by", f"v{challenger.version} (run {run_id})")
    client.set_registered_model_alias(name, CHAMPION, challenger.version)
    client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, challenger.version, "clearbg.promotion", f"promoted over {against} (run {run_id})")


def rollback(name: str, *, tracking_uri: str | None = None) -> tuple[str, str]:
    """Swap ``champion`` and ``previous-champion``: undo the last promotion in one call.

    No evaluation: a rollback is an operator's decision (the numbers were recorded when the
    promotion happened). It is recorded as a ``clearbg-promote`` run with decision ``rollback``.

    Returns:
        ``(champion, previous_champion)`` versions after the swap.

    Raises:
        UnknownModel: no such model.
        RegistryError: nothing to roll back (no ``champion``, or no ``previous-champion``).

    Example:
        >>> rollback("shop")  # doctest: +SKIP
        ('3', '4')
    """
    client, uri = open_store(tracking_uri, create=False)
    aliases = dict(registered_model(client, name, uri).aliases or {})
    if CHAMPION not in aliases:
        raise RegistryError(f"nothing to roll back: {name} has no champion yet "
                            f"(promote one first: clearbg promote --name {name} --data DATASET)")
    if PREVIOUS_CHAMPION not in aliases:
        raise RegistryError(f"nothing to roll back: no previous champion; the champion of {name} is "
                            f"v{aliases[CHAMPION]} (a rollback undoes a promotion, and none replaced it)")
    current = find_version(client, name, alias=CHAMPION, version=None, uri=uri)
    previous = find_version(client, name, alias=PREVIOUS_CHAMPION, version=None, uri=uri)
    with mlflow_errors(f"rolling back {name}", uri):
        experiment = experiment_id(client, PROMOTE_EXPERIMENT)
        run = client.create_run(experiment, run_name=f"rollback {name}", tags={
            "clearbg.decision": "rollback", "clearbg.registered_model": name,
            "clearbg.reasons": f"rollback: champion v{current.version} -> v{previous.version}"})
        log_params(client, run.info.run_id, {
            "name": name, "champion_version": previous.version, "replaced_version": current.version})
        client.set_registered_model_alias(name, CHAMPION, previous.version)
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, current.version)
        client.set_model_version_tag(name, current.version, "clearbg.promotion",
                                     f"rolled back to v{previous.version} (run {run.info.run_id})")
        client.set_terminated(run.info.run_id, status="FINISHED")
    return str(previous.version), str(current.version)
