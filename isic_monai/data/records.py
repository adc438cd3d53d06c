"""The records every data module passes around: samples, problems and the error that carries them.

This module imports nothing else of the data package, so :mod:`~isic_monai.data.layouts` (which makes samples and
structural problems) and :mod:`~isic_monai.data.validate` (which adds decoding problems) both import it instead of
each other.

- :class:`Sample`: one image with its ground truth, as found on disk; :meth:`Sample.to_entry` is its datalist entry.
- :class:`ParsedDataset`: every sample of a dataset folder and the problems not tied to one sample.
- :class:`Problem`: one problem with one file, a kind of :data:`PROBLEM_KINDS` and a severity.
- :class:`DataError`: raised when a dataset cannot become a datalist; ``problems`` holds the complete list.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from isic_monai import ATTRIBUTES
from isic_monai.data.atomic import write_text_atomic

__all__ = [
    "DATALIST_KEYS",
    "PROBLEM_KINDS",
    "DataError",
    "IsicMonaiError",
    "ParsedDataset",
    "Problem",
    "Sample",
    "errors",
    "format_problems",
    "problems_to_json",
    "write_problems",
    "json_safe",
]

DATALIST_KEYS: tuple[str, ...] = ("training", "validation", "testing")
"""The entry lists of a datalist, in order (``metadata`` is its only other key); also the values of
:attr:`Sample.split`. Not to be confused with the challenges' folder words (``Training``/``Validation``/``Test``,
:data:`isic_monai.data.synth.CHALLENGE_SPLITS`)."""

PROBLEM_KINDS: dict[str, str] = {
    "not_found": "the dataset folder or file does not exist",
    "empty": "no images found",
    "unknown_layout": "no known dataset layout in the folder",
    "ambiguous_layout": "several dataset layouts in the folder",
    "bad_datalist": "a datalist file is not valid JSON or holds no list of entries",
    "corrupt": "the file cannot be opened or decoded",
    "truncated": "the file ends early (JPEG end-of-image marker or PNG IEND chunk missing, or decoding stops)",
    "too_large": "the file declares more pixels than the readers' cap (ISIC_MONAI_MAX_PIXELS, default 50 million)",
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


def problems_to_json(problems: Iterable[Problem]) -> list[dict[str, str]]:
    """List of dicts for JSON output."""
    return [p.to_dict() for p in problems]


def write_problems(problems: Sequence[Problem], path: str | os.PathLike) -> Path:
    """Write ``{"errors": n, "warnings": n, "problems": [...]}`` to ``path`` (JSON, atomically: a reader never
    sees half a list).

    Args:
        problems: the problems to report.
        path: the JSON file (folders created).

    Returns:
        The written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_err = len(errors(problems))
    payload = {"errors": n_err, "warnings": len(problems) - n_err, "problems": problems_to_json(problems)}
    return write_text_atomic(path, json.dumps(payload, indent=2))


class IsicMonaiError(Exception):
    """The package's one error base class: a message naming what failed, and the problems behind it.

    Every error the package raises on purpose derives from it (``DataError``, ``ScoringError``,
    ``BundleDataError``, ``UnreadableImageError``, ``MaskModeError``, ...), so callers tell them apart by type,
    never by their text; the subclasses that stand for a builtin kind also derive from it (``OSError``,
    ``ValueError``, ``RuntimeError``), so code catching those keeps working.

    Args:
        message: what failed, naming the file or setting.
        problems: every problem found (errors and warnings; empty when there is one cause).
    """

    def __init__(self, message: str = "", problems: Sequence[Problem] = ()) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__(message)


class DataError(IsicMonaiError):
    """A dataset could not be turned into a datalist; ``problems`` holds the complete list.

    Args:
        problems: every problem found (errors and warnings).
        message: optional summary; by default the number of errors and the first few.
    """

    def __init__(self, problems: Sequence[Problem], message: str | None = None) -> None:
        if message is None:
            errs = errors(list(problems))
            message = f"{len(errs)} error(s) in the data:\n" + format_problems(errs, limit=10)
        super().__init__(message, problems)


@dataclass
class Sample:
    """One image with its ground truth, as found on disk.

    Attributes:
        id: image id (file stem, e.g. ``ISIC_0000000`` or ``IMD002``).
        image: absolute image path.
        label: absolute lesion-mask path; None for unlabelled samples (or when the mask is missing).
        attributes: ``{attribute name: path or None}`` for Task 2 layouts, else None.
        split: official split (a :data:`DATALIST_KEYS` value) or None when the layout has none.
        labelled: whether ground truth is expected (False: inference input, goes to ``testing``).
        orig_size: ``[H, W]`` once validated.
        problems: problems found for this sample.
    """

    id: str
    image: str
    label: str | None = None
    attributes: dict[str, str | None] | None = None
    split: str | None = None
    labelled: bool = True
    orig_size: list[int] | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def has_error(self) -> bool:
        """Whether any problem of this sample is an error."""
        return any(p.is_error for p in self.problems)

    def to_entry(self) -> dict[str, Any]:
        """The datalist entry (see docs/architecture.md): id, image, [label], [attribute_*], [orig_size]."""
        entry: dict[str, Any] = {"id": self.id, "image": self.image}
        if self.labelled and self.label is not None:
            entry["label"] = self.label
        if self.attributes is not None:
            for name in ATTRIBUTES:
                entry[f"attribute_{name}"] = self.attributes.get(name)
        if self.orig_size is not None:
            entry["orig_size"] = list(self.orig_size)
        return entry


@dataclass
class ParsedDataset:
    """Result of :func:`isic_monai.data.layouts.parse_dataset`.

    Attributes:
        layout: layout name.
        root: absolute root folder.
        samples: every sample found (including ones with problems).
        problems: problems not tied to a kept sample (orphan masks, duplicates, ignored files).
        official_splits: whether the layout defines the samples' splits.
    """

    layout: str
    root: str
    samples: list[Sample]
    problems: list[Problem]
    official_splits: bool

    def all_problems(self) -> list[Problem]:
        """Dataset-level and per-sample problems together."""
        return self.problems + [p for s in self.samples for p in s.problems]


def json_safe(value: Any) -> Any:
    """A JSON-serialisable copy (every JSON record the package writes goes through it): tensors and arrays as lists
    or numbers, paths and other objects as text, NaN and infinities as ``None``."""
    if hasattr(value, "tolist") and callable(value.tolist):
        value = value.tolist()
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)
