"""clearbg.data.clean: planted bad pairs, built from real photos and masks, are each caught with
the right reason, and every untouched good pair survives."""

from __future__ import annotations

import io
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from clearbg.data.clean import (
    REASONS,
    CleanOptions,
    binarise_mask,
    check_pair,
    decode_mask,
    edge_score,
    find_duplicates,
    find_mismatched,
    hamming,
    phash,
)
from clearbg.data.pairs import Pair, find_pairs

# Untouched pairs (tiny subset): all must survive cleaning.
GOOD = [
    "ccp_0061", "ccp_0085", "ccp_0089", "ccp_0171", "ccp_0275", "ccp_0460", "ccp_0789",
    "ccp_0837", "ccp_0853", "ccp_0876", "car_0c21bf2e46", "car_1f644c7f1d", "car_3296716df7",
    "car_42f8afd98e",
]
# Planted problems: pair id -> the reason cleaning must give (None: must be kept).
PLANTED = {
    "lonely_photo": "missing_mask",
    "lonely_mask": "missing_image",
    "resized_mask": "size_mismatch",
    "exif_rotated_ok": None,
    "exif_rotated_mask_not": "size_mismatch",
    "truncated_photo": "unreadable_image",
    "corrupt_mask": "unreadable_mask",
    "empty_mask": "empty_mask",
    "full_mask": "full_mask",
    "antialiased": None,
    "multilabel": None,
    "zz_exact_copy": "duplicate",
    "zz_near_copy": "near_duplicate",
    "swap_a": "mismatched_pair",
    "swap_b": "mismatched_pair",
    "swap_car": "mismatched_pair",
}


def _png(image: Image.Image | np.ndarray) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def _exif_rotated_jpeg(photo: Image.Image) -> bytes:
    """The photo stored turned 90 degrees with EXIF orientation 6: upright again once applied."""
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"; the pixels are stored 90 CCW
    return _jpeg(photo.transpose(Image.Transpose.ROTATE_90), quality=95, exif=exif.tobytes())


class Shared:
    def __init__(self, root: Path) -> None:
        self.root = root

    def photo_bytes(self, pair_id: str) -> bytes:
        domain, suffix = ("fashion", "jpg") if pair_id.startswith("ccp") else ("cars", "png")
        return (self.root / domain / "images" / f"{pair_id}.{suffix}").read_bytes()

    def photo(self, pair_id: str) -> Image.Image:
        return Image.open(io.BytesIO(self.photo_bytes(pair_id))).convert("RGB")

    def mask_bytes(self, pair_id: str) -> bytes:
        domain = "fashion" if pair_id.startswith("ccp") else "cars"
        return (self.root / domain / "masks" / f"{pair_id}.png").read_bytes()

    def mask(self, pair_id: str) -> Image.Image:
        return Image.open(io.BytesIO(self.mask_bytes(pair_id)))


