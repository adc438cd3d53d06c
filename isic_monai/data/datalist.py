"""Decathlon-style datalists: official or seeded splits, k-fold and nested training fractions.

A datalist is ``{"training": [...], "validation": [...], "testing": [...], "metadata": {...}}`` with absolute
paths, read unchanged by ``monai.data.load_decathlon_datalist`` (entries: see docs/architecture.md).

Splitting rules (``split``):

- ``official`` (the default when the layout has official splits): challenge training -> ``training``, validation
  with ground truth -> ``validation``, test with ground truth -> ``testing`` (entries keep their ``label``).
  When there is no labelled validation split (ISIC 2016, ISIC 2018 without validation ground truth, plain folders
  with only ``train/``), validation is carved out of training with ``ratios`` (default 80/20).
- ``ratio``: the labelled samples (except an official labelled test split, which stays in ``testing``) are ordered
  by a seeded hash of their id and cut by ``ratios`` (two values: training/validation; three: + testing).
- ``kfold``: the same ordering dealt into ``folds`` folds; fold ``fold`` is validation, the rest training.

Unlabelled inputs (challenge validation/test inputs without ground truth) always go to ``testing`` without a
``label``. ``fraction`` keeps a seeded subset of training; for one seed, smaller fractions are subsets of larger
ones (nested). Ordering uses ``sha256(f"{seed}:{salt}:{id}")``, so it does not depend on file order, platform or
Python's hash seed, and adding an image does not reshuffle the others.

Reading (one function per meaning):

- :func:`read_datalist`: the one reader of a datalist JSON file; errors name the file.
- :func:`as_datalist`: any source (datalist dict, datalist file or folder, dataset folder) as a datalist dict; used
  by ``prepare``, ``stats`` and the command line.
- :func:`datalist_entries`: one list of any source, paths resolved like MONAI's reader (for bundle configs).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from isic_monai import ATTRIBUTES, __version__
from isic_monai.data.atomic import write_text_atomic
from isic_monai.data.layouts import parse_dataset
from isic_monai.data.records import DATALIST_KEYS, DataError, ParsedDataset, Problem, Sample, errors, write_problems
from isic_monai.data.validate import validate_samples

__all__ = [
    "DATALIST_FILE",
    "SPLIT_MODES",
    "as_datalist",
    "assign_splits",
    "build_datalist",
    "datalist_entries",
    "datalist_from",
    "fraction_subset",
    "problems_path",
    "read_datalist",
    "seeded_order",
    "source_text",
    "write_datalist",
]

SPLIT_MODES: tuple[str, ...] = ("auto", "official", "ratio", "kfold")
"""Values of ``split``; ``auto`` = ``official`` when the layout has official splits, else ``ratio``."""

DATALIST_FILE = "datalist.json"
"""Name of the datalist inside a folder (a ``prepare`` cache): a folder given as a datalist means this file."""

_PATH_KEYS = ("image", "label", "image_orig", "label_orig", *(f"attribute_{name}" for name in ATTRIBUTES))


def seeded_order(ids: Sequence[str], seed: int, salt: str = "split") -> list[str]:
    """Ids in a reproducible pseudo-random order (stable hash of seed, salt and id; ties by id).

    Args:
        ids: sample ids.
        seed: integer seed.
        salt: separates independent orderings (``"split"``, ``"fraction"``).

    Returns:
        The ids reordered.
    """
    def key(cid: str) -> tuple[str, str]:
        return hashlib.sha256(f"{seed}:{salt}:{cid}".encode()).hexdigest(), cid

    return sorted(sorted(ids), key=key)


def _normalise(ratios: Sequence[float]) -> list[float]:
    if len(ratios) not in (2, 3) or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"ratios must be 2 or 3 non-negative numbers with a positive sum, got {list(ratios)}")
    total = float(sum(ratios))
    return [r / total for r in ratios]


def _cut(ordered: list[Sample], ratios: Sequence[float]) -> list[list[Sample]]:
    """Cut an ordered list into consecutive parts of the given (normalised) ratios."""
    r = _normalise(ratios)
    n = len(ordered)
    bounds = [0]
    acc = 0.0
    for part in r[:-1]:
        acc += part
        bounds.append(math.floor(acc * n + 0.5 + 1e-9))  # half up, not to even
    bounds.append(n)
    return [ordered[bounds[i]:bounds[i + 1]] for i in range(len(r))]


def _ordered(samples: list[Sample], seed: int, salt: str = "split") -> list[Sample]:
    by_id = {s.id: s for s in samples}
    return [by_id[i] for i in seeded_order(list(by_id), seed, salt)]


def fraction_subset(samples: list[Sample], fraction: float, seed: int) -> list[Sample]:
    """A seeded subset of ``ceil(fraction * n)`` samples (at least one); nested across fractions for one seed.

    Args:
        samples: training samples.
        fraction: in (0, 1].
        seed: integer seed.

    Returns:
        The subset, in the seeded order.

    Raises:
        ValueError: fraction outside (0, 1].
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if not samples or fraction == 1:
        return list(samples)
    n = max(1, math.ceil(fraction * len(samples) - 1e-9))
    return _ordered(samples, seed, "fraction")[:n]


