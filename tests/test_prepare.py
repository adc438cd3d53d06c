"""Resized cache: sizes, original sizes and paths, resume, conversions, orientation through MONAI and back."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isic_monai.data import DataError, build_datalist, datalist_entries, prepare, synth, write_datalist
from isic_monai.data.imageio import open_rgb, target_size
from isic_monai.data.masks import read_mask, read_mask_resized, resize_mask
from isic_monai.data.prepare import prepare_entry


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ISIC 2018 layout with wide non-square images (H 40-50, W 70-90)."""
    root = tmp_path_factory.mktemp("wide2018")
    synth.generate(root, layout="isic2018", n=4, seed=1, size_range=((40, 50), (70, 90)))
    return root


def test_target_size() -> None:
    assert target_size((767, 1022), 256) == (192, 256)
    assert target_size((1022, 767), 256) == (256, 192)
    assert target_size((767, 1022), (128, 160)) == (128, 160)
    assert target_size((767, 1022), [256]) == (192, 256)


def test_draft_decodes_at_reduced_scale(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (900, 1200, 3), dtype=np.uint8)).save(path)
    small = open_rgb(path, draft_hw=(96, 128))
    assert small.mode == "RGB" and small.size == (150, 113)  # 1/8-scale DCT decoding, still >= the target
    assert open_rgb(path).size == (1200, 900)


