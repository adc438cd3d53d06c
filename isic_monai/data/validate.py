"""Bad-input checks: corrupt or truncated files, missing or extra masks, size mismatches, modes, non-binary masks.

Every check returns :class:`~isic_monai.data.records.Problem` records instead of raising, so a dataset build can
report the COMPLETE list of problems at once. Errors stop a build (:class:`~isic_monai.data.records.DataError`)
unless ``skip_bad`` is set; warnings never do. The records themselves live in :mod:`isic_monai.data.records`.

Image modes (documented in ``docs/data.md``):

- ``RGB``: accepted.
- ``RGBA``, ``LA``, ``P``, ``PA``, ``L``, ``1``, ``CMYK``, ``YCbCr``: accepted with a ``mode_converted`` warning;
  they are converted to RGB (alpha dropped, grey replicated) by ``isic-monai prepare``.
- 16-bit or float (``I;16*``, ``I``, ``F``): error ``bit_depth`` (no safe automatic scaling; convert to 8-bit).

Masks must be 8-bit with values in {0, 255} or {0, 1}, counted as every reader reads them
(:func:`isic_monai.data.masks.mask_image`: palette masks by their colours, colour masks by their brightest channel,
alpha dropped); a mask of several bands gets a ``mode_converted`` warning; other values are the error ``non_binary``.

Every file is opened through :func:`isic_monai.data.imageio.open_image`: one above the pixel cap (or Pillow's
decompression-bomb limit) is the error ``too_large``, and nothing of it is decoded. Image sizes are the displayed
ones (EXIF orientation applied, :func:`isic_monai.data.imageio.displayed_size`), as the bundle's reader loads photos.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from functools import partial

import numpy as np
from PIL import Image, UnidentifiedImageError

from isic_monai.data.imageio import ImageTooLargeError, displayed_size, has_end_marker, open_image
from isic_monai.data.masks import ColourMaskWarning, mask_image
from isic_monai.data.parallel import progress_map
from isic_monai.data.records import Problem, Sample

__all__ = [
    "VERIFY_MODES",
    "check_image",
    "check_mask",
    "validate_sample",
    "validate_samples",
]

VERIFY_MODES: tuple[str, ...] = ("quick", "full")
"""``quick``: headers, JPEG/PNG end markers and full mask decoding; ``full``: decode every image too."""

_HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_DRAFT_FORMATS = ("JPEG", "MPO")
_DRAFT_SCALE = 8
_POOL_MIN_SAMPLES = 65
"""Fewer samples are validated in this process even with ``workers > 1`` (a pool costs more than it saves)."""


def _read_error(path: str, err: Exception, what: str) -> Problem:
    """A ``too_large``, ``truncated`` or ``corrupt`` problem for an exception raised while opening or decoding
    ``path``."""
    text = str(err) or type(err).__name__
    if isinstance(err, (ImageTooLargeError, Image.DecompressionBombError)) or isinstance(
            err.__cause__, Image.DecompressionBombError):
        return Problem(path, "too_large", f"cannot read {what}: {text}")
    truncated = not isinstance(err, UnidentifiedImageError) and "truncat" in text.replace(path, "").lower()
    kind = "truncated" if truncated else "corrupt"
    return Problem(path, kind, f"cannot read {what}: {text}")


def _image_mode_problem(path: str, mode: str) -> Problem | None:
    """``bit_depth`` error for 16-bit/float images, ``mode_converted`` warning for other non-RGB modes."""
    if mode in _HIGH_DEPTH:
        return Problem(path, "bit_depth", f"{mode} ({'16-bit' if mode.startswith('I;16') else mode}) "
                       "images are not supported: convert to 8-bit RGB")
    if mode != "RGB":
        how = "alpha dropped" if "A" in mode else "converted"
        return Problem(path, "mode_converted", f"{mode} image is read as RGB ({how}) by prepare/loading", "warning")
    return None


def check_image(path: str | os.PathLike, verify: str = "quick", *, draft: bool = False
                ) -> tuple[tuple[int, int] | None, list[Problem]]:
    """Check one input image.

    ``quick`` reads the header and, for JPEG/PNG, checks the end-of-image marker (catches truncated downloads
    without decoding); other formats (BMP, TIFF) are decoded. ``full`` decodes every image.

    Args:
        path: image file.
        verify: ``"quick"`` or ``"full"``.
        draft: decode JPEGs at 1/8 scale (Pillow's ``Image.draft``) when they are decoded: every byte of the
            compressed data is still read, so truncated or corrupt files are caught, several times faster
            (folder inference checks its inputs this way).

    Returns:
        ``((H, W) or None when unreadable, problems)``; the size is the file's as displayed (EXIF orientation
        applied), not the draft's.
    """
    spath = str(path)
    try:
        with open_image(spath) as img:
            fmt, mode, (w, h) = img.format, img.mode, img.size
            shown = displayed_size(img)
            if verify == "full" or fmt not in ("JPEG", "PNG", "MPO"):
                if draft and fmt in _DRAFT_FORMATS:
                    img.draft("RGB", (max(1, w // _DRAFT_SCALE), max(1, h // _DRAFT_SCALE)))
                img.load()
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for damaged files; a check reports them
        return None, [_read_error(spath, err, "image")]
    problems: list[Problem] = []
    if verify != "full" and has_end_marker(spath, fmt) is False:
        marker = "IEND chunk" if fmt == "PNG" else "end-of-image marker (FF D9)"
        problems.append(Problem(spath, "truncated", f"{fmt} file has no {marker}: truncated or partly downloaded"))
    mode_problem = _image_mode_problem(spath, mode)
    if mode_problem is not None:
        problems.append(mode_problem)
    return shown, problems


def check_mask(path: str | os.PathLike, image_hw: tuple[int, int] | None, what: str = "mask"
               ) -> tuple[tuple[int, int] | None, list[Problem]]:
    """Decode one mask and check its mode, values and size, reading its values as every mask reader does
    (:func:`isic_monai.data.masks.mask_image`), so ``non_binary`` means values the project rule would binarise.

    Args:
        path: mask file.
        image_hw: ``(H, W)`` of its image, or None to skip the size check.
        what: word used in messages (``"mask"``, ``"attribute mask"``).

    Returns:
        ``((H, W) or None when unreadable, problems)``.
    """
    spath = str(path)
    problems: list[Problem] = []
    try:
        with open_image(spath, what) as img, warnings.catch_warnings():
            warnings.simplefilter("ignore", ColourMaskWarning)  # reported below as a problem instead
            mode, bands, (w, h) = img.mode, img.getbands(), img.size
            if mode in _HIGH_DEPTH:
                return (h, w), [Problem(spath, "bit_depth", f"{what} is {mode} (16-bit/float): "
                                        "save it as an 8-bit {0, 255} PNG")]
            # the one channel every reader sees; Pillow counts its values while decoding (no full-size NumPy copy:
            # docs/performance.md)
            counts = np.asarray(mask_image(img).histogram()[:256])
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for damaged files; a check reports them
        return None, [_read_error(spath, err, what)]
    if len(bands) > 1:
        problems.append(Problem(spath, "mode_converted", f"{mode} {what}: read as one channel (the brightest colour "
                                "channel, alpha dropped)", "warning"))
    if counts is not None:
        values = np.flatnonzero(counts)
        if not (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}):
            shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
            problems.append(Problem(spath, "non_binary", f"{what} has {len(values)} distinct values ({shown}); "
                                    "expected {0, 255} or {0, 1} (JPEG-compressed or anti-aliased? threshold it)"))
    if image_hw is not None and (h, w) != tuple(image_hw):
        hint = " (transposed: width and height swapped)" if (w, h) == tuple(image_hw) else ""
        problems.append(Problem(spath, "size_mismatch", f"{what} is {w}x{h} (WxH) but its image is "
                                f"{image_hw[1]}x{image_hw[0]}{hint}"))
    return (h, w), problems


def validate_sample(sample: Sample, verify: str = "quick") -> tuple[list[int] | None, list[Problem]]:
    """Check a sample's image, lesion mask and attribute masks.

    Args:
        sample: a parsed sample (see :class:`isic_monai.data.records.Sample`).
        verify: ``"quick"`` or ``"full"`` (see :func:`check_image`).

    Returns:
        ``([H, W] of the image or None, problems)``.
    """
    hw, problems = check_image(sample.image, verify)
    if sample.label is not None:
        problems += check_mask(sample.label, hw, "mask")[1]
    for path in (sample.attributes or {}).values():
        if path is not None:
            problems += check_mask(path, hw, "attribute mask")[1]
    return (list(hw) if hw else None), problems


def validate_samples(samples: Sequence[Sample], verify: str = "quick", workers: int = 1,
                     progress: bool = False) -> list[Problem]:
    """Validate samples in place: sets ``sample.orig_size`` and appends to ``sample.problems``.

    Args:
        samples: parsed samples.
        verify: ``"quick"`` or ``"full"``.
        workers: processes (1 = in this process; a pool only from 65 samples on).
        progress: show a tqdm progress bar.

    Returns:
        All problems found by this pass.

    Raises:
        ValueError: on an unknown ``verify`` mode.
    """
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
    results = progress_map(partial(validate_sample, verify=verify), list(samples), workers=workers,
                           progress=progress, desc="validate", unit="img", min_pool_items=_POOL_MIN_SAMPLES)
    found: list[Problem] = []
    for sample, (hw, problems) in zip(samples, results, strict=True):
        sample.orig_size = hw
        sample.problems.extend(problems)
        found += problems
    return found
