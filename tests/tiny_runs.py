"""Tiny real runs of the bundle for the reporting tests: synthetic data, a few epochs at 32×64, the MONAI CLI.

The network size is not square (H 32, W 64), so a picture written the wrong way round has the wrong shape.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import bundle, config_list

from isic_monai.data.selection import resolve_datalist
from isic_monai.data.synth import generate

TRAIN = "bundle/configs/train.yaml"
EVALUATE = "bundle/configs/evaluate.yaml"
IMAGE_HW = (32, 64)
TINY = ["--image_size", json.dumps(list(IMAGE_HW)).replace(" ", ""), "--num_workers", "0", "--batch_size", "5"]


def synth_datalist(root: Path, n: int = 20, seed: int = 3) -> Path:
    """``n`` synthetic ISIC 2018-layout cases (non-square, about 48×72) and their datalist (25 % validation)."""
    generate(root / "data", layout="isic2018", n=n, seed=seed, size_range=((40, 56), (64, 80)))
    datalist = resolve_datalist(dataset_dir=root / "data", val_fraction=0.25, seed=0)
    path = root / "datalist.json"
    path.write_text(json.dumps(datalist))
    return path


def train(datalist: Path, bundle_root: Path, *args: str, configs: tuple[str, ...] = (TRAIN,),
          epochs: int = 4) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run training`` from the repository root into ``bundle_root``."""
    return bundle("run", "training", "--config_file", config_list(*configs), "--datalist_file", str(datalist),
                  "--bundle_root", str(bundle_root), "--max_epochs", str(epochs), "--learning_rate", "0.005", *TINY,
                  *args)


def evaluate(datalist: Path, bundle_root: Path, *args: str,
             configs: tuple[str, ...] = (TRAIN, EVALUATE)) -> subprocess.CompletedProcess:
    """``evaluate.yaml`` merged on ``train.yaml`` for a trained ``bundle_root`` (into ``eval/`` unless told)."""
    return bundle("run", "--config_file", config_list(*configs), "--datalist_file", str(datalist),
                  "--bundle_root", str(bundle_root), "--eval_progress", "false", *TINY, *args)
