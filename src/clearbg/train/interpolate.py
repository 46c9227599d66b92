"""Weight-space interpolation between the weights a fine-tune started from and where it ended.

A fine-tune on a few dozen photos learns the shop's products and forgets some of what the
pretrained weights knew (a car fine-tune starts cutting out captions with the car). Mixing the
two sets of weights, ``(1 - alpha) * base + alpha * tuned``, keeps most of the gain and most of
the robustness (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models", WiSE-FT): both
lie in one basin, since one started from the other. ``alpha`` is chosen on the val split.

BatchNorm would make a plain average meaningless here: the official weights have it folded
into the convolutions (identity layers), while training gave the same layers measured
statistics (``model_init``), so one function is written two ways. Both networks are first
rewritten in the folded form (each BatchNorm's eval-mode scale and shift moved into the
convolution before it), which is unique, and then mixed.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from clearbg.errors import ClearbgError
from clearbg.evaluate.run import evaluate_model
from clearbg.evaluate.settings import EvalSettings
from clearbg.models.hub import resolve
from clearbg.models.mlflow_uris import save_checkpoint
from clearbg.models.specs import get_spec

__all__ = ["Blend", "fold_batchnorm", "interpolate_weights", "blend_and_select"]


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """``model`` (in place) with every BatchNorm folded into the convolution before it.

    Each ``BatchNorm2d`` that directly follows a ``Conv2d`` (module order, matching channels, as
    in U2-Net's conv-BN-ReLU blocks) becomes the identity (mean 0, variance ``1 - eps``, scale 1,
    shift 0: the layout of the released weights) and the convolution absorbs its eval-mode
    affine map. The eval-mode function is unchanged.

    Raises:
        ClearbgError: a BatchNorm follows no convolution, or one without a bias to absorb the shift.
    """
    conv = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            conv = module
        elif isinstance(module, nn.BatchNorm2d):
            if conv is None or conv.out_channels != module.num_features or conv.bias is None:
                raise ClearbgError(f"cannot fold BatchNorm {name}: it does not follow a convolution with a bias")
            scale = module.weight / torch.sqrt(module.running_var + module.eps)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias.copy_(conv.bias * scale + module.bias - module.running_mean * scale)
            module.running_mean.zero_()
            module.running_var.fill_(1 - module.eps)
            module.weight.fill_(1)
            module.bias.zero_()
            conv = None
    return model


@torch.no_grad()
def interpolate_weights(base: nn.Module, tuned: nn.Module, alpha: float) -> nn.Module:
    """A new network ``(1 - alpha) * base + alpha * tuned`` (both folded first; inputs untouched).

    ``alpha`` 0 is ``base``'s function, 1 is ``tuned``'s; values outside [0, 1] extrapolate.

    Raises:
        ClearbgError: the two networks are not the same architecture.
    """
    return _lerp(_folded(base), _folded(tuned), alpha)


def _folded(model: nn.Module) -> nn.Module:
    return fold_batchnorm(copy.deepcopy(model).float().eval())


@torch.no_grad()
def _lerp(a: nn.Module, b: nn.Module, alpha: float) -> nn.Module:
    """A new network whose weights are ``(1 - alpha) * a + alpha * b`` (both already folded)."""
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys() or any(sa[k].shape != sb[k].shape for k in sa):
        raise ClearbgError("cannot interpolate between different architectures")
    out = copy.deepcopy(b)
    out.load_state_dict({k: torch.lerp(sa[k], sb[k], alpha) if sa[k].is_floating_point() else sb[k] for k in sa})
    return out


@dataclass(frozen=True)
class Blend:
    """One interpolation tried: its ``alpha`` and mean IoU on the selection split."""

    alpha: float
    iou_mean: float


def blend_and_select(
    tuned: str,
    alphas: Sequence[float],
    out: str,
    *,
    base: str = "official",
    data: str | None = None,
    settings: EvalSettings | None = None,
    progress: bool | None = None,
) -> tuple[Blend | None, list[Blend]]:
    """Interpolate ``tuned`` towards ``base`` at each of ``alphas``, keep the best on ``data``.

    Args:
        tuned: the fine-tuned model (a ``best.pt``, ``models:/...``, any hub reference).
        alphas: the weights of ``tuned`` to try; with one and no ``data`` it is written as is.
        out: where the chosen blend is written (a plain clearbg checkpoint whose provenance
            says base, tuned and alpha).
        base: the weights the fine-tune started from; ``official`` means the released weights
            of ``tuned``'s architecture.
        data: the dataset whose val split selects ``alpha`` (``DATASET`` or ``DATASET:val``;
            the test split you report on is refused).
        settings: how to evaluate (default fp32).

    Returns:
        (the chosen blend, or None when nothing was evaluated; every blend tried).

    Raises:
        ClearbgError: no alphas, several alphas without data, models that do not match.
    """
    if not alphas:
        raise ClearbgError("give at least one alpha")
    if len(alphas) > 1 and data is None:
        raise ClearbgError("several alphas need a val split to choose between them (--data DATASET:val)")
    if data is not None and data.rsplit(":", 1)[-1] == "test":
        raise ClearbgError("choose alpha on the val split, not on the test split you report on")
    try:  # before any evaluation: a folder that cannot be written should not cost minutes first
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ClearbgError(f"cannot write {out}: {err.strerror or err}") from err
    found = resolve(tuned)
    if found.network is None:
        raise ClearbgError(f"{tuned} is an ONNX export; interpolate the checkpoint it was exported from")
    start = resolve(get_spec(found.spec.arch).name if base == "official" else base)
    if start.network is None:
        raise ClearbgError(f"{base} is an ONNX export; interpolate from a checkpoint")
    a, b = _folded(start.network), _folded(found.network)  # once, whatever the number of alphas
    tried: list[Blend] = []
    best_net, best = None, None
    for alpha in alphas:
        net = _lerp(a, b, alpha)
        if data is None:
            best_net = net
            break
        evaluation = evaluate_model(net, data, "val", settings=settings, progress=progress, name=f"alpha {alpha:g}")
        blend = Blend(alpha, float(evaluation.summary()["overall"]["iou_mean"]))
        tried.append(blend)
        if best is None or blend.iou_mean > best.iou_mean:
            best_net, best = net, blend
    chosen = best.alpha if best is not None else alphas[0]
    provenance = {"interpolation": {"base": start.source, "tuned": found.source, "alpha": chosen,
                                    "selected_on": data, "tried": [[b.alpha, b.iou_mean] for b in tried]}}
    try:
        save_checkpoint(best_net, Path(out), source=f"{found.source} blended with {start.source} at alpha {chosen:g}",
                        spec=found.spec, extra=provenance)
    except OSError as err:  # a full disk, a read-only folder: the atomic write left nothing behind
        raise ClearbgError(f"cannot write {out}: {err.strerror or err}") from err
    return best, tried
