"""Bad-input checks: corrupt or truncated files, missing or extra masks, size mismatches, modes, non-binary masks.

Every check returns :class:`Problem` records instead of raising, so a dataset build can report the COMPLETE list of
problems at once. Errors stop a build (:class:`DataError`) unless ``skip_bad`` is set; warnings never do.

Image modes (documented in ``docs/data.md``):

- ``RGB``: accepted.
- ``RGBA``, ``LA``, ``P``, ``PA``, ``L``, ``1``, ``CMYK``, ``YCbCr``: accepted with a ``mode_converted`` warning;
  they are converted to RGB (alpha dropped, grey replicated) by ``isic-monai prepare``.
- 16-bit or float (``I;16*``, ``I``, ``F``): error ``bit_depth`` (no safe automatic scaling; convert to 8-bit).

Masks must be 8-bit (``L``, ``P``, ``1``) with values in {0, 255} or {0, 1}; an RGB/RGBA mask is merged (channel
maximum) with a ``mode_converted`` warning; other values are the error ``non_binary``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from isic_monai.data.imageio import has_end_marker

if TYPE_CHECKING:
    from isic_monai.data.layouts import Sample

__all__ = [
    "PROBLEM_KINDS",
    "VERIFY_MODES",
    "DataError",
    "Problem",
    "check_image",
    "check_mask",
    "errors",
    "format_problems",
    "problems_to_json",
    "validate_sample",
    "validate_samples",
    "write_problems",
]

VERIFY_MODES: tuple[str, ...] = ("quick", "full")
"""``quick``: headers, JPEG/PNG end markers and full mask decoding; ``full``: decode every image too."""

PROBLEM_KINDS: dict[str, str] = {
    "not_found": "the dataset folder or file does not exist",
    "empty": "no images found",
    "unknown_layout": "no known dataset layout in the folder",
    "ambiguous_layout": "several dataset layouts in the folder",
    "corrupt": "the file cannot be opened or decoded",
    "truncated": "the file ends early (JPEG end-of-image marker or PNG IEND chunk missing, or decoding stops)",
    "missing_mask": "an image of a labelled split has no mask",
    "missing_image": "a mask (or attribute mask) has no image",
    "missing_attribute": "warning: a Task 2 attribute file is absent (recorded as null = all-zero mask)",
    "duplicate_id": "the same id appears twice",
    "size_mismatch": "a mask's size differs from its image's",
    "mode_converted": "warning: an RGBA/greyscale/palette/CMYK image or RGB mask that is converted",
    "bit_depth": "a 16-bit or float image/mask (not supported: convert to 8-bit)",
    "non_binary": "a mask with values other than {0, 255} or {0, 1}",
    "ignored_file": "warning: an image-like file that matches no expected name",
    "prepare_failed": "resizing or writing a file failed",
}
"""Every ``Problem.kind`` used by the project, with its meaning."""

_CONVERTIBLE_IMAGE_MODES = {"RGBA", "RGBX", "LA", "La", "P", "PA", "L", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGBa"}
_HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


@dataclass(frozen=True)
class Problem:
    """One problem with one file (or folder).

    Attributes:
        path: the file or folder concerned.
        kind: a key of :data:`PROBLEM_KINDS`.
        message: a human-readable explanation naming what is wrong and what to do.
        severity: ``"error"`` (stops a build unless skip_bad) or ``"warning"`` (reported, item kept).
    """

    path: str
    kind: str
    message: str
    severity: str = "error"

    @property
    def is_error(self) -> bool:
        """Whether this problem is an error (not a warning)."""
        return self.severity == "error"

    def to_dict(self) -> dict[str, str]:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Problem:
        """Inverse of :meth:`to_dict`."""
        return cls(str(data["path"]), str(data["kind"]), str(data["message"]), str(data.get("severity", "error")))

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.message} [{self.kind}]"


class DataError(Exception):
    """A dataset could not be turned into a datalist; ``problems`` holds the complete list.

    Args:
        problems: every problem found (errors and warnings).
        message: optional summary; by default the number of errors and the first few.
    """

    def __init__(self, problems: Sequence[Problem], message: str | None = None) -> None:
        self.problems: list[Problem] = list(problems)
        if message is None:
            errs = errors(self.problems)
            message = f"{len(errs)} error(s) in the data:\n" + format_problems(errs, limit=10)
        super().__init__(message)


def errors(problems: Iterable[Problem]) -> list[Problem]:
    """The problems that are errors."""
    return [p for p in problems if p.is_error]


def format_problems(problems: Sequence[Problem], limit: int | None = 20) -> str:
    """Text listing of problems, at most ``limit`` per kind (then a count of the rest).

    Args:
        problems: problems to list.
        limit: maximum lines per kind; None lists everything.

    Returns:
        One line per problem (plus ``... and N more <kind>`` lines).
    """
    by_kind: dict[str, list[Problem]] = {}
    for p in problems:
        by_kind.setdefault(p.kind, []).append(p)
    lines: list[str] = []
    for kind, items in by_kind.items():
        shown = items if limit is None else items[:limit]
        lines += [f"  {p}" for p in shown]
        if len(items) > len(shown):
            lines.append(f"  ... and {len(items) - len(shown)} more {kind} problem(s) (see the problems JSON)")
    return "\n".join(lines)


def _read_error(path: str, err: Exception, what: str) -> Problem:
    text = str(err) or type(err).__name__
    truncated = not isinstance(err, UnidentifiedImageError) and "truncat" in text.replace(path, "").lower()
    kind = "truncated" if truncated else "corrupt"
    return Problem(path, kind, f"cannot read {what}: {text}")


def check_image(path: str | os.PathLike, verify: str = "quick") -> tuple[tuple[int, int] | None, list[Problem]]:
    """Check one input image.

    ``quick`` reads the header and, for JPEG/PNG, checks the end-of-image marker (catches truncated downloads
    without decoding); other formats (BMP, TIFF) are decoded. ``full`` decodes every image.

    Args:
        path: image file.
        verify: ``"quick"`` or ``"full"``.

    Returns:
        ``((H, W) or None when unreadable, problems)``.
    """
    spath = str(path)
    try:
        with Image.open(spath) as img:
            fmt, mode, (w, h) = img.format, img.mode, img.size
            if verify == "full" or fmt not in ("JPEG", "PNG", "MPO"):
                img.load()
    except _READ_ERRORS as err:
        return None, [_read_error(spath, err, "image")]
    problems: list[Problem] = []
    if verify != "full" and has_end_marker(spath, fmt) is False:
        marker = "IEND chunk" if fmt == "PNG" else "end-of-image marker (FF D9)"
        problems.append(Problem(spath, "truncated", f"{fmt} file has no {marker}: truncated or partly downloaded"))
    if mode in _HIGH_DEPTH:
        problems.append(Problem(spath, "bit_depth", f"{mode} ({'16-bit' if mode.startswith('I;16') else mode}) "
                                "images are not supported: convert to 8-bit RGB"))
    elif mode != "RGB":
        how = "alpha dropped" if "A" in mode else "converted"
        problems.append(Problem(spath, "mode_converted", f"{mode} image is read as RGB ({how}) by prepare/loading",
                                "warning"))
    return (h, w), problems


def check_mask(path: str | os.PathLike, image_hw: tuple[int, int] | None, what: str = "mask"
               ) -> tuple[tuple[int, int] | None, list[Problem]]:
    """Decode one mask and check its mode, values and size.

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
        with Image.open(spath) as img:
            mode, (w, h) = img.mode, img.size
            if mode in _HIGH_DEPTH:
                return (h, w), [Problem(spath, "bit_depth", f"{what} is {mode} (16-bit/float): "
                                        "save it as an 8-bit {0, 255} PNG")]
            arr = np.asarray(img)
    except _READ_ERRORS as err:
        return None, [_read_error(spath, err, what)]
    if arr.ndim == 3:
        problems.append(Problem(spath, "mode_converted", f"{mode} {what}: channels are merged (maximum)", "warning"))
        arr = arr[..., :3].max(axis=2) if mode in ("RGBA", "RGBa") else arr.max(axis=2)
    if arr.dtype != bool:
        counts = np.bincount(arr.ravel().astype(np.uint8, copy=False), minlength=256)
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
        sample: a parsed sample (see :class:`isic_monai.data.layouts.Sample`).
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


