"""IS-Net (``ISNetDIS``), with the official state-dict keys.

Qin et al., "Highly Accurate Dichotomous Image Segmentation", ECCV 2022. The segmentation
network is U^2-Net's nested U-structure (``NestedUNet``: the same RSU stages, decoder and side
convs) behind a stride-2 3x3 stem ``conv_in``, so stage1 works at half the input size, and
without U^2-Net's fusion conv: the top side output ``d1``, upsampled to the input, is the mask.
Module names follow xuebinqin/DIS ``IS-Net/models/isnet.py``, so an official ``isnet.pth`` or
``isnet-general-use.pth`` loads with ``strict=True`` (``../shared/reference/isnet_state_dict.json``).

The paper's second network, the ground-truth encoder that supervises the decoder's features
during the official training ("intermediate supervision"), is not built here: clearbg trains
IS-Net like U^2-Net, with the deep-supervision loss on its six side outputs.
"""

from __future__ import annotations

import torch
from torch import nn

from clearbg.models.u2net import NestedUNet, _upsample_like


class ISNet(NestedUNet):
    """Stem conv, six encoder stages, five decoder stages, six side outputs.

    ``forward`` follows the U^2-Net convention, so training, the predictor and the ONNX export
    treat it like the other families: a tuple of (B, 1, H, W) probability maps at the input's
    size, the main output first (``d1``, the official inference output), then ``d2 .. d6``;
    ``fused_only=True`` returns ``d1`` alone, ``logits=True`` the maps before the sigmoid. (The
    official forward also returns the decoder features, which only its feature loss reads.)

    Any input size works (sides that are not multiples of 64 are handled by ceil-mode pooling
    and upsampling to the skip's size); the released weights were trained at 1024x1024.

    Example:
        >>> model = isnet().eval()
        >>> model(torch.rand(1, 3, 64, 96), fused_only=True).shape
        torch.Size([1, 1, 64, 96])
    """

    def __init__(self, stages: dict[str, tuple[int, int, int]], side_channels: tuple[int, ...],
                 in_ch: int = 3, out_ch: int = 1):
        super().__init__()
        # No BatchNorm after the stem: a plain conv with bias, as in the official model.
        self.conv_in = nn.Conv2d(in_ch, stages["stage1"][0], 3, stride=2, padding=1)
        self._add_stages(stages, side_channels, out_ch)

    def forward(self, x: torch.Tensor, fused_only: bool = False, logits: bool = False):
        dec = self.decode(self.conv_in(x))  # level 1 at H/2 x W/2
        d1 = _upsample_like(self.side1(dec[1]), x)
        if fused_only:  # inference: the other five sides are never looked at
            return d1 if logits else torch.sigmoid(d1)
        sides = [d1] + [_upsample_like(getattr(self, f"side{i}")(dec[i]), x) for i in range(2, 7)]
        return tuple(sides) if logits else tuple(torch.sigmoid(d) for d in sides)


def isnet(out_ch: int = 1) -> ISNet:
    """IS-Net as ``ISNetDIS(3, 1)`` (44.0 M parameters, 176 MB fp32): U^2-Net's stage widths
    with stage1 reading the 64-channel stem instead of the photo."""
    return ISNet(
        stages={
            "stage1": (64, 32, 64), "stage2": (64, 32, 128), "stage3": (128, 64, 256),
            "stage4": (256, 128, 512), "stage5": (512, 256, 512), "stage6": (512, 256, 512),
            "stage5d": (1024, 256, 512), "stage4d": (1024, 128, 256), "stage3d": (512, 64, 128),
            "stage2d": (256, 32, 64), "stage1d": (128, 16, 64),
        },
        side_channels=(64, 64, 128, 256, 512, 512),
        out_ch=out_ch,
    )
