"""Reliability: typo-proof overrides, atomic and safe checkpoints, unwritable output folders, determinism, no network.

Command-line behaviour is tested through the real ``python -m monai.bundle`` CLI on tiny synthetic runs.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import monai.bundle
import pytest
import torch
from conftest import EVALUATE, INFERENCE, REPO_ROOT, TRAIN, bundle, config_list
from tiny_runs import TINY, synth_datalist, train

from isic_monai.bundle.checkpoint import AtomicDiskSaver, CheckpointLoader, atomic_torch_save, read_checkpoint
from isic_monai.bundle.overrides import check_command_line, parse_fire_args, unknown_overrides
from isic_monai.engines.folder_inference import check_output_dirs

MONAI_MAIN = str(Path(monai.bundle.__file__).with_name("__main__.py"))


# ---------------------------------------------------------------- typo-proof overrides (item 8)
def test_parse_fire_args_reads_keys_as_fire_does():
    line = parse_fire_args(["run", "training", "--config_file", "['a.yaml','b.yaml']", "--max-epochs=5",
                            "--loss#batch", "false", "--amp", "--noprogress", "--", "--help"])
    assert line is not None and line.positional == ["training"]
    assert line.kwargs == {"config_file": ["a.yaml", "b.yaml"], "max_epochs": 5, "loss#batch": "false", "amp": True,
                           "progress": False}
    assert parse_fire_args(["ckpt_export", "network_def", "--filepath", "x"]) is None


def test_unknown_overrides_name_the_nearest_id():
    config = {"max_epochs": 3, "learning_rate": 1e-3, "network_def": {"channels": [8]},
              "train": {"trainer": {"max_epochs": 3}, "handlers": [{"a": 1}]}}
    assert unknown_overrides(["max_epochs", "network_def#channels", "network_def#dropout", "train#handlers#0#a",
                              "train::trainer::max_epochs", "tracking_uri"], config, ["tracking_uri"]) == []
    assert unknown_overrides(["max_epoch", "learning_rte", "train#trainr#max_epochs", "train#handlers#3#a"],
                             config) == [
        "unknown id 'max_epoch' (did you mean 'max_epochs'?)",
        "unknown id 'learning_rte' (did you mean 'learning_rate'?)",
        "unknown id 'train#trainr#max_epochs': 'train' has no 'trainr' (did you mean 'train#trainer'?)",
        "unknown id 'train#handlers#3#a': 'train#handlers' has no '3' (a list of 1: indices 0 to 0)",
    ]


def test_check_command_line_only_checks_a_bundle_run():
    train = str(REPO_ROOT / TRAIN)
    assert check_command_line(["pytest", "--max_epoch", "5"]) == []  # another program's argv (MONAI Label, Python)
    assert check_command_line([MONAI_MAIN, "ckpt_export", "--max_epoch", "5"]) == []
    ok = [MONAI_MAIN, "run", "training", "--config_file", train, "--max_epochs", "5", "--tracking", "mlflow",
          "--tracking_uri", "sqlite:///x.db", "--network_def#channels", "[8,16,32,64,128]", "--meta_file", "m.json",
          "--logging_file", "l.conf"]
    assert check_command_line(ok) == ["max_epochs", "tracking_uri", "network_def#channels"]
    with pytest.raises(ValueError, match=r"unknown id 'max_epoch' \(did you mean 'max_epochs'\?\)"):
        check_command_line([MONAI_MAIN, "run", "training", "--config_file", train, "--max_epoch", "5"])


@pytest.mark.slow
def test_typo_on_the_command_line_stops_training_before_any_work(tmp_path):
    root = tmp_path / "run"
    proc = bundle("run", "training", "--config_file", config_list(TRAIN), "--dataset_dir", str(tmp_path),
                  "--bundle_root", str(root), "--max_epoch", "5", "--learning_rte", "0.1", check=False)
    assert proc.returncode != 0
    assert "unknown id 'max_epoch' (did you mean 'max_epochs'?)" in proc.stderr
    assert "unknown id 'learning_rte' (did you mean 'learning_rate'?)" in proc.stderr
    assert not root.exists()  # stopped before any folder was made
    wrong_type = bundle("run", "training", "--config_file", config_list(TRAIN), "--dataset_dir", str(tmp_path),
                        "--bundle_root", str(root), "--max_epochs", "0", check=False)
    assert "--max_epochs 0: must be a positive integer" in wrong_type.stderr  # types and ranges as before


@pytest.mark.slow
def test_typo_stops_evaluation(tmp_path):
    proc = bundle("run", "--config_file", config_list(TRAIN, EVALUATE), "--dataset_dir", str(tmp_path),
                  "--bundle_root", str(tmp_path / "run"), "--evaluate_splt", "testing", check=False)
    assert proc.returncode != 0
    assert "unknown id 'evaluate_splt' (did you mean 'evaluate_split'?)" in proc.stderr


# ---------------------------------------------------------------- atomic checkpoints (item 2)
class _FailsToPickle:
    def __reduce__(self):
        raise RuntimeError("interrupted while saving")


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    atomic_torch_save({"model": {"w": torch.ones(3)}}, path)
    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_torch_save({"model": {"w": torch.zeros(10_000)}, "x": _FailsToPickle()}, path)
    assert torch.equal(read_checkpoint(path)["model"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_saver_removes_the_replaced_checkpoint_only_after_the_new_one_is_written(tmp_path):
    saver = AtomicDiskSaver(tmp_path)
    saver({"model": {"w": torch.ones(1)}}, "last_checkpoint_epoch=1.pt")
    saver.remove("last_checkpoint_epoch=1.pt")  # what Ignite asks before saving the next one
    assert (tmp_path / "last_checkpoint_epoch=1.pt").is_file()
    saver({"model": {"w": torch.ones(1)}}, "last_checkpoint_epoch=2.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint_epoch=2.pt"]


_SAVE_LOOP = textwrap.dedent("""
    import sys, torch
    from isic_monai.bundle.checkpoint import atomic_torch_save
    state = {"model": {"w": torch.randn(4_000_000)}}
    print("ready", flush=True)
    while True:
        state["model"]["w"] += 1
        atomic_torch_save(state, sys.argv[1])
