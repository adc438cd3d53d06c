"""Folder inference support: find the images, set aside the unreadable ones, report them at the end.

A batch job must finish the good items and report the bad ones. MONAI's ``Dataset`` stops the whole run at the
first file that fails to load, so :func:`scan_inputs` decodes every file once up front with the dataset check
:func:`isic_monai.data.validate.check_image` (Pillow, in draft mode for JPEG so large photos stay cheap) and the
bundle's ``run`` list ends with :func:`finish`, which writes ``failures.json`` and exits non-zero when any file was
skipped. An input is usable exactly when that check finds no error, so training data and inference inputs follow
the same rules (RGB and RGB-convertible modes; no 16-bit or float images).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform

from isic_monai.data.atomic import write_atomic
from isic_monai.data.imageio import IMAGE_EXTENSIONS, is_image_file
from isic_monai.data.records import errors
from isic_monai.data.validate import check_image

logger = logging.getLogger(__name__)

_UNREADABLE_KINDS = ("corrupt", "truncated")

PREDICTIONS_FILE = "predictions.csv"
"""The per-photo table a folder inference writes into its report folder (``OUT_report``)."""

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


def prediction_columns(channel_names: Sequence[str]) -> list[str]:
    """The columns of ``predictions.csv``: ``id``, each channel's foreground fraction, ``confidence``, ``flagged``,
    and with several channels each channel's confidence (Task 1: ``id, lesion_fraction, confidence, flagged``)."""
    names = [str(n) for n in channel_names]
    extra = [f"{n}_confidence" for n in names] if len(names) > 1 else []
    return ["id", *(f"{n}_fraction" for n in names), "confidence", "flagged", *extra]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


class RecordPredictiond(MapTransform):
    """Append one row per photo to ``report_dir/predictions.csv`` from the dict of
    :class:`~isic_monai.metrics.confidence.Confidenced` (``d[keys]``).

    Each row is flushed as it is written, before the photo's masks (the writers' order in ``inference.yaml``), so a
    photo whose masks exist has its row; a killed run leaves at most one torn last line, which the next run ends
    before it appends. :func:`finish_predictions` then keeps each photo's last row, in the inputs' order.

    Args:
        keys: the result dict (``result``).
        report_dir: the report folder.
        channel_names: the channels (the columns, :func:`prediction_columns`).
        image_key: the photo, whose file name gives the id.
    """

    def __init__(self, keys: KeysCollection, report_dir: str | Path, channel_names: Sequence[str],
                 image_key: str = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.path = Path(report_dir) / PREDICTIONS_FILE
        self.columns = prediction_columns(channel_names)
        self.image_key = image_key
        self._checked = False

    def _open(self) -> io.TextIOWrapper:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = self.path.open("a+", newline="")
        if not self._checked:
            f.seek(0)
            text = f.read()
            if not text:
                f.write(",".join(self.columns) + "\n")
            elif not text.endswith("\n"):
                f.write("\n")  # a torn last line from a killed run: end it, finish_predictions drops it
            self._checked = True
        return f

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from isic_monai.transforms import item_id

        d = dict(data)
        for key in self.key_iterator(d):
            row = {"id": item_id(d, self.image_key), **d[key]}
            buffer = io.StringIO()
            csv.writer(buffer).writerow([_cell(row.get(c)) for c in self.columns])
            with self._open() as f:
                f.write(buffer.getvalue())
                f.flush()
                os.fsync(f.fileno())
        return d


def finish_predictions(report_dir: str | Path, inputs: list[dict[str, Any]], output_dir: str | Path,
                       channel_names: Sequence[str]) -> Path | None:
    """Rewrite ``predictions.csv`` with one row per photo whose masks exist, in the inputs' order, atomically.

    Rows of earlier runs (``--skip_existing true``) are kept; a photo segmented again keeps its last row; a torn or
    malformed line is dropped. Photos that have masks but no row (masks from a run without this table) are logged.

    Returns:
        the table's path, or ``None`` when no row was recorded.
    """
    from isic_monai.transforms import mask_file_names

    path = Path(report_dir) / PREDICTIONS_FILE
    if not path.is_file():
        return None
    columns = prediction_columns(channel_names)
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f) if len(r) == len(columns) and r != columns]
    last = {r[0]: r for r in rows}
    out = Path(output_dir)
    done = [item["id"] for item in inputs
            if all((out / n).is_file() for n in mask_file_names(item["id"], channel_names))]
    missing = [i for i in done if i not in last]
    if missing:
        logger.warning("%d photo(s) have masks but no row in %s (segmented by an older run), e.g. %s",
                       len(missing), path, missing[0])

    def write(f: Any) -> None:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(last[i] for i in done if i in last)

    return write_atomic(path, write, mode="w", newline="")
