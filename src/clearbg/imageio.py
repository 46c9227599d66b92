"""Safe image decode and encode: the one place clearbg turns bytes into pixels and back.

``open_image`` accepts whatever users upload (JPEG from cameras, CMYK JPEG from print
workflows, 16-bit PNG, palette PNG, WebP, AVIF, HEIC from phones) and always returns a fully
loaded, upright ``RGB`` or ``RGBA`` image, or raises one of our errors naming the file and the
reason. It checks the pixel count from the header before any pixel data is decoded, so a
small file that declares a huge canvas (a decompression bomb) costs nothing.

``encode_image`` / ``save_image`` write PNG, JPEG or WebP, and ``atomic_write_bytes`` makes sure
a crash or a full disk never leaves a half-written output where a good one was.

Example::

    image = open_image("shoe.heic")              # RGB, upright
    save_image(image, "out/shoe.webp", quality=90)
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from clearbg.errors import ClearbgError, ImageError, ImageTooLarge, OutputTooLarge, StorageError, printable

try:
    from PIL import ImageCms
except ImportError:  # Pillow built without littlecms: CMYK falls back to the plain formula
    ImageCms = None

try:
    from pillow_heif import register_heif_opener
except ImportError:  # without pillow-heif, HEIC/HEIF is simply an unsupported format
    HEIF_SUPPORTED = False
else:
    register_heif_opener()
    HEIF_SUPPORTED = True

_log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 100_000_000
"""Largest width * height ``open_image`` decodes unless told otherwise (100 MP, ~400 MB as RGBA)."""

MAX_PIXELS_ENV = "CLEARBG_MAX_PIXELS"

# Pillow formats open_image decodes (JPEG covers multi-picture MPO files from cameras). The
# rest of Pillow's ~40 readers (EPS, which shells out to Ghostscript, PSD, ICO, ...) are attack
# surface we do not need, so they are off. Image.init() registers every reader first, so a
# format this Pillow lacks (HEIF without pillow-heif) drops out here instead of failing later.
Image.init()
DECODE_FORMATS = tuple(
    f for f in ("JPEG", "PNG", "WEBP", "AVIF", "HEIF", "GIF", "BMP", "TIFF") if f in Image.OPEN
)

# Output formats: user spelling -> Pillow format name.
_ENCODE_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")

# Modes each encoder stores as they are; anything else is converted first.
PNG_COMPRESS_LEVEL = 3
_PNG_MODES = ("1", "L", "LA", "P", "RGB", "RGBA")
_JPEG_MODES = ("L", "RGB")
_WEBP_MODES = ("RGB", "RGBA")

# Largest side each encoder writes: libwebp 16383, libjpeg 65500 (it prints a warning and Pillow
# raises a bare OSError above it); PNG stores 31-bit sizes.
MAX_SIDE = {"PNG": 2**31 - 1, "JPEG": 65500, "WEBP": 16383}


# --------------------------------------------------------------------------- pixel limit


def max_pixels() -> int:
    """The pixel limit in force: ``$CLEARBG_MAX_PIXELS`` if set, else ``DEFAULT_MAX_PIXELS``.

    Returns:
        The largest width * height that ``open_image`` decodes by default.

    Raises:
        ClearbgError: ``CLEARBG_MAX_PIXELS`` is set but is not a positive integer.
    """
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)  # accepts 200_000_000 too
    except ValueError as err:
        raise ClearbgError(
            f"{MAX_PIXELS_ENV}={raw!r} is not an integer; set it to a pixel count such as 200000000"
        ) from err
    if value < 1:
        raise ClearbgError(
            f"{MAX_PIXELS_ENV}={raw!r} must be a positive pixel count, such as 200000000"
        )
    return value


class _PillowGuardOff:
    """Turns Pillow's own decompression-bomb guard off while ``open_image`` decodes.

    Pillow reads its limit from the module global ``Image.MAX_IMAGE_PIXELS`` (it warns above it
    and raises above twice it). Left on, it would refuse images that a caller allowed with a
    larger ``max_pixels`` and print bare warnings for ones we refuse anyway. We check the header
    size ourselves at the point where Pillow would, so its guard adds nothing. The global is
    process-wide and a per-call value cannot be set safely across threads, so concurrent
    decodes share one "off" window: the first one in saves the value, the last one out puts
    it back. Plain ``Image.open`` calls elsewhere in the process run unguarded meanwhile.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved: int | None = None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._saved = Image.MAX_IMAGE_PIXELS
                Image.MAX_IMAGE_PIXELS = None
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    Image.MAX_IMAGE_PIXELS = self._saved


