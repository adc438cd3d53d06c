"""The one mask reader: any mask file to one channel, then binarised by a named rule.

Two rules, because the challenge's scorer and a forgiving reader disagree on purpose:

- :data:`PROJECT_RULE` (training, evaluation, preparation, statistics, reports): colour masks count by their
  brightest channel (Pillow's luminance would read a pure red or blue {0, 255} mask as values below the threshold),
  palette masks by their colours, alpha is dropped; a pixel is foreground above half the value range (above 127
  when any value exceeds 1, else above 0), so {0, 1} and {0, 255} masks both read as drawn.
- :data:`OFFICIAL_RULE` (``isic-monai score``, as the ISIC challenge's scorer reads): the file must be
  single-channel (mode ``L``, or ``1`` read as 0/255) and a pixel is foreground when its value is above
  :data:`OFFICIAL_FOREGROUND_ABOVE` (128); a {0, 1} mask is therefore empty.

Under both rules a colour mask whose colour channels are all equal (PH2 stores its truth as RGB with three equal
channels) is a greyscale mask: it is read as its one channel, with a :class:`ColourMaskWarning` naming the file.
Under the official rule a colour mask whose channels differ stays an error (:class:`MaskModeError`).

Nothing here imports MONAI or torch.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageChops

from isic_monai.data.imageio import UnreadableImageError, reading

__all__ = [
    "OFFICIAL_FOREGROUND_ABOVE",
    "OFFICIAL_RULE",
    "PROJECT_RULE",
    "ColourMaskWarning",
    "MaskModeError",
    "binarize",
    "equal_channels_grey",
    "mask_image",
    "project_threshold",
    "read_mask",
    "read_mask_resized",
    "read_mask_values",
    "reduce_mask",
    "resize_mask",
]

PROJECT_RULE = "project"
OFFICIAL_RULE = "official"
Rule = Literal["project", "official"]
OFFICIAL_FOREGROUND_ABOVE = 128
"""The ISIC scorer's rule: a mask pixel is foreground when its 8-bit value is above 128."""

_FAST_BANDS: tuple[tuple[str, ...], ...] = (("L",), ("1",))
"""``Image.getbands()`` of the modes :func:`read_mask_resized` may resize before binarising (values, not palettes)."""


class MaskModeError(UnreadableImageError):
    """A mask the official rule cannot read: not single-channel (the file is named in the message)."""


class ColourMaskWarning(UserWarning):
    """A mask stored in colour with equal colour channels, read as greyscale (the message names the file)."""


_COLOUR_MODES = ("RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV", "LAB")


def equal_channels_grey(image: Image.Image) -> Image.Image | None:
    """The one channel of a colour (or palette) mask whose red, green and blue channels are all equal.

    Alpha is ignored. Returns:
        the ``L`` image, or ``None`` when the channels differ somewhere.
    """
    red, green, blue = image.convert("RGB").split()
    if ImageChops.difference(red, green).getbbox() or ImageChops.difference(red, blue).getbbox():
        return None
    return red


def _warn_grey(image: Image.Image, path: str | Path | None) -> None:
    name = path or getattr(image, "filename", None) or "mask"
    warnings.warn(f"{name}: mode {image.mode} with equal colour channels, read as a greyscale mask",
                  ColourMaskWarning, stacklevel=3)


def project_threshold(high: float) -> float:
    """The project rule's threshold for a mask whose largest value is ``high``: half of a 0..255 or 0..1 scale.

    Returns:
        127 when ``high`` exceeds 1 (a {0, 255} mask), else 0 (a {0, 1} mask); foreground is ``value > threshold``.
    """
    return 127 if high > 1 else 0


def mask_image(image: Image.Image) -> Image.Image:
    """Any mask mode as one channel: colour by its brightest channel, palette by its colours, alpha dropped, ``1``
    as 0/255; other single-channel modes (``L``, ``I;16``, ``I``, ``F``) as they are."""
    if image.mode in ("LA", "La", "PA"):
        image = image.convert("LA").getchannel("L")
    if image.mode == "P" or image.mode in _COLOUR_MODES:
        grey = equal_channels_grey(image)
        if grey is not None:
            _warn_grey(image, None)
            return grey
        red, green, blue = image.convert("RGB").split()
        return ImageChops.lighter(ImageChops.lighter(red, green), blue)
    if image.mode == "1":
        return image.convert("L")
    return image


