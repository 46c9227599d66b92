"""PairDataset over a prepared dataset folder, and `clearbg augment-preview`."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clearbg import storage
from clearbg.data.augment import AugmentConfig
from clearbg.data.dataset import PairDataset, write_augment_preview
from clearbg.data.manifest import DatasetError, size_dir, write_info, write_manifest

W, H = 96, 128


def write_prepared(folder: str | pathlib.Path, rows: list[dict], sizes=((W, H),)) -> pd.DataFrame:
    """Write the prepared-dataset layout (see clearbg.data.manifest) from source pairs."""
    folder = str(folder)
    records = []
    for k, row in enumerate(rows):
        photo = Image.open(row["image"]).convert("RGB")
        mask = Image.open(row["mask"]).convert("L")
        for width, height in sizes:
            base = storage.join(folder, size_dir(width, height))
            storage.write_bytes(
                storage.join(base, "images", f"{row['id']}.png"),
                _png(photo.resize((width, height), Image.Resampling.BILINEAR)),
            )
            storage.write_bytes(
                storage.join(base, "masks", f"{row['id']}.png"), _png(mask.resize((width, height), Image.Resampling.NEAREST))
            )
        records.append({
            "id": row["id"], "image": f"images/{row['id']}.png", "mask": f"masks/{row['id']}.png",
            "src_image": row["image"], "src_mask": row["mask"], "src_width": photo.width, "src_height": photo.height,
            "fg_fraction": float(row["fg_fraction"]), "split": "train" if k < 7 else "val",
        })
    frame = pd.DataFrame(records)
    write_manifest(frame, folder)
    write_info(folder, {"sizes": [list(s) for s in sizes]})
    return frame


def _png(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def source_rows(tiny_pairs) -> list[dict]:
    """10 real pairs: 7 fashion, 3 cars (7 become 'train', 3 'val')."""
    fashion = [r for r in tiny_pairs if r["domain"] == "fashion"][::3][:7]
    cars = [r for r in tiny_pairs if r["domain"] == "cars"][:3]
    return fashion[:6] + cars[:1] + fashion[6:] + cars[1:]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, source_rows) -> str:
    folder = tmp_path_factory.mktemp("prepared")
    write_prepared(folder, source_rows)
    return str(folder)


# --------------------------------------------------------------------------- items


def test_items_are_float_tensors_in_unit_range_with_binary_masks(prepared):
    ds = PairDataset(prepared, split="train", augment=AugmentConfig(strength=1.5), seed=1)
    assert len(ds) == 7 and ds.size == (W, H)
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, H, W) and item["image"].dtype == torch.float32
        assert item["mask"].shape == (1, H, W) and item["mask"].dtype == torch.float32
        assert 0 <= item["image"].min() and item["image"].max() <= 1
        assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
        assert item["id"] == ds.ids[i] and item["index"] == i
    assert ds[-1]["index"] == 6
    with pytest.raises(IndexError):
        ds[7]


def test_without_augmentation_items_are_the_stored_pairs(prepared):
    ds = PairDataset(prepared, split="val")
    photo, mask = ds.load_pair(0)
    stored = np.array(Image.open(pathlib.Path(prepared, size_dir(W, H), "images", f"{ds.ids[0]}.png")))
    assert np.array_equal(photo, stored)
    item = ds[0]
    assert torch.equal(item["image"], torch.from_numpy(photo).permute(2, 0, 1).float() / 255)
    assert torch.equal(item["mask"][0], torch.from_numpy(mask).float() / 255)


def test_split_filter_and_errors(prepared):
    assert len(PairDataset(prepared, split="val")) == 3
    assert len(PairDataset(prepared, split=None)) == 10
    with pytest.raises(DatasetError, match=r"split 'test' \(splits present: train, val\)"):
        PairDataset(prepared, split="test")
    with pytest.raises(DatasetError, match="dataset.json"):
        PairDataset(str(pathlib.Path(prepared) / "nowhere"))


def test_other_output_sizes_resize_from_the_prepared_one(prepared):
    ds = PairDataset(prepared, split="val", size=(64, 80), augment=AugmentConfig())
    assert ds[0]["image"].shape == (3, 80, 64) and ds[1]["mask"].shape == (1, 80, 64)
    assert PairDataset(prepared, split="val", size=48)[2]["image"].shape == (3, 48, 48)


def test_a_given_manifest_is_used_as_is_rows_may_repeat(prepared):
    frame = pd.read_parquet(pathlib.Path(prepared, "manifest.parquet"))
    balanced = pd.concat([frame[frame["split"] == "train"], frame.iloc[[6, 6, 6]]])  # oversample one pair
    ds = PairDataset(prepared, split="train", manifest=balanced)
    assert len(ds) == 10 and ds.ids[-3:] == [frame["id"][6]] * 3


# --------------------------------------------------------------------------- reproducibility


def test_same_seed_epoch_and_index_give_identical_items_and_other_epochs_differ(prepared):
    config = AugmentConfig(strength=1.5)
    a = PairDataset(prepared, augment=config, seed=7)
    b = PairDataset(prepared, augment=config, seed=7)
    for i in range(len(a)):
        assert torch.equal(a[i]["image"], b[i]["image"]) and torch.equal(a[i]["mask"], b[i]["mask"])
    first = [a[i]["image"] for i in range(len(a))]
    a.set_epoch(1)
    assert sum(not torch.equal(first[i], a[i]["image"]) for i in range(len(a))) >= len(a) - 1
    other_seed = PairDataset(prepared, augment=config, seed=8)
    assert any(not torch.equal(first[i], other_seed[i]["image"]) for i in range(len(a)))
    assert np.array_equal(a.arrays(3, epoch=0)[0], b.arrays(3)[0])  # an explicit epoch, same as b's current


def test_dataloader_batches_do_not_depend_on_the_number_of_workers(prepared):
    ds = PairDataset(prepared, split=None, augment=AugmentConfig(p_combine=0.5, p_side_by_side=0.3), seed=3)
    ds.set_epoch(2)

    def batches(workers):
        loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False, num_workers=workers)
        return list(loader)

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) == 3
    for x, y in zip(serial, parallel):
        assert x["id"] == y["id"] and torch.equal(x["index"], y["index"])
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"])
    assert serial[0]["image"].shape == (4, 3, H, W)


def test_reads_a_dataset_from_s3(s3_bucket, source_rows, prepared):
    remote = f"{s3_bucket}/prepared"
    write_prepared(remote, source_rows)
    config = AugmentConfig(p_combine=0.5, p_side_by_side=0.3)
    ds_remote = PairDataset(remote, split="val", augment=config, seed=5)
    ds_local = PairDataset(prepared, split="val", augment=config, seed=5)
    assert ds_remote.ids == ds_local.ids
    for i in range(len(ds_local)):
        r, loc = ds_remote[i], ds_local[i]
        assert torch.equal(r["image"], loc["image"]) and torch.equal(r["mask"], loc["mask"])


# --------------------------------------------------------------------------- CLI


def test_augment_preview_writes_a_grid_png(prepared, tmp_path):
    out = tmp_path / "grid.png"
    result = subprocess.run(
        [sys.executable, "-m", "clearbg", "augment-preview", prepared, "--out", str(out), "--n", "3", "--versions", "2",
         "--size", "64x80", "--seed", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "3 pairs" in result.stderr
    with Image.open(out) as grid:
        gap = 4
        assert grid.size == (3 * 64 + 4 * gap, 3 * 80 + 4 * gap) and grid.mode == "RGB"
        cells = np.asarray(grid)
    # The outline colour (magenta) is drawn in every cell.
    magenta = (cells[..., 0] == 255) & (cells[..., 1] == 0) & (cells[..., 2] == 255)
    for r in range(3):
        for c in range(3):
            y, x = gap + r * (80 + gap), gap + c * (64 + gap)
            assert magenta[y : y + 80, x : x + 64].any()
    # More rows asked than there are pairs: capped.
    ids = write_augment_preview(prepared, str(out), n=50, versions=1)
    assert sorted(ids) == sorted(PairDataset(prepared, split=None).ids)
    assert Image.open(out).size == (2 * W + 3 * gap, 10 * H + 11 * gap)


def test_augment_preview_rejects_a_bad_size(prepared, tmp_path):
    from click.testing import CliRunner

    from clearbg.cli import cli

    result = CliRunner().invoke(cli, ["augment-preview", prepared, "--out", str(tmp_path / "g.png"), "--size", "big"])
    assert result.exit_code != 0 and "--size" in result.output
    assert not (tmp_path / "g.png").exists()


def test_augment_preview_takes_any_augmentation_setting(prepared, tmp_path):
    from click.testing import CliRunner

    from clearbg.cli import cli

    runner = CliRunner()
    base = ["augment-preview", prepared, "--n", "2", "--versions", "2", "--size", "96", "--set", "p_crop=0"]
    plain = runner.invoke(cli, [*base, "--out", str(tmp_path / "plain.png")])
    captions = runner.invoke(cli, [*base, "--set", "augment.p_caption=1", "--out", str(tmp_path / "captions.png")])
    assert plain.exit_code == 0 and captions.exit_code == 0, plain.output + captions.output
    a, b = (np.asarray(Image.open(tmp_path / f"{name}.png")) for name in ("plain", "captions"))
    gap = 4
    assert np.array_equal(a[:, : gap + 96], b[:, : gap + 96])  # the originals column is untouched
    assert not np.array_equal(a, b)  # the augmented cells carry captions
    for bad, says in (("p_flop=1", "did you mean augment.p_flip"), ("p_crop=abc", "must be a number"),
                      ("p_crop", "key=value")):
        result = runner.invoke(cli, [*base, "--set", bad, "--out", str(tmp_path / "bad.png")])
        assert result.exit_code != 0 and says in result.output, result.output
    assert not (tmp_path / "bad.png").exists()
    # A training config's augmentation, as training will see it.
    config = tmp_path / "train.yaml"
    config.write_text("augment: {p_crop: 0.0, p_caption: 1.0}\n")
    from_config = runner.invoke(cli, [*base[:-2], "--config", str(config), "--out", str(tmp_path / "config.png")])
    assert from_config.exit_code == 0, from_config.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "config.png")), b)
