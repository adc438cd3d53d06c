"""Thin wrappers that make MONAI networks return a single tensor, as the bundle's loss and inferer expect."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import BasicUNetPlusPlus
from torch import nn

__all__ = ["UNetPlusPlus"]


class UNetPlusPlus(nn.Module):
    """MONAI ``BasicUNetPlusPlus`` returning the final output tensor instead of a one-element list.

    ``BasicUNetPlusPlus.forward`` always returns a list (``[x_0_4]``, or four outputs with deep supervision), which
    the bundle's ``DiceCELoss``, sliding-window inferer and ``verify_net_in_out`` cannot take. Deep supervision is
    therefore not offered, and the three deep-supervision heads that ``BasicUNetPlusPlus`` builds anyway
    (``final_conv_0_1``..``0_3``, unused without deep supervision) are replaced by identities: parameters that never
    get a gradient would make DistributedDataParallel fail unless ``find_unused_parameters=True``. Every other
    argument is passed through. The MONAI network is the ``net`` attribute.

    Args:
        spatial_dims: 2 for dermoscopy images.
        in_channels: image channels.
        out_channels: output channels.
        features: six feature sizes, as in ``BasicUNetPlusPlus``.
        **kwargs: ``act``, ``norm``, ``bias``, ``dropout``, ``upsample``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        features: Sequence[int] = (32, 32, 64, 128, 256, 32),
        **kwargs: object,
    ) -> None:
        super().__init__()
        self.net = BasicUNetPlusPlus(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            features=features,
            deep_supervision=False,
            **kwargs,
        )
        for unused in ("final_conv_0_1", "final_conv_0_2", "final_conv_0_3"):
            setattr(self.net, unused, nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[-1]
