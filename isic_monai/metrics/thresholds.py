"""Per-channel probability thresholds chosen on the validation set, and ``thresholds.json``.

The counts behind every criterion are exact: for candidate thresholds ``t_0 < ... < t_{T-1}`` and a prediction rule
``prob >= t_k``, each pixel is put in the bucket ``#{k: t_k <= prob}`` (``torch.bucketize``) and reverse cumulative
sums of the per-bucket histograms of positive and negative pixels give TP, FP and FN at every candidate at once.
A per-image record is ``C×T×3`` integers, whatever the image size; the scores come from those counts through
:func:`~isic_monai.metrics.functional.measure_from_counts`, like every other metric.

``thresholds.json`` (written beside ``model.pt``, e.g. ``models/thresholds.json``)::

    {"channel_names": ["pigment_network", ...], "thresholds": [0.45, ...], "criterion": "set_jaccard",
     "scores": [0.51, ...], "candidates": [0.1, ...], "epoch": 12, "n_images": 100}

The thresholds are applied by :class:`isic_monai.transforms.ApplyThresholdsd` and chosen during validation by
:class:`isic_monai.metrics.handlers.ThresholdSelectionHandler`. Import direction: ``isic_monai.metrics`` imports
``isic_monai.transforms`` (to re-export ``ApplyThresholdsd``) and this module imports neither, while the transform
imports :func:`resolve_thresholds` inside its constructor, so no module import runs the other half-initialised.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isic_monai.data.atomic import write_text_atomic
from isic_monai.metrics.confidence import mask_confidence
from isic_monai.metrics.functional import (
    as_binary_tensor,
    as_plain_tensor,
    measure_from_counts,
    nanmean,
    thresholded_jaccard_from_counts,
)

__all__ = [
    "CRITERIA",
    "DEFAULT_CANDIDATES",
    "SET_CRITERIA",
    "as_candidates",
    "candidate_counts",
    "evaluate_thresholds",
    "load_thresholds",
    "pick_thresholds",
    "resolve_thresholds",
    "save_thresholds",
    "score_threshold_counts",
    "select_thresholds",
    "threshold_counts",
    "write_applied",
]

APPLIED_FILE = "thresholds_applied.json"
"""What folder inference records of the thresholds it applied (``OUT_report/thresholds_applied.json``)."""

DEFAULT_CANDIDATES: tuple[float, ...] = tuple(float(round(t, 6)) for t in np.linspace(0.1, 0.9, 17))
"""0.10, 0.15, ..., 0.90."""

CRITERIA: tuple[str, ...] = ("set_jaccard", "set_dice", "mean_jaccard", "mean_dice", "thresholded_jaccard")
"""``set_*``: counts summed over the set first (ISIC 2018 Task 2); ``mean_*``: per-image mean (empty/empty = 1);
``thresholded_jaccard``: ISIC 2018 Task 1 (per-image Jaccard, 0 below ``ISIC2018_JACCARD_CUTOFF``, averaged)."""

SET_CRITERIA: tuple[str, ...] = ("set_jaccard", "set_dice")
"""The criteria scored from counts summed over the set (a running sum suffices)."""


def as_candidates(candidates: Sequence[float] | np.ndarray) -> torch.Tensor:
    """Check candidate thresholds and return them as a ``float64`` tensor.

    Raises:
        ValueError: unless they form a non-empty strictly increasing 1-D sequence.
    """
    c = torch.as_tensor(np.asarray(candidates, dtype=np.float64))
    if c.ndim != 1 or c.numel() == 0 or bool((c[1:] <= c[:-1]).any()):
        raise ValueError(f"candidates must be a non-empty strictly increasing 1-D sequence, got {candidates}.")
    return c


def threshold_counts(
    prob: Any, label: Any, candidates: Sequence[float] | np.ndarray = DEFAULT_CANDIDATES
) -> torch.Tensor:
    """TP, FP, FN at every candidate threshold (prediction ``prob >= t``), per image and channel.

    Args:
        prob: probabilities, ``C×H×W`` or ``B×C×H×W`` (tensor or array).
        label: binary truth of the same shape (``>= 0.5`` is foreground).
        candidates: strictly increasing thresholds.

    Returns:
        ``int64`` tensor ``(C, T, 3)`` or ``(B, C, T, 3)`` with ``(TP, FP, FN)`` in the last axis.
    """
    p = as_plain_tensor(prob)
    t = as_binary_tensor(label)
    if p.shape != t.shape:
        raise ValueError(f"prob and label must have the same shape, got {tuple(p.shape)} and {tuple(t.shape)}.")
    single = p.ndim == 3
    if single:
        p, t = p[None], t[None]
    cand = as_candidates(candidates).to(p.device)
    B, C = p.shape[:2]
    T = cand.numel()
    p = p.flatten(2).to(torch.float64)
    pos = t.flatten(2).to(p.device)
    bucket = torch.bucketize(p, cand, right=True)  # number of candidates <= p, in [0, T]
    base = (torch.arange(B * C, device=p.device).view(B, C, 1)) * (T + 1)
    flat = (base + bucket).flatten()
    size = B * C * (T + 1)
    hist_pos = torch.bincount(flat[pos.flatten()], minlength=size).view(B, C, T + 1)
    hist_neg = torch.bincount(flat[~pos.flatten()], minlength=size).view(B, C, T + 1)
    # pixels predicted positive at t_k are those with bucket >= k + 1
    ge_pos = hist_pos.flip(-1).cumsum(-1).flip(-1)[..., 1:]
    ge_neg = hist_neg.flip(-1).cumsum(-1).flip(-1)[..., 1:]
    tp = ge_pos
    fp = ge_neg
    fn = hist_pos.sum(-1, keepdim=True) - tp
    out = torch.stack([tp, fp, fn], dim=-1).to(torch.int64).cpu()
    return out[0] if single else out


def candidate_counts(
    prob: Any,
    label: Any,
    candidates: Sequence[float] | np.ndarray = DEFAULT_CANDIDATES,
    clean: Callable[[torch.Tensor], torch.Tensor] | None = None,
    empty_score: float | None = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """TP, FP, FN and the confidence of the final mask at every candidate threshold, for one image.

    The masks are made as inference makes them: ``prob >= t``, then ``clean`` (the bundle's clean-up, e.g.
    :meth:`isic_monai.transforms.CleanMasksd.clean`: the largest region with its holes filled), so the counts are
    those of the mask a user would get at each candidate. Without ``clean`` the counts equal
    :func:`threshold_counts` (which is faster: one histogram for every candidate).

    Args:
        prob: ``C×H×W`` probabilities (the predictor's, at the truth's size).
        label: ``C×H×W`` binary truth (``>= 0.5`` is foreground).
        candidates: strictly increasing thresholds.
        clean: maps a ``C×H×W`` 0/1 float mask to the cleaned mask; ``None``: no clean-up.
        empty_score: the confidence of an empty mask channel (:func:`isic_monai.metrics.confidence.mask_confidence`).

    Returns:
        ``int64`` counts ``(C, T, 3)`` and ``float32`` confidences ``(C, T)``.
    """
    p = as_plain_tensor(prob).detach().float().cpu()
    t = as_binary_tensor(label).cpu()
    if p.shape != t.shape or p.ndim != 3:
        raise ValueError(f"prob and label must be C×H×W of the same shape, got {tuple(p.shape)} and {tuple(t.shape)}.")
    counts, conf = [], []
    truth = t.flatten(1)
    for threshold in as_candidates(candidates).tolist():
        mask = (p >= threshold).float()
        if clean is not None:
            mask = as_plain_tensor(clean(mask)).float().cpu()
        m = (mask > 0).flatten(1)
        tp = (m & truth).sum(1)
        counts.append(torch.stack([tp, (m & ~truth).sum(1), (~m & truth).sum(1)], dim=-1))
        conf.append(mask_confidence(p, mask, empty_score))
    return torch.stack(counts, dim=1).to(torch.int64), torch.stack(conf, dim=1).float()


def score_threshold_counts(counts: Any, criterion: str = "set_jaccard") -> np.ndarray:
    """Score every candidate threshold from :func:`threshold_counts` output.

    Empty rule for selection: a ``0/0`` (nothing predicted, nothing true) scores 1, so for a channel without
    positives the thresholds that predict nothing win.

    Args:
        counts: ``(N, C, T, 3)`` per-image counts, or ``(C, T, 3)`` set sums for the ``set_*`` criteria.
        criterion: one of :data:`CRITERIA`.

    Returns:
        ``(C, T)`` scores.
    """
    c = counts.detach().cpu().numpy() if isinstance(counts, torch.Tensor) else np.asarray(counts)
    if criterion in SET_CRITERIA:
        if c.ndim == 4:
            c = c.sum(0)
    elif criterion in CRITERIA:
        if c.ndim != 4:
            raise ValueError(f"criterion {criterion!r} needs per-image counts (N, C, T, 3), got {c.shape}.")
    else:
        raise ValueError(f"unknown criterion {criterion!r}; expected one of {CRITERIA}.")
    if criterion == "thresholded_jaccard":
        s = thresholded_jaccard_from_counts(c, empty="one")
    else:
        s = measure_from_counts(c, "dice" if criterion.endswith("dice") else "jaccard", empty="one")
    return nanmean(s, axis=0) if c.ndim == 4 else s


def pick_thresholds(scores: np.ndarray, candidates: Sequence[float], default: float = 0.5) -> list[float]:
    """Best candidate per channel; ties go to the candidate closest to ``default`` (then the lower one).

    Args:
        scores: ``(C, T)`` scores.
        candidates: the ``T`` thresholds.
        default: tie-breaker, and the threshold of a channel whose scores are all NaN.

    Returns:
        ``C`` thresholds.
    """
    cand = np.asarray(candidates, dtype=np.float64)
    out = []
    for row in np.asarray(scores, dtype=np.float64):
        if np.all(np.isnan(row)):
            out.append(float(default))
            continue
        best = np.nanmax(row)
        ties = np.flatnonzero(np.abs(row - best) <= 1e-12)
        k = min(ties, key=lambda i: (abs(cand[i] - default), cand[i]))
        out.append(float(cand[k]))
    return out


def evaluate_thresholds(
    probs: Sequence[Any] | Any,
    labels: Sequence[Any] | Any,
    candidates: Sequence[float] | np.ndarray = DEFAULT_CANDIDATES,
    criterion: str = "set_jaccard",
) -> np.ndarray:
    """Score table ``(C, T)`` of every candidate threshold on a validation set.

    Args:
        probs: list of ``C×H×W`` probability arrays (or a ``B×C×H×W`` array); images may differ in size.
        labels: matching binary truths.
        candidates: thresholds to try.
        criterion: one of :data:`CRITERIA`.

    Returns:
        ``(C, T)`` float scores.
    """
    if isinstance(probs, (list, tuple)):
        if len(probs) != len(labels):
            raise ValueError(f"got {len(probs)} probability maps and {len(labels)} labels.")
        counts = torch.stack([threshold_counts(p, y, candidates) for p, y in zip(probs, labels, strict=True)])
    else:
        counts = threshold_counts(probs, labels, candidates)
        if counts.ndim == 3:
            counts = counts[None]
    return score_threshold_counts(counts, criterion)


def select_thresholds(
    probs: Sequence[Any] | Any,
    labels: Sequence[Any] | Any,
    candidates: Sequence[float] | np.ndarray = DEFAULT_CANDIDATES,
    criterion: str = "set_jaccard",
    default: float = 0.5,
) -> list[float]:
    """Per-channel threshold maximising ``criterion`` (default: the set-level Jaccard) on a validation set.

    Args:
        probs: list of ``C×H×W`` probability arrays (or a ``B×C×H×W`` array).
        labels: matching binary truths.
        candidates: thresholds to try (default ``np.linspace(0.1, 0.9, 17)``).
        criterion: one of :data:`CRITERIA`.
        default: tie-breaker (closest wins) and fallback.

    Returns:
        One threshold per channel.
    """
    scores = evaluate_thresholds(probs, labels, candidates, criterion)
    return pick_thresholds(scores, candidates, default)


def save_thresholds(
    path: str | os.PathLike,
    thresholds: Sequence[float],
    channel_names: Sequence[str],
    extra: Mapping[str, Any] | None = None,
    criterion: str = "set_jaccard",
    scores: Sequence[float] | None = None,
) -> Path:
    """Write ``thresholds.json``.

    Args:
        path: output file (parent folders are created).
        thresholds: one threshold per channel.
        channel_names: one name per channel.
        extra: more top-level keys (e.g. ``epoch``, ``candidates``); they may not replace the reserved keys.
        criterion: the selection criterion.
        scores: criterion value per channel at the chosen threshold.

    Returns:
        The path written.
    """
    thresholds = [float(t) for t in thresholds]
    names = [str(n) for n in channel_names]
    if len(names) != len(thresholds):
        raise ValueError(f"{len(thresholds)} thresholds for {len(names)} channel names.")
    doc: dict[str, Any] = {
        "channel_names": names,
        "thresholds": thresholds,
        "criterion": criterion,
        "scores": None if scores is None else [None if np.isnan(s) else float(s) for s in scores],
    }
    for k, v in (extra or {}).items():
        if k in doc:
            raise ValueError(f"extra key {k!r} clashes with a reserved key.")
        doc[k] = v
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out, json.dumps(doc, indent=2) + "\n")


def load_thresholds(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``thresholds.json``.

    Args:
        path: the file.

    Returns:
        The JSON object (``channel_names``, ``thresholds``, ``criterion``, ``scores``, extras).
    """
    doc = json.loads(Path(path).read_text())
    if not isinstance(doc, dict) or "thresholds" not in doc:
        raise ValueError(f"{path}: not a thresholds file (no 'thresholds' key).")
    th = doc["thresholds"]
    if not isinstance(th, list) or not all(isinstance(t, (int, float)) for t in th):
        raise ValueError(f"{path}: 'thresholds' must be a list of numbers.")
    names = doc.get("channel_names")
    if names is not None and len(names) != len(th):
        raise ValueError(f"{path}: {len(th)} thresholds for {len(names)} channel names.")
    return doc


