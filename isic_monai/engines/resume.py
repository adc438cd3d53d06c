"""Resume a killed training from its last checkpoint (``--resume true``).

Every epoch the bundle writes ``models/last_checkpoint_epoch=N.pt`` atomically
(:class:`isic_monai.bundle.checkpoint.CheckpointSaver`): the network, optimiser, LR scheduler, the trainer's epoch,
iteration and AMP loss scaler, the validation state (best key metric and its epoch, which decide ``model.pt`` and
``thresholds.json``, and the best-checkpoint bookkeeping) and the per-epoch history. :class:`ResumeLoader`, the
trainer's last handler, restores all of it when training starts, after the other handlers have reset themselves,
so the run continues at epoch N + 1 and ends at ``max_epochs`` with each epoch in its history once.
:func:`resumed_summary_writer` makes TensorBoard drop what the killed run logged after that checkpoint.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from isic_monai.bundle.checkpoint import CheckpointLoader, read_checkpoint
from isic_monai.bundle.settings import as_bool

__all__ = [
    "HistoryState",
    "ResumeLoader",
    "ValidationState",
    "find_resume_file",
    "last_checkpoints",
    "resumed_summary_writer",
]

logger = logging.getLogger(__name__)

LAST_PATTERN = re.compile(r"^last_checkpoint_epoch=(\d+)\.pt$")
"""The name of MONAI's interval checkpoint with ``file_prefix: last``."""


