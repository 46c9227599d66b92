"""`clearbg prepare`: a source of pairs becomes a clean, resized dataset with a manifest."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from clearbg.data.manifest import DatasetError, read_info, read_manifest
from clearbg.data.prepare import PrepareConfig, prepare_dataset, split_for
from clearbg.errors import StorageError

SIZE = (48, 64)


@pytest.fixture
def folder_source(tmp_path, tiny_pairs):
    """images/ + masks/ with 6 real fashion pairs, a photo without mask and an empty mask."""
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    fashion = [r for r in tiny_pairs if r["domain"] == "fashion"][:7]
    for row in fashion[:6]:
        shutil.copy(row["image"], src / "images" / f"{row['id']}.jpg")
        shutil.copy(row["mask"], src / "masks" / f"{row['id']}.png")
    shutil.copy(fashion[6]["image"], src / "images" / "lonely.jpg")
    shutil.copy(fashion[0]["image"], src / "images" / "blank.jpg")
    size = Image.open(fashion[0]["mask"]).size
    Image.new("L", size, 0).save(src / "masks" / "blank.png")
    return src, [r["id"] for r in fashion[:6]]


def _config(**kwargs) -> PrepareConfig:
    return PrepareConfig(sizes=[SIZE], **kwargs)


def test_prepare_keeps_good_pairs_and_reports_the_rest(tmp_path, folder_source):
    src, good = folder_source
    out = tmp_path / "ds"
    report = prepare_dataset(str(src), str(out), _config(), workers=1)

    manifest = read_manifest(str(out))
    assert sorted(manifest["id"]) == sorted(good)
    assert report.kept == 6 and report.excluded == {"missing_mask": 1, "empty_mask": 1}
    excluded = pd.read_csv(out / "excluded.csv")
    assert dict(zip(excluded["id"], excluded["reason"], strict=True)) == {"lonely": "missing_mask", "blank": "empty_mask"}
    for _, row in manifest.iterrows():
        photo = Image.open(out / "48x64" / row["image"])
        mask = np.asarray(Image.open(out / "48x64" / row["mask"]))
        assert photo.mode == "RGB" and photo.size == SIZE and mask.shape == (64, 48)
        assert set(np.unique(mask)) <= {0, 255} and mask.max() == 255
        assert row["split"] == split_for(row["id"])
        assert (row["src_width"], row["src_height"]) == Image.open(row["src_image"]).size
        assert 0 < row["fg_fraction"] < 1
    info = read_info(str(out))
    assert info["sizes"] == [list(SIZE)] and info["counts"]["kept"] == 6
    page = (out / "report.html").read_text()
    assert "missing_mask" in page and "empty_mask" in page and "data:image/jpeg;base64," in page
    # The source is only read.
    assert sorted(os.listdir(src / "images")) == sorted([f"{i}.jpg" for i in good] + ["lonely.jpg", "blank.jpg"])


def test_several_sizes_and_stretch(tmp_path, folder_source):
    src, good = folder_source
    out = tmp_path / "ds"
    prepare_dataset(str(src), str(out), PrepareConfig(sizes=[(32, 32), (40, 20)], resize="stretch"), workers=2)
    for folder, size in (("32x32", (32, 32)), ("40x20", (40, 20))):
        assert sorted(os.listdir(out / folder / "images")) == sorted(f"{i}.png" for i in good)
        assert Image.open(out / folder / "masks" / f"{good[0]}.png").size == size


def test_rerun_resumes_and_only_does_new_pairs(tmp_path, folder_source, tiny_pairs):
    src, good = folder_source
    out = tmp_path / "ds"
    first = prepare_dataset(str(src), str(out), _config(), workers=1)
    assert first.processed == 8 and first.resumed == 0
    extra = [r for r in tiny_pairs if r["domain"] == "fashion"][10]
    shutil.copy(extra["image"], src / "images" / "new.jpg")
    shutil.copy(extra["mask"], src / "masks" / "new.png")
    second = prepare_dataset(str(src), str(out), _config(), workers=1)
    assert second.resumed == 8 and second.processed == 1
    assert "new" in set(read_manifest(str(out))["id"])


def test_a_failed_write_loses_no_finished_work(tmp_path, folder_source):
    # A folder where one output file must go makes that write fail, as a full disk would.
    src, good = folder_source
    out = tmp_path / "ds"
    victim = sorted(good)[3]
    (out / "48x64" / "images" / f"{victim}.png").mkdir(parents=True)
    with pytest.raises(StorageError, match=victim):
        prepare_dataset(str(src), str(out), _config(), workers=1)
    assert not (out / "manifest.parquet").exists()  # no half-made dataset looks finished
    (out / "48x64" / "images" / f"{victim}.png").rmdir()
    report = prepare_dataset(str(src), str(out), _config(), workers=1)
    assert report.resumed >= 1 and report.resumed + report.processed == 8
    assert sorted(read_manifest(str(out))["id"]) == sorted(good)


def test_other_options_need_restart(tmp_path, folder_source):
    src, _ = folder_source
    out = tmp_path / "ds"
    prepare_dataset(str(src), str(out), _config(), workers=1)
    with pytest.raises(DatasetError, match="--restart") as refused:
        prepare_dataset(str(src), str(out), _config(resize="pad"), workers=1)
    # One line naming what changed, not a dump of every option.
    message = str(refused.value)
    assert 'resize "stretch" -> "pad"' in message and "another --out" in message
    assert "\n" not in message and "mask_threshold" not in message and "sizes" not in message
    report = prepare_dataset(str(src), str(out), _config(resize="pad"), workers=1, restart=True)
    assert report.resumed == 0 and report.processed == 8
    assert read_info(str(out))["config"]["resize"] == "pad"


def test_csv_source_carries_its_columns(tmp_path, shared_data):
    rows = pd.read_csv(shared_data / "fashion" / "manifest.csv")
    small = rows[rows["tiny"] == 1].head(5)
    csv = tmp_path / "pairs.csv"
    small.assign(
        image=[str(shared_data / "fashion" / p) for p in small["image"]],
        mask=[str(shared_data / "fashion" / p) for p in small["mask"]],
    ).to_csv(csv, index=False)
    out = tmp_path / "ds"
    prepare_dataset(str(csv), str(out), _config(), workers=1)
    manifest = read_manifest(str(out)).set_index("id")
    expected = small.set_index("id")
    assert list(manifest.index.sort_values()) == list(expected.index.sort_values())
    for pair_id in expected.index:
        assert manifest.loc[pair_id, "product_type"] == expected.loc[pair_id, "product_type"]
        assert manifest.loc[pair_id, "split"] == expected.loc[pair_id, "split"]  # the source's split wins


def test_every_pair_excluded_says_why_and_points_at_excluded_csv(tmp_path, shared_data, monkeypatch):
    # Paths written relative to the working directory, not to the CSV's folder: none resolve.
    rows = pd.read_csv(shared_data / "fashion" / "manifest.csv").head(3)
    (tmp_path / "lists").mkdir()
    csv = tmp_path / "lists" / "pairs.csv"
    rows.assign(image="fashion/" + rows["image"], mask="fashion/" + rows["mask"]).to_csv(csv, index=False)
    monkeypatch.chdir(shared_data)
    out = tmp_path / "ds"
    with pytest.raises(DatasetError) as refused:
        prepare_dataset(str(csv), str(out), _config(), workers=1)
    message = str(refused.value)
    assert "all 3 excluded (unreadable_image 3)" in message
    assert str(out / "excluded.csv") in message and str(tmp_path / "lists") in message
    assert len(pd.read_csv(out / "excluded.csv")) == 3
    assert not (out / "manifest.parquet").exists()


def test_empty_source_is_a_clear_error(tmp_path):
    (tmp_path / "src" / "images").mkdir(parents=True)
    (tmp_path / "src" / "masks").mkdir()
    with pytest.raises(DatasetError, match="no photo/mask pairs"):
        prepare_dataset(str(tmp_path / "src"), str(tmp_path / "ds"), _config(), workers=1)


def test_prepare_from_and_to_s3(tmp_path, s3_bucket, s3_client, tiny_pairs):
    bucket = s3_bucket.removeprefix("s3://")
    cars = [r for r in tiny_pairs if r["domain"] == "cars"][:4]
    for row in cars:
        s3_client.upload_file(row["image"], bucket, f"raw/images/{row['id']}.png")
        s3_client.upload_file(row["mask"], bucket, f"raw/masks/{row['id']}.png")
    out = f"{s3_bucket}/ds"
    report = prepare_dataset(f"{s3_bucket}/raw", out, _config(), workers=2)
    assert report.kept == 4
    manifest = read_manifest(out)
    assert sorted(manifest["id"]) == sorted(r["id"] for r in cars)
    assert all(uri.startswith(f"{s3_bucket}/raw/images/") for uri in manifest["src_image"])
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket, Prefix="ds/")["Contents"]}
    assert {f"ds/48x64/masks/{r['id']}.png" for r in cars} <= keys
    assert {"ds/manifest.parquet", "ds/excluded.csv", "ds/report.html", "ds/dataset.json"} <= keys


def test_cli_prepare(tmp_path, folder_source):
    src, good = folder_source
    out = tmp_path / "ds"
    run = subprocess.run(
        [sys.executable, "-m", "clearbg", "prepare", str(src), "--out", str(out), "--size", "48x64", "--workers", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "6 pairs kept, 2 excluded (empty_mask 1, missing_mask 1)" in run.stdout
    assert len(read_manifest(str(out))) == 6
    bad = subprocess.run(
        [sys.executable, "-m", "clearbg", "prepare", str(src), "--out", str(out), "--size", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode != 0 and "320 or 384x256" in bad.stderr
