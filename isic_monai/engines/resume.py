"""Resume a killed training from its last checkpoint (``--resume true``), and keep a run's files in step.

Every epoch the bundle writes ``models/last_checkpoint_epoch=N.pt`` atomically
(:class:`isic_monai.bundle.checkpoint.CheckpointSaver`): the network, optimiser, LR scheduler, the trainer's epoch,
iteration and AMP loss scaler, the validation state (best key metric and its epoch, which decide ``model.pt``, and
the best-checkpoint bookkeeping), the per-epoch history, the run's identity (:class:`RunIdentity`) and a byte copy of
the files the run has published (:class:`PublishedFiles`: ``model.pt``, ``thresholds.json``, ``confidence.json``).

That file is the run's **commit point**. Within an epoch the writes come in this order, each one atomic:
``model.pt`` (at validation, when the epoch is the best), ``training_history.csv``, then the last checkpoint; after
the last epoch, ``thresholds.json`` and ``confidence.json`` (chosen for ``model.pt``). A kill before the last
checkpoint's rename leaves files written after the previous commit; :class:`ResumeLoader`, the trainer's last
handler, restores all of the commit when training starts (after the other handlers have reset themselves) and
rolls those files back to their committed bytes, so ``model.pt``, the history, the validation state and the
thresholds name the same epoch again. The run continues at epoch N + 1 and ends at ``max_epochs`` with each epoch
in its history once. :func:`resumed_summary_writer` makes TensorBoard drop what the killed run logged after that
checkpoint.

A resume continues only its own run: the checkpoint's run settings must match this run's (``max_epochs`` may
differ), else it is refused with the differences named. A new run (``--resume false``) moves an earlier run's files
out of its way first (to ``models/previous_run/``), so nothing of the old run can be resumed into it or taken for
its output.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from isic_monai.bundle.checkpoint import CheckpointLoader, read_checkpoint
from isic_monai.bundle.settings import as_bool
from isic_monai.data.atomic import write_atomic

__all__ = [
    "PREVIOUS_RUN_DIR",
    "HistoryState",
    "PublishedFiles",
    "ResumeLoader",
    "RunIdentity",
    "ValidationState",
    "find_resume_file",
    "last_checkpoints",
    "resumed_summary_writer",
    "set_aside_previous_run",
]

logger = logging.getLogger(__name__)

LAST_PATTERN = re.compile(r"^last_checkpoint_epoch=(\d+)\.pt$")
"""The name of MONAI's interval checkpoint with ``file_prefix: last``."""
PREVIOUS_RUN_DIR = "previous_run"
"""The sub-folder of ``models/`` where a new run moves an earlier run's files (one earlier run is kept)."""


def _is_rank0() -> bool:
    import ignite.distributed as idist

    return idist.get_rank() == 0


def _plain_setting(value: Any) -> Any:
    """A setting as a plain value a ``weights_only`` load reads back equal (lists, numbers, strings, ``None``)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain_setting(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain_setting(v) for k, v in value.items()}
    return str(value)


class RunIdentity:
    """Which run a checkpoint belongs to: a random ``run_id`` and the run's settings (the config's
    ``run_settings``: network, data, sizes, optimisation), saved in the last checkpoint and in ``model.pt``.

    A fresh run draws a new ``run_id``; a resumed run takes the checkpoint's, after checking the checkpoint was saved
    with the same settings (``max_epochs`` excepted: a run may be extended).

    Args:
        settings: the run's settings.
        ignore: settings allowed to differ between a run and its resumption.
    """

    def __init__(self, settings: Mapping[str, Any] | None = None, ignore: Sequence[str] = ("max_epochs",)) -> None:
        self.run_id = uuid.uuid4().hex[:12]
        self.settings: dict[str, Any] = _plain_setting(dict(settings or {}))
        self.ignore = tuple(ignore)

    def state_dict(self) -> dict[str, Any]:
        """The run id and settings, as saved."""
        return {"run_id": self.run_id, "settings": dict(self.settings)}

    def differences(self, state: Mapping[str, Any]) -> list[str]:
        """How a saved identity's settings differ from this run's, one line per setting (empty: the same run)."""
        saved = _plain_setting(dict(state.get("settings") or {}))
        lines = []
        for key in sorted(set(saved) | set(self.settings)):
            if key in self.ignore or saved.get(key) == self.settings.get(key):
                continue
            lines.append(f"{key}: checkpoint {saved.get(key)!r}, this run {self.settings.get(key)!r}")
        return lines

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the saved run (its ``run_id``).

        Raises:
            ValueError: the saved settings differ from this run's (each difference named).
        """
        wrong = self.differences(state)
        if wrong:
            raise ValueError("the checkpoint belongs to another run:\n  " + "\n  ".join(wrong))
        self.run_id = str(state["run_id"])


