"""``evaluate_model``: the official u2netp on real fashion photos, at full resolution (issue 6)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from clearbg.data.manifest import DatasetError, read_manifest, write_manifest
from clearbg.errors import ClearbgError, UnknownModel
from clearbg.evaluate.image_metrics import METRIC_KEYS, image_metrics
from clearbg.evaluate.settings import EvalSettings
from clearbg.evaluate.run import GROUP_COLUMN, THUMBNAIL_SIZE, Evaluation, evaluate_model, load_pair

N_IMAGES = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, shared_data) -> str:
    """6 real fashion pairs (all in the test split) prepared at 64x64; the originals stay full size."""
    from clearbg.data.prepare import PrepareConfig, prepare_dataset

    root = shared_data / "fashion"
    rows = pd.read_csv(root / "manifest.csv")
    rows = rows[rows["tiny"] == 1].sort_values("id").head(N_IMAGES).reset_index(drop=True)
    rows["image"] = [str(root / p) for p in rows["image"]]
    rows["mask"] = [str(root / p) for p in rows["mask"]]
    work = tmp_path_factory.mktemp("eval-data")
    rows.to_csv(work / "pairs.csv", index=False)
    prepare_dataset(str(work / "pairs.csv"), str(work / "ds"), PrepareConfig(sizes=[(64, 64)]), workers=1)
    return str(work / "ds")


@pytest.fixture(scope="module")
def evaluation(dataset) -> Evaluation:
    return evaluate_model("u2netp", f"{dataset}:test", progress=False)


def test_every_test_image_is_scored_at_the_photos_full_resolution(evaluation, dataset):
    manifest = read_manifest(dataset).set_index("id")
    frame = evaluation.per_image
    assert len(frame) == N_IMAGES and not evaluation.failed
    assert list(frame.columns) == ["id", GROUP_COLUMN, "image", "mask", *METRIC_KEYS]
    pixels = frame[["tp", "fp", "fn", "tn"]].sum(axis=1).to_numpy()
    expected = (manifest.loc[frame["id"], "src_width"] * manifest.loc[frame["id"], "src_height"]).to_numpy()
    np.testing.assert_array_equal(pixels, expected)  # not the 64 px prepared copies
    assert evaluation.data == f"{dataset}:test"
    assert evaluation.settings["precision"] == "fp32" and evaluation.settings["spec"] == "u2netp.official"


def test_official_u2netp_scores_real_photos_well(evaluation):
    overall = evaluation.summary()["overall"]
    assert 0.85 < overall["iou_mean"] <= 1.0
    assert 0.7 < overall["boundary_f_mean"] <= 1.0
    assert overall["mae_mean"] < 0.1


def test_groups_are_product_types_when_the_dataset_has_no_clusters(evaluation, dataset):
    manifest = read_manifest(dataset).set_index("id")
    frame = evaluation.per_image
    assert frame[GROUP_COLUMN].tolist() == manifest.loc[frame["id"], "product_type"].tolist()
    groups = evaluation.summary()["groups"]
    assert sum(g["n"] for g in groups.values()) == N_IMAGES
    assert groups["light_coloured"]["n"] == 2


def test_scores_equal_a_direct_prediction_against_the_original_mask(evaluation, dataset):
    from clearbg.data.clean import CleanOptions
    from clearbg.inference.predictor import Predictor

    row = evaluation.per_image.iloc[0]
    photo, truth = load_pair(row["image"], row["mask"], CleanOptions())
    [prob] = Predictor("u2netp", device="cpu", precision="fp32", batch_size=1).predict([photo])
    direct = image_metrics(prob, truth)
    for key in METRIC_KEYS:
        assert row[key] == pytest.approx(direct[key], abs=1e-6), key


def test_thumbnails_are_small_prediction_maps(evaluation):
    assert set(evaluation.thumbnails) == set(evaluation.per_image["id"])
    for thumb in evaluation.thumbnails.values():
        assert thumb.dtype == np.uint8 and thumb.ndim == 2 and max(thumb.shape) == THUMBNAIL_SIZE
        assert thumb.max() > 200 and thumb.min() < 50  # a product on a background


def test_save_and_load_round_trip(evaluation, tmp_path):
    evaluation.save(str(tmp_path / "ev"))
    loaded = Evaluation.load(str(tmp_path / "ev"))
    assert (loaded.model, loaded.data, loaded.settings) == (evaluation.model, evaluation.data, evaluation.settings)
    pd.testing.assert_frame_equal(loaded.per_image, evaluation.per_image)
    assert set(loaded.thumbnails) == set(evaluation.thumbnails)
    for key, thumb in evaluation.thumbnails.items():
        np.testing.assert_array_equal(loaded.thumbnails[key], thumb)
    assert loaded.summary() == evaluation.summary()


def test_a_module_evaluates_like_its_registry_name(evaluation, dataset):
    from clearbg.models import create_model

    by_module = evaluate_model(create_model("u2netp"), dataset, settings=EvalSettings(limit=2), progress=False)
    assert by_module.model == "u2netp.official"  # recognised from its weights
    expected = evaluation.per_image.head(2)["iou"].to_numpy()
    np.testing.assert_allclose(by_module.per_image["iou"].to_numpy(), expected, atol=1e-9)


def test_clusters_name_the_groups_and_a_broken_mask_is_reported_not_fatal(dataset, tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(dataset, copy)
    manifest = read_manifest(str(copy))
    manifest["cluster_name"] = ["light" if i % 2 else "dark" for i in range(len(manifest))]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    manifest.loc[2, "src_mask"] = str(broken)
    write_manifest(manifest, str(copy))

    ev = evaluate_model("u2netp", f"{copy}:test", settings=EvalSettings(limit=3), progress=False)
    assert set(ev.failed) == {manifest.loc[2, "id"]}
    assert "broken.png" in ev.failed[manifest.loc[2, "id"]]
    assert ev.per_image["id"].tolist() == manifest.loc[[0, 1], "id"].tolist()
    assert ev.per_image[GROUP_COLUMN].tolist() == ["dark", "light"]
    assert ev.summary()["failed"] == 1


def test_unknown_and_empty_splits_are_clear_errors(dataset):
    with pytest.raises(ClearbgError, match="unknown split 'tests'"):
        evaluate_model("u2netp", f"{dataset}:tests")
    with pytest.raises(DatasetError, match=r"split 'train' .* is empty; its splits are test \(6\)"):
        evaluate_model("u2netp", dataset, split="train")


def test_unreachable_sources_are_a_clear_error(dataset, tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(dataset, copy)
    manifest = read_manifest(str(copy))
    manifest["src_image"] = "gone/" + manifest["id"] + ".jpg"
    write_manifest(manifest, str(copy))
    with pytest.raises(DatasetError, match="original photo of .* cannot be reached"):
        evaluate_model("u2netp", str(copy))
    write_manifest(manifest.drop(columns=["src_image", "src_mask"]), str(copy))
    with pytest.raises(DatasetError, match="no src_image / src_mask column"):
        evaluate_model("u2netp", str(copy))


def test_unknown_models_are_a_clear_error(dataset, tmp_path):
    with pytest.raises(UnknownModel, match="unknown model 'u3net'"):
        evaluate_model("u3net", dataset)
    with pytest.raises(UnknownModel, match="checkpoint not found"):
        evaluate_model(str(tmp_path / "missing" / "best.pt"), dataset)


def test_flip_tta_is_scored_as_its_own_measurement(evaluation, dataset):
    from clearbg.evaluate.settings import EvalSettings

    flipped = evaluate_model("u2netp", f"{dataset}:test", settings=EvalSettings(tta=True), progress=False)
    data = f"{dataset}:test"
    assert EvalSettings(tta=True).fingerprint(data) not in ("", EvalSettings().fingerprint(data))
    assert len(flipped.per_image) == N_IMAGES
    assert not np.allclose(flipped.per_image["iou"], evaluation.per_image["iou"])
    assert flipped.settings["tta"] and not evaluation.settings["tta"]