def _validate_job(args: tuple[Sample, str]) -> tuple[list[int] | None, list[Problem]]:
    return validate_sample(*args)


def validate_samples(samples: Sequence[Sample], verify: str = "quick", workers: int = 1,
                     progress: bool = False) -> list[Problem]:
    """Validate samples in place: sets ``sample.orig_size`` and appends to ``sample.problems``.

    Args:
        samples: parsed samples.
        verify: ``"quick"`` or ``"full"``.
        workers: processes (1 = in this process).
        progress: show a tqdm progress bar.

    Returns:
        All problems found by this pass.

    Raises:
        ValueError: on an unknown ``verify`` mode.
    """
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
    from tqdm.auto import tqdm

    jobs = [(s, verify) for s in samples]
    bar = tqdm(total=len(jobs), desc="validate", unit="img", disable=not progress)
    if workers > 1 and len(jobs) > 64:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = []
            for res in pool.map(_validate_job, jobs, chunksize=max(8, len(jobs) // (8 * workers))):
                results.append(res)
                bar.update()
    else:
        results = []
        for job in jobs:
            results.append(_validate_job(job))
            bar.update()
    bar.close()
    found: list[Problem] = []
    for sample, (hw, problems) in zip(samples, results, strict=True):
        sample.orig_size = hw
        sample.problems.extend(problems)
        found += problems
    return found


def problems_to_json(problems: Iterable[Problem]) -> list[dict[str, str]]:
    """List of dicts for JSON output."""
    return [p.to_dict() for p in problems]


def write_problems(problems: Sequence[Problem], path: str | os.PathLike) -> Path:
    """Write ``{"errors": n, "warnings": n, "problems": [...]}`` to ``path`` (JSON)."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_err = len(errors(problems))
    payload = {"errors": n_err, "warnings": len(problems) - n_err, "problems": problems_to_json(problems)}
    path.write_text(json.dumps(payload, indent=2))
    return path
