"""``isic-monai compare RUN_DIR... -o OUT``: one CSV and one plot comparing evaluated runs.

Each RUN_DIR is a run folder (``bundle_root``, its evaluation in ``eval/``) or an evaluation folder itself (one
holding ``summary.json``, e.g. ``runs/x/eval_tta``). A run is described by its settings, ``logs/run_settings.json``
(what training recorded: network, size, epochs, learning rate, loss, training fraction, image counts, ...) and the
evaluation's ``evaluation.json`` settings (split, test-time augmentation, ensemble, thresholds, clean-up), with the
network taken from the evaluated checkpoint itself (:func:`recorded_network`: the ``network_name`` its ``model.pt``
records and the number of values in its weights, so runs group by the network that was built), and scored by its
``summary.json``: the per-image means and standard deviations per metric and channel and the
set-level scores (the official ISIC 2018 Task 2 ``overall`` when present).

``comparison.csv`` has one row per run: its name and folder, the settings that differ between the runs, then every
score. ``comparison.png`` plots the main scores: against the training fraction, one line per other setting
(U-Net vs U-Net++ at 10-100 % of the data, say), when the runs differ in training fraction; else as bars per run,
with the standard deviation over images as error bars.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from isic_monai.engines.tracking import read_run_settings

__all__ = [
    "MAIN_METRICS",
    "compare_runs",
    "differing_settings",
    "format_comparison",
    "load_run",
    "plot_comparison",
    "recorded_network",
    "run_metrics",
    "write_comparison",
]

MAIN_METRICS = ("jaccard", "dice", "thresholded_jaccard", "set_overall")
"""The scores plotted, those every run has, in this order (at most three)."""

FRACTION = "training_fraction"
PER_RUN_SETTINGS = ("datalist_file", "dataset_dir", "load_path", "thresholds_file", "n_training", "n_validation")
"""Settings that differ from run to run by nature (paths, and image counts that follow the fraction): in the CSV,
not in the plot's legends."""


def _find_eval_dir(path: Path) -> tuple[Path, Path]:
    from isic_monai.results.html_report import find_eval_dir

    return find_eval_dir(path)


def run_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """Flat scores of a ``summary.json``: ``<metric>``, ``<metric>_std``, ``<metric>_<channel>`` (per-image means),
    the set-level values and ``set_overall`` / ``set_mean_jaccard`` (official Task 2 scores)."""
    out: dict[str, float] = {}
    for metric, stats in summary.get("per_image", {}).items():
        out[metric] = stats["mean"]
        out[f"{metric}_std"] = stats["std"]
        for channel, cstats in stats.get("channels", {}).items():
            out[f"{metric}_{channel}"] = cstats["mean"]
    for key, value in summary.get("set_level", {}).items():
        out.setdefault(key, value)
    scores = summary.get("set_scores")
    if scores:
        out["set_overall"] = scores["overall"]
        out["set_mean_jaccard"] = scores["mean_jaccard"]
    return {k: float(v) if v is not None else float("nan") for k, v in out.items()}


def recorded_network(run_dir: str | os.PathLike, load_path: str | None = None) -> dict[str, Any]:
    """The network of a run's evaluated checkpoint: ``{"network_name": ..., "network_weights": ...}``, the name its
    ``model.pt`` records and the number of values in its weights (parameters and buffers), or ``{}`` without one.

    Args:
        run_dir: the run folder; its ``models/model.pt`` is read unless ``load_path``, the evaluation's recorded
            checkpoint, is an absolute path to an existing file.

    Raises:
        ValueError: the checkpoint cannot be read (the message names it).
    """
    from isic_monai.bundle.checkpoint import load_checkpoint

    path = Path(load_path) if load_path and Path(load_path).is_absolute() else Path(run_dir) / "models" / "model.pt"
    if not path.is_file():
        return {}
    ckpt = load_checkpoint(path)
    out: dict[str, Any] = {}
    name = dict(ckpt.get("config", {})).get("network_name")
    if name:
        out["network_name"] = str(name)
    out["network_weights"] = sum(int(v.numel()) for v in ckpt["model"].values() if hasattr(v, "numel"))
    return out


def load_run(path: str | os.PathLike) -> dict[str, Any]:
    """A run's name, folders, settings and scores.

    Raises:
        FileNotFoundError: no evaluation in ``path``.
    """
    from isic_monai.results.html_report import EVALUATION_FILE

    run_dir, eval_dir = _find_eval_dir(Path(path))
    summary = json.loads((eval_dir / "summary.json").read_text())
    record_path = eval_dir / EVALUATION_FILE
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    settings = dict(record.get("settings", {}))
    settings.update(read_run_settings(run_dir))
    settings.update(recorded_network(run_dir, settings.get("load_path")))  # the evaluated weights' own record
    name = run_dir.resolve().name if eval_dir.name == "eval" else f"{run_dir.resolve().name}/{eval_dir.name}"
    return {"name": name, "path": str(eval_dir), "settings": settings, "metrics": run_metrics(summary),
            "n_images": summary.get("n_images")}


