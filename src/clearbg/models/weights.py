"""Loading weights: official ``.pth`` state dicts, our checkpoints, converted ONNX files.

Official U2-Net checkpoints load with strict key checking. We accept the two variations seen in
the wild: a ``module.`` prefix (saved from DataParallel/DDP) and present or absent
``num_batches_tracked`` buffers (older PyTorch did not save them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from clearbg.errors import CheckpointMismatch, UnknownModel

_BN_COUNTER = "num_batches_tracked"


def _expected(model: nn.Module | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    return model.state_dict() if isinstance(model, nn.Module) else model


def normalise_state_dict(state_dict: Mapping[str, torch.Tensor],
                         model: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip ``module.`` prefixes and reconcile ``num_batches_tracked`` with ``model``'s keys
    (a module, or the state dict it has)."""
    out = {k.removeprefix("module."): v for k, v in state_dict.items()}
    expected = _expected(model)
    for key in list(out):
        if key.endswith(_BN_COUNTER) and key not in expected:
            del out[key]
    for key, value in expected.items():
        if key.endswith(_BN_COUNTER) and key not in out:
            out[key] = torch.zeros_like(value)
    return out


def mismatches(state_dict: Mapping[str, torch.Tensor], model: nn.Module | Mapping[str, torch.Tensor]) -> list[str]:
    """Human-readable list of every key that is missing, unexpected or of the wrong shape
    compared with ``model`` (a module, or the state dict it has)."""
    expected = _expected(model)
    problems = [f"missing: {k} {tuple(v.shape)}" for k, v in expected.items() if k not in state_dict]
    problems += [f"unexpected: {k} {tuple(v.shape)}" for k, v in state_dict.items() if k not in expected]
    problems += [
        f"shape: {k} is {tuple(v.shape)} in the checkpoint, {tuple(expected[k].shape)} in the model"
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    return problems


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> nn.Module:
    """Load ``state_dict`` into ``model`` with strict checking.

    Raises:
        CheckpointMismatch: listing every mismatched key (first 20, then a count).
    """
    fixed = normalise_state_dict(state_dict, model)
    problems = mismatches(fixed, model)
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise CheckpointMismatch(
            f"{source} does not fit {type(model).__name__} ({len(problems)} problems):\n  {shown}{more}"
        )
    model.load_state_dict(fixed, strict=True)
    return model


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.pth`` (plain, or a checkpoint dict with ``model``/``state_dict``)
    or from an official-layout ``.onnx`` file (converted on the fly)."""
    path = Path(path)
    if path.suffix == ".onnx":
        from clearbg.models.onnx_import import state_dict_from_onnx

        return state_dict_from_onnx(path)[0]
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise UnknownModel(f"checkpoint not found: {path}") from err
    except Exception as err:  # pickle errors, zip errors: all mean "not a checkpoint"
        raise CheckpointMismatch(f"{path}: not a readable PyTorch checkpoint ({err})") from err
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise CheckpointMismatch(f"{path}: expected a state dict, found {type(obj).__name__}")
    return obj


@functools.lru_cache(maxsize=None)
def _template(builder: Callable[[], nn.Module]) -> dict[str, torch.Tensor]:
    """The state dict an architecture has, as meta tensors (names and shapes, no memory)."""
    with torch.device("meta"):  # no allocation, no random init
        return builder().state_dict()


def match_architecture(state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> str:
    """The registered architecture whose keys and shapes ``state_dict`` fits exactly.

    Each candidate is compared through its template: its state dict built once on the meta
    device and kept (per builder), so trying every architecture costs no weights at all.

    Args:
        state_dict: weights, with or without a ``module.`` prefix and BatchNorm counters.
        source: what the weights are, for the error message.

    Returns:
        The arch name (``u2netp``, ``u2net``, ``isnet``, ``unet``).

    Raises:
        CheckpointMismatch: no architecture fits; the message says how far off each one is.

    Example:
        >>> match_architecture(create_model("u2netp", pretrained=False).state_dict())  # doctest: +SKIP
        'u2netp'
    """
    from clearbg.models.specs import get_spec, list_models

    report = []
    for arch in sorted({name.split(".")[0] for name in list_models()}):
        template = _template(get_spec(arch).builder)
        problems = mismatches(normalise_state_dict(state_dict, template), template)
        if not problems:
            return arch
        report.append(f"{arch}: {len(problems)} problems, e.g. {problems[0]}")
    raise CheckpointMismatch(f"{source} fits no registered architecture:\n  " + "\n  ".join(report))


def load_model_file(path: Path) -> tuple[nn.Module, str]:
    """Build the registered architecture that ``path``'s state dict fits, and load it.

    Returns:
        (model, arch name).

    Raises:
        UnknownModel: no such file.
        CheckpointMismatch: not a checkpoint, or its weights fit no registered architecture.

    Example:
        >>> model, arch = load_model_file(Path("runs/exp1/checkpoints/best.pt"))  # doctest: +SKIP
    """
    from clearbg.models.specs import get_spec

    if not Path(path).is_file():
        raise UnknownModel(f"checkpoint not found: {path}")
    if Path(path).suffix == ".onnx":
        from clearbg.models.onnx_import import state_dict_from_onnx

        state_dict, arch = state_dict_from_onnx(Path(path))
    else:
        state_dict = load_state_dict_file(Path(path))
        arch = match_architecture(state_dict, str(path))
    return load_state_dict_strict(get_spec(arch).builder(), state_dict, str(path)), arch
