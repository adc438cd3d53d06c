"""Folder inference support: find the images, set aside the unreadable ones, report them at the end.

A batch job must finish the good items and report the bad ones. MONAI's ``Dataset`` stops the whole run at the
first file that fails to load, so :func:`scan_inputs` decodes every file once up front with the dataset check
:func:`isic_monai.data.validate.check_image` (Pillow, in draft mode for JPEG so large photos stay cheap) and the
bundle's ``run`` list ends with :func:`finish`, which writes ``failures.json`` and exits non-zero when any file was
skipped. An input is usable exactly when that check finds no error, so training data and inference inputs follow
the same rules (RGB and RGB-convertible modes; no 16-bit or float images).

Every file of the folder is accounted for: segmented, a failure (unreadable, or an id another photo also has, since
both would write the one ``<id>_segmentation.png``) or skipped with its reason (not an image file; named like a mask
or an overlay, e.g. ``<id>_segmentation.png``). Failures and skipped files are logged and listed in
``failures.json``. Hidden files (``.name``, e.g. the partial files of a killed writer) are not inputs.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import shutil
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform

from isic_monai.data.atomic import write_atomic, write_text_atomic
from isic_monai.data.imageio import IMAGE_EXTENSIONS, is_image_file
from isic_monai.data.records import errors
from isic_monai.data.validate import check_image

logger = logging.getLogger(__name__)

_UNREADABLE_KINDS = ("corrupt", "truncated", "too_large")

PREDICTIONS_FILE = "predictions.csv"
"""The per-photo table a folder inference writes into its report folder (``OUT_report``)."""

MASK_SUFFIXES = ("_segmentation", "_attribute_<name>", "_mask", "_lesion", "_overlay", "_superpixels")
"""How the names of masks, overlays and superpixel maps end (before the file suffix, any case): the masks and
overlays this bundle writes, ISIC ground truth (``_segmentation``, ``_Segmentation``, ``_attribute_<name>``), PH2
(``_lesion``), the ``images/ + masks/`` layout's ``_mask`` and ISIC 2017's ``_superpixels``. Only the end of the
name counts: ``patient_mask_3.jpg`` is a photo."""

_MASK_NAME = re.compile(r"_(segmentation|attribute_[a-z0-9_]+|mask|lesion|overlay|superpixels)$", re.IGNORECASE)


@dataclass(frozen=True)
class Failure:
    """One input that could not be processed."""

    path: str
    problem: str


@dataclass(frozen=True)
class Skipped:
    """One file of the input folder that is not segmented, by design, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class InputScan:
    """What :func:`scan_inputs` found: every file of the folder, in one of three lists.

    Unpacks as ``good, failed`` (``good, failed = scan_inputs(folder)``).

    Attributes:
        good: the photos to segment, ``{"image": absolute path, "id": stem}``, sorted by path.
        failed: the photos that cannot be segmented (unreadable, or an id that another photo also has).
        skipped: the files left out by design (not an image file, or named like a mask), with the reason.
    """

    good: list[dict[str, Any]]
    failed: list[Failure]
    skipped: list[Skipped]

    def __iter__(self) -> Any:
        return iter((self.good, self.failed))


def mask_name_suffix(path: str | Path) -> str | None:
    """The end of a file name that marks a mask, overlay or superpixel map (:data:`MASK_SUFFIXES`), or ``None``.

    ``x_segmentation.png`` -> ``"_segmentation"``; ``x_attribute_streaks.png`` -> ``"_attribute_streaks"``;
    ``patient_mask_3.jpg`` -> ``None`` (only the end of the name counts).
    """
    match = _MASK_NAME.search(Path(path).stem)
    return match.group(0) if match else None


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


def _folder_files(root: Path, recursive: bool) -> list[Path]:
    """The visible files of a folder (and of its visible sub-folders when ``recursive``), sorted."""
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in root.glob(pattern)
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _sort_files(files: list[Path], skip_mask_names: bool) -> tuple[list[Path], list[Skipped]]:
    """Split files into candidate photos and the files skipped by design, each with its reason."""
    photos: list[Path] = []
    skipped: list[Skipped] = []
    for path in files:
        suffix = mask_name_suffix(path)
        if not is_image_file(path.name):
            skipped.append(Skipped(str(path), f"not an image file (photos end in {', '.join(IMAGE_EXTENSIONS)})"))
        elif suffix is not None and skip_mask_names:
            skipped.append(Skipped(str(path), f"named like a mask or overlay (ends in {suffix!r}); "
                                              "--skip_mask_names false segments it"))
        else:
            photos.append(path)
    return photos, skipped


