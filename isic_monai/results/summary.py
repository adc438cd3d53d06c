"""Evaluation reports: one per-image table and a mean ± std summary from MONAI ``MetricsSaver`` output.

``MetricsSaver`` writes one ``<metric>_raw.csv`` per metric (a row per image, a column per channel ``class0..``
plus ``mean``), ``<metric>_summary.csv`` and ``metrics.csv`` (the engine's final metric values, set-level ones
included). :func:`write_summary` joins the raw files into ``per_image.csv`` (a row per image, a column per metric and
channel, named after the channels) and writes ``summary.json`` / ``summary.md``: mean ± std over images per metric and
channel, and the set-level values. The set-level ISIC 2018 Task 2 scores of :class:`~isic_monai.metrics.SetJaccard`
(the official scorer's per-channel Jaccard and Dice, its ``overall`` and the mean of the channels) are also gathered
into one ``set_scores`` entry, so the official ``overall`` and the per-attribute mean stand side by side.

The statistics are MONAI's own summary operations (``summary_ops`` ``mean``, ``std`` and ``notnans``:
``np.nanmean``, the population ``np.nanstd`` and the count of non-NaN values, over the per-image values, where a
metric's value for an image is the NaN-aware mean of its channels), recomputed from ``<metric>_raw.csv`` rather than
read from ``<metric>_summary.csv``: MONAI writes that file rounded to 4 decimals and only when ``summary_ops`` is set,
while ``summary.json`` keeps full precision (the export rounds once, when it writes ``metadata.json``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isic_monai.data.atomic import write_atomic, write_text_atomic
from isic_monai.metrics.confidence import CONFIDENCE_FILE, choose_flag_threshold, save_confidence
from isic_monai.metrics.functional import nanmean

RAW_SUFFIX = "_raw.csv"
COUNT_SUFFIXES = ("_tp", "_fp", "_fn", "_tn")
SET_METRIC = "set_jaccard"
"""The name ``evaluate.yaml`` attaches :class:`~isic_monai.metrics.SetJaccard` under; its entries feed ``set_level``."""
_SET_SUMMARY_KEYS = ("overall", "micro_dice", "mean", "mean_dice")


def read_raw_metric(path: Path) -> tuple[list[str], dict[str, list[float]]]:
    """Read a ``<metric>_raw.csv``: the channel columns (``mean`` excluded) and ``{image: [values...]}``."""
    with path.open(newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    if not rows:
        return [], {}
    header = [h for h in rows[0][1:] if h != "mean"]
    return header, {row[0]: [float(v) for v in row[1 : 1 + len(header)]] for row in rows[1:]}


def read_engine_metrics(path: Path) -> dict[str, float]:
    """Read ``metrics.csv`` (``name,value`` lines) into a dict; missing file gives ``{}``."""
    if not path.is_file():
        return {}
    out = {}
    with path.open(newline="") as f:
        for row in csv.reader(f):
            if len(row) >= 2:
                try:
                    out[row[0]] = float(row[1])
                except ValueError:
                    continue
    return out


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """MONAI's ``mean``, ``std`` (population, ``np.nanstd``) and ``notnans`` summary of the non-NaN values.

    Returns:
        ``{"mean", "std", "n"}``; mean and std are NaN when no value is.
    """
    a = np.asarray(values, dtype=np.float64)
    n = int(np.count_nonzero(~np.isnan(a)))
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(np.nanmean(a)), "std": float(np.nanstd(a)), "n": n}


def write_summary(output_dir: str | Path, channel_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Join a MetricsSaver folder's per-image files into ``per_image.csv`` and ``summary.json`` / ``summary.md``.

    Confusion-count details (``*_tp/_fp/_fn/_tn``) go into ``per_image.csv`` but not into the mean ± std table.

    Args:
        output_dir: the folder ``MetricsSaver`` wrote to.
        channel_names: names of the channels (``class0``.. otherwise).

    Returns:
        ``{"per_image": {metric: {"mean", "std", "n", "channels": {name: {...}}}}, "set_level": {...},
        "n_images": int}``, plus ``"set_scores"`` (:func:`set_scores_summary`) when the evaluation ran the official
        :class:`~isic_monai.metrics.SetJaccard`.

    Raises:
        FileNotFoundError: no ``*_raw.csv`` in the folder (the evaluation saved no per-image metrics).
    """
    out = Path(output_dir)
    raw_files = sorted(out.glob(f"*{RAW_SUFFIX}"))
    if not raw_files:
        raise FileNotFoundError(f"{out}: no per-image metric files (*{RAW_SUFFIX}) to summarise")
    tables = {p.name[: -len(RAW_SUFFIX)]: read_raw_metric(p) for p in raw_files}
    images = sorted({image for _, rows in tables.values() for image in rows})
    columns: list[tuple[str, str, int]] = []  # (column name, metric, channel index)
    names_of = {metric: _channel_labels(header, channel_names) for metric, (header, _) in tables.items()}
    for metric, (header, _) in tables.items():
        names = names_of[metric]
        columns += [(f"{metric}_{name}" if len(header) > 1 else metric, metric, i) for i, name in enumerate(names)]
    def write_rows(f: Any) -> None:
        writer = csv.writer(f)
        writer.writerow(["image", *(c[0] for c in columns)])
        for image in images:
            writer.writerow([image, *(_cell(tables[m][1], image, i) for _, m, i in columns)])

    write_atomic(out / "per_image.csv", write_rows, mode="w", newline="")
    per_image: dict[str, Any] = {}
    for metric, (header, rows) in tables.items():
        if metric.endswith(COUNT_SUFFIXES) or metric.startswith("set_"):
            continue  # counts, and set-level metrics whose per-image details repeat the per-image Jaccard
        names = names_of[metric]
        values = np.asarray(list(rows.values()), dtype=np.float64).reshape(len(rows), len(header))
        per_image[metric] = mean_std(nanmean(values, axis=1))
        if len(header) > 1:
            per_image[metric]["channels"] = {n: mean_std(values[:, i]) for i, n in enumerate(names)}
    set_level = {k: v for k, v in read_engine_metrics(out / "metrics.csv").items() if SET_METRIC in k}
    summary = {"per_image": per_image, "set_level": set_level, "n_images": len(images)}
    scores = set_scores_summary(set_level, channel_names)
    if scores is not None:
        summary["set_scores"] = scores
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    write_text_atomic(out / "summary.md", summary_markdown(summary))
    return summary


