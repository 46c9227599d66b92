"""clearbg.data.pairs: folders / carvana / csv layouts, local and on a real S3 server (moto),
streamed, with unmatched and clashing names reported rather than lost."""

from __future__ import annotations

import csv
import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clearbg.data import pairs as pairs_module
from clearbg.data.clean import check_pair
from clearbg.data.manifest import DatasetError
from clearbg.data.pairs import Pair, find_pairs, resolve_layout
from clearbg.errors import StorageError
from clearbg.storage import ImageRef


def _by_id(found) -> dict[str, Pair]:
    result: dict[str, Pair] = {}
    for pair in found:
        assert pair.id not in result, f"id {pair.id} yielded twice"
        result[pair.id] = pair
    return result


def _touch(root: Path, relpath: str, data: bytes = b"x") -> str:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def _gif(mask_path: Path) -> bytes:
    buffer = io.BytesIO()
    Image.open(mask_path).convert("1").save(buffer, "GIF")  # two-colour palette, as Kaggle Carvana
    return buffer.getvalue()


# --------------------------------------------------------------------------- shared data


def test_folders_layout_of_the_fashion_set_pairs_all_702(shared_data: Path) -> None:
    source = shared_data / "fashion"
    found = _by_id(find_pairs(str(source)))
    with open(source / "manifest.csv", newline="") as f:
        ids = [row["id"] for row in csv.DictReader(f)]
    assert sorted(found) == sorted(ids) and len(found) == 702
    pair = found["ccp_0001"]
    assert pair.image == str(source / "images" / "ccp_0001.jpg")
    assert pair.mask == str(source / "masks" / "ccp_0001.png")
    assert resolve_layout(str(source)) == "folders"


def test_csv_manifest_resolves_paths_against_its_folder_and_keeps_extra_columns(shared_data: Path) -> None:
    manifest = shared_data / "fashion" / "manifest.csv"
    by_csv = _by_id(find_pairs(str(manifest)))
    by_folder = _by_id(find_pairs(str(shared_data / "fashion"), layout="folders"))
    assert by_csv.keys() == by_folder.keys()
    for pair_id, pair in by_csv.items():
        assert Path(pair.image).resolve() == Path(by_folder[pair_id].image).resolve()
        assert Path(pair.mask).resolve() == Path(by_folder[pair_id].mask).resolve()
    extra = by_csv["ccp_0001"].extra
    assert extra["product_type"] == "long_sleeved_top_dress" and extra["split"] == "train"
    assert "id" not in extra and "image" not in extra and "mask" not in extra
    # index.csv has paths relative to data/ and two domains.
    index = _by_id(find_pairs(str(shared_data / "index.csv")))
    assert len(index) == 802 and Path(index["car_0291116c2f"].mask).is_file()


def test_csv_without_id_column_uses_the_stem_and_numbers_repeated_ids(tmp_path: Path) -> None:
    absolute = _touch(tmp_path, "elsewhere/c.jpg")
    (tmp_path / "list.csv").write_text(
        "\ufeffimage,mask,product_type\n"
        "shoes/a.jpg,shoes/a.png,shoe\n"
        "bags/a.jpg,bags/a.png,bag\n"
        f"{absolute},,\n"
        ",,\n"
        "s3://bucket/d.jpg,s3://bucket/d_mask.png,x\n"
    )
    found = list(find_pairs(str(tmp_path / "list.csv")))
    assert [p.id for p in found] == ["a", "a~2", "c", "d"]
    assert found[0].image == str(tmp_path / "shoes/a.jpg") and found[0].extra == {"product_type": "shoe"}
    assert found[1].extra == {"product_type": "bag", "duplicate_of": "a"}
    assert found[2].image == absolute and found[2].mask is None
    assert found[3].image == "s3://bucket/d.jpg"