def resolve_thresholds(
    thresholds: Sequence[float] | str | os.PathLike | None, channel_names: Sequence[str] | None = None
) -> list[float] | None:
    """Per-channel thresholds from a list or a ``thresholds.json`` path.

    Args:
        thresholds: the thresholds, a ``thresholds.json`` path, or ``None``.
        channel_names: when given, must match the file's ``channel_names``.

    Returns:
        The thresholds as floats, or ``None`` for ``None`` and for a missing file (which warns).
    """
    if thresholds is None:
        return None
    if isinstance(thresholds, (str, os.PathLike)):
        if not Path(thresholds).is_file():
            warnings.warn(f"thresholds file {thresholds} not found; the default threshold applies to every channel "
                          "(choose them with `python -m monai.bundle run choose_thresholds`).", stacklevel=3)
            return None
        doc = load_thresholds(thresholds)
        names = doc.get("channel_names")
        if channel_names is not None and names is not None and list(names) != list(channel_names):
            raise ValueError(f"{thresholds}: channel names {names} differ from the expected {list(channel_names)}.")
        if channel_names is not None and len(doc["thresholds"]) != len(channel_names):
            raise ValueError(f"{thresholds}: {len(doc['thresholds'])} threshold(s) for the {len(channel_names)} "
                             f"channels {list(channel_names)} (a file holds one threshold per channel).")
        return [float(t) for t in doc["thresholds"]]
    return [float(t) for t in thresholds]


def write_applied(report_dir: str | os.PathLike, description: Mapping[str, Any]) -> Path:
    """Record the thresholds a run applies and where they come from (``report_dir/thresholds_applied.json``).

    Args:
        report_dir: the run's report folder (inference: ``OUT_report``).
        description: :meth:`isic_monai.transforms.ApplyThresholdsd.describe`.

    Returns:
        The path written (atomically).
    """
    out = Path(report_dir) / APPLIED_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out, json.dumps(dict(description), indent=2) + "\n")
