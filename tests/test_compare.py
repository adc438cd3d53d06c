"""``isic-monai compare`` on real tiny runs: two trainings at different training fractions, one of them evaluated
twice (with and without test-time augmentation)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from conftest import run_command
from PIL import Image
from tiny_runs import evaluate, synth_datalist, train

from isic_monai.data.datalist import build_datalist
from isic_monai.results.compare import _label, differing_settings, run_metrics


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """``full`` (all training images; evaluated into eval/ and eval_tta/) and ``half`` (half of them)."""
    root = tmp_path_factory.mktemp("compare")
    full_list = synth_datalist(root)
    half = build_datalist(root / "data", ratios=(0.75, 0.25), fraction=0.5, seed=0)
    half_list = root / "half.json"
    half_list.write_text(json.dumps(half))
    full, half_run = root / "full", root / "half"
    train(full_list, full, epochs=2)
    evaluate(full_list, full, "--tta", "false")
    evaluate(full_list, full, "--tta", "true", "--output_dir", str(full / "eval_tta"))
    train(half_list, half_run, epochs=2)
    evaluate(full_list, half_run, "--tta", "false")
    return [full, full / "eval_tta", half_run]


@pytest.mark.slow
def test_compare_writes_csv_and_plot(runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    proc = run_command([sys.executable, "-m", "isic_monai.cli", "compare", *map(str, runs), "-o", str(out)],
                       timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with (out / "comparison.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["full", "full/eval_tta", "half"]
    assert [r["tta"] for r in rows] == ["False", "True", "False"]
    assert [float(r["training_fraction"]) for r in rows] == [1.0, 1.0, 0.5]
    assert [int(r["n_training"]) for r in rows] == [15, 15, 8]
    assert "network_name" not in rows[0] and "learning_rate" not in rows[0]  # the same in every run: left out
    for row, run in zip(rows, runs, strict=True):
        eval_dir = run if (run / "summary.json").is_file() else run / "eval"
        summary = json.loads((eval_dir / "summary.json").read_text())
        for metric in ("jaccard", "dice", "thresholded_jaccard"):
            assert float(row[metric]) == pytest.approx(summary["per_image"][metric]["mean"])
            assert float(row[f"{metric}_std"]) == pytest.approx(summary["per_image"][metric]["std"])
        assert float(row["set_overall"]) == pytest.approx(summary["set_scores"]["overall"])
    assert rows[0]["jaccard"] != rows[1]["jaccard"]  # test-time augmentation changed the predictions
    with Image.open(out / "comparison.png") as img:
        assert img.format == "PNG" and img.width > img.height >= 300
    assert "full/eval_tta" in proc.stdout and "comparison.png" in proc.stdout


def test_compare_refuses_a_folder_without_evaluation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from isic_monai.cli import main

    assert main(["compare", str(tmp_path), "-o", str(tmp_path / "out")]) == 2
    assert "no eval/summary.json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_differing_settings_and_labels() -> None:
    runs = [{"name": "a", "settings": {"network_name": "unet", "training_fraction": 0.1, "datalist_file": "x",
                                       "lr": 1}},
            {"name": "b", "settings": {"network_name": "unetplusplus", "training_fraction": 0.1, "datalist_file": "y",
                                       "lr": 1}},
            {"name": "c", "settings": {"network_name": "unet", "training_fraction": 1.0, "datalist_file": "z", "lr": 1,
                                       "tta": True}}]
    settings = differing_settings(runs)
    assert settings == ["network_name", "training_fraction", "datalist_file", "tta"]
    assert _label(runs[0], settings) == "network_name=unet, tta="  # paths and the fraction stay out of legends
    assert _label(runs[1], settings) == "network_name=unetplusplus, tta="


def test_run_metrics_flatten_a_summary() -> None:
    summary = {"per_image": {"dice": {"mean": 0.8, "std": 0.1, "n": 3, "channels": {"a": {"mean": 0.7}}}},
               "set_level": {"set_jaccard": 0.6}, "set_scores": {"overall": 0.65, "mean_jaccard": 0.62}}
    assert run_metrics(summary) == {"dice": 0.8, "dice_std": 0.1, "dice_a": 0.7, "set_jaccard": 0.6,
                                    "set_overall": 0.65, "set_mean_jaccard": 0.62}
