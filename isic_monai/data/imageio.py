"""Small Pillow helpers shared by validation, preparation and statistics: file kinds, photo decoding and resizing,
errors that name the file, atomic saves (masks: :mod:`isic_monai.data.masks`).

Two rules hold for every reader of the package (photos and masks, the bundle's ``rgb_reader``/``mask_reader``
included), decided here once:

- **One pixel cap.** A file whose header declares more than :func:`max_pixels` pixels (50 million by default; the
  largest real dermoscopy photos have about 24 million) is refused before it is decoded, with
  :class:`ImageTooLargeError` naming the file, its size and the cap; the environment variable
  :data:`MAX_PIXELS_ENV` (``ISIC_MONAI_MAX_PIXELS``) sets another cap. Pillow's own decompression-bomb check still
  refuses anything above twice ``Image.MAX_IMAGE_PIXELS`` (about 179 million) when the file is opened, and its
  warning for the band between is not shown: the cap decides.
- **Photos as a user sees them.** A photo's EXIF orientation (phone dermatoscopes store one) is applied when it is
  read (:func:`upright`, Pillow's ``ImageOps.exif_transpose``), and :func:`displayed_size` gives the size a viewer
  shows, so a mask is written in the photo's displayed orientation and size. Masks are read as stored.

Nothing here imports MONAI or torch, so the command line starts quickly.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, ImageOps

from isic_monai.data.records import IsicMonaiError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "MASK_EXTENSIONS",
    "MAX_PIXELS_ENV",
    "ImageTooLargeError",
    "UnreadableImageError",
    "check_pixels",
    "displayed_size",
    "has_end_marker",
    "is_image_file",
    "max_pixels",
    "open_image",
    "open_rgb",
    "orientation",
    "reading",
    "resize_image",
    "save_atomic",
    "target_size",
    "upright",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
"""File extensions recognised as images (lower case)."""

MASK_EXTENSIONS: tuple[str, ...] = (".png", ".bmp", ".tif", ".tiff", ".gif", ".jpg", ".jpeg")
"""File extensions recognised as masks (lower case). JPEG masks are accepted only if they are still binary."""

DEFAULT_MAX_PIXELS = 50_000_000
"""The pixel cap of every reader unless :data:`MAX_PIXELS_ENV` sets another: twice the largest real dermoscopy
photos (about 24 million pixels), well below Pillow's decompression-bomb warning (about 89 million)."""

MAX_PIXELS_ENV = "ISIC_MONAI_MAX_PIXELS"
"""The environment variable that sets the pixel cap (a positive integer, e.g. ``100000000``)."""

_ORIENTATION_TAG = 0x0112
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
"""EXIF orientations that turn the photo a quarter turn (or transpose it): width and height swap on display."""

_JPEG_EOI = b"\xff\xd9"
_PNG_IEND = b"IEND\xaeB`\x82"
_TAIL_BYTES = 4096


class UnreadableImageError(IsicMonaiError, OSError):
    """A file that Pillow cannot open or decode, named in the message: ``<path>: cannot be read as <what> (...)``.

    An ``OSError``, so callers that catch Pillow's usual ``OSError`` keep working; it also stands for the errors Pillow
    raises that are not ``OSError`` (``DecompressionBombError`` for huge declared dimensions, ``SyntaxError``,
    ``ValueError``, ``EOFError``), which would otherwise escape such callers and stop a whole batch.
    """


class ImageTooLargeError(UnreadableImageError):
    """A file whose header declares more pixels than :func:`max_pixels`, refused before decoding (named, with its
    size and the cap, in the message)."""


@contextmanager
def reading(path: str | Path, what: str) -> Iterator[None]:
    """Turn any error raised while Pillow opens or decodes ``path`` into an :class:`UnreadableImageError` naming it."""
    try:
        yield
    except UnreadableImageError:
        raise
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for damaged files; each is named here
        raise UnreadableImageError(f"{path}: cannot be read as {what} ({type(err).__name__}: {err})") from err


def max_pixels() -> int:
    """The pixel cap of every reader: :data:`MAX_PIXELS_ENV` when set, else :data:`DEFAULT_MAX_PIXELS`.

    Raises:
        ValueError: the variable is set to something other than a positive integer.
    """
    text = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{MAX_PIXELS_ENV}={os.environ[MAX_PIXELS_ENV]!r}: expected a positive number of pixels")
    return value


