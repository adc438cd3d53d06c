"""Pictures of a run: photo | truth | prediction panels, TensorBoard image panels and training curves.

Every array here is (H, W) or (C, H, W), height first, like every size in the project (docs/architecture.md,
"Sizes and orientation"); photos are RGB ``uint8`` (H, W, 3). The same :func:`panel` draws the TensorBoard images
of :class:`ImagePanelHandler` and the gallery of ``isic-monai report``: the photo, then the truth and then the
prediction blended over it, each channel in its own colour (:data:`isic_monai.transforms.CHANNEL_COLOURS`) with its
contour drawn.

:class:`TrainingCurves` (a trainer handler) records one row per epoch, the trainer's ``engine.state.metrics``
(``train_loss_epoch`` and ``learning_rate`` from :class:`isic_monai.engines.progress.EpochProgress`, the training key
metric) and, on validation epochs, the evaluator's, into ``training_history.csv``, and draws
``training_curves.png`` (:func:`plot_training_curves`) when training completes. :func:`history_from_events` reads
the same rows back from TensorBoard event files, for runs that predate the CSV.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.handlers.tensorboard_handlers import TensorBoardHandler
from monai.utils import IgniteInfo, min_version, optional_import

from isic_monai.data.atomic import write_atomic
from isic_monai.engines.progress import LOSS_METRIC, LR_METRIC
from isic_monai.transforms import CHANNEL_COLOURS, draw_overlay, source_file

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "save_figure",
    "ImagePanelHandler",
    "TrainingCurves",
    "aggregate_names",
    "history_from_events",
    "overlay_masks",
    "panel",
    "photo_to_uint8",
    "plot_training_curves",
    "read_history",
    "write_history",
]


HISTORY_FILE = "training_history.csv"
CURVES_FILE = "training_curves.png"


# ------------------------------------------------------------------------------------------------ panels


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().float().numpy()
    return np.asarray(value)


def photo_to_uint8(image: Any, max_value: float = 1.0) -> np.ndarray:
    """A photo as an RGB ``uint8`` (H, W, 3) array.

    Args:
        image: a network input (3, H, W) (or an (H, W, 3) array); ``uint8`` values are kept, others scaled.
        max_value: the value of full intensity in a non-``uint8`` image (the bundle scales photos to [0, 1]).
    """
    arr = _numpy(image)
    if arr.ndim != 3:
        raise ValueError(f"expected a (3, H, W) or (H, W, 3) photo, got shape {arr.shape}")
    if arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float32) * (255.0 / max_value)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.clip(np.round(arr), 0, 255).astype(np.uint8)


def _masks(masks: Any, hw: tuple[int, int]) -> np.ndarray:
    """(C, H, W) booleans from a (C, H, W) or (H, W) array, checked against the photo's (H, W)."""
    arr = _numpy(masks)
    arr = arr[None] if arr.ndim == 2 else arr
    if arr.ndim != 3 or tuple(arr.shape[1:]) != tuple(hw):
        raise ValueError(f"masks of shape {arr.shape} do not match the photo's (H, W) {tuple(hw)}")
    return arr > 0.5


def overlay_masks(photo: np.ndarray, masks: Any, alpha: float = 0.4, contour: int | None = None) -> np.ndarray:
    """Blend each channel of ``masks`` over an RGB photo in its colour (``CHANNEL_COLOURS``) and draw its contour.

    Args:
        photo: (H, W, 3) ``uint8``.
        masks: (C, H, W) or (H, W), foreground ``> 0.5``.
        alpha: the colour's weight inside a mask.
        contour: contour width in pixels (default: about 1/150 of the shorter side, at least 1).

    Returns:
        (H, W, 3) ``uint8``.
    """
    binary = _masks(masks, photo.shape[:2])
    out = photo.astype(np.float32)
    for c, mask in enumerate(binary):
        colour = np.asarray(CHANNEL_COLOURS[c % len(CHANNEL_COLOURS)][1], dtype=np.float32)
        out[mask] = (1.0 - alpha) * out[mask] + alpha * colour
    width = contour if contour is not None else max(1, round(min(photo.shape[:2]) / 150))
    return np.asarray(draw_overlay(np.round(out).astype(np.uint8), list(binary), width=width))


def panel(photo: np.ndarray, truth: Any, pred: Any, gap: int = 4) -> np.ndarray:
    """Photo | truth over the photo | prediction over the photo, side by side, with white gaps.

    Args:
        photo: (H, W, 3) ``uint8`` RGB.
        truth, pred: (C, H, W) or (H, W) masks of the photo's size.
        gap: pixels between the three pictures.

    Returns:
        (H, 3 W + 2 gap, 3) ``uint8``.
    """
    h, w = photo.shape[:2]
    out = np.full((h, 3 * w + 2 * gap, 3), 255, dtype=np.uint8)
    for i, picture in enumerate((photo, overlay_masks(photo, truth), overlay_masks(photo, pred))):
        out[:, i * (w + gap) : i * (w + gap) + w] = picture
    return out


def _image_id(item: Mapping[str, Any], key: str) -> str:
    source = source_file(item, key)
    return Path(source).stem if source else "sample"