def _clashes(photos: list[Path]) -> dict[Path, str]:
    """The photos whose id (stem) another photo also has, ignoring case, each with the problem naming the others.

    Each would write the same ``<id>_segmentation.png`` (on a case-insensitive disk also ``X`` and ``x``), the last
    one over the others, so none of them is segmented.
    """
    by_id: dict[str, list[Path]] = {}
    for path in photos:
        by_id.setdefault(path.stem.casefold(), []).append(path)
    problems: dict[Path, str] = {}
    for group in (g for g in by_id.values() if len(g) > 1):
        for path in group:
            others = ", ".join(str(o) for o in group if o != path)
            problems[path] = (f"same id {path.stem!r} as {others}: each would write {path.stem}_segmentation.png "
                              "over the other; rename or move all but one (none of them is segmented)")
    return problems


def scan_inputs(input_dir: str | Path | None, recursive: bool = False, skip_mask_names: bool = True) -> InputScan:
    """List the photos of a folder for inference, and account for every other file in it.

    A photo is segmented when it decodes (:func:`check_readable`) and no other photo has its id (the file name
    without its suffix, which names the mask: ``<id>_segmentation.png``). Each file that is not is logged and
    returned with the reason.

    Args:
        input_dir: the folder (or a single image file, segmented whatever its name).
        recursive: also look in sub-folders (ids must then be unique across them).
        skip_mask_names: leave out images named like masks or overlays (:func:`mask_name_suffix`), e.g. the
            outputs of an earlier run or ground truth beside the photos; ``False`` segments them too.

    Returns:
        :class:`InputScan`: the readable photos, sorted, the failures and the skipped files.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: the folder holds no photo to segment (the message names what was skipped).
    """
    if input_dir is None:
        raise ValueError("no input folder: pass --dataset_dir FOLDER (or --input_dir FOLDER) of JPG/PNG/BMP photos")
    root = Path(input_dir)
    if not root.exists():
        raise FileNotFoundError(f"{root}: input folder not found")
    if root.is_file():
        candidates, skipped = [root], []
    else:
        candidates, skipped = _sort_files(_folder_files(root, recursive), skip_mask_names)
    if skipped:
        by_name = [s for s in skipped if s.reason.startswith("named like")]
        for item in by_name:
            logger.warning("%s: %s (skipped)", item.path, item.reason)
        if len(skipped) > len(by_name):
            logger.info("%d file(s) that are not images skipped, e.g. %s", len(skipped) - len(by_name),
                        next(s.path for s in skipped if s not in by_name))
    if not candidates:
        detail = f": {len(skipped)} file(s) skipped, e.g. {skipped[0].path} ({skipped[0].reason})" if skipped else ""
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) found{detail}")
    clashes = _clashes(candidates)
    good: list[dict[str, Any]] = []
    bad: list[Failure] = []
    for path in candidates:
        problem = clashes.get(path) or check_readable(path)
        if problem is None:
            good.append({"image": str(path.resolve()), "id": path.stem})
        else:
            logger.error("%s: %s (skipped)", path, problem)
            bad.append(Failure(str(path), problem))
    return InputScan(good, bad, skipped)


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


def finish(failures: list[Failure], output_dir: str | Path, written: int | None = None,
           skipped: Sequence[Skipped] = ()) -> None:
    """End a folder inference: write ``failures.json`` into ``output_dir`` (the inference's report folder, not the
    mask folder), atomically, and exit non-zero when any input failed.

    The report is ``{"failed": [{path, problem}], "n_failed", "n_written", "skipped": [{path, reason}],
    "n_skipped"}``: the failures make the exit status 1, the files skipped by design (:func:`scan_inputs`) do not.

    Raises:
        SystemExit: with status 1 when there were failures.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"failed": [asdict(f) for f in failures], "n_failed": len(failures), "n_written": written,
              "skipped": [asdict(s) for s in skipped], "n_skipped": len(skipped)}
    path = write_text_atomic(out / "failures.json", json.dumps(report, indent=2))
    if skipped:
        logger.info("%d file(s) of the input folder skipped by design, each with its reason in %s",
                    len(skipped), path)
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