def write_confidence(output_dir: str | Path, jaccard: str = "jaccard", confidence: str = "confidence",
                     ) -> dict[str, Any] | None:
    """Choose the flag threshold from an evaluation's per-image Jaccard and confidence; write ``confidence.json``.

    An image's Jaccard is the mean of its channels, its confidence the minimum
    (:func:`~isic_monai.metrics.confidence.choose_flag_threshold`).

    Args:
        output_dir: the evaluation's ``MetricsSaver`` folder (``jaccard_raw.csv``, ``confidence_raw.csv``).
        jaccard, confidence: the metrics' names.

    Returns:
        the record written, or ``None`` when either file is missing (an evaluation without them).
    """
    out = Path(output_dir)
    paths = [out / f"{name}{RAW_SUFFIX}" for name in (jaccard, confidence)]
    if not all(p.is_file() for p in paths):
        return None
    (_, j_rows), (_, c_rows) = (read_raw_metric(p) for p in paths)
    images = sorted(set(j_rows) & set(c_rows))
    j = [float(nanmean(np.asarray(j_rows[i], dtype=np.float64))) for i in images]
    c = [min(c_rows[i]) for i in images]
    record = choose_flag_threshold(c, j)
    save_confidence(out / CONFIDENCE_FILE, record)
    return record


