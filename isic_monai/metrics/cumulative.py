"""MONAI ``CumulativeIterationMetric`` subclasses for the ISIC metrics.

Every metric here buffers one small ``C×4`` tensor of pixel confusion counts ``(TP, FP, FN, TN)`` per image.
MONAI's :class:`~monai.metrics.Cumulative` gathers those buffers across ranks with
``evenly_divisible_all_gather`` (uneven shards included), so a set-level sum computed from the gathered buffer is
the same number as in a single process, and per-image values (``get_details()``) line up with the file names that
``MetricsSaver`` gathers rank by rank.

Inputs are binarised predictions and labels (``>= 0.5`` is foreground): a ``B×C×H×W`` tensor or a list of
``C×H×W`` tensors, as produced by ``SupervisedEvaluator`` post-processing with or without ``decollate``.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric

from isic_monai.metrics.functional import (
    ISIC2018_JACCARD_CUTOFF,
    EmptyRule,
    SetScores,
    canonical_measure,
    confusion_counts_torch,
    empty_value,
    measure_from_counts,
    set_scores_from_counts,
    thresholded_jaccard_from_counts,
)

__all__ = [
    "SET_VALUES",
    "ConfusionCountsMetric",
    "PerImageMetric",
    "SetJaccardMetric",
    "ThresholdedJaccardMetric",
]


class ConfusionCountsMetric(CumulativeIterationMetric):
    """Buffers per-image confusion counts; ``aggregate()`` returns the counts summed over the (gathered) set.

    Subclasses change ``aggregate()`` and ``get_details()``; the buffering and cross-rank gathering are shared.

    Args:
        channel: keep only this channel (``None``: all channels).
    """

    def __init__(self, channel: int | None = None) -> None:
        super().__init__()
        self.channel = channel

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        if y is None:
            raise ValueError(f"{type(self).__name__} needs a ground truth `y`.")
        counts = confusion_counts_torch(y_pred, y)
        if self.channel is not None:
            counts = counts[:, self.channel : self.channel + 1]
        return counts

    def get_counts(self) -> torch.Tensor:
        """Gathered per-image counts, ``(N, C, 4)`` int64 (``N`` images over all ranks).

        Raises:
            RuntimeError: when nothing has been accumulated.
        """
        buf = self.get_buffer()
        if buf is None:
            raise RuntimeError(f"{type(self).__name__}: no data accumulated, call it on a batch first.")
        return buf.to(torch.int64)

    def get_details(self) -> torch.Tensor:
        """Per-image details for ``MetricsSaver``; here the foreground pixel count of the truth (``TP + FN``)."""
        c = self.get_counts()
        return (c[..., 0] + c[..., 2]).float()

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        """Return the ``(C, 4)`` counts ``(TP, FP, FN, TN)`` summed over every image."""
        return self.get_counts().sum(0)


SET_VALUES: tuple[str, ...] = ("overall", "mean")
"""What :class:`SetJaccardMetric` returns as its value: the official micro-averaged ``overall``, or the mean of the
per-channel Jaccards."""


class SetJaccardMetric(ConfusionCountsMetric):
    """ISIC 2018 Task 2 set-level Jaccard, computed as the official scorer does by default.

    Each image's counts are divided by its pixel count and summed over the images; a channel with no foreground in
    truth nor prediction over the whole set scores 1; the value is the official ``overall`` (the Jaccard of the counts
    summed over the channels too). ``normalize=False, empty="nan", value="mean"`` is the raw-pixel variant.

    Args:
        empty: value of a channel empty in truth and prediction over the whole set (official: ``"one"``;
            ``"nan"`` excludes it from the mean).
        details_empty: empty rule of the per-image Jaccard returned by ``get_details()`` (default 1).
        channel: keep only this channel (``None``: all).
        normalize: divide each image's counts by its pixel count before summing (official).
        value: ``"overall"`` (official micro-average) or ``"mean"`` (mean of the per-channel Jaccards), the first
            element of ``aggregate()``.
    """

    def __init__(
        self,
        empty: EmptyRule = "one",
        details_empty: EmptyRule = "one",
        channel: int | None = None,
        normalize: bool = True,
        value: str = "overall",
    ) -> None:
        super().__init__(channel=channel)
        empty_value(empty)
        empty_value(details_empty)
        if value not in SET_VALUES:
            raise ValueError(f"value must be one of {SET_VALUES}, got {value!r}.")
        self.empty = empty
        self.details_empty = details_empty
        self.normalize = bool(normalize)
        self.value = value

    def scores(self) -> SetScores:
        """Every set-level score of the (gathered) images: per-channel and micro-averaged Jaccard and Dice."""
        return set_scores_from_counts(self.get_counts(), self.normalize, self.empty)

    def aggregate(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """Return ``(value, per_channel)``: ``overall`` or the channel mean, and the ``(C,)`` set-level Jaccard."""
        s = self.scores()
        value = s.overall if self.value == "overall" else s.mean_jaccard
        return torch.tensor(value, dtype=torch.float64), torch.as_tensor(s.jaccard)

    def get_details(self) -> torch.Tensor:
        """Per-image Jaccard ``(N, C)`` (``details_empty`` for empty/empty pairs)."""
        return torch.as_tensor(measure_from_counts(self.get_counts(), "jaccard", self.details_empty)).float()


class PerImageMetric(ConfusionCountsMetric):
    """A per-image measure averaged over images per channel, then over channels.

    Args:
        measure: ``"dice"``, ``"jaccard"``, ``"accuracy"``, ``"sensitivity"``, ``"specificity"``,
            ``"precision"`` (aliases ``"iou"``, ``"recall"``).
        channel: keep only this channel (``None``: all).
        empty: value of a ``0/0`` ratio for an image (default 1; ``"nan"`` excludes such images from the mean).
    """

    def __init__(self, measure: str = "dice", channel: int | None = None, empty: EmptyRule = "one") -> None:
        super().__init__(channel=channel)
        canonical_measure(measure)  # validates the name
        empty_value(empty)
        self.measure = measure
        self.empty = empty

    def get_details(self) -> torch.Tensor:
        """Per-image values ``(N, C)``."""
        return torch.as_tensor(measure_from_counts(self.get_counts(), self.measure, self.empty)).float()

    def aggregate(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """Return ``(mean, per_channel)``: mean over channels of the ``(C,)`` per-channel means over images."""
        per_channel = torch.nanmean(self.get_details().double(), dim=0)
        return torch.nanmean(per_channel), per_channel


class ThresholdedJaccardMetric(PerImageMetric):
    """ISIC 2018 Task 1 score: per-image Jaccard, set to 0 below ``threshold``, averaged over images.

    With several channels the per-channel means are averaged (Task 1 has one channel, ``lesion``).

    Args:
        threshold: per-image Jaccard values below it count as 0 (:data:`ISIC2018_JACCARD_CUTOFF`).
        channel: keep only this channel (``None``: all).
        empty: Jaccard of an empty/empty image before thresholding (default 1).
    """

    def __init__(
        self, threshold: float = ISIC2018_JACCARD_CUTOFF, channel: int | None = None, empty: EmptyRule = "one"
    ) -> None:
        super().__init__(measure="jaccard", channel=channel, empty=empty)
        self.threshold = float(threshold)

    def get_details(self) -> torch.Tensor:
        """Per-image thresholded Jaccard ``(N, C)``."""
        return torch.as_tensor(thresholded_jaccard_from_counts(self.get_counts(), self.threshold, self.empty)).float()
