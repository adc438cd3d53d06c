"""MONAI Label serves what the CLI predicts (issue 29, item 2).

MONAI Label's ``BundleInferTask`` reads the shipped ``configs/inference.yaml`` alone and takes ``network_def`` (with
``models/model.pt``'s ``model`` weights), ``preprocessing``, ``inferer`` and ``postprocessing`` from it; the CLI's
folder inference (``python -m monai.bundle run --config_file configs/inference.yaml``) runs the same file's
``evaluator``. These tests read the bundle the way MONAI Label does, through MONAI's ``ConfigWorkflow`` (workflow type
``inference``), on real ISIC 2017 validation photos, and find the label map it returns equal, pixel for pixel, to the
``<id>_segmentation.png`` the CLI writes, with the same confidence and flag. A one-view forward pass (the
``network_inferer`` that training validates with) gives other masks on every one of these photos, so the comparison
would catch a served mask without the bundle's test-time augmentation. ``tests/test_monailabel.py`` makes the same
comparison through a real MONAI Label server (``make monailabel-test``).
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import BUNDLE_ROOT, REPO_ROOT, run_command
from PIL import Image

EXAMPLES = REPO_ROOT / "docs" / "examples" / "isic2017_val"
PHOTOS = ("ISIC_0001769", "ISIC_0012876", "ISIC_0015043")
"""Three of the ten example photos: an easy one, the hardest (flagged as unsure) and one in between."""


@pytest.fixture(scope="module")
def cli_masks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, str]]]:
    """The CLI's folder inference of :data:`PHOTOS` with the shipped bundle's defaults: ``(mask folder, the report's
    predictions.csv rows by id)``."""
    import sys

    root = tmp_path_factory.mktemp("served_mask")
    photos = root / "photos"
    photos.mkdir()
    for name in PHOTOS:
        shutil.copyfile(EXAMPLES / f"{name}.jpg", photos / f"{name}.jpg")
    out = root / "cli"
    proc = run_command([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml",
                        "--dataset_dir", str(photos), "--output_dir", str(out), "--num_workers", "0",
                        "--save_overlays", "false"], cwd=BUNDLE_ROOT, timeout=600, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    with (root / "cli_report" / "predictions.csv").open(newline="") as f:
        rows = {row["id"]: row for row in csv.DictReader(f)}
    return out, rows


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Callable[[Path, str], dict[str, Any]], Path]:
    """A function that predicts one photo as MONAI Label's ``BundleInferTask`` does, and the workflow's output folder.

    ``BundleInferTask`` (MONAI Label 0.8.5, ``tasks/infer/bundle.py`` and ``basic_infer.py``): the transforms of the
    ``preprocessing`` Compose run one by one on ``{"image": path}``; ``network_def`` gets ``model.pt``'s ``model``
    weights (strict) in eval mode; the ``inferer`` runs under ``torch.no_grad`` on the image with a batch axis added
    and its first item becomes ``pred``; the ``postprocessing`` transforms run one by one (``SaveImaged`` filtered
    out: the bundle has none). The function returns the final data dict; ``key`` picks the inferer id.
    """
    from monai.bundle import ConfigWorkflow
    from monai.transforms import Compose, SaveImaged

    out = tmp_path_factory.mktemp("workflow_output")
    workflow = ConfigWorkflow(config_file=str(BUNDLE_ROOT / "configs" / "inference.yaml"), workflow_type="inference",
                              bundle_root=str(BUNDLE_ROOT), output_dir=str(out / "predictions"))
    workflow.initialize()
    network = workflow.network_def
    ckpt = torch.load(BUNDLE_ROOT / "models" / "model.pt", map_location="cpu", weights_only=True)
    network.load_state_dict(ckpt["model"], strict=True)
    network.eval()

    def transforms(value: Any) -> list[Any]:
        items = list(value.transforms) if isinstance(value, Compose) else list(value)
        return [t for t in items if not isinstance(t, SaveImaged)]

    pre, post = transforms(workflow.preprocessing), transforms(workflow.postprocessing)

    def predict(photo: Path, key: str = "inferer") -> dict[str, Any]:
        inferer = workflow.inferer if key == "inferer" else workflow.parser.get_parsed_content(key)
        data: dict[str, Any] = {"image": str(photo)}
        for t in pre:
            data = t(data)
        with torch.no_grad():
            data["pred"] = inferer(torch.as_tensor(data["image"])[None], network)[0]
        for t in post:
            data = t(data)
        return data

    return predict, out


def _cli_mask(folder: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(folder / f"{name}_segmentation.png"))


def _served_mask(data: dict[str, Any]) -> np.ndarray:
    """The served label map in the photo's (H, W) orientation (``LabelMapd`` hands MONAI Label its transpose)."""
    return np.asarray(data["pred"]).T


@pytest.mark.slow
@pytest.mark.parametrize("name", PHOTOS)
def test_monai_label_serves_the_cli_mask(name: str, cli_masks: tuple[Path, dict[str, dict[str, str]]],
                                         served: tuple[Callable[..., dict[str, Any]], Path]) -> None:
    """The label map read through MONAI Label's ids equals the CLI's mask pixel for pixel (thresholds, clean-up and
    resize back to the photo included), and its confidence, flag and lesion fraction equal the CLI's report row."""
    folder, rows = cli_masks
    predict, _ = served
    data = predict(EXAMPLES / f"{name}.jpg")
    cli = _cli_mask(folder, name)
    label = _served_mask(data)
    assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1}, np.unique(label)  # channel_def: 1 lesion
    assert set(np.unique(cli)) <= {0, 255}
    assert label.shape == cli.shape == Image.open(EXAMPLES / f"{name}.jpg").size[::-1]
    assert np.array_equal(label == 1, cli == 255), f"{name}: {(label.astype(bool) != (cli == 255)).sum()} pixels differ"
    row = rows[name]
    result = data["result"]
    assert result["confidence"] == pytest.approx(float(row["confidence"]), abs=1e-6)
    assert str(result["flagged"]).lower() == row["flagged"]
    assert result["lesion_fraction"] == pytest.approx(float(row["lesion_fraction"]), abs=1e-6)


@pytest.mark.slow
def test_a_one_view_forward_would_be_caught(cli_masks: tuple[Path, dict[str, dict[str, str]]],
                                            served: tuple[Callable[..., dict[str, Any]], Path]) -> None:
    """The power of the comparison above: served through the one-view ``network_inferer`` (the bundle's served
    inferer before issue 29), every photo's mask differs from the CLI's, and serving writes no file."""
    folder, _ = cli_masks
    predict, out = served
    for name in PHOTOS:
        plain = _served_mask(predict(EXAMPLES / f"{name}.jpg", key="network_inferer"))
        assert not np.array_equal(plain == 1, _cli_mask(folder, name) == 255), name
    assert [p for p in out.rglob("*") if p.is_file()] == [], "MONAI Label's postprocessing must write nothing"
