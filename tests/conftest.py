"""Shared pytest fixtures and helpers: the real data beside the checkout, the repository paths, the bundle CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from warm_cli import WarmCli, can_run

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLE_ROOT = REPO_ROOT / "bundle"
SHARED_DATA = Path(os.environ.get("ISIC_MONAI_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist (make test runs one worker per core): one torch thread per worker and per child process it starts,
    # so the workers do not fight over the cores (two 2-thread PyTorch processes on 2 cores run many times slower)
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$ISIC_MONAI_SHARED_DATA``); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


TRAIN = "bundle/configs/train.yaml"
"""The repository's bundle, whose configs are the default export (tests/test_export.py checks they are current)."""
INFERENCE = "bundle/configs/inference.yaml"
EVALUATE = "bundle/configs/evaluate.yaml"
MULTI_GPU = "bundle/configs/multi_gpu_train.yaml"
META = "bundle/configs/metadata.json"


EXTRAS_VENV = REPO_ROOT / ".venv-extras"
"""``make extras-venv``: an overlay of ``.venv`` (a ``.pth`` file adds its site-packages) plus the packages that the
suite needs but that MONAI must not find in ``.venv``, because MONAI imports them in every process when they are
installed: MLflow (the ``tracking`` extra) and the official ISIC scorer (the ``scorer`` extra: pandas and
scikit-learn). docs/architecture.md#the-extras-venv says what each costs."""


def extras_python(module: str) -> str:
    """A Python that can import ``module`` (``mlflow``, ``isic_challenge_scoring``): this one when it can, else
    ``.venv-extras``'s (``$ISIC_MONAI_EXTRAS_PYTHON`` overrides the path); skips the test when neither has it."""
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        return sys.executable
    overlay = Path(os.environ.get("ISIC_MONAI_EXTRAS_PYTHON", EXTRAS_VENV / "bin" / "python"))
    if overlay.is_file():
        return str(overlay)
    pytest.skip(f"{module} is not installed here and there is no {EXTRAS_VENV.name}: run `make extras-venv`")


