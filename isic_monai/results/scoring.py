"""Score a folder of predicted masks against a folder of truth masks, the ISIC challenge's way and more.

The numbers are those of the challenge's own scorer (PyPI ``isic-challenge-scoring``), computed with this project's
metric functions (:mod:`isic_monai.metrics.functional`):

- **Task 1** (one lesion mask per image): per-image accuracy, sensitivity, specificity, Jaccard, thresholded Jaccard
  (ISIC 2018: 0 below 0.65) and Dice, averaged over the images (the scorer's ``macro_average``); ``overall`` and
  ``validation`` are the mean thresholded Jaccard.
- **Task 2** (``<id>_attribute_<name>`` masks): each image's confusion counts divided by its pixel count, summed over
  the images per attribute; Jaccard and Dice per attribute (``0/0`` = 1), the same over every attribute
  (``micro_average``) and ``overall`` = the micro-averaged Jaccard.

Like the scorer, a mask is read with Pillow, must be single-channel (mode ``L``, or ``1``), and a pixel is foreground
when its value is above :data:`FOREGROUND_ABOVE` (128). Masks are never resized: a prediction whose size differs from
its truth is an error naming both files. Files are matched by image id (``ISIC_0000000``, or PH2's ``IMD002``) and,
for Task 2, attribute name. Extras beyond the official numbers: precision, mean ± std over images, the summed and
the mean normalised confusion matrices, the per-attribute means and the raw-pixel set Jaccard, and a per-image CSV.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from isic_monai.data.imageio import MASK_EXTENSIONS, UnreadableImageError, is_image_file
from isic_monai.data.masks import OFFICIAL_FOREGROUND_ABOVE, ColourMaskWarning, MaskModeError, read_mask_values
from isic_monai.data.records import IsicMonaiError, Problem, errors

__all__ = [
    "FOREGROUND_ABOVE",
    "ID_PATTERN",
    "OFFICIAL_TASK1_METRICS",
    "PER_IMAGE_MEASURES",
    "SCORING_PROBLEM_KINDS",
    "FolderScore",
    "MaskKey",
    "ScoredPair",
    "ScoringError",
    "collect_masks",
    "count_pair",
    "detect_task",
    "format_table",
    "mask_key",
    "match_pairs",
    "per_image_rows",
    "score_folders",
    "score_report",
    "task1_report",
    "task2_report",
    "truth_mask_files",
    "write_per_image_csv",
]

ID_PATTERN = re.compile(r"ISIC_\d{7}|IMD\d{3,}")
"""Image ids: ISIC's ``ISIC_`` + 7 digits (what the official scorer matches) and PH2's ``IMD`` + digits."""

_ATTRIBUTE = re.compile(r"attribute_([a-z_]+)")
_PH2_LESION = re.compile(r"IMD\d{3,}_lesion")

FOREGROUND_ABOVE = OFFICIAL_FOREGROUND_ABOVE
"""The official scorer's rule: a mask pixel is foreground when its 8-bit value is above 128."""

OFFICIAL_TASK1_METRICS: tuple[str, ...] = (
    "accuracy", "sensitivity", "specificity", "jaccard", "threshold_jaccard", "dice",
)
"""The Task 1 ``macro_average`` entries, named and ordered as the official scorer names them."""

PER_IMAGE_MEASURES: tuple[str, ...] = (*OFFICIAL_TASK1_METRICS, "precision")
"""Every per-image measure reported (the official six and precision); ``0/0`` scores 1, as in the scorer."""

SCORING_PROBLEM_KINDS: dict[str, str] = {
    "missing_prediction": "a truth mask has no prediction with its image id (and attribute)",
    "duplicate_id": "several truth or prediction files share an image id (and attribute)",
    "size_mismatch": "a prediction's size differs from its truth's (masks are never resized)",
    "not_greyscale": "a mask is not a single-channel (mode L or 1) image",
    "corrupt": "a mask cannot be opened or decoded",
    "no_id": "a truth file name holds no ISIC_0000000 or IMD000 id",
    "mixed_tasks": "the truth folder mixes lesion masks and attribute masks, or --task disagrees with it",
    "no_truth": "the truth folder holds no mask",
    "unmatched_prediction": "warning: a prediction has no truth file (not scored)",
    "ignored_file": "warning: a prediction file name holds no id, or is for the other task (not scored)",
    "colour_grey": "warning: a colour mask with equal channels, read as greyscale",
    "binary_01": "warning: a 0/1 mask reads as empty under the official rule (values above 128)",
}
"""The problem kinds of scoring (used in :class:`~isic_monai.data.records.Problem`), with their meaning."""


