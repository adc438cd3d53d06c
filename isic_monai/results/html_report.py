"""``isic-monai report RUN_DIR -o report.html``: one self-contained HTML page for an evaluation.

A run folder (a ``bundle_root`` after training and ``evaluate.yaml``) holds what the page shows:

| file | section |
|---|---|
| ``eval/summary.json`` | the summary table (mean ± std per metric and channel) and the official set-level scores |
| ``eval/per_image.csv`` | the per-image table (sortable), score histogram, confusion matrices, attribute chart |
| ``eval/evaluation.json`` + ``eval/predictions/`` | the gallery: each image's photo, truth and predicted mask files |
| ``logs/training_curves.png`` | training curves (else drawn from ``training_history.csv`` or the TensorBoard events) |
| ``logs/run_settings.json``, ``models/thresholds.json``, ``configs/``, ``eval/config_*.json`` | the configuration |

The gallery is drawn from files, never from a model: :class:`EvaluationRecorder` (a ``validate#handlers`` entry of
``evaluate.yaml``) writes every predicted mask at the image's own size to ``eval/predictions/`` (the challenge's file
names) and lists, in ``eval/evaluation.json``, each image's photo and truth files with the evaluation's settings.
For an evaluation made before that recorder existed, ``--datalist`` supplies the truth files (matched to
``per_image.csv``'s photos by path or ISIC id) and the gallery shows the truth only. Pictures are scaled down for the
page (display only; at most ``THUMB_SIDE`` pixels a side) and embedded as base64, so the page is one file.

The page reports JavaScript errors into its own ``#js-errors`` element and marks ``#js-status`` ``data-ready="1"``
once its script has run; ``report.html#sort=<column>:asc`` (or ``:desc``) sorts the per-image table on load.
"""

from __future__ import annotations

import base64
import csv
import functools
import io
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.utils import IgniteInfo, min_version, optional_import
from PIL import Image

from isic_monai.bundle.settings import as_bool
from isic_monai.data.atomic import atomic_path, write_text_atomic
from isic_monai.data.masks import foreground
from isic_monai.data.records import json_safe
from isic_monai.engines.tracking import read_run_settings
from isic_monai.transforms import CHANNEL_COLOURS, mask_file_names, source_file

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "EVALUATION_FILE",
    "EvaluationRecorder",
    "build_report",
    "find_eval_dir",
    "gallery_cases",
    "gather_report",
    "render_report",
    "image_scores",
    "read_per_image",
    "write_report",
]

EVALUATION_FILE = "evaluation.json"
PREDICTIONS_DIR = "predictions"
THUMB_SIDE = 256
COUNT_PREFIX = "confusion_"


# ------------------------------------------------------------------------------------------ evaluation record


def entry_truth_files(entry: Mapping[str, Any], channel_names: Sequence[str]) -> list[str | None]:
    """An entry's truth file per channel: ``label`` for Task 1 (``["lesion"]``), ``attribute_<name>`` otherwise."""
    if list(channel_names) == ["lesion"]:
        return [entry.get("label")]
    return [entry.get(f"attribute_{name}") for name in channel_names]


