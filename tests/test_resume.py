"""Resume after a crash: a tiny training killed with SIGKILL in the middle of an epoch, then resumed (real CLI)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
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

from isic_monai.bundle.checkpoint import checkpoint_epoch, load_checkpoint, read_checkpoint, read_checkpoint_info
from isic_monai.engines.resume import (
    PREVIOUS_RUN_DIR,
    PublishedFiles,
    RunIdentity,
    find_resume_file,
    last_checkpoints,
    set_aside_previous_run,
)

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


def _with(cmd: list[str], key: str, value: str) -> list[str]:
    """``cmd`` with the value of ``--key`` replaced."""
    out = list(cmd)
    out[out.index(f"--{key}") + 1] = value
    return out


def _best_epoch(rows: list[dict]) -> int:
    """The epoch a history names as the best: the first with the highest ``val_mean_dice`` (MONAI keeps the first)."""
    dice = [float(r["val_mean_dice"]) for r in rows]
    return int(float(rows[max(range(len(dice)), key=lambda i: (dice[i], -i))]["epoch"]))


def _csv_rows(root: Path) -> list[dict]:
    return list(csv.DictReader((root / "logs" / "training_history.csv").open()))


def _done(ckpt: dict) -> int:
    """The epochs a last checkpoint has finished (Ignite saves the iteration and the epoch length)."""
    return ckpt["trainer"]["iteration"] // ckpt["trainer"]["epoch_length"]


def _committed_model_epoch(ckpt: dict) -> int | None:
    """The epoch of the ``model.pt`` a last checkpoint committed (its byte copy)."""
    data = ckpt["published"]["model.pt"]
    if data is None:
        return None
    return torch.load(io.BytesIO(data.numpy().tobytes()), weights_only=True)["config"]["epoch"]


def _assert_in_step(root: Path) -> int:
    """A finished (or resumed and finished) run: ``model.pt``, ``thresholds.json``, ``confidence.json``, the history
    and the last checkpoint all name the same best epoch, and the same run. Returns that epoch."""
    models = root / "models"
    last = read_checkpoint(last_checkpoints(models)[0])
    rows = _csv_rows(root)
    best = _best_epoch(rows)
    assert [float(r["epoch"]) for r in rows] == [float(e) for e in range(1, _done(last) + 1)]
    assert last["validation"]["best_metric_epoch"] == best
    info = read_checkpoint_info(models / "model.pt")
    assert (info["epoch"], info["run_id"]) == (best, last["run"]["run_id"])
    assert checkpoint_epoch(models / "model.pt") == best
    assert json.loads((models / "thresholds.json").read_text())["epoch"] == best
    if (models / "confidence.json").is_file():
        assert json.loads((models / "confidence.json").read_text())["epoch"] == best
    return best


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
    committed = read_checkpoint(models / "last_checkpoint_epoch=2.pt")
    assert committed["published"]["model.pt"].numpy().tobytes() == (models / "model.pt").read_bytes()
    assert [r["epoch"] for r in committed["history"]["rows"]] == [1.0, 2.0]

    # what a kill after epoch 3's validation but before its last checkpoint leaves: a model.pt, thresholds and a
    # history row of epoch 3 that no checkpoint records (the resumed run trains its own epoch 3)
    ahead = load_checkpoint(models / "model.pt")
    ahead["config"]["epoch"] = 3
    ahead["model"] = {k: v + 1 for k, v in ahead["model"].items()}
    torch.save(ahead, models / "model.pt")
    (models / "thresholds.json").write_text(json.dumps({"channel_names": ["lesion"], "thresholds": [0.1], "epoch": 3}))
    history = root / "logs" / "training_history.csv"
    history.write_text(history.read_text() + "3.0" + ",1.0" * (len(killed_rows[0]) - 1) + "\n")

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = run_command(_command(datalist, root, "--resume", "true"), cwd=REPO_ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "continuing at epoch 3 of 5" in proc.stdout + proc.stderr
    assert "model.pt was written after the last checkpoint (epoch 3), by the interrupted run: restored (epoch " in (
        proc.stdout + proc.stderr)

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
    assert _assert_in_step(root) == best_epoch  # model, thresholds and history name the same epoch
    final = _digest(models / "model.pt")

    # a resume belongs to its own run: other settings are refused, naming them, and nothing is touched
    other = run_command(_with(_command(datalist, root, "--resume", "true"), "learning_rate", "0.001"),
                        cwd=REPO_ROOT, env=env, timeout=300)
    out = other.stdout + other.stderr
    assert other.returncode != 0
    assert "belongs to another run" in out and "learning_rate: checkpoint 0.005, this run 0.001" in out, out[-3000:]
    assert _digest(models / "model.pt") == final
    assert last_checkpoints(models)[0].name == f"last_checkpoint_epoch={EPOCHS}.pt"

    # a new run in the same folder moves the earlier run's files aside and writes its own, never mixing them
    fresh = run_command(_with(_command(datalist, root, "--resume", "false"), "max_epochs", "1"),
                        cwd=REPO_ROOT, env=env, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    previous = models / PREVIOUS_RUN_DIR
    assert {"model.pt", "thresholds.json", f"last_checkpoint_epoch={EPOCHS}.pt"} <= {p.name for p in previous.iterdir()}
    assert _digest(previous / "model.pt") == final
    assert [p.name for p in last_checkpoints(models)] == ["last_checkpoint_epoch=1.pt"]
    new_run = read_checkpoint(models / "last_checkpoint_epoch=1.pt")["run"]["run_id"]
    assert new_run != last["run"]["run_id"]
    assert _assert_in_step(root) == 1


def test_find_resume_file(tmp_path):
    assert find_resume_file("false", tmp_path) is None
    assert find_resume_file(True, tmp_path) is None  # nothing to resume: a fresh start
    for epoch in (2, 10, 9):
        torch.save({"model": {}}, tmp_path / f"last_checkpoint_epoch={epoch}.pt")
    assert find_resume_file("true", tmp_path) == str(tmp_path / "last_checkpoint_epoch=10.pt")
    assert find_resume_file(str(tmp_path / "last_checkpoint_epoch=2.pt"), tmp_path).endswith("=2.pt")
    with pytest.raises(FileNotFoundError, match="--resume nowhere.pt: checkpoint not found"):
        find_resume_file("nowhere.pt", tmp_path)


def test_published_files_roll_back_to_the_commit(tmp_path):
    """The byte copy a last checkpoint holds survives a weights_only round trip, and loading it rewrites a file
    changed after the commit, removes one created after it, and leaves an unchanged one alone."""
    model, thresholds, confidence = tmp_path / "model.pt", tmp_path / "thresholds.json", tmp_path / "confidence.json"
    torch.save({"model": {"w": torch.ones(2)}, "config": {"epoch": 2}}, model)
    thresholds.write_text('{"epoch": 2}')
    published = PublishedFiles([model, thresholds, confidence])
    torch.save({"published": published.state_dict()}, tmp_path / "commit.pt")
    committed_model = model.read_bytes()
    commit = torch.load(tmp_path / "commit.pt", weights_only=True)["published"]
    assert commit["confidence.json"] is None

    torch.save({"model": {"w": torch.zeros(2)}, "config": {"epoch": 3}}, model)  # written after the commit
    confidence.write_text('{"epoch": 3}')
    before = thresholds.stat().st_mtime_ns
    published.load_state_dict(commit)
    assert model.read_bytes() == committed_model and checkpoint_epoch(model) == 2
    assert not confidence.exists() and thresholds.stat().st_mtime_ns == before
    assert published.restored == ["model.pt", "confidence.json"]


def test_run_identity_continues_only_its_own_run():
    run = RunIdentity({"learning_rate": 0.005, "max_epochs": 5, "image_size": (32, 64)})
    same = RunIdentity({"learning_rate": 0.005, "max_epochs": 50, "image_size": [32, 64]})  # may be extended
    same.load_state_dict(run.state_dict())
    assert same.run_id == run.run_id
    other = RunIdentity({"learning_rate": 0.001, "max_epochs": 5, "image_size": [32, 64]})
    with pytest.raises(ValueError, match="another run:\n  learning_rate: checkpoint 0.005, this run 0.001"):
        other.load_state_dict(run.state_dict())
    assert other.run_id != run.run_id


def test_a_new_run_sets_the_earlier_run_aside(tmp_path):
    for name in ("last_checkpoint_epoch=4.pt", "model.pt", "thresholds.json", "notes.txt"):
        (tmp_path / name).write_text(name)
    (tmp_path / PREVIOUS_RUN_DIR).mkdir()
    (tmp_path / PREVIOUS_RUN_DIR / "model.pt").write_text("an even earlier run")
    moved = set_aside_previous_run(tmp_path, [tmp_path / "model.pt", tmp_path / "thresholds.json",
                                              tmp_path / "confidence.json"])
    assert sorted(p.name for p in moved) == ["last_checkpoint_epoch=4.pt", "model.pt", "thresholds.json"]
    assert sorted(p.name for p in (tmp_path / PREVIOUS_RUN_DIR).iterdir()) == sorted(p.name for p in moved)
    assert (tmp_path / PREVIOUS_RUN_DIR / "model.pt").read_text() == "model.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", PREVIOUS_RUN_DIR]
    assert find_resume_file(True, tmp_path) is None  # nothing of the earlier run can be resumed into the new one
    assert set_aside_previous_run(tmp_path) == []


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
    after every kill, ``model.pt`` exists and loads, the run's history holds each finished epoch once, the last
    checkpoint (the commit point) names one best epoch in its validation state, its history and its copy of
    ``model.pt``, and the ``model.pt`` on disk is that copy or one written after it (which resuming rolls back).
    Then a last resume ends the run: ``model.pt``, ``thresholds.json`` and the history name the same epoch. The
    first run is left to finish its first validation (the rule holds from then on), so the test does not depend on
    how fast this machine is. Bounded: :data:`KILLS` kills, or 20 s per kill."""
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
        if not last_checkpoints(models):  # killed between the first history row and the first commit
            continue
        commit = read_checkpoint(last_checkpoints(models)[0])
        done, best = _done(commit), commit["validation"]["best_metric_epoch"]
        assert [r["epoch"] for r in commit["history"]["rows"]] == [float(e) for e in range(1, done + 1)]
        assert _best_epoch(commit["history"]["rows"]) == best == _committed_model_epoch(commit), (kills, delay)
        on_disk = (models / "model.pt").read_bytes()
        assert (on_disk == commit["published"]["model.pt"].numpy().tobytes()
                or checkpoint_epoch(models / "model.pt") > done), (kills, delay)  # else: written after the commit
        assert epochs in ([float(e) for e in range(1, done + 1)], [float(e) for e in range(1, done + 2)])
    assert kills >= min(5, KILLS), (kills, moments)

    # the last resume, planned to end where the run stands: it rolls back what the last kill left, trains nothing,
    # and chooses the thresholds for model.pt
    done = _done(read_checkpoint(last_checkpoints(models)[0]))
    proc = run_command(_with(cmd, "max_epochs", str(done)), cwd=REPO_ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"all {done} epochs were already trained" in proc.stdout + proc.stderr
    _assert_in_step(root)
