"""Tests for isic_monai.data.selection: data resolution and entry checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from isic_monai import ATTRIBUTES
from isic_monai.data.selection import (
    BundleDataError,
    load_datalist,
    original_labels,
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


def test_relative_paths_resolve_against_the_datalist_not_the_current_folder(tmp_path, monkeypatch):
    """A hand-written datalist with relative paths, used by the bundle from another folder: its entries name the
    files beside the datalist (as MONAI's ``load_decathlon_datalist`` resolves them), not files of the current
    folder. Through ``resolve_datalist`` and through the shipped ``train.yaml``'s ``datalist`` id."""
    from conftest import REPO_ROOT, TRAIN
    from monai.bundle import ConfigParser

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "images" / "a.jpg").write_bytes(b"")
    entry = {"image": "images/a.jpg", "label": "masks/a_segmentation.png", "id": "a"}
    (data / "dl.json").write_text(json.dumps({"training": [entry], "validation": [entry]}))
    bundle_dir = tmp_path / "bundle"
    (bundle_dir / "images").mkdir(parents=True)  # a decoy in the current folder
    monkeypatch.chdir(bundle_dir)
    expected = {"image": str(data / "images" / "a.jpg"), "label": str(data / "masks" / "a_segmentation.png"),
                "id": "a"}
    assert resolve_datalist(datalist_file="../data/dl.json")["training"] == [expected]
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / TRAIN))
    parser["datalist_file"] = "../data/dl.json"
    assert parser.get_parsed_content("datalist")["validation"] == [expected]


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
