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
import html
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

from isic_monai.settings import as_bool
from isic_monai.tracking import json_safe, read_run_settings
from isic_monai.transforms import mask_file_names

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "EVALUATION_FILE",
    "EvaluationRecorder",
    "build_report",
    "find_eval_dir",
    "gallery_cases",
    "image_scores",
    "read_per_image",
    "write_report",
]

EVALUATION_FILE = "evaluation.json"
PREDICTIONS_DIR = "predictions"
THUMB_SIDE = 256
COUNT_PREFIX = "confusion_"


# ------------------------------------------------------------------------------------------ evaluation record


def _source(item: Mapping[str, Any], key: str = "image") -> str | None:
    meta = getattr(item.get(key), "meta", None) or {}
    source = meta.get("filename_or_obj")
    if isinstance(source, (list, tuple)):
        source = source[0] if source else None
    return str(source) if source else None


def truth_files(entry: Mapping[str, Any], channel_names: Sequence[str]) -> list[str | None]:
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
            source = _source(item, self.image_key)
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
                    Image.fromarray((channel > 0.5).astype(np.uint8) * 255).save(folder / name)
            self.cases.append({"id": image_id, "image": source,
                               "truth": truth_files(self._entry(source), self.channel_names),
                               "predictions": names if self.save_predictions else None})

    def completed(self, engine: Any = None) -> Path:
        """Write ``evaluation.json``."""
        record = {"created": time.strftime("%Y-%m-%d %H:%M:%S"), "channel_names": self.channel_names,
                  "settings": self.settings,
                  "predictions_dir": PREDICTIONS_DIR if self.save_predictions else None, "cases": self.cases}
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / EVALUATION_FILE
        path.write_text(json.dumps(json_safe(record), indent=2) + "\n")
        return path


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


def _cases_by_image(eval_dir: Path, datalist: Mapping[str, Any] | None,
                    channel_names: Sequence[str]) -> tuple[dict[str, dict[str, Any]], Path | None]:
    """Photo/truth/prediction files per image: from ``evaluation.json``, else from a datalist (truth only)."""
    record = _load_json(eval_dir / EVALUATION_FILE)
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
                case = {"id": Path(image).stem, "image": image, "truth": truth_files(entry, channel_names),
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
    """A mask file resized (nearest, for display) to (H, W); an absent file is empty."""
    if not path or not Path(path).is_file():
        return np.zeros(hw, dtype=bool)
    with Image.open(path) as img:
        img = img.convert("L")
        if img.size != (hw[1], hw[0]):
            img = img.resize((hw[1], hw[0]), Image.Resampling.NEAREST)
        return np.asarray(img) > 127


def render_case(case: Mapping[str, Any], pred_dir: str | None, side: int = THUMB_SIDE) -> str | None:
    """A JPEG data URI of photo | truth | prediction (:func:`isic_monai.visualize.panel`), or ``None`` when the
    photo cannot be read. Without prediction files the third picture is the bare photo."""
    from isic_monai.data.imageio import open_rgb
    from isic_monai.visualize import panel

    try:
        with Image.open(case["image"]) as probe:
            hw = _display_hw((probe.height, probe.width), side)
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
    from isic_monai.visualize import CURVES_FILE, HISTORY_FILE, history_from_events, plot_training_curves, read_history

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


def attribute_presence(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
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


# ------------------------------------------------------------------------------------------ HTML


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.{digits}f}"
    return _e(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], table_id: str, cls: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(cells) + "</tr>" for cells in rows)
    return f'<table id="{table_id}" class="{cls}"><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>'


def _summary_table(summary: Mapping[str, Any]) -> str:
    """One row per metric: mean ± std over images of the channel mean, then of each channel; n images."""
    per_image = summary.get("per_image", {})
    channels: list[str] = []
    for stats in per_image.values():
        channels += [c for c in stats.get("channels", {}) if c not in channels]
    rows = []
    for metric, stats in per_image.items():
        cells = [f"<td>{_e(metric)}</td>", f"<td>{_fmt(stats['mean'])} ± {_fmt(stats['std'])}</td>"]
        for channel in channels:
            c = stats.get("channels", {}).get(channel)
            cells.append(f"<td>{_fmt(c['mean'])} ± {_fmt(c['std'])}</td>" if c else "<td>–</td>")
        rows.append([*cells, f"<td>{stats['n']}</td>"])
    headers = ["metric", "mean of the channels" if channels else "mean ± std", *map(_e, channels), "n"]
    return _table(headers, rows, "summary-table")