@pytest.fixture(scope="module")
def planted(shared_data: Path, tmp_path_factory) -> Path:
    """A folders-layout source: GOOD pairs copied as they are, plus one pair per PLANTED entry."""
    data = Shared(shared_data)
    root = tmp_path_factory.mktemp("planted")
    (root / "images").mkdir()
    (root / "masks").mkdir()

    def put(pair_id: str, photo: bytes | None, mask: bytes | None, photo_suffix: str = "jpg") -> None:
        if photo is not None:
            (root / "images" / f"{pair_id}.{photo_suffix}").write_bytes(photo)
        if mask is not None:
            (root / "masks" / f"{pair_id}.png").write_bytes(mask)

    for pair_id in GOOD:
        put(pair_id, data.photo_bytes(pair_id), data.mask_bytes(pair_id), "jpg" if pair_id.startswith("ccp") else "png")

    put("lonely_photo", data.photo_bytes("ccp_0982"), None)
    put("lonely_mask", None, data.mask_bytes("ccp_0982"))
    mask = data.mask("ccp_0359")
    put("resized_mask", data.photo_bytes("ccp_0359"), _png(mask.resize((mask.width * 9 // 10, mask.height * 9 // 10))))
    put("exif_rotated_ok", _exif_rotated_jpeg(data.photo("ccp_0726")), data.mask_bytes("ccp_0726"))
    # Mask drawn on the photo as stored (sideways), not as displayed.
    put("exif_rotated_mask_not", _exif_rotated_jpeg(data.photo("ccp_0734")),
        _png(data.mask("ccp_0734").transpose(Image.Transpose.ROTATE_90)))
    photo = data.photo_bytes("ccp_0256")
    put("truncated_photo", photo[: len(photo) * 6 // 10], data.mask_bytes("ccp_0256"))
    mask = data.mask_bytes("ccp_0261")
    put("corrupt_mask", data.photo_bytes("ccp_0261"), mask[:40] + bytes(random.Random(0).randbytes(2000)))
    size = data.mask("ccp_0568").size
    put("empty_mask", data.photo_bytes("ccp_0568"), _png(Image.new("L", size, 0)))
    size = data.mask("ccp_0571").size
    put("full_mask", data.photo_bytes("ccp_0571"), _png(Image.new("L", size, 255)))
    put("antialiased", data.photo_bytes("ccp_0979"), _png(data.mask("ccp_0979").filter(ImageFilter.GaussianBlur(1.5))))
    put("multilabel", data.photo_bytes("ccp_0127"), (shared_data / "fashion" / "labelmaps" / "ccp_0127.png").read_bytes())
    put("zz_exact_copy", data.photo_bytes("ccp_0061"), data.mask_bytes("ccp_0061"))
    photo, mask = data.photo("ccp_0089"), data.mask("ccp_0089")
    smaller = (photo.width * 95 // 100, photo.height * 95 // 100)
    put("zz_near_copy", _jpeg(photo.resize(smaller, Image.Resampling.LANCZOS), quality=40),
        _png(mask.resize(smaller, Image.Resampling.NEAREST)))
    # Masks swapped between two photos of the same size (550 x 825), and between two cars.
    put("swap_a", data.photo_bytes("ccp_0169"), data.mask_bytes("ccp_0178"))
    put("swap_b", data.photo_bytes("ccp_0178"), data.mask_bytes("ccp_0169"))
    put("swap_car", data.photo_bytes("car_609a7f3ff1"), data.mask_bytes("car_9a03258d80"), "png")
    return root


@pytest.fixture(scope="module")
def cleaned(planted: Path):
    """Both passes over the planted source: {id: PairCheck}, {id: final reason or None}."""
    options = CleanOptions()
    checks = {c.pair.id: c for c in (check_pair(p, options) for p in find_pairs(str(planted)))}
    stats = pd.DataFrame([{"id": i, **c.stats} for i, c in checks.items() if c.reason is None])
    dropped = {**find_duplicates(stats, options), **find_mismatched(stats, options)}
    final = {i: (c.reason or dropped.get(i, (None,))[0]) for i, c in checks.items()}
    return checks, final, dropped


def test_every_planted_problem_gets_its_reason_and_every_good_pair_survives(cleaned) -> None:
    checks, final, _ = cleaned
    assert set(final) == set(GOOD) | set(PLANTED)
    assert {i: final[i] for i in PLANTED} == PLANTED
    assert {i: final[i] for i in GOOD} == dict.fromkeys(GOOD)
    assert set(final.values()) <= set(REASONS) | {None}
    for pair_id, check in checks.items():
        if check.reason is not None:
            assert check.detail, pair_id  # every rejection says what exactly


def test_details_name_the_numbers(cleaned) -> None:
    checks, _, dropped = cleaned
    assert "550x837" in checks["resized_mask"].detail and "495x753" in checks["resized_mask"].detail
    assert "turned 90 degrees" in checks["exif_rotated_mask_not"].detail
    assert "truncated" in checks["truncated_photo"].detail
    assert "ccp_0061" in dropped["zz_exact_copy"][1]
    assert "ccp_0089" in dropped["zz_near_copy"][1]
    assert "edge score" in dropped["swap_a"][1]


def test_kept_pairs_come_with_upright_photo_and_binary_mask_of_the_same_size(cleaned, shared_data) -> None:
    checks, final, _ = cleaned
    for pair_id, check in checks.items():
        if final[pair_id] is None:
            h, w = check.mask.shape
            assert check.photo.shape == (h, w, 3) and check.photo.dtype == np.uint8
            assert set(np.unique(check.mask)) <= {0, 255}
            assert (check.stats["src_width"], check.stats["src_height"]) == (w, h)
            assert len(check.stats["phash"]) == 16 and len(check.stats["sha256"]) == 64
            assert check.stats["edge_score"] > 1.5
    # The EXIF-rotated photo is upright and its original mask fits it exactly.
    rotated = checks["exif_rotated_ok"]
    original = np.asarray(Image.open(shared_data / "fashion/images/ccp_0726.jpg").convert("RGB"), dtype=np.int16)
    assert rotated.photo.shape == original.shape
    assert np.abs(rotated.photo.astype(np.int16) - original).mean() < 3  # one more JPEG generation
    good = checks["ccp_0061"]
    expected = np.asarray(Image.open(shared_data / "fashion/masks/ccp_0061.png"))
    assert np.array_equal(good.mask, expected) and good.soft_mask is None and good.notes == []
    assert good.stats["fg_fraction"] == pytest.approx((expected > 0).mean(), abs=1e-6)


def test_multilabel_map_foreground_is_nonzero_and_equals_the_binary_mask(cleaned, shared_data) -> None:
    check = cleaned[0]["multilabel"]
    expected = np.asarray(Image.open(shared_data / "fashion/masks/ccp_0127.png"))
    assert np.array_equal(check.mask, expected)
    assert check.stats["mask_kind"] == "multilabel" and check.soft_mask is None
    assert any(note.startswith("multi-label mask") and "foreground = non-zero" in note for note in check.notes)

    rejected = check_pair(check.pair, CleanOptions(multilabel="reject"))
    assert rejected.reason == "multilabel_mask" and "labels" in rejected.detail


def test_every_fashion_labelmap_reads_as_multilabel_and_matches_its_mask(shared_data) -> None:
    for path in sorted((shared_data / "fashion/labelmaps").glob("ccp_0*.png"))[:40]:
        mask, soft, kind, _ = binarise_mask(decode_mask(path.read_bytes()))
        expected = np.asarray(Image.open(shared_data / "fashion/masks" / path.name))
        assert np.array_equal(mask, expected), path.name
        assert kind == ("binary" if len(np.unique(np.asarray(Image.open(path)))) == 2 else "multilabel"), path.name


def test_antialiased_mask_is_thresholded_kept_and_noted(cleaned, shared_data) -> None:
    check = cleaned[0]["antialiased"]
    original = np.asarray(Image.open(shared_data / "fashion/masks/ccp_0979.png")) > 127
    assert check.stats["mask_kind"] == "antialiased"
    assert any("anti-aliased" in note and "thresholded at 128" in note for note in check.notes)
    assert check.soft_mask is not None and len(np.unique(check.soft_mask)) > 50
    assert np.array_equal(check.mask, np.where(check.soft_mask >= 128, 255, 0))
    ours = check.mask > 127
    assert (ours & original).sum() / (ours | original).sum() > 0.97


def test_mask_encodings_all_read_the_same(shared_data) -> None:
    """Carvana-style GIF, palette label PNG, 16-bit, RGB and a cutout's alpha give one mask."""
    binary = np.asarray(Image.open(shared_data / "cars/masks/car_0c21bf2e46.png"))
    image = Image.fromarray(binary)

    def encoded(img: Image.Image, fmt: str = "PNG") -> bytes:
        buffer = io.BytesIO()
        img.save(buffer, fmt)
        return buffer.getvalue()

    palette = Image.fromarray((binary > 0).astype(np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)  # index 1 drawn red
    cutout = Image.open(shared_data / "cars/images/car_0c21bf2e46.png").convert("RGBA")
    cutout.putalpha(image)
    variants = {
        "gif": encoded(image.convert("1"), "GIF"),
        "palette": encoded(palette),
        "16bit": encoded(Image.fromarray(binary.astype(np.uint16) * 257)),
        "0-1": encoded(Image.fromarray((binary > 0).astype(np.uint8))),
        "rgb": encoded(Image.merge("RGB", [image, image.point(lambda v: 0), image])),
        "cutout": encoded(cutout),
    }
    for name, data in variants.items():
        mask, _, kind, _ = binarise_mask(decode_mask(data, name=name))
        assert kind == "binary" and np.array_equal(mask, binary), name


def test_mask_with_exif_orientation_is_turned_upright(shared_data) -> None:
    mask = Image.open(shared_data / "cars/masks/car_0c21bf2e46.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    mask.transpose(Image.Transpose.ROTATE_90).save(buffer, "PNG", exif=exif.tobytes())
    assert np.array_equal(decode_mask(buffer.getvalue()), np.asarray(mask))


def test_check_pair_never_raises_on_garbage_or_missing_files(tmp_path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"not an image at all")
    cases = {
        Pair("x", str(tmp_path / "a.jpg"), str(tmp_path / "a.jpg")): "unreadable_image",
        Pair("y", str(tmp_path / "nope.jpg"), str(tmp_path / "nope.png")): "unreadable_image",
        Pair("z", None, None): "missing_image",
    }
    for pair, reason in cases.items():
        assert check_pair(pair).reason == reason
    empty = check_pair(Pair("e", "p", "m"), image_bytes=b"", mask_bytes=b"")
    assert empty.reason == "unreadable_image" and "empty" in empty.detail


def test_name_clash_is_reported_as_missing_mask_naming_the_other_pair() -> None:
    check = check_pair(Pair("a.png", "images/a.png", None, {"duplicate_of": "a"}))
    assert check.reason == "missing_mask" and "'a'" in check.detail


# --------------------------------------------------------------------------- scores


def test_edge_score_rewards_true_outlines_over_shifted_ones(shared_data) -> None:
    photo = Image.open(shared_data / "cars/images/car_0c21bf2e46.png").convert("L")
    mask = np.asarray(Image.open(shared_data / "cars/masks/car_0c21bf2e46.png")) > 127
    grey = np.asarray(photo, dtype=np.float32)
    true = edge_score(grey, mask)
    shifted = edge_score(grey, np.roll(mask, (40, 60), axis=(0, 1)))
    assert true > 2.0 and shifted < 1.5
    assert edge_score(grey, np.zeros_like(mask)) is None  # no outline, no score


def test_phash_survives_recompression_and_separates_different_photos(shared_data) -> None:
    def grey(data: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32)

    photo = Image.open(shared_data / "fashion/images/ccp_0089.jpg")
    original = phash(grey((shared_data / "fashion/images/ccp_0089.jpg").read_bytes()))
    recompressed = phash(grey(_jpeg(photo.resize((500, 760)), quality=30)))
    other = phash(grey((shared_data / "fashion/images/ccp_0460.jpg").read_bytes()))
    assert hamming(original, recompressed) <= 3
    assert hamming(original, other) > 16


def test_find_duplicates_matches_brute_force_and_scales() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, size=3000, dtype=np.uint64)
    hashes = list(base)
    # 300 planted near copies, 1..10 bits away from a random earlier hash.
    for k in range(300):
        value = int(base[rng.integers(0, len(base))])
        for bit in rng.choice(63, size=int(rng.integers(1, 11)), replace=False):
            value ^= 1 << int(bit)
        hashes.append(np.uint64(value))
    frame = pd.DataFrame({
        "id": [f"p{k:05d}" for k in range(len(hashes))],
        "sha256": [f"s{k}" for k in range(len(hashes))],
        "phash": [f"{int(h):016x}" for h in hashes],
    })
    frame.loc[5, "sha256"] = frame.loc[2, "sha256"]  # one exact duplicate
    options = CleanOptions(near_duplicate_bits=7)

    start = time.perf_counter()
    dropped = find_duplicates(frame, options)
    elapsed = time.perf_counter() - start

    assert dropped["p00005"][0] == "duplicate" and "p00002" in dropped["p00005"][1]
    # Brute force: walk in id order, drop a row within 7 bits of any kept row.
    kept: list[int] = []
    expected = set()
    for k, value in enumerate(int(h, 16) for h in frame["phash"]):
        if k == 5:
            continue
        if any((value ^ other).bit_count() <= 7 for other in kept):
            expected.add(f"p{k:05d}")
        else:
            kept.append(value)
    assert {i for i, (reason, _) in dropped.items() if reason == "near_duplicate"} == expected
    assert 150 < len(expected) < 300
    assert elapsed < 3.0


def test_find_mismatched_flags_low_scores_absolutely_and_outliers_in_a_large_set() -> None:
    rng = np.random.default_rng(1)
    scores = list(rng.normal(6.0, 0.5, size=200)) + [1.2, 1.9, 3.2]
    frame = pd.DataFrame({"id": [f"p{k}" for k in range(len(scores))], "edge_score": scores})
    flagged = find_mismatched(frame, CleanOptions())
    assert set(flagged) == {"p200", "p201"}  # 1.2 < min_edge; 1.9 is a far outlier; 3.2 is not < soft_edge
    assert "robust SDs" in flagged["p201"][1]
    # Ten pairs: only the absolute threshold applies.
    small = frame.iloc[list(range(8)) + [200, 201]]
    assert set(find_mismatched(small, CleanOptions())) == {"p200"}
    assert find_mismatched(frame, CleanOptions(mismatch="off")) == {}


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="multilabel"):
        CleanOptions(multilabel="keep")
    with pytest.raises(ValueError, match="min_foreground"):
        CleanOptions(min_foreground=0.5, max_foreground=0.4)
