"""The checkpoint record: what a ``model.pt`` was trained for, saved with the weights and checked on loading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["CheckpointInfo", "load_checkpoint", "read_checkpoint_info"]


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
