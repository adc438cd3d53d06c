"""Resized cache: decode every image once at reduced size, record original sizes, write a new datalist.

``size`` is either one int (the longest side; the aspect ratio is kept, e.g. 1022x767 -> 256x192 for 256) or
``(H, W)`` (exact output height and width, aspect ratio not kept). JPEGs are decoded with Pillow's
``Image.draft('RGB', size)`` (1/2, 1/4 or 1/8 scale DCT decoding, never below the target) and then resized with
LANCZOS; masks are binarised and resized with NEAREST and written as 8-bit {0, 255} PNG.

Cache layout::

    CACHE/images/<id>.png            (or .jpg with image_format="jpg")
    CACHE/labels/<id>.png
    CACHE/attributes/<id>_attribute_<name>.png
    CACHE/datalist.json              (same splits; entries gain orig_size, image_orig, label_orig)

Existing outputs that open, decode, have the expected size and were made from the source as it is now are reused,
so an interrupted run resumes; files are written under a temporary name and renamed, so a killed worker never leaves
a valid-looking partial file. Each cache file records its source inside itself (:func:`source_stamp`: the source's
absolute path, size and modification time, in a PNG text chunk or the JPEG comment), so the record and the pixels
are written in one rename; a source that was replaced or edited since (or a cache file without the record) is
rebuilt, counted in ``metadata.prepared.files_rebuilt`` and logged.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from isic_monai import ATTRIBUTES, __version__
from isic_monai.data.atomic import PARTIAL_GLOB
from isic_monai.data.datalist import DATALIST_FILE, as_datalist, source_text, write_datalist
from isic_monai.data.imageio import displayed_size, open_image, open_rgb, resize_image, save_atomic, target_size
from isic_monai.data.masks import read_mask_resized
from isic_monai.data.parallel import progress_map
from isic_monai.data.records import DATALIST_KEYS, DataError, Problem, errors, format_problems

__all__ = ["IMAGE_FORMATS", "SOURCE_KEY", "prepare", "prepare_entry", "source_stamp"]

logger = logging.getLogger(__name__)

IMAGE_FORMATS: tuple[str, ...] = ("png", "jpg")
"""Cache image formats: ``png`` (lossless, default) or ``jpg`` (quality 95, 4:4:4, smaller)."""


SOURCE_KEY = "isic_monai_source"
"""The PNG text chunk of a cache file that records its source (:func:`source_stamp`); JPEGs keep it as their
comment."""


def source_stamp(path: str | os.PathLike) -> str:
    """What a cache file records of its source: the absolute path, the size in bytes and the modification time.

    A source edited or replaced since the cache file was made (or the dataset moved) has another stamp, and the file
    is rebuilt. Size and modification time, as ``make`` and ``rsync`` judge, rather than a hash: checking the cache
    then reads no source file.
    """
    st = os.stat(path)
    return json.dumps({"source": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns},
                      sort_keys=True)


def _stamp_kwargs(stamp: str, fmt: str) -> dict[str, Any]:
    """Pillow ``save`` options that write ``stamp`` into a PNG or JPEG."""
    if fmt == "jpg":
        return {"comment": stamp}
    info = PngInfo()
    info.add_text(SOURCE_KEY, stamp)
    return {"pnginfo": info}


def _recorded_stamp(img: Image.Image) -> str | None:
    """The source stamp a cache file records, or ``None``."""
    value = img.info.get(SOURCE_KEY, img.info.get("comment"))
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _state(path: Path, hw: tuple[int, int], src: str) -> tuple[str, str]:
    """An existing output and the stamp of its source (:func:`source_stamp`).

    The state is ``"valid"`` (decodes, size ``(H, W)``, made from the source as it is now), ``"stale"`` (valid, but
    made from another version of the source) or ``"missing"`` (absent, damaged or another size). A cache file that
    is its own source (a cache prepared again from its own datalist: attribute masks keep no original) is valid
    when it decodes at its size.
    """
    stamp = source_stamp(src)
    if not path.is_file():
        return "missing", stamp
    try:
        with Image.open(path) as img:
            if img.size != (hw[1], hw[0]):
                return "missing", stamp
            img.load()
            recorded = _recorded_stamp(img)
    except (OSError, ValueError, SyntaxError):
        return "missing", stamp
    if recorded == stamp or os.path.samefile(src, path):
        return "valid", stamp
    return "stale", stamp


def _write_mask(src: str, dst: Path, orig_hw: tuple[int, int], hw: tuple[int, int], stale: list[str]) -> bool:
    state, stamp = _state(dst, hw, src)
    if state == "valid":
        return False
    if state == "stale":
        stale.append(str(dst))
    save_atomic(read_mask_resized(src, hw, expected_hw=orig_hw), dst, compress_level=3, **_stamp_kwargs(stamp, "png"))
    return True


def prepare_entry(entry: dict[str, Any], cache: str | os.PathLike, size: int | Sequence[int],
                  image_format: str = "png") -> tuple[dict[str, Any] | None, list[Problem], int, list[str]]:
    """Resize one datalist entry into the cache.

    Args:
        entry: datalist entry (``image``, optional ``label`` and ``attribute_*``).
        cache: cache folder.
        size: longest side, or ``(H, W)``.
        image_format: ``png`` or ``jpg``.

    Returns:
        ``(new entry or None on failure, problems, number of files written, the cache files among them that were
        rebuilt because their source changed)``.
    """
    cache = Path(cache)
    src_image = entry.get("image_orig", entry["image"])
    cid = entry.get("id") or Path(src_image).stem
    problems: list[Problem] = []
    stale: list[str] = []
    current = src_image
    try:
        with open_image(src_image) as probe:  # the pixel cap; the size as displayed (open_rgb turns the photo)
            orig_hw = displayed_size(probe)
        hw = target_size(orig_hw, size)
        out: dict[str, Any] = {"id": cid}
        written = 0
        dst = cache / "images" / f"{cid}.{image_format}"
        state, stamp = _state(dst, hw, src_image)
        if state != "valid":
            stale += [str(dst)] if state == "stale" else []
            img = resize_image(open_rgb(src_image, draft_hw=hw), hw)
            kwargs: dict[str, Any] = {"compress_level": 3} if image_format == "png" else {"quality": 95,
                                                                                           "subsampling": 0}
            save_atomic(img, dst, **kwargs, **_stamp_kwargs(stamp, image_format))
            written += 1
        out["image"] = str(dst)
        src_label = entry.get("label_orig", entry.get("label"))
        if src_label:
            current = src_label
            dst = cache / "labels" / f"{cid}.png"
            written += _write_mask(src_label, dst, orig_hw, hw, stale)
            out["label"] = str(dst)
        for name in ATTRIBUTES:
            key = f"attribute_{name}"
            if key not in entry:
                continue
            src = entry[key]
            if src is None:
                out[key] = None
                continue
            current = src
            dst = cache / "attributes" / f"{cid}_attribute_{name}.png"
            written += _write_mask(src, dst, orig_hw, hw, stale)
            out[key] = str(dst)
        out["orig_size"] = [orig_hw[0], orig_hw[1]]
        out["image_orig"] = src_image
        if src_label:
            out["label_orig"] = src_label
        return out, problems, written, stale
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        kind = "size_mismatch" if "but its image is" in str(err) else "prepare_failed"
        return None, [Problem(str(current), kind, f"cannot prepare {cid}: {err}")], 0, stale


def prepare(source: str | os.PathLike | dict[str, Any], cache: str | os.PathLike, size: int | Sequence[int] = 256,
            *, workers: int | None = None, image_format: str = "png", skip_bad: bool = False, progress: bool = True,
            **build_kwargs: Any) -> dict[str, Any]:
    """Resize every image and mask of a dataset once into ``cache`` and write ``cache/datalist.json``.

    Args:
        source: dataset root, datalist JSON file, or datalist dict.
        cache: output folder.
        size: longest side (int) or ``(H, W)``.
        workers: processes (None: all CPUs; 1: in this process).
        image_format: ``png`` (default) or ``jpg``.
        skip_bad: drop entries that fail (reported in ``datalist.problems.json``) instead of raising.
        progress: show a tqdm progress bar.
        **build_kwargs: :func:`~isic_monai.data.datalist.build_datalist` options when ``source`` is a root.

    Returns:
        The new datalist (also written to ``cache/datalist.json``); ``metadata.prepared`` records the size, the
        source and the counts of written files and of those rebuilt because their source changed.

    Raises:
        DataError: an entry could not be prepared and not ``skip_bad`` (nothing written to the datalist).
        ValueError: invalid size or image format.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    sizes = [int(s) for s in ([size] if isinstance(size, int) else size)]
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise ValueError(f"size must be N (longest side) or (H, W) with positive values, got {size!r}")
    size_arg: Any = sizes[0] if len(sizes) == 1 else (sizes[0], sizes[1])
    start = time.perf_counter()
    if not isinstance(source, dict):
        build_kwargs.setdefault("skip_bad", skip_bad)
    datalist, src_text = as_datalist(source, **build_kwargs), source_text(source)
    cache = Path(os.path.abspath(os.path.expanduser(str(cache))))
    for sub in ("images", "labels", "attributes"):
        (cache / sub).mkdir(parents=True, exist_ok=True)
        for stale in (cache / sub).glob(PARTIAL_GLOB):  # left by a prepare killed while writing
            stale.unlink(missing_ok=True)
    keys = [(k, i) for k in DATALIST_KEYS for i in range(len(datalist.get(k, [])))]
    job = partial(prepare_entry, cache=str(cache), size=size_arg, image_format=image_format)
    results = progress_map(job, [datalist[k][i] for k, i in keys], workers=workers, progress=progress,
                           desc="prepare", unit="img")
    new: dict[str, list[dict[str, Any]]] = {k: [] for k in DATALIST_KEYS}
    problems: list[Problem] = []
    written = 0
    rebuilt: list[str] = []
    failed: list[str] = []
    for (k, i), (entry, probs, n, stale) in zip(keys, results, strict=True):
        problems += probs
        written += n
        rebuilt += stale
        if entry is not None:
            new[k].append(entry)
        else:
            failed.append(str(datalist[k][i].get("id", datalist[k][i]["image"])))
    if rebuilt:
        logger.warning("%d cache file(s) rebuilt: made from another version of their source (edited, replaced or "
                       "moved since), e.g. %s", len(rebuilt), rebuilt[0])
    old_meta = dict(datalist.get("metadata", {}))
    if errors(problems) and not skip_bad:
        raise DataError(problems, f"{len(problems)} file(s) could not be prepared:\n{format_problems(problems)}")
    meta = {
        **old_meta,
        "counts": {k: len(v) for k, v in new.items()},
        "problems": old_meta.get("problems", []) + [p.to_dict() for p in problems],
        "skipped": old_meta.get("skipped", []) + failed,
        "prepared": {
            "size": size_arg if isinstance(size_arg, int) else list(size_arg),
            "size_meaning": "longest side" if isinstance(size_arg, int) else "[H, W]",
            "image_format": image_format,
            "cache": str(cache),
            "source": src_text,
            "files_written": written,
            "files_rebuilt": len(rebuilt),
            "entries": sum(len(v) for v in new.values()),
            "seconds": round(time.perf_counter() - start, 3),
            "created_by": f"isic-monai {__version__}",
        },
    }
    result = {**new, "metadata": meta}
    write_datalist(result, cache / DATALIST_FILE)
    return result
