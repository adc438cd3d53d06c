"""Tests for isic_monai.bundle.checkpoint: the record saved in model.pt and its checks."""

from __future__ import annotations

import pytest
import torch

from isic_monai import ATTRIBUTES
from isic_monai.bundle.checkpoint import CheckpointInfo, read_checkpoint_info


def test_checkpoint_info_round_trip(tmp_path):
    info = CheckpointInfo(list(ATTRIBUTES), [64, 96], "convnext_unet")
    state = info.state_dict()
    assert state == {"channel_names": list(ATTRIBUTES), "image_size": [64, 96], "network_name": "convnext_unet"}
    path = tmp_path / "model.pt"
    torch.save({"model": {}, "config": state}, path)
    loaded = torch.load(path, weights_only=True)["config"]
    assert loaded == state
    assert read_checkpoint_info(path) == state
    CheckpointInfo(list(ATTRIBUTES), (64, 96), "convnext_unet").load_state_dict(loaded)  # tuples equal lists
    CheckpointInfo(["lesion"], [64, 64]).load_state_dict({})  # old checkpoints without a record


@pytest.mark.parametrize(
    ("saved", "configured", "named"),
    [
        ((["lesion"], [64, 64], "unet"), (list(ATTRIBUTES), [64, 64], "unet"), "channel_names: checkpoint ['lesion']"),
        ((["lesion"], [160, 128], "unet"), (["lesion"], [256, 256], "unet"),
         'image_size: checkpoint [160, 128], config [256, 256] (run with --image_size "[160, 128]")'),
        ((["lesion"], [64, 64], "unet"), (["lesion"], [64, 64], "swin_unetr"),
         "network_name: checkpoint unet, config swin_unetr"),
    ],
)
def test_checkpoint_info_mismatch_names_both(saved, configured, named):
    with pytest.raises(ValueError, match="checkpoint /m/model.pt was trained with other settings") as err:
        CheckpointInfo(*configured, source="/m/model.pt").load_state_dict(CheckpointInfo(*saved).state_dict())
    assert named in str(err.value)


def test_read_checkpoint_info_damaged_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="model.pt: cannot be read as a checkpoint"):
        read_checkpoint_info(path)


def test_saved_model_records_its_epoch_and_run_and_still_loads_strictly(tmp_path):
    """A real Ignite engine and the bundle's CheckpointSaver: model.pt names the epoch its weights are from and the
    run that trained them (checkpoint_epoch reads it), keeps MONAI Label's ``model`` key, and loads strictly."""
    from ignite.engine import Engine

    from isic_monai.bundle.checkpoint import CheckpointLoader, CheckpointSaver, checkpoint_epoch, load_checkpoint
    from isic_monai.engines.resume import RunIdentity

    net = torch.nn.Linear(3, 2)
    run = RunIdentity({"learning_rate": 0.01})
    engine = Engine(lambda e, b: None)
    CheckpointSaver(save_dir=str(tmp_path), save_dict={"model": net, "config": CheckpointInfo(["lesion"], [8, 8])},
                    run=run, save_final=True, final_filename="model.pt").attach(engine)
    engine.run([0, 1], max_epochs=3)
    path = tmp_path / "model.pt"
    assert checkpoint_epoch(path) == 3
    ckpt = load_checkpoint(path)
    assert ckpt["config"]["run_id"] == run.run_id and set(ckpt["model"]) == {"weight", "bias"}
    other = torch.nn.Linear(3, 2)
    loader = CheckpointLoader(load_path=str(path), load_dict={"config": CheckpointInfo(["lesion"], [8, 8]),
                                                              "model": other}, strict=True)
    loader(Engine(lambda e, b: None))
    assert torch.equal(other.weight, net.weight)


def test_checkpoint_epoch_is_none_without_a_record(tmp_path):
    from conftest import REPO_ROOT

    from isic_monai.bundle.checkpoint import checkpoint_epoch

    shipped = REPO_ROOT / "bundle" / "models" / "model.pt"
    assert checkpoint_epoch(shipped) is None  # the shipped model predates the field and still loads
    torch.save({"weight": torch.zeros(1)}, tmp_path / "bare.pt")
    assert checkpoint_epoch(tmp_path / "bare.pt") is None
    with pytest.raises(FileNotFoundError, match="nowhere.pt: checkpoint not found"):
        checkpoint_epoch(tmp_path / "nowhere.pt")
