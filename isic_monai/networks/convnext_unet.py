"""ConvNeXtUNet: a ConvNeXt-Tiny encoder with a residual, attention-gated U-Net decoder at full resolution.

Why in-house: ConvNeXt lives in timm and torchvision, and neither can be imported beside the CPU build of torch this
project pins (the only torchvision that pins torch 2.13 is CUDA-linked: ``operator torchvision::nms does not
exist``). The encoder is therefore written here with the module and parameter names of the official
facebookresearch/ConvNeXt release (``downsample_layers.0.0.weight``, ``stages.0.0.dwconv.weight``,
``stages.0.0.norm.weight``, ``stages.0.0.pwconv1.weight``, ``stages.0.0.pwconv2.weight``, ``stages.0.0.gamma``), so an
official ImageNet checkpoint loads straight into :attr:`ConvNeXtUNet.encoder`; timm and torchvision checkpoints load
through :func:`isic_monai.networks.pretrained.load_convnext_encoder_weights`, which renames their keys.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvNeXtBlock", "ConvNeXtEncoder", "ConvNeXtUNet", "DropPath", "LayerNorm2d"]

logger = logging.getLogger(__name__)

SIZE_MULTIPLE: int = 32
"""ConvNeXtUNet input height and width must be multiples of this (stride-4 stem and three stride-2 downsamplings)."""


def check_spatial_size(height: int, width: int, multiple: int, name: str) -> None:
    """Raise a ``ValueError`` when ``height`` or ``width`` is not a multiple of ``multiple``.

    Args:
        height: input height.
        width: input width.
        multiple: the divisor both must respect.
        name: the network name used in the message.

    Raises:
        ValueError: naming the required multiple and the given size.
    """
    if height % multiple != 0 or width % multiple != 0:
        raise ValueError(
            f"{name} needs input height and width that are multiples of {multiple}; got {height}x{width} "
            f"(resize or pad to a multiple of {multiple})."
        )


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample with probability ``drop_prob`` in training.

    Args:
        drop_prob: probability of dropping the branch of one sample.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = [x.shape[0]] + [1] * (x.dim() - 1)
        mask = torch.rand(shape, dtype=x.dtype, device=x.device) < keep
        return x * mask.to(x.dtype) / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (the official ``LayerNorm(data_format="channels_first")``).

    Parameters are named ``weight`` and ``bias`` as in the official release.

    Args:
        num_channels: number of channels.
        eps: numerical epsilon (1e-6 in ConvNeXt).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, [self.num_channels], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 conv, channels-last LayerNorm, 4x inverted MLP with GELU, layer scale, drop path.

    Args:
        dim: channels.
        drop_path: stochastic depth probability of this block.
        layer_scale_init_value: initial value of ``gamma``; ``<= 0`` disables layer scale (``gamma`` stays ones and
            is not trained).
    """

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init_value: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        use_scale = layer_scale_init_value > 0
        self.gamma = nn.Parameter(
            torch.full((dim,), layer_scale_init_value if use_scale else 1.0), requires_grad=use_scale
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.dwconv(x)
        x = x.permute(0, 2, 3, 1)
        x = self.norm(x)
        x = self.pwconv2(self.act(self.pwconv1(x)))
        x = self.gamma * x
        x = x.permute(0, 3, 1, 2)
        return shortcut + self.drop_path(x)


class ConvNeXtEncoder(nn.Module):
    """ConvNeXt feature extractor named like the official release; returns the four stage outputs (strides 4-32).

    Args:
        in_channels: image channels.
        depths: blocks per stage (Tiny: 3, 3, 9, 3).
        dims: channels per stage (Tiny: 96, 192, 384, 768).
        drop_path_rate: stochastic depth rate, increased linearly over all blocks up to this value.
        layer_scale_init_value: initial layer scale.
    """

    def __init__(
        self,
        in_channels: int = 3,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        drop_path_rate: float = 0.1,
        layer_scale_init_value: float = 1e-6,
    ) -> None:
        super().__init__()
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"ConvNeXt needs four stages: got depths={tuple(depths)}, dims={tuple(dims)}.")
        self.dims = tuple(int(d) for d in dims)
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(
            nn.Sequential(nn.Conv2d(in_channels, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0], eps=1e-6))
        )
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(LayerNorm2d(dims[i], eps=1e-6), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2))
            )
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.stages = nn.ModuleList()
        start = 0
        for i, depth in enumerate(depths):
            blocks = [ConvNeXtBlock(dims[i], rates[start + j], layer_scale_init_value) for j in range(depth)]
            self.stages.append(nn.Sequential(*blocks))
            start += depth
        self.apply(_init_encoder_weights)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features: list[torch.Tensor] = []
        for down, stage in zip(self.downsample_layers, self.stages):  # noqa: B905 (TorchScript has no strict=)
            x = stage(down(x))
            features.append(x)
        return features


