"""A confidence score for every prediction, the flag threshold chosen on validation, and ``confidence.json``.

The score (docs/metrics.md, "Confidence"): for each channel, the soft Jaccard of the probability map ``p`` (the TTA
mean, at the photo's size) against the final mask ``m``::

    confidence = sum(p * m) / sum(p + m - p * m)

the Jaccard the mask would have if ``p`` were the probability of each pixel being lesion. A photo's confidence is the
minimum over its channels. It was chosen over two other candidates on the 150 ISIC 2017 validation photos
(``scripts/confidence_candidates.py``; docs/results.md). An empty mask gets ``empty_score`` (Task 1: 0, since a
dermoscopy photo always shows a lesion), or, with ``empty_score=None`` (Task 2 attributes, often absent), the soft
Jaccard of the background, ``1 - mean(p)``.

``confidence.json`` (beside ``thresholds.json``, e.g. ``models/confidence.json``)::

    {"score": "soft_jaccard", "flag_below": 0.83, "failure_below": 0.65, "auroc": 0.88, "n_images": 150,
     "n_failures": 27, "flagged": 30, ...}

A photo is *flagged* when its confidence is below ``flag_below``: the cut that best tells failures (Jaccard below
``failure_below`` on validation) from the rest (Youden's J, the largest sensitivity + specificity - 1). It is written
by the evaluation (``evaluate.yaml``: ``output_dir/confidence.json``) and shipped by ``export-bundle``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.metrics import CumulativeIterationMetric, compute_roc_auc
from monai.transforms import MapTransform

from isic_monai.data.atomic import write_text_atomic
from isic_monai.metrics.functional import ISIC2018_JACCARD_CUTOFF

__all__ = [
    "CONFIDENCE_FILE",
    "SCORE_NAME",
    "ConfidenceMetric",
    "Confidenced",
    "choose_flag_threshold",
    "image_confidence",
    "load_flag_threshold",
    "mask_confidence",
    "save_confidence",
]

CONFIDENCE_FILE = "confidence.json"
SCORE_NAME = "soft_jaccard"


def mask_confidence(prob: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray,
                    empty_score: float | None = 0.0) -> torch.Tensor:
    """The confidence of each channel of one prediction.

    Args:
        prob: ``C×H×W`` probabilities in [0, 1].
        mask: ``C×H×W`` final mask (nonzero is foreground), the same shape.
        empty_score: the confidence of a channel with an empty mask; ``None``: ``1 - mean(p)``.

    Returns:
        ``(C,)`` float32 values in [0, 1].

    Raises:
        ValueError: shapes that differ.
    """
    p = torch.as_tensor(prob).detach().float().cpu()
    m = (torch.as_tensor(mask).detach().cpu() > 0).float()
    if p.shape != m.shape:
        raise ValueError(f"confidence: probabilities {tuple(p.shape)} and mask {tuple(m.shape)} differ in shape")
    p, m = p.reshape(p.shape[0], -1).clamp(0, 1), m.reshape(m.shape[0], -1)
    inter = (p * m).sum(1)
    union = (p + m - p * m).sum(1)
    soft = torch.where(union > 0, inter / union.clamp_min(1e-12), torch.ones_like(union))
    empty = m.sum(1) == 0
    fallback = 1.0 - p.mean(1) if empty_score is None else torch.full_like(soft, float(empty_score))
    return torch.where(empty, fallback, soft)


def image_confidence(per_channel: Sequence[float] | torch.Tensor) -> float:
    """A photo's confidence: the least confident of its channels."""
    return float(torch.as_tensor(per_channel, dtype=torch.float64).min())