def differing_settings(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The setting names whose values are not the same in every run (an absent one counts as ``None``)."""
    names: list[str] = []
    for run in runs:
        names += [k for k in run["settings"] if k not in names]
    return [k for k in names if len({json.dumps(r["settings"].get(k), sort_keys=True) for r in runs}) > 1]


def compare_runs(paths: Sequence[str | os.PathLike]) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Load the runs: ``(runs, differing setting names, score names)`` (main scores first).

    Raises:
        ValueError: fewer than one run.
    """
    if not paths:
        raise ValueError("no run to compare")
    runs = [load_run(p) for p in paths]
    seen: dict[str, int] = {}
    for run in runs:  # unique names: the folder path where two share a name
        seen[run["name"]] = seen.get(run["name"], 0) + 1
    for run in runs:
        if seen[run["name"]] > 1:
            run["name"] = run["path"]
    metrics: list[str] = [m for m in MAIN_METRICS if any(m in r["metrics"] for r in runs)]
    for run in runs:
        metrics += [m for m in run["metrics"] if m not in metrics]
    return runs, differing_settings(runs), metrics


def _cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return "" if value is None else value


def write_comparison(runs: Sequence[Mapping[str, Any]], settings: Sequence[str], metrics: Sequence[str],
                     path: str | os.PathLike) -> Path:
    """``comparison.csv``: run, folder, the differing settings, every score."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "path", *settings, *metrics])
        for run in runs:
            writer.writerow([run["name"], run["path"], *(_cell(run["settings"].get(s)) for s in settings),
                             *(_cell(run["metrics"].get(m, float("nan"))) for m in metrics)])
    return path


def _label(run: Mapping[str, Any], settings: Sequence[str], most: int = 3) -> str:
    """A run's legend: its differing settings (the training fraction aside) when few, else its name."""
    parts = [f"{s}={_cell(run['settings'].get(s))}" for s in settings if s != FRACTION and s not in PER_RUN_SETTINGS]
    return ", ".join(parts) if parts and len(parts) <= most else run["name"]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_comparison(runs: Sequence[Mapping[str, Any]], settings: Sequence[str], path: str | os.PathLike,
                    metrics: Sequence[str] | None = None) -> Path:
    """``comparison.png``: the main scores per run (bars), or against the training fraction (lines).

    Args:
        runs, settings: :func:`compare_runs`'s runs and differing settings.
        path: the PNG.
        metrics: the scores to plot (default: the :data:`MAIN_METRICS` every run has, at most three).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = list(metrics or [m for m in MAIN_METRICS if all(m in r["metrics"] for r in runs)][:3])
    if not metrics:
        raise ValueError("the runs share none of the scores " + ", ".join(MAIN_METRICS))
    by_fraction = FRACTION in settings and all(_is_number(r["settings"].get(FRACTION)) for r in runs)
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(5.0, 1.2 * len(runs) + 3.0) * len(metrics) / 1.6, 4.2),
                             dpi=100, squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        if by_fraction:
            groups: dict[str, list[Mapping[str, Any]]] = {}
            for run in runs:
                groups.setdefault(_label(run, settings), []).append(run)
            for label, members in groups.items():
                members = sorted(members, key=lambda r: r["settings"][FRACTION])
                x = [100.0 * r["settings"][FRACTION] for r in members]
                y = [r["metrics"][metric] for r in members]
                err = [r["metrics"].get(f"{metric}_std", 0.0) for r in members]
                ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
            ax.set(xlabel="training data (%)", ylabel=metric, title=metric)
            ax.legend(fontsize=8)
        else:
            x = np.arange(len(runs))
            y = [r["metrics"][metric] for r in runs]
            err = [r["metrics"].get(f"{metric}_std", 0.0) for r in runs]
            ax.bar(x, y, yerr=err, capsize=4, color=[f"C{i % 10}" for i in range(len(runs))])
            for xi, yi in zip(x, y, strict=True):
                ax.annotate(f"{yi:.3f}", (xi, yi), ha="center", va="bottom", fontsize=8, xytext=(0, 2),
                            textcoords="offset points")
            labels = [r["name"] if _label(r, settings) == r["name"] else f"{r['name']}\n{_label(r, settings)}"
                      for r in runs]
            ax.set_xticks(x, labels, fontsize=7, rotation=20, ha="right")
            ax.set(ylabel=metric, title=metric, ylim=(0, 1.05))
        ax.grid(alpha=0.3, axis="y")
    from isic_monai.results.pictures import save_figure

    return save_figure(fig, path)


def format_comparison(runs: Sequence[Mapping[str, Any]], settings: Sequence[str], metrics: Sequence[str]) -> str:
    """A plain-text table: run, differing settings and the main scores."""
    main = [m for m in metrics if m in MAIN_METRICS]
    header = ["run", *settings, *main]
    lines = [header] + [[run["name"], *(str(_cell(run["settings"].get(s))) for s in settings),
                         *(f"{run['metrics'].get(m, float('nan')):.4f}" for m in main)] for run in runs]
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in lines) + "\n"