def assign_splits(samples: list[Sample], *, split: str = "auto", official: bool = True,
                  ratios: Sequence[float] = (0.8, 0.2), folds: int = 5, fold: int = 0, seed: int = 0,
                  fraction: float = 1.0) -> tuple[dict[str, list[Sample]], dict[str, Any]]:
    """Distribute samples into training/validation/testing.

    Args:
        samples: valid samples.
        split: one of :data:`SPLIT_MODES`.
        official: whether the samples' ``split`` fields are official challenge splits.
        ratios: 2 or 3 ratios (normalised).
        folds: number of folds for ``kfold``.
        fold: validation fold index for ``kfold``.
        seed: integer seed.
        fraction: training fraction (nested subsets).

    Returns:
        ``({"training": [...], "validation": [...], "testing": [...]}, split metadata)``.

    Raises:
        ValueError: on invalid options.
    """
    if split not in SPLIT_MODES:
        raise ValueError(f"split must be one of {SPLIT_MODES}, got {split!r}")
    mode = ("official" if official else "ratio") if split == "auto" else split
    if mode == "official" and not official:
        raise ValueError("this dataset has no official split; use split='ratio' or 'kfold'")
    _normalise(ratios)
    labelled = [s for s in samples if s.labelled]
    out: dict[str, list[Sample]] = {k: [] for k in DATALIST_KEYS}
    out["testing"] += [s for s in samples if not s.labelled]
    meta: dict[str, Any] = {"split": mode, "seed": seed, "fraction": fraction}
    if mode == "official":
        for s in labelled:
            out[s.split or "training"].append(s)
        if not out["validation"] and out["training"]:
            train_share = ratios[0] / (ratios[0] + ratios[1]) if ratios[0] + ratios[1] > 0 else 1.0
            out["training"], out["validation"] = _cut(_ordered(out["training"], seed), (train_share, 1 - train_share))
            meta["validation_from_training"] = True
            meta["ratios"] = list(ratios[:2])
    else:
        held = [s for s in labelled if official and s.split == "testing"]
        held_ids = {s.id for s in held}
        pool = [s for s in labelled if s.id not in held_ids]
        out["testing"] += held
        ordered = _ordered(pool, seed)
        if mode == "ratio":
            parts = _cut(ordered, ratios)
            out["training"], out["validation"] = parts[0], parts[1]
            if len(parts) == 3:
                out["testing"] += parts[2]
            meta["ratios"] = list(ratios)
        else:
            if folds < 2 or not 0 <= fold < folds:
                raise ValueError(f"need folds >= 2 and 0 <= fold < folds, got folds={folds}, fold={fold}")
            out["validation"] = [s for i, s in enumerate(ordered) if i % folds == fold]
            out["training"] = [s for i, s in enumerate(ordered) if i % folds != fold]
            meta.update(folds=folds, fold=fold)
    out["training"] = fraction_subset(out["training"], fraction, seed)
    return {k: sorted(v, key=lambda s: s.id) for k, v in out.items()}, meta


