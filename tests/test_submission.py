"""Folder inference writes a valid ISIC challenge submission: the challenge's own scorer (PyPI
``isic-challenge-scoring``) accepts the output folder as it is, and scores the shipped model on real photos."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import BUNDLE_ROOT, bundle, copy_bundle, official_scorer_cli
from PIL import Image

N_IMAGES = 12

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def _score(truth: Path, pred: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(official_scorer_cli()), "-o", "json", "segmentation", str(truth), str(pred)],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def submission(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Real ISIC 2017 validation photos segmented by the shipped model from inside a copy of the bundle folder."""
    if not official_scorer_cli().is_file():
        pytest.skip("isic-challenge-scoring is not installed (the scorer extra: make extras-venv)")
    if not (BUNDLE_ROOT / "models" / "model.pt").is_file():
        pytest.skip("no shipped model in bundle/models")
    root = tmp_path_factory.mktemp("submission")
    photos, truth = root / "photos", root / "truth"
    photos.mkdir()
    truth.mkdir()
    val = shared_data / "isic2017_256x192" / "val"
    for photo in sorted((val / "images").glob("*.jpg"))[:N_IMAGES]:
        shutil.copyfile(photo, photos / photo.name)
        name = f"{photo.stem}_segmentation.png"
        shutil.copyfile(val / "masks" / name, truth / name)
    inside = copy_bundle(root / "bundle", models=True)
    out = root / "predictions"
    bundle("run", "--config_file", "configs/inference.yaml", "--dataset_dir", str(photos), "--output_dir", str(out),
           "--num_workers", "0", cwd=inside)
    return truth, out, photos


def test_official_scorer_accepts_the_output_folder(submission: tuple[Path, Path, Path]) -> None:
    truth, out, _ = submission
    assert len(list(out.iterdir())) == N_IMAGES  # only the masks
    proc = _score(truth, out)
    assert proc.returncode == 0, proc.stderr
    score = json.loads(proc.stdout)
    jaccard = score["macro_average"]["jaccard"]
    assert jaccard > 0.6, score["macro_average"]
    # the scorer's mean Jaccard is the mean of per-image Jaccard over the files we wrote
    ours = []
    for mask in sorted(truth.iterdir()):
        t = np.asarray(Image.open(mask)) > 127
        p = np.asarray(Image.open(out / mask.name)) > 127
        ours.append((t & p).sum() / max(1, (t | p).sum()))
    assert abs(float(np.mean(ours)) - jaccard) < 1e-4


def test_overlays_beside_the_masks_would_be_refused(submission: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Why overlays live in their own folder: the scorer refuses two files per image id."""
    truth, out, _ = submission
    mixed = tmp_path / "mixed"
    shutil.copytree(out, mixed)
    overlays = out.parent / f"{out.name}_overlays"
    first = sorted(overlays.iterdir())[0]
    shutil.copyfile(first, mixed / first.name)
    proc = _score(truth, mixed)
    assert proc.returncode != 0 and "Multiple matching submissions" in proc.stdout + proc.stderr
