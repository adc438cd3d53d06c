"""XceptionUNet: the Keras "Image segmentation with a U-Net-like architecture" network, in PyTorch.

The Keras example (an Xception-style encoder with separable convolutions and residual projections, and a decoder
of transposed convolutions with upsampled residual projections) is a popular ISIC 2016 baseline. Differences from
the Keras code: outputs are logits (no softmax), channels are first, and ``features`` is configurable.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from isic_monai.networks.convnext_unet import check_spatial_size

__all__ = ["SeparableConv2d", "XceptionUNet"]


class SeparableConv2d(nn.Module):
    """Keras ``SeparableConv2D``: a 3x3 depthwise conv (no bias) then a 1x1 pointwise conv (with bias).

    Args:
        in_channels: input channels.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class DownBlock(nn.Module):
    """(ReLU, SeparableConv, BN) x2, 3x3 stride-2 max pool, plus a 1x1 stride-2 projection of the block input."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            SeparableConv2d(in_channels, out_channels),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            SeparableConv2d(out_channels, out_channels),
            nn.BatchNorm2d(out_channels),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        self.residual = nn.Conv2d(in_channels, out_channels, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.residual(x)


class UpBlock(nn.Module):
    """(ReLU, 3x3 ConvTranspose, BN) x2, nearest x2 upsampling, plus an upsampled 1x1 projection of the block input."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(in_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.ConvTranspose2d(out_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.Upsample(scale_factor=2.0, mode="nearest"),
        )
        self.residual = nn.Sequential(
            nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(in_channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.residual(x)


class XceptionUNet(nn.Module):
    """The Keras U-Net-like Xception network: entry conv, separable-conv down blocks, transposed-conv up blocks.

    With ``features=(32, 64, 128, 256)``: a 3x3 stride-2 entry conv to 32 channels, down blocks to 64, 128, 256
    (each halving the size), up blocks to 256, 128, 64, 32 (each doubling it) and a 3x3 conv to ``out_channels`` at
    full resolution. Returns logits.

    Args:
        in_channels: image channels.
        out_channels: output channels.
        features: entry-conv channels followed by the down-block channels; the up blocks use them reversed.

    Raises:
        ValueError: at forward time, when the input height or width is not a multiple of ``2 ** len(features)``
            (16 by default: the entry conv and each down block halve the size).
    """

    def __init__(
        self, in_channels: int = 3, out_channels: int = 1, features: Sequence[int] = (32, 64, 128, 256)
    ) -> None:
        super().__init__()
        feats = [int(f) for f in features]
        if len(feats) < 2:
            raise ValueError(f"features needs at least two entries, got {features}")
        self.size_multiple: int = 2 ** len(feats)
        self.entry = nn.Sequential(
            nn.Conv2d(in_channels, feats[0], 3, stride=2, padding=1), nn.BatchNorm2d(feats[0]), nn.ReLU()
        )
        self.down = nn.Sequential(*[DownBlock(a, b) for a, b in zip(feats[:-1], feats[1:], strict=True)])
        up_channels = feats[::-1]
        up_in = [feats[-1], *up_channels[:-1]]
        self.up = nn.Sequential(*[UpBlock(a, b) for a, b in zip(up_in, up_channels, strict=True)])
        self.head = nn.Conv2d(feats[0], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_spatial_size(int(x.shape[-2]), int(x.shape[-1]), self.size_multiple, "XceptionUNet")
        return self.head(self.up(self.down(self.entry(x))))
