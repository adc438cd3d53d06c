"""Ignite metric handlers for ISIC metrics, attachable from a MONAI bundle config.

Every handler subclasses :class:`monai.handlers.IgniteMetricHandler` (like MONAI's ``MeanDice``), so it goes into an
evaluator's ``key_val_metric`` / ``additional_metrics`` (or a trainer's ``key_train_metric``). On
``EPOCH_COMPLETED`` each handler attached under ``name``

- puts its scalar value in ``engine.state.metrics[name]`` (usable as the key metric for checkpoint selection),
- puts one float per channel in ``engine.state.metrics[f"{name}_{channel_name}"]`` so that ``StatsHandler`` and
  ``TensorBoardStatsHandler`` log every channel on its own,
- with ``save_details=True``, puts the per-image values (an ``N×C`` tensor, gathered across ranks) in
  ``engine.state.metric_details[name]`` for ``monai.handlers.MetricsSaver(metric_details="*")``.

Inputs (via ``output_transform``, e.g. ``from_engine(["pred", "label"])``) are binarised predictions and labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.handlers import IgniteMetricHandler

from isic_monai.metrics.cumulative import (
    ConfusionCountsMetric,
    PerImageMetric,
    SetJaccardMetric,
    ThresholdedJaccardMetric,
)
from isic_monai.metrics.functional import COUNT_FIELDS, EmptyRule, set_measure_from_counts

__all__ = [
    "ChannelMetricHandler",
    "ConfusionMatrix",
    "PerChannelDice",
    "PerChannelJaccard",
    "PerImageMetricHandler",
    "SetJaccard",
    "ThresholdedJaccard",
    "channel_labels",
]


def _identity(x: Any) -> Any:
    return x


def channel_labels(channel_names: Sequence[str] | None, n_channels: int, channel: int | None = None) -> list[str]:
    """Names used for the per-channel ``engine.state.metrics`` entries.

    Args:
        channel_names: names of all channels of the network output (e.g. ``isic_monai.ATTRIBUTES`` or
            ``["lesion"]``); ``None`` uses the channel indices ``"0"``, ``"1"``, ...
        n_channels: number of channels the metric returned.
        channel: the channel a single-channel metric selected, to pick its name from the full list.

    Returns:
        ``n_channels`` strings.
    """
    if channel_names is None:
        return [str(channel)] if channel is not None and n_channels == 1 else [str(i) for i in range(n_channels)]
    names = [str(n) for n in channel_names]
    if channel is not None and n_channels == 1 and len(names) > 1:
        names = [names[channel]]
    if len(names) != n_channels:
        raise ValueError(f"got {len(names)} channel names {names} for a metric with {n_channels} channels.")
    return names


class ChannelMetricHandler(IgniteMetricHandler):
    """Base handler: scalar value (mean over channels) plus one ``engine.state.metrics`` entry per channel.

    ``metric_fn.aggregate()`` must return ``(mean, per_channel)``; ``metric_fn.get_details()`` the ``N×C`` per-image
    values.

    Args:
        metric_fn: a :class:`~isic_monai.metrics.cumulative.ConfusionCountsMetric` subclass instance.
        channel_names: channel names for the per-channel entries (``None``: channel indices).
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``.
        save_details: store per-image values in ``engine.state.metric_details[name]``.
        per_channel: write the per-channel entries into ``engine.state.metrics``.
        metric_prefix: prefix of the per-channel entries (default: the name the handler is attached under).
    """

    def __init__(
        self,
        metric_fn: ConfusionCountsMetric,
        channel_names: Sequence[str] | None = None,
        output_transform: Callable = _identity,
        save_details: bool = True,
        per_channel: bool = True,
        metric_prefix: str | None = None,
    ) -> None:
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)
        self.channel_names = None if channel_names is None else [str(n) for n in channel_names]
        self.per_channel = per_channel
        self.metric_prefix = metric_prefix

    def _require_engine(self) -> Any:
        if self._engine is None or self._name is None:
            raise RuntimeError("please call the attach() function to connect expected engine first.")
        return self._engine

    def _write_channels(self, values: Sequence[float], suffix: str = "") -> None:
        engine = self._require_engine()
        prefix = self.metric_prefix or self._name
        names = channel_labels(self.channel_names, len(values), getattr(self.metric_fn, "channel", None))
        for n, v in zip(names, values, strict=True):
            engine.state.metrics[f"{prefix}_{n}{suffix}"] = float(v)

    def compute(self) -> float:
        """Aggregate (gathering across ranks), write per-channel entries and details, return the mean."""
        mean, per_channel = self.metric_fn.aggregate()  # type: ignore[misc]
        self._is_reduced = True
        engine = self._require_engine()
        if self.per_channel:
            self._write_channels(torch.as_tensor(per_channel).flatten().tolist())
        if self.save_details:
            engine.state.metric_details[self._name] = self.metric_fn.get_details()  # type: ignore[attr-defined]
        return float(mean)


class SetJaccard(ChannelMetricHandler):
    """ISIC 2018 Task 2 set-level Jaccard (mean over channels); the Task 2 key metric.

    Writes ``{name}_{channel}`` for every channel (e.g. ``val_set_jaccard_pigment_network``) and, with
    ``save_details``, the per-image Jaccard in ``engine.state.metric_details[name]``.

    Args:
        channel_names: e.g. ``isic_monai.ATTRIBUTES``.
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``.
        save_details: store per-image Jaccard values.
        empty: value of a channel empty in truth and prediction over the whole set (``"nan"``: excluded from
            the mean).
        details_empty: empty/empty rule for the per-image details (default 1).
        channel: evaluate only this channel.
        metric_prefix: prefix of the per-channel entries (default: the attach name).
    """

    def __init__(
        self,
        channel_names: Sequence[str] | None = None,
        output_transform: Callable = _identity,
        save_details: bool = True,
        empty: EmptyRule = "nan",
        details_empty: EmptyRule = "one",
        channel: int | None = None,
        metric_prefix: str | None = None,
    ) -> None:
        super().__init__(
            SetJaccardMetric(empty=empty, details_empty=details_empty, channel=channel),
            channel_names=channel_names,
            output_transform=output_transform,
            save_details=save_details,
            metric_prefix=metric_prefix,
        )


class ThresholdedJaccard(ChannelMetricHandler):
    """ISIC 2018 Task 1 thresholded Jaccard: mean over images of ``JI if JI >= 0.65 else 0``.

    Args:
        threshold: the cut-off.
        channel_names: e.g. ``["lesion"]``.
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``.
        save_details: store per-image thresholded Jaccard values.
        empty: Jaccard of an empty/empty image (default 1).
        channel: evaluate only this channel.
        metric_prefix: prefix of the per-channel entries (default: the attach name).
    """

    def __init__(
        self,
        threshold: float = 0.65,
        channel_names: Sequence[str] | None = None,
        output_transform: Callable = _identity,
        save_details: bool = True,
        empty: EmptyRule = "one",
        channel: int | None = None,
        metric_prefix: str | None = None,
    ) -> None:
        super().__init__(
            ThresholdedJaccardMetric(threshold=threshold, channel=channel, empty=empty),
            channel_names=channel_names,
            output_transform=output_transform,
            save_details=save_details,
            metric_prefix=metric_prefix,
        )


class PerImageMetricHandler(ChannelMetricHandler):
    """Any per-image measure, averaged over images per channel; the value is the mean of the channels.

    Args:
        measure: ``"dice"``, ``"jaccard"``, ``"accuracy"``, ``"sensitivity"``, ``"specificity"``, ``"precision"``.
        channel_names: channel names for the per-channel entries.
        channel: evaluate only this channel.
        empty: value of a ``0/0`` ratio for an image (default 1, ``"nan"`` excludes the image).
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``.
        save_details: store per-image values.
        metric_prefix: prefix of the per-channel entries (default: the attach name).
    """

    def __init__(
        self,
        measure: str = "dice",
        channel_names: Sequence[str] | None = None,
        channel: int | None = None,
        empty: EmptyRule = "one",
        output_transform: Callable = _identity,
        save_details: bool = True,
        metric_prefix: str | None = None,
    ) -> None:
        super().__init__(
            PerImageMetric(measure=measure, channel=channel, empty=empty),
            channel_names=channel_names,
            output_transform=output_transform,
            save_details=save_details,
            metric_prefix=metric_prefix,
        )


class PerChannelDice(PerImageMetricHandler):
    """Per-image Dice averaged per channel (``{name}_{channel}`` entries); the value is the mean of channels.

    Args:
        channel_names: channel names for the per-channel entries.
        channel: evaluate only this channel.
        empty: Dice of an empty/empty pair (default 1).
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``.
        save_details: store per-image values.
        metric_prefix: prefix of the per-channel entries (default: the attach name).
    """

    def __init__(
        self,
        channel_names: Sequence[str] | None = None,
        channel: int | None = None,
        empty: EmptyRule = "one",
        output_transform: Callable = _identity,
        save_details: bool = True,
        metric_prefix: str | None = None,
    ) -> None:
        super().__init__("dice", channel_names, channel, empty, output_transform, save_details, metric_prefix)


class PerChannelJaccard(PerImageMetricHandler):
    """Per-image Jaccard averaged per channel (ISIC 2016/2017 Task 1 score for ``["lesion"]``).

    Args:
        channel_names: channel names for the per-channel entries.
        channel: evaluate only this channel.
        empty: Jaccard of an empty/empty pair (default 1).
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``.
        save_details: store per-image values.
        metric_prefix: prefix of the per-channel entries (default: the attach name).
    """

    def __init__(
        self,
        channel_names: Sequence[str] | None = None,
        channel: int | None = None,
        empty: EmptyRule = "one",
        output_transform: Callable = _identity,
        save_details: bool = True,
        metric_prefix: str | None = None,
    ) -> None:
        super().__init__("jaccard", channel_names, channel, empty, output_transform, save_details, metric_prefix)


class ConfusionMatrix(ChannelMetricHandler):
    """Pixel-level confusion matrix per channel, summed over the whole set.

    For every channel it writes ``{name}_{channel}_tp``, ``_fp``, ``_fn``, ``_tn`` (pixel counts) and the set-level
    ``{name}_{channel}_{measure}`` for each of ``measures``. The handler's value is the mean over channels of the
    set-level ``value_measure``. With ``save_details`` the per-image counts go to
    ``engine.state.metric_details[f"{name}_tp"]`` (and ``_fp``, ``_fn``, ``_tn``), each ``N×C``.
    (MONAI's ``ConfusionMatrix`` handler reduces one measure over channels and cannot report channels separately.)

    Args:
        channel_names: channel names for the per-channel entries.
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``.
        save_details: store per-image counts.
        measures: set-level measures written per channel.
        value_measure: the measure whose channel mean is the handler's value.
        empty: value of a ``0/0`` set-level ratio (default NaN).
        channel: evaluate only this channel.
        metric_prefix: prefix of the per-channel entries (default: the attach name).
    """

    def __init__(
        self,
        channel_names: Sequence[str] | None = None,
        output_transform: Callable = _identity,
        save_details: bool = True,
        measures: Sequence[str] = ("sensitivity", "specificity", "precision", "accuracy"),
        value_measure: str = "accuracy",
        empty: EmptyRule = "nan",
        channel: int | None = None,
        metric_prefix: str | None = None,
    ) -> None:
        super().__init__(
            ConfusionCountsMetric(channel=channel),
            channel_names=channel_names,
            output_transform=output_transform,
            save_details=save_details,
            metric_prefix=metric_prefix,
        )
        self.measures = tuple(measures)
        self.value_measure = value_measure
        self.empty = empty

    def compute(self) -> float:
        """Write counts and set-level measures per channel; return the channel mean of ``value_measure``."""
        counts = self.metric_fn.get_counts()  # type: ignore[attr-defined]
        self._is_reduced = True
        engine = self._require_engine()
        summed = counts.sum(0)
        prefix = self.metric_prefix or self._name
        names = channel_labels(self.channel_names, summed.shape[0], self.metric_fn.channel)  # type: ignore[attr-defined]
        for c, n in enumerate(names):
            for i, field in enumerate(COUNT_FIELDS):
                engine.state.metrics[f"{prefix}_{n}_{field}"] = int(summed[c, i])
        for m in self.measures:
            self._write_channels(set_measure_from_counts(counts, m, self.empty).tolist(), suffix=f"_{m}")
        if self.save_details:
            for i, field in enumerate(COUNT_FIELDS):
                engine.state.metric_details[f"{self._name}_{field}"] = counts[..., i].float()
        values = set_measure_from_counts(counts, self.value_measure, self.empty)
        finite = values[~np.isnan(values)]
        return float(finite.mean()) if finite.size else float("nan")
