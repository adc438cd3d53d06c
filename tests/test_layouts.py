"""Layout detection and parsing: every layout (fixtures in tmp folders) and the real data when present."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isic_monai import ATTRIBUTES
from isic_monai.data import DataError, build_datalist, detect_layout, parse_dataset, synth
from isic_monai.data.layouts import LAYOUTS


def _img(path: Path, h: int = 30, w: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _mask(path: Path, h: int = 30, w: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((h, w), np.uint8)
    arr[h // 4: h // 2, w // 4: 3 * w // 4] = 255
    Image.fromarray(arr).save(path)
    return path


@pytest.mark.parametrize("layout", LAYOUTS)
def test_synth_layouts_detected_and_parsed(tmp_path: Path, layout: str) -> None:
    summary = synth.generate(tmp_path, layout=layout, n=5, seed=3, size_range=((30, 40), (44, 60)))
    assert detect_layout(tmp_path) == layout
    parsed = parse_dataset(tmp_path)
    assert parsed.layout == layout
    assert sorted(s.id for s in parsed.samples) == sorted(c["id"] for c in summary["cases"])
    by_id = {c["id"]: c for c in summary["cases"]}
    for s in parsed.samples:
        assert Path(s.image).is_absolute() and Path(s.image) == Path(by_id[s.id]["image"])
        assert s.label == by_id[s.id]["label"]
        if layout == "isic2018":
            assert s.attributes is not None and set(s.attributes) == set(ATTRIBUTES)
            assert all(p is not None and Path(p).is_file() for p in s.attributes.values())
        else:
            assert s.attributes is None
    assert parsed.all_problems() == []
    dl = build_datalist(tmp_path)
    assert sum(len(dl[k]) for k in ("training", "validation", "testing")) == 5
    entry = dl["training"][0]
    assert entry["orig_size"] == list(np.asarray(Image.open(entry["image"])).shape[:2])
    assert ("attribute_globules" in entry) == (layout == "isic2018")


def test_isic2016_training_and_test(tmp_path: Path) -> None:
    for split, ids in (("Training", ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002"]), ("Test", ["ISIC_0000010"])):
        for cid in ids:
            _img(tmp_path / f"ISBI2016_ISIC_Part1_{split}_Data" / f"{cid}.jpg")
            _mask(tmp_path / f"ISBI2016_ISIC_Part1_{split}_GroundTruth" / f"{cid}_Segmentation.png")
    assert detect_layout(tmp_path) == "isic2016"
    dl = build_datalist(tmp_path)
    assert [e["id"] for e in dl["testing"]] == ["ISIC_0000010"]
    assert dl["testing"][0]["label"].endswith("ISIC_0000010_Segmentation.png")  # test with GT keeps its label
    assert len(dl["training"]) + len(dl["validation"]) == 3 and len(dl["validation"]) == 1
    assert dl["metadata"]["split"] == "official" and dl["metadata"]["validation_from_training"] is True


def test_isic2017_all_splits_superpixels_ignored(tmp_path: Path) -> None:
    splits = {"Training": ["ISIC_0000000", "ISIC_0000001"], "Validation": ["ISIC_0000100"],
              "Test_v2": ["ISIC_0000200"]}
    for split, ids in splits.items():
        for cid in ids:
            _img(tmp_path / f"ISIC-2017_{split}_Data" / f"{cid}.jpg")
            _mask(tmp_path / f"ISIC-2017_{split}_Data" / f"{cid}_superpixels.png")
            _mask(tmp_path / f"ISIC-2017_{split}_Part1_GroundTruth" / f"{cid}_segmentation.png")
    (tmp_path / "ISIC-2017_Training_Data" / "ISIC-2017_Training_Data_metadata.csv").write_text("image_id\n")
    dl = build_datalist(tmp_path)
    assert [e["id"] for e in dl["training"]] == ["ISIC_0000000", "ISIC_0000001"]
    assert [e["id"] for e in dl["validation"]] == ["ISIC_0000100"]
    assert [e["id"] for e in dl["testing"]] == ["ISIC_0000200"] and "label" in dl["testing"][0]
    assert dl["metadata"]["problems"] == []


def test_isic2018_unlabelled_inputs_and_nested_unzip(tmp_path: Path) -> None:
    root = tmp_path / "downloads"
    # archives unzipped into a folder of their own name: X/X/files
    tr = root / "ISIC2018_Task1-2_Training_Input" / "ISIC2018_Task1-2_Training_Input"
    for cid in ("ISIC_0000000", "ISIC_0000001"):
        _img(tr / f"{cid}.jpg")
        _mask(root / "ISIC2018_Task1_Training_GroundTruth" / f"{cid}_segmentation.png")
        for name in ATTRIBUTES:
            _mask(root / "ISIC2018_Task2_Training_GroundTruth_v3" / f"{cid}_attribute_{name}.png")
    (tr / "LICENSE.txt").write_text("CC-BY-NC")
    _img(root / "ISIC2018_Task1-2_Validation_Input" / "ISIC_0012255.jpg")
    _img(root / "ISIC2018_Task1-2_Test_Input" / "ISIC_0036309.jpg")
    assert detect_layout(tmp_path) == "isic2018"  # found two levels down
    dl = build_datalist(tmp_path)
    assert sorted(e["id"] for e in dl["testing"]) == ["ISIC_0012255", "ISIC_0036309"]
    assert all("label" not in e and "attribute_streaks" not in e for e in dl["testing"])
    labelled = dl["training"] + dl["validation"]
    assert sorted(e["id"] for e in labelled) == ["ISIC_0000000", "ISIC_0000001"]
    assert all(Path(e[f"attribute_{n}"]).is_file() for e in labelled for n in ATTRIBUTES)
    assert dl["metadata"]["attributes"] == list(ATTRIBUTES)


def test_ham10000_two_parts(tmp_path: Path) -> None:
    for i, part in ((24306, 1), (24307, 1), (34320, 2)):
        _img(tmp_path / f"HAM10000_images_part_{part}" / f"ISIC_{i:07d}.jpg")
        _mask(tmp_path / "HAM10000_segmentations_lesion_tschandl" / f"ISIC_{i:07d}_segmentation.png")
    (tmp_path / "HAM10000_metadata.csv").write_text("lesion_id,image_id\n")
    parsed = parse_dataset(tmp_path)
    assert parsed.layout == "ham10000" and not parsed.official_splits
    assert sorted(s.id for s in parsed.samples) == ["ISIC_0024306", "ISIC_0024307", "ISIC_0034320"]
    assert build_datalist(tmp_path)["metadata"]["split"] == "ratio"


def test_ph2_under_dataset_folder(tmp_path: Path) -> None:
    base = tmp_path / "PH2Dataset" / "PH2 Dataset images"
    for cid in ("IMD002", "IMD003"):
        _img(base / cid / f"{cid}_Dermoscopic_Image" / f"{cid}.bmp")
        m = Image.fromarray(np.eye(30, 40, dtype=bool))  # mode "1" like the real PH2 lesions
        (base / cid / f"{cid}_lesion").mkdir(parents=True)
        m.save(base / cid / f"{cid}_lesion" / f"{cid}_lesion.bmp")
        (base / cid / f"{cid}_roi").mkdir()
    assert detect_layout(tmp_path) == "ph2"
    parsed = parse_dataset(tmp_path)
    assert [s.id for s in parsed.samples] == ["IMD002", "IMD003"]
    assert parsed.samples[0].label.endswith("IMD002_lesion.bmp")
    assert build_datalist(tmp_path)["metadata"]["problems"] == []


def test_plain_mask_name_variants_and_unlabelled(tmp_path: Path) -> None:
    for cid, mask_name in (("a", "a.png"), ("b", "b_mask.png"), ("c", "c_segmentation.png"), ("d", "d_seg.png")):
        _img(tmp_path / "images" / f"{cid}.jpg")
        _mask(tmp_path / "masks" / mask_name)
    parsed = parse_dataset(tmp_path)
    assert parsed.layout == "plain"
    assert {s.id: Path(s.label).name for s in parsed.samples} == {
        "a": "a.png", "b": "b_mask.png", "c": "c_segmentation.png", "d": "d_seg.png"}
    only_images = tmp_path / "infer"
    _img(only_images / "images" / "x.png")
    dl = build_datalist(only_images)
    assert dl["training"] == [] and [e["id"] for e in dl["testing"]] == ["x"] and "label" not in dl["testing"][0]


def test_plain_split_folders(tmp_path: Path) -> None:
    for split, ids in (("train", ["a", "b"]), ("val", ["c"]), ("test", ["d"])):
        for cid in ids:
            _img(tmp_path / split / "images" / f"{cid}.jpg")
            _mask(tmp_path / split / "masks" / f"{cid}_segmentation.png")
    dl = build_datalist(tmp_path)
    assert [[e["id"] for e in dl[k]] for k in ("training", "validation", "testing")] == [["a", "b"], ["c"], ["d"]]


def test_unknown_empty_and_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as err:
        detect_layout(tmp_path / "empty")
    assert err.value.problems[0].kind == "empty"
    other = tmp_path / "other"
    _img(other / "photos" / "x.jpg")
    with pytest.raises(DataError) as err:
        parse_dataset(other)
    p = err.value.problems[0]
    assert p.kind == "unknown_layout" and str(other) in p.message
    assert "ISIC2018_Task1_Training_GroundTruth" in p.message and "HAM10000" in p.message and "images/" in p.message
    with pytest.raises(DataError) as err:
        parse_dataset(tmp_path / "nope")
    assert err.value.problems[0].kind == "not_found"
    with pytest.raises(DataError) as err:  # forcing a layout that is not there
        parse_dataset(other, layout="isic2017")
    assert err.value.problems[-1].kind == "empty"
    with pytest.raises(ValueError):
        parse_dataset(other, layout="isic2019")


def test_ambiguous_layouts(tmp_path: Path) -> None:
    _img(tmp_path / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000000.jpg")
    _img(tmp_path / "ISIC-2017_Training_Data" / "ISIC_0000001.jpg")
    with pytest.raises(DataError) as err:
        detect_layout(tmp_path)
    assert err.value.problems[0].kind == "ambiguous_layout"
    assert parse_dataset(tmp_path, layout="isic2017").samples[0].id == "ISIC_0000001"


@pytest.mark.realdata
def test_real_isic2017_all_pairs(shared_data: Path) -> None:
    start = time.perf_counter()
    dl = build_datalist(shared_data / "isic2017_256x192")
    seconds = time.perf_counter() - start
    print(f"parse+validate 2150 real pairs: {seconds:.2f} s")
    assert dl["metadata"]["layout"] == "plain" and dl["metadata"]["split"] == "official"
    assert len(dl["training"]) == 2000 and len(dl["validation"]) == 150 and dl["testing"] == []
    assert dl["metadata"]["problems"] == []
    assert all(e["orig_size"] == [192, 256] for e in dl["training"] + dl["validation"])
    assert seconds < 20


@pytest.mark.realdata
def test_real_isic2018_sample(shared_data: Path) -> None:
    dl = build_datalist(shared_data / "isic2018_sample")
    entries = dl["training"] + dl["validation"]
    assert sorted(e["id"] for e in entries) == [f"ISIC_{i:07d}" for i in (0, 1, 6, 7, 8, 9)]
    for e in entries:
        assert e["orig_size"] == [767, 1022]
        assert e["attribute_pigment_network"].endswith(f"{e['id']}_attribute_pigment_network.png")
        assert all(e[f"attribute_{n}"] is None for n in ATTRIBUTES if n != "pigment_network")
    problems = dl["metadata"]["problems"]
    assert len(problems) == 6 and all(p["kind"] == "missing_attribute" and p["severity"] == "warning"
                                      for p in problems)
    assert "negative_network, streaks, milia_like_cyst, globules" in problems[0]["message"]