""")


@pytest.mark.slow
def test_sigkill_while_saving_never_leaves_a_damaged_file(tmp_path):
    path = tmp_path / "model.pt"
    atomic_torch_save({"model": {"w": torch.zeros(4_000_000)}}, path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for delay in (0.3, 0.55, 0.8, 1.1):
        proc = subprocess.Popen([sys.executable, "-c", _SAVE_LOOP, str(path)], stdout=subprocess.PIPE, text=True,
                                env=env)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert read_checkpoint(path)["model"]["w"].shape == (4_000_000,)


def test_damaged_checkpoint_is_named(tmp_path):
    path = tmp_path / "model.pt"
    atomic_torch_save({"model": {"w": torch.ones(1000)}}, path)
    path.write_bytes(path.read_bytes()[:200])  # truncated
    with pytest.raises(ValueError, match=r"model.pt: cannot be read as a checkpoint, it is damaged"):
        read_checkpoint(path)


@pytest.mark.slow
def test_evaluation_with_a_damaged_model_names_the_file(tmp_path):
    datalist = synth_datalist(tmp_path)
    models = tmp_path / "run" / "models"
    models.mkdir(parents=True)
    (models / "model.pt").write_bytes(b"PK\x03\x04 half a zip file")
    proc = bundle(
        "run", "--config_file", config_list(TRAIN, EVALUATE), "--datalist_file", str(datalist),
        "--bundle_root", str(tmp_path / "run"), "--eval_progress", "false", *TINY, check=False)
    assert proc.returncode != 0
    assert f"{models / 'model.pt'}: cannot be read as a checkpoint, it is damaged" in proc.stderr


# ---------------------------------------------------------------- safe loading (item 4)
class _Payload:
    """Pickled as a call of ``Path.touch``: loading it without ``weights_only`` would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_with_pickled_code_is_refused_and_never_run(tmp_path):
    from ignite.engine import Engine

    marker = tmp_path / "code_ran"
    path = tmp_path / "model.pt"
    net = torch.nn.Linear(2, 1)
    torch.save({"model": net.state_dict(), "extra": _Payload(marker)}, path)
    with pytest.raises(ValueError, match=r"model.pt: refused: the checkpoint carries pickled Python code"):
        read_checkpoint(path)
    engine = Engine(lambda e, b: None)
    CheckpointLoader(load_path=str(path), load_dict={"model": net}).attach(engine)
    with pytest.raises(ValueError, match="refused") as err:
        engine.run([0], max_epochs=1)
    assert str(path) in str(err.value)
    assert not marker.exists()