def check_pixels(image: Image.Image, path: str | Path | None = None, limit: int | None = None) -> None:
    """Refuse an opened (not yet decoded) image above the pixel cap; Pillow reads the size from the header.

    Args:
        image: a lazily opened Pillow image.
        path: the file, for the message (default: the image's ``filename``).
        limit: the cap (default :func:`max_pixels`).

    Raises:
        ImageTooLargeError: ``<path>: 12000x9000 pixels (108.0 Mpx) exceeds limit of 50 Mpx ...``.
    """
    limit = max_pixels() if limit is None else int(limit)
    width, height = image.size
    if width * height > limit:
        name = path or getattr(image, "filename", None) or "image"
        raise ImageTooLargeError(
            f"{name}: {width}x{height} pixels ({width * height / 1e6:.1f} Mpx) exceeds limit of {limit / 1e6:g} Mpx "
            f"of every reader; not decoded (set {MAX_PIXELS_ENV} to raise the cap)")


def open_image(path: str | Path, what: str = "an image") -> Image.Image:
    """Open a file lazily with Pillow and check the pixel cap before anything is decoded.

    Pillow's decompression-bomb warning (images above about 89 million pixels) is not shown: the cap decides.

    Raises:
        ImageTooLargeError: the header declares more than :func:`max_pixels` pixels.
        UnreadableImageError: Pillow cannot open the file (named in the message).
    """
    with reading(path, what), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(path)
    try:
        check_pixels(image, path)
    except ImageTooLargeError:
        image.close()
        raise
    return image


def orientation(image: Image.Image) -> int:
    """A photo's EXIF orientation (1 to 8; 1 when absent or unreadable), read from the header without decoding.

    A PNG counts only an ``eXIf`` chunk before its pixel data (Pillow would decode the file to look further).
    """
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        with warnings.catch_warnings():  # Pillow warns about a damaged EXIF block; the photo is then shown unturned
            warnings.simplefilter("ignore")
            value = int(image.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - a damaged EXIF block is no reason to refuse a photo: it is shown unturned
        return 1
    return value if 1 <= value <= 8 else 1


def displayed_size(image: Image.Image) -> tuple[int, int]:
    """``(H, W)`` of a photo as a viewer shows it (its EXIF orientation applied), from the header alone."""
    width, height = image.size
    return (width, height) if orientation(image) in _SWAPPING_ORIENTATIONS else (height, width)


def upright(image: Image.Image, turn: int | None = None) -> Image.Image:
    """A photo turned as its EXIF orientation says (Pillow's ``ImageOps.exif_transpose``); itself when upright.

    Args:
        image: the photo (decoded here if it is not yet).
        turn: its :func:`orientation`, read before decoding (default: read now). A PNG decoded since may have met
            an ``eXIf`` chunk after its pixel data, which :func:`displayed_size` does not see: passing the
            orientation read from the header keeps the two in agreement.
    """
    if (orientation(image) if turn is None else turn) == 1:
        return image
    return ImageOps.exif_transpose(image)


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
    """Open a photo as RGB, as a viewer shows it (EXIF orientation applied), decoding JPEGs at reduced scale when a
    target size is given.

    ``Image.draft`` lets the JPEG decoder produce a 1/2, 1/4 or 1/8 scale image that is still at least
    ``draft_hw``, which is several times faster than decoding full-size ISIC images.

    Args:
        path: image file.
        draft_hw: final ``(H, W)`` in the displayed orientation; None decodes at full size.

    Returns:
        A loaded RGB image (alpha is dropped, greyscale replicated), upright (:func:`upright`).

    Raises:
        ImageTooLargeError: the file declares more than :func:`max_pixels` pixels (nothing is decoded).
        UnreadableImageError: the file cannot be opened or decoded (named in the message).
    """
    img = open_image(path)
    with reading(path, "an image"):
        turn = orientation(img)
        if draft_hw is not None and img.format in ("JPEG", "MPO"):
            turned = turn in _SWAPPING_ORIENTATIONS
            img.draft("RGB", (draft_hw[0], draft_hw[1]) if turned else (draft_hw[1], draft_hw[0]))
        img.load()
        img = upright(img, turn)
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
