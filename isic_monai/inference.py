"""Folder inference support: find the images, set aside the unreadable ones, report them at the end.

A batch job must finish the good items and report the bad ones. MONAI's ``Dataset`` stops the whole run at the
first file that fails to load, so :func:`scan_inputs` decodes every file once up front (Pillow, in draft mode for
JPEG so large photos stay cheap) and the bundle's ``run`` list ends with :func:`finish`, which writes
``failures.json`` and exits non-zero when any file was skipped.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MASK_MARKERS = ("_segmentation", "_Segmentation", "_attribute_", "_mask", "_lesion", "_overlay")


@dataclass(frozen=True)
class Failure:
    """One input that could not be processed."""

    path: str
    problem: str


def is_input_image(path: Path) -> bool:
    """Whether a file looks like an input photo (an image suffix, and not a mask or overlay by its name)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not any(m in path.stem for m in MASK_MARKERS)


def check_readable(path: Path) -> str | None:
    """Decode a file once; return the problem as text, or ``None`` when it is a usable RGB(-convertible) image."""
    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
            if img.mode not in ("RGB", "RGBA", "L", "P", "LA", "I;16", "I", "CMYK", "1"):
                return f"unsupported image mode {img.mode}"
    except Exception as err:  # Pillow raises several types for corrupt files
        return f"cannot be read as an image ({type(err).__name__}: {err})"
    return None


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
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
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


def check_output_dirs(folders: list[str | Path]) -> list[Path]:
    """Create the output folders and check they can be written, before any work starts.

    Raises:
        PermissionError: naming the first folder that cannot be created or written.
    """
    checked = []
    for folder in folders:
        path = Path(folder)
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise PermissionError(f"{path}: output folder cannot be written ({err.strerror or err})") from err
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
