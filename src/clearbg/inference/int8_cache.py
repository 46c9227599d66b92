"""The default CPU engine: a model's int8 ONNX export, built once and cached.

On CPUs with int8 dot-product units (VNNI: AVX512-VNNI, AVX-VNNI, AMX-INT8) a static int8 export
on ONNX Runtime runs u2netp at 1.5-1.8x fp32's images/s with mean IoU within 0.001 of fp32's
(bench/precision.py). Calibrating it needs photos, so clearbg ships 16 (``calibration_photos/``,
train-split photos of the two test domains) and builds the export the first time a model runs,
then keeps it in the cache (``$CLEARBG_HOME/int8``). The file's name carries a digest of the
model's weights file (or, for a network given in memory, its tensors), the recipe and the ONNX
Runtime version: a fine-tuned checkpoint, a new release or a changed recipe gets its own file,
never a stale one. Keying by the file lets a later run find the export without loading PyTorch
(``released_int8_path``): the first photo from the command line then costs no PyTorch import.
"""

from __future__ import annotations

import hashlib
import sys
from importlib.resources import files
from pathlib import Path

from PIL import Image

from clearbg.models.download import cache_dir, cached_weights, sha256_of
from clearbg.models.hub import ResolvedModel
from clearbg.models.specs import ModelSpec

# Bump when the export or calibration recipe changes: old cached files are then not reused.
RECIPE = "int8-qdq-v1"


def _photo_files() -> list:
    folder = files("clearbg.inference") / "calibration_photos"
    return sorted((p for p in folder.iterdir() if p.name.endswith(".jpg")), key=lambda p: p.name)


def calibration_photos() -> list[Image.Image]:
    """The shipped calibration photos, RGB, in a fixed order."""
    photos = []
    for path in _photo_files():
        with path.open("rb") as f:
            photos.append(Image.open(f).convert("RGB"))
    return photos


def int8_path(found: ResolvedModel) -> Path:
    """Where the int8 export of ``found`` is (or will be) cached."""
    if found.weights_file is not None:
        return _cache_file(found.spec, sha256_of(Path(found.weights_file).read_bytes()))
    weights = hashlib.sha256()
    for name, tensor in sorted(found.network.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return _cache_file(found.spec, weights.hexdigest())


def released_int8_path(spec: ModelSpec) -> Path:
    """Where the int8 export of ``spec``'s released weights is cached; reads the weights file,
    never PyTorch (the same file ``int8_path(resolve(spec.name))`` names).

    Raises:
        WeightsNotFound: the weights are not downloaded yet.
    """
    return _cache_file(spec, sha256_of(cached_weights(spec).read_bytes()))


def _cache_file(spec: ModelSpec, weights_digest: str) -> Path:
    import onnxruntime

    digest = hashlib.sha256(f"{RECIPE} onnxruntime {onnxruntime.__version__} {spec.preprocess}".encode())
    for photo in _photo_files():
        digest.update(photo.name.encode())
    digest.update(weights_digest.encode())
    return cache_dir() / "int8" / f"{spec.name}-{digest.hexdigest()[:16]}.onnx"


def cached_int8(found: ResolvedModel, *, quiet: bool = False) -> Path:
    """The int8 export of ``found`` (a PyTorch model), built and cached on first use.

    Args:
        found: a resolved model with its network.
        quiet: say nothing while building (otherwise one line on stderr: it takes a while).

    Returns:
        The cached ``.onnx`` file (dynamic batch, clearbg metadata).

    Raises:
        ExportError: the export or the quantisation failed (nothing is cached then).

    Example:
        >>> from clearbg.models.hub import resolve
        >>> cached_int8(resolve("u2netp"))  # doctest: +SKIP
        PosixPath('/root/.cache/clearbg/int8/u2netp.official-3f2a...onnx')
    """
    from clearbg.inference.onnx_export import export_onnx, save_onnx

    path = int8_path(found)
    if path.exists():
        return path
    photos = calibration_photos()
    if not quiet:
        print(f"building the int8 model of {found.spec.name} once (calibrating on {len(photos)} photos; "
              f"cached in {path.parent}) ...", file=sys.stderr, flush=True)
    proto = export_onnx(found.network, found.spec, dynamic_batch=True, precision="int8", calibration=photos)
    return save_onnx(proto, path)
