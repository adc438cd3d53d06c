"""Evaluation reports: one per-image table and a mean ± std summary from MONAI ``MetricsSaver`` output.

``MetricsSaver`` writes one ``<metric>_raw.csv`` (a row per image, a column per channel plus ``mean``) and one
``<metric>_summary.csv`` per metric. :func:`write_summary` joins the raw files into ``per_image.csv`` (a row per
image, a column per metric) and writes ``summary.json`` / ``summary.md`` with mean ± std per metric.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

RAW_SUFFIX = "_raw.csv"


def read_raw_metric(path: Path) -> dict[str, float]:
    """Read a ``<metric>_raw.csv`` as ``{image file: mean over channels}`` (NaN kept as NaN)."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f, delimiter=","))
    if not rows:
        return {}
    header = rows[0]
    col = header.index("mean") if "mean" in header else len(header) - 1
    return {row[0]: float(row[col]) for row in rows[1:] if row}


def mean_std(values: list[float]) -> tuple[float, float, int]:
    """Mean and population std over the finite values, and how many there were."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan"), 0
    mean = sum(finite) / len(finite)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite)), len(finite)


def write_summary(output_dir: str | Path) -> dict[str, dict[str, float]]:
    """Join the ``*_raw.csv`` files of a MetricsSaver folder into ``per_image.csv``, ``summary.json/.md``.

    Args:
        output_dir: the folder ``MetricsSaver`` wrote to.

    Returns:
        ``{metric: {"mean": m, "std": s, "n": n}}``, also written to ``summary.json``.

    Raises:
        FileNotFoundError: no ``*_raw.csv`` in the folder (the evaluation saved no per-image metrics).
    """
    out = Path(output_dir)
    raw_files = sorted(out.glob(f"*{RAW_SUFFIX}"))
    if not raw_files:
        raise FileNotFoundError(f"{out}: no per-image metric files (*{RAW_SUFFIX}) to summarise")
    metrics = {p.name[: -len(RAW_SUFFIX)]: read_raw_metric(p) for p in raw_files}
    images = sorted({name for values in metrics.values() for name in values})
    with (out / "per_image.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", *metrics])
        for image in images:
            writer.writerow([image, *(metrics[m].get(image, float("nan")) for m in metrics)])
    summary = {}
    for name, values in metrics.items():
        mean, std, n = mean_std(list(values.values()))
        summary[name] = {"mean": mean, "std": std, "n": n}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = ["| metric | mean ± std | n |", "|---|---|---|"]
    lines += [f"| {k} | {v['mean']:.4f} ± {v['std']:.4f} | {v['n']} |" for k, v in summary.items()]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return summary
