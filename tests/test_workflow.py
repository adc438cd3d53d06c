"""Tests for isic_monai.workflow: data resolution, entry checks, checkpoint records, rare-attribute sampling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from isic_monai import ATTRIBUTES
from isic_monai.workflow import (
    BundleDataError,
    CheckpointInfo,
    check_size,
    load_datalist,
    original_labels,
    rare_attribute_sampler,
    rare_attribute_weights,
    read_checkpoint_info,
    require_attributes,
    resolve_datalist,
    select,
)

# ------------------------------------------------------------------------------------------- resolve_datalist


def test_resolve_nothing_names_the_options():
    with pytest.raises(BundleDataError) as err:
        resolve_datalist()
    message = str(err.value)
    for needle in ("--datalist_file", "--dataset_dir", "isic-monai synth"):
        assert needle in message


def test_missing_datalist_file(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(BundleDataError, match="datalist file not found") as err:
        resolve_datalist(datalist_file=path)
    assert str(path) in str(err.value)


def test_invalid_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"training": [')
    with pytest.raises(BundleDataError, match="not valid JSON") as err:
        resolve_datalist(datalist_file=str(path))
    assert str(path) in str(err.value)


@pytest.mark.parametrize("content", ['{"testing": []}', "[1, 2, 3]", '{"training": "x"}'])
def test_json_without_lists(tmp_path, content):
    path = tmp_path / "nolists.json"
    path.write_text(content)
    with pytest.raises(BundleDataError, match="'training' or 'validation' list") as err:
        load_datalist(path)
    assert str(path) in str(err.value)


def test_datalist_file_fills_missing_lists(tmp_path):
    path = tmp_path / "dl.json"
    entry = {"image": "/abs/a.jpg", "label": "/abs/a_segmentation.png"}
    path.write_text(json.dumps({"training": [entry]}))
    data = resolve_datalist(datalist_file=path, dataset_dir=tmp_path / "ignored")  # the file wins
    assert data["training"] == [entry]
    assert data["validation"] == [] and data["testing"] == []


def test_dataset_dir_not_a_folder(tmp_path):
    with pytest.raises(BundleDataError, match="dataset_dir is not a folder"):
        resolve_datalist(dataset_dir=tmp_path / "missing")


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    from isic_monai.data.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, layout="isic2018", n=10, seed=0, size_range=((40, 48), (48, 64)))
    return root


@pytest.mark.parametrize(("val_fraction", "n_val"), [(0.2, 2), (0.3, 3), (0.5, 5)])
def test_dataset_dir_split_follows_val_fraction(synth_dir, val_fraction, n_val):
    data = resolve_datalist(dataset_dir=synth_dir, val_fraction=val_fraction, seed=0)
    assert len(data["validation"]) == n_val
    assert len(data["training"]) == 10 - n_val
    ids = [e["id"] for e in data["training"] + data["validation"]]
    assert sorted(ids) == [f"ISIC_{i:07d}" for i in range(10)]
    for entry in data["training"]:
        assert Path(entry["image"]).is_absolute() and Path(entry["image"]).is_file()
        assert Path(entry["label"]).is_file()
        assert all(f"attribute_{name}" in entry for name in ATTRIBUTES)


# ------------------------------------------------------------------------------------------------- select


def test_select_returns_entries():
    entries = [{"image": "a.jpg", "label": "a.png"}, {"image": "b.jpg", "attribute_streaks": "b.png"}]
    assert select({"training": entries}, "training") == entries


def test_select_empty_split():
    with pytest.raises(BundleDataError, match="no 'validation' entries"):
        select({"training": [{"image": "a", "label": "b"}], "validation": []}, "validation")
    with pytest.raises(BundleDataError, match="no 'testing' entries"):
        select({}, "testing")


def test_select_unlabelled():
    data = {"training": [{"image": "a.jpg", "label": "a.png"}, {"image": "b.jpg"}, {"image": "c.jpg"}]}
    with pytest.raises(BundleDataError, match="2 'training' entries have no label, e.g. b.jpg"):
        select(data, "training")
    assert len(select(data, "training", require_labels=False)) == 3


def test_require_attributes():
    good = [{"image": "a.jpg", "attribute_globules": None}]
    assert require_attributes(good) == good
    with pytest.raises(BundleDataError, match="b.jpg: no attribute_<name> keys"):
        require_attributes(good + [{"image": "b.jpg", "label": "b.png"}])


# ---------------------------------------------------------------------------------------------- check_size


def test_check_size_accepts_multiples():
    assert check_size([64, 96], 16) == [64, 96]
    assert check_size((32.0, 48), 16) == [32, 48]


def test_check_size_refuses_non_multiple():
    with pytest.raises(ValueError, match="multiple of 16"):
        check_size([100, 100], 16)
    with pytest.raises(ValueError, match="multiple of 32"):
        check_size([64, 80], 32)


@pytest.mark.parametrize("size", [[64], [64, 64, 64], [], [0, 64], [-16, 64]])
def test_check_size_refuses_bad_shape(size):
    with pytest.raises(ValueError, match="two positive integers"):
        check_size(size, 16)


# ------------------------------------------------------------------------------------------ original_labels


def test_original_labels_swaps_label_and_keeps_size():
    entry = {"image": "/c/a.png", "label": "/c/a_seg.png", "label_orig": "/o/a_seg.png", "image_orig": "/o/a.jpg",
             "orig_size": [767, 1022]}
    (out,) = original_labels([entry])
    assert out["label"] == "/o/a_seg.png"
    assert out["orig_size"] == [767, 1022]
    assert out["image"] == "/c/a.png"  # the network still reads the cached image
    assert entry["label"] == "/c/a_seg.png"  # input not mutated


def test_original_labels_drops_size_when_attribute_has_no_orig():
    entry = {"image": "/c/a.png", "label": "/c/a_seg.png", "label_orig": "/o/a_seg.png",
             "attribute_streaks": "/c/a_streaks.png", "attribute_globules": None, "orig_size": [10, 20]}
    (out,) = original_labels([entry])
    assert "orig_size" not in out
    assert out["label"] == "/c/a_seg.png"
    assert out["attribute_streaks"] == "/c/a_streaks.png"


def test_original_labels_none_attribute_ignored():
    entry = {"label": "/c/s.png", "label_orig": "/o/s.png", "attribute_globules": None, "orig_size": [4, 5]}
    (out,) = original_labels([entry])
    assert out["label"] == "/o/s.png" and out["orig_size"] == [4, 5]
    assert out["attribute_globules"] is None


# ------------------------------------------------------------------------------------------ CheckpointInfo


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


# ------------------------------------------------------------------------------------ rare attribute sampling


def _mask(path: Path, on: bool) -> str:
    arr = np.zeros((6, 8), dtype=np.uint8)
    if on:
        arr[2, 3] = 255
    Image.fromarray(arr, mode="L").save(path)
    return str(path)


def _entries(tmp_path: Path, shown: list[set[str]], none_paths: dict[int, set[str]] | None = None) -> list[dict]:
    none_paths = none_paths or {}
    entries = []
    for i, present in enumerate(shown):
        entry = {"image": f"/x/{i}.jpg"}
        for name in ATTRIBUTES:
            if name in none_paths.get(i, set()):
                entry[f"attribute_{name}"] = None
            else:
                entry[f"attribute_{name}"] = _mask(tmp_path / f"{i}_{name}.png", name in present)
        entries.append(entry)
    return entries


def test_rare_attribute_weights_hand_computed(tmp_path):
    # pigment_network in 2/4 images, streaks in 1/4, nothing in 2/4
    shown = [{"pigment_network"}, {"pigment_network", "streaks"}, set(), set()]
    entries = _entries(tmp_path, shown, none_paths={3: {"globules", "streaks"}})
    # e0: 1/0.5 = 2; e1: rarest is streaks 1/0.25 = 4; e2, e3: none-group 1/0.5 = 2
    assert rare_attribute_weights(entries) == pytest.approx([2.0, 4.0, 2.0, 2.0])
    assert rare_attribute_weights(entries, power=2.0) == pytest.approx([4.0, 16.0, 4.0, 4.0])
    assert rare_attribute_weights(entries, power=0.0) == pytest.approx([1.0] * 4)


def test_rare_attribute_weights_every_image_shows_something(tmp_path):
    shown = [{"globules"}, {"globules"}, {"globules"}, {"milia_like_cyst", "globules"}, {"negative_network"}]
    entries = _entries(tmp_path, shown)
    # globules 4/5 -> 1.25, milia 1/5 -> 5, negative 1/5 -> 5
    assert rare_attribute_weights(entries) == pytest.approx([1.25, 1.25, 1.25, 5.0, 5.0])


def test_rare_attribute_sampler_deterministic(tmp_path):
    shown = [{"pigment_network"}, {"streaks"}, set(), set(), set(), set(), {"pigment_network"}, set()]
    entries = _entries(tmp_path, shown)
    first = list(rare_attribute_sampler(entries, seed=3))
    second = list(rare_attribute_sampler(entries, seed=3))
    assert first == second
    assert len(first) == len(entries)
    assert all(0 <= i < len(entries) for i in first)
    sampler = rare_attribute_sampler(entries, seed=3)
    # none-group 5/8 -> 1.6; pigment 2/8 -> 4; streaks 1/8 -> 8
    expected = torch.tensor([4.0, 8.0, 1.6, 1.6, 1.6, 1.6, 4.0, 1.6], dtype=torch.double)
    torch.testing.assert_close(sampler.weights, expected)
    others = {tuple(rare_attribute_sampler(entries, seed=s)) for s in range(4, 10)}
    assert len(others | {tuple(first)}) > 1  # the seed matters


def test_check_settings_accepts_good_and_names_every_bad_value() -> None:
    from isic_monai.workflow import check_settings

    good = {"max_epochs": 3, "batch_size": 2, "val_interval": 1, "learning_rate": 1e-3, "val_fraction": 0.2,
            "threshold": 0.5, "unrelated": "kept"}
    assert check_settings(**good) == good
    with pytest.raises(ValueError) as err:
        check_settings(max_epochs=0, batch_size=2.5, learning_rate=0, val_fraction=1.0, threshold=1.0,
                       val_interval=True)
    message = str(err.value)
    for name in ("max_epochs", "batch_size", "learning_rate", "val_fraction", "threshold", "val_interval"):
        assert f"--{name}" in message
