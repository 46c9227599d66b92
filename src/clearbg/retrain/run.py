"""``clearbg retrain``: one command from the reviewers' corrections to a promotion decision.

A *round* fine-tunes a challenger from the current champion and lets the registry gate decide:

1. gather the feedback pairs decided since the champion was trained (the version's
   ``clearbg.retrain.until`` tag when a round made it, else its registration time);
2. prepare them like the champion's dataset, and merge them into it as training pairs, leaving
   out every one whose photo is a validation or test photo of that dataset;
3. fine-tune from the champion's weights on the merged data with ``clearbg train``'s own loop
   (its checkpoints and resume);
4. register the result as ``challenger``, evaluated on the champion dataset's frozen test split
   and with its confidence calibration refitted on the validation split (a score belongs to
   one model version, so the new champion brings its own);
5. :func:`clearbg.registry.promote`: the challenger becomes champion only if it wins there,
   and the decision, both models' figures and the reasons go to MLflow (``clearbg-promote``,
   and a ``clearbg-retrain`` run that ties the round together).

Every step leaves files in the round's folder (``OUT/NAME-vCHAMPION-rN/``) and its stage in
``round.json``, so running the same command after an interruption continues the round where it
stopped (training resumes from its last checkpoint); a round that was decided is not run again,
and a new one starts only when corrections arrived after it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from clearbg.data.manifest import DatasetError, read_info
from clearbg.data.prepare import PrepareConfig, prepare_dataset
from clearbg.errors import ClearbgError
from clearbg.evaluate.settings import EvalSettings
from clearbg.mlflow_store import experiment_id, log_metrics, log_params, mlflow_errors, open_store
from clearbg.models.mlflow_uris import find_version, resolve_confidence_uri, resolve_model_uri
from clearbg.registry import CHALLENGER, CHAMPION, Promotion, promote, register_model
from clearbg.retrain.corrections import gather, merge
from clearbg.review.feedback import iso, parse_iso, read_pairs, write_feedback
from clearbg.review.queue import ReviewQueue
from clearbg.train import load_config, train

RETRAIN_EXPERIMENT = "clearbg-retrain"
UNTIL_TAG = "clearbg.retrain.until"
"""On a version a round registered: the time of the latest correction it was trained on."""
ROUND_TAG = "clearbg.retrain.round"
OWN_SETTINGS = ("data", "out", "run_name", "init", "model", "tracking_uri")
STAGES = ("gathered", "prepared", "merged", "trained", "registered", "decided")
_log = logging.getLogger(__name__)


class RetrainError(ClearbgError):
    """A retraining round cannot start or go on (no champion, nothing to learn from ...)."""


@dataclass(frozen=True)
class RetrainSettings:
    """One ``clearbg retrain``.

    Attributes:
        name: the registered model; its ``champion`` is the starting point.
        data: the prepared dataset the champion was trained on; its test split is the frozen
            test set both models are scored on, its validation split picks ``best.pt`` and
            fits the calibration.
        feedback: the feedback folder or ``s3://`` prefix (``clearbg review --feedback``).
        queue, queue_images: a review queue to bring ``feedback`` up to date from first.
        out: local folder for the rounds.
        epochs, max_steps: how long to fine-tune (``max_steps`` wins when set).
        overrides: further ``clearbg train`` settings, ``key=value``.
        margin, tolerance: the promotion gate (:func:`clearbg.registry.promote`).
        tracking_uri: the MLflow store with the registered model.
        evaluation: how both models are scored (default fp32).
        onnx: log the challenger's ONNX export with it (as ``clearbg register`` does).
        progress: progress bars (default: on a terminal).
    """

    name: str
    data: str
    feedback: str
    queue: str | None = None
    queue_images: str | None = None
    out: str = "runs/retrain"
    epochs: int = 1
    max_steps: int | None = None
    overrides: tuple[str, ...] = ()
    margin: float = 0.005
    tolerance: float = 0.01
    tracking_uri: str | None = None
    evaluation: EvalSettings = field(default_factory=EvalSettings)
    onnx: bool = True
    progress: bool | None = None

    def __post_init__(self) -> None:
        # Checked before any work: a round should not train for an hour to fail at the gate.
        if self.margin < 0 or self.tolerance < 0:
            raise RetrainError(f"margin and tolerance must be >= 0, got {self.margin} and {self.tolerance}")
        if self.epochs < 1 or (self.max_steps is not None and self.max_steps < 1):
            raise RetrainError(f"epochs and max_steps must be >= 1, got {self.epochs} and {self.max_steps}")
        fixed = [o for o in self.overrides if o.split("=", 1)[0].strip() in OWN_SETTINGS]
        if fixed:
            raise RetrainError(f"{', '.join(fixed)}: a round sets {', '.join(OWN_SETTINGS)} itself (the champion's "
                               "weights and architecture on the merged data, in the round's folder)")


@dataclass(frozen=True)
class RetrainResult:
    """What a round did.

    Attributes:
        name: the registered model.
        round: the round's folder (None when there was nothing new to learn from).
        champion: the champion version the round started from.
        corrections: reviewed pairs gathered; added: those trained on (the rest were held out).
        held_out: gathered pair id -> why it was left out.
        challenger: the version registered (None when not that far).
        promotion: the gate's outcome (None when not that far).
        run_id: the ``clearbg-retrain`` run recording the round.
        message: what happened, in words.
    """

    name: str
    round: str | None
    champion: str
    corrections: int = 0
    added: int = 0
    held_out: dict[str, str] = field(default_factory=dict)
    challenger: str | None = None
    promotion: Promotion | None = None
    run_id: str | None = None
    message: str = ""

    @property
    def promoted(self) -> bool:
        return self.promotion is not None and self.promotion.promoted


def retrain(settings: RetrainSettings) -> RetrainResult:
    """Run (or continue) a retraining round; see the module docstring.

    Returns:
        A :class:`RetrainResult`; ``print(result.message)``.

    Raises:
        RetrainError: no champion to start from, or a round that cannot continue.
        DatasetError, RegistryError, ClearbgError: the data, the store or training failed (the
            round continues from there on the next run).

    Example:
        >>> result = retrain(RetrainSettings("shop", "data/shop", "data/feedback", queue="review/queue.db"))  # doctest: +SKIP
        >>> print(result.message)                                                                          # doctest: +SKIP
    """
    client, uri = open_store(settings.tracking_uri, create=False)
    try:
        champion = find_version(client, settings.name, alias=CHAMPION, version=None, uri=uri)
    except ClearbgError as err:
        raise RetrainError(f"retraining starts from a champion: {err}") from err
    if settings.queue is not None:
        with ReviewQueue(settings.queue, images=settings.queue_images) as queue:
            write_feedback(queue, settings.feedback)
    folder, state = _open_round(settings, champion)
    if folder is None:
        return RetrainResult(settings.name, None, str(champion.version), message=state["message"])
    return _Round(settings, uri, folder, state).run()


def _open_round(settings: RetrainSettings, champion) -> tuple[Path | None, dict]:
    """The round to work on: an unfinished one of this champion, else a new one when there are
    corrections it has not seen; (None, {"message": ...}) when there is nothing to do."""
    prefix = f"{settings.name}-v{champion.version}-r"
    rounds = sorted((p for p in Path(settings.out).glob(f"{prefix}*") if (p / "round.json").is_file()),
                    key=lambda p: int(p.name[len(prefix):]) if p.name[len(prefix):].isdigit() else -1)
    last = json.loads((rounds[-1] / "round.json").read_text()) if rounds else None
    if last is not None and last["stage"] != "decided":
        _log.info("continuing %s from stage %r", rounds[-1], last["stage"])
        return rounds[-1], last
    tags = champion.tags or {}
    since = float(tags[UNTIL_TAG]) if UNTIL_TAG in tags else champion.creation_timestamp / 1000.0
    decided = [parse_iso(r["decided"]) for r in read_pairs(settings.feedback)]
    new = [t for t in decided if t > since]
    if not new:
        return None, {"message": f"nothing to retrain on: no reviewed pair in {settings.feedback} was decided after "
                                 f"{settings.name} v{champion.version} was trained ({iso(since)})"}
    if last is not None and max(new) <= (last.get("until") or 0):
        return None, {"message": f"nothing new since {rounds[-1]} ({last['message']}); it runs again when reviewers "
                                 "have decided more photos"}
    folder = Path(settings.out) / f"{prefix}{len(rounds) + 1}"
    folder.mkdir(parents=True, exist_ok=True)
    state = {"name": settings.name, "champion": str(champion.version), "since": since, "data": settings.data,
             "feedback": settings.feedback, "stage": "new", "message": ""}
    _save(folder, state)
    return folder, state


def _save(folder: Path, state: dict) -> None:
    tmp = folder / "round.json.tmp"
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, folder / "round.json")  # atomic: a kill leaves the old stage or the new one


class _Round:
    """One round's stages, each skipped when ``round.json`` says it is done."""

    def __init__(self, settings: RetrainSettings, uri: str, folder: Path, state: dict):
        self.settings, self.uri, self.folder, self.state = settings, uri, folder, state
        if state["data"] != settings.data:
            raise RetrainError(f"{folder} was started on {state['data']}, not {settings.data}; finish it with the same "
                               "--data, or move it away to start a new round")

    def done(self, stage: str) -> bool:
        current = self.state["stage"]
        return current in STAGES and STAGES.index(current) >= STAGES.index(stage)

    def advance(self, stage: str, **values) -> None:
        self.state.update(values, stage=stage)
        _save(self.folder, self.state)

    def run(self) -> RetrainResult:
        corrections, prepared, dataset = (str(self.folder / n) for n in ("corrections.csv", "corrections", "dataset"))
        if not self.done("gathered"):
            found = gather(self.settings.feedback, self.state["since"], corrections)
            self.advance("gathered", corrections=found.rows, until=found.until)
        if not self.done("prepared"):
            config = dataclasses.replace(PrepareConfig.from_json(read_info(self.settings.data)["config"]), layout="csv",
                                         resplit=False)
            try:
                prepare_dataset(corrections, prepared, config, progress=self.settings.progress)
            except DatasetError as err:
                raise RetrainError(f"none of the {self.state['corrections']} reviewed pairs can be trained on: {err}") \
                    from err
            self.advance("prepared")
        if not self.done("merged"):
            merged = merge(self.settings.data, prepared, dataset)
            self.advance("merged", added=merged.added, held_out=merged.held_out)
            if merged.added == 0:
                return self.finish(None, f"all {self.state['corrections']} reviewed pairs are held-out photos of "
                                         f"{self.settings.data} (never trained on); nothing to retrain")
        if not self.done("trained"):
            self.advance("trained", checkpoint=self.train(dataset))
        if not self.done("registered"):
            self.advance("registered", challenger=self.register())
        if not self.done("decided"):
            return self.decide()
        return self.result(None)

    def train(self, dataset: str) -> str:
        client, _ = open_store(self.uri, create=False)
        champion = find_version(client, self.settings.name, alias=None, version=self.state["champion"], uri=self.uri)
        weights = resolve_model_uri(f"models:/{self.settings.name}/{champion.version}", tracking_uri=self.uri)
        overrides = [f"data={dataset}", f"out={self.folder / 'runs'}", "run_name=challenger", f"init={weights}",
                     f"model={(champion.tags or {}).get('clearbg.spec', 'u2netp')}", f"epochs={self.settings.epochs}",
                     f"tracking_uri={self.uri}"]
        if self.settings.max_steps is not None:
            overrides.append(f"max_steps={self.settings.max_steps}")
        result = train(load_config(overrides=[*overrides, *self.settings.overrides]), progress=self.settings.progress)
        return result.best_checkpoint or result.last_checkpoint

    def register(self) -> str:
        client, _ = open_store(self.uri, create=False)
        round_id = str(self.folder.resolve())
        with mlflow_errors(f"looking for the challenger of {self.folder}", self.uri):
            earlier = [v for v in client.search_model_versions(f"name='{self.settings.name}'")
                       if (v.tags or {}).get(ROUND_TAG) == round_id]
        if earlier:  # registered, then interrupted before round.json said so
            return str(earlier[0].version)
        registration = register_model(
            self.state["checkpoint"], self.settings.name, f"{self.settings.data}:test", alias=CHALLENGER,
            tracking_uri=self.uri, settings=self.settings.evaluation, progress=self.settings.progress,
            onnx=self.settings.onnx, calibrate_on="val",
            description=f"retrained from v{self.state['champion']} on {self.state['added']} reviewed pairs "
                        f"({self.folder.name})")
        with mlflow_errors(f"tagging {registration.model_uri}", self.uri):
            client.set_model_version_tag(self.settings.name, registration.version, ROUND_TAG, round_id)
            client.set_model_version_tag(self.settings.name, registration.version, UNTIL_TAG, repr(self.state["until"]))
        return registration.version

    def decide(self) -> RetrainResult:
        client, _ = open_store(self.uri, create=False)
        challenger = find_version(client, self.settings.name, alias=CHALLENGER, version=None, uri=self.uri) \
            if CHALLENGER in (client.get_registered_model(self.settings.name).aliases or {}) else None
        if challenger is None or str(challenger.version) != self.state["challenger"]:
            raise RetrainError(f"the challenger alias of {self.settings.name} no longer points at v"
                               f"{self.state['challenger']} (registered by {self.folder}); set it back with the "
                               "MLflow client, or move the round away and start again")
        promotion = promote(self.settings.name, f"{self.settings.data}:test", margin=self.settings.margin,
                            tolerance=self.settings.tolerance, tracking_uri=self.uri,
                            settings=self.settings.evaluation, progress=self.settings.progress)
        verdict = "promoted" if promotion.promoted else "refused"
        message = f"challenger v{promotion.challenger_version} {verdict}: " + "; ".join(promotion.decision.reasons)
        if promotion.promoted and resolve_confidence_uri(f"models:/{self.settings.name}@{CHAMPION}",
                                                         tracking_uri=self.uri) is None:
            message += (f"; the new champion has no confidence calibration (fitting it on {self.settings.data}:val "
                        f"failed): clearbg calibrate --model models:/{self.settings.name}@champion "
                        f"--data {self.settings.data}:val")
        return self.finish(promotion, message)

    def finish(self, promotion: Promotion | None, message: str) -> RetrainResult:
        run_id = self.record(promotion, message)
        self.advance("decided", message=message, run_id=run_id,
                     decision=None if promotion is None else promotion.decision.verdict)
        return self.result(promotion)

    def record(self, promotion: Promotion | None, message: str) -> str:
        """The ``clearbg-retrain`` run: what the round learnt from, and what the gate said."""
        client, _ = open_store(self.uri, create=False)
        with mlflow_errors(f"recording {self.folder.name}", self.uri):
            experiment = experiment_id(client, RETRAIN_EXPERIMENT)
            verdict = "none" if promotion is None else promotion.decision.verdict
            run = client.create_run(experiment, run_name=f"retrain {self.folder.name}", tags={
                "clearbg.decision": verdict, "clearbg.reasons": message[:5000],
                "clearbg.registered_model": self.settings.name,
                **({"clearbg.promote_run": promotion.run_id} if promotion is not None else {})})
            run_id = run.info.run_id
            log_params(client, run_id, {
                "name": self.settings.name, "champion_version": self.state["champion"], "data": self.settings.data,
                "feedback": self.settings.feedback, "since": iso(self.state["since"]),
                "until": iso(self.state.get("until")), "corrections": self.state.get("corrections", 0),
                "added": self.state.get("added", 0), "held_out": len(self.state.get("held_out", {})),
                "challenger_version": self.state.get("challenger") or "none", "epochs": self.settings.epochs,
                "max_steps": self.settings.max_steps or "none", "margin": self.settings.margin,
                "tolerance": self.settings.tolerance, "overrides": " ".join(self.settings.overrides) or "none"})
            if promotion is not None:
                figures = {}
                for role, evaluation in promotion.evaluations.items():
                    figures[f"{role}/iou_mean"] = float(evaluation.per_image["iou"].mean())
                if promotion.decision.overall is not None:
                    figures["delta/iou"] = float(promotion.decision.overall.delta)
                log_metrics(client, run_id, figures)
                client.log_text(run_id, promotion.table() + "\n", "decision.txt")
            client.log_artifact(run_id, str(self.folder / "corrections.csv"))
            client.log_dict(run_id, self.state.get("held_out", {}), "held_out.json")
            client.set_terminated(run_id, status="FINISHED")
        return run_id

    def result(self, promotion: Promotion | None) -> RetrainResult:
        state = self.state
        return RetrainResult(
            name=self.settings.name, round=str(self.folder), champion=state["champion"],
            corrections=state.get("corrections", 0), added=state.get("added", 0), held_out=state.get("held_out", {}),
            challenger=state.get("challenger"), promotion=promotion, run_id=state.get("run_id"),
            message=state.get("message", "") if promotion is None else _describe(state, promotion))


def _describe(state: dict, promotion: Promotion) -> str:
    held = state.get("held_out", {})
    lines = [f"{state['corrections']} reviewed pairs since {iso(state['since'])}; {state['added']} trained on"
             + (f", {len(held)} left out as held-out photos" if held else ""),
             promotion.table(), state["message"]]
    return "\n".join(lines)