def test_csv_without_mask_column_says_what_it_needs(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("photo,label\na.jpg,b.png\n")
    with pytest.raises(DatasetError, match="image or mask column"):
        list(find_pairs(str(tmp_path / "bad.csv")))
    with pytest.raises(StorageError):
        list(find_pairs(str(tmp_path / "missing.csv")))


# --------------------------------------------------------------------------- folders layout


def test_nested_folders_pair_by_relative_path_and_report_leftovers_and_name_clashes(tmp_path: Path) -> None:
    for relpath in ["a.jpg", "a.png", "shoes/b.JPG", "shoes/deep/c.webp", "only_photo.jpg", "x.k.jpg", "x.jpg"]:
        _touch(tmp_path, "images/" + relpath)
    for relpath in ["a.png", "shoes/b.png", "shoes/deep/c.png", "only_mask.png", "x.k.png", "x.png", "notes.txt"]:
        _touch(tmp_path, "masks/" + relpath)

    found = _by_id(find_pairs(str(tmp_path)))

    assert found["a"] == Pair("a", str(tmp_path / "images/a.jpg"), str(tmp_path / "masks/a.png"))
    # The second photo named "a" is not lost: it comes out alone, saying whose name it shares.
    assert found["a.png"] == Pair("a.png", str(tmp_path / "images/a.png"), None, {"duplicate_of": "a"})
    assert found["shoes/b"].mask == str(tmp_path / "masks/shoes/b.png")
    assert found["shoes/deep/c"].image == str(tmp_path / "images/shoes/deep/c.webp")
    assert found["only_photo"].mask is None and found["only_mask"].image is None
    assert found["x"].mask and found["x.k"].mask  # stems with dots pair up too
    assert len(found) == 8


def test_missing_masks_folder_is_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    _touch(tmp_path, "images/a.jpg")
    with pytest.raises(DatasetError, match="no masks/"):
        list(find_pairs(str(tmp_path)))
    with pytest.raises(StorageError, match="no such"):
        list(find_pairs(str(tmp_path / "nope")))
    with pytest.raises(ValueError, match="unknown layout"):
        list(find_pairs(str(tmp_path), layout="coco"))


def test_unrecognised_folder_says_which_layouts_exist(tmp_path: Path) -> None:
    _touch(tmp_path, "a.jpg")
    with pytest.raises(DatasetError, match="images/ \\+ masks/"):
        list(find_pairs(str(tmp_path)))


def test_join_streams_holding_only_a_few_names_at_a_time() -> None:
    """60k photos and masks, 10% missing on each side: the join never runs far ahead."""
    rng = np.random.default_rng(0)
    n = 60_000
    has_image, has_mask = rng.random(n) > 0.1, rng.random(n) > 0.1
    consumed = [0]

    def walk(present, suffix):
        for k in np.flatnonzero(present):
            consumed[0] += 1
            folder = f"d{k // 1000:03d}"
            yield ImageRef(uri=f"mem://{folder}/p{k:06d}.{suffix}", relpath=f"{folder}/p{k:06d}.{suffix}")

    yielded = lag = 0
    kinds = {"full": 0, "no_mask": 0, "no_image": 0}
    for pair in pairs_module._join_walks(walk(has_image, "jpg"), walk(has_mask, "png"), ""):
        yielded += (pair.image is not None) + (pair.mask is not None)
        lag = max(lag, consumed[0] - yielded)
        kinds["full" if pair.image and pair.mask else "no_mask" if pair.image else "no_image"] += 1
    assert kinds == {
        "full": int((has_image & has_mask).sum()),
        "no_mask": int((has_image & ~has_mask).sum()),
        "no_image": int((~has_image & has_mask).sum()),
    }
    assert lag <= 5  # files read but not yet yielded: a handful, not the listing


def test_find_pairs_is_lazy(tmp_path: Path) -> None:
    for k in range(50):
        _touch(tmp_path, f"images/p{k:02d}.jpg")
        _touch(tmp_path, f"masks/p{k:02d}.png")
    first = list(itertools.islice(find_pairs(str(tmp_path)), 3))
    assert [p.id for p in first] == ["p00", "p01", "p02"]


# --------------------------------------------------------------------------- carvana layout


def test_carvana_layout_with_gif_masks_pairs_and_cleans(shared_data: Path, tmp_path: Path) -> None:
    cars = ["car_0c21bf2e46", "car_1f644c7f1d", "car_3296716df7"]
    for name in cars:
        Image.open(shared_data / f"cars/images/{name}.png").convert("RGB").save(tmp_path / f"{name}_01.jpg", quality=95)
        (tmp_path / f"{name}_01_mask.gif").write_bytes(_gif(shared_data / f"cars/masks/{name}.png"))
    _touch(tmp_path, "sub/lonely_mask.gif")

    assert resolve_layout(str(tmp_path)) == "carvana"
    found = _by_id(find_pairs(str(tmp_path)))

    assert sorted(found) == sorted(f"{n}_01" for n in cars) + ["sub/lonely"]
    assert found["sub/lonely"].image is None
    for name in cars:
        check = check_pair(found[f"{name}_01"])
        assert check.reason is None, check.detail
        expected = np.asarray(Image.open(shared_data / f"cars/masks/{name}.png"))
        assert np.array_equal(check.mask, expected)


def test_kaggle_train_and_train_masks_folders_are_detected(tmp_path: Path) -> None:
    _touch(tmp_path, "train/0cdf_01.jpg")
    _touch(tmp_path, "train/0cdf_02.jpg")
    _touch(tmp_path, "train_masks/0cdf_01_mask.gif")
    found = _by_id(find_pairs(str(tmp_path)))
    assert found["0cdf_01"].mask == str(tmp_path / "train_masks/0cdf_01_mask.gif")
    assert found["0cdf_02"].mask is None


# --------------------------------------------------------------------------- s3


def _upload(s3_client, bucket: str, key: str, data: bytes) -> None:
    s3_client.put_object(Bucket=bucket.removeprefix("s3://"), Key=key, Body=data)


def test_s3_folders_carvana_and_csv_layouts_find_and_read_real_pairs(
    s3_bucket: str, s3_client, shared_data: Path, tiny_pairs
) -> None:
    rows = [r for r in tiny_pairs if r["domain"] == "fashion"][:3]
    for row in rows:
        photo, mask = Path(row["image"]).read_bytes(), Path(row["mask"]).read_bytes()
        _upload(s3_client, s3_bucket, f"folders/images/{row['id']}.jpg", photo)
        _upload(s3_client, s3_bucket, f"folders/masks/{row['id']}.png", mask)
        _upload(s3_client, s3_bucket, f"carvana/shoots/{row['id']}.jpg", photo)
        _upload(s3_client, s3_bucket, f"carvana/shoots/{row['id']}_mask.png", mask)
    _upload(s3_client, s3_bucket, "folders/images/no_mask.jpg", Path(rows[0]["image"]).read_bytes())
    lines = ["id,image,mask,split"] + [f"{r['id']},folders/images/{r['id']}.jpg,folders/masks/{r['id']}.png,test" for r in rows]
    _upload(s3_client, s3_bucket, "pairs.csv", "\n".join(lines).encode())
    ids = sorted(r["id"] for r in rows)

    folders = _by_id(find_pairs(f"{s3_bucket}/folders"))
    assert resolve_layout(f"{s3_bucket}/folders") == "folders"
    assert sorted(folders) == sorted(ids + ["no_mask"]) and folders["no_mask"].mask is None
    assert folders[ids[0]].image == f"{s3_bucket}/folders/images/{ids[0]}.jpg"

    carvana = _by_id(find_pairs(f"{s3_bucket}/carvana/"))
    assert resolve_layout(f"{s3_bucket}/carvana/") == "carvana"
    assert sorted(carvana) == [f"shoots/{i}" for i in ids]

    listed = _by_id(find_pairs(f"{s3_bucket}/pairs.csv"))
    assert sorted(listed) == ids and listed[ids[0]].extra == {"split": "test"}
    assert listed[ids[0]].mask == f"{s3_bucket}/folders/masks/{ids[0]}.png"

    for pair in [folders[ids[0]], carvana[f"shoots/{ids[1]}"], listed[ids[2]]]:
        check = check_pair(pair)  # reads from S3
        assert check.reason is None, check.detail
        assert check.mask.shape == check.photo.shape[:2]
