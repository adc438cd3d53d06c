"""In-house networks (ConvNeXtUNet, XceptionUNet, a tensor-returning UNet++), ImageNet encoders for MONAI's
FlexibleUNet (EfficientNet-Lite0/1/2, MONAI's EfficientNet-B*), pretrained-weight loading, handlers.

Every network of the project is one override file away from the bundle: ``configs/networks/<name>.yaml`` defines
the whole network, ``network_name``, ``network_def``, ``size_multiple``, ``network_parameters`` and
``network_train_handlers`` (:func:`isic_monai.bundle.paths.network_config_names` lists them; docs/networks.md).
"""

from __future__ import annotations

from isic_monai.networks.convnext_unet import ConvNeXtEncoder, ConvNeXtUNet
from isic_monai.networks.efficientnet_lite import EfficientNetLiteEncoder, lite_weights_path, load_lite_weights
from isic_monai.networks.flexible import ImageNetFlexibleUNet, monai_imagenet_weights, parameter_groups
from isic_monai.networks.handlers import FreezeEncoderHandler, unwrap_network
from isic_monai.networks.placement import on_device
from isic_monai.networks.pretrained import convert_convnext_state_dict, load_convnext_encoder_weights
from isic_monai.networks.wrappers import UNetPlusPlus
from isic_monai.networks.xception_unet import XceptionUNet

__all__ = [
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
    "on_device",
    "parameter_groups",
    "unwrap_network",
]
