"""One place that knows where images live: local folders and remote URIs (s3:// and friends).

Everything else in clearbg passes plain strings around (``"photos/"``, ``"s3://shop/raw/"``)
and calls the functions here. Remote access goes through fsspec; for S3 that is s3fs, and any
S3-compatible endpoint (MinIO, moto, Ceph, R2) is picked up from the environment:

    CLEARBG_S3_ENDPOINT_URL   endpoint for s3:// (falls back to AWS_ENDPOINT_URL)
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...   credentials, as botocore reads them

Listing streams: folders are walked one directory level at a time, in sorted order, so a
batch over a large bucket starts before the whole bucket has been listed.

Example:
    >>> from clearbg import storage
    >>> for ref in storage.iter_images(["s3://shop/raw/"]):  # doctest: +SKIP
    ...     data = storage.read_bytes(ref.uri)
    ...     storage.write_bytes(storage.join("s3://shop/cut/", ref.relpath), data)
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import fsspec

from clearbg.errors import StorageError

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageRef",
    "exists",
    "get_filesystem",
    "is_folder",
    "is_remote",
    "iter_images",
    "join",
    "location",
    "read_bytes",
    "s3_options",
    "write_bytes",
]

#: Suffixes (lower case) picked up when walking a folder. A file named explicitly is used
#: whatever its suffix; the decoder reports it if it is not an image.
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif", ".avif"}
)

# "proto://..." where proto is a URL scheme; fsspec chains ("simplecache::s3://") count too.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*(?:::[A-Za-z][A-Za-z0-9+.\-]*)*)://")
_S3_PROTOCOLS = frozenset({"s3", "s3a"})


OnError = Callable[[str, StorageError], None]
"""``on_error(uri, error)``: told about one thing a walk could not list or follow."""


@dataclass(frozen=True)
class ImageRef:
    """An image found by :func:`iter_images`.

    Attributes:
        uri: Where to read it: a local path or a full URI (``s3://bucket/key``).
        relpath: Path relative to the input it was found under, with forward slashes
            (``"shoes/ccp_0001.jpg"``); just the file name for a file given directly.
            Batch jobs mirror it under the output folder.
    """

    uri: str
    relpath: str

    @property
    def stem(self) -> str:
        """File name without its suffix: ``"shoes/ccp_0001.jpg"`` -> ``"ccp_0001"``."""
        name = self.relpath.rsplit("/", 1)[-1]
        stem, dot, _ = name.rpartition(".")
        # ".bashrc"-style names and names without a dot keep their whole name.
        return stem if dot and stem else name


def is_remote(uri: str) -> bool:
    """True for ``s3://...`` and any other ``proto://`` URI except ``file://``.

    Example:
        >>> is_remote("s3://bucket/key.jpg"), is_remote("file:///tmp/a.jpg"), is_remote("a.jpg")
        (True, False, False)
    """
    match = _SCHEME.match(uri)
    return bool(match) and match.group(1).lower() != "file"


# Where s3:// goes, in order of preference (unset: real AWS).
ENDPOINT_VARIABLES = ("CLEARBG_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL")


def s3_options() -> dict:
    """Storage options for s3fs, read from the environment.

    The endpoint comes from ``CLEARBG_S3_ENDPOINT_URL``, else ``AWS_ENDPOINT_URL``; with
    neither set the result is ``{}`` (real AWS). Credentials are left to botocore (env vars,
    profile, instance role). No ``region_name`` is set: with ``us-east-1`` in client_kwargs,
    s3fs sends a LocationConstraint that S3 (and moto) reject when creating buckets.

    Returns:
        A dict to pass as ``**kwargs`` to ``s3fs.S3FileSystem`` / ``fsspec.filesystem("s3")``.

    Example:
        >>> os.environ["CLEARBG_S3_ENDPOINT_URL"] = "http://127.0.0.1:9000"  # doctest: +SKIP
        >>> s3_options()  # doctest: +SKIP
        {'client_kwargs': {'endpoint_url': 'http://127.0.0.1:9000'}}
    """
    endpoint = next((os.environ[name] for name in ENDPOINT_VARIABLES if os.environ.get(name)), None)
    if not endpoint:
        return {}
    return {"client_kwargs": {"endpoint_url": endpoint}}


def get_filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``uri`` and the path inside it.

    Instances are cached by fsspec per protocol and options (and per thread/process), so
    calling this for every file is cheap. For S3 the listing cache is turned off: a
    long-running process (the server, a resumed batch) must see objects added since its
    last listing, and a walk over a large bucket should not keep every listing in memory.

    Args:
        uri: A local path, ``file://`` URI or remote URI such as ``s3://bucket/key``.

    Returns:
        ``(fs, path)``, e.g. ``(S3FileSystem, "bucket/key")`` or ``(LocalFileSystem, "/abs/path")``.

    Raises:
        StorageError: The protocol is unknown or its fsspec backend is not installed.
    """
    match = _SCHEME.match(uri)
    options: dict = {}
    if match and match.group(1).lower() in _S3_PROTOCOLS:
        options = {**s3_options(), "use_listings_cache": False}
    try:
        return fsspec.core.url_to_fs(uri, **options)
    except (ImportError, ValueError) as err:
        raise StorageError(f"cannot open {uri}: {err}") from err


def iter_images(inputs: Iterable[str], on_error: OnError | None = None) -> Iterator[ImageRef]:
    """Yield the images named by ``inputs``, streaming, in a stable order.

    Each input is a local file or folder, or a remote object or prefix
    (``s3://bucket/photo.jpg``, ``s3://bucket/raw/``). A file given explicitly is yielded
    whatever its suffix. Folders are walked recursively, one directory level at a time,
    in sorted order; only files whose suffix is in :data:`IMAGE_SUFFIXES` (any case) are
    yielded, and names starting with ``"."`` (files and folders) are skipped. A folder with
    no images yields nothing; the caller decides whether that is an error.

    A symbolic link whose target is missing or loops back on itself is yielded when it is
    named like an image (reading it then fails with the reason, so it is reported like any
    bad photo). Without a suffix it may have been a folder: it is reported to ``on_error``.

    Args:
        inputs: Paths and URIs, in the order to process them.
        on_error: called with ``(uri, StorageError)`` for an input that does not exist, a
            folder that cannot be listed and a broken link that may have been a folder; the
            walk then goes on with everything else. Without it the first one is raised.

    Yields:
        One :class:`ImageRef` per image.

    Raises:
        StorageError: Without ``on_error``: an input does not exist, a folder cannot be
            listed, or a link without a suffix leads nowhere.

    Example:
        >>> [r.relpath for r in iter_images(["photos/"])]  # doctest: +SKIP
        ['a.jpg', 'shoes/b.PNG']
    """
    for item in inputs:
        try:
            if is_remote(item):
                yield from _iter_remote(item, on_error)
            else:
                yield from _iter_local(item, on_error)
        except StorageError as err:  # the input itself; what is below it reports on its own
            if on_error is None:
                raise
            on_error(item, err)


def read_bytes(uri: str) -> bytes:
    """All bytes of a local file or remote object.

    Raises:
        StorageError: It is missing, a folder, unreadable, or the remote call failed.
    """
    if not is_remote(uri):
        path = _local_path(uri)
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as err:
            raise StorageError(f"cannot read {uri}: {_reason(err)}{_link_hint(path)}") from err
    fs, path = get_filesystem(uri)
    try:
        return fs.cat_file(path)
    except Exception as err:  # noqa: BLE001 - backends raise their own types (botocore, aiohttp)
        raise StorageError(f"cannot read {uri}: {_reason(err)}") from err


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to a local path or remote object, replacing it whole.

    Local files are written atomically (temp file, fsync, rename), creating parent folders;
    a reader never sees half a file. A remote PUT is atomic per object already.

    Raises:
        StorageError: The write failed; nothing partial is left behind locally.
    """
    if not is_remote(uri):
        from clearbg.imageio import atomic_write_bytes  # imageio pulls in Pillow; keep lazy

        try:
            # Creates parent folders; raises StorageError itself for most failures.
            atomic_write_bytes(_local_path(uri), data)
        except OSError as err:
            raise StorageError(f"cannot write {uri}: {_reason(err)}") from err
        return
    fs, path = get_filesystem(uri)
    try:
        fs.pipe_file(path, data)
    except Exception as err:  # noqa: BLE001 - backends raise their own types (botocore, aiohttp)
        raise StorageError(f"cannot write {uri}: {_reason(err)}") from err


def join(base: str, *parts: str) -> str:
    """Join path pieces onto a local path or URI without doubling slashes.

    Leading and trailing slashes of ``parts`` are dropped, so a piece never restarts the
    path at the root. URIs are always joined with ``/``.

    Example:
        >>> join("s3://shop/cut/", "/shoes/", "a.png")
        's3://shop/cut/shoes/a.png'
        >>> join("out", "shoes/a.png")
        'out/shoes/a.png'
    """
    pieces = [p.strip("/") for p in parts if p.strip("/")]
    if not pieces:
        return base
    if _SCHEME.match(base):
        head = base if base.endswith("://") else base.rstrip("/")
        sep = "" if head.endswith("://") else "/"
        return head + sep + "/".join(pieces)
    return os.path.join(base, *pieces)


def location(uri: str) -> tuple[str, str]:
    """Where ``uri`` really is, comparable across spellings: ``("", real local path)`` or
    ``(protocol, "bucket/key")``; a path inside another starts with its path plus ``"/"``.

    Example:
        >>> location("s3a://shop/raw/")
        ('s3', 'shop/raw')
    """
    if not is_remote(uri):
        return "", os.path.realpath(_local_path(uri))
    fs, path = get_filesystem(uri)
    return _protocols(fs)[0], path.rstrip("/")


def is_folder(uri: str) -> bool:
    """True for a local folder or a remote prefix with objects under it.

    Raises:
        StorageError: the remote check failed.
    """
    if not is_remote(uri):
        return os.path.isdir(_local_path(uri))
    fs, path = get_filesystem(uri)
    try:
        return fs.isdir(path.rstrip("/"))
    except Exception as err:  # noqa: BLE001 - backends raise their own types (botocore, aiohttp)
        raise StorageError(f"cannot check {uri}: {_reason(err)}") from err


def exists(uri: str) -> bool:
    """True if ``uri`` is an existing file, folder, object or non-empty prefix."""
    if not is_remote(uri):
        return os.path.exists(_local_path(uri))
    fs, path = get_filesystem(uri)
    try:
        return fs.exists(path)
    except Exception as err:  # noqa: BLE001 - backends raise their own types (botocore, aiohttp)
        raise StorageError(f"cannot check {uri}: {_reason(err)}") from err


# --------------------------------------------------------------------------- internals


def _local_path(uri: str) -> str:
    return uri[len("file://") :] if uri.lower().startswith("file://") else uri


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    if isinstance(err, FileNotFoundError):  # s3fs raises FileNotFoundError(path), no strerror
        return "not found"
    return str(err) or type(err).__name__


def _link_hint(path: str) -> str:
    """Why a path that is a symbolic link failed: say where it points and what to do."""
    try:
        target = os.readlink(path)
    except OSError:
        return ""  # not a link (or gone): the plain reason says it all
    return f" (it is a symbolic link to {target}; fix or remove the link)"


def _fail(on_error: OnError | None, uri: str, error: StorageError, cause: BaseException) -> None:
    """Raise ``error``, or hand it to ``on_error`` so the walk can go on."""
    if on_error is None:
        raise error from cause
    error.__cause__ = cause
    on_error(uri, error)


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _iter_local(item: str, on_error: OnError | None) -> Iterator[ImageRef]:
    path = _local_path(item)
    if os.path.isfile(path):
        yield ImageRef(uri=path, relpath=os.path.basename(path))
    elif os.path.isdir(path):
        yield from _walk_local(path, "", set(), on_error)
    else:
        raise StorageError(f"no such file or folder: {item}{_link_hint(path)}")


def _walk_local(folder: str, prefix: str, seen: set[tuple[int, int]], on_error: OnError | None) -> Iterator[ImageRef]:
    """Depth-first walk of one folder level at a time; ``seen`` stops symlink loops."""
    try:
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            return
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as err:
        _fail(on_error, folder, StorageError(f"cannot list folder {folder}: {_reason(err)}"), err)
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        relpath = prefix + entry.name
        is_dir, is_file, broken = _follow(entry)
        if is_dir:  # folder loops are cut by `seen`
            yield from _walk_local(entry.path, relpath + "/", seen, on_error)
        elif _is_image_name(entry.name) and (is_file or broken):
            yield ImageRef(uri=entry.path, relpath=relpath)  # a broken one fails when read, with why
        elif broken and not os.path.splitext(entry.name)[1]:  # it may have been a folder
            message = f"cannot follow {entry.path}: {_reason(broken)}{_link_hint(entry.path)}"
            _fail(on_error, entry.path, StorageError(message), broken)


def _follow(entry: os.DirEntry) -> tuple[bool, bool, OSError | None]:
    """(is a folder, is a file, why it leads nowhere), following symlinks: a link to itself
    raises ELOOP, and a dangling one is neither a folder nor a file."""
    try:
        is_dir, is_file = entry.is_dir(), entry.is_file()
    except OSError as err:
        return False, False, err
    if entry.is_symlink() and not (is_dir or is_file or os.path.exists(entry.path)):
        return False, False, FileNotFoundError(errno.ENOENT, "its target does not exist")
    return is_dir, is_file, None


def _iter_remote(item: str, on_error: OnError | None) -> Iterator[ImageRef]:
    fs, path = get_filesystem(item)
    path = path.rstrip("/")
    try:
        info = fs.info(path)
    except FileNotFoundError as err:
        is_s3 = bool(_S3_PROTOCOLS & set(_protocols(fs)))
        what = "s3 object or prefix" if is_s3 else "remote file or folder"
        raise StorageError(f"no such {what}: {item}") from err
    except Exception as err:  # noqa: BLE001 - backends raise their own types (botocore, aiohttp)
        raise StorageError(f"cannot access {item}: {_reason(err)}") from err
    if info["type"] != "directory":
        yield ImageRef(uri=fs.unstrip_protocol(path), relpath=path.rsplit("/", 1)[-1])
        return
    yield from _walk_remote(fs, path, path, item, on_error)


def _walk_remote(
    fs: fsspec.AbstractFileSystem, root: str, folder: str, item: str, on_error: OnError | None
) -> Iterator[ImageRef]:
    """List one level (S3: one delimiter="/" listing, paginated), then recurse in name order."""
    try:
        entries = fs.ls(folder, detail=True)
    except Exception as err:  # noqa: BLE001 - backends raise their own types (botocore, aiohttp)
        where = fs.unstrip_protocol(folder)
        _fail(on_error, where, StorageError(f"cannot list {where} (under {item}): {_reason(err)}"), err)
        return
    children = []
    for entry in entries:
        name = entry["name"].rstrip("/")
        # S3 "folder marker" objects ("raw/") list as the folder itself.
        if name == folder or not name.startswith(folder + "/"):
            continue
        children.append((name.rsplit("/", 1)[-1], name, entry["type"]))
    for base, name, kind in sorted(children):
        if base.startswith("."):
            continue
        if kind == "directory":
            yield from _walk_remote(fs, root, name, item, on_error)
        elif _is_image_name(base):
            yield ImageRef(uri=fs.unstrip_protocol(name), relpath=name[len(root) + 1 :])


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)
