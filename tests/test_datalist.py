"""Datalists: MONAI reads them, splits are deterministic and disjoint, k-fold partitions, fractions are nested."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from isic_monai.data import (
    DataError,
    Sample,
    as_datalist,
    assign_splits,
    build_datalist,
    datalist_entries,
    fraction_subset,
    read_datalist,
    seeded_order,
    synth,
    write_datalist,
)


def _samples(n: int, split: str | None = None) -> list[Sample]:
    return [Sample(f"ISIC_{i:07d}", f"/x/ISIC_{i:07d}.jpg", f"/x/ISIC_{i:07d}_segmentation.png", split=split)
            for i in range(n)]


def _ids(lists: dict[str, list[Sample]], key: str) -> set[str]:
    return {s.id for s in lists[key]}


@pytest.fixture(scope="module")
def isic2018(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("isic2018")
    synth.generate(root, layout="isic2018", n=12, seed=0, size_range=((30, 40), (44, 60)))
    return root


def test_monai_reads_the_datalist(isic2018: Path, tmp_path: Path) -> None:
    from monai.data import load_decathlon_datalist

    dl = build_datalist(isic2018)
    out = write_datalist(dl, tmp_path / "sub" / "datalist.json")
    for key in ("training", "validation"):
        items = load_decathlon_datalist(str(out), is_segmentation=True, data_list_key=key)
        assert items == dl[key] and len(items) > 0
        for e in items:
            assert Path(e["image"]).is_absolute() and Path(e["image"]).is_file() and Path(e["label"]).is_file()
            assert Path(e["attribute_streaks"]).is_file() and len(e["orig_size"]) == 2
    assert datalist_entries(out, "training") == dl["training"]
    assert datalist_entries(out.parent, "validation") == dl["validation"]  # a folder with datalist.json
    assert datalist_entries(out, "testing") == []
    assert datalist_entries(isic2018, "training") == dl["training"]  # a dataset root is built in memory
    assert read_datalist(out)["metadata"]["layout"] == "isic2018"
    meta = json.loads(out.read_text())["metadata"]
    assert {"layout", "root", "seed", "split", "problems"} <= set(meta)


def test_seeded_order_is_stable_and_seed_dependent() -> None:
    ids = [f"id{i}" for i in range(50)]
    assert seeded_order(ids, 0) == seeded_order(list(reversed(ids)), 0)
    assert sorted(seeded_order(ids, 0)) == sorted(ids)
    assert seeded_order(ids, 0) != seeded_order(ids, 1)
    # adding an id does not reshuffle the others
    assert [i for i in seeded_order([*ids, "new"], 0) if i != "new"] == seeded_order(ids, 0)


@pytest.mark.parametrize("ratios", [(0.8, 0.2), (0.7, 0.15, 0.15)])
def test_ratio_splits_deterministic_disjoint(ratios: tuple[float, ...]) -> None:
    samples = _samples(200)
    a, meta = assign_splits(samples, split="ratio", official=False, ratios=ratios, seed=5)
    b, _ = assign_splits(list(reversed(_samples(200))), split="ratio", official=False, ratios=ratios, seed=5)
    assert meta["split"] == "ratio"
    for key in a:
        assert [s.id for s in a[key]] == [s.id for s in b[key]]
    keys = ("training", "validation", "testing")
    assert sum(len(a[k]) for k in keys) == 200
    assert len(set().union(*(_ids(a, k) for k in keys))) == 200  # disjoint and complete
    assert [len(a[k]) for k in keys] == [round(r * 200) for r in ratios] + ([0] if len(ratios) == 2 else [])
    c, _ = assign_splits(samples, split="ratio", official=False, ratios=ratios, seed=6)
    assert _ids(c, "validation") != _ids(a, "validation")


def test_kfold_partitions() -> None:
    samples = _samples(53)
    vals = []
    for fold in range(5):
        lists, meta = assign_splits(samples, split="kfold", official=False, folds=5, fold=fold, seed=1)
        assert meta["fold"] == fold and meta["folds"] == 5
        assert not _ids(lists, "training") & _ids(lists, "validation")
        assert len(lists["training"]) + len(lists["validation"]) == 53
        vals.append(_ids(lists, "validation"))
    assert sorted(len(v) for v in vals) == [10, 10, 11, 11, 11]
    assert set().union(*vals) == {s.id for s in samples} and sum(map(len, vals)) == 53
    with pytest.raises(ValueError):
        assign_splits(samples, split="kfold", official=False, folds=5, fold=5)


def test_fractions_are_nested() -> None:
    samples = _samples(97)
    subsets = {f: {s.id for s in fraction_subset(samples, f, seed=3)} for f in (0.1, 0.25, 0.5, 1.0)}
    assert [len(subsets[f]) for f in (0.1, 0.25, 0.5, 1.0)] == [math.ceil(0.1 * 97), math.ceil(0.25 * 97), 49, 97]
    assert subsets[0.1] < subsets[0.25] < subsets[0.5] < subsets[1.0]
    assert {s.id for s in fraction_subset(samples, 0.1, seed=4)} != subsets[0.1]
    with pytest.raises(ValueError):
        fraction_subset(samples, 0.0, seed=0)
    lists, _ = assign_splits(samples, split="ratio", official=False, seed=3, fraction=0.25)
    full, _ = assign_splits(samples, split="ratio", official=False, seed=3)
    assert _ids(lists, "training") < _ids(full, "training")
    assert _ids(lists, "validation") == _ids(full, "validation")  # the fraction never touches validation


def test_official_splits_and_overrides() -> None:
    samples = _samples(10, "training") + [Sample("v1", "/v1.jpg", "/v1.png", split="validation"),
                                          Sample("t1", "/t1.jpg", "/t1.png", split="testing"),
                                          Sample("u1", "/u1.jpg", split="testing", labelled=False)]
    lists, meta = assign_splits(samples, official=True)
    assert meta["split"] == "official" and "validation_from_training" not in meta
    assert _ids(lists, "validation") == {"v1"} and _ids(lists, "testing") == {"t1", "u1"}
    assert len(lists["training"]) == 10
    # ratio over an official dataset pools training+validation and keeps the labelled test split held out
    lists, _ = assign_splits(samples, split="ratio", official=True, ratios=(0.5, 0.5))
    assert _ids(lists, "testing") == {"t1", "u1"}
    assert len(lists["training"]) + len(lists["validation"]) == 11
    with pytest.raises(ValueError):
        assign_splits(_samples(5), split="official", official=False)


def test_build_options_end_to_end(isic2018: Path) -> None:
    a = build_datalist(isic2018, split="kfold", folds=3, fold=1, seed=2, fraction=0.5)
    b = build_datalist(isic2018, split="kfold", folds=3, fold=1, seed=2, fraction=0.5)
    assert a["training"] == b["training"] and a["validation"] == b["validation"]
    assert len(a["validation"]) == 4 and len(a["training"]) == 4  # ceil(0.5 * 8)
    assert a["metadata"]["split"] == "kfold" and a["metadata"]["fraction"] == 0.5
    assert a["metadata"]["counts"] == {"training": 4, "validation": 4, "testing": 0}


# ------------------------------------------------------------------------------------------- reading datalists


@pytest.mark.parametrize(("content", "kind", "needle"), [
    (None, "not_found", "datalist file not found"),
    ('{"training": [', "bad_datalist", "not valid JSON"),
    ("[1, 2, 3]", "bad_datalist", "'training', 'validation' or 'testing' list"),
    ('{"training": "x"}', "bad_datalist", "'training', 'validation' or 'testing' list"),
    ("{}", "bad_datalist", "'training', 'validation' or 'testing' list"),
])
def test_read_datalist_errors_name_the_file(tmp_path: Path, content: str | None, kind: str, needle: str) -> None:
    path = tmp_path / "dl.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError) as err:
        read_datalist(path)
    assert str(err.value).startswith(f"{path}: ") and needle in str(err.value)
    assert [(p.kind, p.path) for p in err.value.problems] == [(kind, str(path))]


def test_read_datalist_required_lists_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "dl.json"
    path.write_text(json.dumps({"testing": [{"image": "/abs/a.jpg"}]}))
    assert read_datalist(path) == {"training": [], "validation": [], "testing": [{"image": "/abs/a.jpg"}]}
    with pytest.raises(DataError, match="needs a 'training' or 'validation' list"):
        read_datalist(path, require_one_of=("training", "validation"))
    (tmp_path / "datalist.json").write_text(json.dumps({"training": []}))
    assert read_datalist(tmp_path)["training"] == []  # a folder means <folder>/datalist.json


def test_as_datalist_sources(isic2018: Path, tmp_path: Path) -> None:
    dl = build_datalist(isic2018)
    assert as_datalist(dl) is dl
    out = write_datalist(dl, tmp_path / "datalist.json")
    assert as_datalist(out)["training"] == dl["training"]
    assert as_datalist(tmp_path)["validation"] == dl["validation"]  # a folder with datalist.json
    assert as_datalist(isic2018)["training"] == dl["training"]  # a dataset root
    with pytest.raises(DataError, match="datalist file not found"):
        as_datalist(tmp_path / "missing.json")  # a missing JSON file is not taken for a dataset folder
    with pytest.raises(DataError) as err:
        as_datalist(tmp_path / "missing")
    assert err.value.problems[0].kind == "not_found" and "dataset folder" in err.value.problems[0].message


def test_datalist_entries_resolve_relative_paths(tmp_path: Path) -> None:
    entry = {"id": "a", "image": "images/a.jpg", "label": "/abs/a.png", "attribute_globules": None,
             "orig_size": [3, 4]}
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "dl.json").write_text(json.dumps({"training": [entry]}))
    got = datalist_entries(tmp_path / "sub" / "dl.json", "training")
    assert got == [{**entry, "image": str(tmp_path / "sub" / "images" / "a.jpg")}]
    assert datalist_entries({"training": [entry]}, "training") == [entry]  # a dict is used as is
    assert datalist_entries(tmp_path / "sub" / "dl.json", "validation") == []


def test_read_datalist_resolves_relative_paths_like_monai(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hand-written datalist with relative paths means the files beside it, from whatever folder it is read, and
    the same files MONAI's ``load_decathlon_datalist`` reads (also through ``prepare``, which reads it too)."""
    from monai.data import load_decathlon_datalist

    from isic_monai.data import prepare

    data = tmp_path / "data"
    synth.generate(data, layout="plain", n=2, seed=0, size_range=((30, 34), (40, 44)))
    images = sorted((data / "images").iterdir())
    entries = [{"id": p.stem, "image": f"images/{p.name}", "label": f"masks/{p.stem}_segmentation.png"} for p in images]
    (data / "hand.json").write_text(json.dumps({"training": entries, "validation": entries[:1]}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    read = read_datalist("../data/hand.json")
    assert read["training"] == load_decathlon_datalist(str(data / "hand.json"), True, "training")
    assert [e["image"] for e in read["training"]] == [str(p) for p in images]
    assert all(Path(e["label"]).is_file() for e in read["training"])
    assert datalist_entries(data / "hand.json", "validation") == read["validation"]
    cache = prepare("../data/hand.json", tmp_path / "cache", 16, workers=1, progress=False)  # was: not found
    assert [e["image_orig"] for e in cache["training"]] == [str(p) for p in images]


def test_write_datalist_is_atomic(tmp_path: Path) -> None:
    """Rewriting a datalist puts a new, complete file in place by a rename (never writes into the old one, which a
    reader may hold open: a hard link to it still has the old text) and leaves no partial file."""
    import os

    from isic_monai.data.atomic import PARTIAL_GLOB

    out = tmp_path / "dl.json"
    out.write_text("an older datalist")
    os.link(out, tmp_path / "reader.json")
    write_datalist({"training": [{"image": "/a.jpg", "label": "/a.png"}]}, out)
    assert json.loads(out.read_text())["training"][0]["image"] == "/a.jpg"
    assert (tmp_path / "reader.json").read_text() == "an older datalist"
    assert not list(tmp_path.glob(PARTIAL_GLOB))
