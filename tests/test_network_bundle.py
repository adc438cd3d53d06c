"""Each network override layered on the bundle passes MONAI's ``verify_net_in_out`` (the stock CLI, in a subprocess).

``--n 2`` makes the metadata's ``16*n`` spatial shape 32x32, which respects every network's size multiple (16 or 32).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from isic_monai.networks import network_config_names

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN = REPO_ROOT / "bundle" / "configs" / "train.yaml"
META = REPO_ROOT / "bundle" / "configs" / "metadata.json"
NETWORK_DIR = REPO_ROOT / "configs" / "networks"
REQUIRES_MODULE = {"swin_unetr": "einops"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (TRAIN.is_file() and META.is_file()), reason="bundle/configs not written yet"),
]


@pytest.mark.parametrize("name", network_config_names(NETWORK_DIR))
def test_verify_net_in_out(name: str) -> None:
    module = REQUIRES_MODULE.get(name)
    if module and importlib.util.find_spec(module) is None:
        pytest.skip(f"{name} needs the '{module}' package, which is not installed")
    config_files = str([str(TRAIN), str(NETWORK_DIR / f"{name}.yaml")])
    command = [
        sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def",
        "--meta_file", str(META), "--config_file", config_files,
        "--n", "4", "--image_size", "[64,64]", "--device", "cpu",  # 16*4 = 64: a multiple of 32 too
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "data shape of network is verified with no error" in output
