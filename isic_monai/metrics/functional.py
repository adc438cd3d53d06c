"""Pure functions for ISIC segmentation metrics on binary masks.

Every function accepts NumPy arrays or torch tensors holding binary masks (any dtype; values ``>= 0.5`` count as
foreground, the project rule :func:`isic_monai.data.masks.foreground` at scale 1, so {0, 1}, {0, 255} and bool masks
all work) of shape ``C×H×W`` (one image) or ``B×C×H×W`` (a batch);
``spatial_dims`` says how many trailing axes are spatial (2 for dermoscopy).
Results are returned as NumPy ``float64``/``int64`` arrays.

Confusion counts are stored in a trailing axis of length 4 in the order ``(TP, FP, FN, TN)``
(see :data:`COUNT_FIELDS`); per-image measures are computed from those counts, set-level measures from counts
summed over images first. The pixels are counted once, by MONAI's :func:`monai.metrics.get_confusion_matrix`
(:func:`confusion_counts_torch`); :func:`from_monai_confusion` is the one place that reorders MONAI's
``[TP, FP, TN, FN]``. :func:`measure_from_counts` also takes the ``(TP, FP, FN)`` counts of
:func:`isic_monai.metrics.thresholds.threshold_counts` (for the measures that need no TN).

Set-level scores (ISIC 2018 Task 2) come from the counts of every image: :func:`set_scores_from_counts` is the official
scorer's rule (each image's counts divided by its pixel count, summed over the images, ``0/0`` scored 1, per-channel
Jaccard and Dice plus the micro-average over channels, whose Jaccard is the official ``overall``);
``normalize=False, empty="nan"`` gives the raw-pixel variant (:func:`pixel_set_jaccard`).

Empty rule: a ratio whose denominator is zero (``0/0``) takes the ``empty`` value. For Dice and Jaccard this happens
only when prediction and truth are both empty, for sensitivity whenever the truth is empty, for precision whenever
the prediction is empty and for specificity whenever the truth covers the whole image. ``empty="one"`` (default)
scores such a pair 1 (a correct "nothing here"), ``empty="nan"`` excludes it from NaN-aware means, ``empty="zero"``
scores it 0; a float is used as is.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from monai.data import MetaTensor
from monai.metrics import get_confusion_matrix

from isic_monai.data.masks import foreground

__all__ = [
    "COUNT_FIELDS",
    "ISIC2018_JACCARD_CUTOFF",
    "MEASURES",
    "EmptyRule",
    "SetScores",
    "accuracy",
    "as_binary_tensor",
    "as_plain_tensor",
    "canonical_measure",
    "confusion_counts",
    "confusion_counts_torch",
    "confusion_matrix",
    "counts_per_image",
    "dice",
    "empty_value",
    "from_monai_confusion",
    "jaccard",
    "mean_thresholded_jaccard",
    "measure_from_counts",
    "nanmean",
    "normalized_counts",
    "per_image_measure",
    "pixel_set_jaccard",
    "pixel_set_jaccard_from_counts",
    "precision",
    "sensitivity",
    "set_jaccard",
    "set_jaccard_from_counts",
    "set_measure_from_counts",
    "set_scores",
    "set_scores_from_counts",
    "specificity",
    "stack_masks",
    "thresholded_jaccard",
    "thresholded_jaccard_from_counts",
]

COUNT_FIELDS: tuple[str, ...] = ("tp", "fp", "fn", "tn")
"""Order of the confusion counts in the trailing axis of every counts array (threshold counts stop after FN)."""

ISIC2018_JACCARD_CUTOFF: float = 0.65
"""ISIC 2018 Task 1: a per-image Jaccard strictly below this counts as 0 (the thresholded Jaccard)."""

MEASURES: tuple[str, ...] = ("dice", "jaccard", "accuracy", "sensitivity", "specificity", "precision")
"""Names accepted by :func:`measure_from_counts` (``recall`` and ``iou`` are accepted as aliases)."""

_ALIASES = {"recall": "sensitivity", "iou": "jaccard", "pixel_accuracy": "accuracy", "tpr": "sensitivity"}
_NEEDS_TN = ("accuracy", "specificity")

_MONAI_ORDER = (0, 1, 3, 2)
"""Index into MONAI's ``[TP, FP, TN, FN]`` for each of :data:`COUNT_FIELDS`."""

