"""Bad input: every problem kind is reported with the file named; the build stops or skips with a report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isic_monai.data import DataError, build_datalist, write_datalist
from isic_monai.data.datalist import problems_path
from isic_monai.data.records import Problem
from isic_monai.data.validate import check_image, check_mask


def _img(path: Path, h: int = 30, w: int = 40, mode: str = "RGB", fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    rgb = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    img = rgb.convert(mode) if mode in ("RGBA", "L", "P", "CMYK") else rgb
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    img.save(path, format=fmt)
    return path


def _mask(path: Path, h: int = 30, w: int = 40, values: tuple[int, int] = (0, 255)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((h, w), values[0], np.uint8)
    arr[5:15, 5:25] = values[1]
    Image.fromarray(arr).save(path)
    return path


def _plain(root: Path, ids: list[str]) -> Path:
    for cid in ids:
        _img(root / "images" / f"{cid}.jpg")
        _mask(root / "masks" / f"{cid}.png")
    return root


def _kinds(problems: list[Problem]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in problems:
        out.setdefault(p.kind, []).append(Path(p.path).name)
    return out


def test_good_files_have_no_problems(tmp_path: Path) -> None:
    hw, problems = check_image(_img(tmp_path / "a.jpg"))
    assert hw == (30, 40) and problems == []
    assert check_mask(_mask(tmp_path / "a.png"), (30, 40)) == ((30, 40), [])
    assert check_mask(_mask(tmp_path / "b.png", values=(0, 1)), (30, 40))[1] == []


def test_corrupt_and_truncated_images(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"not an image at all" * 10)
    assert check_image(bad)[1][0].kind == "corrupt"
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert check_image(empty)[1][0].kind == "corrupt"
    full = _img(tmp_path / "full.jpg", 200, 300).read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full[: len(full) // 2])
    hw, problems = check_image(cut)  # the quick default catches it without decoding
    assert hw == (200, 300) and [p.kind for p in problems] == ["truncated"] and "cut.jpg" in problems[0].path
    assert [p.kind for p in check_image(cut, verify="full")[1]] == ["truncated"]
    png = _img(tmp_path / "full.png", 50, 60).read_bytes()
    cut_png = tmp_path / "cut.png"
    cut_png.write_bytes(png[: len(png) - 30])
    assert [p.kind for p in check_image(cut_png)[1]] == ["truncated"]
    cut_mask = tmp_path / "cut_mask.png"
    cut_mask.write_bytes(_mask(tmp_path / "m.png", 200, 300).read_bytes()[:60])
    assert check_mask(cut_mask, (200, 300))[1][0].kind in ("truncated", "corrupt")


def test_modes(tmp_path: Path) -> None:
    for mode in ("RGBA", "L", "P", "CMYK"):
        fmt = "JPEG" if mode == "CMYK" else "PNG"
        hw, problems = check_image(_img(tmp_path / f"{mode}.{fmt.lower()}", mode=mode, fmt=fmt))
        assert hw == (30, 40)
        assert [(p.kind, p.severity) for p in problems] == [("mode_converted", "warning")], mode
        assert mode in problems[0].message
    problems = check_image(_img(tmp_path / "deep.png", mode="I;16"))[1]
    assert [(p.kind, p.severity) for p in problems] == [("bit_depth", "error")] and "16-bit" in problems[0].message
    deep_mask = tmp_path / "deep_mask.png"
    Image.fromarray(np.zeros((30, 40), np.uint16)).save(deep_mask)
    assert check_mask(deep_mask, (30, 40))[1][0].kind == "bit_depth"
    rgb_mask = tmp_path / "rgb_mask.png"
    Image.fromarray(np.dstack([np.asarray(Image.open(_mask(tmp_path / "m.png")))] * 3)).save(rgb_mask)
    assert [(p.kind, p.severity) for p in check_mask(rgb_mask, (30, 40))[1]] == [("mode_converted", "warning")]


def test_mask_values_and_size(tmp_path: Path) -> None:
    grey = _mask(tmp_path / "grey.png", values=(0, 128))
    arr = np.asarray(Image.open(grey)).copy()
    arr[0, 0] = 255
    Image.fromarray(arr).save(grey)
    problems = check_mask(grey, (30, 40))[1]
    assert [p.kind for p in problems] == ["non_binary"] and "0, 128, 255" in problems[0].message
    assert [p.kind for p in check_mask(_mask(tmp_path / "s.png", 20, 40), (30, 40))[1]] == ["size_mismatch"]
    transposed = check_mask(_mask(tmp_path / "t.png", 40, 30), (30, 40))[1]
    assert transposed[0].kind == "size_mismatch" and "transposed" in transposed[0].message


def _bad_dataset(root: Path) -> Path:
    """A plain dataset with two good pairs and one example of every structural and content error."""
    _plain(root, ["good1", "good2"])
    (root / "images" / "corrupt.jpg").write_bytes(b"garbage")
    _mask(root / "masks" / "corrupt.png")
    full = _img(root / "x.jpg", 100, 100).read_bytes()
    (root / "x.jpg").unlink()
    (root / "images" / "truncated.jpg").write_bytes(full[:400])
    _mask(root / "masks" / "truncated.png", 100, 100)
    _img(root / "images" / "nomask.jpg")
    _mask(root / "masks" / "orphan_segmentation.png")
    _img(root / "images" / "wrongsize.jpg")
    _mask(root / "masks" / "wrongsize.png", 31, 40)
    _img(root / "images" / "deep.png", mode="I;16")
    _mask(root / "masks" / "deep_mask.png")
    _img(root / "images" / "nonbin.jpg")
    _mask(root / "masks" / "nonbin.png", values=(3, 200))
    _img(root / "images" / "dup.jpg")
    _img(root / "images" / "dup.png")
    _mask(root / "masks" / "dup.png")
    _img(root / "images" / "alpha.png", mode="RGBA")
    _mask(root / "masks" / "alpha_mask.png")
    _img(root / "images" / "grey.png", mode="L")
    _mask(root / "masks" / "grey_mask.png")
    return root


EXPECTED = {
    "corrupt": ["corrupt.jpg"], "truncated": ["truncated.jpg"], "missing_mask": ["nomask.jpg"],
    "missing_image": ["orphan_segmentation.png"], "size_mismatch": ["wrongsize.png"], "bit_depth": ["deep.png"],
    "non_binary": ["nonbin.png"], "duplicate_id": ["dup.png"], "mode_converted": ["alpha.png", "grey.png"],
}


def test_build_stops_with_the_complete_list(tmp_path: Path) -> None:
    root = _bad_dataset(tmp_path / "ds")
    with pytest.raises(DataError) as err:
        build_datalist(root)
    kinds = _kinds(err.value.problems)
    assert {k: sorted(v) for k, v in kinds.items()} == EXPECTED
    assert "corrupt.jpg" in str(err.value)


def test_skip_bad_keeps_good_items_and_reports(tmp_path: Path) -> None:
    root = _bad_dataset(tmp_path / "ds")
    dl = build_datalist(root, skip_bad=True, split="ratio", ratios=(1.0, 0.0))
    kept = sorted(e["id"] for k in ("training", "validation", "testing") for e in dl[k])
    assert kept == ["alpha", "dup", "good1", "good2", "grey"]  # warnings keep the item; the first "dup" is kept
    assert sorted(dl["metadata"]["skipped"]) == ["corrupt", "deep", "nomask", "nonbin", "truncated", "wrongsize"]
    out = write_datalist(dl, tmp_path / "dl.json")
    report = json.loads(problems_path(out).read_text())
    assert report["errors"] == 8 and report["warnings"] == 2
    assert {k: sorted(v) for k, v in _kinds([Problem.from_dict(p) for p in report["problems"]]).items()} == EXPECTED


def test_full_verify_decodes_images(tmp_path: Path) -> None:
    root = _plain(tmp_path / "ds", ["a", "b"])
    data = bytearray((root / "images" / "a.jpg").read_bytes())
    start = data.index(b"\xff\xda") + 20  # an invalid marker inside the entropy-coded data; end marker intact
    data[start:start + 4] = b"\xff\x01\xff\xc4"
    (root / "images" / "a.jpg").write_bytes(bytes(data))
    assert build_datalist(root, split="ratio")["metadata"]["problems"] == []  # quick: end marker intact
    with pytest.raises(DataError) as err:
        build_datalist(root, verify="full")
    assert [(Path(p.path).name, p.kind) for p in err.value.problems] == [("a.jpg", "corrupt")]


def test_draft_decoding_still_catches_damaged_jpegs(tmp_path: Path) -> None:
    full = _img(tmp_path / "full.jpg", 400, 600).read_bytes()
    assert check_image(tmp_path / "full.jpg", "full", draft=True) == ((400, 600), [])  # the file's size, not 1/8
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full[: int(len(full) * 0.6)])
    assert [p.kind for p in check_image(cut, "full", draft=True)[1]] == ["truncated"]
    data = bytearray(full)
    start = data.index(b"\xff\xda") + 20
    data[start:start + 4] = b"\xff\x01\xff\xc4"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(bytes(data))
    assert [p.kind for p in check_image(broken, "full", draft=True)[1]] == ["corrupt"]


def _square(x: int) -> int:
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_progress_map_keeps_input_order(workers: int) -> None:
    from isic_monai.data.parallel import progress_map

    items = list(range(40, 0, -1))
    assert progress_map(_square, items, workers=workers) == [x * x for x in items]
    assert progress_map(_square, [], workers=workers) == []