class ScoringError(IsicMonaiError, ValueError):
    """The folders cannot be scored; ``problems`` lists every error (and warning) found, errors first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        ordered = sorted(problems, key=lambda p: not p.is_error)
        errs = errors(ordered)
        lines = "\n".join(f"  {p}" for p in errs[:10])
        more = f"\n  ... and {len(errs) - 10} more" if len(errs) > 10 else ""
        super().__init__(f"{len(errs)} error(s) stop the scoring:\n{lines}{more}", ordered)


@dataclass(frozen=True, order=True)
class MaskKey:
    """What a mask file is for: an image id and, for Task 2, an attribute name."""

    image_id: str
    attribute: str | None = None

    def __str__(self) -> str:
        return self.image_id if self.attribute is None else f"{self.image_id} attribute {self.attribute}"


@dataclass(frozen=True)
class ScoredPair:
    """One truth file, its prediction and their confusion counts.

    Attributes:
        key: image id and attribute.
        truth: the truth file.
        prediction: the prediction file.
        shape: ``(H, W)`` of both masks.
        counts: ``(TP, FP, FN, TN)`` pixel counts (:data:`~isic_monai.metrics.functional.COUNT_FIELDS`).
    """

    key: MaskKey
    truth: str
    prediction: str
    shape: tuple[int, int]
    counts: tuple[int, int, int, int]


@dataclass
class FolderScore:
    """The scored pairs of two folders and the warnings met on the way."""

    task: int
    pairs: list[ScoredPair]
    problems: list[Problem] = field(default_factory=list)


def mask_key(path: str | Path) -> MaskKey | None:
    """The image id (``ISIC_0000000`` or ``IMD002``) and attribute (``attribute_<name>``) in a file name, if any."""
    stem = Path(path).stem
    match = ID_PATTERN.search(stem)
    if match is None:
        return None
    attribute = _ATTRIBUTE.search(stem)
    return MaskKey(match.group(0), attribute.group(1) if attribute else None)


def _mask_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p, MASK_EXTENSIONS))


def truth_mask_files(gt_dir: str | Path) -> list[Path]:
    """The truth masks of a folder: its own mask files or, for a PH2 tree, every ``IMDxxx_lesion`` mask under it."""
    gt_dir = Path(gt_dir)
    files = _mask_files(gt_dir)
    if files:
        return files
    return sorted(p for p in gt_dir.rglob("*") if p.is_file() and is_image_file(p, MASK_EXTENSIONS)
                  and _PH2_LESION.fullmatch(p.stem))


def collect_masks(files: Sequence[Path], role: str, problems: list[Problem]) -> dict[MaskKey, Path]:
    """Index mask files by :class:`MaskKey`; files without an id and duplicate keys go to ``problems``.

    Args:
        files: the mask files.
        role: ``"truth"`` (a file without an id is an error) or ``"prediction"`` (it is ignored with a warning).
        problems: where problems are appended.

    Returns:
        ``{key: file}`` of the usable files.
    """
    found: dict[MaskKey, list[Path]] = {}
    for f in files:
        key = mask_key(f)
        if key is None:
            severity = "error" if role == "truth" else "warning"
            kind = "no_id" if role == "truth" else "ignored_file"
            problems.append(Problem(str(f), kind, f"no ISIC_0000000 or IMD000 image id in the {role} file name",
                                    severity))
            continue
        found.setdefault(key, []).append(f)
    out: dict[MaskKey, Path] = {}
    for key, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            problems.append(Problem(str(paths[0].parent), "duplicate_id", f"several {role} files for {key}: {names}"))
            continue
        out[key] = paths[0]
    return out


def detect_task(keys: Sequence[MaskKey]) -> int | None:
    """1 when no truth key names an attribute, 2 when all do, None when they are mixed."""
    with_attribute = {k.attribute is not None for k in keys}
    if with_attribute == {True}:
        return 2
    return 1 if with_attribute <= {False} else None


def match_pairs(pred_dir: str | Path, gt_dir: str | Path, task: int | None = None
                ) -> tuple[int, list[tuple[MaskKey, Path, Path]], list[Problem]]:
    """Pair every truth mask with its prediction by image id (and attribute for Task 2).

    Args:
        pred_dir: the predictions (one folder, any file names holding the id).
        gt_dir: the truth masks (one folder, or a PH2 tree).
        task: 1 or 2; None detects it from the truth file names.

    Returns:
        ``(task, [(key, truth, prediction), ...], problems)``: the pairs found, sorted by key, and every problem
        (errors included: a truth mask without prediction, duplicate ids, mixed tasks, an empty truth folder), so
        that one run can report them all.
    """
    problems: list[Problem] = []
    truth = collect_masks(truth_mask_files(gt_dir), "truth", problems)
    if not truth and not errors(problems):
        problems.append(Problem(str(gt_dir), "no_truth", f"no mask files ({', '.join(MASK_EXTENSIONS)}) in the "
                                "truth folder"))
    found = detect_task(list(truth))
    if truth and found is None:
        problems.append(Problem(str(gt_dir), "mixed_tasks", "the truth folder mixes lesion masks (Task 1) and "
                                "<id>_attribute_<name> masks (Task 2); score them from separate folders"))
    elif truth and task is not None and task != found:
        problems.append(Problem(str(gt_dir), "mixed_tasks", f"--task {task} but the truth folder holds Task {found} "
                                "masks"))
    task = task or found or 1
    predictions = collect_masks(_mask_files(Path(pred_dir)), "prediction", problems)
    for key, path in predictions.items():
        if (key.attribute is not None) != (task == 2):
            problems.append(Problem(str(path), "ignored_file", f"a Task {3 - task} mask in a Task {task} scoring; "
                                    "not scored", "warning"))
        elif key not in truth:
            problems.append(Problem(str(path), "unmatched_prediction", f"no truth file for {key}; not scored",
                                    "warning"))
    pairs = []
    for key in sorted(truth):
        if key in predictions:
            pairs.append((key, truth[key], predictions[key]))
        else:
            problems.append(Problem(str(truth[key]), "missing_prediction", f"no prediction for {key} in {pred_dir}"))
    return task, pairs, problems


def _read(path: Path, problems: list[Problem]) -> np.ndarray | None:
    """A mask under the official rule, or ``None`` with its problem (matched by the error's type)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ColourMaskWarning)
            values = read_mask_values(path)
    except UnreadableImageError as err:
        kind = "not_greyscale" if isinstance(err, MaskModeError) else "corrupt"
        problems.append(Problem(str(path), kind, str(err).removeprefix(f"{path}: ")))
        return None
    for note in caught:
        if issubclass(note.category, ColourMaskWarning):
            problems.append(Problem(str(path), "colour_grey", str(note.message).removeprefix(f"{path}: "), "warning"))
    if int(values.max(initial=0)) == 1:
        problems.append(Problem(str(path), "binary_01", "a 0/1 mask: no value is above 128, so it is scored as "
                                "empty (write masks as 0/255)", "warning"))
    return values > FOREGROUND_ABOVE


def count_pair(pair: tuple[MaskKey, Path, Path]) -> tuple[ScoredPair | None, list[Problem]]:
    """Read one truth/prediction pair and count its pixels (MONAI's confusion matrix, via the project's metrics).

    Returns:
        ``(scored pair or None, problems)``: None with an error when a file cannot be read or the sizes differ.
    """
    from isic_monai.metrics.functional import confusion_counts

    key, truth_path, pred_path = pair
    problems: list[Problem] = []
    truth, pred = _read(truth_path, problems), _read(pred_path, problems)
    if truth is None or pred is None:
        return None, problems
    if truth.shape != pred.shape:
        problems.append(Problem(str(pred_path), "size_mismatch", f"size (H, W) = {pred.shape} but its truth "
                                f"{truth_path} is {truth.shape}; masks are never resized"))
        return None, problems
    counts = confusion_counts(pred[None], truth[None])[0]
    scored = ScoredPair(key, str(truth_path), str(pred_path), (int(truth.shape[0]), int(truth.shape[1])),
                        tuple(int(c) for c in counts))  # type: ignore[arg-type]
    return scored, problems


def score_folders(pred_dir: str | Path, gt_dir: str | Path, task: int | None = None, workers: int | None = 1,
                  progress: bool = False) -> FolderScore:
    """Match and count every pair of two folders (see :func:`match_pairs` and :func:`count_pair`).

    Args:
        pred_dir: the predicted masks.
        gt_dir: the truth masks.
        task: 1 or 2 (None: from the truth file names).
        workers: processes (1: this one; None: every CPU).
        progress: show a progress bar.

    Returns:
        The :class:`FolderScore`; pass it to :func:`score_report`.

    Raises:
        ScoringError: every matching, reading and size error, each naming its file (the pairs that can be read are
            all read first, so one run reports every problem).
    """
    from isic_monai.data.parallel import progress_map

    task, pairs, problems = match_pairs(pred_dir, gt_dir, task)
    if any(p.kind in ("no_truth", "mixed_tasks") for p in problems):
        raise ScoringError(problems)
    results = progress_map(count_pair, pairs, workers=workers, progress=progress, desc="score", unit="mask")
    scored = []
    for pair, found in results:
        problems += found
        if pair is not None:
            scored.append(pair)
    if errors(problems):
        raise ScoringError(problems)
    return FolderScore(task, scored, problems)


def _per_image(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Every :data:`PER_IMAGE_MEASURES` value of ``(..., 4)`` counts (``0/0`` = 1, as the official scorer)."""
    from isic_monai.metrics.functional import measure_from_counts, thresholded_jaccard_from_counts

    out = {m: measure_from_counts(counts, m, "one") for m in PER_IMAGE_MEASURES if m != "threshold_jaccard"}
    out["threshold_jaccard"] = thresholded_jaccard_from_counts(counts, empty="one")
    return {m: out[m] for m in PER_IMAGE_MEASURES}


def _confusion(counts: np.ndarray) -> dict[str, Any]:
    """Summed pixel counts and the mean over images of each image's normalised counts (fractions of the image)."""
    from isic_monai.metrics.functional import COUNT_FIELDS, normalized_counts

    total = counts.sum(axis=0)
    mean_fraction = normalized_counts(counts).mean(axis=0)
    return {"pixels": {f: int(total[i]) for i, f in enumerate(COUNT_FIELDS)},
            "mean_fraction": {f: float(mean_fraction[i]) for i, f in enumerate(COUNT_FIELDS)}}


def _mean_std_per_metric(values: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    from isic_monai.results.summary import mean_std

    return {m: mean_std(v) for m, v in values.items()}


def task1_report(pairs: Sequence[ScoredPair]) -> dict[str, Any]:
    """The official Task 1 result (``overall``, ``validation``, ``macro_average``) and the project's extras."""
    counts = np.asarray([p.counts for p in pairs], dtype=np.int64).reshape(-1, 4)
    values = _per_image(counts)
    macro = {m: float(np.mean(values[m])) for m in OFFICIAL_TASK1_METRICS}
    return {
        "overall": macro["threshold_jaccard"],
        "validation": macro["threshold_jaccard"],
        "macro_average": macro,
        "task": 1,
        "n_images": len(pairs),
        "precision": float(np.mean(values["precision"])),
        "mean_std": _mean_std_per_metric(values),
        "confusion_matrix": _confusion(counts),
    }


def task2_report(pairs: Sequence[ScoredPair]) -> dict[str, Any]:
    """The official Task 2 result (per attribute ``jaccard``/``dice``, ``micro_average``, ``overall``) and extras.

    Pairs an image lacks (an attribute file absent from the truth folder) count zero, as the scorer never sees them.
    """
    from isic_monai.metrics.functional import set_scores_from_counts

    attributes = sorted({p.key.attribute for p in pairs if p.key.attribute is not None})
    images = sorted({p.key.image_id for p in pairs})
    row, col = {n: i for i, n in enumerate(images)}, {n: i for i, n in enumerate(attributes)}
    counts = np.zeros((len(images), len(attributes), 4), dtype=np.int64)
    present = np.zeros((len(images), len(attributes)), dtype=bool)
    for p in pairs:
        counts[row[p.key.image_id], col[p.key.attribute]] = p.counts
        present[row[p.key.image_id], col[p.key.attribute]] = True
    official = set_scores_from_counts(counts)
    raw = set_scores_from_counts(counts, normalize=False, empty="nan")
    per_attribute = {}
    for a, name in enumerate(attributes):
        values = _per_image(counts[present[:, a], a])
        per_attribute[name] = {"mean_std": _mean_std_per_metric(values),
                               "confusion_matrix": _confusion(counts[present[:, a], a])}
    report = official.to_official(attributes)
    report.update({
        "task": 2,
        "n_images": len(images),
        "n_masks": len(pairs),
        "mean_jaccard": official.mean_jaccard,
        "mean_dice": official.mean_dice,
        "pixel_set_jaccard": {n: float(raw.jaccard[i]) for i, n in enumerate(attributes)},
        "attributes": per_attribute,
    })
    return report


def score_report(score: FolderScore) -> dict[str, Any]:
    """The JSON-ready result of :func:`score_folders`: the official scorer's keys first, then the extras."""
    return task2_report(score.pairs) if score.task == 2 else task1_report(score.pairs)


def per_image_rows(score: FolderScore) -> list[dict[str, Any]]:
    """One row per truth mask: ids, files, size, counts and every per-image measure."""
    from isic_monai.metrics.functional import COUNT_FIELDS

    rows = []
    for p in score.pairs:
        values = _per_image(np.asarray(p.counts, dtype=np.int64))
        row: dict[str, Any] = {"image": p.key.image_id}
        if score.task == 2:
            row["attribute"] = p.key.attribute
        row.update({"truth": p.truth, "prediction": p.prediction, "height": p.shape[0], "width": p.shape[1]})
        row.update(dict(zip(COUNT_FIELDS, p.counts, strict=True)))
        row.update({m: float(v) for m, v in values.items()})
        rows.append(row)
    return rows


def write_per_image_csv(score: FolderScore, path: str | Path) -> Path:
    """Write :func:`per_image_rows` to a CSV file (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = per_image_rows(score)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["image"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _ms(stats: dict[str, float]) -> str:
    return f"{stats['mean']:.4f} ± {stats['std']:.4f}"


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of a :func:`score_report` result."""
    if report["task"] == 1:
        lines = [f"Task 1: {report['n_images']} images",
                 f"Overall (mean thresholded Jaccard, the official score): {report['overall']:.4f}", "",
                 f"{'metric':<20}{'macro average':>15}{'mean ± std':>20}"]
        for m in PER_IMAGE_MEASURES:
            stats = report["mean_std"][m]
            lines.append(f"{m:<20}{stats['mean']:>15.4f}{_ms(stats):>20}")
        pixels = report["confusion_matrix"]["pixels"]
        lines += ["", "confusion matrix (pixels summed over images): " + ", ".join(
            f"{k.upper()} {v}" for k, v in pixels.items())]
        return "\n".join(lines) + "\n"
    lines = [f"Task 2: {report['n_images']} images, {report['n_masks']} attribute masks",
             f"Overall (micro-averaged Jaccard, the official score): {report['overall']:.4f}",
             f"Mean of the attributes' Jaccard: {report['mean_jaccard']:.4f}", "",
             f"{'attribute':<20}{'jaccard':>10}{'dice':>10}{'pixel set J':>13}{'per-image dice':>20}"]
    for name, extra in report["attributes"].items():
        lines.append(f"{name:<20}{report[name]['jaccard']:>10.4f}{report[name]['dice']:>10.4f}"
                     f"{report['pixel_set_jaccard'][name]:>13.4f}{_ms(extra['mean_std']['dice']):>20}")
    micro = report["micro_average"]
    lines.append(f"{'micro_average':<20}{micro['jaccard']:>10.4f}{micro['dice']:>10.4f}")
    lines.append(f"{'mean':<20}{report['mean_jaccard']:>10.4f}{report['mean_dice']:>10.4f}")
    return "\n".join(lines) + "\n"
