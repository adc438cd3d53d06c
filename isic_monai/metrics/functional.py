"""Pure functions for ISIC segmentation metrics on binary masks.

Every function accepts NumPy arrays or torch tensors holding binary masks (any dtype; values ``>= 0.5`` count as
foreground, so {0, 1}, {0, 255} and bool masks all work) of shape ``C×H×W`` (one image) or ``B×C×H×W`` (a batch);
``spatial_dims`` says how many trailing axes are spatial (2 for dermoscopy).
Results are returned as NumPy ``float64``/``int64`` arrays.

Confusion counts are stored in a trailing axis of length 4 in the order ``(TP, FP, FN, TN)``
(see :data:`COUNT_FIELDS`); per-image measures are computed from those counts, set-level measures from counts
summed over images first.

Empty rule: a ratio whose denominator is zero (``0/0``) takes the ``empty`` value. For Dice and Jaccard this happens
only when prediction and truth are both empty, for sensitivity whenever the truth is empty, for precision whenever
the prediction is empty and for specificity whenever the truth covers the whole image. ``empty="one"`` (default)
scores such a pair 1 (a correct "nothing here"), ``empty="nan"`` excludes it from NaN-aware means, ``empty="zero"``
scores it 0; a float is used as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

__all__ = [
    "COUNT_FIELDS",
    "MEASURES",
    "EmptyRule",
    "accuracy",
    "confusion_counts",
    "confusion_matrix",
    "dice",
    "empty_value",
    "jaccard",
    "mean_thresholded_jaccard",
    "measure_from_counts",
    "per_image_measure",
    "precision",
    "sensitivity",
    "set_jaccard",
    "set_jaccard_from_counts",
    "set_measure_from_counts",
    "specificity",
    "stack_masks",
    "thresholded_jaccard",
    "thresholded_jaccard_from_counts",
]

COUNT_FIELDS: tuple[str, ...] = ("tp", "fp", "fn", "tn")
"""Order of the confusion counts in the trailing axis of every counts array."""

MEASURES: tuple[str, ...] = ("dice", "jaccard", "accuracy", "sensitivity", "specificity", "precision")
"""Names accepted by :func:`measure_from_counts` (``recall`` and ``iou`` are accepted as aliases)."""

_ALIASES = {"recall": "sensitivity", "iou": "jaccard", "pixel_accuracy": "accuracy", "tpr": "sensitivity"}

EmptyRule = Literal["one", "nan", "zero"] | float
ArrayLike = np.ndarray | torch.Tensor


def empty_value(empty: EmptyRule) -> float:
    """Convert an empty rule to the number assigned to a ``0/0`` ratio.

    Args:
        empty: ``"one"`` (1.0), ``"nan"`` (NaN), ``"zero"`` (0.0) or a float used as is.

    Returns:
        The value for undefined ratios.
    """
    if isinstance(empty, str):
        table = {"one": 1.0, "nan": float("nan"), "zero": 0.0}
        if empty.lower() not in table:
            raise ValueError(f"empty must be one of {sorted(table)} or a float, got {empty!r}.")
        return table[empty.lower()]
    return float(empty)


def _to_bool_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    return x if x.dtype == np.bool_ else x >= 0.5


def stack_masks(masks: ArrayLike | Sequence[ArrayLike]) -> np.ndarray:
    """Turn a ``B×C×H×W`` array or a list of ``C×H×W`` arrays into one boolean ``B×C×H×W`` array.

    Args:
        masks: a batch-first array/tensor or a sequence of channel-first arrays/tensors of equal shape.

    Returns:
        A boolean NumPy array with a leading batch axis.
    """
    if isinstance(masks, (list, tuple)):
        return np.stack([_to_bool_numpy(m) for m in masks], axis=0)
    return _to_bool_numpy(masks)


def confusion_counts(y_pred: ArrayLike, y: ArrayLike, spatial_dims: int = 2) -> np.ndarray:
    """Pixel confusion counts per channel (and per image for batched input).

    Args:
        y_pred: binary prediction, ``C×H×W`` or ``B×C×H×W`` (values ``>= 0.5`` are foreground).
        y: binary ground truth of the same shape.
        spatial_dims: number of trailing spatial axes that are summed over.

    Returns:
        ``int64`` array of shape ``(C, 4)`` or ``(B, C, 4)`` holding ``(TP, FP, FN, TN)``.
    """
    p = _to_bool_numpy(y_pred)
    t = _to_bool_numpy(y)
    if p.shape != t.shape:
        raise ValueError(f"y_pred and y must have the same shape, got {p.shape} and {t.shape}.")
    if p.ndim < spatial_dims + 1:
        raise ValueError(f"expected at least a channel axis and {spatial_dims} spatial axes, got shape {p.shape}.")
    axes = tuple(range(p.ndim - spatial_dims, p.ndim))
    tp = np.sum(p & t, axis=axes)
    fp = np.sum(p & ~t, axis=axes)
    fn = np.sum(~p & t, axis=axes)
    tn = np.sum(~p & ~t, axis=axes)
    return np.stack([tp, fp, fn, tn], axis=-1).astype(np.int64)


def _ratio(num: np.ndarray, den: np.ndarray, empty: EmptyRule) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, empty_value(empty), dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def measure_from_counts(counts: ArrayLike, measure: str, empty: EmptyRule = "one") -> np.ndarray:
    """Compute a measure from confusion counts ``(..., 4)``.

    Args:
        counts: array whose last axis is ``(TP, FP, FN, TN)``.
        measure: one of :data:`MEASURES` (``dice``, ``jaccard``, ``accuracy``, ``sensitivity``,
            ``specificity``, ``precision``) or an alias (``iou``, ``recall``, ``pixel_accuracy``).
        empty: value of a ``0/0`` ratio (see the module docstring).

    Returns:
        ``float64`` array with the last axis removed.
    """
    c = counts.detach().cpu().numpy() if isinstance(counts, torch.Tensor) else np.asarray(counts)
    c = c.astype(np.float64)
    tp, fp, fn, tn = c[..., 0], c[..., 1], c[..., 2], c[..., 3]
    name = _ALIASES.get(measure.lower(), measure.lower())
    if name == "dice":
        return _ratio(2 * tp, 2 * tp + fp + fn, empty)
    if name == "jaccard":
        return _ratio(tp, tp + fp + fn, empty)
    if name == "accuracy":
        return _ratio(tp + tn, tp + fp + fn + tn, empty)
    if name == "sensitivity":
        return _ratio(tp, tp + fn, empty)
    if name == "specificity":
        return _ratio(tn, tn + fp, empty)
    if name == "precision":
        return _ratio(tp, tp + fp, empty)
    raise ValueError(f"unknown measure {measure!r}; expected one of {MEASURES} or {tuple(_ALIASES)}.")


def per_image_measure(
    y_pred: ArrayLike, y: ArrayLike, measure: str, empty: EmptyRule = "one", spatial_dims: int = 2
) -> np.ndarray:
    """Per-image, per-channel measure of binary masks.

    Args:
        y_pred: binary prediction, ``C×H×W`` or ``B×C×H×W``.
        y: binary ground truth of the same shape.
        measure: see :func:`measure_from_counts`.
        empty: value of a ``0/0`` ratio.
        spatial_dims: number of trailing spatial axes.

    Returns:
        ``(C,)`` or ``(B, C)`` float array.
    """
    return measure_from_counts(confusion_counts(y_pred, y, spatial_dims), measure, empty)


def dice(y_pred: ArrayLike, y: ArrayLike, empty: EmptyRule = "one", spatial_dims: int = 2) -> np.ndarray:
    """Dice ``2TP / (2TP + FP + FN)`` per image and channel; both empty -> ``empty`` (default 1)."""
    return per_image_measure(y_pred, y, "dice", empty, spatial_dims)


def jaccard(y_pred: ArrayLike, y: ArrayLike, empty: EmptyRule = "one", spatial_dims: int = 2) -> np.ndarray:
    """Jaccard (IoU) ``TP / (TP + FP + FN)`` per image and channel; both empty -> ``empty`` (default 1)."""
    return per_image_measure(y_pred, y, "jaccard", empty, spatial_dims)


def accuracy(y_pred: ArrayLike, y: ArrayLike, empty: EmptyRule = "one", spatial_dims: int = 2) -> np.ndarray:
    """Pixel accuracy ``(TP + TN) / N`` per image and channel (never ``0/0`` for a non-empty image)."""
    return per_image_measure(y_pred, y, "accuracy", empty, spatial_dims)


def sensitivity(y_pred: ArrayLike, y: ArrayLike, empty: EmptyRule = "one", spatial_dims: int = 2) -> np.ndarray:
    """Sensitivity (recall) ``TP / (TP + FN)``; an empty truth -> ``empty`` (default 1)."""
    return per_image_measure(y_pred, y, "sensitivity", empty, spatial_dims)


def specificity(y_pred: ArrayLike, y: ArrayLike, empty: EmptyRule = "one", spatial_dims: int = 2) -> np.ndarray:
    """Specificity ``TN / (TN + FP)``; a truth covering the whole image -> ``empty`` (default 1)."""
    return per_image_measure(y_pred, y, "specificity", empty, spatial_dims)


def precision(y_pred: ArrayLike, y: ArrayLike, empty: EmptyRule = "one", spatial_dims: int = 2) -> np.ndarray:
    """Precision ``TP / (TP + FP)``; an empty prediction -> ``empty`` (default 1)."""
    return per_image_measure(y_pred, y, "precision", empty, spatial_dims)


def thresholded_jaccard_from_counts(counts: ArrayLike, threshold: float = 0.65, empty: EmptyRule = "one") -> np.ndarray:
    """ISIC 2018 Task 1 per-image score from counts: Jaccard, set to 0 where it is below ``threshold``.

    Args:
        counts: ``(..., 4)`` confusion counts.
        threshold: scores strictly below it become 0 (ISIC 2018: 0.65).
        empty: value of Jaccard for an empty prediction with an empty truth (NaN stays NaN).

    Returns:
        Float array with the last axis removed.
    """
    ji = measure_from_counts(counts, "jaccard", empty)
    return np.where(ji < threshold, 0.0, ji)


def thresholded_jaccard(
    y_pred: ArrayLike, y: ArrayLike, threshold: float = 0.65, empty: EmptyRule = "one", spatial_dims: int = 2
) -> np.ndarray:
    """Per-image thresholded Jaccard (ISIC 2018 Task 1): ``JI if JI >= threshold else 0``.

    Args:
        y_pred: binary prediction, ``C×H×W`` or ``B×C×H×W``.
        y: binary ground truth of the same shape.
        threshold: the cut-off (0.65 in ISIC 2018).
        empty: Jaccard of an empty/empty pair before thresholding.
        spatial_dims: number of trailing spatial axes.

    Returns:
        ``(C,)`` or ``(B, C)`` float array.
    """
    return thresholded_jaccard_from_counts(confusion_counts(y_pred, y, spatial_dims), threshold, empty)


def mean_thresholded_jaccard(
    y_pred: ArrayLike | Sequence[ArrayLike],
    y: ArrayLike | Sequence[ArrayLike],
    threshold: float = 0.65,
    empty: EmptyRule = "one",
) -> float:
    """The ISIC 2018 Task 1 score: mean over images (and channels) of the thresholded Jaccard.

    Args:
        y_pred: ``B×C×H×W`` array or a list of ``C×H×W`` binary predictions.
        y: ground truth in the same form.
        threshold: the cut-off (0.65).
        empty: Jaccard of an empty/empty pair; ``"nan"`` excludes such pairs from the mean.

    Returns:
        The NaN-aware mean (NaN when every value is NaN).
    """
    values = thresholded_jaccard(stack_masks(y_pred), stack_masks(y), threshold, empty)
    return _nanmean(values)


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or np.all(np.isnan(values)):
        return float("nan")
    return float(np.nanmean(values))


def set_measure_from_counts(counts: ArrayLike, measure: str = "jaccard", empty: EmptyRule = "nan") -> np.ndarray:
    """Set-level measure per channel: counts summed over every image first, then the ratio.

    Args:
        counts: ``(N, C, 4)`` per-image counts (or ``(C, 4)`` already summed).
        measure: see :func:`measure_from_counts`.
        empty: value for a channel with ``0/0`` over the whole set (default NaN).

    Returns:
        ``(C,)`` float array.
    """
    c = counts.detach().cpu().numpy() if isinstance(counts, torch.Tensor) else np.asarray(counts)
    c = c.astype(np.int64)
    if c.ndim == 3:
        c = c.sum(axis=0)
    return measure_from_counts(c, measure, empty)


def set_jaccard_from_counts(counts: ArrayLike, empty: EmptyRule = "nan") -> tuple[np.ndarray, float]:
    """ISIC 2018 Task 2 score from counts.

    Args:
        counts: ``(N, C, 4)`` per-image counts or ``(C, 4)`` summed counts.
        empty: Jaccard of a channel with no foreground pixel in truth or prediction over the whole set.
            ``"nan"`` (default) leaves it out of the mean; ``"one"`` counts it as perfect.

    Returns:
        ``(per_channel, mean)``: the ``(C,)`` set-level Jaccard and its NaN-aware mean.
    """
    per_channel = set_measure_from_counts(counts, "jaccard", empty)
    return per_channel, _nanmean(per_channel)


def set_jaccard(
    y_pred: ArrayLike | Sequence[ArrayLike], y: ArrayLike | Sequence[ArrayLike], empty: EmptyRule = "nan"
) -> tuple[np.ndarray, float]:
    """ISIC 2018 Task 2 set-level Jaccard: per channel ``ΣTP / (ΣTP + ΣFP + ΣFN)`` over all images, then the mean.

    Args:
        y_pred: ``B×C×H×W`` array or a list of ``C×H×W`` binary predictions (the whole set).
        y: ground truth in the same form.
        empty: value for a channel whose truth and prediction are empty over the whole set
            (default NaN: excluded from the mean).

    Returns:
        ``(per_channel, mean)``.
    """
    return set_jaccard_from_counts(confusion_counts(stack_masks(y_pred), stack_masks(y)), empty)


def confusion_matrix(y_pred: ArrayLike, y: ArrayLike, spatial_dims: int = 2) -> np.ndarray:
    """Pixel-level 2×2 confusion matrix per channel (per image for batched input).

    Rows are the truth, columns the prediction (scikit-learn convention): ``[[TN, FP], [FN, TP]]``.
    Sum over the batch axis for a set-level matrix.

    Args:
        y_pred: binary prediction, ``C×H×W`` or ``B×C×H×W``.
        y: binary ground truth of the same shape.
        spatial_dims: number of trailing spatial axes.

    Returns:
        ``int64`` array ``(C, 2, 2)`` or ``(B, C, 2, 2)``.
    """
    c = confusion_counts(y_pred, y, spatial_dims)
    tp, fp, fn, tn = c[..., 0], c[..., 1], c[..., 2], c[..., 3]
    return np.stack([np.stack([tn, fp], axis=-1), np.stack([fn, tp], axis=-1)], axis=-2)
