"""Helpers the bundle configs call: where the data comes from, and clear errors when it does not.

The bundle's ``datalist`` id evaluates :func:`resolve_datalist`, so a user can point the bundle at a prepared
datalist JSON (``--datalist_file``), at any supported dataset folder (``--dataset_dir``), or at nothing, in which case
the run stops with a message naming the ways to get data.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from isic_monai import ATTRIBUTES

logger = logging.getLogger(__name__)

NO_DATA_MESSAGE = """no training data: the bundle needs one of
  --datalist_file PATH   a datalist JSON made by `isic-monai datalist ROOT -o PATH` (or `isic-monai prepare`)
  --dataset_dir DIR      a folder in any supported layout (ISIC 2016/2017/2018, HAM10000, PH2, images/+masks/)
To get data: `isic-monai synth data/synth --layout isic2018 --n 200` writes synthetic ISIC 2018 data,
`isic-monai download --dataset isic2018 --dest data/` fetches the official archives (see docs/data.md)."""


class BundleDataError(RuntimeError):
    """The bundle was started without usable data; the message says how to provide it."""


def load_datalist(path: str | Path) -> dict[str, Any]:
    """Read a datalist JSON (Decathlon-style) and check it has the lists the bundle needs.

    Args:
        path: the datalist file.

    Returns:
        The datalist dict with ``training``, ``validation`` and ``testing`` lists (absent ones empty).

    Raises:
        BundleDataError: the file is missing, is not JSON, or holds no list of entries.
    """
    path = Path(path)
    if not path.is_file():
        raise BundleDataError(f"{path}: datalist file not found\n\n{NO_DATA_MESSAGE}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BundleDataError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict) or not any(isinstance(data.get(k), list) for k in ("training", "validation")):
        raise BundleDataError(f"{path}: a datalist needs a 'training' or 'validation' list of entries")
    for key in ("training", "validation", "testing"):
        data.setdefault(key, [])
    return data


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


def check_size(image_size: list[int] | tuple[int, ...], multiple: int) -> list[int]:
    """Validate the configured training size against the network's required multiple.

    Raises:
        ValueError: naming the size and the multiple.
    """
    size = [int(s) for s in image_size]
    if len(size) != 2 or any(s <= 0 for s in size):
        raise ValueError(f"image_size must be two positive integers, got {image_size}")
    if any(s % int(multiple) for s in size):
        raise ValueError(f"image_size {size}: each side must be a multiple of {multiple} for this network")
    return size


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


class CheckpointInfo:
    """What a checkpoint was trained for, saved beside the weights in ``model.pt`` under the key ``config``.

    Ignite's ``Checkpoint`` stores a single object's state dict without a key; saving this record with the network
    makes ``model.pt`` the keyed ``{"model": ..., "config": ...}`` layout that MONAI Label and ``ckpt_export
    --key_in_ckpt model`` expect. Loading it back (put it before ``model`` in a ``CheckpointLoader``'s
    ``load_dict``) checks that the configuration matches the checkpoint, so a model trained at one size is never
    silently run at another. Plain lists and strings only, so ``torch.load(..., weights_only=True)`` reads it.

    Args:
        channel_names: output channel names in order.
        image_size: the training spatial size.
        network_name: the network override the model was built from (``configs/networks/<name>.yaml``).
        source: the checkpoint file this record is loaded from, named in messages.
    """

    def __init__(self, channel_names: list[str], image_size: list[int], network_name: str | None = None,
                 source: str | Path | None = None) -> None:
        self.source = source
        self.info: dict[str, Any] = {
            "channel_names": [str(c) for c in channel_names],
            "image_size": [int(s) for s in image_size],
        }
        if network_name is not None:
            self.info["network_name"] = str(network_name)

    def state_dict(self) -> dict[str, Any]:
        """The record, as saved."""
        return dict(self.info)

    def mismatches(self, state: dict[str, Any]) -> list[str]:
        """How a saved record disagrees with this configuration, one line per setting (empty: they agree).

        Settings the record lacks (checkpoints older than the field) are not compared.
        """
        lines = []
        for key in ("channel_names", "image_size", "network_name"):
            saved, configured = state.get(key), self.info.get(key)
            if saved is None or configured is None or _plain(saved) == _plain(configured):
                continue
            hint = f" (run with --image_size \"{json.dumps(_plain(saved))}\")" if key == "image_size" else ""
            lines.append(f"{key}: checkpoint {_plain(saved)}, config {_plain(configured)}{hint}")
        return lines

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Check a loaded record matches this configuration.

        Raises:
            ValueError: naming each setting where checkpoint and config disagree, with both values.
        """
        wrong = self.mismatches(state)
        if wrong:
            where = f"checkpoint {self.source}" if self.source else "the checkpoint"
            raise ValueError(f"{where} was trained with other settings than this config:\n  " + "\n  ".join(wrong))


