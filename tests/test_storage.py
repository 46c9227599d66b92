"""clearbg.storage: local folders and s3:// (a real moto server) behind one API."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clearbg import storage
from clearbg.errors import ClearbgError, StorageError
from clearbg.storage import ImageRef, iter_images

PHOTOS = Path("/work/shared/data/fashion/images")


def _touch(root: Path, relpath: str, data: bytes = b"x") -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _relpaths(inputs: list[str]) -> list[str]:
    return [ref.relpath for ref in iter_images(inputs)]


# --------------------------------------------------------------------------- local


def test_folder_walk_recurses_in_sorted_order(tmp_path: Path) -> None:
    # Created in reverse order, and enough names that directory order is not sorted by luck.
    names = [f"img_{i:02d}.jpg" for i in range(30)]
    for name in reversed(names):
        _touch(tmp_path, name)
    _touch(tmp_path, "img_15b/deeper/z.png")  # a folder sorts among the files by its name
    _touch(tmp_path, "img_15b/a.png")

    got = _relpaths([str(tmp_path)])

    expected = names[:16] + ["img_15b/a.png", "img_15b/deeper/z.png"] + names[16:]
    assert got == expected


def test_folder_walk_keeps_image_suffixes_in_any_case_only(tmp_path: Path) -> None:
    for name in ["a.JPG", "b.jpeg", "c.Png", "d.webp", "e.BMP", "f.tif", "g.TIFF", "h.gif",
                 "i.heic", "j.HEIF", "k.avif", "notes.txt", "model.onnx", "noext", "jpg"]:
        _touch(tmp_path, name)

    got = _relpaths([str(tmp_path)])

    assert got == ["a.JPG", "b.jpeg", "c.Png", "d.webp", "e.BMP", "f.tif", "g.TIFF", "h.gif",
                   "i.heic", "j.HEIF", "k.avif"]


def test_folder_walk_skips_hidden_files_and_folders(tmp_path: Path) -> None:
    _touch(tmp_path, "keep.jpg")
    _touch(tmp_path, ".hidden.jpg")
    _touch(tmp_path, ".cache/inside.jpg")
    _touch(tmp_path, "sub/.thumbs/t.jpg")
    _touch(tmp_path, "sub/keep2.png")

    assert _relpaths([str(tmp_path)]) == ["keep.jpg", "sub/keep2.png"]


def test_explicit_file_is_yielded_whatever_its_suffix(tmp_path: Path) -> None:
    odd = _touch(tmp_path, "deep/scan.raw")

    refs = list(iter_images([str(odd)]))

    assert refs == [ImageRef(uri=str(odd), relpath="scan.raw")]


def test_inputs_are_yielded_in_the_order_given(tmp_path: Path) -> None:
    b = _touch(tmp_path, "b.jpg")
    _touch(tmp_path, "folder/a.jpg")

    assert _relpaths([str(b), str(tmp_path / "folder")]) == ["b.jpg", "a.jpg"]


def test_missing_local_input_raises_storage_error_naming_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")

    with pytest.raises(StorageError, match="no such file or folder") as info:
        list(iter_images([missing]))

    assert missing in str(info.value)
    assert isinstance(info.value, ClearbgError)


def test_folder_without_images_yields_nothing(tmp_path: Path) -> None:
    _touch(tmp_path, "readme.txt")

    assert list(iter_images([str(tmp_path)])) == []


def test_image_ref_relpath_is_relative_with_forward_slashes_and_stem_drops_suffix(tmp_path: Path) -> None:
    photo = _touch(tmp_path, "shoes/left/ccp_0001.final.JPG")

    (ref,) = iter_images([str(tmp_path)])

    assert ref.relpath == "shoes/left/ccp_0001.final.JPG"
    assert ref.stem == "ccp_0001.final"
    assert Path(ref.uri) == photo
    assert ImageRef(uri="x", relpath="noext").stem == "noext"


def test_walk_streams_instead_of_listing_everything_first(tmp_path: Path) -> None:
    _touch(tmp_path, "a/1.jpg")
    _touch(tmp_path, "b/2.jpg")
    it = iter_images([str(tmp_path)])

    assert next(it).relpath == "a/1.jpg"
    # Folder "b" appears after the first image was yielded: a lazy walk still finds it,
    # and one that listed everything up front would not.
    _touch(tmp_path, "b/3.jpg")
    assert [r.relpath for r in it] == ["b/2.jpg", "b/3.jpg"]


def test_broken_links_are_reported_and_the_walk_goes_on(tmp_path: Path) -> None:
    _touch(tmp_path, "a.jpg")
    _touch(tmp_path, "z.jpg")
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (tmp_path / "loop.jpg").symlink_to("loop.jpg")  # os.scandir's is_dir() raises ELOOP on it
    (tmp_path / "album").symlink_to("album")  # no suffix: it may have been a folder
    (tmp_path / "notes.txt").symlink_to(tmp_path / "gone.txt")  # not a photo either way: ignored
    errors: list[tuple[str, str]] = []

    refs = list(storage.iter_images([str(tmp_path)], on_error=lambda uri, err: errors.append((uri, str(err)))))

    # Links named like photos are photos: reading them fails with the reason, per photo.
    assert [r.relpath for r in refs] == ["a.jpg", "dangling.jpg", "loop.jpg", "z.jpg"]
    with pytest.raises(StorageError, match="dangling.jpg: No such file .* symbolic link to .*gone.jpg"):
        storage.read_bytes(refs[1].uri)
    with pytest.raises(StorageError, match="loop.jpg: Too many levels of symbolic links"):
        storage.read_bytes(refs[2].uri)
    assert errors == [(str(tmp_path / "album"), f"cannot follow {tmp_path / 'album'}: Too many levels of symbolic "
                       "links (it is a symbolic link to album; fix or remove the link)")]
    with pytest.raises(StorageError, match="album"):  # without on_error the first one is raised
        list(storage.iter_images([str(tmp_path)]))


def test_local_write_then_read_round_trips_and_leaves_no_temp_file(tmp_path: Path) -> None:
    data = (PHOTOS / "ccp_0001.jpg").read_bytes()
    target = str(tmp_path / "out" / "nested" / "cut.png")

    storage.write_bytes(target, b"old contents")
    storage.write_bytes(target, data)

    assert storage.read_bytes(target) == data
    assert os.listdir(tmp_path / "out" / "nested") == ["cut.png"]


def test_read_missing_local_file_raises_storage_error_naming_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "gone.jpg")

    with pytest.raises(StorageError, match="gone.jpg") as info:
        storage.read_bytes(missing)

    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_write_into_a_file_as_folder_raises_storage_error(tmp_path: Path) -> None:
    blocker = _touch(tmp_path, "blocker")

    with pytest.raises(StorageError, match="blocker"):
        storage.write_bytes(str(blocker / "x.png"), b"data")


def test_join_adds_exactly_one_slash_for_uris_and_local_paths() -> None:
    assert storage.join("s3://shop/cut/", "/shoes/", "a.png") == "s3://shop/cut/shoes/a.png"
    assert storage.join("s3://shop", "a.png") == "s3://shop/a.png"
    assert storage.join("s3://shop/cut") == "s3://shop/cut"
    assert storage.join("out/", "shoes/a.png") == os.path.join("out", "shoes/a.png")
    assert storage.join("out", "/etc/passwd") == os.path.join("out", "etc/passwd")


def test_is_remote_is_true_for_any_scheme_but_file() -> None:
    assert storage.is_remote("s3://bucket/key.jpg")
    assert storage.is_remote("gs://bucket/key.jpg")
    assert storage.is_remote("https://example.com/a.jpg")
    assert not storage.is_remote("file:///tmp/a.jpg")
    assert not storage.is_remote("/tmp/a.jpg")
    assert not storage.is_remote("relative/a.jpg")


def test_exists_for_local_paths(tmp_path: Path) -> None:
    present = _touch(tmp_path, "a.jpg")

    assert storage.exists(str(present))
    assert storage.exists(str(tmp_path))
    assert not storage.exists(str(tmp_path / "b.jpg"))


def test_s3_options_take_endpoint_from_clearbg_then_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLEARBG_S3_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert storage.s3_options() == {}

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://aws-env:9000")
    assert storage.s3_options() == {"client_kwargs": {"endpoint_url": "http://aws-env:9000"}}

    monkeypatch.setenv("CLEARBG_S3_ENDPOINT_URL", "http://clearbg-env:9000")
    assert storage.s3_options() == {"client_kwargs": {"endpoint_url": "http://clearbg-env:9000"}}


# --------------------------------------------------------------------------- S3 (real moto server)

# key in the bucket -> photo it holds (None: a non-image / out-of-prefix object)
S3_LAYOUT = {
    "raw/ccp_0001.jpg": "ccp_0001.jpg",
    "raw/shoes/ccp_0002.jpg": "ccp_0002.jpg",
    "raw/shoes/left/ccp_0003.jpg": "ccp_0003.jpg",
    "raw/tops/CCP_0004.JPG": "ccp_0004.jpg",
    "raw/notes.txt": None,
    "raw/.thumbs/ccp_0005.jpg": "ccp_0005.jpg",
    "raw-extra/ccp_0005.jpg": "ccp_0005.jpg",  # shares the string prefix "raw", not the folder
    "other/ccp_0001.jpg": "ccp_0001.jpg",
}


@pytest.fixture
def s3_photos(s3_bucket: str, s3_client) -> str:
    """The bucket of S3_LAYOUT, uploaded with plain boto3 (independent of clearbg.storage)."""
    bucket = s3_bucket.removeprefix("s3://")
    for key, photo in S3_LAYOUT.items():
        body = (PHOTOS / photo).read_bytes() if photo else b"not an image"
        s3_client.put_object(Bucket=bucket, Key=key, Body=body)
    return s3_bucket


def test_s3_prefix_walk_finds_exactly_the_images_under_it(s3_photos: str) -> None:
    refs = list(iter_images([f"{s3_photos}/raw"]))

    assert [r.relpath for r in refs] == [
        "ccp_0001.jpg",
        "shoes/ccp_0002.jpg",
        "shoes/left/ccp_0003.jpg",
        "tops/CCP_0004.JPG",
    ]
    assert [r.uri for r in refs] == [f"{s3_photos}/raw/{r.relpath}" for r in refs]


def test_s3_prefix_with_trailing_slash_and_bucket_root_walk_too(s3_photos: str) -> None:
    assert len(list(iter_images([f"{s3_photos}/raw/shoes/"]))) == 2
    assert _relpaths([s3_photos]) == [
        "other/ccp_0001.jpg",
        "raw/ccp_0001.jpg",  # sorted per folder level: "raw" before "raw-extra"
        "raw/shoes/ccp_0002.jpg",
        "raw/shoes/left/ccp_0003.jpg",
        "raw/tops/CCP_0004.JPG",
        "raw-extra/ccp_0005.jpg",
    ]


def test_s3_explicit_object_is_yielded_whatever_its_suffix(s3_photos: str) -> None:
    refs = list(iter_images([f"{s3_photos}/raw/notes.txt"]))

    assert refs == [ImageRef(uri=f"{s3_photos}/raw/notes.txt", relpath="notes.txt")]


def test_s3_read_bytes_returns_the_uploaded_bytes(s3_photos: str) -> None:
    for ref in iter_images([f"{s3_photos}/raw"]):
        expected = (PHOTOS / S3_LAYOUT[ref.uri.removeprefix(f"{s3_photos}/")]).read_bytes()
        assert storage.read_bytes(ref.uri) == expected


def test_s3_write_bytes_then_read_back(s3_bucket: str, s3_client) -> None:
    data = (PHOTOS / "ccp_0002.jpg").read_bytes()
    uri = storage.join(s3_bucket, "cut/shoes", "ccp_0002.png")

    storage.write_bytes(uri, b"old contents")
    storage.write_bytes(uri, data)

    assert storage.read_bytes(uri) == data
    stored = s3_client.get_object(Bucket=s3_bucket.removeprefix("s3://"), Key="cut/shoes/ccp_0002.png")
    assert stored["Body"].read() == data
    assert storage.exists(uri)


def test_s3_listing_sees_objects_another_writer_added_after_an_earlier_walk(s3_photos: str, s3_client) -> None:
    assert len(list(iter_images([f"{s3_photos}/raw/tops"]))) == 1

    # Written behind s3fs's back (another process, say): a cached listing would miss it.
    s3_client.put_object(Bucket=s3_photos.removeprefix("s3://"), Key="raw/tops/new.png", Body=b"png")

    assert _relpaths([f"{s3_photos}/raw/tops"]) == ["CCP_0004.JPG", "new.png"]


def test_missing_s3_key_raises_storage_error_naming_it(s3_bucket: str) -> None:
    uri = f"{s3_bucket}/raw/absent.jpg"

    with pytest.raises(StorageError, match="absent.jpg"):
        storage.read_bytes(uri)
    with pytest.raises(StorageError, match="no such s3 object or prefix") as info:
        list(iter_images([uri]))
    assert uri in str(info.value)
    assert not storage.exists(uri)


def test_missing_s3_prefix_raises_storage_error_naming_it(s3_photos: str) -> None:
    uri = f"{s3_photos}/raw/nothing-here/"

    with pytest.raises(StorageError, match="no such s3 object or prefix") as info:
        list(iter_images([uri]))

    assert uri in str(info.value)


def test_missing_s3_bucket_raises_storage_error(s3_endpoint: str) -> None:
    with pytest.raises(StorageError, match="no such s3 object or prefix"):
        list(iter_images(["s3://no-such-bucket-clearbg/raw/"]))
