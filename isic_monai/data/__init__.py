"""Dataset tools: layouts, validation, datalists, resized caches, statistics and downloads.

Typical use (also from bundle configs)::

    from isic_monai.data import build_datalist, write_datalist, load_datalist, prepare
    datalist = build_datalist("/data/ISIC2018")             # detect layout, validate, official splits
    write_datalist(datalist, "datalist.json")
    prepare("datalist.json", "/data/cache256", size=256)    # resized cache + cache/datalist.json
    train_files = load_datalist("/data/cache256", "training")

Nothing here imports MONAI at import time (``load_datalist`` and ``download`` import it when called).
"""

from __future__ import annotations

from isic_monai.data.datalist import (
    SPLIT_MODES,
    assign_splits,
    build_datalist,
    fraction_subset,
    load_datalist,
    problems_path,
    read_datalist,
    seeded_order,
    write_datalist,
)
from isic_monai.data.download import DATASETS, Archive, download
from isic_monai.data.layouts import LAYOUTS, SPLITS, ParsedDataset, Sample, detect_layout, parse_dataset
from isic_monai.data.prepare import load_source, prepare
from isic_monai.data.stats import compute_stats, format_stats, plot_stats
from isic_monai.data.validate import DataError, Problem, format_problems, validate_samples

__all__ = [
    "DATASETS",
    "LAYOUTS",
    "SPLITS",
    "SPLIT_MODES",
    "Archive",
    "DataError",
    "ParsedDataset",
    "Problem",
    "Sample",
    "assign_splits",
    "build_datalist",
    "compute_stats",
    "detect_layout",
    "download",
    "format_problems",
    "format_stats",
    "fraction_subset",
    "load_datalist",
    "load_source",
    "parse_dataset",
    "plot_stats",
    "prepare",
    "problems_path",
    "read_datalist",
    "seeded_order",
    "validate_samples",
    "write_datalist",
]
