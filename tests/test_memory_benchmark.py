"""scripts/memory_benchmark.py: the verdict arithmetic, and a tiny real run through its command line."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "memory_benchmark.py"


def load_script() -> ModuleType:
    """The script as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("memory_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows(rss: list[float]) -> list[dict[str, float]]:
    return [{"epoch": i + 1, "rss_mb": v, "children_rss_mb": 0.0} for i, v in enumerate(rss)]


def test_verdict_flat_for_noise_growing_for_a_leak() -> None:
    mb = load_script()
    flat = [700.0, 650.0] + [640.0 + (3.0 if i % 3 == 0 else 0.0) for i in range(18)]  # warm-up, then noise
    summary = mb.summaries(rows(flat), warmup=None, tolerance_mb=32.0)
    assert summary["verdict"] == "flat" and summary["rss"]["first_mb"] == 700.0 and summary["rss"]["max_mb"] == 700.0
    assert abs(summary["rss"]["slope_mb_per_epoch"]) < 0.5  # the warm-up epochs are left out of the slope
    leak = [640.0 + 4.0 * i for i in range(20)]  # 4 MB per epoch
    summary = mb.summaries(rows(leak), warmup=None, tolerance_mb=32.0)
    assert summary["verdict"] == "growing"
    assert summary["rss"]["slope_mb_per_epoch"] == pytest.approx(4.0)
    warmup, window = summary["rss"]["warmup_epochs"], summary["rss"]["window_epochs"]
    assert (warmup, window) == (4, 4) and summary["rss"]["growth_mb"] == pytest.approx(4.0 * (20 - warmup - window))
    assert mb.windows(3) == (1, 1) and mb.windows(1) == (0, 1)


@pytest.mark.slow
def test_tiny_run_writes_one_entry_per_epoch(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--epochs", "3", "--images", "8", "--size", "32", "32",
                           "--out", str(out), "--work-dir", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [e["epoch"] for e in report["epochs"]] == [1, 2, 3]
    for entry in report["epochs"]:
        assert 50 < entry["rss_mb"] < 100_000 and entry["peak_rss_mb"] > 0 and entry["loss"] == entry["loss"]
    assert report["summary"]["verdict"] in ("flat", "growing") and report["summary"]["rss"]["last_mb"] > 0
    assert report["settings"]["train_images"] + report["settings"]["validation_images"] == 8
    assert (tmp_path / "work" / "bundle" / "models" / "model.pt").is_file()  # the bundle's trainer really ran
    table = out.with_suffix(".md").read_text()
    assert "| rss |" in table and table.count("\n| 3 |") == 1
