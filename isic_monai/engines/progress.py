"""Training progress in the log, and progress bars for long evaluations.

:class:`EpochProgress` is a trainer handler (``train#handlers``) that logs one line per epoch::

    epoch 3/25 in 4.1 s: train loss 0.5123, lr 1.00e-03, val_mean_dice 0.7412 (best 0.7412 at 3); 1m 30s left

and puts the epoch's mean loss (``train_loss_epoch``) and learning rate (``learning_rate``) into
``engine.state.metrics``, so ``StatsHandler``, ``TensorBoardStatsHandler``, MLflow and the training curves get one
value per epoch. Place it after ``ValidationHandler`` (its line then reports this epoch's validation) and before the
handlers that log ``engine.state.metrics``. Per-iteration loss lines are ``StatsHandler``'s, printed only when the
bundle's ``iteration_log`` is true.

:class:`ProgressBar` shows an engine's progress when enabled (evaluation, inference): Ignite's tqdm bar on a terminal,
a line per 10 % in a file or a pipe (:func:`isic_monai.data.parallel.progress_bar`).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from typing import Any

from monai.handlers import from_engine
from monai.utils import IgniteInfo, min_version, optional_import

from isic_monai.bundle.settings import as_bool
from isic_monai.data.parallel import LineProgress, is_terminal

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["EpochProgress", "ProgressBar", "epoch_line", "format_duration", "time_left"]

LOSS_METRIC = "train_loss_epoch"
LR_METRIC = "learning_rate"


def format_duration(seconds: float) -> str:
    """A short human duration: ``4.2 s``, ``3m 05s``, ``2h 07m``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def time_left(elapsed: float, epochs_done: int, epochs_left: int) -> float:
    """Seconds left at the mean pace so far (validation epochs included in the mean); NaN before the first epoch."""
    if epochs_done <= 0:
        return float("nan")
    return elapsed / epochs_done * max(0, epochs_left)


def epoch_line(epoch: int, max_epochs: int, seconds: float, loss: float, lr: float | None,
               validation: dict[str, float] | None = None, left: float = float("nan")) -> str:
    """The one log line of an epoch.

    Args:
        epoch, max_epochs: this epoch (1-based) and the total.
        seconds: this epoch's duration (training and validation).
        loss: the epoch's mean training loss.
        lr: the learning rate used during the epoch.
        validation: ``{"name", "value", "best", "best_epoch"}`` of the key validation metric when it ran this epoch.
        left: estimated seconds left.
    """
    parts = [f"train loss {loss:.4f}"]
    if lr is not None:
        parts.append(f"lr {lr:.2e}")
    if validation:
        parts.append(f"{validation['name']} {validation['value']:.4f} (best {validation['best']:.4f} at "
                     f"{validation['best_epoch']})")
    tail = "done" if epoch >= max_epochs else f"{format_duration(left)} left"
    return f"epoch {epoch}/{max_epochs} in {format_duration(seconds)}: {', '.join(parts)}; {tail}"


def _validation_of(validator: Any, epoch: int) -> dict[str, float] | None:
    """The validator's key metric when it ran at ``epoch`` (an evaluator run by ``ValidationHandler``)."""
    state = getattr(validator, "state", None)
    name = getattr(state, "key_metric_name", None)
    if state is None or name is None or getattr(state, "epoch", None) != epoch or name not in state.metrics:
        return None
    return {"name": name, "value": float(state.metrics[name]), "best": float(state.best_metric),
            "best_epoch": int(state.best_metric_epoch)}


