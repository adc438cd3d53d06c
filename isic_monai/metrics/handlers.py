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

:class:`ThresholdSelectionHandler` is a plain ``val_handlers`` entry instead: it takes probabilities and writes
``thresholds.json`` (see :mod:`isic_monai.metrics.thresholds`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.handlers import IgniteMetricHandler, from_engine
from monai.metrics import Cumulative
from monai.utils import IgniteInfo, min_version, optional_import

from isic_monai.metrics.confidence import ConfidenceMetric, choose_flag_threshold, save_confidence
from isic_monai.metrics.cumulative import (
    ConfusionCountsMetric,
    PerImageMetric,
    SetJaccardMetric,
    ThresholdedJaccardMetric,
)
from isic_monai.metrics.functional import (
    COUNT_FIELDS,
    ISIC2018_JACCARD_CUTOFF,
    EmptyRule,
    as_plain_tensor,
    measure_from_counts,
    nanmean,
    set_measure_from_counts,
)
from isic_monai.metrics.thresholds import (
    CRITERIA,
    DEFAULT_CANDIDATES,
    SET_CRITERIA,
    as_candidates,
    candidate_counts,
    pick_thresholds,
    save_thresholds,
    score_threshold_counts,
    threshold_counts,
)

idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")
Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "ChannelMetricHandler",
    "ConfusionMatrix",
    "PerChannelDice",
    "PerChannelJaccard",
    "PerImageMetricHandler",
    "PixelSetJaccard",
    "SetJaccard",
    "ThresholdSelectionHandler",
    "ThresholdedJaccard",
    "EVALUATION_METRICS",
    "ConfidenceHandler",
    "channel_labels",
    "evaluation_metrics",
]

logger = logging.getLogger(__name__)


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
    """ISIC 2018 Task 2 set-level score as the official scorer computes it; the Task 2 key metric.

    Each image's confusion counts are divided by its pixel count and summed over the images (images of every size
    weigh the same), an attribute absent from truth and prediction over the whole set scores 1, and the handler's
    value is the official ``overall`` (micro-averaged Jaccard; ``value="mean"``: the mean of the per-attribute
    Jaccards). Attached under ``name`` (``metric_prefix`` replaces ``name`` in the entries below) it writes

    - ``{name}_{channel}``: the Jaccard of each channel (e.g. ``val_set_jaccard_pigment_network``),
    - ``{name}_{channel}_dice``: the Dice of each channel,
    - ``{name}_overall`` and ``{name}_micro_dice``: the official micro-average (Jaccard, Dice),
    - ``{name}_mean`` and ``{name}_mean_dice``: the means of the per-channel values,

    and, with ``save_details``, the per-image Jaccard in ``engine.state.metric_details[name]``.

    Args:
        channel_names: e.g. ``isic_monai.ATTRIBUTES``.
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``.
        save_details: store per-image Jaccard values.
        empty: value of a channel empty in truth and prediction over the whole set (official ``"one"``; ``"nan"``
            excludes it from the means).
        details_empty: empty/empty rule for the per-image details (default 1).
        channel: evaluate only this channel.
        metric_prefix: prefix of the per-channel entries (default: the attach name).
        normalize: divide each image's counts by its pixel count first (official; ``False``: raw pixel sums).
        value: ``"overall"`` (official, default) or ``"mean"``: the handler's value (the key metric).
    """

    def __init__(
        self,
        channel_names: Sequence[str] | None = None,
        output_transform: Callable = _identity,
        save_details: bool = True,
        empty: EmptyRule = "one",
        details_empty: EmptyRule = "one",
        channel: int | None = None,
        metric_prefix: str | None = None,
        normalize: bool = True,
        value: str = "overall",
    ) -> None:
        super().__init__(
            SetJaccardMetric(empty=empty, details_empty=details_empty, channel=channel, normalize=normalize,
                             value=value),
            channel_names=channel_names,
            output_transform=output_transform,
            save_details=save_details,
            metric_prefix=metric_prefix,
        )

    def compute(self) -> float:
        """Write the per-channel Jaccard and Dice, the micro-average and the means; return the handler's value."""
        value = super().compute()
        scores = self.metric_fn.scores()  # type: ignore[attr-defined]
        engine = self._require_engine()
        prefix = self.metric_prefix or self._name
        if self.per_channel:
            self._write_channels(scores.dice.tolist(), suffix="_dice")
        extra = {"overall": scores.overall, "micro_dice": scores.micro_dice, "mean": scores.mean_jaccard,
                 "mean_dice": scores.mean_dice}
        for key, v in extra.items():
            engine.state.metrics[f"{prefix}_{key}"] = float(v)
        return value