class EvaluationRecorder:
    """Save each predicted mask and write ``evaluation.json`` (settings, photo, truth and prediction files).

    Attach to the evaluator of ``evaluate.yaml`` (``validate#handlers``). Post-processing must give binary masks at
    the image's own size (``pred``, (C, H, W)); the masks are written as ``predictions/<id>_segmentation.png``
    (Task 1) or ``<id>_attribute_<name>.png`` (Task 2), 0/255, so ``isic-monai score`` takes the folder as it is.

    Args:
        output_dir: the evaluation folder (``output_dir``).
        entries: the evaluated datalist entries (``evaluate_entries``), for the truth files.
        channel_names: the channels.
        settings: the evaluation's settings (``evaluation_settings``).
        save_predictions: write the masks (a bool or a command-line string).
        pred_key, image_key: keys of the evaluator's decollated output items.
    """

    def __init__(self, output_dir: str | os.PathLike, entries: Sequence[Mapping[str, Any]],
                 channel_names: Sequence[str], settings: Mapping[str, Any] | None = None,
                 save_predictions: bool | str = True, pred_key: str = "pred", image_key: str = "image") -> None:
        self.output_dir = Path(output_dir)
        self.channel_names = [str(c) for c in channel_names]
        self.settings = json_safe(settings or {})
        self.save_predictions = as_bool(save_predictions, "save_eval_predictions")
        self.pred_key, self.image_key = pred_key, image_key
        self._by_image = {str(e.get("image")): e for e in entries}
        self._by_id = {Path(str(e.get("image"))).stem: e for e in entries}
        self.cases: list[dict[str, Any]] = []

    def attach(self, engine: Any) -> None:
        """Register on ``STARTED``, ``ITERATION_COMPLETED`` and ``COMPLETED``."""
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Any = None) -> None:
        """Start a new record."""
        self.cases = []

    def _entry(self, source: str) -> Mapping[str, Any]:
        return self._by_image.get(source) or self._by_id.get(Path(source).stem) or {}

    def iteration_completed(self, engine: Any) -> None:
        """Write the masks of the iteration's images and note their files."""
        output = engine.state.output
        for item in output if isinstance(output, (list, tuple)) else [output]:
            source = source_file(item, self.image_key)
            if source is None:
                continue
            image_id = Path(source).stem
            names = mask_file_names(image_id, self.channel_names)
            if self.save_predictions:
                folder = self.output_dir / PREDICTIONS_DIR
                folder.mkdir(parents=True, exist_ok=True)
                pred = item[self.pred_key]
                pred = pred.detach().cpu().numpy() if hasattr(pred, "detach") else np.asarray(pred)
                for channel, name in zip(pred, names, strict=True):
                    with atomic_path(folder / name) as tmp:  # a reader never meets half a mask
                        Image.fromarray(foreground(channel, scale=1).astype(np.uint8) * 255).save(tmp)
            self.cases.append({"id": image_id, "image": source,
                               "truth": entry_truth_files(self._entry(source), self.channel_names),
                               "predictions": names if self.save_predictions else None})

    def completed(self, engine: Any = None) -> Path:
        """Write ``evaluation.json``."""
        record = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "channel_names": self.channel_names,
                  "settings": self.settings,
                  "predictions_dir": PREDICTIONS_DIR if self.save_predictions else None, "cases": self.cases}
        self.output_dir.mkdir(parents=True, exist_ok=True)
        return write_text_atomic(self.output_dir / EVALUATION_FILE, json.dumps(json_safe(record), indent=2) + "\n")


# ------------------------------------------------------------------------------------------ reading a run