class EpochProgress:
    """Log one line per epoch (duration, loss, learning rate, key validation metric, time left).

    Args:
        optimizer: the optimizer whose first parameter group's ``lr`` is reported.
        validator: the evaluator run by ``ValidationHandler`` (its key metric is reported on validation epochs).
        loss_transform: maps ``engine.state.output`` to the iteration's loss.
        name: the logger's name.
        loss_metric, lr_metric: the ``engine.state.metrics`` entries written at each epoch's end (``None``: not
            written).
    """

    def __init__(self, optimizer: Any = None, validator: Any = None,
                 loss_transform: Callable[[Any], Any] | None = None, name: str = "isic_monai.engines.progress",
                 loss_metric: str | None = LOSS_METRIC, lr_metric: str | None = LR_METRIC) -> None:
        self.optimizer = optimizer
        self.validator = validator
        self.loss_transform = loss_transform or from_engine(["loss"], first=True)
        self.logger = logging.getLogger(name)
        self.loss_metric = loss_metric
        self.lr_metric = lr_metric
        self._run_start = 0.0
        self._epoch_start = 0.0
        self._epochs_done = 0
        self._loss_sum = 0.0
        self._loss_n = 0
        self._lr: float | None = None

    def attach(self, engine: Any) -> None:
        """Register on ``STARTED``, ``EPOCH_STARTED``, ``ITERATION_COMPLETED`` and ``EPOCH_COMPLETED``."""
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def started(self, engine: Any) -> None:
        """Start the clock (a resumed run estimates from the epochs it runs itself)."""
        self._run_start = time.perf_counter()
        self._epochs_done = 0

    def epoch_started(self, engine: Any) -> None:
        """Reset the loss sum and note the learning rate this epoch trains with."""
        self._epoch_start = time.perf_counter()
        self._loss_sum, self._loss_n = 0.0, 0
        groups = getattr(self.optimizer, "param_groups", None)
        self._lr = float(groups[0]["lr"]) if groups else None

    def iteration_completed(self, engine: Any) -> None:
        """Add the iteration's loss."""
        loss = self.loss_transform(engine.state.output)
        if loss is not None:
            self._loss_sum += float(loss)
            self._loss_n += 1

    def epoch_completed(self, engine: Any) -> None:
        """Write the epoch's loss and learning rate into ``engine.state.metrics`` and log the line."""
        now = time.perf_counter()
        self._epochs_done += 1
        epoch, max_epochs = int(engine.state.epoch), int(engine.state.max_epochs)
        loss = self._loss_sum / self._loss_n if self._loss_n else float("nan")
        if self.loss_metric:
            engine.state.metrics[self.loss_metric] = loss
        if self.lr_metric and self._lr is not None:
            engine.state.metrics[self.lr_metric] = self._lr
        left = time_left(now - self._run_start, self._epochs_done, max_epochs - epoch)
        validation = _validation_of(self.validator, epoch) if self.validator is not None else None
        self.logger.info(epoch_line(epoch, max_epochs, now - self._epoch_start, loss, self._lr, validation, left))


class ProgressBar:
    """An engine's progress over its iterations, attached only when ``enabled``.

    On a terminal it is Ignite's tqdm bar (kept on screen when done); in a file or a pipe, where every redraw of a
    bar would stay, a :class:`~isic_monai.data.parallel.LineProgress` line per 10 % of the iterations.

    Args:
        enabled: a bool or a command-line string (``"false"``, ``"no"``, ...; read by
            :func:`isic_monai.bundle.settings.as_bool`).
        desc: the label.
        unit: what an iteration is (``"photo"``, ``"image"``).
        stream: where the display goes (default: ``sys.stderr``); whether it is a terminal chooses the display.
    """

    def __init__(self, enabled: bool | str = True, desc: str = "", unit: str = "it", stream: Any = None) -> None:
        self.enabled = as_bool(enabled, "progress")
        self.desc = desc
        self.unit = unit
        self.stream = stream

    def attach(self, engine: Any) -> None:
        """Attach the display for the engine's runs (nothing when disabled)."""
        if not self.enabled:
            return
        stream = self.stream if self.stream is not None else sys.stderr
        if is_terminal(stream):
            from ignite.handlers import ProgressBar as IgniteProgressBar

            IgniteProgressBar(persist=True, desc=self.desc).attach(engine)
            return
        display: dict[str, LineProgress] = {}

        def started(engine: Any) -> None:
            display["bar"] = LineProgress(engine.state.epoch_length, self.desc or "progress", self.unit, stream)

        engine.add_event_handler(Events.EPOCH_STARTED, started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda _: display["bar"].update())
        engine.add_event_handler(Events.EPOCH_COMPLETED, lambda _: display["bar"].close())
