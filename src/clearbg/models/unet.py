"""The classic U-Net, as the Carvana seed trained it: a second model family, trained from scratch.

Ronneberger, Fischer and Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015. The seed (a Kaggle Carvana car-masking project) used the common
PyTorch variant of it: "same" 3x3 convolutions (padding 1, so the output has the input's size,
unlike the paper's valid convolutions), BatchNorm after every convolution (convs without bias),
four 2x max-poolings with widths 64-128-256-512, a 1024-wide bottleneck, 2x2 transposed-conv
upsampling and a 1x1 head. ``base`` scales every width (``base=32`` is a quarter of the FLOPs);
``upsampling="bilinear"`` swaps each transposed conv for bilinear 2x + a 1x1 conv.

Inputs whose sides are not divisible by 2**depth (16 by default) are padded by edge replication
and the output is cropped back, so any size works; sizes divisible by 16 need no padding.

The conv units use U2-Net's attribute names (``conv_s1``/``bn_s1``/``relu_s1``) so the
inference rewrites in ``clearbg.inference.optimize`` (BatchNorm folding, fused conv+ReLU) apply
to this family unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

UPSAMPLING = ("transpose", "bilinear")


class ConvBNReLU(nn.Module):
    """3x3 conv (no bias: BatchNorm follows) -> BatchNorm -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.bn_s1 = nn.BatchNorm2d(out_ch)
        self.relu_s1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu_s1(self.bn_s1(self.conv_s1(x)))


class DoubleConv(nn.Sequential):
    """Two ConvBNReLU units: the block at every level of the U."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(ConvBNReLU(in_ch, out_ch), ConvBNReLU(out_ch, out_ch))


class Up(nn.Module):
    """Upsample 2x while halving the channels, concatenate the skip, then a DoubleConv."""

    def __init__(self, in_ch: int, out_ch: int, upsampling: str):
        super().__init__()
        if upsampling == "transpose":
            self.up = nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2)
        else:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_ch, out_ch, kernel_size=1),
            )
        self.conv = DoubleConv(out_ch * 2, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat((skip, self.up(x)), 1))  # skip first, as the seed does


class UNet(nn.Module):
    """Encoder of ``depth`` DoubleConv+pool levels, a bottleneck, a mirrored decoder, a 1x1 head.

    ``forward`` follows the U2-Net convention so the training loop and the Predictor treat both
    families alike: by default a tuple of probability maps (here a 1-tuple, the U-Net has no
    side outputs), ``fused_only=True`` the first map alone, ``logits=True`` the maps before
    the sigmoid (what an AMP-safe ``BCEWithLogits`` loss needs).

    Args:
        in_ch: input channels (3 for RGB).
        out_ch: output maps (1: foreground).
        base: width of the first level; level i has ``base * 2**i`` channels.
        depth: number of poolings; input sides divisible by ``2**depth`` need no padding.
        upsampling: ``transpose`` (2x2 transposed conv, the seed's) or ``bilinear``.

    Example:
        >>> model = UNet(base=8)
        >>> [prob] = model(torch.rand(2, 3, 64, 96))
        >>> tuple(prob.shape)
        (2, 1, 64, 96)
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 1, base: int = 64, depth: int = 4, upsampling: str = "transpose"):
        super().__init__()
        if upsampling not in UPSAMPLING:
            raise ValueError(f"upsampling must be one of {UPSAMPLING}, got {upsampling!r}")
        if base < 1 or depth < 1:
            raise ValueError(f"base and depth must be positive, got base={base}, depth={depth}")
        widths = [base * 2**i for i in range(depth)]  # 64, 128, 256, 512
        self.depth = depth
        self.downs = nn.ModuleList()
        ch = in_ch
        for width in widths:
            self.downs.append(DoubleConv(ch, width))
            ch = width
        self.bottleneck = DoubleConv(widths[-1], widths[-1] * 2)
        self.ups = nn.ModuleList(Up(width * 2, width, upsampling) for width in reversed(widths))
        self.final_conv = nn.Conv2d(widths[0], out_ch, kernel_size=1)

    def forward(self, x: torch.Tensor, fused_only: bool = False, logits: bool = False):
        height, width = x.shape[-2:]
        multiple = 2**self.depth
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        skips = []
        for down in self.downs:  # (B, base*2^i, H/2^i, W/2^i)
            x = down(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)  # (B, base*2^depth, H/2^depth, W/2^depth)
        for up, skip in zip(self.ups, reversed(skips), strict=True):
            x = up(x, skip)
        out = self.final_conv(x)[..., :height, :width]  # (B, out_ch, H, W) logits
        if not logits:
            out = torch.sigmoid(out)
        return out if fused_only else (out,)


def unet(base: int = 64, upsampling: str = "transpose") -> UNet:
    """The Carvana seed's U-Net: widths 64-128-256-512, 1024-wide bottleneck, transposed-conv
    upsampling (31.0 M parameters)."""
    return UNet(base=base, upsampling=upsampling)