class PixelSetJaccard(SetJaccard):
    """Raw-pixel set-level Jaccard (not the official score): pixel counts summed over the images, per channel.

    ``SetJaccard(normalize=False, empty="nan", value="mean")``: large images weigh more, an attribute empty over the
    whole set is NaN and left out, and the value is the mean of the per-channel values. It writes the same entries as
    :class:`SetJaccard`. Takes the arguments of :class:`SetJaccard` except those three.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        fixed = {"normalize", "value"} & set(kwargs)
        if fixed:
            raise TypeError(f"PixelSetJaccard fixes {sorted(fixed)}; use SetJaccard to choose them.")
        if len(args) < 4:  # `empty` is SetJaccard's fourth argument
            kwargs.setdefault("empty", "nan")
        super().__init__(*args, normalize=False, value="mean", **kwargs)


class ThresholdedJaccard(ChannelMetricHandler):
    """ISIC 2018 Task 1 thresholded Jaccard: mean over images of ``JI if JI >= threshold else 0``.

    Args:
        threshold: the cut-off (:data:`~isic_monai.metrics.functional.ISIC2018_JACCARD_CUTOFF`).
        channel_names: e.g. ``["lesion"]``.
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``.
        save_details: store per-image thresholded Jaccard values.
        empty: Jaccard of an empty/empty image (default 1).
        channel: evaluate only this channel.
        metric_prefix: prefix of the per-channel entries (default: the attach name).
    """

    def __init__(
        self,
        threshold: float = ISIC2018_JACCARD_CUTOFF,
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
    """``PerImageMetricHandler("dice", ...)``: per-image Dice averaged per channel, the value is the channel mean.

    Takes the arguments of :class:`PerImageMetricHandler` after ``measure``, positionally or by name.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("dice", *args, **kwargs)


