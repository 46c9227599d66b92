"""The model registry on a real SQLite MLflow store, read back with MlflowClient.

Two real models: the official u2netp weights and the same weights with noise added (clearly
worse), scored on 4 real fashion photos of 2 product types. The story, built once per module
partly through the CLI: noisy v1 becomes the first champion; official v2 (registered by
`clearbg register`, which evaluates it) beats it and is promoted, v1 kept as previous-champion;
noisy v3 is refused by `clearbg promote`. Each model is evaluated once or twice in all: promotion
reuses the evaluation stored at registration when it measured the same thing.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from clearbg.cli import cli
from clearbg.errors import ClearbgError, RegistryError, UnknownModel
from clearbg.mlflow_store import resolve_tracking_uri
from clearbg.models import create_model
from clearbg.registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION,
    PROMOTE_EXPERIMENT,
    REGISTER_EXPERIMENT,
    promote,
    register_model,
    rollback,
)
from clearbg.models.mlflow_uris import resolve_model_uri, resolve_onnx_uri

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

NOISE = 0.05  # relative Gaussian noise on every weight: mean IoU falls from ~0.9 to ~0.65


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A private clearbg cache (so registry downloads land in tmp) that still sees the
    official weights of the user cache."""
    from clearbg.models.download import cache_dir

    root = tmp_path_factory.mktemp("clearbg-home")
    (root / "weights").symlink_to(cache_dir() / "weights", target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLEARBG_HOME", str(root))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield root


@pytest.fixture(scope="module")
def uri(tmp_path_factory, home, make_mlflow_store) -> str:
    return make_mlflow_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def dataset(shared_data, half_size_dataset) -> str:
    """4 real fashion pairs, 2 product types, all in the test split, at half size."""
    rows = pd.read_csv(shared_data / "fashion" / "manifest.csv")
    rows = rows[(rows["tiny"] == 1) & rows["product_type"].isin(["long_pants", "shorts"])]
    return half_size_dataset(rows.sort_values("id").groupby("product_type").head(2).reset_index(drop=True), "test")


@pytest.fixture(scope="module")
def noisy(tmp_path_factory, home) -> str:
    """The official u2netp weights plus noise, saved as training saves best.pt."""
    state = create_model("u2netp").state_dict()
    gen = torch.Generator().manual_seed(0)
    noisy_state = {
        k: v + NOISE * v.std() * torch.randn(v.shape, generator=gen) if v.is_floating_point() and v.numel() > 1 else v
        for k, v in state.items()
    }
    path = tmp_path_factory.mktemp("noisy") / "checkpoints" / "best.pt"
    path.parent.mkdir()
    torch.save({"model": noisy_state, "model_name": "u2netp.official", "epoch": 3, "metrics": {"val/iou": 0.5}}, path)
    return str(path)


@pytest.fixture(scope="module")
def noisy_evaluation(dataset, noisy):
    from clearbg.evaluate.run import evaluate_model

    return evaluate_model(noisy, dataset, progress=False)


@pytest.fixture(scope="module")
def story(uri, dataset, noisy, noisy_evaluation) -> SimpleNamespace:
    """noisy v1 -> first champion; official v2 promoted over it; noisy again (v3) refused."""
    runner, env = CliRunner(), {"MLFLOW_TRACKING_URI": uri}
    r1 = register_model(noisy, "shop", evaluation=noisy_evaluation, tracking_uri=uri)
    p1 = promote("shop", dataset, tracking_uri=uri, fresh=True, progress=False)  # evaluates v1 from the store
    no_challenger = runner.invoke(cli, ["promote", "--name", "shop", "--data", dataset], env=env)
    register_cli = runner.invoke(cli, ["register", "--model", "u2netp", "--name", "shop", "--data", f"{dataset}:test"],
                                 env=env)
    assert register_cli.exit_code == 0, register_cli.output
    p2 = promote("shop", dataset, tracking_uri=uri)
    # The noisy weights again, this time taken from the registry itself.
    r3 = register_model("models:/shop/1", "shop", evaluation=noisy_evaluation, tracking_uri=uri, onnx=False)
    promote_cli = runner.invoke(cli, ["promote", "--name", "shop", "--data", dataset, "--margin", "0.01"], env=env)
    return SimpleNamespace(r1=r1, r3=r3, p1=p1, p2=p2, no_challenger=no_challenger, register_cli=register_cli,
                           promote_cli=promote_cli)


@pytest.fixture(scope="module")
def client(uri) -> MlflowClient:
    return MlflowClient(uri)


@pytest.fixture(scope="module")
def official_evaluation(story, client, tmp_path_factory):
    """The evaluation `clearbg register` attached to v2, read back from the store."""
    from clearbg.evaluate.run import Evaluation

    run_id = client.get_model_version("shop", "2").run_id
    return Evaluation.load(client.download_artifacts(run_id, "evaluation", str(tmp_path_factory.mktemp("v2"))))


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}


