"""Small Pillow helpers shared by validation, preparation and statistics: file kinds, photo decoding and resizing,
errors that name the file, atomic saves (masks: :mod:`isic_monai.data.masks`).

Nothing here imports MONAI or torch, so the command line starts quickly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from isic_monai.data.records import IsicMonaiError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MASK_EXTENSIONS",
    "UnreadableImageError",
    "has_end_marker",
    "is_image_file",
    "open_rgb",
    "reading",
    "resize_image",
    "save_atomic",
    "target_size",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
"""File extensions recognised as images (lower case)."""

MASK_EXTENSIONS: tuple[str, ...] = (".png", ".bmp", ".tif", ".tiff", ".gif", ".jpg", ".jpeg")
"""File extensions recognised as masks (lower case). JPEG masks are accepted only if they are still binary."""

_JPEG_EOI = b"\xff\xd9"
_PNG_IEND = b"IEND\xaeB`\x82"
_TAIL_BYTES = 4096


class UnreadableImageError(IsicMonaiError, OSError):
    """A file that Pillow cannot open or decode, named in the message: ``<path>: cannot be read as <what> (...)``.

    An ``OSError``, so callers that catch Pillow's usual ``OSError`` keep working; it also stands for the errors Pillow
    raises that are not ``OSError`` (``DecompressionBombError`` for huge declared dimensions, ``SyntaxError``,
    ``ValueError``, ``EOFError``), which would otherwise escape such callers and stop a whole batch.
    """


@contextmanager
def reading(path: str | Path, what: str) -> Iterator[None]:
    """Turn any error raised while Pillow opens or decodes ``path`` into an :class:`UnreadableImageError` naming it."""
    try:
        yield
    except UnreadableImageError:
        raise
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for damaged files; each is named here
        raise UnreadableImageError(f"{path}: cannot be read as {what} ({type(err).__name__}: {err})") from err


def is_image_file(path: str | Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> bool:
    """Whether ``path`` names a visible file with one of ``extensions`` (macOS ``._`` files are ignored)."""
    name = os.path.basename(str(path))
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions


def has_end_marker(path: str | Path, fmt: str | None) -> bool | None:
    """Check that a JPEG ends with its end-of-image marker or a PNG with its ``IEND`` chunk.

    Reads only the last few kilobytes, so truncated downloads are caught without decoding.

    Args:
        path: the file.
        fmt: Pillow format name (``"JPEG"``, ``"PNG"``, ...).

    Returns:
        True or False for JPEG and PNG, None for formats without a cheap check.
    """
    if fmt not in ("JPEG", "PNG", "MPO"):
        return None
    marker = _PNG_IEND if fmt == "PNG" else _JPEG_EOI
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - _TAIL_BYTES))
        tail = fh.read()
    if fmt == "PNG":
        return tail.endswith(marker)
    # JPEG files may carry padding or trailing data after EOI; the marker must be in the tail.
    return marker in tail


def target_size(orig_hw: tuple[int, int], size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """Output ``(H, W)`` for an image of ``orig_hw`` and a requested size.

    Args:
        orig_hw: original ``(H, W)``.
        size: one int = the longest side (aspect ratio kept, shorter side rounded, at least 1), or ``(H, W)``.

    Returns:
        ``(H, W)`` of the resized image.
    """
    if isinstance(size, (list, tuple)):
        if len(size) == 1:
            size = int(size[0])
        else:
            return int(size[0]), int(size[1])
    h, w = orig_hw
    longest = max(h, w)
    scale = int(size) / longest
    return max(1, round(h * scale)), max(1, round(w * scale))


def open_rgb(path: str | Path, draft_hw: tuple[int, int] | None = None) -> Image.Image:
    """Open an image as RGB, decoding JPEGs at reduced scale when a target size is given.

    ``Image.draft`` lets the JPEG decoder produce a 1/2, 1/4 or 1/8 scale image that is still at least
    ``draft_hw``, which is several times faster than decoding full-size ISIC images.

    Args:
        path: image file.
        draft_hw: final ``(H, W)``; None decodes at full size.

    Returns:
        A loaded RGB image (alpha is dropped, greyscale replicated).

    Raises:
        UnreadableImageError: the file cannot be opened or decoded (named in the message).
    """
    with reading(path, "an image"):
        img = Image.open(path)
        if draft_hw is not None and img.format in ("JPEG", "MPO"):
            img.draft("RGB", (draft_hw[1], draft_hw[0]))
        img.load()
        if img.mode != "RGB":
            img = img.convert("RGB")
    return img


def resize_image(img: Image.Image, hw: tuple[int, int]) -> Image.Image:
    """Resize an RGB image to ``(H, W)`` with LANCZOS (no-op when it already has that size)."""
    if img.size == (hw[1], hw[0]):
        return img
    return img.resize((hw[1], hw[0]), Image.Resampling.LANCZOS, reducing_gap=3.0)


def save_atomic(img: Image.Image, path: str | Path, **kwargs: object) -> None:
    """Save ``img`` with Pillow through :func:`isic_monai.data.atomic.atomic_path` (format from ``path``'s suffix)."""
    from isic_monai.data.atomic import atomic_path

    with atomic_path(path) as tmp:  # the temporary name ends with path's suffix: Pillow picks the format from it
        img.save(tmp, **kwargs)
