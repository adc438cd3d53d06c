"""The package stands on its own: a wheel built from the repository, installed elsewhere, finds its configs and the
shipped model through its data files (no repository layout), and exports a working bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_installed_wheel_exports_a_bundle(tmp_path: Path) -> None:
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
          str(tmp_path / "dist"), str(REPO_ROOT)])
    (wheel,) = (tmp_path / "dist").glob("isic_monai-*.whl")
    prefix = tmp_path / "prefix"
    # --ignore-installed: pip would otherwise uninstall the project's own (editable) installation first
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--ignore-installed", "-q", "--prefix", str(prefix),
          str(wheel)])
    (site,) = prefix.glob("lib/python*/site-packages")
    env = {**os.environ, "PYTHONPATH": str(site)}
    elsewhere = tmp_path / "elsewhere"  # not the repository: nothing found through its layout
    elsewhere.mkdir()
    probe = _run([sys.executable, "-c", "import isic_monai, isic_monai.bundle.paths as p; "
                  "print(isic_monai.__file__); print(p.CONFIG_DIR); print(p.BUNDLE_DIR)"], env=env, cwd=elsewhere)
    module, config_dir, bundle_dir = probe.stdout.split()
    assert Path(module).is_relative_to(prefix), "the installed package, not the checkout, was imported"
    assert Path(config_dir) == (prefix / "share" / "isic-monai" / "configs").resolve()
    assert Path(bundle_dir) == (prefix / "share" / "isic-monai" / "bundle").resolve()
    # every model file the repository ships travels with the wheel, byte for byte (confidence.json included)
    shipped = sorted(p.name for p in (REPO_ROOT / "bundle" / "models").iterdir() if p.suffix in (".pt", ".json"))
    assert "confidence.json" in shipped
    for name in shipped:
        installed = Path(bundle_dir) / "models" / name
        assert installed.is_file(), f"{name} is not in the wheel (pyproject.toml data-files)"
        assert installed.read_bytes() == (REPO_ROOT / "bundle" / "models" / name).read_bytes(), name
    out = tmp_path / "exported"
    _run([sys.executable, "-c", "import sys; from isic_monai.cli import main; sys.exit(main(sys.argv[1:]))",
          "export-bundle", str(out), "--no-torchscript"], env=env, cwd=elsewhere)
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    assert meta["eval_metrics"]["mean_jaccard"] > 0.5  # the shipped model came along
    # with its confidence flag threshold: inference flags the same masks as from the checkout
    assert (out / "models" / "confidence.json").read_bytes() == (REPO_ROOT / "bundle" / "models" /
                                                                   "confidence.json").read_bytes()
    assert (out / "configs" / "inference.yaml").read_text() == (REPO_ROOT / "bundle" / "configs" /
                                                                "inference.yaml").read_text()


def test_runtime_requirements_cover_the_mask_clean_up() -> None:
    """The Task 1 clean-up runs MONAI's ``KeepLargestConnectedComponent``, which needs ``skimage.measure``: a plain
    install (no ``dev`` extra) must bring scikit-image, through MONAI's ``skimage`` extra."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    runtime = [Requirement(r) for r in requires("isic-monai") or [] if "extra ==" not in r]
    (monai,) = [r for r in runtime if r.name == "monai"]
    assert {"skimage", "ignite", "pillow"} <= monai.extras
    optional = [Requirement(r) for r in requires("isic-monai") or [] if "extra ==" in r]
    assert not [r.name for r in optional if r.name == "scikit-image"]  # one place: the runtime requirement
