"""Inference-only rewrites of a trained model: same outputs, less work per image.

Profiling u2netp on a 2-core CPU (bf16, channels-last) showed under half the time in the
convolutions; BatchNorm and ReLU each cost a full extra pass over every activation map. Folding
BatchNorm into the conv weights and fusing ReLU into the oneDNN convolution removes both passes.
"""

from __future__ import annotations

import torch
from torch import nn


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm that follows a conv (``conv_s1``/``bn_s1``) into the conv.

    Returns the same model, modified in place; its outputs are unchanged (to float rounding).
    """
    for module in model.modules():
        conv, bn = getattr(module, "conv_s1", None), getattr(module, "bn_s1", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            with torch.no_grad():
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                conv.weight.mul_(scale[:, None, None, None])
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
            module.bn_s1 = nn.Identity()
    return model


class ConvReLU(nn.Module):
    """A conv whose ReLU runs inside the oneDNN kernel (CPU only), as one pass over memory."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return torch.ops.mkldnn._convolution_pointwise(
            x, c.weight, c.bias, c.padding, c.stride, c.dilation, c.groups, "relu", [], ""
        )


def fused_conv_relu_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def fuse_conv_relu(model: nn.Module) -> nn.Module:
    """Replace each folded ``conv_s1 -> Identity -> relu_s1`` unit with one fused ``ConvReLU``.

    Call after ``fold_batchnorm``; CPU inference only (the fused op has no backward).
    """
    for module in model.modules():
        if isinstance(getattr(module, "conv_s1", None), nn.Conv2d) and isinstance(
            getattr(module, "bn_s1", None), nn.Identity
        ):
            module.conv_s1 = ConvReLU(module.conv_s1)
            module.relu_s1 = nn.Identity()
    return model


def optimize_for_inference(model: nn.Module, device: torch.device) -> nn.Module:
    """Fold BatchNorm always; fuse conv+ReLU on CPUs with oneDNN."""
    model = fold_batchnorm(model.eval())
    if device.type == "cpu" and fused_conv_relu_available():
        model = fuse_conv_relu(model)
    return model
