"""ISIC 2018 Task 2 through the bundle: five attribute channels train, evaluate (official score) and infer."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EVALUATE, TRAIN, bundle, config_list
from PIL import Image

from isic_monai import ATTRIBUTES
from isic_monai.bundle.checkpoint import checkpoint_epoch
from isic_monai.data import build_datalist
from isic_monai.data.synth import generate

TASK2 = "configs/tasks/task2_attributes.yaml"
# the network the thresholds below were measured with, layered explicitly so the test checks the Task 2 pipeline,
# not the default network (the bundle's EfficientNet-Lite0 reached milia-like cysts 0.19 in this run, in CI)
NETWORK = "configs/networks/residual_unet_deep.yaml"
SIZE = ["--image_size", "[96,96]", "--num_workers", "0"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def task2_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic ISIC 2018 data with all five attribute masks, and its datalist."""
    root = tmp_path_factory.mktemp("task2")
    # small photos with coarse patterns (pattern_scale): the attributes stay visible at the 96x96 training size
    generate(root / "data", layout="isic2018", n=64, seed=5, size_range=((120, 136), (136, 170)), pattern_scale=2.5)
    datalist = build_datalist(root / "data", ratios=(0.75, 0.25), seed=0)
    path = root / "datalist.json"
    path.write_text(json.dumps(datalist))
    return path