def _init_encoder_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) weights and zero biases for convs and linears, as in the official release."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ResidualBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers with a (1x1 projected) identity shortcut, then ReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018): weights a skip feature by a map computed with the gating signal.

    The gating signal is the upsampled decoder feature, already at the skip's resolution.

    Args:
        skip_channels: channels of the skip feature ``x``.
        gate_channels: channels of the gating signal ``g``.
        inter_channels: channels of the intermediate space.
    """

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.w_x = nn.Sequential(
            nn.Conv2d(skip_channels, inter_channels, 1, bias=False), nn.BatchNorm2d(inter_channels)
        )
        self.w_g = nn.Sequential(
            nn.Conv2d(gate_channels, inter_channels, 1, bias=False), nn.BatchNorm2d(inter_channels)
        )
        self.psi = nn.Sequential(nn.Conv2d(inter_channels, 1, 1), nn.BatchNorm2d(1), nn.Sigmoid())

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        attention = self.psi(F.relu(self.w_x(x) + self.w_g(g)))
        return x * attention


class DecoderStage(nn.Module):
    """Upsample x2 (transposed conv), gate the skip feature, concatenate and fuse with a residual block.

    Args:
        in_channels: channels of the coarser decoder feature.
        skip_channels: channels of the skip feature at the finer resolution.
        out_channels: channels after the stage.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.gate = AttentionGate(skip_channels, out_channels, max(min(skip_channels, out_channels) // 2, 8))
        self.block = ResidualBlock(out_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        skip = self.gate(skip, x)
        return self.block(torch.cat([x, skip], dim=1))


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ConvNeXtUNet(nn.Module):
    """U-Net with a ConvNeXt-Tiny encoder and a residual, attention-gated decoder that returns full-size logits.

    Encoder features at strides 4, 8, 16 and 32 (``dims``) are decoded by ``decoder_channels`` stages at strides 16,
    8, 4 and 2, each an x2 transposed conv, an additive attention gate on the skip and a residual block. The stem is
    stride 4, so there is no encoder feature at strides 2 and 1: two light conv skips computed from the input
    (``full_res_skip`` at stride 1, ``half_res_skip`` at stride 2) feed the stride-2 stage and a last stride-1 stage
    with ``decoder_channels[-1] // 2`` channels, followed by a 1x1 conv head. Outputs are logits (no activation).

    Why in-house: timm and torchvision cannot run beside the CPU torch pinned here, so the encoder is written with
    the official facebookresearch/ConvNeXt names (``encoder.downsample_layers.*``, ``encoder.stages.*``) and
    official, timm or torchvision checkpoints load with
    :func:`~isic_monai.networks.pretrained.load_convnext_encoder_weights`.

    Args:
        in_channels: image channels.
        out_channels: output channels (1 for Task 1, 5 for Task 2).
        depths: encoder blocks per stage.
        dims: encoder channels per stage.
        drop_path_rate: encoder stochastic depth rate.
        layer_scale_init_value: encoder layer scale initial value.
        decoder_channels: channels of the four decoder stages (strides 16, 8, 4, 2).
        pretrained_path: local checkpoint of a ConvNeXt with the same ``depths``/``dims`` (official, timm or
            torchvision key layout); ``None`` trains from scratch.
        strict: when loading ``pretrained_path``, raise if an encoder key is missing or unexpected.

    Raises:
        ValueError: at forward time, when the input height or width is not a multiple of 32.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        drop_path_rate: float = 0.1,
        layer_scale_init_value: float = 1e-6,
        decoder_channels: Sequence[int] = (256, 128, 64, 32),
        pretrained_path: str | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__()
        if len(decoder_channels) != 4:
            raise ValueError(f"decoder_channels needs four entries (strides 16, 8, 4, 2); got {decoder_channels}.")
        dec = [int(c) for c in decoder_channels]
        full_res_channels = max(dec[-1] // 2, 8)
        self.encoder = ConvNeXtEncoder(in_channels, depths, dims, drop_path_rate, layer_scale_init_value)
        self.full_res_skip = _conv_bn_relu(in_channels, full_res_channels)
        self.half_res_skip = _conv_bn_relu(full_res_channels, dec[-1], stride=2)
        skip_channels = [dims[2], dims[1], dims[0], dec[-1]]
        in_chs = [dims[3], *dec[:-1]]
        self.decoder = nn.ModuleList(DecoderStage(i, s, o) for i, s, o in zip(in_chs, skip_channels, dec, strict=True))
        self.final_stage = DecoderStage(dec[-1], full_res_channels, full_res_channels)
        self.head = nn.Conv2d(full_res_channels, out_channels, kernel_size=1)
        self._layer_scale = layer_scale_init_value > 0
        self.size_multiple: int = SIZE_MULTIPLE
        if pretrained_path:
            from isic_monai.networks.pretrained import load_convnext_encoder_weights

            load_convnext_encoder_weights(self, pretrained_path, strict=strict)
        else:
            logger.info("ConvNeXtUNet: no pretrained_path given, the encoder trains from scratch.")

    def freeze_encoder(self, flag: bool = True) -> None:
        """Freeze (``flag=True``) or unfreeze the encoder parameters by setting ``requires_grad``.

        Layer scales of an encoder built with ``layer_scale_init_value <= 0`` stay frozen (they are fixed ones).

        Args:
            flag: whether to freeze.
        """
        for name, param in self.encoder.named_parameters():
            if name.endswith("gamma") and not self._layer_scale:
                continue
            param.requires_grad_(not flag)

    def encoder_frozen(self) -> bool:
        """Whether no encoder parameter has ``requires_grad`` on."""
        return not any(p.requires_grad for p in self.encoder.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_spatial_size(int(x.shape[-2]), int(x.shape[-1]), self.size_multiple, "ConvNeXtUNet")
        full = self.full_res_skip(x)
        half = self.half_res_skip(full)
        features = self.encoder(x)
        y = features[3]
        skips = [features[2], features[1], features[0], half]
        for i, stage in enumerate(self.decoder):
            y = stage(y, skips[i])
        y = self.final_stage(y, full)
        return self.head(y)
