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
