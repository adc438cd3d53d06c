"""Dataset statistics: counts, image sizes, lesion fraction and Task 2 attribute distribution (text, JSON, PNG).

JSON keys (see ``docs/data.md`` for an example):

- ``counts``: entries per list, ``labelled``, ``unlabelled`` and ``total``.
- ``image_size``: ``height``/``width`` min/median/max over all images, ``distinct`` sizes, ``square`` images.
- ``lesion_fraction``: lesion pixels / image pixels per labelled image: min/median/max/mean, ``empty`` masks.
- ``attributes`` (Task 2 datalists only), per attribute: ``files`` (attribute files present), ``missing_files``
  (null entries), ``present`` (images whose mask is non-empty), ``present_fraction`` (present / labelled images),
  ``pixel_share`` (attribute pixels / all pixels of the images with a file), ``lesion_share`` (attribute pixels
  / lesion pixels), ``attribute_share`` (this attribute's pixels / all attributes' pixels).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isic_monai import ATTRIBUTES
from isic_monai.data.datalist import as_datalist, source_text
from isic_monai.data.imageio import displayed_size, open_image
from isic_monai.data.masks import read_mask
from isic_monai.data.parallel import progress_map
from isic_monai.data.records import DATALIST_KEYS

__all__ = ["compute_stats", "entry_stats", "format_stats", "plot_stats"]

_POOL_MIN_ENTRIES = 65
"""Fewer entries are decoded in this process even with ``workers > 1`` (a pool costs more than it saves)."""


def entry_stats(entry: dict[str, Any]) -> dict[str, Any]:
    """Size (as displayed: EXIF orientation applied), lesion pixels and attribute pixels of one datalist entry (masks
    are decoded).

    Args:
        entry: a datalist entry.

    Returns:
        ``{"hw": [H, W], "lesion": int | None, "attributes": {name: int | None}}`` (None: no file).
    """
    with open_image(entry["image"]) as img:
        h, w = displayed_size(img)
    out: dict[str, Any] = {"hw": [h, w], "lesion": None, "attributes": {}}
    if entry.get("label"):
        out["lesion"] = int(read_mask(entry["label"]).sum())
    for name in ATTRIBUTES:
        key = f"attribute_{name}"
        if key in entry:
            out["attributes"][name] = int(read_mask(entry[key]).sum()) if entry[key] else None
    return out


def _summary(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "median": None, "max": None, "mean": None}
    arr = np.asarray(values, dtype=float)
    return {"min": float(arr.min()), "median": float(np.median(arr)), "max": float(arr.max()),
            "mean": float(arr.mean())}


def _attribute_stats(per: list[dict[str, Any]], n_labelled: int) -> dict[str, dict[str, Any]]:
    totals = {name: 0 for name in ATTRIBUTES}
    result: dict[str, dict[str, Any]] = {}
    for name in ATTRIBUTES:
        rows = [r for r in per if name in r["attributes"]]
        if not rows:
            continue
        with_file = [r for r in rows if r["attributes"][name] is not None]
        pixels = sum(r["attributes"][name] for r in with_file)
        area = sum(r["hw"][0] * r["hw"][1] for r in with_file)
        lesion = sum(r["lesion"] or 0 for r in with_file)
        totals[name] = pixels
        present = sum(1 for r in with_file if r["attributes"][name] > 0)
        result[name] = {
            "files": len(with_file),
            "missing_files": len(rows) - len(with_file),
            "present": present,
            "present_fraction": present / n_labelled if n_labelled else 0.0,
            "pixel_share": pixels / area if area else 0.0,
            "lesion_share": pixels / lesion if lesion else 0.0,
        }
    all_pixels = sum(totals.values())
    for name, row in result.items():
        row["attribute_share"] = totals[name] / all_pixels if all_pixels else 0.0
    return result


def compute_stats(source: str | os.PathLike | dict[str, Any], *, workers: int = 1,
                  **build_kwargs: Any) -> dict[str, Any]:
    """Statistics of a dataset root, a datalist file/folder, or a datalist dict.

    Args:
        source: dataset root, datalist JSON (or folder with ``datalist.json``) or datalist dict (read by
            :func:`~isic_monai.data.datalist.as_datalist`).
        workers: processes used to decode masks (a pool only from 65 entries on).
        **build_kwargs: :func:`~isic_monai.data.datalist.build_datalist` options for a dataset root.

    Returns:
        A JSON-serialisable dict (keys described in the module docstring).
    """
    datalist, src = as_datalist(source, **build_kwargs), source_text(source)
    entries = [e for k in DATALIST_KEYS for e in datalist.get(k, [])]
    per = progress_map(entry_stats, entries, workers=workers, min_pool_items=_POOL_MIN_ENTRIES)
    labelled = [r for r in per if r["lesion"] is not None]
    hws = np.asarray([r["hw"] for r in per], dtype=float).reshape(-1, 2)
    fractions = [r["lesion"] / (r["hw"][0] * r["hw"][1]) for r in labelled]
    counts = {k: len(datalist.get(k, [])) for k in DATALIST_KEYS}
    counts.update(labelled=len(labelled), unlabelled=len(per) - len(labelled), total=len(per))
    return {
        "source": src,
        "layout": datalist.get("metadata", {}).get("layout"),
        "counts": counts,
        "image_size": {
            "height": {k: v for k, v in _summary(hws[:, 0].tolist()).items() if k != "mean"},
            "width": {k: v for k, v in _summary(hws[:, 1].tolist()).items() if k != "mean"},
            "distinct": len({tuple(r["hw"]) for r in per}),
            "square": sum(1 for r in per if r["hw"][0] == r["hw"][1]),
        },
        "lesion_fraction": {**_summary(fractions), "empty": sum(1 for f in fractions if f == 0)},
        "attributes": _attribute_stats(per, len(labelled)),
    }


def _fmt(value: float | None, pattern: str = "{:.0f}") -> str:
    return "-" if value is None else pattern.format(value)


def format_stats(stats: dict[str, Any]) -> str:
    """Human-readable text of :func:`compute_stats` output."""
    c, size, lf = stats["counts"], stats["image_size"], stats["lesion_fraction"]
    lines = [
        f"source: {stats['source']} (layout {stats.get('layout') or '?'})",
        f"images: {c['total']} (training {c['training']}, validation {c['validation']}, testing {c['testing']}; "
        f"labelled {c['labelled']}, unlabelled {c['unlabelled']})",
        f"image size HxW: {_fmt(size['height']['min'])}..{_fmt(size['height']['max'])} x "
        f"{_fmt(size['width']['min'])}..{_fmt(size['width']['max'])} (median {_fmt(size['height']['median'])} x "
        f"{_fmt(size['width']['median'])}; {size['distinct']} distinct, {size['square']} square)",
        f"lesion fraction: min {_fmt(lf['min'], '{:.3f}')}, median {_fmt(lf['median'], '{:.3f}')}, "
        f"max {_fmt(lf['max'], '{:.3f}')} ({lf['empty']} empty masks)",
    ]
    if stats["attributes"]:
        lines.append(f"{'attribute':<18} {'files':>6} {'missing':>7} {'present':>7} {'% imgs':>7} {'% pixels':>8}")
        for name, row in stats["attributes"].items():
            lines.append(f"{name:<18} {row['files']:>6} {row['missing_files']:>7} {row['present']:>7} "
                         f"{100 * row['present_fraction']:>6.1f}% {100 * row['pixel_share']:>7.2f}%")
    return "\n".join(lines)


def plot_stats(stats: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a PNG bar chart: attribute presence and pixel share (or, without Task 2, lesion-fraction bins).

    Args:
        stats: output of :func:`compute_stats`.
        path: PNG file to write.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    attrs = stats["attributes"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    if attrs:
        names = list(attrs)
        axes[0].bar(names, [attrs[n]["present"] for n in names], color="tab:blue")
        axes[0].set_title(f"images with the attribute (of {stats['counts']['labelled']})")
        axes[1].bar(names, [100 * attrs[n]["pixel_share"] for n in names], color="tab:orange")
        axes[1].set_title("attribute pixels (% of image pixels)")
        for ax in axes:
            ax.tick_params(axis="x", rotation=30)
    else:
        lf = stats["lesion_fraction"]
        axes[0].bar(list(DATALIST_KEYS), [stats["counts"][k] for k in DATALIST_KEYS], color="tab:blue")
        axes[0].set_title("images per list")
        axes[1].bar(["min", "median", "max"], [100 * (lf[k] or 0) for k in ("min", "median", "max")],
                    color="tab:orange")
        axes[1].set_title("lesion fraction (% of image) - no Task 2 attributes")
    fig.suptitle(f"{stats.get('layout') or 'dataset'}: {stats['counts']['total']} images")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