class ConfidenceMetric(CumulativeIterationMetric):
    """Buffers the per-channel confidence of each image; ``aggregate()`` returns ``(mean, per_channel)``.

    Called as ``metric(prob, mask)``: the evaluator's probabilities and final masks take the place of
    ``(y_pred, y)`` (``from_engine(["prob", "pred"])``), so ``MetricsSaver`` writes ``confidence_raw.csv`` and the
    per-image table gets a confidence column like every metric.

    Args:
        empty_score: see :func:`mask_confidence`.
    """

    def __init__(self, empty_score: float | None = 0.0) -> None:
        super().__init__()
        self.empty_score = empty_score

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        if y is None:
            raise ValueError("ConfidenceMetric needs the final masks as `y`.")
        return torch.stack([mask_confidence(p, m, self.empty_score) for p, m in zip(y_pred, y, strict=True)])

    def get_details(self) -> torch.Tensor:
        """Per-image values ``(N, C)``."""
        buf = self.get_buffer()
        if buf is None:
            raise RuntimeError("ConfidenceMetric: no data accumulated, call it on a batch first.")
        return buf.float()

    def aggregate(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """Return ``(mean, per_channel)``: the mean over channels of the per-channel means over images."""
        per_channel = self.get_details().double().mean(0)
        return per_channel.mean(), per_channel


class Confidenced(MapTransform):
    """Score each prediction: its confidence, whether it is flagged, and each channel's foreground fraction.

    Runs after the masks are final (thresholds and clean-up) in inference post-processing. Writes
    ``d["confidence"]`` (the ``(C,)`` per-channel values) and ``d[result_key]``, a JSON-ready dict that MONAI Label
    returns with the label (its writer sends ``data["result"]`` back as the response's parameters) and that folder
    inference writes to ``predictions.csv``::

        {"confidence": 0.91, "flagged": false, "lesion_fraction": 0.23}
        # Task 2: "<channel>_fraction" and "<channel>_confidence" for each channel, "confidence" their minimum

    Args:
        keys: the final masks (``pred``).
        prob_key: the probabilities kept before binarising (``prob``).
        channel_names: the channels' names.
        empty_score: see :func:`mask_confidence`.
        flag_below: flag a prediction whose confidence is below it (``None``: ``flagged`` is ``None``, unknown).
        result_key: where the dict goes.
    """

    def __init__(self, keys: KeysCollection, prob_key: str = "prob", channel_names: Sequence[str] = ("lesion",),
                 empty_score: float | None = 0.0, flag_below: float | None = None, result_key: str = "result",
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.prob_key = prob_key
        self.channel_names = [str(n) for n in channel_names]
        self.empty_score = empty_score
        self.flag_below = flag_below
        self.result_key = result_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            mask = torch.as_tensor(d[key])
            per_channel = mask_confidence(d[self.prob_key], mask, self.empty_score)
            d["confidence"] = per_channel
            d[self.result_key] = self.describe(per_channel, (mask > 0).flatten(1).float().mean(1))
        return d

    def describe(self, per_channel: torch.Tensor, fractions: torch.Tensor) -> dict[str, Any]:
        """The result dict of one prediction from its per-channel confidences and foreground fractions."""
        if len(per_channel) != len(self.channel_names):
            raise ValueError(f"confidence: {len(per_channel)} channels for channel names {self.channel_names}")
        confidence = image_confidence(per_channel)
        names = self.channel_names
        out: dict[str, Any] = {f"{n}_fraction": round(float(f), 6) for n, f in zip(names, fractions, strict=True)}
        out["confidence"] = round(confidence, 6)
        out["flagged"] = None if self.flag_below is None else bool(confidence < self.flag_below)
        if len(self.channel_names) > 1:
            out.update({f"{n}_confidence": round(float(c), 6) for n, c in zip(names, per_channel, strict=True)})
        return out


def choose_flag_threshold(confidence: Sequence[float], jaccard: Sequence[float],
                          failure_below: float = ISIC2018_JACCARD_CUTOFF, keep: float = 0.9) -> dict[str, Any]:
    """Choose the confidence below which a prediction is flagged, on validation images, and measure the score.

    Args:
        confidence: each image's confidence.
        jaccard: each image's Jaccard against its truth (the same order).
        failure_below: a failure is an image with a Jaccard below it (0.65: the ISIC 2018 Task 1 cut).
        keep: the share of most confident images whose mean Jaccard is reported (``mean_jaccard_most_confident``).

    Returns:
        The ``confidence.json`` record: ``flag_below`` (``None`` when validation had no failure or only failures),
        ``auroc`` (the score telling failures from the rest; ``None`` likewise), the counts, and the mean Jaccard of
        all images, of the unflagged ones and of the ``keep`` most confident.

    Raises:
        ValueError: lengths that differ, or no images.
    """
    c = np.asarray(confidence, dtype=np.float64)
    j = np.asarray(jaccard, dtype=np.float64)
    if c.shape != j.shape or c.ndim != 1 or not len(c):
        raise ValueError(f"choose_flag_threshold: {c.shape} confidences against {j.shape} Jaccard values")
    fail = j < failure_below
    n_fail = int(fail.sum())
    order = np.argsort(-c, kind="stable")
    top = order[: max(1, math.floor(keep * len(c) + 1e-9))]
    record: dict[str, Any] = {"score": SCORE_NAME, "failure_below": failure_below, "n_images": int(len(c)),
                              "n_failures": n_fail, "mean_jaccard": float(j.mean()),
                              "keep": keep, "mean_jaccard_most_confident": float(j[top].mean())}
    if n_fail in (0, len(c)):
        return {**record, "flag_below": None, "auroc": None, "flagged": 0, "mean_jaccard_unflagged": float(j.mean())}
    auroc = float(compute_roc_auc(torch.as_tensor(-c), torch.as_tensor(fail.astype(np.int64))))
    values = np.unique(c)
    cuts = np.concatenate([(values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
    youden = [float((fail & (c < t)).sum()) / n_fail - float((~fail & (c < t)).sum()) / (len(c) - n_fail)
              for t in cuts]
    flag_below = float(cuts[int(np.argmax(youden))])
    flagged = c < flag_below
    return {**record, "flag_below": round(flag_below, 6), "auroc": auroc, "flagged": int(flagged.sum()),
            "flagged_failures": int((flagged & fail).sum()),
            "mean_jaccard_unflagged": float(j[~flagged].mean()) if (~flagged).any() else float("nan")}


def save_confidence(path: str | Path, record: dict[str, Any]) -> Path:
    """Write a :func:`choose_flag_threshold` record as JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    return path


def load_flag_threshold(path: str | Path | None) -> float | None:
    """The ``flag_below`` of a ``confidence.json``, or ``None`` when the file is absent or holds none.

    Raises:
        ValueError: a file that is not a ``confidence.json`` (named in the message).
    """
    if path is None or not Path(path).is_file():
        return None
    try:
        value = json.loads(Path(path).read_text()).get("flag_below")
    except (json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"{path}: not a confidence.json ({err})") from err
    if value is not None and not isinstance(value, int | float):
        raise ValueError(f"{path}: flag_below must be a number, got {value!r}")
    return None if value is None else float(value)
