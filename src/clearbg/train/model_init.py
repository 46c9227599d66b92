"""Where training starts: the model's initial weights, and BatchNorm made trainable for folded
official weights.

The released U2-Net weights have BatchNorm folded into the convolutions (identity BatchNorm
layers). In training mode BatchNorm normalises with batch statistics, which would turn that
identity into a different function (IoU 0.93 -> 0.30 on the first batch, measured). So before
fine-tuning, each identity BatchNorm gets the statistics of its input on a few training images
as running stats *and* as its affine scale/shift: the eval-mode function is unchanged and the
training-mode one starts as (nearly) the official model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from clearbg.errors import ClearbgError
from clearbg.models.hub import resolve
from clearbg.models.weights import load_state_dict_strict

if TYPE_CHECKING:
    from clearbg.models.specs import ModelSpec
    from clearbg.train.config import TrainConfig


def _is_identity_bn(bn: nn.BatchNorm2d) -> bool:
    return (
        bn.running_mean is not None
        and bool(torch.all(bn.running_mean == 0))
        and bool(torch.allclose(bn.running_var, torch.full_like(bn.running_var, 1 - bn.eps)))
        and bool(torch.all(bn.weight == 1))
        and bool(torch.all(bn.bias == 0))
    )


@torch.no_grad()
def calibrate_folded_batchnorm(model: nn.Module, batches: list[torch.Tensor]) -> int:
    """Give identity BatchNorm layers (folded official weights) the statistics of their input.

    Sets ``running_mean = mean``, ``running_var = var``, ``weight = sqrt(var + eps)``,
    ``bias = mean`` per channel, measured on ``batches`` (normalised model inputs) in eval mode.
    Eval outputs stay the same; train-mode outputs on similar data start close to them.

    Returns:
        How many BatchNorm layers were calibrated.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and _is_identity_bn(m)]
    if not layers or not batches:
        return 0
    sums: dict[nn.Module, list] = {m: [0.0, 0.0, 0] for m in layers}

    def hook(module, inputs):
        x = inputs[0].float()
        acc = sums[module]
        acc[0] = acc[0] + x.sum((0, 2, 3)).double()
        acc[1] = acc[1] + (x * x).sum((0, 2, 3)).double()
        acc[2] += x.numel() // x.shape[1]

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    was_training = model.training
    model.eval()
    try:
        for x in batches:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for m in layers:
        total, squares, n = sums[m]
        mean = total / n
        var = (squares / n - mean * mean).clamp_min(0)
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
        m.weight.copy_(torch.sqrt(var + m.eps))
        m.bias.copy_(mean)
    return len(layers)


def init_model(config: TrainConfig, spec: ModelSpec) -> nn.Module:
    """The model to train, initialised per ``config.init`` (on CPU, fp32).

    ``official``: the spec's released weights; ``scratch``: the architecture's own random init
    under ``config.seed``; anything else is a model reference the hub resolves (a ``.pth``/``.pt``
    file such as a clearbg ``best.pt``, another spec name, ``models:/NAME@ALIAS``, ``runs:/...``)
    whose architecture must be ``spec``'s.

    Raises:
        ClearbgError: no released weights for ``official``, weights not downloaded, or weights
            of another architecture.
    """
    torch.manual_seed(config.seed)
    model = spec.builder()
    init = config.init
    if init == "scratch":
        return model
    if init == "official":
        if spec.weights is None:
            raise ClearbgError(f"--init official: {spec.name} has no released weights; use --init scratch")
        init = spec.name
    found = resolve(init)
    if found.network is None or found.spec.arch != spec.arch:
        kind = "an ONNX export" if found.network is None else f"a {found.spec.arch} model"
        raise ClearbgError(f"--init {config.init}: {kind} cannot initialise {spec.name}")
    load_state_dict_strict(model, found.network.state_dict(), found.source)
    return model
