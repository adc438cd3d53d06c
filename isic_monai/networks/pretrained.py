"""Load ImageNet ConvNeXt weights (official, timm or torchvision key layout) into a ConvNeXt encoder.

The encoder of :class:`~isic_monai.networks.convnext_unet.ConvNeXtUNet` uses the names of the official
facebookresearch/ConvNeXt release. timm and torchvision checkpoints are renamed to that layout here, so a checkpoint
downloaded once (by whatever tool) loads from a local file without timm or torchvision being importable. Classifier
keys (official ``norm.*``/``head.*``, timm ``head.*``, torchvision ``classifier.*``) are dropped.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

import torch
from torch import nn

__all__ = [
    "convert_convnext_state_dict",
    "detect_convnext_layout",
    "load_convnext_encoder_weights",
    "load_state_dict_file",
    "unwrap_state_dict",
]

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "network")
_PREFIXES = ("module.", "encoder.", "backbone.", "model.")

# timm -> official
_TIMM_RULES: tuple[tuple[str, str], ...] = (
    (r"^stem\.(\d+)\.", r"downsample_layers.0.\1."),
    (r"^stages\.(\d+)\.downsample\.(\d+)\.", r"downsample_layers.\1.\2."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.conv_dw\.", r"stages.\1.\2.dwconv."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc(\d)\.", r"stages.\1.\2.pwconv\3."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.ls\.gamma$", r"stages.\1.\2.gamma"),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2."),
)

# torchvision: features.0 = stem, features.{2,4,6} = downsampling, features.{1,3,5,7} = stages 0..3
_TV_BLOCK_PARTS = {"0": "dwconv", "2": "norm", "3": "pwconv1", "5": "pwconv2"}


def unwrap_state_dict(obj: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """Return the tensor mapping inside a checkpoint, unwrapping ``{"model": ...}``/``{"state_dict": ...}``.

    Leading ``module.``, ``encoder.``, ``backbone.`` or ``model.`` prefixes (DDP, this package, detection
    frameworks) are stripped when every key carries them.

    Args:
        obj: the object returned by ``torch.load``.

    Returns:
        A flat ``{name: tensor}`` dict.

    Raises:
        TypeError: when no tensor mapping is found.
    """
    current: object = obj
    for _ in range(3):
        if isinstance(current, Mapping) and not any(isinstance(v, torch.Tensor) for v in current.values()):
            inner = next((current[k] for k in _WRAPPER_KEYS if k in current), None)
            if inner is None:
                break
            current = inner
    if not isinstance(current, Mapping):
        raise TypeError(f"checkpoint holds {type(current).__name__}, not a state dict")
    state = {str(k): v for k, v in current.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise TypeError(f"no tensors found in checkpoint (top-level keys: {sorted(map(str, obj))[:10]})")
    if any(k.startswith("encoder.downsample_layers.") for k in state):  # a whole ConvNeXtUNet checkpoint
        state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def detect_convnext_layout(state: Mapping[str, torch.Tensor]) -> str:
    """Name the key layout of a ConvNeXt state dict: ``"official"``, ``"timm"`` or ``"torchvision"``.

    Args:
        state: a flat state dict.

    Returns:
        The layout name.

    Raises:
        ValueError: when the keys match none of the three layouts.
    """
    keys = list(state)
    if any(k.startswith("features.") for k in keys):
        return "torchvision"
    if any(k.startswith("stem.") or ".blocks." in k for k in keys):
        return "timm"
    if any(k.startswith(("downsample_layers.", "stages.")) for k in keys):
        return "official"
    raise ValueError(f"unrecognised ConvNeXt key layout (first keys: {keys[:5]})")


def _is_classifier_key(key: str, layout: str) -> bool:
    if layout == "official":
        return key.startswith(("head.", "norm."))
    if layout == "timm":
        return key.startswith(("head.", "norm_pre."))
    return key.startswith("classifier.")


def _rename_timm(key: str) -> str:
    for pattern, repl in _TIMM_RULES:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    return key


def _rename_torchvision(key: str) -> str:
    match = re.match(r"^features\.(\d+)\.(.*)$", key)
    if not match:
        return key
    index, rest = int(match.group(1)), match.group(2)
    if index == 0:
        return f"downsample_layers.0.{rest}"
    if index % 2 == 0:
        return f"downsample_layers.{index // 2}.{rest}"
    stage = (index - 1) // 2
    block = re.match(r"^(\d+)\.(block\.(\d+)\.(.+)|layer_scale)$", rest)
    if not block:
        return f"stages.{stage}.{rest}"
    if block.group(2) == "layer_scale":
        return f"stages.{stage}.{block.group(1)}.gamma"
    part = _TV_BLOCK_PARTS.get(block.group(3))
    if part is None:
        return f"stages.{stage}.{rest}"
    return f"stages.{stage}.{block.group(1)}.{part}.{block.group(4)}"


def convert_convnext_state_dict(
    state: Mapping[str, torch.Tensor], layout: str | None = None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a ConvNeXt state dict to the official layout and drop its classifier keys.

    Args:
        state: a flat state dict in the official, timm or torchvision layout.
        layout: the layout, detected when ``None``.

    Returns:
        ``(converted, ignored)``: the renamed encoder tensors and the classifier keys that were dropped.
    """
    layout = layout or detect_convnext_layout(state)
    rename = {"official": lambda k: k, "timm": _rename_timm, "torchvision": _rename_torchvision}[layout]
    converted: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, value in state.items():
        if _is_classifier_key(key, layout):
            ignored.append(key)
            continue
        converted[rename(key)] = value
    return converted, ignored