# --------------------------------------------------------------------------- the gate, for real


def test_first_challenger_becomes_champion_and_says_so(story, client, noisy_evaluation):
    assert story.r1.version == "1" and story.r1.model_uri == "models:/shop/1" and story.r1.spec == "u2netp.official"
    assert story.p1.promoted and story.p1.champion_version is None and story.p1.champion == "1"
    assert "no champion yet" in story.p1.table()
    # fresh=True scored the registered copy again: the very numbers of the file that was registered.
    assert story.p1.reused == {CHALLENGER: False}
    again = story.p1.evaluations[CHALLENGER].per_image.set_index("id")["iou"]
    assert np.allclose(again, noisy_evaluation.per_image.set_index("id")["iou"].loc[again.index], atol=1e-6)
    # Promoted, it is no challenger any more: nothing to compare until the next registration.
    assert story.no_challenger.exit_code == 1 and "has no alias 'challenger'" in story.no_challenger.output


def test_cli_register_evaluates_and_prints_the_figures(story, official_evaluation):
    out = story.register_cli.output
    assert "registered models:/shop/2 (alias challenger) from u2netp [u2netp.official]" in out
    assert f"mean IoU {official_evaluation.summary()['overall']['iou_mean']:.4f}" in out
    assert "long_pants: 2 images" in out and "shorts: 2 images" in out
    # Its dataset has no val split: registered without a confidence calibration, saying how to fit one.
    assert "no confidence calibration" in out and "clearbg calibrate --model models:/shop/2" in out


def test_better_challenger_is_promoted_and_the_old_champion_stays_reachable(story, client):
    decision = story.p2.decision
    assert story.p2.promoted and story.p2.champion == "2" and story.p2.champion_version == "1"
    assert story.p2.reused == {CHAMPION: True, CHALLENGER: True}  # same data and settings as at registration
    assert decision.overall.delta > 0.1 and all(g.delta > 0 for g in decision.groups)
    assert {g.group for g in decision.groups} == {"long_pants", "shorts"}
    table = story.p2.table()
    assert "champion v1" in table and "challenger v2" in table and "DECISION: promote" in table
    assert "previous-champion -> v1" in table
    assert client.get_model_version("shop", "2").tags["clearbg.promotion"].startswith("promoted over v1")
    assert client.get_model_version("shop", "1").tags["clearbg.replaced_by"].startswith("v2")


def test_worse_challenger_is_refused_and_the_cli_exits_0(story, client):
    result = story.promote_cli
    assert result.exit_code == 0, result.output  # a refusal is a decision, not an error
    lines = result.output.splitlines()
    assert lines[0].startswith("shop: champion v2 vs challenger v3")
    header = next(i for i, line in enumerate(lines) if line.startswith("metric"))
    assert lines[header].split()[:6] == ["metric", "n", "champion", "v2", "challenger", "v3"]
    assert [line.split()[1] for line in lines[header + 1:header + 4]] == ["overall", "long_pants", "shorts"]
    decision = next(line for line in lines if line.startswith("DECISION:"))
    assert decision.startswith("DECISION: keep - mean IoU -") and "< margin 0.0100" in decision
    assert "champion stays v2" in result.output
    assert _aliases(client, "shop") == {CHAMPION: "2", PREVIOUS_CHAMPION: "1", CHALLENGER: "3"}
    assert client.get_model_version("shop", "3").tags["clearbg.promotion"].startswith("refused vs v2")


