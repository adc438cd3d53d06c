"""MONAI-style dictionary transforms that MONAI itself does not provide for dermoscopy.

Every transform here fills a gap in MONAI 1.6 (the docstrings say which):

- :class:`BinarizeMaskd` binarises masks stored as {0, 255} *or* {0, 1} (``AsDiscreted(threshold=...)`` needs one
  fixed threshold and would miss one of the two conventions).
- :class:`LoadAttributesd` stacks the five ISIC 2018 Task 2 attribute masks into one multi-channel label and
  treats an absent file (``null`` in the datalist) as an empty mask.
- :class:`RandHueSaturationd` jitters hue and saturation of an RGB tensor (MONAI has brightness and contrast
  transforms but no colour-space jitter; torchvision's ``ColorJitter`` cannot be imported here).
- :class:`AntialiasedResized` is MONAI's ``Resized`` (same metadata, same inverse) with PyTorch's anti-aliased
  interpolation in place of MONAI's Gaussian pre-filter, which is many times slower on full-size photos
  (docs/performance.md, "Settings measured once").
- :class:`ResizeToOriginald` maps a prediction back to the image's original size recorded by ``isic-monai prepare``.
- :class:`SaveMasksd` and :class:`SaveOverlayd` write masks (or probability maps) in the challenges' file naming and
  contour overlays.
- :class:`LabelMapd` turns the per-channel masks into the single label map MONAI Label serves.
- :class:`ApplyThresholdsd` binarises each channel at its own threshold (MONAI's ``AsDiscrete`` has one threshold for
  all channels).
- :class:`CleanMasksd` keeps each channel's largest region and fills its holes (MONAI's transforms, applied per
  channel: their one-hot mode skips channel 0 as background).

Sizes and orientation: every size is (H, W), height first, and every array is (C, H, W), as NumPy, torch and
``np.asarray(PIL.Image)`` have it: ``image_size`` in the configs, ``isic-monai prepare --size H W``, the datalist's
``orig_size`` and the arrays loaded by :func:`rgb_reader` / :func:`mask_reader` (``PILReader(reverse_indexing=False)``).
A pixel ``[h, w]`` of a loaded array is the pixel ``[h, w]`` of the file, and files are written as they are, with no
transpose. Two things outside this project keep MONAI's default PIL order (W, H): ``PILReader``'s ``spatial_shape``
metadata (Pillow's ``(width, height)``, whatever ``reverse_indexing``; nothing here reads it) and MONAI Label, which is
why :class:`LabelMapd` alone hands its map over transposed.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, PILReader
from monai.transforms import (
    FillHoles,
    KeepLargestConnectedComponent,
    LoadImage,
    MapTransform,
    RandomizableTransform,
    Resize,
    Resized,
    Transform,
)
from monai.utils import convert_to_numpy, convert_to_tensor, ensure_tuple
from PIL import Image, ImageChops, ImageFilter

from isic_monai import ATTRIBUTES
from isic_monai.data.imageio import (
    check_pixels,
    displayed_size,
    open_image,
    open_rgb,
    orientation,
    resize_image,
    save_atomic,
    target_size,
    upright,
)
from isic_monai.data.masks import foreground, mask_image, reduce_mask

logger = logging.getLogger(__name__)

__all__ = [
    "CHANNEL_COLOURS",
    "AntialiasedResize",
    "AntialiasedResized",
    "ApplyThresholds",
    "ApplyThresholdsd",
    "BinarizeMaskd",
    "LabelMapd",
    "LoadAttributesd",
    "RandHueSaturationd",
    "ResizeToOriginald",
    "SaveMasksd",
    "SaveOverlayd",
    "binarize_mask",
    "adjust_hue_saturation",
    "label_map",
    "mask_reader",
    "rgb_reader",
    "mask_file_names",
    "CleanMasksd",
    "source_file",
]


def _decoded(image: Image.Image) -> Image.Image:
    """Decode a lazily opened Pillow image, naming its file in any error, after the pixel cap.

    Pillow's decoding errors (``image file is truncated``, ``broken data stream``) do not name the file, and a plain
    RGB photo would otherwise be decoded later, in ``PILReader.get_data``, where nothing adds the name. The cap is
    checked here, not in ``read``: an error in ``read`` makes ``LoadImage`` fall back to MONAI's own ``PILReader``,
    which would decode the file.

    Raises:
        ImageTooLargeError: the file declares more pixels than :func:`isic_monai.data.imageio.max_pixels` (an
            ``OSError`` naming the file, its size and the cap; nothing is decoded).
        OSError: ``<file>: cannot be read as an image (<Pillow's error>)``.
    """
    check_pixels(image)
    try:
        image.load()
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for damaged files; each is named here
        name = getattr(image, "filename", None) or "image"
        raise OSError(f"{name}: cannot be read as an image ({type(err).__name__}: {err})") from err
    return image


def _to_grey(image: Image.Image) -> Image.Image:
    """Pillow converter: any mask mode as one channel, by the project rule's reading
    (:func:`isic_monai.data.masks.mask_image`: colour by its brightest channel); decoding errors name the file."""
    return mask_image(_decoded(image))


def _to_rgb(image: Image.Image) -> Image.Image:
    """Pillow converter: any photo mode (RGBA, L, P, CMYK) as RGB, turned as its EXIF orientation says
    (:func:`isic_monai.data.imageio.upright`: the photo a user sees); decoding errors name the file."""
    turn = orientation(image)  # from the header, as displayed_size reads it
    image = upright(_decoded(image), turn)
    return image if image.mode == "RGB" else image.convert("RGB")


class _NamingPILReader(PILReader):
    """MONAI's ``PILReader`` whose decoding errors name the file.

    ``PILReader`` converts the image in ``read``; when that fails (a truncated PNG), ``LoadImage`` falls back to its
    default ``PILReader``, which opens the file lazily and fails later, in ``get_data``, with Pillow's bare
    ``image file is truncated``. Here ``read`` only opens the files (an unidentifiable file still gives ``LoadImage``'s
    ``cannot find a suitable reader for file: <path>``) and ``get_data`` decodes and converts them, raising
    ``<path>: cannot be read as an image (...)``.
    """

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs: Any) -> Image.Image | list[Image.Image]:
        """Open the file(s) lazily, without decoding or converting (see the class docstring)."""
        kwargs_ = {**self.kwargs, **kwargs}
        with warnings.catch_warnings():  # Pillow's decompression-bomb warning: the pixel cap decides, in get_data
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            images = [Image.open(name, **kwargs_) for name in ensure_tuple(data)]
        return images if len(images) > 1 else images[0]

    def get_data(self, img: Image.Image | Sequence[Image.Image]) -> tuple[np.ndarray, dict]:
        """Decode and convert the image(s) (errors name the file), then PILReader's ``get_data``."""
        images = [self.converter(i) if callable(self.converter) else _decoded(i) for i in ensure_tuple(img)]
        return super().get_data(images if len(images) > 1 else images[0])


def rgb_reader() -> PILReader:
    """A ``PILReader`` that returns every photo as an (H, W, 3) RGB array (RGBA, grey and palette files converted),
    in its displayed orientation (EXIF orientation applied), so predictions and masks match the photo a user sees.

    A file that cannot be decoded raises ``OSError: <path>: cannot be read as an image (...)``; one above the pixel
    cap (:func:`isic_monai.data.imageio.max_pixels`) raises ``ImageTooLargeError`` before it is decoded.
    """
    return _NamingPILReader(converter=_to_rgb, reverse_indexing=False)


def mask_reader() -> PILReader:
    """A ``PILReader`` that returns every mask as one (H, W) 8-bit array (mode 1, P, RGB and LA files converted),
    as stored (no EXIF turn).

    A file that cannot be decoded raises ``OSError: <path>: cannot be read as an image (...)``; one above the pixel
    cap (:func:`isic_monai.data.imageio.max_pixels`) raises ``ImageTooLargeError`` before it is decoded.
    """
    return _NamingPILReader(converter=_to_grey, reverse_indexing=False)


def binarize_mask(mask: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Binarise a mask stored as {0, 255} or {0, 1} at half its scale (the project rule,
    :func:`isic_monai.data.masks.foreground`: 128 and above when any value exceeds 1, else 1).

    The result is float {0, 1} of the same type and shape.
    """
    out = foreground(mask)
    return out.float() if isinstance(out, torch.Tensor) else out.astype(np.float32)


class BinarizeMaskd(MapTransform):
    """Binarise mask keys stored as {0, 255} or {0, 1} (see :func:`binarize_mask`)."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = binarize_mask(d[key])
            if isinstance(d[key], MetaTensor) and isinstance(value, torch.Tensor):
                value = MetaTensor(value, meta=d[key].meta, applied_operations=d[key].applied_operations)
            d[key] = value
        return d


class LoadAttributesd(MapTransform):
    """Load per-attribute mask files and stack them into one channel-first label.

    MONAI's ``LoadImaged`` + ``ConcatItemsd`` would need every file to exist; ISIC copies often lack some attribute
    files (``null`` in the datalist, see docs/data.md), which are loaded here as all-zero masks of the image's size.

    Args:
        keys: the datalist keys of the attribute files, in channel order
            (default ``attribute_<name>`` for :data:`isic_monai.ATTRIBUTES`).
        output_key: the key of the stacked (C, H, W) label.
        ref_key: a key already loaded (the image): an absent mask takes the shape of the present ones, or of this
            key's data when none is present.
        allow_missing_keys: passed to ``MapTransform``.
    """

    def __init__(
        self,
        keys: KeysCollection | None = None,
        output_key: str = "label",
        ref_key: str = "image",
        allow_missing_keys: bool = True,
    ) -> None:
        keys = keys if keys is not None else [f"attribute_{name}" for name in ATTRIBUTES]
        super().__init__(keys, allow_missing_keys)
        self.output_key = output_key
        self.ref_key = ref_key
        self.loader = LoadImage(reader=mask_reader(), image_only=True, ensure_channel_first=False)

    def _load(self, path: str) -> torch.Tensor:
        return convert_to_tensor(self.loader(path), dtype=torch.float32)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        paths = [d.get(key) for key in self.keys]
        loaded = {p: self._load(p) for p in paths if p is not None}
        ref = d[self.ref_key]
        ref_shape = tuple(ref.shape[1:]) if ref.ndim == 3 else tuple(ref.shape[:2])
        shape = next((tuple(t.shape) for t in loaded.values()), ref_shape)
        for path, tensor in loaded.items():
            if tuple(tensor.shape) != shape:
                raise ValueError(f"{path}: attribute mask has spatial shape {tuple(tensor.shape)}, expected {shape}")
        channels = [binarize_mask(loaded[p]) if p is not None else torch.zeros(shape) for p in paths]
        meta = dict(ref.meta) if isinstance(ref, MetaTensor) else {}
        d[self.output_key] = MetaTensor(torch.stack(channels), meta=meta)
        for key in self.keys:  # absent files (None) cannot be collated into a batch
            if key in d and d[key] is None:
                del d[key]
        return d


def adjust_hue_saturation(image: torch.Tensor, hue: float, saturation: float) -> torch.Tensor:
    """Rotate the hue (radians) and scale the saturation of an RGB image in [0, 1], channel first.

    The rotation is a linear map about the grey axis in YIQ space (exact for hue, cheap: one 3×3 matrix).
    """
    cos, sin = math.cos(hue), math.sin(hue)
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]]) @ torch.diag(
        torch.tensor([1.0, saturation, saturation])
    )
    matrix = torch.linalg.inv(to_yiq) @ rot @ to_yiq
    flat = image.reshape(3, -1).float()
    out = (matrix.to(flat) @ flat).reshape(image.shape)
    return out.clamp(0.0, 1.0)


