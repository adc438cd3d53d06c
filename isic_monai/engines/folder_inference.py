"""Folder inference support: find the images, set aside the unreadable ones, report them at the end.

A batch job must finish the good items and report the bad ones. MONAI's ``Dataset`` stops the whole run at the
first file that fails to load, so :func:`scan_inputs` decodes every file once up front with the dataset check
:func:`isic_monai.data.validate.check_image` (Pillow, in draft mode for JPEG so large photos stay cheap) and the
bundle's ``run`` list ends with :func:`finish`, which writes ``failures.json`` and exits non-zero when any file was
skipped. An input is usable exactly when that check finds no error, so training data and inference inputs follow
the same rules (RGB and RGB-convertible modes; no 16-bit or float images).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from isic_monai.data.imageio import IMAGE_EXTENSIONS, is_image_file
from isic_monai.data.records import errors
from isic_monai.data.validate import check_image

logger = logging.getLogger(__name__)

_UNREADABLE_KINDS = ("corrupt", "truncated")

MASK_MARKERS = ("_segmentation", "_Segmentation", "_attribute_", "_mask", "_lesion", "_overlay")


@dataclass(frozen=True)
class Failure:
    """One input that could not be processed."""

    path: str
    problem: str


def is_input_image(path: Path) -> bool:
    """Whether a file looks like an input photo (an image file by :func:`~isic_monai.data.imageio.is_image_file`,
    and not a mask or overlay by its name)."""
    return is_image_file(path.name) and not any(m in path.stem for m in MASK_MARKERS)


def check_readable(path: Path) -> str | None:
    """Decode a file once; return the problem as text, or ``None`` when it is a usable RGB(-convertible) image.

    The check is :func:`isic_monai.data.validate.check_image` with every image decoded (JPEGs in draft mode);
    its errors become ``cannot be read as an image (...)`` (corrupt or truncated files) or
    ``unsupported image mode (...)`` (16-bit or float images); its warnings (converted modes) are not problems here.
    """
    first = next(iter(errors(check_image(path, "full", draft=True)[1])), None)
    if first is None:
        return None
    what = "cannot be read as an image" if first.kind in _UNREADABLE_KINDS else "unsupported image mode"
    return f"{what} ({first.message})"


def scan_inputs(input_dir: str | Path | None, recursive: bool = False) -> tuple[list[dict[str, Any]], list[Failure]]:
    """List the photos of a folder for inference.

    Args:
        input_dir: the folder (or a single image file).
        recursive: also look in sub-folders.

    Returns:
        ``([{"image": path, "id": stem}, ...], [Failure, ...])``: the readable photos, sorted, and the others.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: the folder holds no image files at all.
    """
    if input_dir is None:
        raise ValueError("no input folder: pass --dataset_dir FOLDER (or --input_dir FOLDER) of JPG/PNG/BMP photos")
    root = Path(input_dir)
    if not root.exists():
        raise FileNotFoundError(f"{root}: input folder not found")
    if root.is_file():
        candidates = [root]
    else:
        pattern = "**/*" if recursive else "*"
        candidates = sorted(p for p in root.glob(pattern) if p.is_file() and is_input_image(p))
    if not candidates:
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    good: list[dict[str, Any]] = []
    bad: list[Failure] = []
    for path in candidates:
        problem = check_readable(path)
        if problem is None:
            good.append({"image": str(path.resolve()), "id": path.stem})
        else:
            logger.error("%s: %s (skipped)", path, problem)
            bad.append(Failure(str(path), problem))
    return good, bad


def pending_inputs(inputs: list[dict[str, Any]], output_dir: str | Path, channel_names: list[str],
                   skip_existing: bool = False) -> list[dict[str, Any]]:
    """The photos a folder inference still has to segment.

    Masks are written atomically and last of a photo's files (after its overlay and probability map), so a photo
    whose every mask is in ``output_dir`` is complete, and one killed midway has no mask at all.

    Args:
        inputs: the readable photos (:func:`scan_inputs`).
        output_dir: the mask folder.
        channel_names: the model's channels (which mask files a photo gets).
        skip_existing: ``True``: leave out the photos whose masks all exist; ``False``: every photo.

    Returns:
        the photos to segment, in their order.
    """
    if not skip_existing:
        return list(inputs)
    from isic_monai.transforms import mask_file_names

    out = Path(output_dir)
    todo = [item for item in inputs
            if not all((out / name).is_file() for name in mask_file_names(item["id"], channel_names))]
    if len(todo) < len(inputs):
        logger.info("%d of %d photos already have their masks in %s: skipped (--skip_existing true)",
                    len(inputs) - len(todo), len(inputs), out)
    return todo


def check_output_dirs(folders: list[str | Path], min_free_bytes: int = 0) -> list[Path]:
    """Create the output folders and check they can be written and have room, before any work starts.

    Each folder gets a small probe file written and flushed to disk (a read-only or full file system fails there),
    and, with ``min_free_bytes``, its file system must have that much space free.

    Args:
        folders: the folders a run writes to.
        min_free_bytes: the free space each folder's file system needs (0: not checked).

    Raises:
        PermissionError: naming the first folder that cannot be created or written, and why.
        OSError: naming a folder whose file system has less than ``min_free_bytes`` free, with both sizes.
    """
    checked = []
    for folder in folders:
        path = Path(folder)
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".write-test-{os.getpid()}"
            try:
                with open(probe, "wb") as f:
                    f.write(b"\0" * 4096)
                    f.flush()
                    os.fsync(f.fileno())
            finally:
                probe.unlink(missing_ok=True)
        except OSError as err:
            raise PermissionError(f"{path}: output folder cannot be written ({err.strerror or err})") from err
        free = shutil.disk_usage(path).free
        if min_free_bytes and free < min_free_bytes:
            raise OSError(f"{path}: output folder has {free / 2**20:.0f} MiB free, this run needs at least "
                          f"{min_free_bytes / 2**20:.0f} MiB (checkpoints, logs): free some space or choose "
                          "another folder (--bundle_root)")
        checked.append(path)
    return checked


def finish(failures: list[Failure], output_dir: str | Path, written: int | None = None) -> None:
    """End a folder inference: write ``failures.json`` into ``output_dir`` (the inference's report folder, not the
    mask folder) and exit non-zero when any input was skipped.

    Raises:
        SystemExit: with status 1 when there were failures.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"failed": [asdict(f) for f in failures], "n_failed": len(failures), "n_written": written}
    (out / "failures.json").write_text(json.dumps(report, indent=2))
    if failures:
        lines = "\n".join(f"  {f.path}: {f.problem}" for f in failures)
        logger.error("%d input(s) could not be processed:\n%s", len(failures), lines)
        raise SystemExit(1)