def _fit_shape(key: str, value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Reshape layouts that differ only by singleton axes (torchvision ``(C,1,1)`` layer scale, timm 1x1-conv MLP)."""
    if value.shape == target.shape:
        return value
    if value.numel() == target.numel() and [s for s in value.shape if s != 1] == [s for s in target.shape if s != 1]:
        return value.reshape(target.shape)
    raise ValueError(
        f"shape mismatch for '{key}': checkpoint has {tuple(value.shape)}, model expects {tuple(target.shape)} "
        "(is the checkpoint a different ConvNeXt size than the encoder's depths/dims?)"
    )


def _find_encoder(module: nn.Module) -> nn.Module:
    """Unwrap DDP/DataParallel (``.module``) and a U-Net (``.encoder``) down to the ConvNeXt encoder."""
    from isic_monai.networks.handlers import unwrap_network

    module = unwrap_network(module)
    encoder = getattr(module, "encoder", module)
    if not (hasattr(encoder, "downsample_layers") and hasattr(encoder, "stages")):
        raise TypeError(f"{type(module).__name__} has no ConvNeXt encoder (downsample_layers/stages)")
    return encoder


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a local checkpoint with ``torch.load(map_location="cpu", weights_only=True)`` and unwrap it.

    Args:
        path: the checkpoint file.

    Returns:
        A flat state dict.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    return unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def load_convnext_encoder_weights(
    encoder_or_model: nn.Module,
    path: str | os.PathLike[str] | Mapping[str, torch.Tensor],
    strict: bool = False,
) -> tuple[list[str], list[str]]:
    """Load ConvNeXt weights from a local file (or a state dict) into a ConvNeXt encoder.

    Accepts the official facebookresearch/ConvNeXt layout (``downsample_layers.*``, ``stages.N.M.dwconv`` ...),
    timm (``stem.*``, ``stages.N.downsample.*``, ``stages.N.blocks.M.conv_dw``/``mlp.fc1``/``gamma``) and torchvision
    (``features.*`` with ``block.0/2/3/5`` and ``layer_scale``); classifier keys are ignored.

    Args:
        encoder_or_model: a :class:`ConvNeXtEncoder`, a :class:`ConvNeXtUNet` or either wrapped in DDP.
        path: a local checkpoint file, or an already loaded state dict.
        strict: raise a ``KeyError`` when keys are missing or unexpected instead of logging them.

    Returns:
        ``(missing_keys, unexpected_keys)`` in the encoder's (official) naming; both are also logged as warnings.

    Raises:
        ValueError: on a shape mismatch, naming the key and both shapes (nothing is loaded then).
        KeyError: with ``strict=True``, when keys are missing or unexpected.
    """
    encoder = _find_encoder(encoder_or_model)
    if isinstance(path, Mapping):
        source, where = unwrap_state_dict(path), "state dict"
    else:
        source, where = load_state_dict_file(path), os.fspath(path)
    layout = detect_convnext_layout(source)
    converted, ignored = convert_convnext_state_dict(source, layout)
    target = encoder.state_dict()
    fitted = {k: _fit_shape(k, v, target[k]) for k, v in converted.items() if k in target}
    missing = sorted(set(target) - set(fitted))
    unexpected = sorted(set(converted) - set(target))
    if strict and (missing or unexpected):
        raise KeyError(f"ConvNeXt weights from {where}: missing keys {missing}, unexpected keys {unexpected}")
    encoder.load_state_dict(fitted, strict=False)
    logger.info(
        "loaded %d ConvNeXt encoder tensors from %s (%s layout, %d classifier keys ignored)",
        len(fitted),
        where,
        layout,
        len(ignored),
    )
    if missing:
        logger.warning("ConvNeXt encoder keys missing from %s (left as initialised): %s", where, missing)
    if unexpected:
        logger.warning("unexpected ConvNeXt keys in %s (not loaded): %s", where, unexpected)
    return missing, unexpected