class RandHueSaturationd(RandomizableTransform, MapTransform):
    """Random hue rotation and saturation scaling of RGB images in [0, 1].

    Args:
        keys: RGB image keys (3 channels first).
        prob: probability of applying the jitter.
        hue: maximum absolute hue rotation, as a fraction of a full turn (0.05 = ±18°).
        saturation: (low, high) saturation factor range.
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.3,
        hue: float = 0.05,
        saturation: Sequence[float] = (0.7, 1.3),
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.hue = float(hue)
        self.saturation = (float(saturation[0]), float(saturation[1]))
        self._hue = 0.0
        self._sat = 1.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self._hue = self.R.uniform(-self.hue, self.hue) * 2.0 * math.pi
        self._sat = self.R.uniform(*self.saturation)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            img = d[key]
            out = adjust_hue_saturation(convert_to_tensor(img), self._hue, self._sat)
            if isinstance(img, MetaTensor):
                out = MetaTensor(out, meta=img.meta, applied_operations=img.applied_operations)
            d[key] = out
        return d


ANTIALIASED_MODES = ("bilinear", "bicubic")
"""The interpolation modes PyTorch anti-aliases (``interpolate(antialias=True)``)."""


class AntialiasedResize(Resize):
    """MONAI's ``Resize`` whose downsampling is anti-aliased by ``torch.nn.functional.interpolate(antialias=True)``.

    Why not MONAI's own: ``Resize(anti_aliasing=True)`` smooths the whole full-size image with a Gaussian of sigma
    ``(factor - 1) / 2`` before interpolating (for a 4000×3000 photo going to 160×128, a 100-tap filter over 12 M
    pixels); PyTorch's anti-aliased bilinear interpolation (the triangle filter Pillow uses) is as alias-free at a
    small fraction of the time (docs/performance.md, "Settings measured once"). MONAI's ``Resize`` does
    the bookkeeping (metadata, affine, the record that ``Invertd`` inverts with bilinear upsampling) and its
    non-anti-aliased result is then overwritten with the anti-aliased one; upsampling is MONAI's own.

    Args: as ``monai.transforms.Resize``; downsampling in ``"bilinear"`` or ``"bicubic"`` mode is anti-aliased,
        other modes are MONAI's as they are.
    """

    def __init__(self, spatial_size: Sequence[int] | int, size_mode: str = "all", mode: str = "bilinear",
                 **kwargs: Any) -> None:
        if kwargs.get("lazy"):
            raise ValueError("AntialiasedResize computes its anti-aliased values at once: lazy=True is not supported "
                             "(use monai.transforms.Resize for lazy resampling)")
        super().__init__(spatial_size, size_mode=size_mode, mode=mode, **kwargs)

    def __call__(self, img: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        source = convert_to_tensor(img, track_meta=False)
        mode = kwargs.get("mode") or (args[0] if args else None) or self.mode
        out = super().__call__(img, *args, **{**kwargs, "anti_aliasing": False})
        size = tuple(out.shape[1:])
        shrinks = any(o < i for o, i in zip(size, source.shape[1:], strict=True))
        if shrinks and str(mode) in ANTIALIASED_MODES:  # other modes (nearest for a mask key) stay MONAI's
            smooth = torch.nn.functional.interpolate(source[None].float(), size=size, mode=str(mode),
                                                     antialias=True, align_corners=False)[0]
            target = out.as_tensor() if isinstance(out, MetaTensor) else out
            target.copy_(smooth.to(target.dtype))
        return out


class AntialiasedResized(Resized):
    """Dictionary version of :class:`AntialiasedResize` (``Resized``'s arguments; inverted by ``Invertd``).

    ``spatial_size``, ``size_mode`` and the per-key ``mode`` reach the resizer as they reach ``Resized``'s;
    ``lazy=True`` is refused (see :class:`AntialiasedResize`).
    """

    def __init__(self, keys: KeysCollection, spatial_size: Sequence[int] | int, size_mode: str = "all",
                 mode: str = "bilinear", allow_missing_keys: bool = False, lazy: bool = False, **kwargs: Any) -> None:
        resizer = AntialiasedResize(spatial_size=spatial_size, size_mode=size_mode, mode=mode, lazy=lazy)
        super().__init__(keys, spatial_size, size_mode=size_mode, mode=mode, allow_missing_keys=allow_missing_keys,
                         lazy=lazy, **kwargs)
        self.resizer = resizer


class ResizeToOriginald(MapTransform):
    """Resize predictions to the original image size recorded in the datalist (``orig_size``, [H, W]).

    ``Invertd`` restores the size of the file that was loaded; when that file is a resized cache made by
    ``isic-monai prepare``, this transform takes the prediction the rest of the way back to the photo's own size with
    MONAI's ``Resize`` (no anti-aliasing). It exists because the target size is per entry, a datalist value that
    ``Resized`` (one ``spatial_size`` for all) cannot read. Entries without ``orig_size`` pass through unchanged.

    Args:
        keys: prediction keys (C, H, W).
        size_key: the datalist key holding [H, W].
        mode: interpolation; ``bilinear`` for probabilities, ``nearest`` for binary masks.
    """

    def __init__(
        self, keys: KeysCollection, size_key: str = "orig_size", mode: str = "bilinear", allow_missing_keys=False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.size_key = size_key
        self.mode = mode

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        size = d.get(self.size_key)
        if size is None:
            return d
        height, width = (int(v) for v in convert_to_numpy(size, wrap_sequence=True).reshape(-1)[:2])
        resize = Resize(spatial_size=(height, width), mode=self.mode)
        for key in self.key_iterator(d):
            if tuple(d[key].shape[1:]) == (height, width):
                continue
            keep_meta = isinstance(d[key], MetaTensor)  # a plain tensor stays plain (Resize returns a MetaTensor)
            out = resize(convert_to_tensor(d[key], dtype=torch.float32, track_meta=keep_meta))
            d[key] = out if keep_meta else convert_to_tensor(out)
        return d


def mask_file_names(image_id: str, channel_names: Sequence[str]) -> list[str]:
    """The challenge submission file names for an image's masks.

    ``["lesion"]`` gives the ISIC Task 1 name ``<id>_segmentation.png``; attribute names give the Task 2 names
    ``<id>_attribute_<name>.png``.
    """
    if list(channel_names) == ["lesion"]:
        return [f"{image_id}_segmentation.png"]
    return [f"{image_id}_attribute_{name}.png" for name in channel_names]


def source_file(d: Mapping[Hashable, Any], image_key: str = "image") -> str | None:
    """The file an item's image was loaded from (its metadata's ``filename_or_obj``), or ``None``.

    Args:
        d: a data item (a dictionary transform's input or an engine's decollated output).
        image_key: the image's key; its ``MetaTensor`` metadata, else ``<key>_meta_dict``, is read.
    """
    img = d.get(image_key)
    meta = getattr(img, "meta", None) or d.get(f"{image_key}_meta_dict") or {}
    source = meta.get("filename_or_obj")
    if isinstance(source, (list, tuple)):
        source = source[0] if source else None
    return str(source) if source else None


def item_id(d: Mapping[Hashable, Any], image_key: str = "image") -> str:
    """An item's id: the stem of its source file (:func:`source_file`), else of its ``"id"``."""
    return Path(source_file(d, image_key) or str(d.get("id"))).stem