def _as_bytes(saved: Any) -> bytes | None:
    """The bytes a :class:`PublishedFiles` entry holds (a uint8 tensor), or ``None``."""
    if saved is None:
        return None
    return bytes(saved.detach().cpu().numpy().tobytes())


def _epoch_in(name: str, data: bytes | None) -> Any:
    """The ``epoch`` a published file records (``model.pt``'s ``config`` record, a JSON file's ``epoch``)."""
    if data is None:
        return None
    try:
        if name.endswith(".pt"):
            import torch

            ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            return ckpt.get("config", {}).get("epoch") if isinstance(ckpt, dict) else None
        doc = json.loads(data.decode("utf-8"))
        return doc.get("epoch") if isinstance(doc, dict) else None
    except Exception:  # a file that is not what its name says: no epoch to name
        return None


class PublishedFiles:
    """The files a training publishes for other steps (``model.pt``, ``thresholds.json``, ``confidence.json``), as
    one stateful object of the last checkpoint: saving copies their bytes into it (what exists then), loading
    rolls each file back to those bytes (rewritten atomically, or removed when it did not exist then), so a file
    written after the checkpoint by a killed run never outlives the resumption.

    Args:
        paths: the files.
    """

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.paths = [Path(p) for p in paths]
        self.restored: list[str] = []

    def state_dict(self) -> dict[str, Any]:
        """``{file name: uint8 tensor of its bytes, or None when missing}``."""
        import torch

        out: dict[str, Any] = {}
        for path in self.paths:
            data = path.read_bytes() if path.is_file() else None
            if data is None:
                out[path.name] = None
            else:
                out[path.name] = (torch.frombuffer(bytearray(data), dtype=torch.uint8).clone() if data
                                  else torch.empty(0, dtype=torch.uint8))
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Roll each file back to its saved bytes where it differs (rank 0 writes), naming each one in the log."""
        self.restored = []
        for path in self.paths:
            if path.name not in state:
                continue
            saved = _as_bytes(state[path.name])
            current = path.read_bytes() if path.is_file() else None
            if current == saved:
                continue
            self.restored.append(path.name)
            found, committed = _epoch_in(path.name, current), _epoch_in(path.name, saved)
            what = "removed (it did not exist then)" if saved is None else f"restored (epoch {committed})"
            logger.warning("%s was written after the last checkpoint (epoch %s), by the interrupted run: %s",
                           path, found, what)
            if not _is_rank0():
                continue
            if saved is None:
                path.unlink(missing_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, lambda f, data=saved: f.write(data), durable=True)


def set_aside_previous_run(ckpt_dir: str | Path, published: Sequence[str | Path] = ()) -> list[Path]:
    """Move an earlier run's files out of a new run's way, into ``ckpt_dir/previous_run/`` (replacing what an even
    earlier run left there): its last checkpoints (so a later ``--resume true`` can never continue it in place of
    the new run) and its published files (so no step reads the old model or thresholds as the new run's).

    Args:
        ckpt_dir: the run's ``models/`` folder.
        published: the published files (``model.pt``, ``thresholds.json``, ``confidence.json``).

    Returns:
        The files moved, at their new place.
    """
    folder = Path(ckpt_dir)
    found = [*last_checkpoints(folder), *(Path(p) for p in published if Path(p).is_file())]
    if not found:
        return []
    target = folder / PREVIOUS_RUN_DIR
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    moved = []
    for path in found:
        dest = target / path.name
        path.replace(dest)
        moved.append(dest)
    return moved


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
    """Restore a training from a last checkpoint when it starts; or, for a new run, move an earlier run's files
    aside (:func:`set_aside_previous_run`).

    Put it *after* the trainer's other handlers: Ignite runs ``STARTED`` handlers in order, and some reset their
    state then (the history), so restoring last is what survives. It is a ``CheckpointLoader``, so the multi-GPU
    config keeps it on every rank. Before restoring anything it checks the checkpoint belongs to this run
    (:class:`RunIdentity` in ``load_dict``); after, that ``model.pt`` (rolled back by :class:`PublishedFiles`) is the
    one of the restored best epoch.

    Args:
        load_path: the checkpoint (:func:`find_resume_file`), or ``None`` (a new run).
        load_dict: the objects to restore (the config's ``resume_state``).
        engine_key: the key of the trainer's own state (epoch, iteration, AMP scaler).
        map_location: where tensors go.
        ckpt_dir: the run's ``models/`` folder (a new run moves an earlier run's files from it).
    """

    def __init__(self, load_path: str | None, load_dict: Mapping[str, Any], engine_key: str = "trainer",
                 map_location: Any = None, ckpt_dir: str | Path | None = None) -> None:
        self.enabled = load_path is not None
        self.ckpt_dir = None if ckpt_dir is None else Path(ckpt_dir)
        self.state_objects = dict(load_dict)
        if self.enabled:
            super().__init__(load_path=load_path, load_dict=dict(load_dict), engine_key=engine_key,
                             map_location=map_location, name="ResumeLoader")

    def _find(self, kind: type) -> tuple[str, Any] | tuple[None, None]:
        for key, obj in self.state_objects.items():
            if isinstance(obj, kind):
                return key, obj
        return None, None

    def attach(self, engine: Any) -> None:
        """Register on ``STARTED``: restore (when there is a checkpoint) or set an earlier run aside."""
        from ignite.engine import Events

        if self.enabled:
            super().attach(engine)
        elif self.ckpt_dir is not None:
            engine.add_event_handler(Events.STARTED, self.new_run)

    def new_run(self, engine: Any = None) -> None:
        """Move an earlier run's last checkpoints and published files to ``models/previous_run/`` (rank 0)."""
        if self.ckpt_dir is None or not _is_rank0():
            return
        _, published = self._find(PublishedFiles)
        moved = set_aside_previous_run(self.ckpt_dir, published.paths if published is not None else ())
        if moved:
            logger.warning("a new run (--resume false) in %s: the earlier run's %s moved to %s (replacing what was "
                           "there); this run writes its own", self.ckpt_dir, ", ".join(p.name for p in moved),
                           moved[0].parent)

    def _check_run(self, ckpt: Any) -> None:
        """Refuse a checkpoint of another run, naming how its settings differ and what to do."""
        key, identity = self._find(RunIdentity)
        if identity is None or not isinstance(ckpt, dict) or key not in ckpt:
            return
        wrong = identity.differences(ckpt[key])
        if wrong:
            where = self.ckpt_dir if self.ckpt_dir is not None else Path(str(self.load_path)).parent
            raise ValueError(
                f"{self.load_path} belongs to another run (run {ckpt[key].get('run_id')}), saved with other "
                "settings:\n  " + "\n  ".join(wrong) + "\nResume it with its own settings, or start a new run: "
                f"--resume false (the earlier run's files then move to {where / PREVIOUS_RUN_DIR}), or another "
                "--bundle_root")

    def _check_model(self) -> None:
        """Refuse when this run's ``model.pt`` is not the restored best epoch's (a mismatch rolling back cannot
        explain: a file copied in by hand)."""
        _, published = self._find(PublishedFiles)
        _, identity = self._find(RunIdentity)
        _, validation = self._find(ValidationState)
        if published is None or identity is None or validation is None or not _is_rank0():
            return  # rank 0 alone: it is the one rolling files back, another rank could read one mid-way
        model = next((p for p in published.paths if p.suffix == ".pt"), None)
        if model is None or not model.is_file():
            return
        from isic_monai.bundle.checkpoint import read_checkpoint_info

        info = read_checkpoint_info(model)
        best = int(getattr(validation.evaluator.state, "best_metric_epoch", -1))
        if info.get("run_id") == identity.run_id and info.get("epoch") is not None and int(info["epoch"]) != best:
            raise ValueError(f"{model} holds epoch {info['epoch']} of this run, but its last checkpoint "
                             f"{self.load_path} records epoch {best} as the best: the files are out of step. Restore "
                             "model.pt from a copy or start a new run (--resume false)")

    def __call__(self, engine: Any) -> None:
        """Check the checkpoint is this run's, load it (rolling published files back) and say where the run
        continues."""
        planned = engine.state.max_epochs
        ckpt = read_checkpoint(self.load_path)
        self._check_run(ckpt)
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
        self._check_model()
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
        """Replace the rows, and rewrite the CSV with them (rank 0): a row the killed run wrote after the checkpoint
        is gone at once, not only at the next epoch's end."""
        self.curves.rows = [{str(k): float(v) for k, v in r.items()} for r in state["rows"]]
        if _is_rank0():  # the curves write their own file (results is a higher room than engines)
            self.curves.write_history()


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
