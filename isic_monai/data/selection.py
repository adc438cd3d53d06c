"""The entries a bundle run uses: where the data comes from, which split, and clear errors when there is none.

The bundle's ``datalist`` id evaluates :func:`resolve_datalist`, so a user can point the bundle at a prepared
datalist JSON (``--datalist_file``), at any supported dataset folder (``--dataset_dir``), or at nothing, in which case
the run stops with a message naming the ways to get data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from isic_monai import ATTRIBUTES
from isic_monai.data.records import IsicMonaiError

NO_DATA_MESSAGE = """no training data: the bundle needs one of
  --datalist_file PATH   a datalist JSON made by `isic-monai datalist ROOT -o PATH` (or `isic-monai prepare`)
  --dataset_dir DIR      a folder in any supported layout (ISIC 2016/2017/2018, HAM10000, PH2, images/+masks/)
To get data: `isic-monai synth data/synth --layout isic2018 --n 200` writes synthetic ISIC 2018 data,
`isic-monai download --dataset isic2018 --dest data/` fetches the official archives (see docs/data.md)."""


class BundleDataError(IsicMonaiError, RuntimeError):
    """The bundle was started without usable data; the message says how to provide it."""


def load_datalist(path: str | Path) -> dict[str, Any]:
    """Read a datalist JSON with :func:`isic_monai.data.datalist.read_datalist` (the one reader), as the bundle
    needs it: a ``training`` or ``validation`` list, errors that say how to get data.

    Raises:
        BundleDataError: the file is missing, is not JSON, or holds no list of entries.
    """
    from isic_monai.data.datalist import read_datalist
    from isic_monai.data.records import DataError

    try:
        return read_datalist(path, require_one_of=("training", "validation"))
    except DataError as err:
        hint = f"\n\n{NO_DATA_MESSAGE}" if err.problems[0].kind == "not_found" else ""
        raise BundleDataError(f"{err}{hint}") from err


def resolve_datalist(
    datalist_file: str | Path | None = None,
    dataset_dir: str | Path | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, Any]:
    """The datalist a bundle run uses.

    A datalist file wins over a dataset folder. A folder is parsed with :mod:`isic_monai.data` (layout detected,
    official splits kept, a seeded ``1 - val_fraction`` / ``val_fraction`` split where the layout has none).

    Raises:
        BundleDataError: neither is given, or the given one holds no usable data.
    """
    if datalist_file:
        return load_datalist(datalist_file)
    if dataset_dir:
        if not Path(dataset_dir).is_dir():
            raise BundleDataError(f"{dataset_dir}: dataset_dir is not a folder\n\n{NO_DATA_MESSAGE}")
        from isic_monai.data.datalist import build_datalist

        ratios = (1.0 - val_fraction, val_fraction)
        return build_datalist(dataset_dir, ratios=ratios, seed=seed)
    raise BundleDataError(NO_DATA_MESSAGE)


def select(datalist: dict[str, Any], split: str, require_labels: bool = True) -> list[dict[str, Any]]:
    """The entries of one split, checked to be non-empty (and labelled when ``require_labels``).

    Raises:
        BundleDataError: the split is empty or has unlabelled entries where labels are needed.
    """
    entries = list(datalist.get(split) or [])
    if not entries:
        raise BundleDataError(f"the datalist has no '{split}' entries\n\n{NO_DATA_MESSAGE}")
    if require_labels:
        unlabelled = [e.get("image") for e in entries if "label" not in e and not has_attributes(e)]
        if unlabelled:
            raise BundleDataError(f"{len(unlabelled)} '{split}' entries have no label, e.g. {unlabelled[0]}")
    return entries


def has_attributes(entry: dict[str, Any]) -> bool:
    """Whether a datalist entry carries Task 2 attribute keys."""
    return any(f"attribute_{name}" in entry for name in ATTRIBUTES)


def require_attributes(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check every entry has the Task 2 attribute keys (a Task 1-only datalist cannot train Task 2).

    Raises:
        BundleDataError: naming the first entry without attributes.
    """
    for entry in entries:
        if not has_attributes(entry):
            raise BundleDataError(
                f"{entry.get('image')}: no attribute_<name> keys; Task 2 needs a dataset with ISIC 2018 Task 2 "
                "ground truth (ISIC2018_Task2_Training_GroundTruth_v3) or `isic-monai synth --layout isic2018`"
            )
    return entries


def original_labels(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Point entries made by ``isic-monai prepare`` back at their full-size masks for evaluation.

    ``prepare`` keeps the source masks as ``<key>_orig``; evaluation compares the prediction, mapped back to
    ``orig_size``, with those. When some mask of an entry has no full-size original (``prepare`` keeps none for
    attribute masks), the entry is evaluated at the cache size instead (``orig_size`` dropped).
    """
    out = []
    for entry in entries:
        entry = dict(entry)
        labels = [k for k in entry if k == "label" or k.startswith("attribute_")]
        labels = [k for k in labels if not k.endswith("_orig") and entry[k] is not None]
        if labels and all(f"{k}_orig" in entry for k in labels):
            for key in labels:
                entry[key] = entry[f"{key}_orig"]
        else:
            entry.pop("orig_size", None)  # some masks exist only at the cache size: evaluate there
        out.append(entry)
    return out