class SaveMasksd(MapTransform):
    """Write predictions as 8-bit PNGs named as the ISIC challenges expect.

    MONAI's ``SaveImaged`` takes one output postfix per transform; Task 2 needs one file per channel with the
    attribute's name in it, so this writer covers both tasks with one entry in the config.

    Args:
        keys: the prediction key (C, H, W).
        output_dir: the folder to write into (created).
        channel_names: one name per channel (``["lesion"]`` for Task 1, :data:`isic_monai.ATTRIBUTES` for Task 2).
        image_key: the key whose metadata names the source file.
        binary: ``True``: masks, {0, 255}, foreground from 0.5 (the project rule,
            :func:`isic_monai.data.masks.foreground`); ``False``: probability maps in [0, 1] scaled to 0..255.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | Path,
        channel_names: Sequence[str],
        image_key: str = "image",
        binary: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.channel_names = list(channel_names)
        self.image_key = image_key
        self.binary = binary

    def _pixels(self, channel: torch.Tensor | np.ndarray) -> np.ndarray:
        arr = convert_to_numpy(channel)
        if self.binary:
            return foreground(arr, scale=1).astype(np.uint8) * 255
        return np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        image_id = item_id(d, self.image_key)
        for key in self.key_iterator(d):
            pred = d[key]
            if pred.shape[0] != len(self.channel_names):
                raise ValueError(f"{key} has {pred.shape[0]} channels but channel_names has {len(self.channel_names)}")
            for channel, name in zip(pred, mask_file_names(image_id, self.channel_names), strict=True):
                save_atomic(Image.fromarray(self._pixels(channel)), self.output_dir / name)  # whole or absent
        return d


def label_map(masks: torch.Tensor, probs: torch.Tensor | None = None) -> torch.Tensor:
    """One uint8 label map (H, W) from binary masks (C, H, W): 0 background, ``c + 1`` for channel ``c``.

    One channel gives {0, 1}. Where several channels are positive (Task 2 attributes overlap), the one with the
    highest probability wins (the lowest index when ``probs`` is ``None``).
    """
    masks = foreground(convert_to_tensor(masks), scale=1)
    if masks.shape[0] == 1:
        return masks[0].to(torch.uint8)
    score = convert_to_tensor(probs, dtype=torch.float32) if probs is not None else -torch.arange(
        masks.shape[0], dtype=torch.float32).view(-1, *([1] * (masks.ndim - 1))).expand(masks.shape)
    score = torch.where(masks, score, torch.full_like(score, -torch.inf))
    return torch.where(masks.any(0), score.argmax(0) + 1, 0).to(torch.uint8)


class LabelMapd(MapTransform):
    """Replace per-channel binary masks (C, H, W) by one uint8 label map for MONAI Label (see :func:`label_map`).

    MONAI Label serves one label map per image (values matching the metadata's ``channel_def``: 0 background,
    1 lesion; Task 2: 1-5 the attributes), a 2D array of integers that its writers accept; ``SqueezeDimd`` +
    ``CastToTyped`` would cover Task 1 only, and MONAI has no transform that merges overlapping channels.

    The map is handed over transposed, (W, H): MONAI Label (0.8.5), its only consumer, keeps MONAI's default
    ``PILReader`` order. Its ``Restored`` compares the map with the photo's ``spatial_shape`` metadata, which
    ``PILReader`` records as (W, H) whatever ``reverse_indexing``, and its writer (``write_itk``) transposes the array
    before writing, so a (W, H) map comes out as a PNG of the photo's own size and orientation.

    Args:
        keys: binary prediction keys.
        prob_key: the probabilities (same shape) that decide overlaps, or ``None``.
    """

    def __init__(self, keys: KeysCollection, prob_key: str | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.prob_key = prob_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        probs = d.get(self.prob_key) if self.prob_key else None
        for key in self.key_iterator(d):
            value = label_map(d[key], probs).T.contiguous()  # (W, H) for MONAI Label: see the class docstring
            d[key] = MetaTensor(value, meta=d[key].meta) if isinstance(d[key], MetaTensor) else value
        return d


CHANNEL_COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("green", (0, 255, 0)), ("red", (255, 0, 0)), ("blue", (0, 128, 255)), ("yellow", (255, 255, 0)),
    ("magenta", (255, 0, 255)), ("cyan", (0, 255, 255)),
)
"""Each channel's colour, named, in channel order: every overlay, panel and report draws channel ``c`` in
``CHANNEL_COLOURS[c % 6]`` (Task 1's lesion green; Task 2's attributes in :data:`isic_monai.ATTRIBUTES` order)."""


def draw_overlay(photo: np.ndarray, masks: Sequence[np.ndarray], width: int = 2) -> Image.Image:
    """Draw each mask's contour over an RGB photo (both (H, W)) in its own colour (green first).

    The contour is the mask less its 3×3 erosion (Pillow's ``MinFilter``), widened to about ``width`` pixels with
    ``MaxFilter``. MONAI's ``LabelToContour`` finds the same inner edge but pads with zeros, which would draw a line
    along the photo's border under a lesion cut by the frame; Pillow's rank filters repeat the border pixels instead.
    """
    rgb = np.clip(photo, 0, 255).astype(np.uint8)
    out = Image.fromarray(rgb)
    for idx, mask in enumerate(masks):
        binary = foreground(np.asarray(mask), scale=1)
        if not binary.any():
            continue
        filled = Image.fromarray(binary.astype(np.uint8) * 255)
        edge_img = ImageChops.subtract(filled, filled.filter(ImageFilter.MinFilter(3)))
        if width > 1:
            edge_img = edge_img.filter(ImageFilter.MaxFilter(2 * (width // 2) + 1))
        layer = Image.new("RGB", out.size, CHANNEL_COLOURS[idx % len(CHANNEL_COLOURS)][1])
        out = Image.composite(layer, out, edge_img)
    return out


class SaveOverlayd(MapTransform):
    """Write ``<id>_overlay.png``: the predicted contours over the input photo.

    The overlay is a picture for a reader, not a result: a photo whose longest side exceeds ``max_side`` is drawn at
    that size (a JPEG decoded at reduced scale, the masks reduced by area and kept where at least half covered), and
    it is PNG-compressed at ``compress_level``. A 6000×4000 photo's overlay at full size and Pillow's default level
    cost more than the rest of its inference (docs/performance.md). The masks themselves are always written at the
    photo's own size.

    Args:
        keys: the binary prediction key (C, H, W) at the original size.
        output_dir: the folder to write into (created).
        image_key: the key holding the original file path in its metadata (the photo is re-read from disk so the
            overlay is drawn on the untouched original, not on the normalised network input).
        max_side: the overlay's longest side at most; ``None`` or 0 keeps the photo's size.
        compress_level: zlib level of the PNG, 0–9 (1: fastest; Pillow's default is 6).
    """

    def __init__(
        self, keys: KeysCollection, output_dir: str | Path, image_key: str = "image", max_side: int | None = None,
        compress_level: int = 6, allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.image_key = image_key
        self.max_side = int(max_side) if max_side else None
        self.compress_level = int(compress_level)
        if not 0 <= self.compress_level <= 9:
            raise ValueError(f"compress_level must be 0-9, got {compress_level}")

    def overlay_size(self, hw: tuple[int, int]) -> tuple[int, int]:
        """The overlay's ``(H, W)`` for a photo of ``hw``."""
        if self.max_side is None or max(hw) <= self.max_side:
            return hw
        return target_size(hw, self.max_side)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source = source_file(d, self.image_key)
        if source is None:
            return d
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open_image(source) as probe:  # the header only: the displayed size decides how far to decode
            photo_hw = displayed_size(probe)
        hw = self.overlay_size(photo_hw)
        photo = np.asarray(resize_image(open_rgb(source, draft_hw=hw if hw != photo_hw else None), hw))
        for key in self.key_iterator(d):
            masks = [convert_to_numpy(c) for c in d[key]]
            if masks and masks[0].shape != photo_hw:
                raise ValueError(f"{source}: prediction {masks[0].shape} does not match the photo {photo_hw}")
            if hw != photo_hw:
                masks = [reduce_mask(m, hw) for m in masks]
            save_atomic(draw_overlay(photo, masks), self.output_dir / f"{Path(source).stem}_overlay.png",
                        compress_level=self.compress_level)
        return d


# ------------------------------------------------------------------------------------------ per-channel thresholds



class ApplyThresholds(Transform):
    """Binarise a channel-first probability map with one threshold per channel (``prob >= t``).

    MONAI's ``AsDiscrete(threshold=...)`` applies one threshold to every channel; the Task 2 attributes need their
    own, chosen on the validation set and stored in ``thresholds.json``. The file is read once, when the transform is
    built, by :func:`isic_monai.metrics.thresholds.resolve_thresholds`, imported there rather than at the top of this
    module: ``isic_monai.metrics`` imports this module (it re-exports ``ApplyThresholdsd``), so a module-level import
    back would be a cycle.

    Args:
        thresholds: one per channel, a ``thresholds.json`` path, or ``None`` (``default`` everywhere). A missing
            file warns and falls back to ``default``.
        default: threshold used when ``thresholds`` is ``None`` or the file is missing.
        channel_names: when given, must match the file's ``channel_names`` (a file without names must hold one
            threshold per channel).

    Attributes:
        source: where the thresholds come from, in words (the file, or why the default applies); logged when the
            transform is built and recorded by evaluation (``evaluation.json``) and inference
            (``OUT_report/thresholds.json``) through :meth:`describe`.
    """

    def __init__(
        self,
        thresholds: Sequence[float] | str | Path | None = None,
        default: float = 0.5,
        channel_names: Sequence[str] | None = None,
    ) -> None:
        from isic_monai.metrics.thresholds import resolve_thresholds

        self.default = float(default)
        self.channel_names = None if channel_names is None else [str(n) for n in channel_names]
        self.thresholds = resolve_thresholds(thresholds, channel_names)
        self.from_file = isinstance(thresholds, (str, Path)) and self.thresholds is not None
        if self.from_file:
            self.source = str(thresholds)
        elif isinstance(thresholds, (str, Path)):
            self.source = f"default {self.default:g} on every channel: {thresholds} not found"
        elif thresholds is None:
            self.source = f"default {self.default:g} on every channel: no thresholds file given"
        else:
            self.source = "given in the config"
        level = logging.WARNING if self.thresholds is None else logging.INFO
        logger.log(level, "thresholds applied: %s (%s)", self.applied(), self.source)

    def applied(self, n_channels: int | None = None) -> list[float]:
        """The threshold of each channel (``n_channels`` or the channel names decide how many the default fills)."""
        if self.thresholds is not None:
            return list(self.thresholds)
        n = n_channels if n_channels is not None else len(self.channel_names or [None])
        return [self.default] * n

    def describe(self) -> dict[str, Any]:
        """``{"thresholds": [...], "source": "...", "channel_names": [...]}``: what the output records hold."""
        return {"thresholds": self.applied(), "source": self.source, "channel_names": self.channel_names}

    def __call__(self, img: Any) -> Any:
        """Return ``img >= threshold[c]`` per channel, in ``img``'s type and dtype (MetaTensor kept)."""
        is_np = isinstance(img, np.ndarray)
        x = torch.as_tensor(img) if is_np else img
        n_ch = x.shape[0]
        th = [self.default] if self.thresholds is None else self.thresholds
        if len(th) == 1 and not self.from_file:  # one value given in a config: every channel
            th = th * n_ch
        if len(th) != n_ch:
            raise ValueError(f"{len(th)} thresholds for an input with {n_ch} channels (shape {tuple(x.shape)}).")
        t = torch.as_tensor(th, dtype=x.dtype if x.is_floating_point() else torch.float64, device=x.device)
        t = t.view(-1, *([1] * (x.ndim - 1)))
        dtype = x.dtype if x.is_floating_point() else torch.float32
        out = (x >= t).to(dtype)
        return out.numpy() if is_np else out


class ApplyThresholdsd(MapTransform):
    """Dictionary version of :class:`ApplyThresholds`, for post-processing after ``Activationsd(sigmoid=True)``.

    Args:
        keys: keys to binarise (e.g. ``"pred"``).
        thresholds: one per channel, a ``thresholds.json`` path, or ``None``.
        default: threshold when ``thresholds`` is ``None`` or the file is missing.
        channel_names: when given, must match the file's ``channel_names``.
        allow_missing_keys: do not fail on missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        thresholds: Sequence[float] | str | Path | None = None,
        default: float = 0.5,
        channel_names: Sequence[str] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = ApplyThresholds(thresholds, default, channel_names)

    def describe(self) -> dict[str, Any]:
        """The thresholds applied and where they come from (:meth:`ApplyThresholds.describe`)."""
        return self.op.describe()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Binarise every key."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d



class CleanMasksd(MapTransform):
    """Keep each channel's largest region and fill its holes, channel by channel.

    MONAI's ``KeepLargestConnectedComponent`` and ``FillHoles`` do the work; they are applied to one channel at a
    time as single-label images because their one-hot mode treats channel 0 as background and skips it, while every
    channel here is a foreground mask (the lesion, or one attribute). An ISIC lesion boundary mask is one region
    without holes, so Task 1 switches both on; Task 2 attributes are scattered patterns and keep both off.

    Args:
        keys: the thresholded masks (values 0 and 1), (C, H, W).
        largest_component: keep only the largest 8-connected region of each channel.
        fill_holes: fill holes (4-connected background enclosed by a region).
    """

    def __init__(self, keys: KeysCollection, largest_component: bool = True, fill_holes: bool = True,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.steps: list[Transform] = []
        if largest_component:
            self.steps.append(KeepLargestConnectedComponent(is_onehot=False, connectivity=2))
        if fill_holes:
            self.steps.append(FillHoles(connectivity=1))

    def clean(self, masks: torch.Tensor) -> torch.Tensor:
        """The cleaned masks: each channel through the steps on its own."""
        channels = [masks[c : c + 1] for c in range(masks.shape[0])]
        for step in self.steps:
            channels = [step(ch) for ch in channels]
        return torch.cat([convert_to_tensor(ch, track_meta=False) for ch in channels]).to(masks.dtype)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if not self.steps:
                continue
            cleaned = self.clean(convert_to_tensor(d[key], track_meta=False))
            d[key] = MetaTensor(cleaned, meta=d[key].meta) if isinstance(d[key], MetaTensor) else cleaned
        return d