def test_promotions_are_recorded_in_mlflow(story, client):
    experiment = client.get_experiment_by_name(PROMOTE_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert [r.data.tags["clearbg.decision"] for r in runs[:3]] == ["promote", "promote", "keep"]
    p2, p3 = runs[1], runs[2]
    assert p2.info.run_id == story.p2.run_id
    assert p3.data.params["champion_version"] == "2" and p3.data.params["challenger_version"] == "3"
    assert p3.data.params["margin"] == "0.01" and p3.data.params["tolerance"] == "0.01"
    metrics = p3.data.metrics
    assert metrics["challenger/iou_mean"] < metrics["champion/iou_mean"]
    assert metrics["delta/iou"] == pytest.approx(metrics["challenger/iou_mean"] - metrics["champion/iou_mean"])
    assert "champion/iou_mean/shorts" in metrics and "delta/iou/long_pants" in metrics
    files = {f.path for f in client.list_artifacts(p3.info.run_id)}
    assert {"decision.json", "comparison.txt", "report"} <= files
    html = Path(client.download_artifacts(p3.info.run_id, "report/report.html")).read_text()
    assert "shop: champion v2 vs challenger v3" in html and ": keep</title>" in html
    assert '"decision": "keep"' in Path(client.download_artifacts(p3.info.run_id, "decision.json")).read_text()


def test_registered_version_carries_its_evaluation_and_model(story, client, official_evaluation):
    version = client.get_model_version("shop", "2")
    summary = official_evaluation.summary()
    assert version.tags["eval.iou_mean"] == f"{summary['overall']['iou_mean']:.4f}"
    assert version.tags["eval.group.shorts.iou_mean"] == f"{summary['groups']['shorts']['iou_mean']:.4f}"
    assert version.tags["clearbg.source"] == "u2netp" and version.tags["clearbg.spec"] == "u2netp.official"
    run = client.get_run(version.run_id)
    assert client.get_experiment(run.info.experiment_id).name == REGISTER_EXPERIMENT
    assert run.data.metrics["iou_mean"] == pytest.approx(summary["overall"]["iou_mean"])
    names = {f.path for f in client.list_artifacts(version.run_id, "evaluation")}
    assert {"evaluation/report.html", "evaluation/per_image.csv", "evaluation/summary.json"} <= names
    # The pytorch flavour (pickled: any input size) holds the same weights as clearbg's file.
    with mlflow.tracking._tracking_service.utils._use_tracking_uri(client.tracking_uri):
        flavour = mlflow.pytorch.load_model("models:/shop/2", map_location="cpu").eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        assert torch.equal(flavour(x)[0], create_model("u2netp").eval()(x)[0])


def test_registered_version_carries_its_onnx_export(story, client, uri, shared_data, monkeypatch):
    from clearbg.inference.onnx_export import read_metadata
    from clearbg.inference.predictor import Predictor

    version = client.get_model_version("shop", "2")
    with mlflow.tracking._tracking_service.utils._use_tracking_uri(client.tracking_uri):
        proto = mlflow.onnx.load_model(version.tags["clearbg.onnx"])  # MLflow's onnx flavour reads it
    assert read_metadata(proto).model == "u2netp.official" and read_metadata(proto).dynamic_batch
    assert resolve_onnx_uri("models:/shop/3", tracking_uri=uri) is None  # registered with onnx=False
    path = resolve_onnx_uri("models:/shop@champion", tracking_uri=uri)
    assert path == resolve_onnx_uri("models:/shop/2", tracking_uri=uri) and path.name == "model.onnx"
    # The champion on ONNX Runtime: the registered file itself, same mask as PyTorch fp32.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    photo = Image.open(next((shared_data / "fashion" / "images").glob("*.jpg"))).convert("RGB")
    onnx_run = Predictor("models:/shop@champion", engine="onnxruntime")
    assert (onnx_run.engine, onnx_run.spec.name, onnx_run.precision) == ("onnxruntime", "u2netp.official", "fp32")
    [got] = onnx_run.predict([photo])
    [want] = Predictor("u2netp", device="cpu", precision="fp32").predict([photo])
    assert np.abs(got - want).max() < 1e-3


# --------------------------------------------------------------------------- loading models:/ URIs


def test_models_uri_loads_exactly_the_registered_weights(story, uri, noisy, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # how `clearbg remove` finds the store
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(create_model("models:/shop@champion").eval()(x)[0], create_model("u2netp").eval()(x)[0])
    loaded = create_model("models:/shop@previous-champion").state_dict()  # v1: the noisy checkpoint
    assert all(torch.equal(loaded[k], v) for k, v in torch.load(noisy, weights_only=True)["model"].items())
    # MLflow's own URI switch deletes MLFLOW_TRACKING_URI on the way out; ours puts it back.
    assert os.environ["MLFLOW_TRACKING_URI"] == uri


def test_remove_with_a_models_uri_runs_that_version(story, uri, noisy, fashion_photo, tmp_path):
    """`clearbg remove --model models:/...` gives the registered weights' mask, not the default's."""
    fashion_photo.save(tmp_path / "p.jpg")
    masks = {}
    models = {"default": "u2netp", "v1": "models:/shop@previous-champion", "file": noisy}
    for name, model in models.items():
        # fp32: which weights ran is the question, and the int8 default would first build an
        # export of each of the three files (about 25 s each).
        result = CliRunner().invoke(cli, ["remove", str(tmp_path / "p.jpg"), "--out", str(tmp_path / name), "--mask",
                                          "--no-clean", "--precision", "fp32", "--model", model],
                                    env={"MLFLOW_TRACKING_URI": uri})
        assert result.exit_code == 0, result.output
        masks[name] = np.asarray(Image.open(tmp_path / name / "p.png"))
    assert np.array_equal(masks["v1"], masks["file"])  # exactly the registered checkpoint ran
    changed = np.mean((masks["default"] > 127) != (masks["v1"] > 127))
    assert changed > 0.005, "the noisy v1 and the official weights gave the same mask"


def test_downloads_are_cached_per_version(story, uri, home):
    first = resolve_model_uri("models:/shop@champion", tracking_uri=uri)
    stamp = first.stat().st_mtime_ns
    assert resolve_model_uri("models:/shop/2", tracking_uri=uri) == first  # alias and number: one file
    assert first.stat().st_mtime_ns == stamp  # not downloaded again
    assert first.is_relative_to(home / "registry")
    assert resolve_model_uri("models:/shop@previous-champion", tracking_uri=uri) != first


def test_missing_alias_names_the_model_and_lists_its_aliases(story, uri, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(UnknownModel) as err:
        create_model("models:/shop@staging")
    message = str(err.value)
    assert "registered model 'shop' has no alias 'staging'" in message
    assert "champion -> v2" in message and "previous-champion -> v1" in message and "challenger -> v3" in message
    with pytest.raises(UnknownModel, match="no registered model 'nope'.*registered models: .*shop"):
        create_model("models:/nope@champion")


def test_no_store_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(UnknownModel, match="no MLflow store at .*runs/mlflow.db"):
        create_model("models:/shop@champion")
    assert not (tmp_path / "runs").exists()  # reading never creates an empty store


def test_resolve_tracking_uri_prefers_explicit_then_env_then_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/runs/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri(out="elsewhere") == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(ClearbgError, match="remote") as remote:
        resolve_tracking_uri(out="s3://bucket/runs")
    assert "--set tracking_uri=" in str(remote.value) and "--tracking-uri" not in str(remote.value)  # train's way


# --------------------------------------------------------------------------- what training produces


def test_register_accepts_a_model_logged_by_training(story, uri, tmp_path, dataset, client, official_evaluation,
                                                     monkeypatch):
    from clearbg.train.config import load_config
    from clearbg.train.tracking import Tracker

    # Training's default store for out=<store folder> is this very store (artifacts beside it).
    store_folder = Path(uri[len("sqlite:///"):]).parent
    config = load_config(None, [f"data={dataset}", f"out={store_folder}", "tensorboard=false"])
    tracker = Tracker(config, tmp_path / "run")
    assert tracker.tracking_uri == uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracker.start()
    tracker.log_model(create_model("u2netp"))
    tracker.end()
    assert os.environ["MLFLOW_TRACKING_URI"] == uri  # MLflow's URI switch deletes it; the Tracker puts it back
    reg = register_model(f"runs:/{tracker.run_id}/model", "trained", evaluation=official_evaluation, tracking_uri=uri)
    assert reg.spec == "u2netp.official" and _aliases(client, "trained") == {CHALLENGER: reg.version}
    official = create_model("u2netp").state_dict()
    registered = create_model(str(resolve_model_uri("models:/trained@challenger", tracking_uri=uri))).state_dict()
    assert all(torch.equal(registered[k], v) for k, v in official.items())
    # Registered by hand (MLflow UI, plain client): no clearbg.pt beside it, the pytorch flavour is used.
    client.create_registered_model("by-hand")
    with mlflow.tracking._tracking_service.utils._use_tracking_uri(uri):
        client.create_model_version("by-hand", tracker.model_uri, run_id=tracker.run_id)
    by_hand = create_model(str(resolve_model_uri("models:/by-hand/1", tracking_uri=uri))).state_dict()
    assert all(torch.equal(by_hand[k], v) for k, v in official.items())


def test_rollback_swaps_champion_and_previous_champion(story, uri, client):
    result = CliRunner().invoke(cli, ["promote", "--name", "shop", "--rollback", "--tracking-uri", uri])
    assert result.exit_code == 0 and "champion -> v1, previous-champion -> v2 (rolled back)" in result.output
    assert _aliases(client, "shop")[CHAMPION] == "1"
    assert rollback("shop", tracking_uri=uri) == ("2", "1")  # and forward again
    assert _aliases(client, "shop") == {CHAMPION: "2", PREVIOUS_CHAMPION: "1", CHALLENGER: "3"}


def test_rollback_with_nothing_to_roll_back_says_so(uri, client):
    client.create_registered_model("solo")
    runner = CliRunner()
    none = runner.invoke(cli, ["promote", "--name", "solo", "--rollback", "--tracking-uri", uri])
    assert none.exit_code == 1 and "nothing to roll back: solo has no champion yet" in none.output
    client.create_model_version("solo", "file:///nowhere/model")
    client.set_registered_model_alias("solo", CHAMPION, "1")
    one = runner.invoke(cli, ["promote", "--name", "solo", "--rollback", "--tracking-uri", uri])
    assert one.exit_code == 1
    assert "nothing to roll back: no previous champion; the champion of solo is v1" in one.output


def test_registry_errors_suggest_only_what_remove_has(tmp_path, monkeypatch, home):
    # remove has no --tracking-uri: its advice must be the environment variable.
    monkeypatch.chdir(tmp_path)  # no runs/mlflow.db here
    result = CliRunner().invoke(cli, ["remove", str(tmp_path), "--out", str(tmp_path / "o"),
                                      "--model", "models:/shop@champion"])
    assert result.exit_code == 1 and "no MLflow store" in result.output
    assert "set MLFLOW_TRACKING_URI" in result.output
    assert "--tracking-uri" not in result.output


# --------------------------------------------------------------------------- the CLI


def test_cli_remove_serves_the_champion(story, uri, tmp_path, shared_data, noisy):
    runner = CliRunner()
    original = next((shared_data / "fashion" / "images").glob("ccp_00*.jpg"))
    photo = tmp_path / "photo.png"  # a smaller copy keeps the test fast
    Image.open(original).convert("RGB").reduce(2).save(photo)
    args = [str(photo), "--mask", "--precision", "fp32", "--out"]
    served = runner.invoke(cli, ["remove", *args, str(tmp_path / "served"), "--model", "models:/shop@champion"],
                           env={"MLFLOW_TRACKING_URI": uri})
    assert served.exit_code == 0, served.output
    direct = runner.invoke(cli, ["remove", *args, str(tmp_path / "direct"), "--model", "u2netp"])
    assert direct.exit_code == 0, direct.output
    mask = np.asarray(Image.open(tmp_path / "served" / f"{photo.stem}.png"))
    assert mask.shape == (Image.open(photo).height, Image.open(photo).width) and 0 < mask.mean() < 255
    assert np.array_equal(mask, np.asarray(Image.open(tmp_path / "direct" / f"{photo.stem}.png")))
    # The champion is the official weights here; a version with other weights must give their masks,
    # and the same as the checkpoint file itself: a test that cannot tell which model ran proves nothing.
    other = runner.invoke(cli, ["remove", *args, str(tmp_path / "v1"), "--model", "models:/shop/1"],
                          env={"MLFLOW_TRACKING_URI": uri})
    by_path = runner.invoke(cli, ["remove", *args, str(tmp_path / "path"), "--model", noisy])
    assert other.exit_code == 0 and by_path.exit_code == 0, other.output + by_path.output
    v1 = np.asarray(Image.open(tmp_path / "v1" / f"{photo.stem}.png"))
    assert np.array_equal(v1, np.asarray(Image.open(tmp_path / "path" / f"{photo.stem}.png")))
    assert np.mean(v1 != mask) > 0.01  # the noisy weights' mask is visibly another one
    usage = runner.invoke(cli, ["promote", "--name", "shop"], env={"MLFLOW_TRACKING_URI": uri})
    assert usage.exit_code == 2 and "--data" in usage.output
    ghost = runner.invoke(cli, ["promote", "--name", "ghost", "--data", "x"], env={"MLFLOW_TRACKING_URI": uri})
    assert ghost.exit_code == 1 and "no registered model 'ghost'" in ghost.output


def test_promote_refuses_to_compare_the_champion_with_itself(story, uri, dataset, client):
    client.set_registered_model_alias("shop", CHALLENGER, "2")
    try:
        with pytest.raises(RegistryError, match="already is the champion"):
            promote("shop", dataset, tracking_uri=uri)
    finally:
        client.set_registered_model_alias("shop", CHALLENGER, "3")


def test_register_needs_data_or_an_evaluation(uri):
    with pytest.raises(RegistryError, match="needs a held-out set"):
        register_model("u2netp", "shop", tracking_uri=uri)


def test_a_registered_version_carries_its_own_confidence_calibration(story, uri, monkeypatch):
    from clearbg.errors import RegistryError
    from clearbg.quality.calibration import fit_calibration
    from clearbg.quality.store import load_calibration, model_version
    from clearbg.registry.register import attach_calibration

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # The story's dataset has no val split: registered without one (a warning), so no score.
    assert story.r1.calibration is None and load_calibration("models:/shop/1") is None
    assert model_version("models:/shop@champion") == "models:/shop/2"
    rng = np.random.default_rng(0)
    iou = rng.uniform(0.8, 0.99, 12)
    records = [{"uncertain": 1 - v, "flip_iou": v, "side_iou_mean": v, "self_iou": v, "holes": 0.0,
                "stray_share": 0.0} for v in iou]
    fitted = fit_calibration(records, iou, model="models:/shop/2", data="synthetic:val")
    with pytest.raises(RegistryError, match="fitted for models:/shop/2, not models:/shop/3"):
        attach_calibration("models:/shop/3", fitted)
    artifact = attach_calibration("models:/shop/2", fitted)
    assert artifact.startswith("runs:/") and artifact.endswith("confidence/confidence.json")
    found = load_calibration("models:/shop@champion")  # through the alias, from the registry
    assert found is not None and found.model == "models:/shop/2"
    assert load_calibration("models:/shop/3") is None  # a score belongs to one version