def _official_section(summary: Mapping[str, Any]) -> str:
    scores = summary.get("set_scores")
    if scores and len(scores.get("channels", {})) > 1:  # Task 2; Task 1 is scored per image
        rows = [[f"<td>{_e(n)}</td>", f"<td>{_fmt(v['jaccard'])}</td>", f"<td>{_fmt(v['dice'])}</td>"]
                for n, v in scores["channels"].items()]
        rows.append(["<td><b>overall</b> (micro-average, the official score)</td>",
                     f"<td><b>{_fmt(scores['overall'])}</b></td>", f"<td>{_fmt(scores['micro_dice'])}</td>"])
        rows.append(["<td>mean of the channels</td>", f"<td>{_fmt(scores['mean_jaccard'])}</td>",
                     f"<td>{_fmt(scores['mean_dice'])}</td>"])
        return ("<h3>Official set-level scores (ISIC 2018 Task 2 scorer)</h3>"
                + _table(["attribute", "Jaccard", "Dice"], rows, "official-table"))
    per_image = summary.get("per_image", {})
    rows = []
    for metric, label in (("jaccard", "ISIC 2016/2017 Task 1: mean Jaccard"),
                          ("thresholded_jaccard", "ISIC 2018 Task 1: thresholded Jaccard"),
                          ("dice", "mean Dice")):
        if metric in per_image:
            rows.append([f"<td>{label}</td>", f"<td><b>{_fmt(per_image[metric]['mean'])}</b></td>"])
    rows += [[f"<td>{_e(k)} (set level)</td>", f"<td>{_fmt(v)}</td>"] for k, v in summary.get("set_level", {}).items()]
    return "<h3>Official scores</h3>" + _table(["score", "value"], rows, "official-table") if rows else ""


def _per_image_columns(columns: Sequence[str]) -> list[str]:
    shown = [c for c in columns if not c.startswith(COUNT_PREFIX) and not c.startswith("set_")]
    if len(shown) > 16:
        shown = [c for c in shown if c.startswith(("jaccard", "dice"))]
    return shown


