"""Dataset tools: layouts, validation, datalists, resized caches, statistics and downloads.

Typical use (also from bundle configs)::

    from isic_monai.data import build_datalist, write_datalist, datalist_entries, prepare
    datalist = build_datalist("/data/ISIC2018")             # detect layout, validate, official splits
    write_datalist(datalist, "datalist.json")
    prepare("datalist.json", "/data/cache256", size=256)    # resized cache + cache/datalist.json
    train_files = datalist_entries("/data/cache256", "training")

Modules (each concern in one place; none of them imports MONAI at import time, only ``download`` when called):

- ``records``: ``Sample``, ``ParsedDataset``, ``Problem``, ``DataError``, ``DATALIST_KEYS``, problem reports.
- ``imageio``: Pillow helpers and the image/mask file extensions.
- ``parallel``: the one process-pool + progress-bar map.
- ``layouts``: ``LAYOUTS``, layout detection and parsing into samples.
- ``validate``: file checks that return problems (``check_image``, ``check_mask``, ``validate_samples``).
- ``datalist``: splits, writing and reading datalists (``read_datalist``, ``as_datalist``, ``datalist_entries``).
- ``prepare``, ``stats``, ``synth``, ``download``, ``sampling``: the resized cache, statistics, synthetic data,
  archives, Task 2 rare-attribute sampling.
"""

from __future__ import annotations

from isic_monai.data.datalist import (
    SPLIT_MODES,
    as_datalist,
    assign_splits,
    build_datalist,
    datalist_entries,
    fraction_subset,
    problems_path,
    read_datalist,
    seeded_order,
    write_datalist,
)
from isic_monai.data.download import DATASETS, Archive, download
from isic_monai.data.layouts import LAYOUTS, detect_layout, parse_dataset
from isic_monai.data.prepare import prepare
from isic_monai.data.records import DATALIST_KEYS, DataError, ParsedDataset, Problem, Sample, format_problems
from isic_monai.data.stats import compute_stats, format_stats, plot_stats
from isic_monai.data.validate import validate_samples

__all__ = [
    "DATALIST_KEYS",
    "DATASETS",
    "LAYOUTS",
    "SPLIT_MODES",
    "Archive",
    "DataError",
    "ParsedDataset",
    "Problem",
    "Sample",
    "as_datalist",
    "assign_splits",
    "build_datalist",
    "compute_stats",
    "datalist_entries",
    "detect_layout",
    "download",
    "format_problems",
    "format_stats",
    "fraction_subset",
    "parse_dataset",
    "plot_stats",
    "prepare",
    "problems_path",
    "read_datalist",
    "seeded_order",
    "validate_samples",
    "write_datalist",
]