_pillow_guard_off = _PillowGuardOff()


def _too_large(label: str, width: int, height: int, limit: int) -> ImageTooLarge:
    return ImageTooLarge(
        f"{label}: {width}x{height} is {width * height / 1e6:.1f} MP, over the limit of "
        f"{limit / 1e6:g} MP ({limit} pixels). If the image is trusted, raise the limit with "
        f"{MAX_PIXELS_ENV}=<pixels> or open_image(..., max_pixels=<pixels>)"
    )


# --------------------------------------------------------------------------- decode


def open_image(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO,
    *,
    max_pixels: int | None = None,
    name: str | None = None,
) -> Image.Image:
    """Decode an image safely into a loaded, upright RGB or RGBA image.

    The result is ``RGBA`` when the input carries transparency (RGBA, LA, PA, or P/L/RGB with
    a tRNS colour) and ``RGB`` otherwise. CMYK is converted to sRGB (through its embedded ICC
    profile when there is a usable one), 16-bit greyscale is scaled to 8 bits (``v >> 8``, not
    clipped), float images are scaled into 0..255, and the EXIF orientation is applied. For
    animated images the first frame is returned.

    Args:
        source: a local path, the encoded bytes, or a binary file object.
        max_pixels: largest width * height to decode; default ``max_pixels()`` (the
            ``CLEARBG_MAX_PIXELS`` environment variable, else 100 MP).
        name: what to call the input in error messages; default the path, ``"<bytes>"`` for
            bytes, or the file object's ``name``.

    Returns:
        A new, fully decoded ``PIL.Image.Image`` in mode ``"RGB"`` or ``"RGBA"``, detached from
        the source (no open file is kept).

    Raises:
        ImageTooLarge: the header declares more pixels than the limit; nothing was decoded.
        ImageError: empty, truncated, corrupt, not an image, or a format we do not decode.
        StorageError: a path that cannot be read (missing, a directory, no permission).
        ClearbgError: ``CLEARBG_MAX_PIXELS`` is malformed.
        ValueError: ``max_pixels`` is not positive.
        TypeError: ``source`` is none of the kinds above.

    Example:
        >>> image = open_image(Path("data/fashion/images/ccp_0001.jpg"))  # doctest: +SKIP
        >>> image.mode, image.size  # doctest: +SKIP
        ('RGB', (550, 832))
    """
    limit = _resolve_limit(max_pixels)
    with _source_stream(source, name) as (stream, label):
        if not stream.read(1):
            raise ImageError(f"{label}: empty input (0 bytes)")
        stream.seek(0)
        image = _decode(stream, label, limit)
    return _to_rgb_or_rgba(image, label)


def _resolve_limit(max_pixels_arg: int | None) -> int:
    if max_pixels_arg is None:
        return max_pixels()
    if max_pixels_arg < 1:
        raise ValueError(f"max_pixels must be a positive pixel count, got {max_pixels_arg}")
    return max_pixels_arg


@contextlib.contextmanager
def _source_stream(source, name: str | None) -> Iterator[tuple[BinaryIO, str]]:
    """Yield a seekable binary stream over ``source`` and the label to use in messages."""
    if isinstance(source, (str, os.PathLike)):
        label = name or os.fspath(source)
        try:
            stream = open(source, "rb")  # noqa: SIM115 - closed below, after decoding
        except OSError as err:
            raise StorageError(f"{label}: cannot read file ({err.strerror or err})") from err
        with stream:
            yield stream, label
    elif isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(source), name or "<bytes>"
    elif hasattr(source, "read"):
        label = name or getattr(source, "name", None)
        label = label if isinstance(label, str) else "<stream>"
        # Pillow needs to seek; read a pipe or socket into memory first.
        seekable = getattr(source, "seekable", None)
        if seekable is None or not seekable():
            source = io.BytesIO(source.read())
        source.seek(0)
        yield source, label
    else:
        raise TypeError(
            f"open_image() takes a path, bytes or a binary file object, not {type(source).__name__}"
        )


# What Pillow's readers raise on malformed data: OSError for truncation, ValueError from
# pillow-heif, SyntaxError/struct errors from header parsers.
_PILLOW_ERRORS = (OSError, SyntaxError, EOFError, ValueError, TypeError, IndexError, KeyError)


