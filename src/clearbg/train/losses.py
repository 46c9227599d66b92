"""Deep-supervision loss: every term on the fused map and on every side output.

U2-Net (Qin et al. 2020, eq. 1) trains with the sum of binary cross-entropies of the fused map
``d0`` and the six side outputs ``d1 .. d6`` against the same mask. We keep that sum and compute
it from logits (``binary_cross_entropy_with_logits``): the same value as the official
sigmoid + ``BCELoss``, but numerically safe in fp16/bf16 autocast and without the
probability clamp that ``BCELoss`` applies at 0 and 1.

Optional terms (weights in ``LossConfig``; 0 = off, nothing computed), BASNet's hybrid loss
(Qin et al. 2019) plus an edge term:

* ``iou``: soft IoU, ``1 - sum(p y) / sum(p + y - p y)`` per image (smoothed by 1 pixel);
* ``ssim``: ``1 - SSIM(p, y)`` with an 11x11 Gaussian window (sigma 1.5), C1 = 0.01^2, C2 = 0.03^2;
* ``boundary``: BCE on the pixels within ``BOUNDARY_WIDTH`` px of the true edge only, so the
  few pixels where cutouts look wrong are not drowned by the easy interior.

All terms run in float32 whatever the autocast dtype.

Example:
    >>> loss_fn = DeepSupervisionLoss(LossConfig(bce=1.0, iou=0.5))
    >>> total, parts = loss_fn(model(x, logits=True), mask)       # doctest: +SKIP
    >>> total.backward(); parts                                    # doctest: +SKIP
    {'bce': 4.71, 'iou': 3.02}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from clearbg.train.config import LossConfig

__all__ = ["BOUNDARY_WIDTH", "DeepSupervisionLoss", "boundary_band", "soft_iou_loss", "ssim_loss"]

BOUNDARY_WIDTH = 2  # px on each side of the true edge that the boundary term looks at
_SSIM_WINDOW, _SSIM_SIGMA = 11, 1.5
_C1, _C2 = 0.01**2, 0.03**2


def soft_iou_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean over the batch of ``1 - soft IoU`` of (B, 1, H, W) probabilities and targets."""
    inter = (prob * target).flatten(1).sum(1)
    union = (prob + target - prob * target).flatten(1).sum(1)
    return (1 - (inter + smooth) / (union + smooth)).mean()


def _gaussian_window(device: torch.device) -> torch.Tensor:
    coords = torch.arange(_SSIM_WINDOW, dtype=torch.float32, device=device) - _SSIM_WINDOW // 2
    g = torch.exp(-(coords**2) / (2 * _SSIM_SIGMA**2))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    # Separable Gaussian: a row pass then a column pass (2 x 11 taps instead of 121).
    pad = _SSIM_WINDOW // 2
    x = F.conv2d(x, g.view(1, 1, 1, -1), padding=(0, pad))
    return F.conv2d(x, g.view(1, 1, -1, 1), padding=(pad, 0))


def ssim_loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - mean SSIM`` of (B, 1, H, W) maps (zero padding at the borders, as BASNet)."""
    g = _gaussian_window(prob.device)
    mu_p, mu_t = _blur(prob, g), _blur(target, g)
    var_p = _blur(prob * prob, g) - mu_p**2
    var_t = _blur(target * target, g) - mu_t**2
    cov = _blur(prob * target, g) - mu_p * mu_t
    ssim = ((2 * mu_p * mu_t + _C1) * (2 * cov + _C2)) / ((mu_p**2 + mu_t**2 + _C1) * (var_p + var_t + _C2))
    return 1 - ssim.mean()


def boundary_band(target: torch.Tensor, width: int = BOUNDARY_WIDTH) -> torch.Tensor:
    """1 where a pixel is within ``width`` px of the edge of the binarised (B, 1, H, W) target."""
    k = 2 * width + 1
    binary = (target > 0.5).float()
    dilated = F.max_pool2d(binary, k, stride=1, padding=width)
    eroded = -F.max_pool2d(-binary, k, stride=1, padding=width)
    return dilated - eroded


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of the configured terms over the fused map and all side outputs.

    Args:
        config: term weights (``LossConfig``).

    Forward:
        logits: one (B, 1, H, W) tensor or a sequence of them (fused first, then the sides;
            side outputs are at full resolution in U2-Net).
        target: (B, 1, H, W) mask in [0, 1].

    Returns:
        (total loss, {term: detached sum over outputs}) with only the enabled terms.
    """

    def __init__(self, config: LossConfig | None = None):
        super().__init__()
        self.config = config or LossConfig()

    def forward(self, logits: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor):
        outputs = [logits] if isinstance(logits, torch.Tensor) else list(logits)
        target = target.float()
        cfg = self.config
        band = boundary_band(target) if cfg.boundary > 0 else None
        sums: dict[str, torch.Tensor] = {}

        def add(name: str, value: torch.Tensor) -> None:
            sums[name] = sums[name] + value if name in sums else value

        for out in outputs:
            out = out.float()  # the loss in fp32 even under autocast
            if out.shape != target.shape:
                raise ValueError(f"model output {tuple(out.shape)} and mask {tuple(target.shape)} differ in shape")
            if cfg.bce > 0:
                add("bce", F.binary_cross_entropy_with_logits(out, target))
            if cfg.iou > 0 or cfg.ssim > 0:
                prob = torch.sigmoid(out)
                if cfg.iou > 0:
                    add("iou", soft_iou_loss(prob, target))
                if cfg.ssim > 0:
                    add("ssim", ssim_loss(prob, target))
            if band is not None:
                per_pixel = F.binary_cross_entropy_with_logits(out, target, reduction="none")
                add("boundary", (per_pixel * band).sum() / band.sum().clamp_min(1))
        total = sum(getattr(cfg, name) * value for name, value in sums.items())
        return total, {name: value.detach() for name, value in sums.items()}
