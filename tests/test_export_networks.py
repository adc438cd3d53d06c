"""Every network's exported bundle passes MONAI's ``verify_net_in_out`` from inside the export folder, as the model
zoo's CI runs it. Its own module, so that pytest-xdist spreads the networks over the workers (tests/test_export.py
shares its exports between its tests, so it runs whole on one worker)."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import pytest
from conftest import bundle

from isic_monai.bundle.export import NETWORK_PACKAGES, export_bundle
from isic_monai.bundle.paths import network_config_names


@pytest.mark.slow
@pytest.mark.parametrize("network", network_config_names())
def test_every_network_export_passes_verify_net_in_out(network: str, tmp_path: Path) -> None:
    """Every configs/networks/<name>.yaml exports a bundle whose metadata ``spatial_shape`` the network takes: the
    stock ``verify_net_in_out`` run from inside the folder as the model zoo runs it (no ``--n``, so ``n = 1``, the
    smallest size the metadata declares)."""
    missing = [m for m in NETWORK_PACKAGES.get(network, []) if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{network} needs {missing}, which is not installed")
    out = tmp_path / "bundle"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "exporting an untrained network": the weights do not matter here
        export_bundle(out, "task1", network, torchscript=False)
    proc = bundle("verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json", "--config_file",
                  "configs/inference.yaml", cwd=out, check=False, env={"OMP_NUM_THREADS": "1"})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{network}: verify_net_in_out failed ({proc.returncode}):\n{output[-3000:]}"
    assert "data shape of network is verified with no error" in output