def last_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """The ``last_checkpoint_epoch=N.pt`` files of a folder, newest epoch first."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := LAST_PATTERN.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found, reverse=True)]


def find_resume_file(resume: bool | str | None, ckpt_dir: str | Path) -> str | None:
    """The checkpoint a run resumes from.

    Args:
        resume: ``false`` (start from epoch 1), ``true`` (the newest ``last_checkpoint_epoch=N.pt`` in ``ckpt_dir``;
            a fresh start when there is none, so a retry loop can always pass it) or a checkpoint path.
        ckpt_dir: the run's ``models/`` folder.

    Raises:
        FileNotFoundError: ``resume`` names a file that does not exist.
    """
    if resume is None:
        return None
    try:
        wanted = as_bool(resume, "resume")
    except ValueError:
        path = Path(str(resume))
        if not path.is_file():
            raise FileNotFoundError(f"--resume {resume}: checkpoint not found") from None
        return str(path)
    if not wanted:
        return None
    found = last_checkpoints(ckpt_dir)
    if not found:
        logger.info("--resume: no last checkpoint in %s, starting from epoch 1", ckpt_dir)
        return None
    return str(found[0])


class ResumeLoader(CheckpointLoader):
    """Restore a training from a last checkpoint when it starts (nothing when ``load_path`` is ``None``).

    Put it *after* the trainer's other handlers: Ignite runs ``STARTED`` handlers in order, and some reset their
    state then (the history), so restoring last is what survives. It is a ``CheckpointLoader``, so the multi-GPU
    config keeps it on every rank.

    Args:
        load_path: the checkpoint (:func:`find_resume_file`), or ``None``.
        load_dict: the objects to restore (the config's ``resume_state``).
        engine_key: the key of the trainer's own state (epoch, iteration, AMP scaler).
        map_location: where tensors go.
    """

    def __init__(self, load_path: str | None, load_dict: Mapping[str, Any], engine_key: str = "trainer",
                 map_location: Any = None) -> None:
        self.enabled = load_path is not None
        if self.enabled:
            super().__init__(load_path=load_path, load_dict=dict(load_dict), engine_key=engine_key,
                             map_location=map_location, name="ResumeLoader")

    def attach(self, engine: Any) -> None:
        """Register on ``STARTED`` (when there is a checkpoint)."""
        if self.enabled:
            super().attach(engine)

    def __call__(self, engine: Any) -> None:
        """Load the checkpoint and say where the run continues."""
        planned = engine.state.max_epochs
        ckpt = read_checkpoint(self.load_path)
        missing = [k for k in self.load_dict if isinstance(ckpt, dict) and k not in ckpt and k != "model"]
        if missing:
            logger.warning("%s holds no %s (an older checkpoint): those start afresh", self.load_path, missing)
            for key in missing:
                self.load_dict.pop(key)
        saved_epochs = ckpt.get("trainer", {}).get("max_epochs") if isinstance(ckpt, dict) else None
        if saved_epochs is not None and planned is not None and int(saved_epochs) != int(planned):
            logger.warning("%s was saved by a run of %s epochs, this one plans %s: the LR schedule continues as "
                           "saved (its length included)", self.load_path, saved_epochs, planned)
        super().__call__(engine)
        epoch = int(engine.state.epoch)
        if planned is not None and epoch >= planned:
            logger.warning("resumed from %s: all %d epochs were already trained", self.load_path, planned)
        else:
            logger.info("resumed from %s: continuing at epoch %d of %s", self.load_path, epoch + 1, planned)


def _key_metric_saver(handlers: Sequence[Any]) -> Any:
    """The handler that keeps the best checkpoint (a ``CheckpointSaver`` with a key-metric checkpoint)."""
    for handler in handlers:
        if getattr(handler, "_key_metric_checkpoint", None) is not None:
            return handler
    return None


class ValidationState:
    """The validation state a resumed run needs, as one stateful object: the evaluator's best key metric and its
    epoch (``ThresholdSelectionHandler`` writes ``thresholds.json`` only at that epoch) and the bookkeeping of the
    ``CheckpointSaver`` that keeps ``model.pt`` (so a worse epoch after resuming never replaces the best model).

    Args:
        evaluator: the validation engine.
        handlers: its handlers (the key-metric ``CheckpointSaver`` is found among them by what it does).
    """

    def __init__(self, evaluator: Any, handlers: Sequence[Any] = ()) -> None:
        self.evaluator = evaluator
        self.saver = _key_metric_saver(handlers)

    def state_dict(self) -> dict[str, Any]:
        """Best metric, its epoch, and the best-checkpoint list."""
        state = self.evaluator.state
        out: dict[str, Any] = {"best_metric": float(getattr(state, "best_metric", -1)),
                               "best_metric_epoch": int(getattr(state, "best_metric_epoch", -1))}
        if self.saver is not None:
            out["key_metric_checkpoint"] = {k: [list(i) for i in v]
                                            for k, v in self.saver._key_metric_checkpoint.state_dict().items()}
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` gave."""
        self.evaluator.state.best_metric = float(state["best_metric"])
        self.evaluator.state.best_metric_epoch = int(state["best_metric_epoch"])
        saved = state.get("key_metric_checkpoint")
        if self.saver is not None and saved is not None:
            self.saver.load_state_dict({k: [tuple(i) for i in v] for k, v in saved.items()})


class HistoryState:
    """The per-epoch history of :class:`isic_monai.results.pictures.TrainingCurves` (``training_history.csv``), as a
    stateful object: a resumed run keeps the rows of the epochs before the checkpoint and drops any the killed run
    wrote after it."""

    def __init__(self, curves: Any) -> None:
        self.curves = curves

    def state_dict(self) -> dict[str, Any]:
        """The rows so far."""
        return {"rows": [dict(r) for r in self.curves.rows]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the rows."""
        self.curves.rows = [{str(k): float(v) for k, v in r.items()} for r in state["rows"]]


def resumed_summary_writer(log_dir: str | Path, resume_file: str | None = None) -> Any:
    """The trainer's TensorBoard writer; when resuming, one that makes TensorBoard drop every event the killed run
    logged after the checkpoint (``purge_step``: the checkpoint's iteration + 1).

    Create it before any other writer of the run (the bundle does so in ``initialize``): TensorBoard applies a purge
    to the events it has read before it.
    """
    from torch.utils.tensorboard import SummaryWriter

    purge = None
    if resume_file is not None:
        ckpt = read_checkpoint(resume_file)
        trainer = ckpt.get("trainer", {}) if isinstance(ckpt, dict) else {}
        purge = int(trainer.get("iteration", 0)) + 1 if trainer else None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge)
