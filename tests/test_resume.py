"""Resume after a crash: a tiny training killed with SIGKILL in the middle of an epoch, then resumed (real CLI)."""

from __future__ import annotations

import csv
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, config_list, run_command
from tiny_runs import TINY, TRAIN, synth_datalist

from isic_monai.bundle.checkpoint import load_checkpoint, read_checkpoint
from isic_monai.engines.resume import find_resume_file, last_checkpoints

pytestmark = pytest.mark.slow

EPOCHS = 5
ITERS = 15  # 15 training images, batch 1: a kill after iteration 5 of an epoch is well inside it


def _command(datalist: Path, root: Path, *extra: str) -> list[str]:
    args = [a for a in TINY]
    args[args.index("--batch_size") + 1] = "1"
    return [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", config_list(TRAIN),
            "--datalist_file", str(datalist), "--bundle_root", str(root), "--max_epochs", str(EPOCHS),
            "--learning_rate", "0.005", "--iteration_log", "true", "--image_log_interval", "0", *args, *extra]


def _kill_mid_epoch(cmd: list[str], epoch: int, iteration: int) -> str:
    """Start the training and SIGKILL it once ``Epoch: epoch/N, Iter: iteration/M`` is logged."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    marker = f"Epoch: {epoch}/{EPOCHS}, Iter: {iteration}/{ITERS}"
    lines = []
    deadline = time.monotonic() + 300
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            os.kill(proc.pid, signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "training too slow"
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(lines[-30:])
    return "".join(lines)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _scalars(log_dir: Path) -> dict[str, list[int]]:
    """The steps TensorBoard shows for each scalar tag (purges applied, as TensorBoard reads them)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps: dict[str, list[int]] = {}
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    for tag in acc.Tags()["scalars"]:
        steps[tag] = [e.step for e in acc.Scalars(tag)]
    return steps


def test_sigkill_mid_epoch_then_resume_ends_at_planned_epochs(tmp_path):
    datalist = synth_datalist(tmp_path)
    root = tmp_path / "run"
    _kill_mid_epoch(_command(datalist, root), epoch=3, iteration=5)

    models = root / "models"
    assert [p.name for p in last_checkpoints(models)] == ["last_checkpoint_epoch=2.pt"]
    assert not list(models.glob(".*.partial*")) and not list(models.glob("*.partial"))
    load_checkpoint(models / "model.pt")  # the best model survived the kill whole
    best_before = _digest(models / "model.pt")
    killed_rows = list(csv.DictReader((root / "logs" / "training_history.csv").open()))
    assert [float(r["epoch"]) for r in killed_rows] == [1.0, 2.0]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = run_command(_command(datalist, root, "--resume", "true"), cwd=REPO_ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "continuing at epoch 3 of 5" in proc.stdout + proc.stderr

    rows = list(csv.DictReader((root / "logs" / "training_history.csv").open()))
    assert [float(r["epoch"]) for r in rows] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert rows[:2] == killed_rows  # the epochs before the kill kept as they were
    steps = _scalars(root / "logs")
    assert steps["val_mean_dice"] == [1, 2, 3, 4, 5]
    assert steps["train_loss"] == list(range(1, EPOCHS * ITERS + 1))  # the killed epoch's iterations purged

    last = read_checkpoint(models / f"last_checkpoint_epoch={EPOCHS}.pt")
    assert [p.name for p in last_checkpoints(models)] == [f"last_checkpoint_epoch={EPOCHS}.pt"]
    assert last["trainer"]["iteration"] == EPOCHS * ITERS and last["trainer"]["epoch_length"] == ITERS
    dice = [float(r["val_mean_dice"]) for r in rows]
    best_epoch = max(range(len(dice)), key=lambda i: (dice[i], -i)) + 1
    assert last["validation"]["best_metric_epoch"] == best_epoch
    assert last["validation"]["best_metric"] == pytest.approx(max(dice), abs=1e-6)
    assert (_digest(models / "model.pt") == best_before) == (best_epoch <= 2)  # a worse epoch never replaced it
    assert last["lr_scheduler"]["last_epoch"] == EPOCHS


def test_find_resume_file(tmp_path):
    assert find_resume_file("false", tmp_path) is None
    assert find_resume_file(True, tmp_path) is None  # nothing to resume: a fresh start
    for epoch in (2, 10, 9):
        torch.save({"model": {}}, tmp_path / f"last_checkpoint_epoch={epoch}.pt")
    assert find_resume_file("true", tmp_path) == str(tmp_path / "last_checkpoint_epoch=10.pt")
    assert find_resume_file(str(tmp_path / "last_checkpoint_epoch=2.pt"), tmp_path).endswith("=2.pt")
    with pytest.raises(FileNotFoundError, match="--resume nowhere.pt: checkpoint not found"):
        find_resume_file("nowhere.pt", tmp_path)


KILLS = int(os.environ.get("ISIC_TEST_KILLS", "6"))
"""Kills of the random-kill test: 6 in ``make test``; ``ISIC_TEST_KILLS=30`` for the stress run."""
KILL_BUDGET_S = 20.0 * KILLS  # one kill costs 8-12 s here alone (start-up, then up to 3 s of training)


def _wait_for(condition, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll ``condition()`` every 50 ms until it holds; fail with the log's tail if the run ends or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"training ended early: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s: {log.read_text()[-3000:]}"
        time.sleep(0.05)


def test_random_kills_never_lose_the_best_model(tmp_path):
    """A tiny training killed (SIGKILL) at random moments, again and again, each time resumed with ``--resume true``:
    after every kill, ``model.pt`` and ``thresholds.json`` exist and load, and the run's history holds each finished
    epoch once. The first run is left to finish its first validation (the rule holds from then on), so the test does
    not depend on how fast this machine is. Bounded: :data:`KILLS` kills, or 20 s per kill."""
    import json
    import random

    datalist = synth_datalist(tmp_path)
    root = tmp_path / "run"
    models = root / "models"
    history = root / "logs" / "training_history.csv"
    rng = random.Random(0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = _command(datalist, root, "--resume", "true")
    cmd[cmd.index("--max_epochs") + 1] = "1000"  # never finishes within the budget
    started, kills, moments = time.monotonic(), 0, []
    while kills < KILLS and time.monotonic() - started < KILL_BUDGET_S:
        log = tmp_path / f"run{kills}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
        if kills == 0:  # the first run: wait for its first validation to be recorded
            _wait_for(lambda: history.is_file() and len(history.read_text().splitlines()) > 1, proc, log, 300)
        else:  # a resumed run: wait until it trains again
            _wait_for(lambda log=log: "Iter: " in log.read_text(), proc, log, 120)
        delay = rng.uniform(0.0, 3.0)  # then kill at a random moment of the next 3 s
        time.sleep(delay)
        proc.kill()
        proc.wait(timeout=60)
        kills += 1
        moments.append(round(delay, 2))
        epochs = [float(r["epoch"]) for r in csv.DictReader(history.open())]
        assert epochs == sorted(set(epochs)), f"kill {kills} (after {delay:.2f} s): an epoch twice: {epochs}"
        load_checkpoint(models / "model.pt")  # a validation has run: the best model must be there, whole
        thresholds = json.loads((models / "thresholds.json").read_text())
        assert thresholds["channel_names"] == ["lesion"], (kills, delay, thresholds)
    assert kills >= min(5, KILLS), (kills, moments)
