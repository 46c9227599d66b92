"""clearbg.imageio: every awkward input is built at test time from a real photo in shared/data."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile

from clearbg.errors import ClearbgError, ImageError, ImageTooLarge, OutputTooLarge, StorageError
from clearbg.imageio import (
    DEFAULT_MAX_PIXELS,
    atomic_write_bytes,
    check_encodable,
    encode_image,
    flatten,
    is_complete,
    max_pixels,
    open_image,
    save_image,
)

FASHION = "fashion/images/ccp_0001.jpg"  # 550 x 832 JPEG
CAR = "cars/images/car_0291116c2f.png"  # 480 x 360 RGB PNG
CAR_MASK = "cars/masks/car_0291116c2f.png"  # mode L, 0 / 255


@pytest.fixture(autouse=True)
def default_pixel_limit(monkeypatch):
    """Tests expect the built-in 100 MP limit, whatever the developer's shell exports."""
    monkeypatch.delenv("CLEARBG_MAX_PIXELS", raising=False)


@pytest.fixture(scope="module")
def photo_path(shared_data: Path) -> Path:
    return shared_data / FASHION


@pytest.fixture(scope="module")
def photo(photo_path: Path) -> Image.Image:
    with Image.open(photo_path) as im:
        return im.convert("RGB")


@pytest.fixture(scope="module")
def car(shared_data: Path) -> Image.Image:
    with Image.open(shared_data / CAR) as im:
        return im.convert("RGB")


@pytest.fixture(scope="module")
def car_mask(shared_data: Path) -> Image.Image:
    with Image.open(shared_data / CAR_MASK) as im:
        return im.convert("L")


@pytest.fixture(scope="module")
def car_cutout(car: Image.Image, car_mask: Image.Image) -> Image.Image:
    """The car photo with its human-annotated mask as alpha: background fully transparent."""
    rgba = car.convert("RGBA")
    rgba.putalpha(car_mask)
    return rgba


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


# --------------------------------------------------------------------------- sources and failures


def test_every_kind_of_source_decodes_to_the_same_pixels(photo_path: Path, photo: Image.Image):
    data = photo_path.read_bytes()

    class ReadOnlyStream:  # a pipe or socket: read() but no seek()
        def __init__(self, payload: bytes):
            self._inner = io.BytesIO(payload)

        def read(self, size: int = -1) -> bytes:
            return self._inner.read(size)

    with open(photo_path, "rb") as handle:
        sources = [
            str(photo_path),
            photo_path,
            data,
            bytearray(data),
            memoryview(data),
            io.BytesIO(data),
            handle,
            ReadOnlyStream(data),
        ]
        for source in sources:
            image = open_image(source)
            assert image.mode == "RGB" and image.size == (550, 832), type(source)
            assert np.array_equal(np.asarray(image), np.asarray(photo)), type(source)


