"""MLflow through the MONAI CLI's ``--tracking``: a tiny training and its evaluation recorded in a local SQLite store,
read back with MLflow's client; the run-settings record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import bundle_setting
from tiny_runs import evaluate, synth_datalist, train

from isic_monai.data.records import json_safe
from isic_monai.engines.tracking import RunSettingsRecorder, mlflow_params, mlflow_settings

EPOCHS = 2


@pytest.fixture(scope="module")
def datalist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth_datalist(tmp_path_factory.mktemp("tracking_data"))


def _client(uri: str):
    mlflow = pytest.importorskip("mlflow")
    return mlflow.tracking.MlflowClient(tracking_uri=uri)


def _runs(client, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    return client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])


@pytest.mark.slow
def test_tracking_mlflow_default_settings(datalist: Path, tmp_path: Path) -> None:
    """`--tracking mlflow` as MONAI ships it: <bundle_root>/eval/mlruns.db, metrics per epoch, parameters."""
    pytest.importorskip("mlflow")
    root = tmp_path / "run"
    train(datalist, root, "--tracking", "mlflow", epochs=EPOCHS)
    store = root / "eval" / "mlruns.db"
    assert store.is_file()
    client = _client(f"sqlite:///{store}")
    (run,) = _runs(client, "monai_experiment")
    assert run.info.status == "FINISHED"
    assert run.data.params["max_epochs"] == str(EPOCHS) and run.data.params["epoch_length"] == "3"
    expected = {"train_loss", "train_loss_epoch", "learning_rate", "val_mean_dice", "val_thresholded_jaccard_lesion"}
    assert expected <= set(run.data.metrics)
    history = client.get_metric_history(run.info.run_id, "val_mean_dice")
    assert [m.step for m in history] == [1, 2]
    assert list(root.joinpath("eval").glob("config_*.json"))  # the executed config, logged as an artifact


@pytest.mark.slow
def test_tracking_settings_file_records_run_settings_for_training_and_evaluation(datalist: Path,
                                                                                 tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from isic_monai.cli import main

    store = tmp_path / "store" / "mlruns.db"
    store.parent.mkdir()
    settings_file = tmp_path / "mlflow.json"
    assert main(["tracking-settings", "-o", str(settings_file), "--tracking-uri", f"sqlite:///{store}",
                 "--experiment", "tiny", "--run-name", "t1"]) == 0
    root = tmp_path / "run"
    train(datalist, root, "--tracking", str(settings_file), epochs=EPOCHS)
    evaluate(datalist, root, "--tracking", str(settings_file))
    client = _client(f"sqlite:///{store}")
    training, evaluation = _runs(client, "tiny")
    assert training.info.run_name == evaluation.info.run_name == "t1"
    assert training.info.status == evaluation.info.status == "FINISHED"
    params = training.data.params
    assert params["network_name"] == bundle_setting("network_name") and params["image_size"] == "[32, 64]"
    assert params["max_epochs"] == str(EPOCHS) and params["learning_rate"] == "0.005" and params["n_training"] == "15"
    assert {"val_mean_dice", "train_loss_epoch", "learning_rate"} <= set(training.data.metrics)
    assert evaluation.data.params["tta"] == "True" and evaluation.data.params["evaluate_split"] == "validation"
    summary = json.loads((root / "eval" / "summary.json").read_text())
    assert evaluation.data.metrics["jaccard"] == pytest.approx(summary["per_image"]["jaccard"]["mean"], abs=1e-6)
    assert {"dice_lesion", "set_jaccard_overall", "confusion_lesion_tp"} <= set(evaluation.data.metrics)


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