def _per_image_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], scores: Sequence[float],
                     metric: str) -> str:
    shown = _per_image_columns(columns)
    score_col = f"{metric} (mean)" if metric not in shown else None
    headers = ["image"] + ([score_col] if score_col else []) + shown
    body = []
    for row, score in zip(rows, scores, strict=True):
        image_id = Path(row["image"]).stem
        cells = [f'<td data-value="{_e(image_id)}" title="{_e(row["image"])}">{_e(image_id)}</td>']
        values = ([score] if score_col else []) + [row[c] for c in shown]
        cells += [f'<td data-value="{v if math.isfinite(v) else ""}">{_fmt(v)}</td>' for v in values]
        body.append(cells)
    head = "".join(f'<th data-column="{_e(h)}" title="click to sort">{_e(h)}</th>' for h in headers)
    lines = "\n".join("<tr>" + "".join(c) + "</tr>" for c in body)
    return (f'<table id="per-image-table" class="sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>\n{lines}\n</tbody></table>")


def _confusion_html(matrices: Mapping[str, np.ndarray]) -> str:
    parts = []
    for name, m in matrices.items():
        rates = m / np.maximum(m.sum(axis=1, keepdims=True), 1.0)
        cells = [[f"<th>truth {lab}</th>"] + [
            f'<td style="background: rgba(31,119,180,{0.15 + 0.7 * rates[i, j]:.2f})">{int(m[i, j]):,}<br>'
            f"<small>{100 * rates[i, j]:.1f} %</small></td>" for j in range(2)] for i, lab in enumerate(("0", "1"))]
        parts.append(f'<div class="confusion"><h4>{_e(name)}</h4>'
                     + _table(["pixels", "predicted 0", "predicted 1"], cells, f"confusion-{_e(name)}", "confusion")
                     + "</div>")
    return '<div class="row">' + "".join(parts) + "</div>" if parts else "<p>No confusion counts in per_image.csv.</p>"


def _settings_table(settings: Mapping[str, Any], table_id: str) -> str:
    rows = [[f"<td>{_e(k)}</td>", f"<td><code>{_e(json.dumps(v))}</code></td>"] for k, v in settings.items()]
    return _table(["setting", "value"], rows, table_id, "settings")


def _config_files(run_dir: Path, eval_dir: Path) -> list[tuple[str, str]]:
    files = sorted((run_dir / "configs").glob("*.yaml")) + sorted((run_dir / "configs").glob("*.json"))
    files += sorted(eval_dir.glob("config_*.json"))
    out = []
    for path in files:
        text = path.read_text(errors="replace")
        out.append((str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else str(path), text[:200_000]))
    return out


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1250px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .88em; }
th, td { border: 1px solid #ddd; padding: .25em .55em; text-align: right; }
td:first-child, th:first-child { text-align: left; }
thead th { background: #f2f2f2; position: sticky; top: 0; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th.asc::after { content: " ▲"; } table.sortable th.desc::after { content: " ▼"; }
.scroll { max-height: 32em; overflow: auto; display: inline-block; }
table.settings td { text-align: left; }
img { max-width: 100%; } .case img { height: 170px; width: auto; image-rendering: auto; }
.gallery { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; } figcaption { font-size: .85em; color: #444; }
.row { display: flex; flex-wrap: wrap; gap: 2em; }
pre { background: #f7f7f7; padding: .6em; overflow: auto; max-height: 30em; font-size: .8em; }
.note { color: #555; font-size: .9em; } #js-errors { color: #b00; } #js-errors:empty { display: none; }
"""

_JS = """
(function () {
  function cellValue(row, index) {
    var cell = row.cells[index];
    var raw = cell.getAttribute('data-value');
    var num = parseFloat(raw);
    return { text: raw === null ? cell.textContent : raw, num: (raw === '' || isNaN(num)) ? null : num };
  }
  function sortTable(table, index, ascending) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a, index), y = cellValue(b, index);
      if (x.num === null && y.num === null) { return x.text.localeCompare(y.text) * (ascending ? 1 : -1); }
      if (x.num === null) { return 1; }
      if (y.num === null) { return -1; }
      return (x.num - y.num) * (ascending ? 1 : -1);
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.classList.remove('asc', 'desc');
      if (i === index) { th.classList.add(ascending ? 'asc' : 'desc'); }
    });
    table.setAttribute('data-sorted', table.tHead.rows[0].cells[index].getAttribute('data-column') + ':' +
                       (ascending ? 'asc' : 'desc'));
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      th.addEventListener('click', function () { sortTable(table, index, !th.classList.contains('asc')); });
    });
  });
  var match = /sort=([^:&]+)(?::(asc|desc))?/.exec(decodeURIComponent(window.location.hash));
  var table = document.getElementById('per-image-table');
  if (match && table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      if (th.getAttribute('data-column') === match[1]) { sortTable(table, index, match[2] !== 'desc'); }
    });
  }
  document.getElementById('js-status').setAttribute('data-ready', '1');
})();
"""

_ERROR_COLLECTOR = """
window.addEventListener('error', function (event) {
  var box = document.getElementById('js-errors');
  var text = 'error: ' + event.message + ' (' + event.filename + ':' + event.lineno + ')\\n';
  if (box) { box.textContent += text; } else { document.title = 'JS ERROR ' + text; }
});
"""


def build_report(run_dir: str | os.PathLike, metric: str = "jaccard", n_gallery: int = 4,
                 datalist: Mapping[str, Any] | None = None, workers: int | None = 1, progress: bool = False,
                 title: str | None = None) -> str:
    """The report page of a run's evaluation, as HTML text.

    Args:
        run_dir: a run folder (``bundle_root``) or its evaluation folder.
        metric: the per-image score the table, the histogram and the gallery go by (mean over channels).
        n_gallery: the worst and the best images shown.
        datalist: truth files for an evaluation without ``evaluation.json``.
        workers, progress: processes and a progress bar for drawing the gallery.
        title: the page's title.

    Raises:
        FileNotFoundError: no evaluation in ``run_dir``.
        ValueError: ``per_image.csv`` has no ``metric``.
    """
    from isic_monai.data.parallel import progress_map

    run_path, eval_dir = find_eval_dir(run_dir)
    summary = json.loads((eval_dir / "summary.json").read_text())
    columns, rows = read_per_image(eval_dir / "per_image.csv")
    record = _load_json(eval_dir / EVALUATION_FILE) or {}
    run_settings = read_run_settings(run_path)
    channel_names = record.get("channel_names") or run_settings.get("channel_names") or _channels_of(summary)
    scores = image_scores(rows, columns, metric, channel_names)
    worst, best = gallery_cases(scores, n_gallery)
    cases, pred_dir = _cases_by_image(eval_dir, datalist, channel_names)
    chosen = [(i, cases.get(rows[i]["image"]) or cases.get(Path(rows[i]["image"]).stem)) for i in worst + best]
    truth_known = all(c is not None for _, c in chosen)
    chosen = [(i, c or {"id": Path(rows[i]["image"]).stem, "image": rows[i]["image"], "truth": None,
                        "predictions": None}) for i, c in chosen]
    render = functools.partial(render_case, pred_dir=str(pred_dir) if pred_dir else None)
    pictures = progress_map(render, [c for _, c in chosen], workers=workers, progress=progress, desc="report",
                            unit="image")
    rendered = {i: picture for (i, _), picture in zip(chosen, pictures, strict=True)}

    def figures(indices: list[int], kind: str) -> str:
        out = []
        for rank, i in enumerate(indices, 1):
            uri = rendered.get(i)
            picture = f'<img src="{uri}" alt="{_e(Path(rows[i]["image"]).stem)}">' if uri else (
                '<p class="note">photo not found</p>')
            out.append(f'<figure class="case {kind}">{picture}<figcaption>{kind} #{rank}: '
                       f'{_e(Path(rows[i]["image"]).stem)}, {_e(metric)} {_fmt(scores[i])}</figcaption></figure>')
        return '<div class="gallery">' + "".join(out) + "</div>"

    has_pred = pred_dir is not None and pred_dir.is_dir()
    gallery_note = ("Each case: the photo, the truth over it, the prediction over it (colours per channel: "
                    + ", ".join(f"{n} {c}" for n, c in zip(channel_names, _COLOUR_NAMES, strict=False)) + ").")
    if not truth_known:
        gallery_note += " For some images no truth files are known (give the datalist: --datalist): no truth drawn."
    if not has_pred:
        gallery_note += (" The evaluation saved no predictions (evaluation.json is missing or save_eval_predictions "
                         "was false): the third picture is the bare photo.")
    curves_uri, curves_source = _curves_uri(run_path, channel_names)
    presence = attribute_presence(rows, columns, channel_names) if len(channel_names) > 1 else {}
    thresholds = _load_json(run_path / "models" / "thresholds.json")
    heading = title or f"Evaluation report: {run_path.resolve().name}"
    sections = [
        f"<h1>{_e(heading)}</h1>",
        f'<p class="note">Run folder <code>{_e(run_path.resolve())}</code>, evaluation <code>{_e(eval_dir.name)}/'
        f'</code>; {summary.get("n_images", len(rows))} images; channels {_e(", ".join(channel_names))}; '
        f'made {time.strftime("%Y-%m-%d %H:%M")}.</p>',
        '<div id="js-status" data-ready="0"></div><pre id="js-errors"></pre>',
        "<h2>Summary</h2>",
        _official_section(summary),
        "<h3>Per-image metrics: mean ± std over images</h3>",
        _summary_table(summary),
        f"<h2>Worst and best images by {_e(metric)}</h2>",
        f'<p class="note">{_e(gallery_note)}</p>',
        f"<h3>Worst {len(worst)}</h3>", figures(worst, "worst"),
        f"<h3>Best {len(best)}</h3>", figures(best, "best"),
        "<h2>Distributions</h2>",
        f'<div class="row"><img id="score-histogram" src="{_histogram_uri(scores, metric)}" alt="histogram">'
        + (f'<img id="attribute-chart" src="{_attribute_chart_uri(presence)}" alt="attributes">' if presence else "")
        + "</div>",
        "<h2>Confusion matrix (pixels, summed over the images; rows: truth)</h2>",
        _confusion_html(confusion_matrices(rows, columns, channel_names)),
        "<h2>Training curves</h2>",
        (f'<img id="training-curves" src="{curves_uri}" alt="training curves"><p class="note">{_e(curves_source)}</p>'
         if curves_uri else f'<p class="note">{_e(curves_source)}</p>'),
        f"<h2>Per-image table ({len(rows)} images; click a column to sort)</h2>",
        '<div class="scroll">' + _per_image_table(rows, columns, scores, metric) + "</div>",
        "<h2>Configuration</h2>",
        "<h3>Training (logs/run_settings.json)</h3>",
        _settings_table(run_settings, "run-settings") if run_settings else '<p class="note">not recorded</p>',
        "<h3>Evaluation</h3>",
        _settings_table(record.get("settings", {}), "eval-settings") if record.get("settings") else
        '<p class="note">not recorded (evaluation.json missing)</p>',
    ]
    if thresholds:
        sections += ["<h3>Thresholds (models/thresholds.json)</h3>",
                     _settings_table({k: thresholds.get(k) for k in ("channel_names", "thresholds", "criterion",
                                                                     "scores", "epoch")}, "thresholds")]
    for name, text in _config_files(run_path, eval_dir):
        sections.append(f"<details><summary>{_e(name)}</summary><pre>{_e(text)}</pre></details>")
    body = "\n".join(s for s in sections if s)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(heading)}</title>'
            f"<script>{_ERROR_COLLECTOR}</script><style>{_CSS}</style></head>\n<body>\n{body}\n"
            f"<script>{_JS}</script>\n</body></html>\n")


_COLOUR_NAMES = ("green", "red", "blue", "yellow", "magenta", "cyan")


def _channels_of(summary: Mapping[str, Any]) -> list[str]:
    for stats in summary.get("per_image", {}).values():
        if stats.get("channels"):
            return list(stats["channels"])
    return ["lesion"]


def write_report(run_dir: str | os.PathLike, output: str | os.PathLike, **kwargs: Any) -> Path:
    """Write :func:`build_report`'s page to ``output`` (folders created)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(build_report(run_dir, **kwargs), encoding="utf-8")
    return output
