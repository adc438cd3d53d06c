"""What a run records about itself, and MLflow tracking settings for the bundle.

:class:`RunSettingsRecorder` writes the bundle's ``run_settings`` (network, size, epochs, batch, learning rate,
loss, optimiser, training fraction, image counts, ...) to ``logs/run_settings.json`` when training starts; the HTML
report shows it and ``isic-monai compare`` tells runs apart by it.

MLflow: ``python -m monai.bundle run ... --tracking mlflow`` works with the bundle as it is (MONAI's
``DEFAULT_MLFLOW_SETTINGS``: an ``MLFlowHandler`` added to ``train#handlers`` and ``validate#handlers``, a local
SQLite store ``<output_dir>/mlruns.db``): metrics per epoch, ``max_epochs`` and ``epoch_length`` as parameters, the
executed config as an artifact. :func:`mlflow_settings` adds the ``run_settings`` as parameters and names the
experiment and store; ``isic-monai tracking-settings -o mlflow.json`` writes them to a file for ``--tracking
mlflow.json``.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai.utils import IgniteInfo, min_version, optional_import

from isic_monai.data.records import json_safe

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = [
    "RUN_SETTINGS_FILE",
    "RunSettingsRecorder",
    "datalist_fraction",
    "mlflow_params",
    "mlflow_settings",
    "read_run_settings",
]

RUN_SETTINGS_FILE = "run_settings.json"
"""Under the run's ``logs/`` (the bundle's ``run_settings_file``)."""


def datalist_fraction(datalist_file: str | os.PathLike | None) -> float | None:
    """The training fraction a datalist file records (``isic-monai datalist --fraction``; 1.0 when it records
    none), or None without a datalist file (a ``--dataset_dir`` run, or MONAI Label's own data lists)."""
    if not datalist_file:
        return None
    try:
        content = json.loads(Path(datalist_file).read_text())
    except (OSError, ValueError):
        return None
    metadata = content.get("metadata", {}) if isinstance(content, dict) else {}
    return float(metadata.get("fraction", 1.0)) if isinstance(metadata, dict) else 1.0


def read_run_settings(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A run's ``logs/run_settings.json``, or ``{}`` when it has none."""
    path = Path(run_dir) / "logs" / RUN_SETTINGS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


class RunSettingsRecorder:
    """Write the run's settings as JSON when the engine starts (a trainer handler; rank 0 only under torchrun).

    Args:
        path: the JSON file (the bundle's ``run_settings_file``).
        settings: the values (the bundle's ``run_settings``).
    """

    def __init__(self, path: str | os.PathLike, settings: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.settings = json_safe(settings)

    def attach(self, engine: Any) -> None:
        """Register on ``STARTED``."""
        engine.add_event_handler(Events.STARTED, self.write)

    def write(self, engine: Any = None) -> Path:
        """Write the JSON file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.settings, indent=2) + "\n")
        return self.path


def mlflow_params(settings: Mapping[str, Any]) -> dict[str, Any]:
    """MLflow parameters from ``run_settings``: lists as text (MLflow stores every parameter as a string)."""
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in settings.items()}


def mlflow_settings(tracking_uri: str | None = None, experiment_name: str = "isic_monai",
                    run_name: str | None = None) -> dict[str, Any]:
    """MONAI's MLflow tracking settings with the bundle's ``run_settings`` recorded as run parameters.

    The result is a ``--tracking`` value for ``python -m monai.bundle run`` (written to a JSON file by
    ``isic-monai tracking-settings``): MONAI's ``DEFAULT_MLFLOW_SETTINGS`` (handlers on ``train#trainer``,
    ``validate#evaluator`` and ``evaluator``), with ``experiment_param`` set to ``tracking_params`` on each handler:
    the run settings in training; ``evaluate.yaml`` defines ``tracking_params`` as its evaluation settings and
    ``tracking_close_validator: true`` (its run ends with the evaluation; in training the validator shares the
    trainer's run, which the trainer ends).

    Args:
        tracking_uri: the store (default MONAI's: SQLite ``<output_dir>/mlruns.db``), e.g. ``sqlite:///runs/mlruns.db``
            or ``http://127.0.0.1:5000``.
        experiment_name: the MLflow experiment.
        run_name: the MLflow run (default: ``run_<date>_<time>``).
    """
    from monai.bundle.utils import DEFAULT_MLFLOW_SETTINGS

    settings = copy.deepcopy(DEFAULT_MLFLOW_SETTINGS)
    configs = settings["configs"]
    if tracking_uri is not None:
        configs["tracking_uri"] = tracking_uri
    configs["experiment_name"] = experiment_name
    configs["run_name"] = run_name
    # top-level ids a config may define first (MONAI adds these only where missing): evaluate.yaml records its
    # evaluation settings instead and ends its run when the evaluation completes
    configs["tracking_params"] = {"_target_": "isic_monai.engines.tracking.mlflow_params", "settings": "@run_settings"}
    configs["tracking_close_validator"] = False
    for key in settings["handlers_id"]:
        configs[key]["experiment_param"] = "@tracking_params"
    configs["validator"]["close_on_complete"] = "@tracking_close_validator"
    return settings