class PerChannelJaccard(PerImageMetricHandler):
    """``PerImageMetricHandler("jaccard", ...)``: the ISIC 2016/2017 Task 1 score for ``["lesion"]``.

    Takes the arguments of :class:`PerImageMetricHandler` after ``measure``, positionally or by name.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("jaccard", *args, **kwargs)


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
        return nanmean(set_measure_from_counts(counts, self.value_measure, self.empty))


class ConfidenceHandler(ChannelMetricHandler):
    """Each image's confidence (:mod:`isic_monai.metrics.confidence`), averaged per channel; per-image values saved.

    Post-processing must keep the probabilities (``CopyItemsd(keys="pred", names="prob")`` before binarising).

    Args:
        channel_names: channel names for the per-channel entries.
        empty_score: the confidence of an empty mask (:func:`~isic_monai.metrics.confidence.mask_confidence`).
        output_transform: maps ``engine.state.output`` to ``(prob, mask)`` (default ``from_engine(["prob", "pred"])``).
        save_details: store per-image values.
    """

    def __init__(self, channel_names: Sequence[str] | None = None, empty_score: float | None = 0.0,
                 output_transform: Callable | None = None, save_details: bool = True) -> None:
        super().__init__(ConfidenceMetric(empty_score), channel_names=channel_names,  # type: ignore[arg-type]
                         output_transform=output_transform or from_engine(["prob", "pred"]),
                         save_details=save_details)


EVALUATION_METRICS: dict[str, tuple[type[ChannelMetricHandler], dict[str, Any]]] = {
    "dice": (PerChannelDice, {}),
    "jaccard": (PerChannelJaccard, {}),
    "thresholded_jaccard": (ThresholdedJaccard, {}),
    "set_jaccard": (SetJaccard, {}),
    "pixel_set_jaccard": (PixelSetJaccard, {}),
    "accuracy": (PerImageMetricHandler, {"measure": "accuracy"}),
    "sensitivity": (PerImageMetricHandler, {"measure": "sensitivity"}),
    "specificity": (PerImageMetricHandler, {"measure": "specificity"}),
    "precision": (PerImageMetricHandler, {"measure": "precision"}),
    "confusion": (ConfusionMatrix, {}),
}
"""The metrics an evaluation config may name (``validate#metrics``), each a handler class and its fixed arguments."""


def evaluation_metrics(names: Sequence[str], channel_names: Sequence[str],
                       output_transform: Callable) -> dict[str, ChannelMetricHandler]:
    """The evaluator's metric handlers by name, each with the channel names and the ``(pred, label)`` transform.

    ``evaluate.yaml`` names its metrics once (``validate#metrics``) instead of repeating the two shared arguments
    in one ``_target_`` block per metric; the first name is the key metric.

    Args:
        names: keys of :data:`EVALUATION_METRICS`, in order.
        channel_names: the channels (per-channel entries are named after them).
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``.

    Returns:
        ``{name: handler}`` in the order of ``names``.

    Raises:
        ValueError: naming an unknown metric and the known ones.
    """
    unknown = [n for n in names if n not in EVALUATION_METRICS]
    if unknown:
        raise ValueError(f"unknown evaluation metric(s) {unknown}; known: {sorted(EVALUATION_METRICS)}")
    out = {}
    for name in names:
        handler, fixed = EVALUATION_METRICS[name]
        out[name] = handler(**fixed, channel_names=list(channel_names), output_transform=output_transform)
    return out


class _CountBuffer(Cumulative):
    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        return self.get_buffer()


class ThresholdSelectionHandler:
    """Collect validation probabilities' threshold counts and write ``thresholds.json`` at ``EPOCH_COMPLETED``.

    Attach to the evaluator (``val_handlers``). Post-processing must keep the probabilities, e.g.
    ``Activationsd(keys="pred", sigmoid=True)``, ``CopyItemsd(keys="pred", names="prob")``.
    The bundle runs it on the outputs of its own predictor (``select`` in ``train.yaml``: the TTA/ensemble inferer,
    the probabilities mapped back to the truth's size) with the bundle's clean-up (``clean``), so the thresholds and
    the confidence flag are chosen on the masks inference writes (docs/metrics.md, "Thresholds").
    Memory: ``C×T×3`` integers in total for ``set_*`` criteria without clean-up or confidence (summed,
    ``all_reduce``-d across ranks), else ``C×T×4`` numbers per image (gathered with MONAI's
    ``evenly_divisible_all_gather`` when ``distributed``; a per-image criterion alone: MONAI's ``Cumulative``).
    Only rank 0 writes.

    Args:
        output_path: the JSON file, e.g. ``$@bundle_root + '/models/thresholds.json'``.
        channel_names: one name per output channel.
        output_transform: maps ``engine.state.output`` to ``(probs, labels)``; default
            ``from_engine(["prob", "label"])``.
        candidates: thresholds to try.
        criterion: one of :data:`CRITERIA` (default ``"set_jaccard"``).
        default: tie-breaker and fallback threshold.
        only_on_best: write only when this epoch is the evaluator's best key-metric epoch (so the file matches the
            checkpoint kept as ``model.pt``); always written when the engine has no key metric.
        sigmoid: apply a sigmoid to the inputs first (when the transform gives logits).
        clean: the bundle's mask clean-up (a :class:`~isic_monai.transforms.CleanMasksd`, or any callable mapping a
            ``C×H×W`` 0/1 mask to the cleaned one), applied to each candidate's mask before counting.
        confidence_path: also choose the confidence flag (:func:`~isic_monai.metrics.confidence.choose_flag_threshold`)
            on the masks at the chosen thresholds and write it there (``models/confidence.json``).
        empty_score: the confidence of an empty mask (the bundle's ``confidence_empty``).
        checkpoint_path: the ``model.pt`` whose predictions these are (its name is recorded).
        epoch: the epoch recorded in both files, or a function giving it when they are written (the bundle passes
            ``lambda: isic_monai.bundle.checkpoint.checkpoint_epoch(@load_path)``: the epoch ``model.pt`` records);
            default: the engine's epoch.
        distributed: gather the counts across ranks (each rank saw its shard); ``False`` when one process sees the
            whole set alone (the bundle's selection after training runs on rank 0 only: no collective may run).
    """

    def __init__(
        self,
        output_path: str | os.PathLike,
        channel_names: Sequence[str],
        output_transform: Callable | None = None,
        candidates: Sequence[float] | np.ndarray = DEFAULT_CANDIDATES,
        criterion: str = "set_jaccard",
        default: float = 0.5,
        only_on_best: bool = True,
        sigmoid: bool = False,
        clean: Callable | None = None,
        confidence_path: str | os.PathLike | None = None,
        empty_score: float | None = 0.0,
        checkpoint_path: str | os.PathLike | None = None,
        epoch: int | Callable[[], int | None] | None = None,
        distributed: bool = True,
    ) -> None:
        if criterion not in CRITERIA:
            raise ValueError(f"unknown criterion {criterion!r}; expected one of {CRITERIA}.")
        self.output_path = Path(output_path)
        self.channel_names = [str(n) for n in channel_names]
        self.output_transform = output_transform or from_engine(["prob", "label"])
        self.candidates = [float(c) for c in as_candidates(candidates)]
        self.criterion = criterion
        self.default = float(default)
        self.only_on_best = only_on_best
        self.sigmoid = sigmoid
        steps = getattr(clean, "steps", None)
        self.clean = None if clean is None or steps == [] else getattr(clean, "clean", clean)
        self.confidence_path = None if confidence_path is None else Path(confidence_path)
        self.empty_score = empty_score
        self.checkpoint_path = checkpoint_path
        self.epoch = epoch
        self.distributed = distributed
        self._images: list[torch.Tensor] = []
        self._confs: list[torch.Tensor] = []
        self.per_image = self.clean is not None or self.confidence_path is not None
        self.thresholds: list[float] | None = None
        self.scores: list[float] | None = None
        self.confidence: dict[str, Any] | None = None
        self.candidate_scores: list[list[float | None]] = []
        self._sum: torch.Tensor | None = None
        self._n = 0
        self.n_images = 0
        self._buffer = _CountBuffer()

    def attach(self, engine: Any) -> None:
        """Register on ``EPOCH_STARTED`` (reset), ``ITERATION_COMPLETED`` (count), ``EPOCH_COMPLETED`` (write)."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.complete)

    def reset(self, engine: Any = None) -> None:
        """Clear the accumulated counts."""
        self._sum = None
        self._n = 0
        self._buffer.reset()
        self._images, self._confs = [], []

    def _pairs(self, probs: Any, labels: Any) -> list[tuple[Any, Any]]:
        if isinstance(probs, (list, tuple)):
            return list(zip(probs, labels, strict=True))
        return [(probs, labels)]

    def update(self, engine: Any) -> None:
        """Add the counts of the current iteration's output."""
        probs, labels = self.output_transform(engine.state.output)
        for p, y in self._pairs(probs, labels):
            p = as_plain_tensor(p).float()
            if self.sigmoid:
                p = torch.sigmoid(p)
            if self.per_image:
                for one_p, one_y in zip(*((p, y) if p.ndim == 4 else ([p], [y])), strict=True):
                    c, conf = candidate_counts(one_p, one_y, self.candidates, self.clean, self.empty_score)
                    if self.criterion in SET_CRITERIA:  # the official scorer's pixel-count-normalised sums
                        c = c.to(torch.float64) / float(one_p[0].numel())
                    self._n += 1
                    self._images.append(c)
                    self._confs.append(conf)
                continue
            c = threshold_counts(p, y, self.candidates)
            if c.ndim == 3:
                c = c[None]
            self._n += c.shape[0]
            if self.criterion in SET_CRITERIA:
                s = c.sum(0)
                self._sum = s if self._sum is None else self._sum + s
            else:
                self._buffer.extend(c)

    def _world_size(self) -> int:
        return idist.get_world_size() if self.distributed else 1

    def _stacked(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """The per-image records of every rank, stacked ``(N, ...)`` (one rank's when not ``distributed``)."""
        local = torch.stack(parts) if parts else torch.zeros(0)
        if self._world_size() > 1:
            from monai.utils import evenly_divisible_all_gather

            return evenly_divisible_all_gather(local, concat=True)
        return local

    def _gathered_counts(self) -> tuple[torch.Tensor, int]:
        ws = self._world_size()
        n = int(idist.all_reduce(torch.tensor(self._n, dtype=torch.int64)).item()) if ws > 1 else self._n
        if self.per_image:
            return self._stacked(self._images), n
        if self.criterion in SET_CRITERIA:
            local = self._sum
            if local is None:
                local = torch.zeros(len(self.channel_names), len(self.candidates), 3, dtype=torch.int64)
            return (idist.all_reduce(local.clone()) if ws > 1 else local), n
        buf = self._buffer.get_buffer()
        return buf, n

    def compute(self) -> tuple[list[float], list[float]]:
        """Gather across ranks and pick the best threshold per channel.

        Returns:
            ``(thresholds, scores)``.
        """
        counts, self.n_images = self._gathered_counts()
        if self.n_images == 0:
            raise ValueError("threshold selection saw no validation image: the validation set is empty")
        scores = score_threshold_counts(counts, self.criterion)
        self.candidate_scores = [[None if np.isnan(v) else round(float(v), 6) for v in row] for row in scores]
        thresholds = pick_thresholds(scores, self.candidates, self.default)
        idx = [self.candidates.index(t) if t in self.candidates else None for t in thresholds]
        best = [float(scores[c, k]) if k is not None else float("nan") for c, k in enumerate(idx)]
        if self.confidence_path is not None:
            self.confidence = self._flag_record(counts, idx)
        return thresholds, best

    def _flag_record(self, counts: torch.Tensor, idx: list[int | None]) -> dict[str, Any]:
        """The confidence flag chosen on each image's confidence and Jaccard at the chosen thresholds."""
        conf = self._stacked(self._confs)
        k = torch.as_tensor([i if i is not None else 0 for i in idx])
        channels = torch.arange(len(idx))
        chosen = counts[:, channels, k]  # (N, C, 3)
        jaccard = nanmean(measure_from_counts(chosen, "jaccard", empty="one"), axis=1)
        image_conf = conf[:, channels, k].min(dim=1).values
        return choose_flag_threshold(image_conf.tolist(), jaccard.tolist())

    def _epoch(self, engine: Any) -> int | None:
        """The epoch of the predictions: ``epoch`` (called when it is a function), else the engine's."""
        if callable(self.epoch):
            epoch = self.epoch()
            return None if epoch is None else int(epoch)
        if self.epoch is not None:
            return int(self.epoch)
        return int(getattr(engine.state, "epoch", 0) or 0)

    def complete(self, engine: Any) -> None:
        """Compute the thresholds and, on rank 0 (and the best epoch when ``only_on_best``), write the JSON."""
        thresholds, scores = self.compute()
        self.thresholds, self.scores = thresholds, scores
        epoch = int(getattr(engine.state, "epoch", 0) or 0)
        best_epoch = getattr(engine.state, "best_metric_epoch", -1)
        if self.only_on_best and best_epoch not in (None, -1) and best_epoch != epoch:
            return
        if idist.get_rank() != 0:
            return
        extra = {"candidates": self.candidates, "candidate_scores": self.candidate_scores, "epoch": self._epoch(engine),
                 "n_images": self.n_images, "clean_up": self.clean is not None}
        if self.checkpoint_path is not None:
            extra["checkpoint"] = Path(self.checkpoint_path).name
        save_thresholds(self.output_path, thresholds, self.channel_names, extra=extra, criterion=self.criterion,
                        scores=scores)
        logger.info("thresholds %s (%s %s) written to %s", thresholds, self.criterion, scores, self.output_path)
        if self.confidence_path is not None and self.confidence is not None:
            record = {**self.confidence, "thresholds": thresholds, "epoch": extra["epoch"]}
            save_confidence(self.confidence_path, record)
            logger.info("confidence flag below %s (AUROC %s) written to %s", record.get("flag_below"),
                        record.get("auroc"), self.confidence_path)
