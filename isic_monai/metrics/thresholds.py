"""Per-channel probability thresholds chosen on the validation set, ``thresholds.json`` and their application.

The counts behind every criterion are exact: for candidate thresholds ``t_0 < ... < t_{T-1}`` and a prediction rule
``prob >= t_k``, each pixel is put in the bucket ``#{k: t_k <= prob}`` (``torch.bucketize``) and reverse cumulative
sums of the per-bucket histograms of positive and negative pixels give TP, FP and FN at every candidate at once.
A per-image record is ``C×T×3`` integers, whatever the image size.

``thresholds.json`` (written beside ``model.pt``, e.g. ``models/thresholds.json``)::

    {"channel_names": ["pigment_network", ...], "thresholds": [0.45, ...], "criterion": "set_jaccard",
     "scores": [0.51, ...], "candidates": [0.1, ...], "epoch": 12, "n_images": 100}
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.handlers import from_engine
from monai.metrics import Cumulative
from monai.transforms import MapTransform, Transform
from monai.utils import IgniteInfo, min_version, optional_import

idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")
Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "CRITERIA",
    "DEFAULT_CANDIDATES",
    "ApplyThresholds",
    "ApplyThresholdsd",
    "ThresholdSelectionHandler",
    "evaluate_thresholds",
    "load_thresholds",
    "pick_thresholds",
    "save_thresholds",
    "score_threshold_counts",
    "select_thresholds",
    "threshold_counts",
]

DEFAULT_CANDIDATES: tuple[float, ...] = tuple(float(round(t, 6)) for t in np.linspace(0.1, 0.9, 17))
"""0.10, 0.15, ..., 0.90."""

CRITERIA: tuple[str, ...] = ("set_jaccard", "set_dice", "mean_jaccard", "mean_dice", "thresholded_jaccard")
"""``set_*``: counts summed over the set first (ISIC 2018 Task 2); ``mean_*``: per-image mean (empty/empty = 1);
``thresholded_jaccard``: ISIC 2018 Task 1 (per-image Jaccard, 0 below 0.65, averaged)."""

_SET_CRITERIA = ("set_jaccard", "set_dice")

logger = logging.getLogger(__name__)


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, MetaTensor):
        return x.as_tensor()
    if isinstance(x, torch.Tensor):
        return x
    return torch.as_tensor(np.asarray(x))


def _candidates(candidates: Sequence[float] | np.ndarray) -> torch.Tensor:
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
    p = _as_tensor(prob)
    t = _as_tensor(label)
    if p.shape != t.shape:
        raise ValueError(f"prob and label must have the same shape, got {tuple(p.shape)} and {tuple(t.shape)}.")
    single = p.ndim == 3
    if single:
        p, t = p[None], t[None]
    cand = _candidates(candidates).to(p.device)
    B, C = p.shape[:2]
    T = cand.numel()
    p = p.flatten(2).to(torch.float64)
    pos = (t.flatten(2) >= 0.5).to(p.device)
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


def _ratio(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, empty, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


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
    c = c.astype(np.float64)
    if criterion in _SET_CRITERIA:
        if c.ndim == 4:
            c = c.sum(0)
    elif criterion in CRITERIA:
        if c.ndim != 4:
            raise ValueError(f"criterion {criterion!r} needs per-image counts (N, C, T, 3), got {c.shape}.")
    else:
        raise ValueError(f"unknown criterion {criterion!r}; expected one of {CRITERIA}.")
    tp, fp, fn = c[..., 0], c[..., 1], c[..., 2]
    s = _ratio(2 * tp, 2 * tp + fp + fn, 1.0) if criterion.endswith("dice") else _ratio(tp, tp + fp + fn, 1.0)
    if criterion == "thresholded_jaccard":
        s = np.where(s < 0.65, 0.0, s)
    if c.ndim == 4:
        s = s.mean(0) if s.shape[0] else np.full(s.shape[1:], np.nan)
    return s


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
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, out)
    return out


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


def _resolve_thresholds(
    thresholds: Sequence[float] | str | os.PathLike | None, channel_names: Sequence[str] | None
) -> list[float] | None:
    if thresholds is None:
        return None
    if isinstance(thresholds, (str, os.PathLike)):
        if not Path(thresholds).is_file():
            warnings.warn(f"thresholds file {thresholds} not found; using the default threshold.", stacklevel=3)
            return None
        doc = load_thresholds(thresholds)
        names = doc.get("channel_names")
        if channel_names is not None and names is not None and list(names) != list(channel_names):
            raise ValueError(f"{thresholds}: channel names {names} differ from the expected {list(channel_names)}.")
        return [float(t) for t in doc["thresholds"]]
    return [float(t) for t in thresholds]


class ApplyThresholds(Transform):
    """Binarise a channel-first probability map with one threshold per channel (``prob >= t``).

    Args:
        thresholds: one per channel, a ``thresholds.json`` path, or ``None`` (``default`` everywhere). A missing
            file warns and falls back to ``default``.
        default: threshold used when ``thresholds`` is ``None`` or the file is missing.
        channel_names: when given, must match the file's ``channel_names``.
    """

    def __init__(
        self,
        thresholds: Sequence[float] | str | os.PathLike | None = None,
        default: float = 0.5,
        channel_names: Sequence[str] | None = None,
    ) -> None:
        self.default = float(default)
        self.thresholds = _resolve_thresholds(thresholds, channel_names)

    def __call__(self, img: Any) -> Any:
        """Return ``img >= threshold[c]`` per channel, in ``img``'s type and dtype (MetaTensor kept)."""
        is_np = isinstance(img, np.ndarray)
        x = torch.as_tensor(img) if is_np else img
        n_ch = x.shape[0]
        th = [self.default] if self.thresholds is None else self.thresholds
        if len(th) == 1:
            th = th * n_ch
        if len(th) != n_ch:
            raise ValueError(f"{len(th)} thresholds for an input with {n_ch} channels (shape {tuple(x.shape)}).")
        t = torch.as_tensor(th, dtype=x.dtype if x.is_floating_point() else torch.float64, device=x.device)
        t = t.view(-1, *([1] * (x.ndim - 1)))
        dtype = x.dtype if x.is_floating_point() else torch.float32
        out = (x >= t).to(dtype)
        return out.numpy() if is_np else out


