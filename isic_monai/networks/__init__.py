"""In-house networks (ConvNeXtUNet, XceptionUNet, a tensor-returning UNet++), ImageNet encoders for MONAI's
FlexibleUNet (EfficientNet-Lite0/1/2, MONAI's EfficientNet-B*), pretrained-weight loading, handlers.

Every network of the project is one override file away from the bundle: ``configs/networks/<name>.yaml`` defines
``network_def`` and ``size_multiple``. :func:`network_config_names` lists them.
"""

from __future__ import annotations

from pathlib import Path

from isic_monai.networks.convnext_unet import ConvNeXtEncoder, ConvNeXtUNet
from isic_monai.networks.efficientnet_lite import EfficientNetLiteEncoder, lite_weights_path, load_lite_weights
from isic_monai.networks.flexible import ImageNetFlexibleUNet, monai_imagenet_weights, parameter_groups
from isic_monai.networks.handlers import FreezeEncoderHandler, unwrap_network
from isic_monai.networks.placement import on_device
from isic_monai.networks.pretrained import convert_convnext_state_dict, load_convnext_encoder_weights
from isic_monai.networks.wrappers import UNetPlusPlus
from isic_monai.networks.xception_unet import XceptionUNet
from isic_monai.paths import CONFIG_DIR

__all__ = [
    "NETWORK_CONFIG_DIR",
    "ConvNeXtEncoder",
    "ConvNeXtUNet",
    "EfficientNetLiteEncoder",
    "FreezeEncoderHandler",
    "ImageNetFlexibleUNet",
    "UNetPlusPlus",
    "XceptionUNet",
    "convert_convnext_state_dict",
    "load_convnext_encoder_weights",
    "lite_weights_path",
    "load_lite_weights",
    "monai_imagenet_weights",
    "network_config_names",
    "network_config_path",
    "on_device",
    "parameter_groups",
    "unwrap_network",
]

NETWORK_CONFIG_DIR: Path = CONFIG_DIR / "networks"
"""``configs/networks`` (of the checkout, or the installed data files: :mod:`isic_monai.paths`)."""


def network_config_names(config_dir: str | Path | None = None) -> list[str]:
    """Names (file stems) of the network override files, sorted.

    Args:
        config_dir: folder to list; ``configs/networks`` of the checkout by default.

    Returns:
        e.g. ``["attention_unet", "convnext_unet", ...]``; empty when the folder does not exist.
    """
    folder = Path(config_dir) if config_dir is not None else NETWORK_CONFIG_DIR
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def network_config_path(name: str, config_dir: str | Path | None = None) -> Path:
    """Path of ``configs/networks/<name>.yaml``.

    Args:
        name: network config name, e.g. ``"attention_unet"``.
        config_dir: folder holding the files; ``configs/networks`` of the checkout by default.

    Returns:
        The file path.

    Raises:
        FileNotFoundError: naming the available configs when the file does not exist.
    """
    folder = Path(config_dir) if config_dir is not None else NETWORK_CONFIG_DIR
    path = folder / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no network config {path}; available: {network_config_names(folder)}")
    return path
