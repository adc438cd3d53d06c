"""Several nodes: two torchrun agents on 127.0.0.1 started as two nodes train the bundle once (issue 19 item 7)."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import config_list, copy_bundle

from isic_monai.bundle.checkpoint import checkpoint_epoch
from isic_monai.data.selection import resolve_datalist
from isic_monai.data.synth import generate

TRAIN = "configs/train.yaml"  # inside the bundle folder
TINY = ["--image_size", "[64,64]", "--num_workers", "0"]


@pytest.fixture(scope="module")
def synth_datalist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 small synthetic ISIC 2018-layout cases and their datalist (25 % validation)."""
    root = tmp_path_factory.mktemp("synth")
    generate(root / "data", layout="isic2018", n=24, seed=3, size_range=((72, 96), (96, 128)))
    path = root / "datalist.json"
    path.write_text(json.dumps(resolve_datalist(dataset_dir=root / "data", val_fraction=0.25, seed=0)))
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_with_c10d_rendezvous_train_once(synth_datalist: Path, tmp_path: Path) -> None:
    """Two torchrun agents on 127.0.0.1 as two nodes (``--nnodes 2``, c10d rendezvous, gloo), each in its own copy of
    the bundle as on two machines without a shared disk: both finish, the node holding rank 0 alone writes the
    checkpoint, and the trainer ran the steps of its DistributedSampler shard."""
    port, epochs, batch = _free_port(), 2, 4
    nodes = [copy_bundle(tmp_path / f"node{i}") for i in range(2)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    agents = []
    for i, inside in enumerate(nodes):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
               "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=isic-two-nodes",
               f"--rdzv_conf=is_host={'true' if i == 0 else 'false'}", "--local_addr=127.0.0.1",
               "--max_restarts=0", "-m", "monai.bundle", "run", "training", "--config_file",
               config_list(TRAIN, "configs/multi_gpu_train.yaml"), "--datalist_file", str(synth_datalist),
               "--max_epochs", str(epochs), "--batch_size", str(batch), *TINY]
        agents.append(subprocess.Popen(cmd, cwd=inside, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       env=env))
    outputs = [agent.communicate(timeout=600)[0] for agent in agents]
    for agent, output in zip(agents, outputs, strict=True):
        assert agent.returncode == 0, output[-4000:]
    written = [inside for inside in nodes if (inside / "models" / "model.pt").is_file()]
    assert len(written) == 1, "exactly one node (the one holding rank 0) writes the checkpoint"
    other = next(inside for inside in nodes if inside not in written)
    assert not (other / "models").is_dir() or not any((other / "models").iterdir()), "the other node wrote files"
    thresholds = json.loads((written[0] / "models" / "thresholds.json").read_text())
    assert thresholds["n_images"] == len(json.loads(synth_datalist.read_text())["validation"])  # the whole set
    assert thresholds["epoch"] == checkpoint_epoch(written[0] / "models" / "model.pt") is not None
    n_train = len(json.loads(synth_datalist.read_text())["training"])
    steps = math.ceil(math.ceil(n_train / 2) / batch)  # even_divisible: each rank gets ceil(n / world) items
    last = torch.load(written[0] / "models" / f"last_checkpoint_epoch={epochs}.pt", weights_only=True)
    assert last["trainer"]["iteration"] == epochs * steps and last["trainer"]["epoch_length"] == steps, last["trainer"]
    state = torch.load(written[0] / "models" / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state["model"])
