"""The suite's warm MONAI server (tests/warm_cli.py): a forked command behaves as ``python -m`` in a fresh interpreter
would, in what the tests read: working folder, arguments, environment, output, exit code, seeds, threads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_module
from warm_cli import WarmCli, can_run

PROBE = """
import json, os, sys
import numpy as np, torch
print(json.dumps({"cwd": os.getcwd(), "argv": sys.argv[1:], "env": os.environ.get("ISIC_MONAI_PROBE"),
                  "torch_seed": torch.initial_seed(), "numpy": float(np.random.rand()),
                  "threads": torch.get_num_threads(), "isic_monai_loaded": "isic_monai" in sys.modules,
                  "name": __name__}))
print("to stderr", file=sys.stderr)
sys.exit(int(os.environ.get("ISIC_MONAI_PROBE_EXIT", "0")))
"""


@pytest.fixture(scope="module")
def server() -> WarmCli:
    warm = WarmCli()
    yield warm
    warm.close()


def _probe(server: WarmCli, folder: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    import json

    (folder / "warm_probe.py").write_text(PROBE)
    proc = server.run("warm_probe", list(args), folder, {**server.env, **env}, timeout=60)
    return proc, (json.loads(proc.stdout) if proc.stdout else {})


def test_a_forked_command_gets_its_folder_arguments_environment_and_output(server: WarmCli, tmp_path: Path) -> None:
    proc, seen = _probe(server, tmp_path, "--a", "b c", ISIC_MONAI_PROBE="x", OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr
    assert seen["cwd"] == str(tmp_path.resolve()) and seen["argv"] == ["--a", "b c"] and seen["env"] == "x"
    assert seen["threads"] == 1 and seen["name"] == "__main__"
    assert not seen["isic_monai_loaded"]  # the server preloads MONAI only: the package is imported fresh
    assert proc.stderr.strip() == "to stderr"


def test_exit_codes_and_errors_come_back(server: WarmCli, tmp_path: Path) -> None:
    proc, _ = _probe(server, tmp_path, ISIC_MONAI_PROBE_EXIT="3")
    assert proc.returncode == 3
    (tmp_path / "warm_boom.py").write_text("raise ValueError('boom in the child')\n")
    proc = server.run("warm_boom", [], tmp_path, server.env, timeout=60)
    assert proc.returncode == 1 and "ValueError: boom in the child" in proc.stderr


def test_each_command_draws_its_own_seeds(server: WarmCli, tmp_path: Path) -> None:
    _, first = _probe(server, tmp_path)
    _, second = _probe(server, tmp_path)
    assert first["torch_seed"] != second["torch_seed"] and first["numpy"] != second["numpy"]


def test_a_command_past_its_timeout_is_killed_and_the_server_goes_on(server: WarmCli, tmp_path: Path) -> None:
    (tmp_path / "warm_sleep.py").write_text("import time\ntime.sleep(60)\n")
    with pytest.raises(subprocess.TimeoutExpired):
        server.run("warm_sleep", [], tmp_path, server.env, timeout=1)
    proc, seen = _probe(server, tmp_path)
    assert proc.returncode == 0 and seen["cwd"] == str(tmp_path.resolve())


def test_import_time_variables_and_other_interpreters_start_a_fresh_process() -> None:
    base = dict(os.environ)
    assert can_run(None, {**base, "ISIC_MONAI_X": "1", "OMP_NUM_THREADS": "1"}, base)
    assert not can_run(None, {**base, "PYTHONPATH": "/elsewhere"}, base)
    assert not can_run(None, {**base, "MONAI_ALLOW_MISSING_REFERENCE": "1"}, base)
    assert not can_run("/usr/bin/python3", base, base)


def test_the_monai_cli_answers_alike_forked_and_fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """``verify_metadata`` of the repository bundle: the same exit code and verdict from the server as from a fresh
    interpreter; a bad call fails from the server too, naming the file."""
    schema = ["--filepath", "isic_monai/schemas/meta_schema.json"]
    warm = run_module("monai.bundle", "verify_metadata", "--meta_file", "bundle/configs/metadata.json", *schema)
    bad = run_module("monai.bundle", "verify_metadata", "--meta_file", "bundle/configs/absent.json", *schema)
    monkeypatch.setenv("ISIC_TEST_FRESH_CLI", "1")
    fresh = run_module("monai.bundle", "verify_metadata", "--meta_file", "bundle/configs/metadata.json", *schema)
    assert warm.args == fresh.args and warm.args[:3] == [sys.executable, "-m", "monai.bundle"]
    assert warm.returncode == fresh.returncode == 0
    for proc in (warm, fresh):
        assert "metadata is verified with no error" in proc.stdout + proc.stderr
    assert bad.returncode != 0 and "absent.json" in bad.stdout + bad.stderr