def set_scores_summary(metrics: dict[str, float], channel_names: Sequence[str] | None = None,
                       prefix: str | None = None) -> dict[str, Any] | None:
    """The official set-level scores of a :class:`~isic_monai.metrics.SetJaccard` handler, from its engine entries.

    Args:
        metrics: ``metrics.csv`` values (``{prefix}``, ``{prefix}_{channel}``, ``{prefix}_{channel}_dice``,
            ``{prefix}_overall``, ``{prefix}_micro_dice``, ``{prefix}_mean``, ``{prefix}_mean_dice``).
        channel_names: the channels (default: those with a ``{prefix}_{channel}_dice`` entry).
        prefix: the handler's name (default: :data:`SET_METRIC`, else the first name with ``_overall`` and ``_mean``
            entries).

    Returns:
        ``{"metric", "overall", "micro_dice", "mean_jaccard", "mean_dice", "channels": {name: {"jaccard", "dice"}}}``,
        or None when the entries are not there (a raw-pixel or older evaluation).
    """
    candidates = [k[: -len("_overall")] for k in metrics if k.endswith("_overall")]
    candidates = [p for p in candidates if f"{p}_mean" in metrics and f"{p}_micro_dice" in metrics]
    if prefix is None:
        prefix = SET_METRIC if SET_METRIC in candidates else (sorted(candidates) or [None])[0]
    if prefix is None or prefix not in candidates:
        return None
    overall, micro_dice, mean, mean_dice = (metrics[f"{prefix}_{k}"] for k in _SET_SUMMARY_KEYS)
    if channel_names is None:
        dice_keys = [k for k in metrics if k.startswith(f"{prefix}_") and k.endswith("_dice")]
        channel_names = [k[len(prefix) + 1 : -len("_dice")] for k in dice_keys]
        channel_names = [n for n in channel_names if n not in ("micro", "mean")]
    channels = {str(n): {"jaccard": metrics.get(f"{prefix}_{n}", float("nan")),
                         "dice": metrics.get(f"{prefix}_{n}_dice", float("nan"))} for n in channel_names}
    return {"metric": prefix, "overall": overall, "micro_dice": micro_dice, "mean_jaccard": mean,
            "mean_dice": mean_dice, "channels": channels}


def _channel_labels(header: list[str], channel_names: Sequence[str] | None) -> list[str]:
    """The channel names for a raw file's columns, or its own ``class0..`` headers when they do not match."""
    return list(channel_names) if channel_names and len(channel_names) == len(header) else header


def _cell(rows: dict[str, list[float]], image: str, index: int) -> float:
    values = rows.get(image)
    return values[index] if values is not None and index < len(values) else float("nan")


def summary_markdown(summary: dict[str, Any]) -> str:
    """A Markdown table of a :func:`write_summary` result."""
    lines = [f"Images: {summary['n_images']}", "", "| metric | mean ± std over images | n |", "|---|---|---|"]
    for name, stats in summary["per_image"].items():
        lines.append(f"| {name} | {stats['mean']:.4f} ± {stats['std']:.4f} | {stats['n']} |")
        for channel, cstats in stats.get("channels", {}).items():
            row = f"{cstats['mean']:.4f} ± {cstats['std']:.4f}"
            lines.append(f"| &nbsp;&nbsp;{name} · {channel} | {row} | {cstats['n']} |")
    if summary.get("set_scores"):
        lines += ["", *set_scores_markdown(summary["set_scores"])]
    elif summary["set_level"]:
        lines += ["", "| set-level (ISIC 2018 Task 2) | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in summary["set_level"].items()]
    return "\n".join(lines) + "\n"


def set_scores_markdown(scores: dict[str, Any]) -> list[str]:
    """Markdown lines of a :func:`set_scores_summary` result: Jaccard and Dice per channel, ``overall`` and mean."""
    lines = [f"| set-level ({scores['metric']}, official ISIC scorer) | Jaccard | Dice |", "|---|---|---|"]
    lines += [f"| {n} | {v['jaccard']:.4f} | {v['dice']:.4f} |" for n, v in scores["channels"].items()]
    lines.append(f"| **overall** (micro-average, the official score) | {scores['overall']:.4f} | "
                 f"{scores['micro_dice']:.4f} |")
    lines.append(f"| mean of the channels | {scores['mean_jaccard']:.4f} | {scores['mean_dice']:.4f} |")
    return lines