def _plain(value: Any) -> Any:
    """Lists and tuples (a torch-loaded record may hold either) as lists, for comparison and messages."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint read with ``weights_only=True`` (a bare state dict comes back as ``{"model": ...}``).

    Raises:
        ValueError: the file cannot be read as a checkpoint (the message names it).
    """
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged or unsafe files
        raise ValueError(f"{path}: cannot be read as a checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: not a checkpoint dict ({type(ckpt).__name__})")
    return ckpt if "model" in ckpt else {"model": ckpt}


def read_checkpoint_info(path: str | Path) -> dict[str, Any]:
    """The ``config`` record of a ``model.pt`` (empty when the checkpoint has none).

    Raises:
        ValueError: the file cannot be read as a checkpoint (the message names it).
    """
    return dict(load_checkpoint(path).get("config", {}))


def attribute_presence(entry: dict[str, Any]) -> list[bool]:
    """Which Task 2 attributes an entry's masks show (a mask file with any foreground pixel)."""
    from PIL import Image

    present = []
    for name in ATTRIBUTES:
        path = entry.get(f"attribute_{name}")
        if path is None:
            present.append(False)
            continue
        with Image.open(path) as img:
            present.append(img.convert("L").getbbox() is not None)
    return present


def rare_attribute_weights(entries: list[dict[str, Any]], power: float = 1.0) -> list[float]:
    """Sampling weights that favour images showing rare attributes.

    An image's weight is ``(1 / frequency) ** power`` of the rarest attribute it shows (images showing none count
    as their own group), so each attribute group is drawn about equally often when ``power`` is 1.
    """
    presence = [attribute_presence(e) for e in entries]
    n = max(1, len(presence))
    freq = [sum(p[i] for p in presence) / n for i in range(len(ATTRIBUTES))]
    none_freq = sum(not any(p) for p in presence) / n
    weights = []
    for p in presence:
        shown = [freq[i] for i, flag in enumerate(p) if flag]
        weights.append((1.0 / min(shown) if shown else 1.0 / max(none_freq, 1e-6)) ** power)
    return weights


def rare_attribute_sampler(entries: list[dict[str, Any]], seed: int = 0, power: float = 1.0):
    """A ``WeightedRandomSampler`` over :func:`rare_attribute_weights` (with replacement, len(entries) per epoch)."""
    import torch

    generator = torch.Generator().manual_seed(int(seed))
    weights = rare_attribute_weights(entries, power)
    return torch.utils.data.WeightedRandomSampler(weights, num_samples=len(entries), replacement=True,
                                                  generator=generator)


def check_settings(**settings: Any) -> dict[str, Any]:
    """Validate the bundle's numeric settings before any work starts.

    Known keys: ``max_epochs``, ``batch_size``, ``val_interval`` (positive integers), ``learning_rate`` (> 0),
    ``val_fraction`` (in [0, 1)), ``threshold`` (in (0, 1)). Unknown keys are ignored.

    Returns:
        The settings, unchanged.

    Raises:
        ValueError: naming every setting that is wrong, its value and what it must be.
    """
    rules = {
        "max_epochs": (lambda v: isinstance(v, int) and v >= 1, "a positive integer"),
        "batch_size": (lambda v: isinstance(v, int) and v >= 1, "a positive integer"),
        "val_interval": (lambda v: isinstance(v, int) and v >= 1, "a positive integer"),
        "learning_rate": (lambda v: isinstance(v, (int, float)) and v > 0, "a number > 0"),
        "val_fraction": (lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "a number in [0, 1)"),
        "threshold": (lambda v: isinstance(v, (int, float)) and 0 < v < 1, "a number in (0, 1)"),
    }
    wrong = [
        f"--{key} {value!r}: must be {rules[key][1]}"
        for key, value in settings.items()
        if key in rules and (isinstance(value, bool) or not rules[key][0](value))
    ]
    if wrong:
        raise ValueError("invalid bundle settings:\n  " + "\n  ".join(wrong))
    return settings