def binarize(values: np.ndarray, rule: Rule = PROJECT_RULE) -> np.ndarray:
    """One channel's values as a bool mask under ``rule`` (a bool array is returned as it is)."""
    if values.dtype == bool:
        return values
    if rule == OFFICIAL_RULE:
        return values > OFFICIAL_FOREGROUND_ABOVE
    return values > project_threshold(float(values.max(initial=0)))


def read_mask_values(path: str | Path) -> np.ndarray:
    """The 8-bit values of a single-channel mask (mode ``L``, or ``1`` as 0/255), as the official scorer reads.

    A colour mask with equal colour channels is read as its one channel, with a :class:`ColourMaskWarning`.

    Raises:
        MaskModeError: the mask is not single-channel (nor colour with equal channels).
        UnreadableImageError: the file cannot be opened or decoded (named in the message).
    """
    with reading(path, "a mask"), Image.open(path) as img:
        img.load()
        if img.mode == "1":
            img = img.convert("L")
        if img.mode == "L":
            return np.asarray(img)
        grey = equal_channels_grey(img) if img.mode == "P" or img.mode in _COLOUR_MODES else None
        if grey is None:
            differ = " whose channels differ" if img.mode == "P" or img.mode in _COLOUR_MODES else ""
            raise MaskModeError(f"{path}: mode {img.mode}{differ}, not a single-channel (greyscale) mask")
        _warn_grey(img, path)
        return np.asarray(grey)


def read_mask(path: str | Path, rule: Rule = PROJECT_RULE) -> np.ndarray:
    """A mask file as a bool ``(H, W)`` array under ``rule`` (see the module docstring).

    Raises:
        MaskModeError: ``rule`` is official and the mask is not single-channel.
        UnreadableImageError: the file cannot be opened or decoded (named in the message).
    """
    if rule == OFFICIAL_RULE:
        return binarize(read_mask_values(path), OFFICIAL_RULE)
    with reading(path, "a mask"), Image.open(path) as img:
        values = np.asarray(mask_image(img))
    return binarize(values, PROJECT_RULE)


def resize_mask(mask: np.ndarray, hw: tuple[int, int]) -> Image.Image:
    """Resize a bool mask to ``(H, W)`` with NEAREST; returns an 8-bit {0, 255} ``"L"`` image."""
    img = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
    if img.size != (hw[1], hw[0]):
        img = img.resize((hw[1], hw[0]), Image.Resampling.NEAREST)
    return img


def reduce_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A mask (foreground above 0.5) reduced to ``(H, W)`` by area, as a bool array: foreground where at least half of
    the covered pixels were.

    Pillow's box filter rather than :func:`resize_mask`'s NEAREST: at a large reduction (a 6000×4000 photo's overlay)
    NEAREST keeps one source pixel in many and can break a thin region apart.
    """
    grey = Image.fromarray((np.asarray(mask) > 0.5).astype(np.uint8) * 255, mode="L")
    return np.asarray(grey.resize((hw[1], hw[0]), Image.Resampling.BOX)) >= 128


def read_mask_resized(path: str | Path, hw: tuple[int, int],
                      expected_hw: tuple[int, int] | None = None) -> Image.Image:
    """A mask file under the project rule, resized (NEAREST) to ``(H, W)`` as an 8-bit {0, 255} ``"L"`` image.

    The same as ``resize_mask(read_mask(path), hw)``, faster for grey masks: NEAREST resizing only picks source
    pixels, so one-band masks are resized first and binarised at the small size, with the threshold taken from the
    full image's value range (``getextrema``). Other modes go through :func:`read_mask`.

    Raises:
        ValueError: the mask's size is not ``expected_hw`` (its image's).
        UnreadableImageError: the file cannot be opened or decoded (named in the message).
    """
    arr: np.ndarray | None = None
    with reading(path, "a mask"), Image.open(path) as img:
        wh = img.size
        if (expected_hw is None or (wh[1], wh[0]) == tuple(expected_hw)) and img.getbands() in _FAST_BANDS:
            high = img.getextrema()[1]
            small = img if img.size == (hw[1], hw[0]) else img.resize((hw[1], hw[0]), Image.Resampling.NEAREST)
            arr = np.asarray(small)
    if expected_hw is not None and (wh[1], wh[0]) != tuple(expected_hw):
        raise ValueError(f"mask is {wh[0]}x{wh[1]} (WxH) but its image is {expected_hw[1]}x{expected_hw[0]}")
    if arr is None:
        return resize_mask(read_mask(path), hw)
    mask = arr if arr.dtype == bool else arr > project_threshold(high)
    return Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