def _decode(stream: BinaryIO, label: str, limit: int) -> Image.Image:
    """Open, size-check, load and transpose one image; every failure becomes one of our errors."""
    try:
        with _pillow_guard_off():
            with Image.open(stream, formats=DECODE_FORMATS) as lazy:
                # Only the header has been parsed so far; refuse a bomb before any pixel is decoded.
                width, height = lazy.size
                if width * height > limit:
                    raise _too_large(label, width, height, limit)
                lazy.load()  # the first frame of an animation: Image.open leaves us on frame 0
                # exif_transpose always returns a new image, so nothing refers to the stream after.
                return ImageOps.exif_transpose(lazy)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Unreachable while our guard holds, but another thread may set Pillow's global.
        raise ImageTooLarge(
            f"{label}: {err}. If the image is trusted, raise the limit with "
            f"{MAX_PIXELS_ENV}=<pixels> or open_image(..., max_pixels=<pixels>)"
        ) from err
    except UnidentifiedImageError as err:
        raise ImageError(
            f"{label}: not an image, or not a supported format "
            f"(supported: {', '.join(DECODE_FORMATS)})"
        ) from err
    except _PILLOW_ERRORS as err:
        raise ImageError(f"{label}: {_describe_decode_error(err)}") from err


def _describe_decode_error(err: BaseException) -> str:
    detail = str(err).strip() or type(err).__name__
    lowered = detail.lower()
    if isinstance(err, EOFError) or "truncated" in lowered or "end of file" in lowered:
        return f"truncated image data ({detail})"
    return f"corrupt image data ({detail})"


# --------------------------------------------------------------------------- mode conversion


def normalise(image: Image.Image, name: str = "<image>") -> Image.Image:
    """An already-open PIL image brought to what ``open_image`` returns: upright RGB or RGBA.

    Raises:
        ImageError: the image cannot be loaded or has a mode we cannot convert.
    """
    try:
        image.load()
        upright = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, EOFError, ValueError) as err:
        raise ImageError(f"{name}: {_describe_decode_error(err)}") from err
    return _to_rgb_or_rgba(upright, name)


def _to_rgb_or_rgba(image: Image.Image, label: str) -> Image.Image:
    """Bring any decoded mode to RGB, or RGBA when the image carries transparency."""
    mode = image.mode
    if mode == "RGBA" or (mode == "RGB" and "transparency" not in image.info):
        return image
    if mode == "CMYK":
        return _cmyk_to_rgb(image, label)
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        # Pillow's convert("L") clips at 255, which turns a 16-bit photo almost white.
        data = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        return Image.fromarray((data >> 8).astype(np.uint8), mode="L").convert("RGB")
    if mode == "F":
        return Image.fromarray(_float_to_uint8(np.asarray(image)), mode="L").convert("RGB")
    try:
        # Pillow applies tRNS itself when converting P, L and RGB to RGBA.
        return image.convert("RGBA" if image.has_transparency_data else "RGB")
    except ValueError as err:
        raise ImageError(f"{label}: unsupported pixel mode {mode!r}") from err


