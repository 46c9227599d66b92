"""U^2-Net and U^2-NetP, with the official state-dict keys.

Qin et al., "U^2-Net: Going Deeper with Nested U-Structure for Salient Object Detection",
Pattern Recognition 2020. Module names follow xuebinqin/U-2-Net ``model/u2net.py`` exactly, so
the released ``u2net.pth`` / ``u2netp.pth`` load with ``strict=True``; the layer arithmetic is
written from the paper's figure 2 and table 1 (RSU-L blocks, dilated bottoms, deep supervision).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class REBNCONV(nn.Module):
    """3x3 conv -> BatchNorm -> ReLU, the unit every RSU block is made of."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 1):
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation)
        self.bn_s1 = nn.BatchNorm2d(out_ch)
        self.relu_s1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu_s1(self.bn_s1(self.conv_s1(x)))


def _upsample_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=False)


class RSU(nn.Module):
    """Residual U-block of height L (RSU-7 ... RSU-4): a small U-Net inside one stage.

    Encoder convs ``rebnconv1 .. rebnconv{L-1}`` with 2x max-pooling between them, a dilated
    bottom ``rebnconv{L}``, decoder convs ``rebnconv{L-1}d .. rebnconv1d``, and a residual
    connection from ``rebnconvin``.
    """

    def __init__(self, height: int, in_ch: int, mid_ch: int, out_ch: int):
        super().__init__()
        self.height = height
        self.rebnconvin = REBNCONV(in_ch, out_ch)
        self.rebnconv1 = REBNCONV(out_ch, mid_ch)
        for i in range(2, height):
            setattr(self, f"rebnconv{i}", REBNCONV(mid_ch, mid_ch))
        setattr(self, f"rebnconv{height}", REBNCONV(mid_ch, mid_ch, dilation=2))
        for i in range(height - 1, 1, -1):
            setattr(self, f"rebnconv{i}d", REBNCONV(mid_ch * 2, mid_ch))
        self.rebnconv1d = REBNCONV(mid_ch * 2, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hxin = self.rebnconvin(x)
        enc = [self.rebnconv1(hxin)]  # enc[i] is hx{i+1}, at 1/2^i of the input size
        for i in range(2, self.height):
            pooled = F.max_pool2d(enc[-1], 2, stride=2, ceil_mode=True)
            enc.append(getattr(self, f"rebnconv{i}")(pooled))
        hx = getattr(self, f"rebnconv{self.height}")(enc[-1])
        for i in range(self.height - 1, 0, -1):
            hx = getattr(self, f"rebnconv{i}d")(torch.cat((hx, enc[i - 1]), 1))
            if i > 1:
                hx = _upsample_like(hx, enc[i - 2])
        return hx + hxin


class RSU4F(nn.Module):
    """RSU-4F: the RSU-4 shape with dilations (1, 2, 4, 8) instead of pooling, for small maps."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int):
        super().__init__()
        self.rebnconvin = REBNCONV(in_ch, out_ch)
        self.rebnconv1 = REBNCONV(out_ch, mid_ch, dilation=1)
        self.rebnconv2 = REBNCONV(mid_ch, mid_ch, dilation=2)
        self.rebnconv3 = REBNCONV(mid_ch, mid_ch, dilation=4)
        self.rebnconv4 = REBNCONV(mid_ch, mid_ch, dilation=8)
        self.rebnconv3d = REBNCONV(mid_ch * 2, mid_ch, dilation=4)
        self.rebnconv2d = REBNCONV(mid_ch * 2, mid_ch, dilation=2)
        self.rebnconv1d = REBNCONV(mid_ch * 2, out_ch, dilation=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hxin = self.rebnconvin(x)
        hx1 = self.rebnconv1(hxin)
        hx2 = self.rebnconv2(hx1)
        hx3 = self.rebnconv3(hx2)
        hx4 = self.rebnconv4(hx3)
        hx3d = self.rebnconv3d(torch.cat((hx4, hx3), 1))
        hx2d = self.rebnconv2d(torch.cat((hx3d, hx2), 1))
        hx1d = self.rebnconv1d(torch.cat((hx2d, hx1), 1))
        return hx1d + hxin


class NestedUNet(nn.Module):
    """The body U^2-Net and IS-Net share: six encoder stages of RSU blocks (2x max-pooling
    between them), five decoder stages, and a 3x3 side conv on each decoder level.

    Subclasses call ``_add_stages`` where the official model defines those modules, so the
    state-dict order matches theirs, and ``decode`` in their forward pass.
    """

    def _add_stages(self, stages: dict[str, tuple[int, int, int]], side_channels: tuple[int, ...], out_ch: int) -> None:
        heights = {"1": 7, "2": 6, "3": 5, "4": 4}
        for name, (cin, cmid, cout) in stages.items():
            level = name.removeprefix("stage").removesuffix("d")
            block = RSU(heights[level], cin, cmid, cout) if level in heights else RSU4F(cin, cmid, cout)
            setattr(self, name, block)
        for i, ch in enumerate(side_channels, start=1):
            setattr(self, f"side{i}", nn.Conv2d(ch, out_ch, 3, padding=1))

    def decode(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """The map each side conv reads: ``{1: hx1d, ..., 5: hx5d, 6: hx6}``; level i is at
        1/2^(i-1) of ``x``'s size."""
        enc = [self.stage1(x)]  # hx1 .. hx6
        for i in range(2, 7):
            pooled = F.max_pool2d(enc[-1], 2, stride=2, ceil_mode=True)
            enc.append(getattr(self, f"stage{i}")(pooled))
        dec = {6: enc[5]}  # hx6, hx5d .. hx1d
        hx = enc[5]
        for i in range(5, 0, -1):
            hx = getattr(self, f"stage{i}d")(torch.cat((_upsample_like(hx, enc[i - 1]), enc[i - 1]), 1))
            dec[i] = hx
        return dec


class U2Net(NestedUNet):
    """Six encoder stages, five decoder stages, six side outputs fused by a 1x1 conv.

    ``forward`` returns seven probability maps (already through a sigmoid), each (B, 1, H, W):
    the fused ``d0`` first, then the side outputs ``d1 .. d6``, as the official model does.
    Pass ``fused_only=True`` for inference to return ``d0`` alone, and ``logits=True`` for the
    maps before the sigmoid (training: ``BCEWithLogits`` is exact and safe under fp16/bf16
    autocast, where a sigmoid followed by ``BCELoss`` is neither).

    Args:
        stages: (in, mid, out) channels of stage1..stage6 and stage5d..stage1d.
        side_channels: input channels of side1..side6.
    """

    def __init__(
        self,
        stages: dict[str, tuple[int, int, int]],
        side_channels: tuple[int, ...],
        out_ch: int = 1,
    ):
        super().__init__()
        self._add_stages(stages, side_channels, out_ch)
        self.outconv = nn.Conv2d(6 * out_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, fused_only: bool = False, logits: bool = False):
        dec = self.decode(x)
        d1 = self.side1(dec[1])
        sides = [d1] + [_upsample_like(getattr(self, f"side{i}")(dec[i]), d1) for i in range(2, 7)]
        d0 = self.outconv(torch.cat(sides, 1))
        if fused_only:
            return d0 if logits else torch.sigmoid(d0)
        if logits:
            return (d0, *sides)
        return tuple(torch.sigmoid(d) for d in [d0, *sides])


def u2net(out_ch: int = 1) -> U2Net:
    """Full U^2-Net (44.0 M parameters, 176 MB fp32)."""
    return U2Net(
        stages={
            "stage1": (3, 32, 64), "stage2": (64, 32, 128), "stage3": (128, 64, 256),
            "stage4": (256, 128, 512), "stage5": (512, 256, 512), "stage6": (512, 256, 512),
            "stage5d": (1024, 256, 512), "stage4d": (1024, 128, 256), "stage3d": (512, 64, 128),
            "stage2d": (256, 32, 64), "stage1d": (128, 16, 64),
        },
        side_channels=(64, 64, 128, 256, 512, 512),
        out_ch=out_ch,
    )


def u2netp(out_ch: int = 1) -> U2Net:
    """U^2-NetP, the small variant (1.13 M parameters, 4.7 MB fp32)."""
    stages = {"stage1": (3, 16, 64)}
    stages.update({f"stage{i}": (64, 16, 64) for i in range(2, 7)})
    stages.update({f"stage{i}d": (128, 16, 64) for i in range(5, 0, -1)})
    return U2Net(stages=stages, side_channels=(64,) * 6, out_ch=out_ch)