def find_eval_dir(run_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``(run folder, evaluation folder)`` from a run folder (its ``eval/``) or an evaluation folder itself.

    Raises:
        FileNotFoundError: neither holds a ``summary.json``.
    """
    path = Path(run_dir)
    if (path / "summary.json").is_file():
        return path.parent, path
    if (path / "eval" / "summary.json").is_file():
        return path, path / "eval"
    raise FileNotFoundError(f"{path}: no eval/summary.json (run evaluate.yaml first) and no summary.json")


def read_per_image(path: str | os.PathLike) -> tuple[list[str], list[dict[str, Any]]]:
    """``per_image.csv``: its metric columns and one row per image (``image`` text, numbers as floats)."""
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        columns = [c for c in (reader.fieldnames or []) if c != "image"]
        rows = [{"image": row["image"], **{c: _float(row.get(c)) for c in columns}} for row in reader]
    return columns, rows


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else float("nan")
    except ValueError:
        return float("nan")


def metric_columns(columns: Sequence[str], metric: str, channel_names: Sequence[str] | None = None) -> list[str]:
    """The columns of one metric: ``metric`` itself (one channel) or ``metric_<channel>`` (several)."""
    if metric in columns:
        return [metric]
    if channel_names:
        return [f"{metric}_{c}" for c in channel_names if f"{metric}_{c}" in columns]
    return [c for c in columns if c.startswith(f"{metric}_")]


def image_scores(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], metric: str,
                 channel_names: Sequence[str] | None = None) -> list[float]:
    """Each image's ``metric``: the mean over its channel columns (NaN-aware; NaN when none is a number).

    Raises:
        ValueError: no column of that metric.
    """
    cols = metric_columns(columns, metric, channel_names)
    if not cols:
        raise ValueError(f"per_image.csv has no {metric!r} column; it has {list(columns)}")
    out = []
    for row in rows:
        values = [row[c] for c in cols if math.isfinite(row[c])]
        out.append(sum(values) / len(values) if values else float("nan"))
    return out


def gallery_cases(scores: Sequence[float], n: int) -> tuple[list[int], list[int]]:
    """Indices of the ``n`` worst and ``n`` best scored images (NaN left out; fewer when there are fewer)."""
    order = sorted((i for i, s in enumerate(scores) if math.isfinite(s)), key=lambda i: (scores[i], i))
    n = min(n, len(order) // 2 if len(order) > 1 else len(order))
    return order[:n], order[::-1][:n]


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _cases_by_image(eval_dir: Path, record: Mapping[str, Any], datalist: Mapping[str, Any] | None,
                    channel_names: Sequence[str]) -> tuple[dict[str, dict[str, Any]], Path | None]:
    """Photo/truth/prediction files per image: from the evaluation record (``evaluation.json``, read by the caller;
    empty when there is none), else from a datalist (truth only)."""
    cases: dict[str, dict[str, Any]] = {}
    pred_dir = None
    if record:
        if record.get("predictions_dir"):
            pred_dir = eval_dir / record["predictions_dir"]
        for case in record.get("cases", []):
            cases[case["image"]] = case
            cases.setdefault(case["id"], case)
    if datalist:
        for split in ("training", "validation", "testing"):
            for entry in datalist.get(split, []) or []:
                image = str(entry.get("image"))
                case = {"id": Path(image).stem, "image": image, "truth": entry_truth_files(entry, channel_names),
                        "predictions": None}
                cases.setdefault(image, case)
                cases.setdefault(case["id"], case)
    return cases, pred_dir


# ------------------------------------------------------------------------------------------ pictures


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _png_uri(path: Path) -> str:
    return _data_uri(path.read_bytes(), "image/png")


def _figure_uri(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return _data_uri(buf.getvalue(), "image/png")


def _display_hw(hw: tuple[int, int], side: int) -> tuple[int, int]:
    scale = min(1.0, side / max(hw))
    return max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale))


def _mask_at(path: str | Path | None, hw: tuple[int, int]) -> np.ndarray:
    """A mask file read as training reads it (the project rule of :mod:`isic_monai.data.masks`), resized (nearest,
    for display) to (H, W); an absent file is empty."""
    from isic_monai.data.masks import read_mask_resized

    if not path or not Path(path).is_file():
        return np.zeros(hw, dtype=bool)
    return np.asarray(read_mask_resized(path, hw)) > 0


def render_case(case: Mapping[str, Any], pred_dir: str | None, side: int = THUMB_SIDE) -> str | None:
    """A JPEG data URI of photo | truth | prediction (:func:`isic_monai.results.pictures.panel`), or ``None`` when the
    photo cannot be read. Without prediction files the third picture is the bare photo."""
    from isic_monai.data.imageio import displayed_size, open_image, open_rgb
    from isic_monai.results.pictures import panel

    try:
        with open_image(case["image"]) as probe:
            hw = _display_hw(displayed_size(probe), side)
        photo = np.asarray(open_rgb(case["image"], draft_hw=hw).resize((hw[1], hw[0]), Image.Resampling.LANCZOS))
    except (OSError, ValueError):
        return None
    truth = np.stack([_mask_at(p, hw) for p in case.get("truth") or [None]])
    names = case.get("predictions")
    pred = (np.stack([_mask_at(Path(pred_dir) / n, hw) for n in names]) if names and pred_dir
            else np.zeros((1, *hw), dtype=bool))
    buf = io.BytesIO()
    Image.fromarray(panel(photo, truth, pred)).save(buf, format="JPEG", quality=88)
    return _data_uri(buf.getvalue(), "image/jpeg")


def _curves_uri(run_dir: Path, channel_names: Sequence[str]) -> tuple[str | None, str]:
    """The training curves: the PNG training wrote, else drawn from the history CSV or the TensorBoard events."""
    from isic_monai.results.pictures import (
        CURVES_FILE,
        HISTORY_FILE,
        history_from_events,
        plot_training_curves,
        read_history,
    )

    logs = run_dir / "logs"
    if (logs / CURVES_FILE).is_file():
        return _png_uri(logs / CURVES_FILE), f"logs/{CURVES_FILE}"
    rows, source = [], ""
    if (logs / HISTORY_FILE).is_file():
        rows, source = read_history(logs / HISTORY_FILE), f"drawn from logs/{HISTORY_FILE}"
    elif any(logs.glob("events.out.tfevents.*")):
        rows, source = history_from_events(logs), "drawn from the TensorBoard events in logs/"
    if not rows:
        return None, "no training logs in the run folder"
    with tempfile.TemporaryDirectory() as tmp:
        return _png_uri(plot_training_curves(rows, Path(tmp) / CURVES_FILE, channel_names)), source


def _histogram_uri(scores: Sequence[float], metric: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2), dpi=100)
    finite = [s for s in scores if math.isfinite(s)]
    ax.hist(finite, bins=20, range=(0.0, 1.0), color="tab:blue", edgecolor="white")
    ax.set(xlabel=f"{metric} per image", ylabel="images", title=f"{metric}: distribution over {len(finite)} images")
    fig.tight_layout()
    return _figure_uri(fig)


def presence_counts(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                       channel_names: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per channel, the images whose truth / prediction holds any pixel (from the confusion counts)."""
    out = {}
    for name in channel_names:
        suffix = "" if f"{COUNT_PREFIX}tp" in columns else f"_{name}"
        tp, fp, fn = (f"{COUNT_PREFIX}{k}{suffix}" for k in ("tp", "fp", "fn"))
        if not all(c in columns for c in (tp, fp, fn)):
            continue
        out[name] = {"truth": sum(1 for r in rows if r[tp] + r[fn] > 0),
                     "prediction": sum(1 for r in rows if r[tp] + r[fp] > 0), "images": len(rows)}
    return out


def _attribute_chart_uri(presence: Mapping[str, Mapping[str, int]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(presence)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7.0, 3.6), dpi=100)
    for offset, key, colour in ((-0.2, "truth", "tab:green"), (0.2, "prediction", "tab:orange")):
        values = [100.0 * presence[n][key] / max(1, presence[n]["images"]) for n in names]
        ax.bar(x + offset, values, width=0.4, label=key, color=colour)
    ax.set_xticks(x, [n.replace("_", " ") for n in names], rotation=15)
    ax.set(ylabel="% of images", title="attribute presence: truth vs prediction", ylim=(0, 100))
    ax.legend()
    fig.tight_layout()
    return _figure_uri(fig)


def confusion_matrices(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                       channel_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Per channel, the pixel confusion matrix summed over the images, ``[[TN, FP], [FN, TP]]`` (rows: truth)."""
    out = {}
    for name in channel_names:
        suffix = "" if f"{COUNT_PREFIX}tp" in columns else f"_{name}"
        keys = [f"{COUNT_PREFIX}{k}{suffix}" for k in ("tn", "fp", "fn", "tp")]
        if all(k in columns for k in keys):
            tn, fp, fn, tp = (sum(r[k] for r in rows if math.isfinite(r[k])) for k in keys)
            out[name] = np.array([[tn, fp], [fn, tp]], dtype=np.float64)
    return out


# ------------------------------------------------------------------------------------------ the page's data


TEMPLATE_DIR = Path(__file__).with_name("templates")
"""The page's Jinja2 templates (``report.html.j2``), CSS and JavaScript, shipped as package data."""
PAGE_TEMPLATE = "report.html.j2"


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def summary_rows(summary: Mapping[str, Any]) -> dict[str, list]:
    """The summary table: one row per metric, mean ± std over images of the channel mean, then of each channel; n."""
    per_image = summary.get("per_image", {})
    channels: list[str] = []
    for stats in per_image.values():
        channels += [c for c in stats.get("channels", {}) if c not in channels]
    rows = []
    for metric, stats in per_image.items():
        cells = [metric, f"{_fmt(stats['mean'])} ± {_fmt(stats['std'])}"]
        for channel in channels:
            c = stats.get("channels", {}).get(channel)
            cells.append(f"{_fmt(c['mean'])} ± {_fmt(c['std'])}" if c else "–")
        rows.append([*cells, str(stats["n"])])
    return {"headers": ["metric", "mean of the channels" if channels else "mean ± std", *channels, "n"], "rows": rows}


TASK1_SCORES: tuple[tuple[str, str], ...] = (
    ("jaccard", "Jaccard index, mean over images (the ISIC 2016 and 2017 Task 1 score)"),
    ("thresholded_jaccard", "thresholded Jaccard index (the ISIC 2018 Task 1 score: 0 below 0.65)"),
    ("dice", "Dice coefficient, mean over images"),
)
"""Task 1's official scores as the ISIC papers name them; they are per-image means (summary ``per_image``)."""


def official_rows(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The official scores: Task 2's set-level Jaccard per attribute and overall; Task 1's per-image scores.

    Task 1 is scored per image, so the set-level values (each the same pixel sum under several names) are left out;
    Task 2 is scored at set level (the ISIC 2018 Task 2 scorer): one row per attribute, the official overall
    (micro-average over the attributes) and, as the papers also report it, the mean over the attributes.
    """
    scores = summary.get("set_scores")
    if scores and len(scores.get("channels", {})) > 1:
        rows = [{"cells": [n.replace("_", " "), _fmt(v["jaccard"]), _fmt(v["dice"])], "main": False}
                for n, v in scores["channels"].items()]
        rows.append({"cells": ["overall: Jaccard over all attributes' pixels (the official score)",
                               _fmt(scores["overall"]), _fmt(scores["micro_dice"])], "main": True})
        rows.append({"cells": ["mean of the five attributes' Jaccard", _fmt(scores["mean_jaccard"]),
                               _fmt(scores["mean_dice"])], "main": False})
        return {"title": "Official set-level scores (ISIC 2018 Task 2 scorer)",
                "headers": ["attribute", "Jaccard", "Dice"], "rows": rows,
                "note": "Set level: each attribute's pixels summed over every image, then one Jaccard."}
    per_image = summary.get("per_image", {})
    rows = [{"cells": [label, _fmt(per_image[metric]["mean"])], "main": metric == "jaccard"}
            for metric, label in TASK1_SCORES if metric in per_image]
    return {"title": "Official scores (ISIC Task 1)", "headers": ["score", "value"], "rows": rows, "note": ""}


def _per_image_columns(columns: Sequence[str]) -> list[str]:
    shown = [c for c in columns if not c.startswith(COUNT_PREFIX) and not c.startswith("set_")]
    if len(shown) > 16:
        shown = [c for c in shown if c.startswith(("jaccard", "dice", "confidence"))]
    return shown


def per_image_rows(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], scores: Sequence[float],
                   metric: str) -> dict[str, list]:
    """The sortable per-image table: the image, its ``metric`` (mean over channels) when not a column, the metrics."""
    shown = _per_image_columns(columns)
    score_col = f"{metric} (mean)" if metric not in shown else None
    out = []
    for row, score in zip(rows, scores, strict=True):
        values = ([score] if score_col else []) + [row[c] for c in shown]
        out.append({"id": Path(row["image"]).stem, "image": row["image"],
                    "cells": [{"value": v if math.isfinite(v) else "", "text": _fmt(v)} for v in values]})
    return {"headers": ["image"] + ([score_col] if score_col else []) + shown, "rows": out}


def confusion_cells(matrices: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Each channel's confusion matrix as display cells: count, row percentage and shade."""
    out = []
    for name, m in matrices.items():
        rates = m / np.maximum(m.sum(axis=1, keepdims=True), 1.0)
        out.append({"name": name, "rows": [
            {"label": label, "cells": [{"count": f"{int(m[i, j]):,}", "percent": f"{100 * rates[i, j]:.1f}",
                                        "alpha": f"{0.15 + 0.7 * rates[i, j]:.2f}"} for j in range(2)]}
            for i, label in enumerate(("0", "1"))]})
    return out


def _settings(settings: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): json.dumps(v) for k, v in settings.items()}


def _config_files(run_dir: Path, eval_dir: Path) -> list[tuple[str, str]]:
    files = sorted((run_dir / "configs").glob("*.yaml")) + sorted((run_dir / "configs").glob("*.json"))
    files += sorted(eval_dir.glob("config_*.json"))
    out = []
    for path in files:
        text = path.read_text(errors="replace")
        out.append((str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else str(path), text[:200_000]))
    return out


def _gallery_note(channel_names: Sequence[str], truth_known: bool, has_pred: bool) -> str:
    note = ("Each case: the photo, the truth over it, the prediction over it (colours per channel: "
            + ", ".join(f"{n} {CHANNEL_COLOURS[i % len(CHANNEL_COLOURS)][0]}" for i, n in enumerate(channel_names))
            + ").")
    if not truth_known:
        note += " For some images no truth files are known (give the datalist: --datalist): no truth drawn."
    if not has_pred:
        note += (" The evaluation saved no predictions (evaluation.json is missing or save_eval_predictions "
                 "was false): the third picture is the bare photo.")
    return note


def _gallery(rows: Sequence[Mapping[str, Any]], scores: Sequence[float], worst: list[int], best: list[int],
             cases: Mapping[str, Mapping[str, Any]], pred_dir: Path | None, workers: int | None,
             progress: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """The worst and best cases' pictures (drawn in parallel) and whether every one's truth is known."""
    from isic_monai.data.parallel import progress_map

    chosen = [(i, cases.get(rows[i]["image"]) or cases.get(Path(rows[i]["image"]).stem)) for i in worst + best]
    truth_known = all(c is not None for _, c in chosen)
    chosen = [(i, c or {"id": Path(rows[i]["image"]).stem, "image": rows[i]["image"], "truth": None,
                        "predictions": None}) for i, c in chosen]
    render = functools.partial(render_case, pred_dir=str(pred_dir) if pred_dir else None)
    pictures = progress_map(render, [c for _, c in chosen], workers=workers, progress=progress, desc="report",
                            unit="image")
    uri = {i: picture for (i, _), picture in zip(chosen, pictures, strict=True)}

    def figures(indices: list[int]) -> list[dict[str, Any]]:
        return [{"uri": uri.get(i), "id": Path(rows[i]["image"]).stem, "score": _fmt(scores[i])} for i in indices]

    return figures(worst), figures(best), truth_known


def gather_report(run_dir: str | os.PathLike, metric: str = "jaccard", n_gallery: int = 4,
                  datalist: Mapping[str, Any] | None = None, workers: int | None = 1, progress: bool = False,
                  title: str | None = None) -> dict[str, Any]:
    """Everything the report page shows, read from a run's files and prepared for :data:`PAGE_TEMPLATE`.

    Args: as :func:`build_report`.

    Returns:
        The page's data (plain values, pictures as data URIs).

    Raises:
        FileNotFoundError: no evaluation in ``run_dir``.
        ValueError: ``per_image.csv`` has no ``metric``.
    """
    run_path, eval_dir = find_eval_dir(run_dir)
    summary = json.loads((eval_dir / "summary.json").read_text())
    columns, rows = read_per_image(eval_dir / "per_image.csv")
    record = _load_json(eval_dir / EVALUATION_FILE) or {}
    run_settings = read_run_settings(run_path)
    channel_names = record.get("channel_names") or run_settings.get("channel_names") or _channels_of(summary)
    scores = image_scores(rows, columns, metric, channel_names)
    worst, best = gallery_cases(scores, n_gallery)
    cases, pred_dir = _cases_by_image(eval_dir, record, datalist, channel_names)
    worst_cases, best_cases, truth_known = _gallery(rows, scores, worst, best, cases, pred_dir, workers, progress)
    curves_uri, curves_source = _curves_uri(run_path, channel_names)
    presence = presence_counts(rows, columns, channel_names) if len(channel_names) > 1 else {}
    thresholds = _load_json(run_path / "models" / "thresholds.json")
    return {
        "heading": title or f"Evaluation report: {run_path.resolve().name}",
        "run_dir": str(run_path.resolve()), "eval_name": eval_dir.name,
        "n_images": summary.get("n_images", len(rows)), "channels": list(channel_names),
        "made": time.strftime("%Y-%m-%d %H:%M"), "metric": metric,
        "official": official_rows(summary), "summary": summary_rows(summary),
        "gallery_note": _gallery_note(channel_names, truth_known, pred_dir is not None and pred_dir.is_dir()),
        "worst": worst_cases, "best": best_cases,
        "histogram_uri": _histogram_uri(scores, metric),
        "attribute_chart_uri": _attribute_chart_uri(presence) if presence else None,
        "confusion": confusion_cells(confusion_matrices(rows, columns, channel_names)),
        "curves_uri": curves_uri, "curves_source": curves_source,
        "per_image": per_image_rows(rows, columns, scores, metric),
        "run_settings": _settings(run_settings), "eval_settings": _settings(record.get("settings", {})),
        "thresholds": _settings({k: thresholds.get(k) for k in ("channel_names", "thresholds", "criterion", "scores",
                                                                 "epoch")}) if thresholds else {},
        "config_files": _config_files(run_path, eval_dir),
    }


@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR), autoescape=True,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def render_report(page: Mapping[str, Any]) -> str:
    """The HTML page for :func:`gather_report`'s data (``templates/report.html.j2``)."""
    return _environment().get_template(PAGE_TEMPLATE).render(page=page)


def error_collector() -> str:
    """The page's first script: it writes JavaScript errors into ``#js-errors`` (tests load pages with it)."""
    return (TEMPLATE_DIR / "error_collector.js").read_text()


def build_report(run_dir: str | os.PathLike, metric: str = "jaccard", n_gallery: int = 4,
                 datalist: Mapping[str, Any] | None = None, workers: int | None = 1, progress: bool = False,
                 title: str | None = None) -> str:
    """The report page of a run's evaluation, as HTML text: :func:`gather_report`, then :func:`render_report`.

    Args:
        run_dir: a run folder (``bundle_root``) or its evaluation folder.
        metric: the per-image score the table, the histogram and the gallery go by (mean over channels).
        n_gallery: the worst and the best images shown.
        datalist: truth files for an evaluation without ``evaluation.json``.
        workers, progress: processes and a progress display for drawing the gallery.
        title: the page's title.

    Raises:
        FileNotFoundError: no evaluation in ``run_dir``.
        ValueError: ``per_image.csv`` has no ``metric``.
    """
    return render_report(gather_report(run_dir, metric, n_gallery, datalist, workers, progress, title))


def _channels_of(summary: Mapping[str, Any]) -> list[str]:
    for stats in summary.get("per_image", {}).values():
        if stats.get("channels"):
            return list(stats["channels"])
    return ["lesion"]


def write_report(run_dir: str | os.PathLike, output: str | os.PathLike, **kwargs: Any) -> Path:
    """Write :func:`build_report`'s page to ``output`` (folders created)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(output, build_report(run_dir, **kwargs))