def official_scorer(command: str, *paths: str | Path) -> object:
    """The ISIC challenge's own scorer on ``paths``, through ``tests/official_scorer.py`` run by
    :func:`extras_python` (``command``: ``task1`` or ``task2`` with TRUTH_DIR PRED_DIR, ``per-image`` with pairs of
    truth and prediction files); its JSON result. Skips the test when the scorer is not installed."""
    import json

    python = extras_python("isic_challenge_scoring")
    proc = subprocess.run([python, str(REPO_ROOT / "tests" / "official_scorer.py"), command, *map(str, paths)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"official scorer {command} failed:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def official_scorer_cli() -> Path:
    """The official scorer's console script (``isic-challenge-scoring``) beside :func:`extras_python`'s
    interpreter."""
    return Path(extras_python("isic_challenge_scoring")).with_name("isic-challenge-scoring")


def bundle_setting(key: str) -> object:
    """A plain top-level value of the repository bundle's ``configs/train.yaml`` (its network, size multiple, ...)."""
    import yaml

    return yaml.safe_load((BUNDLE_ROOT / "configs" / "train.yaml").read_text())[key]
OFFICIAL_SCHEMA = REPO_ROOT.parent / "shared" / "reference" / "meta_schema_20240725.json"


def config_list(*files: str | Path) -> str:
    """A ``--config_file`` value merging several files, as the MONAI CLI expects."""
    return "[" + ",".join(f"'{f}'" for f in files) + "]"


_WARM: WarmCli | None = None


def run_module(module: str, *args: str, cwd: Path = REPO_ROOT, timeout: float = 600,
               env: dict[str, str] | None = None, python: str | None = None) -> subprocess.CompletedProcess:
    """``python -m module ARGS`` in ``cwd``, its output captured as text (``subprocess.run``'s result).

    ``env`` adds to this process's environment (``OMP_NUM_THREADS`` 2 unless set). The command runs in a child of
    this worker's warm MONAI server (:mod:`warm_cli`: the same entry point, in a process of its own, without paying
    ``import monai`` again) whenever a fork behaves as a fresh interpreter would (:func:`warm_cli.can_run`), else in
    a fresh ``python``.
    """
    global _WARM
    env = {"OMP_NUM_THREADS": "2", **os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if can_run(python, env, WarmCli.server_env() if _WARM is None else _WARM.env):
        _WARM = _WARM or WarmCli()
        return _WARM.run(module, list(args), cwd, env, timeout)
    return subprocess.run([python or sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def run_command(cmd: list[str], cwd: Path = REPO_ROOT, timeout: float = 600,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd)`` with text output captured; a ``python -m MODULE`` command goes by :func:`run_module`."""
    if len(cmd) >= 3 and cmd[:2] == [sys.executable, "-m"]:
        return run_module(cmd[2], *cmd[3:], cwd=cwd, timeout=timeout, env=env)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else {**os.environ, **env})


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop this worker's warm MONAI server."""
    if _WARM is not None:
        _WARM.close()


def bundle(*args: str, cwd: Path = REPO_ROOT, check: bool = True, timeout: int = 600,
           env: dict[str, str] | None = None, python: str | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m monai.bundle ARGS`` in ``cwd`` (the repository root by default) and return the process.

    ``python`` is this interpreter unless given (e.g. :func:`extras_python`).

    Raises:
        AssertionError: with the end of its output, when ``check`` and the command failed.
    """
    proc = run_module("monai.bundle", *args, cwd=cwd, timeout=timeout, env=env, python=python)
    if check and proc.returncode != 0:
        raise AssertionError(f"monai.bundle {' '.join(args)} failed ({proc.returncode}) in {cwd}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def eager_network(config_file: str | Path, checkpoint: Path) -> torch.nn.Module:
    """A config's ``network_def`` with a checkpoint's ``model`` weights, in eval mode."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config_file) if Path(config_file).is_absolute() else str(REPO_ROOT / config_file))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    return net.eval()


def copy_bundle(dest: Path, models: bool = False) -> Path:
    """A copy of the repository's ``bundle/`` (configs, docs, licence; the shipped model when ``models``)."""
    skip = ["logs", "eval", "predictions*"] + ([] if models else ["models"])
    shutil.copytree(BUNDLE_ROOT, dest, ignore=shutil.ignore_patterns(*skip))
    return dest


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--monailabel-venv DIR``: the MONAI Label virtual environment for tests/test_monailabel.py."""
    parser.addoption("--monailabel-venv", default=None, help="MONAI Label venv (make monailabel-test builds it)")


SPLIT_MODULES = frozenset({
    "test_reliability", "test_resume", "test_network_bundle", "test_fuzz", "test_networks", "test_imagenet_encoders",
    "test_inferers", "test_metrics", "test_transforms", "test_layering",
    "test_export_networks",
})
"""Test modules whose tests may run on different pytest-xdist workers: their module fixtures are cheap (or none).
Every other module runs whole on one worker (:func:`pytest_xdist_make_scheduler`), so its module fixtures (a trained
tiny model, an export) are built once."""
HEAVY_FIRST = ("test_resume", "test_benchmark", "test_task2", "test_compare", "test_bundle", "test_reliability",
               "test_export", "test_shipped_model", "test_folder_inference", "test_tracking", "test_html_report",
               "test_pictures", "test_prepare", "test_distributed")
"""Modules started first, longest first (measured with ``--durations``), so that the short ones fill the workers'
last minutes instead of one long module running alone at the end."""


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """With ``--dist loadscope`` (make test): one work unit per test module, one per test in :data:`SPLIT_MODULES`.

    ``xdist_group`` marks would do this with ``--dist loadgroup``, but pytest-xdist 3.8 groups by rewriting node ids,
    which pytest 9 ignores (every module fixture was then built on both workers); a scheduler is xdist's own hook.
    """
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return nodeid if Path(module).stem in SPLIT_MODULES else module

    return ModuleScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the heavy modules first (:data:`HEAVY_FIRST`); the order within a module is kept."""
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).stem, len(rank)))
