"""Property test of the decode path: whatever bytes arrive, ``open_image`` answers with a loaded
RGB/RGBA image within the pixel limit or with one of clearbg's own errors, and does so quickly.

Inputs are real JPEG, PNG, WebP, GIF and TIFF files (a small real photo, with EXIF, alpha or
several frames) with random mutations that favour the header, where the sizes and offsets live,
plus random bytes behind each format's magic number.
"""

from __future__ import annotations

import faulthandler
import io
import resource

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from clearbg.errors import ClearbgError
from clearbg.imageio import open_image

LIMIT = 1_000_000
"""The pixel limit under test; the seed images have 1,536 pixels, so only a mutated header reaches it."""

MAX_RSS_GROWTH = 256 * 2**20
"""Decoding within LIMIT needs about 4 MB per image; much more means a header made us allocate."""

FUZZ = settings(
    max_examples=1500,
    deadline=2000,  # ms per example: a tiny image decodes in about 1 ms; seconds would mean a loop
    database=None,  # nothing written into the repository; a failure prints its reproduction
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

MAGICS = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x01\x00\x00WEBPVP8 ", b"GIF89a", b"II*\x00", b"MM\x00*"]

# Values a mutated size or offset field most often takes in bug reports: all ones, sign bit, zero.
BIG = [b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\xff\xff", b"\xff\xff\x00\x00", b"\x00\x00\x00\x00",
       b"\x00\x01\x00\x00"]


@pytest.fixture(scope="module")
def seeds(shared_data) -> dict[str, bytes]:
    """One small real file per format, built from a photo of the shared data set."""
    photo = Image.open(shared_data / "fashion" / "images" / "ccp_0001.jpg").convert("RGB").resize((32, 48))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: exercises exif_transpose
    files = {}
    for fmt, image, options in [
        ("JPEG", photo, {"quality": 80, "exif": exif}),
        ("PNG", photo.convert("RGBA"), {}),
        ("WEBP", photo.convert("RGBA"), {"quality": 80}),
        ("GIF", photo.convert("P"), {"save_all": True, "append_images": [photo.rotate(90).convert("P")]}),
        ("TIFF", photo, {"compression": "tiff_deflate", "exif": exif}),
    ]:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        files[fmt] = buffer.getvalue()
    return files


@pytest.fixture(scope="module", autouse=True)
def no_hang():
    """A decoder stuck in C code would not return to Hypothesis's deadline: end the process instead."""
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        size = len(data)
        pos = draw(st.one_of(st.integers(0, min(size, 64) - 1), st.integers(0, size - 1)))
        op = draw(st.sampled_from(["flip", "overwrite", "big", "truncate", "insert", "delete"]))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[pos : pos + len(chunk)] = chunk
        elif op == "big":
            data[pos : pos + 4] = draw(st.sampled_from(BIG))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        else:
            del data[pos : pos + draw(st.integers(1, 64))]
    return bytes(data)


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def decodes_safely(data: bytes, baseline: int) -> None:
    try:
        image = open_image(data, max_pixels=LIMIT, name="fuzz")
    except ClearbgError:
        pass
    else:
        assert image.mode in ("RGB", "RGBA")
        assert image.width * image.height <= LIMIT
    assert peak_rss() - baseline < MAX_RSS_GROWTH, "decoding allocated far beyond the pixel limit"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "TIFF"])
def test_mutated_real_files_decode_or_raise_our_errors(fmt, seeds):
    baseline = peak_rss()
    assert open_image(seeds[fmt], name="seed").size in ((48, 32), (32, 48))

    @FUZZ
    @given(data=mutated(seeds[fmt]))
    def check(data):
        decodes_safely(data, baseline)

    check()


@FUZZ
@given(data=st.tuples(st.sampled_from(MAGICS), st.binary(max_size=512)).map(b"".join) | st.binary(max_size=512))
def test_random_bytes_decode_or_raise_our_errors(data):
    decodes_safely(data, peak_rss())
