"""The checkpoint record: what a ``model.pt`` was trained for, saved with the weights and checked on loading."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import CheckpointLoader as _MonaiCheckpointLoader
from monai.handlers import CheckpointSaver as _MonaiCheckpointSaver

from isic_monai.data.atomic import PARTIAL_GLOB, write_atomic

__all__ = [
    "AtomicDiskSaver",
    "CheckpointInfo",
    "CheckpointLoader",
    "CheckpointSaver",
    "atomic_torch_save",
    "checkpoint_epoch",
    "load_checkpoint",
    "read_checkpoint",
    "read_checkpoint_info",
    "training_space_needed",
]


class CheckpointInfo:
    """What a checkpoint was trained for, saved beside the weights in ``model.pt`` under the key ``config``.

    Ignite's ``Checkpoint`` stores a single object's state dict without a key; saving this record with the network
    makes ``model.pt`` the keyed ``{"model": ..., "config": ...}`` layout that MONAI Label and ``ckpt_export
    --key_in_ckpt model`` expect. Loading it back (put it before ``model`` in a ``CheckpointLoader``'s
    ``load_dict``) checks that the configuration matches the checkpoint, so a model trained at one size is never
    silently run at another. Plain lists and strings only, so ``torch.load(..., weights_only=True)`` reads it.

    When a :class:`CheckpointSaver` saves it, it is bound to the engine that saves (:meth:`bind`) and the record also
    holds ``epoch`` (the training epoch the weights are from; :func:`checkpoint_epoch` reads it) and ``run_id``
    (the run that trained them, :class:`isic_monai.engines.resume.RunIdentity`). Neither is compared on loading: a
    checkpoint without them (the shipped ``bundle/models/model.pt``) loads as before.

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
        self._engine: Any = None
        self._run: Any = None

    def bind(self, engine: Any, run: Any = None) -> None:
        """Record ``engine.state.epoch`` (and ``run.run_id`` when given) in every record saved from now on."""
        self._engine, self._run = engine, run

    def state_dict(self) -> dict[str, Any]:
        """The record, as saved (with ``epoch`` and ``run_id`` once bound)."""
        out = dict(self.info)
        if self._engine is not None:
            out["epoch"] = int(self._engine.state.epoch)
        if self._run is not None:
            out["run_id"] = str(self._run.run_id)
        return out

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