class ImagePanelHandler(TensorBoardHandler):
    """TensorBoard images of a few validation samples: photo | truth | prediction (:func:`panel`), per sample.

    Attach to the evaluator that ``ValidationHandler`` runs (``validate#handlers``). On the first validation and on
    each validation at least ``interval`` epochs after the last one logged, it takes the first ``n_samples`` items
    of the validation set (the same ones every time: the validation loader does not shuffle) and writes one RGB
    image per sample under ``{tag}/{index}_{image id}``, at the network size (H, W), step = the trainer's epoch.

    Args:
        summary_writer: a ``SummaryWriter`` (default: a new one in ``log_dir``).
        log_dir: the TensorBoard folder.
        interval: epochs between logged validations; 0 or less logs nothing.
        n_samples: samples per logged validation.
        tag: the tag prefix.
        image_key, label_key, pred_key: the keys of the evaluator's decollated output items (the prediction
            binarised by post-processing).
    """

    def __init__(self, summary_writer: Any = None, log_dir: str = "./runs", interval: int = 5, n_samples: int = 4,
                 tag: str = "val_panel", image_key: str = "image", label_key: str = "label",
                 pred_key: str = "pred") -> None:
        super().__init__(summary_writer=summary_writer, log_dir=log_dir)
        self.interval = int(interval)
        self.n_samples = int(n_samples)
        self.tag = tag
        self.keys = (image_key, label_key, pred_key)
        self._last_logged: int | None = None
        self._samples: list[tuple[str, np.ndarray]] = []
        self._active = False

    def attach(self, engine: Any) -> None:
        """Register on the evaluator's ``EPOCH_STARTED``, ``ITERATION_COMPLETED`` and ``EPOCH_COMPLETED``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def due(self, epoch: int) -> bool:
        """Whether the validation at ``epoch`` is logged."""
        if self.interval <= 0 or self.n_samples <= 0:
            return False
        return self._last_logged is None or epoch - self._last_logged >= self.interval

    def epoch_started(self, engine: Any) -> None:
        """Decide whether this validation is logged (the evaluator's epoch is the trainer's)."""
        self._samples = []
        self._active = self.due(int(engine.state.epoch) + 1)

    def iteration_completed(self, engine: Any) -> None:
        """Keep the panels of the first samples."""
        if not self._active or len(self._samples) >= self.n_samples:
            return
        output = engine.state.output
        items = output if isinstance(output, (list, tuple)) else [output]
        image_key, label_key, pred_key = self.keys
        for item in items:
            if len(self._samples) >= self.n_samples:
                break
            photo = photo_to_uint8(item[image_key])
            self._samples.append((_image_id(item, image_key), panel(photo, item[label_key], item[pred_key])))

    def epoch_completed(self, engine: Any) -> None:
        """Write the kept panels, step = the trainer's epoch."""
        if not self._active:
            return
        epoch = int(engine.state.epoch)
        for index, (image_id, picture) in enumerate(self._samples):
            self._writer.add_image(f"{self.tag}/{index}_{image_id}", picture, epoch, dataformats="HWC")
        self._writer.flush()
        self._last_logged = epoch
        self._active = False


# ------------------------------------------------------------------------------------------------ curves


def aggregate_names(names: Iterable[str]) -> list[str]:
    """The names that are not ``<another name>_<suffix>`` (drops per-channel entries such as ``val_dice_streaks``)."""
    names = list(names)
    pool = set(names)
    return [n for n in names if not any(n != o and n.startswith(f"{o}_") for o in pool)]


def write_history(rows: Sequence[Mapping[str, float]], path: str | os.PathLike) -> Path:
    """Write history rows (``epoch`` first, then every column seen) as CSV; empty cells where a row lacks one."""
    columns = ["epoch"] + sorted({k for row in rows for k in row if k != "epoch"})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(f: Any) -> None:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])

    return write_atomic(path, write, mode="w", newline="")