@pytest.fixture(scope="module")
def task2_model(task2_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Task 2 model trained briefly through the MONAI CLI."""
    bundle_root = tmp_path_factory.mktemp("task2_root")
    bundle("run", "training", "--config_file", config_list(TRAIN, NETWORK, TASK2),
           "--datalist_file", str(task2_data), "--bundle_root", str(bundle_root), "--max_epochs", "50",
           "--val_interval", "10", "--batch_size", "8", "--learning_rate", "0.005", *SIZE)
    return bundle_root


def test_task2_needs_attribute_masks(tmp_path: Path) -> None:
    """A Task 1-only dataset cannot train Task 2: the run stops naming the first image without attributes."""
    generate(tmp_path / "data", layout="isic2017", n=6, seed=1, size_range=((64, 72), (72, 90)))
    proc = bundle("run", "training", "--config_file", config_list(TRAIN, TASK2), "--dataset_dir",
                  str(tmp_path / "data"), "--bundle_root", str(tmp_path / "root"), "--max_epochs", "1", *SIZE,
                  check=False)
    assert proc.returncode != 0
    assert "no attribute_<name> keys" in proc.stdout + proc.stderr


def test_task2_trains_and_selects_thresholds(task2_model: Path, task2_data: Path) -> None:
    checkpoint = torch.load(task2_model / "models" / "model.pt", weights_only=True)
    assert checkpoint["config"]["channel_names"] == list(ATTRIBUTES)
    thresholds = json.loads((task2_model / "models" / "thresholds.json").read_text())
    assert thresholds["channel_names"] == list(ATTRIBUTES)
    assert thresholds["criterion"] == "set_jaccard"
    # chosen after training on the predictor's outputs for the whole validation set, for model.pt's epoch
    n_validation = len(json.loads(task2_data.read_text())["validation"])
    assert thresholds["n_images"] == n_validation and thresholds["clean_up"] is False
    assert thresholds["epoch"] == checkpoint_epoch(task2_model / "models" / "model.pt") is not None
    # each attribute's threshold is the best candidate of its row, and beats or ties 0.5
    half = thresholds["candidates"].index(0.5)
    for t, score, row in zip(thresholds["thresholds"], thresholds["scores"], thresholds["candidate_scores"],
                             strict=True):
        assert score == pytest.approx(max(v for v in row if v is not None), abs=1e-6)
        # (the candidate rows are rounded to 6 places)
        assert row[thresholds["candidates"].index(t)] == pytest.approx(score, abs=1e-6) and score >= row[half] - 1e-6
    assert thresholds["thresholds"] != [0.5] * 5, thresholds  # the selection moved somewhere on this data


def test_task2_evaluation_learns_common_attributes(task2_model: Path, task2_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    bundle("run", "--config_file", config_list(TRAIN, NETWORK, TASK2, EVALUATE),
           "--datalist_file", str(task2_data), "--bundle_root", str(task2_model), "--output_dir", str(out), *SIZE)
    summary = json.loads((out / "summary.json").read_text())
    set_level = summary["set_level"]
    assert {f"set_jaccard_{name}" for name in ATTRIBUTES} <= set(set_level)
    # the common attributes are learned (a model predicting nothing scores 0 on each); measured here after 50 short
    # epochs at 96x96 with one torch thread, as make test runs it: pigment network 0.26, milia-like cysts 0.56,
    # globules 0.25 (CPU, seed 0; 40 epochs gave a mean of 0.41 with two threads but 0.28 with one). The value is the
    # official scorer's overall (micro-average); the mean of the per-attribute values stands beside it.
    common = ["pigment_network", "milia_like_cyst", "globules"]
    assert all(set_level[f"set_jaccard_{name}"] >= 0.2 for name in common), set_level
    assert sum(set_level[f"set_jaccard_{name}"] for name in common) / 3 >= 0.3, set_level
    finite = [set_level[f"set_jaccard_{n}"] for n in ATTRIBUTES if math.isfinite(set_level[f"set_jaccard_{n}"])]
    assert set_level["set_jaccard_mean"] == pytest.approx(sum(finite) / len(finite), abs=1e-4)
    assert set_level["set_jaccard"] == pytest.approx(set_level["set_jaccard_overall"])
    assert summary["set_scores"]["overall"] == set_level["set_jaccard_overall"]
    assert summary["set_scores"]["mean_jaccard"] == set_level["set_jaccard_mean"]
    # the thresholds were chosen on this very pipeline: each attribute's recorded score is the official score here
    chosen = json.loads((task2_model / "models" / "thresholds.json").read_text())
    for name, score in zip(ATTRIBUTES, chosen["scores"], strict=True):
        assert set_level[f"set_jaccard_{name}"] == pytest.approx(score, abs=1e-6), (name, set_level, chosen)
    header = (out / "per_image.csv").read_text().splitlines()[0].split(",")
    assert {f"dice_{name}" for name in ATTRIBUTES} <= set(header)


def test_task2_exported_bundle_infers_alone(task2_model: Path, task2_data: Path, tmp_path: Path) -> None:
    """The trained Task 2 checkpoint exported as a flat bundle; its inference.yaml alone writes the five files."""
    out_bundle = tmp_path / "task2_bundle"
    export = subprocess.run([str(Path(sys.executable).with_name("isic-monai")), "export-bundle", str(out_bundle),
                             "--task", "task2", "--checkpoint", str(task2_model / "models" / "model.pt")],
                            capture_output=True, text=True, timeout=600)
    assert export.returncode == 0, export.stderr[-3000:]
    assert json.loads((out_bundle / "models" / "thresholds.json").read_text())["channel_names"] == list(ATTRIBUTES)
    photos = tmp_path / "photos"
    photos.mkdir()
    entry = json.loads(task2_data.read_text())["validation"][0]
    src = Path(entry["image"])
    (photos / src.name).write_bytes(src.read_bytes())
    out = tmp_path / "pred"
    bundle("run", "--config_file", "configs/inference.yaml", "--dataset_dir", str(photos), "--output_dir", str(out),
           "--num_workers", "0", cwd=out_bundle)  # image_size comes from the checkpoint: no override
    size = Image.open(src).size
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{src.stem}_attribute_{n}.png" for n in ATTRIBUTES)
    for name in ATTRIBUTES:
        mask = Image.open(out / f"{src.stem}_attribute_{name}.png")
        assert mask.size == size and mask.mode == "L"
        assert set(np.unique(np.asarray(mask))) <= {0, 255}


@pytest.mark.realdata
def test_real_isic2018_sample_through_task2_evaluation(task2_model: Path, shared_data: Path, tmp_path: Path) -> None:
    """The six full-size ISIC 2018 images (pigment-network masks only) end to end through Task 2 evaluation."""
    datalist = build_datalist(shared_data / "isic2018_sample", ratios=(0.5, 0.5), seed=0)
    entries = datalist["training"] + datalist["validation"]
    assert len(entries) == 6
    assert all(e["attribute_pigment_network"] and e["attribute_globules"] is None for e in entries)
    path = tmp_path / "isic2018.json"
    path.write_text(json.dumps({"training": [], "validation": entries}))
    out = tmp_path / "eval"
    bundle("run", "--config_file", config_list(TRAIN, NETWORK, TASK2, EVALUATE),
           "--datalist_file", str(path), "--bundle_root", str(task2_model), "--output_dir", str(out), *SIZE)
    rows = (out / "per_image.csv").read_text().strip().splitlines()
    assert len(rows) == 7
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == 6
    value = summary["set_level"]["set_jaccard_pigment_network"]
    assert 0.0 <= value <= 1.0  # a synthetic-trained model on real photos: the pipeline, not the score, is tested