def _unsafe_detail(err: BaseException) -> str | None:
    """The Python object a refused ``weights_only`` load names (pickled code: a class or function to call), or
    ``None`` when the file is just damaged or not a checkpoint (e.g. ``Unsupported operand``: bytes that are no
    pickle)."""
    for line in str(err).splitlines():
        line = line.strip()
        if line.startswith(("Unsupported global", "Unsupported class")) or "GLOBAL " in line:
            return line.rstrip(".")
    return None


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with the file and the problem named.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds pickled code (refused, never run) or is damaged or not a checkpoint.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for damaged or unsafe files
        detail = _unsafe_detail(err)
        if detail is not None:
            raise ValueError(f"{path}: refused: the checkpoint carries pickled Python code or objects ({detail}); "
                             "only tensors and plain values are loaded (torch.load weights_only=True). Re-save its "
                             "state dicts with torch.save if the file comes from a source you trust") from err
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(f"{path}: cannot be read as a checkpoint, it is damaged or not a PyTorch file "
                         f"({type(err).__name__}: {first}); restore it from a copy or train again") from err


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint read with ``weights_only=True`` (a bare state dict comes back as ``{"model": ...}``).

    Raises:
        ValueError: the file cannot be read as a checkpoint, or carries pickled code (the message names it).
    """
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: not a checkpoint dict ({type(ckpt).__name__})")
    return ckpt if "model" in ckpt else {"model": ckpt}


def read_checkpoint_info(path: str | Path) -> dict[str, Any]:
    """The ``config`` record of a ``model.pt`` (empty when the checkpoint has none).

    Raises:
        ValueError: the file cannot be read as a checkpoint (the message names it).
    """
    return dict(load_checkpoint(path).get("config", {}))


def checkpoint_epoch(path: str | Path) -> int | None:
    """The training epoch a ``model.pt`` was saved at (its ``config`` record's ``epoch``), read ``weights_only``.

    Returns:
        The epoch, or ``None`` for a checkpoint saved without one (the shipped ``bundle/models/model.pt``, a bare
        state dict, a checkpoint older than the field).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be read as a checkpoint (the message names it).
    """
    epoch = read_checkpoint_info(path).get("epoch")
    return None if epoch is None else int(epoch)


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through the one atomic writer (:func:`isic_monai.data.atomic.write_atomic`), folder synced.

    A process killed while saving leaves the previous ``path`` intact (and at worst a ``.partial`` file, which
    :class:`AtomicDiskSaver` removes at its next save); permissions follow the umask, like a plain save.
    """
    import torch

    return write_atomic(path, lambda f: torch.save(obj, f), durable=True)


class AtomicDiskSaver(BaseSaveHandler):
    """An Ignite save handler writing each checkpoint atomically (:func:`atomic_torch_save`).

    Ignite's ``Checkpoint`` removes the file it replaces *before* writing the new one, and MONAI's
    ``CheckpointSaver`` writes in place, so a kill at the wrong moment leaves no checkpoint or a truncated one. Here
    removals wait until the next checkpoint is complete, and a fixed ``filename`` (``model.pt``) is replaced by a
    rename, never deleted first. Only the process of rank 0 writes (as Ignite's ``DiskSaver``).

    Args:
        dirname: the folder (created when missing).
        filename: a fixed file name for every save (``model.pt``); ``None``: the name Ignite gives.
    """

    def __init__(self, dirname: str | Path, filename: str | None = None) -> None:
        self.dirname = Path(dirname)
        self.filename = filename
        self._pending: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        """Save ``checkpoint`` as ``filename`` (or the fixed name), then remove what was replaced."""
        import ignite.distributed as idist

        if idist.get_rank() != 0:
            return
        name = self.filename or filename
        self.dirname.mkdir(parents=True, exist_ok=True)
        for stale in self.dirname.glob(PARTIAL_GLOB):  # left by a process killed while saving
            stale.unlink(missing_ok=True)
        atomic_torch_save(checkpoint, self.dirname / name)
        for old in self._pending:
            if old != name:
                (self.dirname / old).unlink(missing_ok=True)
        self._pending = []

    def remove(self, filename: str) -> None:
        """Remove ``filename`` once the next checkpoint is written (a fixed name is simply replaced)."""
        if self.filename is None:
            self._pending.append(filename)


class _EngineState:
    """The trainer's epoch, iteration and AMP loss scaler, as one stateful object for a checkpoint."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def state_dict(self) -> dict[str, Any]:
        state = dict(self.engine.state_dict())
        scaler = getattr(self.engine, "scaler_", None)
        if scaler is not None:
            state["amp_scaler"] = scaler.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        state = dict(state)
        scaler_state = state.pop("amp_scaler", None)
        self.engine.load_state_dict(state)
        scaler = getattr(self.engine, "scaler_", None)
        if scaler is not None and scaler_state is not None:
            scaler.load_state_dict(scaler_state)


class CheckpointSaver(_MonaiCheckpointSaver):
    """MONAI's ``CheckpointSaver`` with atomic writes (:class:`AtomicDiskSaver`): a kill never leaves a damaged or
    missing ``model.pt`` or last checkpoint.

    A :class:`CheckpointInfo` in ``save_dict`` is bound to the engine it is attached to (and to ``run``), so each
    ``model.pt`` records the epoch its weights are from and the run that trained them.

    Args:
        engine_key: when set (``"trainer"``), the engine this handler is attached to is saved under that key: its
            epoch, iteration and AMP scaler (what ``--resume`` restores). The config cannot name the trainer in its
            own handlers' ``save_dict`` (a circular reference), hence this.
        run: the run's identity (:class:`isic_monai.engines.resume.RunIdentity`), recorded in a
            :class:`CheckpointInfo` as ``run_id``.
        **kwargs: MONAI's ``CheckpointSaver`` arguments.
    """

    def __init__(self, engine_key: str | None = None, run: Any = None, **kwargs: Any) -> None:
        kwargs["save_dict"] = dict(kwargs.get("save_dict") or {})
        super().__init__(**kwargs)
        self.engine_key = engine_key
        self.run = run
        for ckpt, fixed in ((self._final_checkpoint, kwargs.get("final_filename")),
                            (self._key_metric_checkpoint, kwargs.get("key_metric_filename")),
                            (self._interval_checkpoint, None)):
            if ckpt is not None:
                ckpt.save_handler = AtomicDiskSaver(self.save_dir, fixed)

    def attach(self, engine: Any) -> None:
        """Attach to ``engine`` (saved under ``engine_key`` when set)."""
        if self.engine_key:
            self.save_dict[self.engine_key] = _EngineState(engine)
        for obj in self.save_dict.values():
            if isinstance(obj, CheckpointInfo):
                obj.bind(engine, self.run)
        super().attach(engine)

    def interval_completed(self, engine: Any) -> None:
        """Save the interval checkpoint; with ``n_saved: 1``, also remove older ones of the same prefix (those of
        the run this one resumed)."""
        import ignite.distributed as idist

        super().interval_completed(engine)
        ckpt = self._interval_checkpoint
        if ckpt is None or ckpt.n_saved != 1 or idist.get_rank() != 0:
            return
        kept = {item.filename for item in ckpt._saved}
        prefix = f"{ckpt.filename_prefix}_" if ckpt.filename_prefix else ""
        pattern = re.compile(re.escape(prefix) + r"\w+_" + re.escape(f"{ckpt.score_name}=") + r"\d+\.pt")
        for path in Path(self.save_dir).iterdir():
            if pattern.fullmatch(path.name) and path.name not in kept:
                path.unlink(missing_ok=True)


class CheckpointLoader(_MonaiCheckpointLoader):
    """MONAI's ``CheckpointLoader`` with the file named in every error: a missing, damaged or unsafe checkpoint
    (pickled code, refused by ``weights_only=True``) stops the run with a message naming it, before any work.

    Args:
        engine_key: when set and present in the checkpoint, restore the attached engine's epoch, iteration and AMP
            scaler from that key (see :class:`CheckpointSaver`).
        **kwargs: MONAI's ``CheckpointLoader`` arguments.
    """

    def __init__(self, engine_key: str | None = None, **kwargs: Any) -> None:
        kwargs["load_dict"] = dict(kwargs.get("load_dict") or {})
        super().__init__(**kwargs)
        self.engine_key = engine_key

    def attach(self, engine: Any) -> None:
        """Attach to ``engine`` (restored from ``engine_key`` when set)."""
        if self.engine_key:
            self.load_dict[self.engine_key] = _EngineState(engine)
        super().attach(engine)

    def __call__(self, engine: Any) -> None:
        """Check the file reads safely, then load it as MONAI does."""
        checkpoint = read_checkpoint(self.load_path, map_location="cpu")
        if isinstance(checkpoint, dict) and self.engine_key and self.engine_key not in checkpoint:
            self.load_dict.pop(self.engine_key, None)
        try:
            super().__call__(engine)
        except (RuntimeError, KeyError, ValueError) as err:
            raise ValueError(f"{self.load_path}: does not fit this config ({err})") from err


def training_space_needed(network: Any, extra_mb: float = 50.0) -> int:
    """Bytes a training run needs free in its output folders: ``model.pt``, the last checkpoint (the weights, an
    Adam-like optimiser's two moments and the copy of ``model.pt`` it commits, :mod:`isic_monai.engines.resume`), a
    second copy of each while it is written (atomic saves), and ``extra_mb`` for logs."""
    n_bytes = sum(p.numel() * p.element_size() for p in network.parameters())
    return int(n_bytes * 2 * (1 + 4) + extra_mb * 2**20)
