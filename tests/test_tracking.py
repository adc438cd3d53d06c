"""MLflow through the MONAI CLI's ``--tracking``: a tiny training and its evaluation recorded in a local SQLite store,
read back with MLflow's client; the run-settings record.

The runs and the reading go through :func:`conftest.extras_python` (``.venv-extras`` under ``make test``: MLflow
is kept out of the main venv, where MONAI would import it in every process)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import REPO_ROOT, bundle_setting, extras_python
from tiny_runs import evaluate, synth_datalist, train

from isic_monai.data.records import json_safe
from isic_monai.engines.tracking import RunSettingsRecorder, mlflow_params, mlflow_settings

EPOCHS = 2


@pytest.fixture(scope="module")
def datalist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_datalist(tmp_path_factory.mktemp("tracking_data"))


def _runs(python: str, uri: str, experiment: str, *history: str) -> list[dict]:
    """The experiment's runs, read with MLflow's client (tests/mlflow_store.py) in ``python``."""
    proc = subprocess.run([python, str(REPO_ROOT / "tests" / "mlflow_store.py"), uri, experiment, *history],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout)
    assert found["experiment"] == experiment, f"no MLflow experiment {experiment!r}"
    return found["runs"]


@pytest.mark.slow
def test_tracking_mlflow_default_settings(datalist: Path, tmp_path: Path) -> None:
    """`--tracking mlflow` as MONAI ships it: <bundle_root>/eval/mlruns.db, metrics per epoch, parameters."""
    python = extras_python("mlflow")
    root = tmp_path / "run"
    train(datalist, root, "--tracking", "mlflow", epochs=EPOCHS, python=python)
    store = root / "eval" / "mlruns.db"
    assert store.is_file()
    (run,) = _runs(python, f"sqlite:///{store}", "monai_experiment", "val_mean_dice")
    assert run["status"] == "FINISHED"
    assert run["params"]["max_epochs"] == str(EPOCHS) and run["params"]["epoch_length"] == "3"
    expected = {"train_loss", "train_loss_epoch", "learning_rate", "val_mean_dice", "val_thresholded_jaccard_lesion"}
    assert expected <= set(run["metrics"])
    assert run["history"]["val_mean_dice"] == [1, 2]
    assert list(root.joinpath("eval").glob("config_*.json"))  # the executed config, logged as an artifact


@pytest.mark.slow
def test_tracking_settings_file_records_run_settings_for_training_and_evaluation(datalist: Path,
                                                                                 tmp_path: Path) -> None:
    python = extras_python("mlflow")
    from isic_monai.cli import main

    store = tmp_path / "store" / "mlruns.db"
    store.parent.mkdir()
    settings_file = tmp_path / "mlflow.json"
    assert main(["tracking-settings", "-o", str(settings_file), "--tracking-uri", f"sqlite:///{store}",
                 "--experiment", "tiny", "--run-name", "t1"]) == 0
    root = tmp_path / "run"
    train(datalist, root, "--tracking", str(settings_file), epochs=EPOCHS, python=python)
    evaluate(datalist, root, "--tracking", str(settings_file), python=python)
    training, evaluation = _runs(python, f"sqlite:///{store}", "tiny")
    assert training["run_name"] == evaluation["run_name"] == "t1"
    assert training["status"] == evaluation["status"] == "FINISHED"
    params = training["params"]
    assert params["network_name"] == bundle_setting("network_name") and params["image_size"] == "[32, 64]"
    assert params["max_epochs"] == str(EPOCHS) and params["learning_rate"] == "0.005" and params["n_training"] == "15"
    assert {"val_mean_dice", "train_loss_epoch", "learning_rate"} <= set(training["metrics"])
    assert evaluation["params"]["tta"] == "True" and evaluation["params"]["evaluate_split"] == "validation"
    summary = json.loads((root / "eval" / "summary.json").read_text())
    assert evaluation["metrics"]["jaccard"] == pytest.approx(summary["per_image"]["jaccard"]["mean"], abs=1e-6)
    assert {"dice_lesion", "set_jaccard_overall", "confusion_lesion_tp"} <= set(evaluation["metrics"])


def test_mlflow_settings_keep_monai_defaults() -> None:
    from monai.bundle.utils import DEFAULT_MLFLOW_SETTINGS

    settings = mlflow_settings("sqlite:///x.db", "exp", "r")
    assert settings["handlers_id"] == DEFAULT_MLFLOW_SETTINGS["handlers_id"]
    assert settings["configs"]["tracking_uri"] == "sqlite:///x.db" and settings["configs"]["run_name"] == "r"
    assert all(settings["configs"][k]["experiment_param"] == "@tracking_params" for k in settings["handlers_id"])
    assert settings["configs"]["trainer"]["close_on_complete"] is True
    assert "experiment_param" not in DEFAULT_MLFLOW_SETTINGS["configs"]["trainer"]  # MONAI's own left untouched
    assert mlflow_params({"size": [32, 64], "lr": 0.1}) == {"size": "[32, 64]", "lr": 0.1}


def test_run_settings_recorder_writes_json(tmp_path: Path) -> None:
    import numpy as np
    import torch

    recorder = RunSettingsRecorder(tmp_path / "logs" / "run_settings.json",
                                   {"size": torch.tensor([32, 64]), "p": Path("/x"), "nan": float("nan"),
                                    "a": np.float32(0.5)})
    written = json.loads(recorder.write().read_text())
    assert written == {"size": [32, 64], "p": "/x", "nan": None, "a": 0.5}
    assert json_safe((1, {"k": (2,)})) == [1, {"k": [2]}]


def test_datalist_fraction_from_the_file(tmp_path: Path) -> None:
    """run_settings reads the training fraction from the datalist file, never from @datalist (MONAI Label gives
    its own data lists and no datalist)."""
    from isic_monai.engines.tracking import datalist_fraction

    half, whole = tmp_path / "half.json", tmp_path / "whole.json"
    half.write_text(json.dumps({"training": [], "metadata": {"fraction": 0.5}}))
    whole.write_text(json.dumps({"training": []}))
    assert datalist_fraction(half) == 0.5 and datalist_fraction(whole) == 1.0
    assert datalist_fraction(None) is None and datalist_fraction(tmp_path / "missing.json") is None