def _float_to_uint8(data: np.ndarray) -> np.ndarray:
    """Scale float pixels to 0..255: [0, 1] data x255, [0, 255] data as is, anything else min-max.

    NaN and infinities become 0.
    """
    finite = np.isfinite(data)
    values = data[finite]
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if lo >= 0.0 and hi <= 1.0:
        scaled = data * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        scaled = data
    else:
        scaled = (data - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(data)
    scaled = np.where(finite, scaled, 0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _cmyk_to_rgb(image: Image.Image, label: str) -> Image.Image:
    """CMYK -> sRGB through the embedded ICC profile, else Pillow's plain formula.

    The profile is what the printer's colours mean; without it (or if littlecms rejects it)
    the naive formula is still a fair picture, so a bad profile must not cost the image.
    """
    icc = image.info.get("icc_profile")
    if icc and ImageCms is not None:
        try:
            rgb = ImageCms.profileToProfile(
                image,
                ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                ImageCms.createProfile("sRGB"),
                outputMode="RGB",
            )
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as err:
            _log.warning(
                "%s: embedded CMYK ICC profile unusable (%s); converting without it",
                printable(label), printable(str(err)),
            )
        else:
            rgb.info.pop("icc_profile", None)  # the pixels are sRGB now, not the CMYK profile's
            return rgb
    rgb = image.convert("RGB")
    rgb.info.pop("icc_profile", None)  # a CMYK profile must never be written into an RGB file
    return rgb


def flatten(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Alpha-composite an image onto a solid colour and return it as RGB.

    Args:
        image: usually RGBA; any mode with transparency (LA, PA, P with tRNS) works. An RGB
            image is returned unchanged (the same object); other modes are converted to RGB.
        background: the ``(r, g, b)`` colour that shows through transparent pixels.

    Returns:
        An ``RGB`` image: ``a * colour + (1 - a) * background`` per pixel.

    Raises:
        ValueError: ``background`` is not three values in 0..255.

    Example:
        >>> flatten(Image.new("RGBA", (1, 1), (255, 0, 0, 128))).getpixel((0, 0))
        (255, 127, 127)
    """
    if len(background) != 3 or not all(0 <= int(c) <= 255 for c in background):
        raise ValueError(
            f"background must be an (r, g, b) colour with values 0..255, got {background!r}"
        )
    if image.mode == "RGB":
        return image
    if not image.has_transparency_data:
        return image.convert("RGB")
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    flat = Image.new("RGB", rgba.size, tuple(int(c) for c in background))
    # paste() with the alpha band as mask is exactly "over" onto an opaque background.
    flat.paste(rgba, mask=rgba.getchannel("A"))
    if "icc_profile" in image.info:
        flat.info["icc_profile"] = image.info["icc_profile"]
    return flat


# --------------------------------------------------------------------------- encode and write


def _pil_format(fmt: str) -> str:
    pil_format = _ENCODE_FORMATS.get(fmt.lower().lstrip("."))
    if pil_format is None:
        raise ValueError(
            f"unsupported output format {fmt!r}; use one of: {', '.join(sorted(_ENCODE_FORMATS))}"
        )
    return pil_format


def check_encodable(size: tuple[int, int], fmt: str, name: str = "<image>") -> None:
    """Refuse, before any work, a result of ``size`` that ``fmt`` cannot store (``MAX_SIDE``).

    Raises:
        OutputTooLarge: a side is over the format's limit; the message names ``name``.
        ValueError: unknown ``fmt``.

    Example:
        >>> check_encodable((20000, 8), "webp", "tall.png")
        Traceback (most recent call last):
        clearbg.errors.OutputTooLarge: tall.png: the 20000x8 result is too large for WEBP, which stores at most 16383 px a side; write PNG instead, or make the image smaller
    """
    pil_format = _pil_format(fmt)
    limit = MAX_SIDE[pil_format]
    if max(size) > limit:
        raise OutputTooLarge(
            f"{name}: the {size[0]}x{size[1]} result is too large for {pil_format}, which stores at most "
            f"{limit} px a side; write PNG instead, or make the image smaller"
        )


def is_complete(data: bytes, fmt: str) -> bool:
    """Cheap check that ``data`` is a whole file of format ``fmt`` as ``encode_image`` writes it.

    The header must parse with a non-zero size and the end must be there (PNG's IEND chunk,
    JPEG's EOI marker, WebP's RIFF length equal to the file's), so an empty or cut-short file
    is caught without decoding any pixels.

    Example:
        >>> data = encode_image(Image.new("L", (4, 4)), "png")
        >>> is_complete(data, "png"), is_complete(data[:-1], "png"), is_complete(b"", "png")
        (True, False, False)
    """
    pil_format = _pil_format(fmt)
    if pil_format == "PNG":
        whole = data.endswith(b"IEND\xaeB`\x82")
    elif pil_format == "JPEG":
        whole = data.endswith(b"\xff\xd9")
    else:
        whole = data[:4] == b"RIFF" and int.from_bytes(data[4:8], "little") + 8 == len(data)
    if not whole:
        return False
    try:
        with _pillow_guard_off(), Image.open(io.BytesIO(data), formats=[pil_format]) as image:
            return image.width > 0 and image.height > 0
    except _PILLOW_ERRORS:
        return False


def encode_image(image: Image.Image, fmt: str, *, quality: int = 95) -> bytes:
    """Encode an image as PNG, JPEG or WebP bytes.

    PNG stores RGB, RGBA, L (8-bit greyscale masks), LA, P and 1 as they are. JPEG cannot hold
    alpha, so an image with transparency is flattened onto white first; L stays greyscale.
    WebP keeps alpha (lossy, at ``quality``); greyscale is stored as RGB because WebP has no
    grey mode. An embedded ICC profile of an RGB/RGBA image is written along, so colours stay
    right.

    Args:
        image: the image to encode.
        fmt: ``"png"``, ``"jpg"``/``"jpeg"`` or ``"webp"`` (case-insensitive, leading dot allowed).
        quality: 1..100, for JPEG and WebP; ignored for PNG (lossless, zlib level 3).

    Returns:
        The encoded file's bytes.

    Raises:
        OutputTooLarge: the image is larger than the format can store (``check_encodable``).
        ValueError: unknown ``fmt``, or ``quality`` outside 1..100.

    Example:
        >>> encode_image(Image.new("L", (4, 4)), "png")[:8]
        b'\\x89PNG\\r\\n\\x1a\\n'
    """
    pil_format = _pil_format(fmt)
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    check_encodable(image.size, fmt)
    transparent = image.has_transparency_data
    # Pillow's encoders disagree on whether info["icc_profile"] is written by default; say it.
    # Only for RGB input: a profile carried over by convert("L") describes colours L no longer has.
    icc = image.info.get("icc_profile") if image.mode in ("RGB", "RGBA") else None
    if pil_format == "PNG":
        # zlib level 3, not Pillow's 6: on a 550x830 cutout 42 ms instead of 108 ms (more than
        # the network itself) for a file 10 % larger.
        options: dict = {"compress_level": PNG_COMPRESS_LEVEL}
        if image.mode not in _PNG_MODES:
            image = image.convert("RGBA" if transparent else "RGB")
    elif pil_format == "JPEG":
        options = {"quality": quality}
        if image.mode not in _JPEG_MODES:
            image = flatten(image) if transparent else image.convert("RGB")
    else:
        options = {"quality": quality, "lossless": False}
        if image.mode not in _WEBP_MODES:
            image = image.convert("RGBA" if transparent else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, pil_format, icc_profile=icc, **options)
    return buffer.getvalue()


TEMP_PREFIX = ".clearbg-tmp-"
"""Start of every temp file clearbg writes beside an output: hidden (folder walks skip it) and
distinctive, so clean-up after a crash can never match a user's own file."""

_TEMP_NAME = re.compile(r"^\.clearbg-tmp-[0-9a-f]{32}-")

# Temp names must stay under NAME_MAX (255 bytes on Linux) however long the target's name is.
_TEMP_NAME_BYTES = 255 - len(TEMP_PREFIX) - 33


def temp_name(name: str) -> str:
    """A fresh temp file name for an output called ``name``: ``.clearbg-tmp-<uuid4 hex>-<name>``.

    The target's name is kept (cut to fit NAME_MAX) only so a leftover says what it was for.

    Example:
        >>> temp_name("a.png")  # doctest: +SKIP
        '.clearbg-tmp-3f2b...e1-a.png'
    """
    tail = os.fsencode(name)[:_TEMP_NAME_BYTES]
    return f"{TEMP_PREFIX}{uuid.uuid4().hex}-{os.fsdecode(tail)}"


def is_temp_name(name: str) -> bool:
    """True only for names made by ``temp_name``: what a killed write may leave behind."""
    return bool(_TEMP_NAME.match(name))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    The bytes go to a temporary file beside the target (same directory, so the final rename
    cannot cross filesystems; named by ``temp_name``), are flushed and fsynced, then renamed over
    the target with ``os.replace``. Missing parent directories are created. The new file keeps
    the mode of the file it replaces, else gets 0o644.

    Args:
        path: the file to create or replace.
        data: its new content.

    Raises:
        StorageError: the directory or file could not be written (disk full, file size limit,
            permission, ...). The temporary file is removed and an existing target is untouched.

    Example:
        >>> atomic_write_bytes("out/cutout.png", encode_image(image, "png"))  # doctest: +SKIP
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_name = str(path.parent / temp_name(path.name))
        fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as err:
        raise StorageError(
            f"{path}: cannot create a file in {path.parent} ({err.strerror or err})"
        ) from err
    try:
        with open(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException as err:
        # Whatever stopped us (ENOSPC, EFBIG, Ctrl-C), the half-written temp file must go.
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(err, OSError):
            raise StorageError(
                f"{path}: write failed, target left unchanged ({err.strerror or err})"
            ) from err
        raise


def save_image(
    image: Image.Image,
    path: str | os.PathLike[str],
    fmt: str | None = None,
    *,
    quality: int = 95,
) -> None:
    """Encode an image and write it atomically (see ``encode_image`` and ``atomic_write_bytes``).

    Args:
        image: the image to save.
        path: the target file; parent directories are created.
        fmt: ``"png"``, ``"jpg"``/``"jpeg"`` or ``"webp"``; default: the suffix of ``path``.
        quality: 1..100, for JPEG and WebP.

    Raises:
        ValueError: no ``fmt`` and no usable suffix, or an unsupported format.
        StorageError: the file could not be written; an existing file is left unchanged.

    Example:
        >>> save_image(open_image("in.heic"), "out/in.jpg", quality=90)  # doctest: +SKIP
    """
    if fmt is None:
        fmt = Path(path).suffix
        if not fmt:
            raise ValueError(
                f"cannot tell the output format of {os.fspath(path)!r}: pass fmt= or use a "
                f"suffix among {', '.join('.' + f for f in sorted(_ENCODE_FORMATS))}"
            )
    atomic_write_bytes(path, encode_image(image, fmt, quality=quality))