class ApplyThresholdsd(MapTransform):
    """Dictionary version of :class:`ApplyThresholds`, for post-processing after ``Activationsd(sigmoid=True)``.

    Args:
        keys: keys to binarise (e.g. ``"pred"``).
        thresholds: one per channel, a ``thresholds.json`` path, or ``None``.
        default: threshold when ``thresholds`` is ``None`` or the file is missing.
        channel_names: when given, must match the file's ``channel_names``.
        allow_missing_keys: do not fail on missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        thresholds: Sequence[float] | str | os.PathLike | None = None,
        default: float = 0.5,
        channel_names: Sequence[str] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = ApplyThresholds(thresholds, default, channel_names)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Binarise every key."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d


class _CountBuffer(Cumulative):
    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        return self.get_buffer()


class ThresholdSelectionHandler:
    """Collect validation probabilities' threshold counts and write ``thresholds.json`` at ``EPOCH_COMPLETED``.

    Attach to the evaluator (``val_handlers``). Post-processing must keep the probabilities, e.g.
    ``Activationsd(keys="pred", sigmoid=True)``, ``CopyItemsd(keys="pred", names="prob")``, then binarise ``pred``.
    Memory: ``C×T×3`` integers in total for ``set_*`` criteria (summed, ``all_reduce``-d across ranks), or per image
    for the per-image criteria (gathered with MONAI's ``Cumulative``). Only rank 0 writes.

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
    ) -> None:
        if criterion not in CRITERIA:
            raise ValueError(f"unknown criterion {criterion!r}; expected one of {CRITERIA}.")
        self.output_path = Path(output_path)
        self.channel_names = [str(n) for n in channel_names]
        self.output_transform = output_transform or from_engine(["prob", "label"])
        self.candidates = [float(c) for c in _candidates(candidates)]
        self.criterion = criterion
        self.default = float(default)
        self.only_on_best = only_on_best
        self.sigmoid = sigmoid
        self.thresholds: list[float] | None = None
        self.scores: list[float] | None = None
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

    def _pairs(self, probs: Any, labels: Any) -> list[tuple[Any, Any]]:
        if isinstance(probs, (list, tuple)):
            return list(zip(probs, labels, strict=True))
        return [(probs, labels)]

    def update(self, engine: Any) -> None:
        """Add the counts of the current iteration's output."""
        probs, labels = self.output_transform(engine.state.output)
        for p, y in self._pairs(probs, labels):
            p = _as_tensor(p).float()
            if self.sigmoid:
                p = torch.sigmoid(p)
            c = threshold_counts(p, y, self.candidates)
            if c.ndim == 3:
                c = c[None]
            self._n += c.shape[0]
            if self.criterion in _SET_CRITERIA:
                s = c.sum(0)
                self._sum = s if self._sum is None else self._sum + s
            else:
                self._buffer.extend(c)

    def _gathered_counts(self) -> tuple[torch.Tensor, int]:
        ws = idist.get_world_size()
        n = int(idist.all_reduce(torch.tensor(self._n, dtype=torch.int64)).item()) if ws > 1 else self._n
        if self.criterion in _SET_CRITERIA:
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
        scores = score_threshold_counts(counts, self.criterion)
        thresholds = pick_thresholds(scores, self.candidates, self.default)
        idx = [self.candidates.index(t) if t in self.candidates else None for t in thresholds]
        best = [float(scores[c, k]) if k is not None else float("nan") for c, k in enumerate(idx)]
        return thresholds, best

    def complete(self, engine: Any) -> None:
        """Compute the thresholds and, on rank 0 (and the best epoch when ``only_on_best``), write the JSON."""
        thresholds, scores = self.compute()
        self.thresholds, self.scores = thresholds, scores
        epoch = int(getattr(engine.state, "epoch", 0) or 0)
        best_epoch = getattr(engine.state, "best_metric_epoch", -1)
        if self.only_on_best and best_epoch not in (None, -1) and best_epoch != epoch:
            return
        if idist.get_rank() == 0:
            save_thresholds(
                self.output_path,
                thresholds,
                self.channel_names,
                extra={"candidates": self.candidates, "epoch": epoch, "n_images": self.n_images},
                criterion=self.criterion,
                scores=scores,
            )
            logger.info("thresholds %s (%s %s) written to %s", thresholds, self.criterion, scores, self.output_path)