def test_prepare_sizes_metadata_and_resume(wide: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    dl = prepare(wide, cache, 32, workers=1, progress=False)
    entries = dl["training"] + dl["validation"]
    assert len(entries) == 4 and (cache / "datalist.json").is_file()
    for e in entries:
        h, w = e["orig_size"]
        with Image.open(e["image_orig"]) as orig:
            assert orig.size == (w, h)
        with Image.open(e["image"]) as img:
            assert img.mode == "RGB" and img.size == (32, round(h * 32 / w))
        label = np.asarray(Image.open(e["label"]))
        assert label.shape == (round(h * 32 / w), 32) and set(np.unique(label)) <= {0, 255}
        assert Path(e["label_orig"]).parent.name == "ISIC2018_Task1_Training_GroundTruth"
        assert Path(e["attribute_globules"]).parent == cache / "attributes"
    meta = dl["metadata"]["prepared"]
    assert meta["size"] == 32 and meta["files_written"] == 4 * 7
    assert datalist_entries(cache, "training") == dl["training"]  # the cache datalist reads back unchanged
    from monai.data import load_decathlon_datalist

    monai_items = load_decathlon_datalist(str(cache / "datalist.json"), is_segmentation=True, data_list_key="training")
    assert monai_items == dl["training"]  # MONAI reads the cache datalist
    again = prepare(wide, cache, 32, workers=1, progress=False)
    assert again["metadata"]["prepared"]["files_written"] == 0  # resumed: every output valid
    victim = Path(entries[0]["image"])
    victim.write_bytes(victim.read_bytes()[:50])  # a damaged output is rebuilt
    third = prepare(tmp_path / "cache" / "datalist.json", cache, 32, workers=1, progress=False)
    assert third["metadata"]["prepared"]["files_written"] == 1
    Image.open(victim).load()
    other = prepare(wide, cache, [24, 24], workers=2, progress=False)  # exact H W, in a process pool
    assert other["metadata"]["prepared"]["files_written"] == 28
    assert Image.open(other["training"][0]["image"]).size == (24, 24)
    assert not list(cache.rglob("*.tmp*"))


@pytest.mark.parametrize("image_format", ["png", "jpg"])
def test_changed_source_rebuilds_its_cache_file(tmp_path: Path, image_format: str) -> None:
    """A source photo or mask replaced after ``prepare`` (same size, so the cache file still looks valid) is rebuilt
    from the new source on the next run, and counted; the unchanged ones are reused untouched."""
    import os

    from isic_monai.data.prepare import SOURCE_KEY, source_stamp

    data = tmp_path / "data"
    synth.generate(data, layout="isic2018", n=3, seed=2, size_range=((40, 40), (60, 60)))
    cache = tmp_path / "cache"
    dl = prepare(data, cache, 30, workers=1, progress=False, image_format=image_format)
    entry = sorted(dl["training"] + dl["validation"], key=lambda e: e["id"])[0]
    image, label = Path(entry["image"]), Path(entry["label"])
    with Image.open(image) as img:
        recorded = img.info.get(SOURCE_KEY, img.info.get("comment"))
    assert json.loads(recorded) == json.loads(source_stamp(entry["image_orig"]))  # the record is in the file
    before = {p: p.stat().st_mtime_ns for sub in ("images", "labels", "attributes") for p in (cache / sub).iterdir()
              if p not in (image, label)}
    assert len(before) == 3 * 7 - 2
    old_image, old_label = np.asarray(Image.open(image)), np.asarray(Image.open(label))
    # the photo and its lesion mask replaced by others of the same size (a re-download, a corrected mask)
    Image.fromarray(np.full((40, 60, 3), (200, 30, 30), np.uint8)).save(entry["image_orig"])
    Image.fromarray(np.pad(np.full((20, 30), 255, np.uint8), ((10, 10), (15, 15)))).save(entry["label_orig"])
    mtime = os.stat(entry["image_orig"]).st_mtime_ns
    os.utime(entry["image_orig"], ns=(mtime + 10**9, mtime + 10**9))  # a later time, even on a coarse clock
    again = prepare(data, cache, 30, workers=1, progress=False, image_format=image_format)
    meta = again["metadata"]["prepared"]
    assert meta["files_written"] == 2 and meta["files_rebuilt"] == 2
    new_image, new_label = np.asarray(Image.open(image)), np.asarray(Image.open(label))
    assert not np.array_equal(new_image, old_image) and abs(new_image[..., 0].mean() - 200) < 10
    assert not np.array_equal(new_label, old_label)
    np.testing.assert_array_equal(new_label, np.asarray(read_mask_resized(entry["label_orig"], new_label.shape)))
    assert {p: p.stat().st_mtime_ns for p in before} == before  # the others reused as they were
    third = prepare(data, cache, 30, workers=1, progress=False, image_format=image_format)
    assert third["metadata"]["prepared"]["files_written"] == 0  # and now the rebuilt ones are current


def test_orientation_through_monai_and_back(wide: Path, tmp_path: Path) -> None:
    """The cache read by the bundle's readers is (C, H, W); resized back to ``orig_size`` (H, W) it overlays the
    original mask with no transpose anywhere."""
    from monai.transforms import LoadImage, Resize

    from isic_monai.transforms import mask_reader, rgb_reader

    dl = prepare(wide, tmp_path / "cache", 48, workers=1, progress=False)
    e = dl["training"][0]
    h, w = e["orig_size"]
    assert w > h
    img = LoadImage(reader=rgb_reader(), image_only=True, ensure_channel_first=True)(e["image"])
    ph, pw = target_size((h, w), 48)
    assert tuple(img.shape) == (3, ph, pw)  # (C, H, W)
    lab = LoadImage(reader=mask_reader(), image_only=True, ensure_channel_first=True)(e["label"])
    restored = Resize(spatial_size=(h, w), mode="nearest")(lab)[0]
    out = tmp_path / "restored.png"
    Image.fromarray(np.asarray(restored).astype(np.uint8)).save(out)
    back = np.asarray(Image.open(out)) > 127
    orig = np.asarray(Image.open(e["label_orig"])) > 127
    assert back.shape == orig.shape == (h, w)
    dice = 2 * (back & orig).sum() / (back.sum() + orig.sum())
    assert dice > 0.9


def test_modes_converted_in_cache(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rgb = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("RGBA").save(root / "images" / "a.png")
    Image.fromarray(rgb).convert("L").save(root / "images" / "b.png")
    m = np.zeros((30, 50), bool)
    m[5:20, 10:40] = True
    for cid in "ab":
        Image.fromarray(m).save(root / "masks" / f"{cid}.png")  # mode "1"
    dl = prepare(root, tmp_path / "cache", 25, workers=1, progress=False, split="ratio", ratios=(1, 0))
    assert [p["kind"] for p in dl["metadata"]["problems"]] == ["mode_converted", "mode_converted"]
    for e in dl["training"]:
        assert Image.open(e["image"]).mode == "RGB" and Image.open(e["image"]).size == (25, 15)
        assert set(np.unique(np.asarray(Image.open(e["label"])))) == {0, 255}


def test_prepare_failures_are_reported(wide: Path, tmp_path: Path) -> None:
    dl = build_datalist(wide)
    dl["training"][0]["image"] = str(tmp_path / "gone.jpg")
    src = write_datalist(dl, tmp_path / "dl.json")
    with pytest.raises(DataError) as err:
        prepare(src, tmp_path / "cache", 32, workers=1, progress=False)
    assert [(Path(p.path).name, p.kind) for p in err.value.problems] == [("gone.jpg", "prepare_failed")]
    ok = prepare(src, tmp_path / "cache", 32, workers=1, progress=False, skip_bad=True)
    assert len(ok["training"]) == len(dl["training"]) - 1
    report = json.loads((tmp_path / "cache" / "datalist.problems.json").read_text())
    assert any(p["kind"] == "prepare_failed" for p in report["problems"])


@pytest.mark.realdata
def test_real_isic2018_full_size(shared_data: Path, tmp_path: Path) -> None:
    dl = build_datalist(shared_data / "isic2018_sample")
    start = time.perf_counter()
    out = prepare(dl, tmp_path / "cache", 256, workers=2, progress=False)
    seconds = time.perf_counter() - start
    print(f"prepare 6 full-size ISIC 2018 images (+ masks) with 2 workers: {seconds:.2f} s, "
          f"{6 / seconds:.1f} images/s")
    entries = out["training"] + out["validation"]
    assert len(entries) == 6
    for e in entries:
        assert e["orig_size"] == [767, 1022]
        assert Image.open(e["image"]).size == (256, 192)
        assert Image.open(e["attribute_pigment_network"]).size == (256, 192)
        assert e["attribute_streaks"] is None


@pytest.mark.parametrize("mode", ["L", "P", "1", "RGB", "LA"])
@pytest.mark.parametrize("scale", [255, 1])
def test_resized_mask_equals_binarise_then_resize(tmp_path: Path, mode: str, scale: int) -> None:
    """The fast path (resize, then binarise at the small size) gives exactly the mask of the plain path."""
    rng = np.random.default_rng(3)
    values = (rng.random((61, 83)) > 0.6).astype(np.uint8) * scale
    if mode == "1" and scale == 1:
        pytest.skip("mode 1 stores 0/255")
    img = Image.fromarray(values, mode="L")
    img = img.convert(mode) if mode != "P" else img.convert("P")
    path = tmp_path / f"m_{mode}.png"
    img.save(path)
    fast = np.asarray(read_mask_resized(path, (20, 27)))
    plain = np.asarray(resize_mask(read_mask(path), (20, 27)))
    assert fast.shape == (20, 27) and set(np.unique(fast)) <= {0, 255}
    np.testing.assert_array_equal(fast, plain)
    assert fast.any()
    with pytest.raises(ValueError, match=r"mask is 83x61 \(WxH\) but its image is 80x61"):
        read_mask_resized(path, (20, 27), expected_hw=(61, 80))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_prepare_entry_reports_a_photo_with_a_huge_header(tmp_path: Path) -> None:
    """A small PNG whose header declares 100000 x 100000 pixels (Pillow's DecompressionBombError, not an OSError)
    is a bad item named in the problems, not a crash of the whole prepare."""
    import struct
    import zlib

    bomb = tmp_path / "ISIC_0000001.png"
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + header + _png_chunk(b"IDAT", zlib.compress(b"\0" * 256))
                     + _png_chunk(b"IEND", b""))
    for sub in ("images", "labels"):
        (tmp_path / "cache" / sub).mkdir(parents=True)
    entry, problems, written, stale = prepare_entry({"id": "ISIC_0000001", "image": str(bomb)}, tmp_path / "cache", 64)
    assert entry is None and written == 0 and stale == []
    assert len(problems) == 1 and problems[0].path == str(bomb) and "ISIC_0000001" in problems[0].message


@pytest.mark.slow
def test_killed_prepare_resumes_without_redoing_finished_pairs(tmp_path: Path) -> None:
    """``isic-monai prepare`` killed (SIGKILL) midway, then run again: it writes only the files the kill left
    missing, leaves the finished ones untouched, and the cache and its datalist equal an uninterrupted run's."""
    import os
    import signal
    import subprocess
    import sys

    from isic_monai.data.atomic import PARTIAL_GLOB

    n = 240
    synth.generate(tmp_path / "data", layout="isic2017", n=n, seed=5, size_range=((300, 360), (400, 480)))
    exe = [sys.executable, "-m", "isic_monai.cli", "prepare", str(tmp_path / "data"), "--size", "96", "--workers",
           "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = tmp_path / "full"
    subprocess.run([*exe, "-o", str(full)], check=True, capture_output=True, env=env, timeout=600)
    expected = {p.relative_to(full): p.read_bytes() for p in full.rglob("*.png")}
    assert len(expected) == 2 * n

    cache = tmp_path / "cache"
    killed = subprocess.Popen([*exe, "-o", str(cache)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    while killed.poll() is None and time.monotonic() < deadline and len(list(cache.glob("labels/*.png"))) < 20:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    # a partial file the kill interrupted (``.<stem>.<random>.partial.png``) is not a finished file
    before = {p.relative_to(cache): p.stat().st_mtime_ns for p in cache.rglob("*.png") if not p.match(PARTIAL_GLOB)}
    assert 20 <= len(before) < 2 * n, f"the kill came at {len(before)} of {2 * n} files: not midway"
    assert not (cache / "datalist.json").exists()  # the datalist is written last

    proc = subprocess.run([*exe, "-o", str(cache)], check=True, capture_output=True, text=True, env=env, timeout=600)
    resumed = json.loads((cache / "datalist.json").read_text())
    assert resumed["metadata"]["prepared"]["files_written"] == 2 * n - len(before), proc.stdout  # nothing twice
    assert {p: cache.joinpath(p).stat().st_mtime_ns for p in before} == before  # the finished files untouched
    assert {p.relative_to(cache): p.read_bytes() for p in cache.rglob("*.png")} == expected
    reference = json.loads((full / "datalist.json").read_text())
    for split in ("training", "validation", "testing"):  # the same entries, each in its own cache
        assert json.loads(json.dumps(resumed.get(split, [])).replace(str(cache), str(full))) == reference.get(split, [])
    assert not list(cache.rglob(PARTIAL_GLOB))