def read_history(path: str | os.PathLike) -> list[dict[str, float]]:
    """Read a :func:`write_history` CSV (empty cells are left out of their row)."""
    with Path(path).open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def history_from_events(log_dir: str | os.PathLike, skip: Sequence[str] = ("train_loss",)) -> list[dict[str, float]]:
    """Per-epoch rows from the TensorBoard scalars of a run's ``logs/`` (tags written per iteration skipped).

    Every scalar tag but ``skip`` (``train_loss`` is written per iteration) is taken with its step as the epoch;
    the last value wins when several event files hold the same tag and step.
    """
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    by_epoch: dict[int, dict[str, float]] = {}
    for event_file in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(event_file), size_guidance={SCALARS: 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            if tag in skip:
                continue
            for event in acc.Scalars(tag):
                by_epoch.setdefault(int(event.step), {})[tag] = float(event.value)
    return [{"epoch": float(epoch), **values} for epoch, values in sorted(by_epoch.items())]


def _series(rows: Sequence[Mapping[str, float]], name: str) -> tuple[list[float], list[float]]:
    points = [(row["epoch"], row[name]) for row in rows if name in row and math.isfinite(row[name])]
    return [p[0] for p in points], [p[1] for p in points]


def plot_training_curves(rows: Sequence[Mapping[str, float]], path: str | os.PathLike,
                         channel_names: Sequence[str] | None = None, key_metric: str | None = None,
                         title: str | None = None) -> Path:
    """Draw the loss and the validation metrics per epoch into a PNG.

    Panels: the training loss (``train_loss_epoch``) with the learning rate on a second, logarithmic axis; the
    training and validation metrics (the aggregates, :func:`aggregate_names`; training ones dashed); with more than
    one channel, the key metric of each channel.

    Args:
        rows: history rows (``epoch`` and one value per column).
        path: the PNG to write.
        channel_names: the channels, for the per-channel panel.
        key_metric: the validation key metric (default: the first validation aggregate).
        title: the figure's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = sorted({k for row in rows for k in row if k != "epoch"})
    metric_names = aggregate_names(n for n in names if n not in (LOSS_METRIC, LR_METRIC, "train_loss"))
    validation = [n for n in metric_names if not n.startswith("train_")]
    key = key_metric if key_metric in names else (validation[0] if validation else None)
    channels = [f"{key}_{c}" for c in (channel_names or []) if key and f"{key}_{c}" in names]
    n_panels = 3 if len(channels) > 1 else 2
    fig, axes = plt.subplots(1, n_panels, figsize=(5.2 * n_panels, 4.0), dpi=100)
    loss_name = LOSS_METRIC if LOSS_METRIC in names else ("train_loss" if "train_loss" in names else None)
    ax = axes[0]
    if loss_name:
        ax.plot(*_series(rows, loss_name), marker=".", color="tab:blue", label="training loss")
    ax.set(xlabel="epoch", ylabel="loss", title="training loss")
    if LR_METRIC in names:
        lr_ax = ax.twinx()
        lr_ax.plot(*_series(rows, LR_METRIC), color="tab:grey", linestyle=":", label="learning rate")
        lr_ax.set_yscale("log")
        lr_ax.set_ylabel("learning rate")
        lr_ax.legend(loc="upper right", fontsize=8)
    if loss_name:
        ax.legend(loc="upper left", fontsize=8)
    ax = axes[1]
    for name in metric_names:
        ax.plot(*_series(rows, name), marker=".", linestyle="--" if name.startswith("train_") else "-", label=name)
    ax.set(xlabel="epoch", ylabel="score", title="metrics per epoch")
    if metric_names:
        ax.legend(fontsize=8)
    if n_panels == 3:
        ax = axes[2]
        for name in channels:
            ax.plot(*_series(rows, name), marker=".", label=name[len(key) + 1 :])
        ax.set(xlabel="epoch", ylabel=key, title=f"{key} per channel")
        ax.legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Lay out a matplotlib figure, write it to ``path`` (folders made) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


class TrainingCurves:
    """Record each epoch's metrics (``training_history.csv``) and draw ``training_curves.png`` when training ends.

    Attach to the trainer after :class:`~isic_monai.engines.progress.EpochProgress` and ``ValidationHandler``.

    Args:
        output_path: the PNG, written on ``COMPLETED``.
        history_path: the CSV, rewritten at each epoch's end (so an interrupted run keeps its history).
        validator: the evaluator ``ValidationHandler`` runs; its metrics join the row of the epochs it ran at.
        channel_names: the channels (a per-channel panel of the key metric when more than one).
        title: the figure's title.
    """

    def __init__(self, output_path: str | os.PathLike, history_path: str | os.PathLike | None = None,
                 validator: Any = None, channel_names: Sequence[str] | None = None, title: str | None = None) -> None:
        self.output_path = Path(output_path)
        self.history_path = Path(history_path) if history_path else self.output_path.with_name(HISTORY_FILE)
        self.validator = validator
        self.channel_names = list(channel_names) if channel_names else None
        self.title = title
        self.rows: list[dict[str, float]] = []

    def attach(self, engine: Any) -> None:
        """Register on ``STARTED``, ``EPOCH_COMPLETED`` and ``COMPLETED``."""
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Any) -> None:
        """Start a new history."""
        self.rows = []

    def epoch_completed(self, engine: Any) -> None:
        """Add the epoch's row and rewrite the CSV."""
        epoch = int(engine.state.epoch)
        row = {"epoch": float(epoch), **_scalars(engine.state.metrics)}
        state = getattr(self.validator, "state", None)
        if state is not None and getattr(state, "epoch", None) == epoch:
            row.update({k: v for k, v in _scalars(state.metrics).items() if k not in row})
        self.rows.append(row)
        self.write_history()

    def write_history(self) -> None:
        """Rewrite ``history_path`` (atomically) with the rows so far; nothing without a path or rows."""
        if self.history_path is not None and self.rows:
            write_history(self.rows, self.history_path)

    def completed(self, engine: Any) -> None:
        """Draw the curves."""
        key = getattr(getattr(self.validator, "state", None), "key_metric_name", None)
        plot_training_curves(self.rows, self.output_path, self.channel_names, key, self.title)
