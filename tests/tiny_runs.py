"""Tiny real runs of the bundle for the reporting tests: synthetic data, a few epochs at 32×64, the MONAI CLI.

The network size is not square (H 32, W 64), so a picture written the wrong way round has the wrong shape.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import bundle, config_list
from filelock import FileLock

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
          epochs: int = 4, python: str | None = None) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run training`` from the repository root into ``bundle_root``."""
    return bundle("run", "training", "--config_file", config_list(*configs), "--datalist_file", str(datalist),
                  "--bundle_root", str(bundle_root), "--max_epochs", str(epochs), "--learning_rate", "0.005", *TINY,
                  *args, python=python)


def evaluate(datalist: Path, bundle_root: Path, *args: str, configs: tuple[str, ...] = (TRAIN, EVALUATE),
             python: str | None = None) -> subprocess.CompletedProcess:
    """``evaluate.yaml`` merged on ``train.yaml`` for a trained ``bundle_root`` (into ``eval/`` unless told)."""
    return bundle("run", "--config_file", config_list(*configs), "--datalist_file", str(datalist),
                  "--bundle_root", str(bundle_root), "--eval_progress", "false", *TINY, *args, python=python)


def shared_dir(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder built once per test session and shared by every pytest-xdist worker (the first builds it under a
    file lock, the others wait and read it); tests must only read it."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if base.name.startswith("popen-gw") else base
    target = root / f"shared_{name}"
    with FileLock(str(target) + ".lock"):
        if not (target / ".complete").is_file():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            build(target)
            (target / ".complete").touch()
    return target


@dataclass(frozen=True)
class Output:
    """A finished command's output, as the tests of a shared run read it."""

    stdout: str
    stderr: str


def reported_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Output]:
    """The tiny Task 1 run several modules read (reports, pictures): ``(datalist, run folder, training output)``.

    4 epochs, validation every 2, TensorBoard image panels every 2 epochs of 3 samples, the training Dice on, then
    evaluated with the bundle's defaults; trained once per session (:func:`shared_dir`).
    """

    def build(folder: Path) -> None:
        datalist = synth_datalist(folder)
        proc = train(datalist, folder / "run", "--val_interval", "2", "--image_log_interval", "2",
                     "--image_log_samples", "3", "--train_dice", "true", epochs=4)
        (folder / "train.stdout").write_text(proc.stdout)
        (folder / "train.stderr").write_text(proc.stderr)
        evaluate(datalist, folder / "run")

    folder = shared_dir(tmp_path_factory, "reported_run", build)
    output = Output((folder / "train.stdout").read_text(), (folder / "train.stderr").read_text())
    return folder / "datalist.json", folder / "run", output
