"""The one mask rule and the one mask reader: any mask file to one channel, then foreground by a named rule.

The project rule (:data:`PROJECT_RULE`) is the only binarisation in the package; every place that turns values into a
mask calls :func:`foreground` (or a reader built on it): reading mask files for training, evaluation, preparation,
statistics, validation, rare-attribute sampling and reports; the metrics; the mask writers (``SaveMasksd``,
``SaveOverlayd``, the evaluation recorder) and the overlay reduction (:func:`reduce_mask`):

- **Foreground is a value at least half its scale** (:data:`FOREGROUND_FRACTION`): ``value >= 0.5 * scale``.
- **The scale** is 1 for probabilities and for arrays already binarised ({0, 1} or bool: predictions, loaded labels,
  metric inputs), so ``>= 0.5``. A mask *file*'s scale comes from its values (:func:`mask_scale`): 255 when any value
  exceeds 1 (an 8-bit {0, 255} mask: 127 is background, 128 foreground), else 1 (a {0, 1} mask: 1 is foreground).
- **One channel**: colour masks count by their brightest channel (Pillow's luminance would read a pure red or blue
  {0, 255} mask as values below half), palette masks by their colours, alpha is dropped (:func:`mask_image`).

The other rule, :data:`OFFICIAL_RULE`, exists only to score as the ISIC challenge's scorer reads
(``isic-monai score``): the file must be single-channel (mode ``L``, or ``1`` read as 0/255) and a pixel is foreground
when its value is above :data:`OFFICIAL_FOREGROUND_ABOVE` (128), so 128 and a {0, 1} mask's 1 are background there.

Under both rules a colour mask whose colour channels are all equal (PH2 stores its truth as RGB with three equal
channels) is a greyscale mask: it is read as its one channel, with a :class:`ColourMaskWarning` naming the file.
Under the official rule a colour mask whose channels differ stays an error (:class:`MaskModeError`).

Every reader here opens files through :func:`isic_monai.data.imageio.open_image` (the pixel cap). Nothing here
imports MONAI or torch; :func:`foreground` takes NumPy arrays and torch tensors alike.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageChops

from isic_monai.data.imageio import UnreadableImageError, open_image, reading

__all__ = [
    "FOREGROUND_FRACTION",
    "OFFICIAL_FOREGROUND_ABOVE",
    "OFFICIAL_RULE",
    "PROJECT_RULE",
    "ColourMaskWarning",
    "MaskModeError",
    "binarize",
    "equal_channels_grey",
    "foreground",
    "foreground_threshold",
    "mask_image",
    "mask_scale",
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
FOREGROUND_FRACTION = 0.5
"""The project rule: a value is foreground when it is at least this fraction of its scale (:func:`mask_scale`)."""

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


def mask_scale(high: float) -> float:
    """The scale of a mask file's values whose largest is ``high``: 255 when it exceeds 1 (an 8-bit {0, 255} mask),
    else 1 (a {0, 1} mask; also the scale of probabilities and binarised arrays)."""
    return 255.0 if high > 1 else 1.0


def foreground_threshold(high: float) -> float:
    """The project rule's threshold for values whose largest is ``high``: foreground is ``value >= threshold``.

    Returns:
        127.5 when ``high`` exceeds 1 (128 and above are foreground), else 0.5.
    """
    return FOREGROUND_FRACTION * mask_scale(high)


def foreground(values: Any, scale: float | None = None) -> Any:
    """The project rule: ``values >= 0.5 * scale`` as a bool array or tensor of the same shape (bool input as it is).

    Args:
        values: a NumPy array or torch tensor (any dtype).
        scale: 1 for probabilities and binarised arrays (``>= 0.5``), 255 for 8-bit masks; ``None``: a mask file's
            values, scale from their largest value (:func:`mask_scale`).
    """
    if str(values.dtype) in ("bool", "torch.bool"):
        return values
    if scale is None:
        empty = (values.numel() if hasattr(values, "numel") else values.size) == 0
        scale = mask_scale(0.0 if empty else float(values.max()))
    return values >= FOREGROUND_FRACTION * scale


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
    return foreground(values)


def read_mask_values(path: str | Path) -> np.ndarray:
    """The 8-bit values of a single-channel mask (mode ``L``, or ``1`` as 0/255), as the official scorer reads.

    A colour mask with equal colour channels is read as its one channel, with a :class:`ColourMaskWarning`.

    Raises:
        MaskModeError: the mask is not single-channel (nor colour with equal channels).
        UnreadableImageError: the file cannot be opened or decoded (named in the message).
    """
    with open_image(path, "a mask") as img, reading(path, "a mask"):
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
    with open_image(path, "a mask") as img, reading(path, "a mask"):
        values = np.asarray(mask_image(img))
    return binarize(values, PROJECT_RULE)


def resize_mask(mask: np.ndarray, hw: tuple[int, int]) -> Image.Image:
    """Resize a bool mask to ``(H, W)`` with NEAREST; returns an 8-bit {0, 255} ``"L"`` image."""
    img = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
    if img.size != (hw[1], hw[0]):
        img = img.resize((hw[1], hw[0]), Image.Resampling.NEAREST)
    return img


def reduce_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A binarised mask or probabilities (scale 1: foreground from 0.5) reduced to ``(H, W)`` by area, as a bool
    array: foreground where at least half of the covered pixels were (the project rule again, on the box average).

    Pillow's box filter rather than :func:`resize_mask`'s NEAREST: at a large reduction (a 6000×4000 photo's overlay)
    NEAREST keeps one source pixel in many and can break a thin region apart.
    """
    grey = Image.fromarray(foreground(np.asarray(mask), scale=1).astype(np.uint8) * 255, mode="L")
    return foreground(np.asarray(grey.resize((hw[1], hw[0]), Image.Resampling.BOX)), scale=255)


def read_mask_resized(path: str | Path, hw: tuple[int, int],
                      expected_hw: tuple[int, int] | None = None) -> Image.Image:
    """A mask file under the project rule, resized (NEAREST) to ``(H, W)`` as an 8-bit {0, 255} ``"L"`` image.

    The same as ``resize_mask(read_mask(path), hw)``, faster for grey masks: NEAREST resizing only picks source
    pixels, so one-band masks are resized first and binarised at the small size, with the scale taken from the
    full image's value range (``getextrema``). Other modes go through :func:`read_mask`.

    Raises:
        ValueError: the mask's size is not ``expected_hw`` (its image's).
        UnreadableImageError: the file cannot be opened or decoded (named in the message).
    """
    arr: np.ndarray | None = None
    with open_image(path, "a mask") as img, reading(path, "a mask"):
        wh = img.size
        if (expected_hw is None or (wh[1], wh[0]) == tuple(expected_hw)) and img.getbands() in _FAST_BANDS:
            high = img.getextrema()[1]
            small = img if img.size == (hw[1], hw[0]) else img.resize((hw[1], hw[0]), Image.Resampling.NEAREST)
            arr = np.asarray(small)
    if expected_hw is not None and (wh[1], wh[0]) != tuple(expected_hw):
        raise ValueError(f"mask is {wh[0]}x{wh[1]} (WxH) but its image is {expected_hw[1]}x{expected_hw[0]}")
    if arr is None:
        return resize_mask(read_mask(path), hw)
    mask = foreground(arr, mask_scale(high))
    return Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