def test_truncated_jpeg_is_refused_with_file_name(tmp_path: Path, photo_path: Path):
    data = photo_path.read_bytes()
    cut = tmp_path / "ccp_0001.jpg"
    cut.write_bytes(data[: len(data) // 2])

    with pytest.raises(ImageError) as info:
        open_image(cut)

    message = str(info.value)
    assert message.startswith(f"{cut}: truncated image data")
    assert isinstance(info.value.__cause__, OSError)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize(
    "file_name, make_bytes, reason",
    [
        ("empty.jpg", lambda photo: b"", "empty input"),
        ("notes.txt", lambda photo: b"SKU 1234, white shirt, front view\n" * 20, "not an image"),
        (
            "noise.png",
            lambda photo: np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
            "not an image",
        ),
        # A real photo's pixels, but in PPM: Pillow reads it, we do not accept it.
        ("photo.ppm", lambda photo: _encoded(photo, "PPM"), "not a supported format"),
        # A real PNG whose compressed pixel data has a run of zeros in the middle.
        (
            "damaged.png",
            lambda photo: _zeroed_inside_idat(_encoded(photo, "PNG")),
            "corrupt image data",
        ),
    ],
)
def test_non_image_inputs_are_refused_with_file_name(
    tmp_path: Path, photo: Image.Image, file_name, make_bytes, reason
):
    path = tmp_path / file_name
    path.write_bytes(make_bytes(photo))

    with pytest.raises(ImageError) as info:
        open_image(path)

    assert str(info.value).startswith(f"{path}: ")
    assert reason in str(info.value)
    assert not isinstance(info.value, ImageTooLarge)


def test_bytes_input_is_named_in_errors():
    with pytest.raises(ImageError, match=r"^<bytes>: empty input"):
        open_image(b"")
    with pytest.raises(ImageError, match=r"^upload-17\.jpg: not an image"):
        open_image(b"%PDF-1.7 not a photo", name="upload-17.jpg")


def test_missing_file_is_a_storage_error_naming_the_path(tmp_path: Path):
    missing = tmp_path / "nowhere" / "ccp_9999.jpg"
    with pytest.raises(StorageError, match="ccp_9999.jpg: cannot read file"):
        open_image(missing)


def _zeroed_inside_idat(png: bytes) -> bytes:
    start = png.index(b"IDAT") + 2000
    return png[:start] + bytes(300) + png[start + 300 :]


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


# --------------------------------------------------------------------------- mode conversion


def test_cmyk_jpeg_comes_back_as_rgb_close_to_original(tmp_path: Path, photo: Image.Image):
    path = tmp_path / "print.jpg"
    photo.convert("CMYK").save(path, "JPEG", quality=95)

    image = open_image(path)

    assert image.mode == "RGB"
    assert mean_abs_diff(image, photo) < 2.0
    assert "icc_profile" not in image.info


def test_cmyk_jpeg_with_unusable_icc_profile_falls_back_to_plain_conversion(
    tmp_path: Path, photo: Image.Image, caplog
):
    path = tmp_path / "print-broken-icc.jpg"
    photo.convert("CMYK").save(path, "JPEG", quality=95, icc_profile=b"not an ICC profile " * 8)

    image = open_image(path)

    assert image.mode == "RGB"
    assert mean_abs_diff(image, photo) < 2.0
    assert "icc_profile" not in image.info  # the broken CMYK profile must not travel on
    assert "ICC profile unusable" in caplog.text


def test_16bit_greyscale_png_is_scaled_not_clipped(tmp_path: Path, photo: Image.Image):
    grey = np.asarray(photo.convert("L"))
    path = tmp_path / "scan16.png"
    Image.fromarray(grey.astype(np.uint16) * 257).save(path)  # 0..255 -> 0..65535
    with Image.open(path) as raw:
        assert raw.mode == "I;16"  # what Pillow hands us for 16-bit grey PNG

    image = open_image(path)

    assert image.mode == "RGB"
    channels = np.asarray(image).astype(np.int16)
    assert np.abs(channels - grey[..., None]).max() <= 1


def test_big_endian_16bit_and_32bit_int_greyscale_are_scaled_too(photo: Image.Image):
    grey = np.asarray(photo.convert("L"))
    wide = grey.astype(np.uint16) * 257
    big_endian = Image.frombytes("I;16B", photo.size, wide.astype(">u2").tobytes())
    int32 = Image.fromarray(wide.astype(np.int32))
    assert int32.mode == "I"

    for source in (big_endian, int32):
        image = open_image(_encoded(source, "TIFF"))
        assert np.abs(np.asarray(image)[..., 0].astype(np.int16) - grey).max() <= 1, source.mode


def test_float_tiff_in_unit_range_is_scaled_to_8_bit(photo: Image.Image):
    grey = np.asarray(photo.convert("L"))
    data = _encoded(Image.fromarray(grey.astype(np.float32) / 255.0), "TIFF")

    image = open_image(data)

    assert image.mode == "RGB"
    assert np.abs(np.asarray(image)[..., 0].astype(np.int16) - grey).max() <= 1


def test_palette_png_opens_as_rgb(tmp_path: Path, photo: Image.Image):
    palette = photo.quantize(64)
    path = tmp_path / "palette.png"
    palette.save(path)

    image = open_image(path)

    assert image.mode == "RGB"
    assert np.array_equal(np.asarray(image), np.asarray(palette.convert("RGB")))


def test_palette_png_with_transparency_opens_as_rgba(tmp_path: Path, photo: Image.Image):
    palette = photo.quantize(64)
    indices = np.asarray(palette)
    clear = int(np.bincount(indices.ravel()).argmax())  # the most common colour becomes transparent
    path = tmp_path / "palette-trns.png"
    palette.save(path, transparency=clear)

    image = open_image(path)

    assert image.mode == "RGBA"
    alpha = np.asarray(image)[..., 3]
    assert np.array_equal(alpha == 0, indices == clear)
    assert set(np.unique(alpha)) == {0, 255}


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_inputs_with_alpha_channel_open_as_rgba(
    tmp_path: Path, car_cutout: Image.Image, car_mask: Image.Image, mode
):
    path = tmp_path / f"cutout-{mode}.png"
    car_cutout.convert(mode).save(path)

    image = open_image(path)

    assert image.mode == "RGBA"
    assert np.array_equal(np.asarray(image)[..., 3], np.asarray(car_mask))
    expected_rgb = car_cutout.convert(mode).convert("RGBA")
    assert np.array_equal(np.asarray(image), np.asarray(expected_rgb))


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_trns_colour_key_opens_as_rgba(tmp_path: Path, car: Image.Image, mode):
    source = car.convert(mode)
    key = source.getpixel((0, 0))
    path = tmp_path / f"colour-key-{mode}.png"
    source.save(path, transparency=key)

    image = open_image(path)

    assert image.mode == "RGBA"
    source_pixels = np.asarray(source)
    keyed = source_pixels == key if mode == "L" else (source_pixels == key).all(axis=-1)
    assert np.array_equal(np.asarray(image)[..., 3] == 0, keyed)


@pytest.mark.parametrize(
    "orientation, stored_as",
    [
        (6, Image.Transpose.ROTATE_90),  # viewer turns it 90 deg clockwise back
        (8, Image.Transpose.ROTATE_270),  # viewer turns it 90 deg counter-clockwise back
    ],
)
def test_exif_rotated_jpeg_comes_back_upright(
    tmp_path: Path, photo: Image.Image, orientation, stored_as
):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"camera-orientation-{orientation}.jpg"
    photo.transpose(stored_as).save(path, "JPEG", quality=95, exif=exif)

    image = open_image(path)

    assert image.size == photo.size  # 550 x 832, not 832 x 550
    assert mean_abs_diff(image, photo) < 3.0
    assert image.getexif().get(0x0112, 1) == 1  # applied once, not left for a viewer to redo


def test_animated_gif_uses_first_frame(tmp_path: Path, car: Image.Image):
    black = Image.new("RGB", car.size)
    path = tmp_path / "animated.gif"
    car.save(path, save_all=True, append_images=[black], duration=100, loop=0)

    image = open_image(path)

    assert image.size == car.size
    assert mean_abs_diff(image, car) < 12.0  # GIF's 256-colour palette costs a little
    assert mean_abs_diff(image, black) > 60.0


# --------------------------------------------------------------------------- pixel limit


def _png_declaring(real_png: bytes, width: int, height: int) -> bytes:
    """Rewrite a real PNG's IHDR to declare another size (valid CRC); the IDAT stays tiny."""
    assert real_png[12:16] == b"IHDR"
    header = real_png[12:16] + struct.pack(">II", width, height) + real_png[24:29]
    return real_png[:12] + header + struct.pack(">I", zlib.crc32(header)) + real_png[33:]


def test_decompression_bomb_header_is_refused_before_decoding(tmp_path: Path, shared_data: Path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_declaring((shared_data / CAR).read_bytes(), 20_000, 20_000))
    assert path.stat().st_size < 1_000_000  # 400 MP declared in well under a megabyte

    start = time.perf_counter()
    with pytest.raises(ImageTooLarge) as info:
        open_image(path)
    elapsed = time.perf_counter() - start

    # Had decoding started, the car's 480x360 IDAT would have failed as truncated (ImageError).
    message = str(info.value)
    assert message.startswith(f"{path}: 20000x20000 is 400.0 MP")
    assert "limit of 100 MP" in message
    assert "CLEARBG_MAX_PIXELS" in message and "max_pixels=" in message
    assert elapsed < 1.0


def test_image_over_max_pixels_argument_is_refused(photo_path: Path):
    with pytest.raises(ImageTooLarge, match=r"550x832 is 0\.5 MP, over the limit"):
        open_image(photo_path, max_pixels=550 * 832 - 1)
    assert open_image(photo_path, max_pixels=550 * 832).size == (550, 832)


def test_env_var_sets_the_pixel_limit(monkeypatch, photo_path: Path):
    assert max_pixels() == DEFAULT_MAX_PIXELS == 100_000_000
    monkeypatch.setenv("CLEARBG_MAX_PIXELS", "400_000")

    assert max_pixels() == 400_000
    with pytest.raises(ImageTooLarge, match="400000 pixels"):
        open_image(photo_path)
    assert open_image(photo_path, max_pixels=1_000_000).size == (550, 832)  # the argument wins


@pytest.mark.parametrize("value", ["lots", "-5", "0", "1e8"])
def test_malformed_env_var_is_reported(monkeypatch, photo_path: Path, value):
    monkeypatch.setenv("CLEARBG_MAX_PIXELS", value)
    with pytest.raises(ClearbgError, match="CLEARBG_MAX_PIXELS"):
        open_image(photo_path)


def test_pillow_global_limit_neither_blocks_nor_warns(monkeypatch, shared_data: Path):
    # Shrink Pillow's own guard far below the car (172,800 px > 2 x 1000 would be
    # DecompressionBombError); our limit (100 MP) is the one that must apply.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = open_image(shared_data / CAR)

    assert image.size == (480, 360)
    assert Image.MAX_IMAGE_PIXELS == 1000  # Pillow's setting is put back afterwards


# --------------------------------------------------------------------------- modern formats


@pytest.mark.parametrize("fmt", ["WEBP", "AVIF", "HEIF"])
def test_modern_formats_decode(car: Image.Image, fmt):
    try:
        data = _encoded(car, fmt, quality=90)
    except (KeyError, OSError, ValueError) as err:
        if fmt == "HEIF":
            pytest.skip(f"pillow-heif cannot encode HEIF here: {err}")
        raise

    image = open_image(data, name=f"car.{fmt.lower()}")

    assert image.mode == "RGB" and image.size == car.size
    assert mean_abs_diff(image, car) < 4.0


def test_webp_with_alpha_decodes_as_rgba(car_cutout: Image.Image, car_mask: Image.Image):
    image = open_image(_encoded(car_cutout, "WEBP", quality=90))

    assert image.mode == "RGBA"
    assert np.abs(pixels(image.getchannel("A")) - pixels(car_mask)).mean() < 2.0


# --------------------------------------------------------------------------- flatten and encode


def test_flatten_blends_by_alpha_onto_the_background(
    car_cutout: Image.Image, car: Image.Image, car_mask: Image.Image
):
    green = (0, 255, 0)
    flat = flatten(car_cutout, green)

    assert flat.mode == "RGB"
    mask = np.asarray(car_mask)
    assert (np.asarray(flat)[mask == 0] == green).all()
    assert np.array_equal(np.asarray(flat)[mask == 255], np.asarray(car)[mask == 255])
    half_red = flatten(Image.new("RGBA", (1, 1), (255, 0, 0, 128)))
    assert half_red.getpixel((0, 0)) == (255, 127, 127)


def test_flatten_passes_rgb_through_unchanged(car: Image.Image):
    assert flatten(car) is car


def test_png_encoding_keeps_alpha(car_cutout: Image.Image):
    decoded = Image.open(io.BytesIO(encode_image(car_cutout, "PNG")))

    assert decoded.mode == "RGBA"
    assert np.array_equal(np.asarray(decoded), np.asarray(car_cutout))


def test_jpeg_encoding_flattens_alpha_onto_white(
    car_cutout: Image.Image, car: Image.Image, car_mask: Image.Image
):
    decoded = Image.open(io.BytesIO(encode_image(car_cutout, "jpg", quality=95)))

    assert decoded.mode == "RGB"
    mask = np.asarray(car_mask)
    assert np.asarray(decoded)[mask == 0].mean() > 250  # transparent -> white, not black
    foreground = np.abs(pixels(decoded) - pixels(car))[mask == 255]
    assert foreground.mean() < 4.0


def test_webp_encoding_keeps_alpha(car_cutout: Image.Image, car_mask: Image.Image):
    decoded = Image.open(io.BytesIO(encode_image(car_cutout, "WebP", quality=90)))

    assert decoded.mode == "RGBA"
    assert np.abs(pixels(decoded.getchannel("A")) - pixels(car_mask)).mean() < 2.0


@pytest.mark.parametrize(
    "fmt, mode, tolerance", [("png", "L", 0.0), ("jpg", "L", 2.0), ("webp", "RGB", 3.0)]
)
def test_greyscale_mask_round_trips_as_8_bit(car_mask: Image.Image, fmt, mode, tolerance):
    decoded = Image.open(io.BytesIO(encode_image(car_mask, fmt)))

    assert decoded.mode == mode
    grey = decoded.convert("L") if mode == "RGB" else decoded
    assert mean_abs_diff(grey, car_mask) <= tolerance


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_encoding_keeps_the_rgb_icc_profile(car: Image.Image, fmt):
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    tagged = car.copy()
    tagged.info["icc_profile"] = profile

    assert Image.open(io.BytesIO(encode_image(tagged, fmt))).info.get("icc_profile") == profile
    # convert("L") copies info; an RGB profile in a grey file would be wrong, so it is dropped.
    assert "icc_profile" not in Image.open(io.BytesIO(encode_image(tagged.convert("L"), fmt))).info


@pytest.mark.parametrize("fmt", ["gif", "bmp", "tiff", ""])
def test_unknown_output_format_is_rejected(car: Image.Image, fmt):
    with pytest.raises(ValueError, match=r"unsupported output format .*jpeg, jpg, png, webp"):
        encode_image(car, fmt)


@pytest.mark.parametrize("fmt, largest", [("webp", 16383), ("jpg", 65500)])
def test_results_larger_than_the_format_stores_are_refused_naming_it(fmt, largest):
    image = Image.new("RGB", (1, largest), "white")
    assert open_image(encode_image(image, fmt)).size == (1, largest)
    with pytest.raises(OutputTooLarge, match=rf"a.png: the 1x{largest + 1} result is too large .* at most {largest} px"):
        check_encodable((1, largest + 1), fmt, "a.png")
    with pytest.raises(OutputTooLarge, match="write PNG instead"):
        encode_image(Image.new("RGB", (largest + 1, 1)), fmt)
    check_encodable((70000, 1), "png")  # PNG stores 31-bit sizes
    assert open_image(encode_image(Image.new("L", (70000, 1)), "png")).size == (70000, 1)


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_is_complete_spots_empty_and_cut_short_outputs(car_cutout: Image.Image, fmt):
    data = encode_image(car_cutout, fmt)
    assert is_complete(data, fmt)
    for bad in (b"", data[: len(data) // 2], data[:-1], data[:64]):
        assert not is_complete(bad, fmt)
    assert not is_complete(encode_image(car_cutout, "png" if fmt != "png" else "jpg"), fmt)  # another format


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_replaces_target_and_leaves_no_temp_file(tmp_path: Path, car: Image.Image):
    target = tmp_path / "out" / "nested" / "car.png"  # parents do not exist yet
    atomic_write_bytes(target, b"old")
    new = encode_image(car, "png")

    atomic_write_bytes(target, new)

    assert target.read_bytes() == new
    assert sorted(p.name for p in target.parent.iterdir()) == ["car.png"]
    assert target.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0o600


def test_atomic_write_under_a_file_is_a_storage_error(tmp_path: Path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_bytes(b"x")

    with pytest.raises(StorageError, match="not-a-dir"):
        atomic_write_bytes(blocker / "car.png", b"data")


_FULL_DISK_CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    from clearbg.errors import StorageError
    from clearbg.imageio import atomic_write_bytes

    # Files may not grow past 64 KiB: writes beyond it fail with EFBIG, like a full disk.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        atomic_write_bytes(sys.argv[1], open(sys.argv[2], "rb").read())
    except StorageError as err:
        print("StorageError:", err)
        sys.exit(0)
    print("no error")
    sys.exit(1)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_failed_write_keeps_old_target_and_removes_temp_file(tmp_path: Path, photo_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    target = out / "ccp_0001.png"
    target.write_bytes(b"previous good output")
    payload = tmp_path / "payload.png"  # a real encoded photo, ~700 KB > the 64 KiB limit
    payload.write_bytes(encode_image(open_image(photo_path), "png"))

    child = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_CHILD, str(target), str(payload)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert child.returncode == 0, child.stdout + child.stderr
    assert child.stdout.startswith(f"StorageError: {target}: write failed")
    assert "File too large" in child.stdout
    assert target.read_bytes() == b"previous good output"
    assert [p.name for p in out.iterdir()] == ["ccp_0001.png"]


@pytest.mark.parametrize(
    "suffix, magic", [(".png", b"\x89PNG"), (".JPG", b"\xff\xd8\xff"), (".webp", b"RIFF")]
)
def test_save_image_picks_format_from_suffix(tmp_path: Path, car: Image.Image, suffix, magic):
    target = tmp_path / f"car{suffix}"

    save_image(car, target)

    assert target.read_bytes().startswith(magic)
    assert open_image(target).size == car.size


def test_save_image_without_suffix_or_format_is_rejected(tmp_path: Path, car: Image.Image):
    with pytest.raises(ValueError, match="pass fmt="):
        save_image(car, tmp_path / "car")
    save_image(car, tmp_path / "car", "png")
    assert (tmp_path / "car").read_bytes().startswith(b"\x89PNG")


def test_a_limit_of_one_pixel_is_valid_and_zero_is_not(monkeypatch):
    one = Image.new("RGB", (1, 1))
    buffer = io.BytesIO()
    one.save(buffer, "PNG")
    assert open_image(buffer.getvalue(), max_pixels=1).size == (1, 1)
    with pytest.raises(ValueError, match="^max_pixels must be a positive pixel count, got 0$"):
        open_image(buffer.getvalue(), max_pixels=0)
    monkeypatch.setenv("CLEARBG_MAX_PIXELS", "1")
    assert max_pixels() == 1
    monkeypatch.setenv("CLEARBG_MAX_PIXELS", "0")
    with pytest.raises(ClearbgError, match="must be a positive pixel count"):
        max_pixels()


def test_the_size_in_the_refusal_is_in_millions_of_pixels():
    # 1361 x 2241 = 3 050 001 pixels: 3.1 MP (a divisor a hair off 1e6 would print 3.0).
    buffer = io.BytesIO()
    Image.new("1", (1361, 2241)).save(buffer, "PNG")
    with pytest.raises(ImageTooLarge, match=r"1361x2241 is 3\.1 MP, over the limit"):
        open_image(buffer.getvalue(), max_pixels=1_000_000)


def test_an_unknown_format_lists_what_is_supported():
    from clearbg.imageio import DECODE_FORMATS

    with pytest.raises(ImageError) as info:
        open_image(b"definitely not an image", name="note.txt")
    assert str(info.value) == f"note.txt: not an image, or not a supported format (supported: {', '.join(DECODE_FORMATS)})"


def test_the_temporary_file_is_made_beside_the_target_not_in_the_working_folder(tmp_path, monkeypatch):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    atomic_write_bytes(tmp_path / "out" / "cutout.png", b"new")
    assert (tmp_path / "out" / "cutout.png").read_bytes() == b"new"
    assert list(elsewhere.iterdir()) == [] and [p.name for p in (tmp_path / "out").iterdir()] == ["cutout.png"]


def test_write_errors_say_what_failed_in_words_and_leave_no_temporary_file(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(StorageError) as info:
        atomic_write_bytes(tmp_path / "file" / "cutout.png", b"new")  # its folder is a file
    assert str(info.value).endswith(f"cannot create a file in {tmp_path / 'file'} (File exists)")
    (tmp_path / "taken").mkdir()  # the target is a folder: the final rename fails
    with pytest.raises(StorageError) as info:
        atomic_write_bytes(tmp_path / "taken", b"new")
    assert str(info.value) == f"{tmp_path / 'taken'}: write failed, target left unchanged (Is a directory)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "taken"]


def test_the_temporary_file_is_on_the_targets_filesystem(tmp_path, monkeypatch):
    # A temp file made anywhere else could not be renamed over the target (EXDEV).
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem to work from")
    elsewhere = Path(tempfile.mkdtemp(dir=other))
    try:
        monkeypatch.chdir(elsewhere)
        atomic_write_bytes(tmp_path / "cutout.png", b"new")
        assert (tmp_path / "cutout.png").read_bytes() == b"new"
    finally:
        shutil.rmtree(elsewhere)