def _counts(lists: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    return {k: len(v) for k, v in lists.items()}


def datalist_from(parsed: ParsedDataset, *, split: str = "auto", ratios: Sequence[float] = (0.8, 0.2),
                  folds: int = 5, fold: int = 0, seed: int = 0, fraction: float = 1.0, skip_bad: bool = False,
                  verify: str | None = None) -> dict[str, Any]:
    """Turn a parsed (and validated) dataset into a datalist dict.

    Args:
        parsed: result of :func:`parse_dataset` after :func:`validate_samples`.
        split, ratios, folds, fold, seed, fraction: see :func:`assign_splits`.
        skip_bad: drop samples with errors (listed in ``metadata.problems``/``skipped``) instead of raising.
        verify: recorded in the metadata.

    Returns:
        The datalist.

    Raises:
        DataError: any error problem and not ``skip_bad`` (carries the complete list).
    """
    problems = parsed.all_problems()
    if errors(problems) and not skip_bad:
        raise DataError(problems)
    good = [s for s in parsed.samples if not s.has_error]
    skipped = sorted(s.id for s in parsed.samples if s.has_error)
    lists, meta = assign_splits(good, split=split, official=parsed.official_splits, ratios=ratios, folds=folds,
                                fold=fold, seed=seed, fraction=fraction)
    entries = {k: [s.to_entry() for s in v] for k, v in lists.items()}
    has_attributes = any(s.attributes is not None for s in good)
    metadata: dict[str, Any] = {
        "layout": parsed.layout,
        "root": parsed.root,
        **meta,
        "verify": verify,
        "counts": _counts(entries),
        "attributes": list(ATTRIBUTES) if has_attributes else None,
        "skipped": skipped,
        "problems": [p.to_dict() for p in problems],
        "created_by": f"isic-monai {__version__}",
    }
    return {**entries, "metadata": metadata}


def build_datalist(root: str | os.PathLike, *, layout: str | None = None, split: str = "auto",
                   ratios: Sequence[float] = (0.8, 0.2), folds: int = 5, fold: int = 0, seed: int = 0,
                   fraction: float = 1.0, verify: str = "quick", skip_bad: bool = False, workers: int = 1,
                   progress: bool = False) -> dict[str, Any]:
    """Detect, parse and validate a dataset folder and return its datalist.

    Args:
        root: dataset folder in any layout of :data:`isic_monai.data.layouts.LAYOUTS`.
        layout: force a layout (None: detect).
        split: ``auto``, ``official``, ``ratio`` or ``kfold``.
        ratios: ``(train, val)`` or ``(train, val, test)``; also used to carve validation from an official
            training split that has no labelled validation split.
        folds: number of folds (``kfold``).
        fold: validation fold (``kfold``).
        seed: seed of every split and subset.
        fraction: training fraction, e.g. 0.1/0.25/0.5/1.0 (nested for one seed).
        verify: ``quick`` (headers, end markers, masks decoded) or ``full`` (decode everything).
        skip_bad: keep good samples and report bad ones instead of raising.
        workers: validation processes.
        progress: show a progress bar.

    Returns:
        ``{"training", "validation", "testing", "metadata"}`` with absolute paths.

    Raises:
        DataError: bad data (complete problem list in ``.problems``) unless ``skip_bad``; unknown layout or empty
            folder always.
        ValueError: invalid options.
    """
    parsed = parse_dataset(root, layout)
    validate_samples(parsed.samples, verify=verify, workers=workers, progress=progress)
    return datalist_from(parsed, split=split, ratios=ratios, folds=folds, fold=fold, seed=seed, fraction=fraction,
                         skip_bad=skip_bad, verify=verify)


def problems_path(out: str | os.PathLike) -> Path:
    """``datalist.json`` -> ``datalist.problems.json`` (the report written beside a datalist)."""
    out = Path(out)
    return out.with_name(f"{out.stem}.problems.json")


def write_datalist(datalist: dict[str, Any], out: str | os.PathLike) -> Path:
    """Write a datalist as JSON, atomically (a reader never sees half a file; a killed write leaves the old one),
    plus ``<out>.problems.json`` when it records problems.

    Args:
        datalist: a datalist dict.
        out: target JSON path (folders created).

    Returns:
        The written path.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(datalist, indent=2))
    problems = [Problem.from_dict(p) for p in datalist.get("metadata", {}).get("problems", [])]
    if problems:
        write_problems(problems, problems_path(out))
    return out


def _datalist_file(source: str | os.PathLike) -> Path | None:
    """The datalist JSON that ``source`` names, or None when ``source`` is a dataset folder.

    A file, a folder holding ``datalist.json``, or a missing ``*.json`` path (so reading it reports the missing
    file, not a missing dataset folder) name a datalist; anything else is taken for a dataset root.
    """
    path = Path(os.path.expanduser(str(source)))
    if path.is_dir():
        inner = path / DATALIST_FILE
        return inner if inner.is_file() else None
    if path.is_file() or path.suffix.lower() == ".json":
        return path
    return None


def _bad_datalist(path: Path, kind: str, text: str) -> DataError:
    """A :class:`DataError` whose message and single problem name the datalist file."""
    return DataError([Problem(str(path), kind, text)], f"{path}: {text}")


def _needs_text(keys: Sequence[str]) -> str:
    """``('training', 'validation')`` -> ``"'training' or 'validation'"``."""
    quoted = [repr(k) for k in keys]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def read_datalist(path: str | os.PathLike, require_one_of: Sequence[str] = DATALIST_KEYS) -> dict[str, Any]:
    """Read a datalist JSON file (a folder is read as ``<folder>/datalist.json``); the one reader of datalists.

    A relative file path in an entry (``image``, ``label``, ``attribute_<name>``, ``*_orig``) is resolved against
    the datalist's own folder, as ``monai.data.load_decathlon_datalist`` does, never against the current folder: a
    hand-written datalist means the same files wherever the command runs. Absolute paths are returned unchanged.

    Args:
        path: the datalist file, or a folder holding ``datalist.json``.
        require_one_of: at least one of these keys must hold a list of entries (the bundle asks for
            ``("training", "validation")``).

    Returns:
        The datalist, with every list of :data:`~isic_monai.data.records.DATALIST_KEYS` (absent ones empty).

    Raises:
        DataError: one problem naming the file: ``not_found`` (no such file) or ``bad_datalist`` (not valid JSON,
            not an object, a list key holding something else than a list, or none of ``require_one_of``); the
            message starts with the file's path.
    """
    path = Path(os.path.expanduser(str(path)))
    if path.is_dir():
        path = path / DATALIST_FILE
    if not path.is_file():
        raise _bad_datalist(path, "not_found", "datalist file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _bad_datalist(path, "bad_datalist", f"not valid JSON ({err})") from err
    needs = f"a datalist needs a {_needs_text(require_one_of)} list of entries"
    if not isinstance(data, dict):
        raise _bad_datalist(path, "bad_datalist", f"{needs} (got a JSON {type(data).__name__}, not an object)")
    wrong = [k for k in DATALIST_KEYS if k in data and not isinstance(data[k], list)]
    if wrong or not any(isinstance(data.get(k), list) for k in require_one_of):
        raise _bad_datalist(path, "bad_datalist", needs + (f" ({', '.join(wrong)}: not a list)" if wrong else ""))
    base = Path(os.path.abspath(path.parent))
    for key in DATALIST_KEYS:
        data[key] = [_resolve_entry(e, base) if isinstance(e, dict) else e for e in data.get(key, [])]
    return data


def as_datalist(source: str | os.PathLike | dict[str, Any], **build_kwargs: Any) -> dict[str, Any]:
    """The datalist of any source: a datalist dict, a datalist JSON (or a folder with ``datalist.json``), or a
    dataset folder (detected, validated and split by :func:`build_datalist`).

    Args:
        source: datalist dict (returned as is), datalist file, cache folder or dataset root.
        **build_kwargs: options of :func:`build_datalist`, used only for a dataset root.

    Returns:
        The datalist.

    Raises:
        DataError: unreadable datalist file (:func:`read_datalist`) or bad dataset (:func:`build_datalist`).
    """
    if isinstance(source, dict):
        return source
    file = _datalist_file(source)
    if file is not None:
        return read_datalist(file)
    return build_datalist(os.path.expanduser(str(source)), **build_kwargs)


def source_text(source: str | os.PathLike | dict[str, Any]) -> str:
    """How a source is recorded in metadata and statistics: ``"<dict>"`` or its absolute path."""
    return "<dict>" if isinstance(source, dict) else os.path.abspath(str(source))


def _resolve(value: Any, base: Path) -> Any:
    """A relative path string resolved against ``base`` (lists element-wise); other values unchanged."""
    if isinstance(value, list):
        return [_resolve(v, base) for v in value]
    if isinstance(value, str):
        return os.path.normpath(os.path.join(base, value))
    return value


def _resolve_entry(entry: dict[str, Any], base: Path) -> dict[str, Any]:
    """An entry whose file paths are resolved against the datalist's folder, as MONAI's reader does."""
    return {k: (_resolve(v, base) if k in _PATH_KEYS else v) for k, v in entry.items()}


def datalist_entries(source: str | os.PathLike | dict[str, Any], key: str = "training",
                     **build_kwargs: Any) -> list[dict[str, Any]]:
    """One list of a datalist, for bundle configs: ``$isic_monai.data.datalist_entries(@datalist, 'training')``.

    Args:
        source: anything :func:`as_datalist` takes. Paths of a datalist file are resolved against its folder
            (:func:`read_datalist`), as ``monai.data.load_decathlon_datalist`` does (absolute paths are unchanged).
        key: ``training``, ``validation`` or ``testing``.
        **build_kwargs: options of :func:`build_datalist` when ``source`` is a dataset root.

    Returns:
        The list of entries (possibly empty).
    """
    return list(as_datalist(source, **build_kwargs).get(key) or [])