_FLOAT32_EXACT = 2**24
"""Largest pixel count that MONAI's float32 confusion matrix holds exactly."""

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


def canonical_measure(measure: str) -> str:
    """The :data:`MEASURES` name of ``measure`` or one of its aliases (``iou``, ``recall``, ``pixel_accuracy``).

    Raises:
        ValueError: for an unknown name.
    """
    name = _ALIASES.get(measure.lower(), measure.lower())
    if name not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; expected one of {MEASURES} or {tuple(_ALIASES)}.")
    return name


def nanmean(values: Any, axis: int | None = None) -> Any:
    """``np.nanmean`` in ``float64``, without its warning: an empty or all-NaN slice is NaN.

    Args:
        values: numbers (array, tensor on the CPU or sequence).
        axis: the axis to average over (``None``: all).

    Returns:
        A float for ``axis=None``, else an array.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = np.nanmean(np.asarray(values, dtype=np.float64), axis=axis)
    return float(out) if axis is None else out


def as_plain_tensor(x: Any) -> torch.Tensor:
    """A torch tensor without MONAI metadata, sharing memory with ``x`` where possible."""
    if isinstance(x, MetaTensor):
        return x.as_tensor()
    if isinstance(x, torch.Tensor):
        return x
    return torch.as_tensor(np.ascontiguousarray(x))


def as_binary_tensor(x: Any) -> torch.Tensor:
    """A boolean tensor: ``x`` itself when boolean, else ``x >= 0.5`` (the project rule,
    :func:`isic_monai.data.masks.foreground` at scale 1, so {0, 1} and {0, 255} masks both work).

    Arrays are compared in NumPy, which handles every dtype (torch lacks comparisons for some unsigned ones).
    """
    if not isinstance(x, torch.Tensor):
        x = foreground(np.asarray(x), scale=1)
    return foreground(as_plain_tensor(x), scale=1)


def stack_masks(masks: ArrayLike | Sequence[ArrayLike]) -> np.ndarray:
    """Turn a ``B×C×H×W`` array or a list of ``C×H×W`` arrays into one boolean ``B×C×H×W`` array.

    Args:
        masks: a batch-first array/tensor or a sequence of channel-first arrays/tensors of equal shape.

    Returns:
        A boolean NumPy array with a leading batch axis.
    """
    if isinstance(masks, (list, tuple)):
        return np.stack([as_binary_tensor(m).cpu().numpy() for m in masks], axis=0)
    return as_binary_tensor(masks).cpu().numpy()


def from_monai_confusion(matrix: torch.Tensor) -> torch.Tensor:
    """Reorder MONAI's confusion counts ``[TP, FP, TN, FN]`` into :data:`COUNT_FIELDS` ``(TP, FP, FN, TN)``.

    Args:
        matrix: the ``(..., 4)`` float output of :func:`monai.metrics.get_confusion_matrix`.

    Returns:
        ``int64`` tensor of the same shape.
    """
    return matrix[..., list(_MONAI_ORDER)].round().to(torch.int64)


def confusion_counts_torch(y_pred: Any, y: Any) -> torch.Tensor:
    """Per-image, per-channel ``(TP, FP, FN, TN)`` of batch-first tensors, on their device.

    The counting is MONAI's :func:`~monai.metrics.get_confusion_matrix` on the binarised masks. MONAI returns float32,
    whose integers are exact only up to ``2**24`` (16.8 M pixels) while ISIC photos evaluated at their original size
    reach 30 M; longer images are therefore counted in chunks of at most ``2**24`` pixels (zero padding, removed from
    TN afterwards) and the chunks summed in ``int64``, so every count is exact.

    Args:
        y_pred: ``B×C×spatial`` binary prediction (``>= 0.5`` is foreground).
        y: ground truth of the same shape.

    Returns:
        ``int64`` tensor of shape ``(B, C, 4)``.
    """
    p, t = as_binary_tensor(y_pred), as_binary_tensor(y)
    if p.shape != t.shape:
        raise ValueError(f"y_pred and y must have the same shape, got {tuple(p.shape)} and {tuple(t.shape)}.")
    if p.ndim < 3:
        raise ValueError(f"expected B×C×spatial tensors, got shape {tuple(p.shape)}.")
    b, c = p.shape[:2]
    p, t = p.flatten(2).to(torch.uint8), t.flatten(2).to(device=p.device, dtype=torch.uint8)
    size = p.shape[-1]
    n_chunks = max(1, math.ceil(size / _FLOAT32_EXACT))
    chunk = math.ceil(size / n_chunks)
    pad = n_chunks * chunk - size
    if pad:
        p, t = torch.nn.functional.pad(p, (0, pad)), torch.nn.functional.pad(t, (0, pad))
    matrix = get_confusion_matrix(p.reshape(b, c * n_chunks, chunk), t.reshape(b, c * n_chunks, chunk))
    counts = from_monai_confusion(matrix).view(b, c, n_chunks, 4).sum(2)
    counts[..., COUNT_FIELDS.index("tn")] -= pad
    return counts


def confusion_counts(y_pred: ArrayLike, y: ArrayLike, spatial_dims: int = 2) -> np.ndarray:
    """Pixel confusion counts per channel (and per image for batched input), as NumPy.

    The NumPy face of :func:`confusion_counts_torch` (same counting): the pure functions of this module take single
    ``C×H×W`` images and any ``spatial_dims`` and return NumPy, for scoring lists of masks read from disk and for
    comparisons with NumPy references.

    Args:
        y_pred: binary prediction, ``C×H×W`` or ``B×C×H×W`` (values ``>= 0.5`` are foreground).
        y: binary ground truth of the same shape.
        spatial_dims: number of trailing spatial axes that are summed over.

    Returns:
        ``int64`` array of shape ``(C, 4)`` or ``(B, C, 4)`` holding ``(TP, FP, FN, TN)``.
    """
    p, t = as_binary_tensor(y_pred), as_binary_tensor(y)
    if p.shape != t.shape:
        raise ValueError(f"y_pred and y must have the same shape, got {tuple(p.shape)} and {tuple(t.shape)}.")
    if p.ndim < spatial_dims + 1:
        raise ValueError(f"expected at least a channel axis and {spatial_dims} spatial axes, got shape {p.shape}.")
    lead = tuple(p.shape[: p.ndim - spatial_dims])
    flat = (-1, lead[-1], math.prod(p.shape[p.ndim - spatial_dims :]))
    return confusion_counts_torch(p.reshape(flat), t.reshape(flat)).reshape(*lead, 4).cpu().numpy()


def _ratio(num: np.ndarray, den: np.ndarray, empty: EmptyRule) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, empty_value(empty), dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def measure_from_counts(counts: Any, measure: str, empty: EmptyRule = "one") -> np.ndarray:
    """Compute a measure from confusion counts ``(..., 4)`` ``(TP, FP, FN, TN)`` or ``(..., 3)`` ``(TP, FP, FN)``.

    Args:
        counts: array or tensor whose last axis is ``(TP, FP, FN, TN)``, or ``(TP, FP, FN)`` (the threshold
            candidates' counts) for the measures without TN.
        measure: one of :data:`MEASURES` (``dice``, ``jaccard``, ``accuracy``, ``sensitivity``,
            ``specificity``, ``precision``) or an alias (``iou``, ``recall``, ``pixel_accuracy``).
        empty: value of a ``0/0`` ratio (see the module docstring).

    Returns:
        ``float64`` array with the last axis removed.
    """
    c = counts.detach().cpu().numpy() if isinstance(counts, torch.Tensor) else np.asarray(counts)
    c = c.astype(np.float64)
    name = canonical_measure(measure)
    if c.shape[-1:] not in ((3,), (4,)) or (name in _NEEDS_TN and c.shape[-1] != 4):
        raise ValueError(f"{name} needs counts (..., 4) (TP, FP, FN, TN) or (..., 3) without TN, got {c.shape}.")
    tp, fp, fn = c[..., 0], c[..., 1], c[..., 2]
    if name == "dice":
        return _ratio(2 * tp, 2 * tp + fp + fn, empty)
    if name == "jaccard":
        return _ratio(tp, tp + fp + fn, empty)
    if name == "sensitivity":
        return _ratio(tp, tp + fn, empty)
    if name == "precision":
        return _ratio(tp, tp + fp, empty)
    tn = c[..., 3]
    if name == "accuracy":
        return _ratio(tp + tn, tp + fp + fn + tn, empty)
    return _ratio(tn, tn + fp, empty)  # specificity


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


def thresholded_jaccard_from_counts(
    counts: Any, threshold: float = ISIC2018_JACCARD_CUTOFF, empty: EmptyRule = "one"
) -> np.ndarray:
    """ISIC 2018 Task 1 per-image score from counts: Jaccard, set to 0 where it is below ``threshold``.

    Args:
        counts: ``(..., 4)`` confusion counts, or ``(..., 3)`` ``(TP, FP, FN)``.
        threshold: scores strictly below it become 0 (ISIC 2018: :data:`ISIC2018_JACCARD_CUTOFF`).
        empty: value of Jaccard for an empty prediction with an empty truth (NaN stays NaN).

    Returns:
        Float array with the last axis removed.
    """
    ji = measure_from_counts(counts, "jaccard", empty)
    return np.where(ji < threshold, 0.0, ji)


def thresholded_jaccard(
    y_pred: ArrayLike,
    y: ArrayLike,
    threshold: float = ISIC2018_JACCARD_CUTOFF,
    empty: EmptyRule = "one",
    spatial_dims: int = 2,
) -> np.ndarray:
    """Per-image thresholded Jaccard (ISIC 2018 Task 1): ``JI if JI >= threshold else 0``.

    Args:
        y_pred: binary prediction, ``C×H×W`` or ``B×C×H×W``.
        y: binary ground truth of the same shape.
        threshold: the cut-off (:data:`ISIC2018_JACCARD_CUTOFF`).
        empty: Jaccard of an empty/empty pair before thresholding.
        spatial_dims: number of trailing spatial axes.

    Returns:
        ``(C,)`` or ``(B, C)`` float array.
    """
    return thresholded_jaccard_from_counts(confusion_counts(y_pred, y, spatial_dims), threshold, empty)


def mean_thresholded_jaccard(
    y_pred: ArrayLike | Sequence[ArrayLike],
    y: ArrayLike | Sequence[ArrayLike],
    threshold: float = ISIC2018_JACCARD_CUTOFF,
    empty: EmptyRule = "one",
) -> float:
    """The ISIC 2018 Task 1 score: mean over images (and channels) of the thresholded Jaccard.

    Args:
        y_pred: ``B×C×H×W`` array or a list of ``C×H×W`` binary predictions.
        y: ground truth in the same form.
        threshold: the cut-off (:data:`ISIC2018_JACCARD_CUTOFF`).
        empty: Jaccard of an empty/empty pair; ``"nan"`` excludes such pairs from the mean.

    Returns:
        The NaN-aware mean (NaN when every value is NaN).
    """
    return nanmean(thresholded_jaccard(stack_masks(y_pred), stack_masks(y), threshold, empty))


def set_measure_from_counts(counts: Any, measure: str = "jaccard", empty: EmptyRule = "nan") -> np.ndarray:
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


def counts_per_image(
    y_pred: ArrayLike | Sequence[ArrayLike], y: ArrayLike | Sequence[ArrayLike], spatial_dims: int = 2
) -> np.ndarray:
    """Per-image counts ``(N, C, 4)`` of a batch, or of lists of ``C×H×W`` masks whose sizes may differ per image.

    Args:
        y_pred: ``B×C×H×W`` array or a list of ``C×H×W`` binary predictions.
        y: ground truth in the same form (each truth the size of its prediction).
        spatial_dims: number of trailing spatial axes.

    Returns:
        ``int64`` array ``(N, C, 4)`` of ``(TP, FP, FN, TN)``.
    """
    if isinstance(y_pred, (list, tuple)) or isinstance(y, (list, tuple)):
        if len(y_pred) != len(y):
            raise ValueError(f"got {len(y_pred)} predictions for {len(y)} ground truths.")
        if not len(y_pred):
            raise ValueError("no images to score.")
        return np.stack([confusion_counts(p, t, spatial_dims) for p, t in zip(y_pred, y, strict=True)])
    return confusion_counts(y_pred, y, spatial_dims)


def normalized_counts(counts: Any) -> np.ndarray:
    """Each image's confusion counts divided by its pixel count (``TP + FP + FN + TN``), as the ISIC scorer does.

    Images of every size then weigh the same in a set-level sum. An all-zero row (a missing image/channel pair)
    stays zero, so it adds nothing to the sums, like a pair the official scorer never sees.

    Args:
        counts: ``(..., 4)`` counts ``(TP, FP, FN, TN)`` of single images.

    Returns:
        ``float64`` array of the same shape whose last axis sums to 1 (or 0).
    """
    c = counts.detach().cpu().numpy() if isinstance(counts, torch.Tensor) else np.asarray(counts)
    if c.shape[-1:] != (4,):
        raise ValueError(f"normalising needs counts (..., 4) (TP, FP, FN, TN), got shape {c.shape}.")
    c = c.astype(np.float64)
    total = c.sum(axis=-1, keepdims=True)
    return np.divide(c, total, out=np.zeros_like(c), where=total > 0)


@dataclass(frozen=True)
class SetScores:
    """Set-level scores of a set of images (ISIC 2018 Task 2), from :func:`set_scores_from_counts`.

    Attributes:
        jaccard: ``(C,)`` Jaccard per channel (attribute).
        dice: ``(C,)`` Dice per channel.
        micro_jaccard: Jaccard of the counts summed over the channels too (the scorer's ``micro_average``).
        micro_dice: Dice of the same sums.
        mean_jaccard: NaN-aware mean of ``jaccard`` over the channels.
        mean_dice: NaN-aware mean of ``dice``.
    """

    jaccard: np.ndarray
    dice: np.ndarray
    micro_jaccard: float
    micro_dice: float
    mean_jaccard: float
    mean_dice: float

    @property
    def overall(self) -> float:
        """The official scorer's ``overall``: the micro-averaged Jaccard."""
        return self.micro_jaccard

    def to_official(self, channel_names: Sequence[str]) -> dict[str, Any]:
        """The ``isic-challenge-scoring`` Task 2 result layout.

        Args:
            channel_names: one attribute name per channel.

        Returns:
            ``{attribute: {"jaccard", "dice"}, ..., "micro_average": {"jaccard", "dice"}, "overall": float}`` with
            the attributes in sorted order, as the official scorer writes them.
        """
        names = [str(n) for n in channel_names]
        if len(names) != len(self.jaccard):
            raise ValueError(f"got {len(names)} channel names for {len(self.jaccard)} channels.")
        out: dict[str, Any] = {
            n: {"jaccard": float(self.jaccard[i]), "dice": float(self.dice[i])}
            for n, i in sorted((n, i) for i, n in enumerate(names))
        }
        out["micro_average"] = {"jaccard": self.micro_jaccard, "dice": self.micro_dice}
        out["overall"] = self.overall
        return out


def set_scores_from_counts(counts: Any, normalize: bool = True, empty: EmptyRule = "one") -> SetScores:
    """Set-level Jaccard and Dice per channel and micro-averaged over channels.

    The defaults are the official ISIC scorer (``isic-challenge-scoring``, Task 2): each image's counts are divided by
    its pixel count, summed over the images, and a ``0/0`` (an attribute absent from truth and prediction over the
    whole set) scores 1. ``normalize=False, empty="nan"`` is the raw-pixel variant (pixel counts summed, such a
    channel NaN and left out of the means).

    Args:
        counts: ``(N, C, 4)`` per-image counts ``(TP, FP, FN, TN)``; a ``(C, 4)`` array is one image.
        normalize: divide each image's counts by its pixel count first (the official rule).
        empty: value of a ``0/0`` ratio (official: ``"one"``).

    Returns:
        The :class:`SetScores`.
    """
    c = counts.detach().cpu().numpy() if isinstance(counts, torch.Tensor) else np.asarray(counts)
    if c.ndim == 2:
        c = c[None]
    if c.ndim != 3 or c.shape[-1] != 4:
        raise ValueError(f"expected per-image counts (N, C, 4), got shape {c.shape}.")
    c = normalized_counts(c) if normalize else c.astype(np.int64)
    per_channel = c.sum(axis=0)
    micro = per_channel.sum(axis=0)
    jac = measure_from_counts(per_channel, "jaccard", empty)
    dsc = measure_from_counts(per_channel, "dice", empty)
    return SetScores(
        jaccard=jac,
        dice=dsc,
        micro_jaccard=float(measure_from_counts(micro, "jaccard", empty)),
        micro_dice=float(measure_from_counts(micro, "dice", empty)),
        mean_jaccard=nanmean(jac),
        mean_dice=nanmean(dsc),
    )


def set_scores(
    y_pred: ArrayLike | Sequence[ArrayLike],
    y: ArrayLike | Sequence[ArrayLike],
    normalize: bool = True,
    empty: EmptyRule = "one",
) -> SetScores:
    """:func:`set_scores_from_counts` of masks: the official ISIC 2018 Task 2 scores by default.

    Args:
        y_pred: ``B×C×H×W`` array or a list of ``C×H×W`` binary predictions (sizes may differ per image).
        y: ground truth in the same form.
        normalize: divide each image's counts by its pixel count (official).
        empty: value of a ``0/0`` ratio (official: ``"one"``).

    Returns:
        The :class:`SetScores`.
    """
    return set_scores_from_counts(counts_per_image(y_pred, y), normalize, empty)


def set_jaccard_from_counts(
    counts: Any, empty: EmptyRule = "one", normalize: bool = True
) -> tuple[np.ndarray, float]:
    """ISIC 2018 Task 2 per-attribute Jaccard from counts, the official way by default, and its mean.

    Args:
        counts: ``(N, C, 4)`` per-image counts (a ``(C, 4)`` array is one image).
        empty: Jaccard of a channel with no foreground pixel in truth or prediction over the whole set
            (official: ``"one"``).
        normalize: divide each image's counts by its pixel count first (official).

    Returns:
        ``(per_channel, mean)``: the ``(C,)`` set-level Jaccard and its NaN-aware mean over channels (the official
        ``overall`` is :attr:`SetScores.overall` of :func:`set_scores_from_counts`).
    """
    scores = set_scores_from_counts(counts, normalize, empty)
    return scores.jaccard, scores.mean_jaccard


def set_jaccard(
    y_pred: ArrayLike | Sequence[ArrayLike],
    y: ArrayLike | Sequence[ArrayLike],
    empty: EmptyRule = "one",
    normalize: bool = True,
) -> tuple[np.ndarray, float]:
    """ISIC 2018 Task 2 set-level Jaccard per attribute as the official scorer computes it, and the mean.

    Args:
        y_pred: ``B×C×H×W`` array or a list of ``C×H×W`` binary predictions (the whole set; sizes may differ).
        y: ground truth in the same form.
        empty: value for a channel whose truth and prediction are empty over the whole set (official: 1).
        normalize: divide each image's counts by its pixel count first (official).

    Returns:
        ``(per_channel, mean)``.
    """
    return set_jaccard_from_counts(counts_per_image(y_pred, y), empty, normalize)


def pixel_set_jaccard_from_counts(counts: Any, empty: EmptyRule = "nan") -> tuple[np.ndarray, float]:
    """Raw-pixel set-level Jaccard: per channel ``ΣTP / (ΣTP + ΣFP + ΣFN)`` of the pixel counts, then the mean.

    Large images weigh more than small ones; a channel empty over the whole set is NaN (left out of the mean) by
    default. This is not the official score (see :func:`set_jaccard_from_counts`).

    Args:
        counts: ``(N, C, 4)`` per-image counts or ``(C, 4)`` summed counts.
        empty: Jaccard of a channel with no foreground pixel in truth or prediction over the whole set.

    Returns:
        ``(per_channel, mean)``.
    """
    per_channel = set_measure_from_counts(counts, "jaccard", empty)
    return per_channel, nanmean(per_channel)


def pixel_set_jaccard(
    y_pred: ArrayLike | Sequence[ArrayLike], y: ArrayLike | Sequence[ArrayLike], empty: EmptyRule = "nan"
) -> tuple[np.ndarray, float]:
    """:func:`pixel_set_jaccard_from_counts` of masks (sizes may differ per image).

    Returns:
        ``(per_channel, mean)``.
    """
    return pixel_set_jaccard_from_counts(counts_per_image(y_pred, y), empty)


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
