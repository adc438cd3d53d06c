"""ISIC segmentation metrics: pure functions, MONAI cumulative metrics, Ignite handlers and thresholds.

See ``docs/metrics.md`` for the definitions and the empty rules. ``ApplyThresholds`` / ``ApplyThresholdsd`` live in
:mod:`isic_monai.transforms` and are re-exported here for configs written as ``isic_monai.metrics.ApplyThresholdsd``
(this package imports ``isic_monai.transforms``, never the other way round at module level).
"""

from __future__ import annotations

from isic_monai.metrics.cumulative import (
    ConfusionCountsMetric,
    PerImageMetric,
    SetJaccardMetric,
    ThresholdedJaccardMetric,
)
from isic_monai.metrics.functional import (
    COUNT_FIELDS,
    ISIC2018_JACCARD_CUTOFF,
    MEASURES,
    accuracy,
    confusion_counts,
    confusion_counts_torch,
    confusion_matrix,
    dice,
    from_monai_confusion,
    jaccard,
    mean_thresholded_jaccard,
    measure_from_counts,
    per_image_measure,
    precision,
    sensitivity,
    set_jaccard,
    set_jaccard_from_counts,
    set_measure_from_counts,
    specificity,
    thresholded_jaccard,
)
from isic_monai.metrics.handlers import (
    ChannelMetricHandler,
    ConfusionMatrix,
    PerChannelDice,
    PerChannelJaccard,
    PerImageMetricHandler,
    SetJaccard,
    ThresholdedJaccard,
    ThresholdSelectionHandler,
)
from isic_monai.metrics.thresholds import (
    CRITERIA,
    DEFAULT_CANDIDATES,
    evaluate_thresholds,
    load_thresholds,
    save_thresholds,
    select_thresholds,
    threshold_counts,
)
from isic_monai.transforms import ApplyThresholds, ApplyThresholdsd

__all__ = [
    "COUNT_FIELDS",
    "CRITERIA",
    "DEFAULT_CANDIDATES",
    "ISIC2018_JACCARD_CUTOFF",
    "MEASURES",
    "ApplyThresholds",
    "ApplyThresholdsd",
    "ChannelMetricHandler",
    "ConfusionCountsMetric",
    "ConfusionMatrix",
    "PerChannelDice",
    "PerChannelJaccard",
    "PerImageMetric",
    "PerImageMetricHandler",
    "SetJaccard",
    "SetJaccardMetric",
    "ThresholdSelectionHandler",
    "ThresholdedJaccard",
    "ThresholdedJaccardMetric",
    "accuracy",
    "confusion_counts",
    "confusion_counts_torch",
    "confusion_matrix",
    "dice",
    "evaluate_thresholds",
    "from_monai_confusion",
    "jaccard",
    "load_thresholds",
    "mean_thresholded_jaccard",
    "measure_from_counts",
    "per_image_measure",
    "precision",
    "save_thresholds",
    "select_thresholds",
    "sensitivity",
    "set_jaccard",
    "set_jaccard_from_counts",
    "set_measure_from_counts",
    "specificity",
    "threshold_counts",
    "thresholded_jaccard",
]