# ---------------------------------------------------------------- unwritable or full output folder (item 7)
def test_check_output_dirs_names_the_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match=r"a_file/out: output folder cannot be written"):
        check_output_dirs([tmp_path / "ok", blocker / "out"])
    with pytest.raises(OSError, match=r"ok: output folder has \d+ MiB free, this run needs at least"):
        check_output_dirs([tmp_path / "ok"], min_free_bytes=2**62)
    assert check_output_dirs([tmp_path / "ok"], min_free_bytes=1) == [tmp_path / "ok"]


@pytest.mark.slow
def test_unwritable_output_stops_training_and_inference_before_they_start(tmp_path):
    datalist = synth_datalist(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = bundle(
        "run", "training", "--config_file", config_list(TRAIN), "--datalist_file", str(datalist),
        "--bundle_root", str(blocker / "run"), "--max_epochs", "1", *TINY, check=False)
    assert proc.returncode != 0
    assert f"{blocker / 'run' / 'models'}: output folder cannot be written" in proc.stderr
    assert "Epoch[1]" not in proc.stdout + proc.stderr
    photos = tmp_path / "data"
    proc = bundle("run", "--config_file", INFERENCE, "--dataset_dir", str(photos), "--output_dir",
                  str(blocker / "out"), "--progress", "false", check=False)
    assert proc.returncode != 0
    assert f"{blocker / 'out'}: output folder cannot be written" in proc.stderr


# ---------------------------------------------------------------- determinism (item 3)
def _losses(root: Path) -> list[float]:
    rows = list(csv.DictReader((root / "logs" / "training_history.csv").open()))
    return [float(r["train_loss_epoch"]) for r in rows]


@pytest.mark.slow
def test_same_seed_same_losses_on_cpu(tmp_path):
    datalist = synth_datalist(tmp_path)
    train(datalist, tmp_path / "a", "--seed", "7", epochs=2)
    train(datalist, tmp_path / "b", "--seed", "7", epochs=2)
    train(datalist, tmp_path / "c", "--seed", "8", epochs=2)
    assert len(_losses(tmp_path / "a")) == 2
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")  # identical, not just close
    assert _losses(tmp_path / "a") != _losses(tmp_path / "c")  # the seed matters: the test can fail


# ---------------------------------------------------------------- no network at run time (item 5)
_NO_NETWORK = textwrap.dedent("""
    import socket

    _connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex

    def _guard(self):
        if self.family in (socket.AF_INET, socket.AF_INET6):  # the network; local AF_UNIX pipes stay allowed
            raise OSError("network access blocked by the test (sitecustomize)")

    def connect(self, *args, **kwargs):
        _guard(self)
        return _connect(self, *args, **kwargs)

    def connect_ex(self, *args, **kwargs):
        _guard(self)
        return _connect_ex(self, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
""")


@pytest.mark.slow
def test_training_evaluation_inference_and_export_run_with_sockets_blocked(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_NO_NETWORK)
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    probe = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 9))"],
                           capture_output=True, text=True, env={**os.environ, **env})
    assert "network access blocked by the test" in probe.stderr  # the blocker is in force
    datalist = synth_datalist(tmp_path)
    root = tmp_path / "run"
    bundle("run", "training", "--config_file", config_list(TRAIN), "--datalist_file", str(datalist),
           "--bundle_root", str(root), "--max_epochs", "1", *TINY, env=env)
    bundle("run", "--config_file", config_list(TRAIN, EVALUATE), "--datalist_file", str(datalist),
           "--bundle_root", str(root), "--eval_progress", "false", *TINY, env=env)
    bundle("run", "--config_file", INFERENCE, "--bundle_root", str(root), "--dataset_dir",
           str(tmp_path / "data" / "ISIC2018_Task1-2_Training_Input"), "--output_dir", str(tmp_path / "pred"),
           "--image_size", "[32,64]", "--progress", "false", env=env)
    assert list((tmp_path / "pred").glob("*_segmentation.png"))
    export = subprocess.run([sys.executable, "-m", "isic_monai.cli", "export-bundle", str(tmp_path / "exported"),
                             "--checkpoint", str(root / "models" / "model.pt"), "--no-torchscript"],
                            cwd=REPO_ROOT, capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
    assert export.returncode == 0, export.stderr[-3000:]
    assert (tmp_path / "exported" / "models" / "model.pt").is_file()
