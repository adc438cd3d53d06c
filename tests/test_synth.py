"""Tests for isic_monai.data.synth: layouts on disk, determinism, attribute statistics and learnability."""

from __future__ import annotations

import argparse
import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isic_monai import ATTRIBUTES
from isic_monai.data import synth

SMALL = ((40, 56), (60, 80))  # small, never-square sizes keep the layout tests fast
N = 5


def _rng(seed: int, i: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,)))


def _files(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _check_pair(image: Path, mask: Path, ph2: bool = False) -> tuple[int, int]:
    """Image is RGB, mask is binary ({0, 255} 8-bit, or mode "1" for PH2) and the same size; returns (H, W)."""
    with Image.open(image) as img:
        assert img.mode == "RGB"
        size = img.size
    with Image.open(mask) as m:
        assert m.size == size
        if ph2:
            assert m.mode == "1"
        else:
            assert m.mode == "L"
            values = set(np.unique(np.asarray(m)).tolist())
            assert values <= {0, 255}
            assert 255 in values  # every case has a lesion
    return size[1], size[0]


def _ids(prefix: str = "ISIC_", n: int = N, start: int = 0) -> list[str]:
    return [f"{prefix}{start + i:07d}" for i in range(n)]


@pytest.mark.parametrize(
    ("layout", "split", "image_dir", "mask_dir", "mask_suffix"),
    [
        ("isic2016", "Training", "ISBI2016_ISIC_Part1_Training_Data", "ISBI2016_ISIC_Part1_Training_GroundTruth",
         "_Segmentation.png"),
        ("isic2016", "Test", "ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth",
         "_Segmentation.png"),
        ("isic2017", "Training", "ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth",
         "_segmentation.png"),
        ("isic2017", "Validation", "ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth",
         "_segmentation.png"),
        ("isic2017", "Test", "ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth", "_segmentation.png"),
        ("isic2018", "Training", "ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth",
         "_segmentation.png"),
        ("plain", "Training", "images", "masks", "_segmentation.png"),
    ],
)
def test_flat_layouts(tmp_path: Path, layout: str, split: str, image_dir: str, mask_dir: str,
                      mask_suffix: str) -> None:
    summary = synth.generate(tmp_path, layout=layout, n=N, seed=1, size_range=SMALL, split=split)
    ids = _ids(start={"Training": 0, "Validation": 1_000_000, "Test": 2_000_000}[split])  # splits never share ids
    assert sorted(p.name for p in (tmp_path / image_dir).iterdir()) == [f"{i}.jpg" for i in ids]
    assert sorted(p.name for p in (tmp_path / mask_dir).iterdir()) == [f"{i}{mask_suffix}" for i in ids]
    sizes = [_check_pair(tmp_path / image_dir / f"{i}.jpg", tmp_path / mask_dir / f"{i}{mask_suffix}") for i in ids]
    assert all(h != w for h, w in sizes)
    assert all(SMALL[0][0] <= h <= SMALL[0][1] and SMALL[1][0] <= w <= SMALL[1][1] for h, w in sizes)
    assert summary["images"] == summary["masks"] == N
    assert [c["id"] for c in summary["cases"]] == ids
    expected_dirs = {image_dir, mask_dir}
    if layout == "isic2018":
        expected_dirs.add("ISIC2018_Task2_Training_GroundTruth_v3")
    assert {p.name for p in tmp_path.iterdir()} == expected_dirs


def test_isic2018_attribute_files(tmp_path: Path) -> None:
    summary = synth.generate(tmp_path, layout="isic2018", n=8, seed=3, size_range=SMALL)
    task2 = tmp_path / "ISIC2018_Task2_Training_GroundTruth_v3"
    names = sorted(p.name for p in task2.iterdir())
    assert names == sorted(f"{i}_attribute_{a}.png" for i in _ids(n=8) for a in ATTRIBUTES)
    assert summary["attribute_files"] == 8 * len(ATTRIBUTES)
    seen = dict.fromkeys(ATTRIBUTES, 0)
    for case in summary["cases"]:
        lesion = np.asarray(Image.open(case["label"])) > 0
        for a in ATTRIBUTES:
            with Image.open(task2 / f"{case['id']}_attribute_{a}.png") as im:
                assert im.mode == "L" and im.size == (lesion.shape[1], lesion.shape[0])
                m = np.asarray(im)
            assert set(np.unique(m).tolist()) <= {0, 255}
            assert not (m.astype(bool) & ~lesion).any()
            assert m.any() == (a in case["attributes"])
            seen[a] += int(m.any())
    assert seen == summary["attributes"]
    assert sum(seen.values()) < 8 * len(ATTRIBUTES)  # most attribute files are all zero, as in the real release


@pytest.mark.parametrize("split", ["Validation", "Test"])
def test_isic2018_unlabelled_splits(tmp_path: Path, split: str) -> None:
    summary = synth.generate(tmp_path, layout="isic2018", n=3, seed=0, size_range=SMALL, split=split)
    assert [p.name for p in tmp_path.iterdir()] == [f"ISIC2018_Task1-2_{split}_Input"]
    assert summary["masks"] == 0 and summary["attribute_files"] == 0
    assert all(c["label"] is None for c in summary["cases"])


def test_ham10000_layout(tmp_path: Path) -> None:
    summary = synth.generate(tmp_path, layout="ham10000", n=N, seed=2, size_range=SMALL)
    ids = _ids()
    part1 = sorted(p.name for p in (tmp_path / "HAM10000_images_part_1").iterdir())
    part2 = sorted(p.name for p in (tmp_path / "HAM10000_images_part_2").iterdir())
    assert part1 == [f"{i}.jpg" for i in ids[:3]] and part2 == [f"{i}.jpg" for i in ids[3:]]
    seg = tmp_path / "HAM10000_segmentations_lesion_tschandl"
    for i, name in enumerate(ids):
        part = tmp_path / f"HAM10000_images_part_{1 if i < 3 else 2}"
        _check_pair(part / f"{name}.jpg", seg / f"{name}_segmentation.png")
    with (tmp_path / "HAM10000_metadata.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
    assert [r["image_id"] for r in rows] == ids
    assert all(r["lesion_id"].startswith("HAM_") and r["dx"] in {"nv", "mel", "bkl", "bcc", "akiec", "vasc", "df"}
               and r["sex"] in {"male", "female", "unknown"} for r in rows)
    assert summary["paths"]["metadata"] == str(tmp_path / "HAM10000_metadata.csv")


def test_ph2_layout(tmp_path: Path) -> None:
    synth.generate(tmp_path, layout="ph2", n=3, seed=0, size_range=SMALL)
    root = tmp_path / "PH2 Dataset images"
    assert sorted(p.name for p in root.iterdir()) == ["IMD001", "IMD002", "IMD003"]
    for case in ("IMD001", "IMD002", "IMD003"):
        image = root / case / f"{case}_Dermoscopic_Image" / f"{case}.bmp"
        mask = root / case / f"{case}_lesion" / f"{case}_lesion.bmp"
        _check_pair(image, mask, ph2=True)
        with Image.open(mask) as m:
            assert np.asarray(m).any()


def test_default_sizes_are_varied_and_non_square() -> None:
    sizes = [synth._draw_size(_rng(0, i), synth.DEFAULT_SIZE_RANGE) for i in range(100)]
    hs, ws = zip(*sizes, strict=True)
    assert all(h != w for h, w in sizes)
    assert min(hs) >= 240 and max(hs) <= 360 and min(ws) >= 320 and max(ws) <= 480
    assert len(set(sizes)) > 90


def test_deterministic(tmp_path: Path) -> None:
    a = _files(Path(synth.generate(tmp_path / "a", layout="isic2018", n=4, seed=7, size_range=SMALL)["root"]))
    b = _files(Path(synth.generate(tmp_path / "b", layout="isic2018", n=4, seed=7, size_range=SMALL,
                                   workers=2)["root"]))
    c = _files(Path(synth.generate(tmp_path / "c", layout="isic2018", n=4, seed=8, size_range=SMALL)["root"]))
    assert a == b
    assert a.keys() == c.keys()
    images = [k for k in a if k.endswith(".jpg")]
    assert all(a[k] != c[k] for k in images)


def test_render_case_contract() -> None:
    rgb, lesion, attrs = synth.render_case(_rng(0, 0), 70, 90)
    assert rgb.shape == (70, 90, 3) and rgb.dtype == np.uint8
    assert lesion.shape == (70, 90) and lesion.dtype == bool and lesion.any() and not lesion.all()
    assert tuple(attrs) == ATTRIBUTES
    assert all(m.shape == (70, 90) and m.dtype == bool for m in attrs.values())
    again = synth.render_case(_rng(0, 0), 70, 90)
    assert np.array_equal(again[0], rgb) and np.array_equal(again[1], lesion)


def test_attribute_frequencies_and_lesion_statistics() -> None:
    n = 300
    present = dict.fromkeys(ATTRIBUTES, 0)
    fractions, contrast = [], []
    for i in range(n):
        rgb, lesion, attrs = synth.render_case(_rng(11, i), 60, 80)
        fractions.append(lesion.mean())
        for name, m in attrs.items():
            assert not (m & ~lesion).any(), name  # attribute regions lie inside the lesion
            present[name] += int(m.any())
        lum = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        ring = synth._dilate(lesion, 9) & ~lesion
        if ring.any():
            contrast.append(lum[ring].mean() - lum[lesion].mean())
    freq = {k: v / n for k, v in present.items()}
    targets = synth.ATTRIBUTE_FREQUENCIES
    assert abs(freq["pigment_network"] - targets["pigment_network"]) < 0.08, freq
    for name in ("globules", "milia_like_cyst"):
        assert abs(freq[name] - targets[name]) < 0.06, freq
    for name in ("negative_network", "streaks"):
        assert 0.01 <= freq[name] <= targets[name] + 0.04, freq
    assert freq["pigment_network"] > freq["milia_like_cyst"] > freq["negative_network"] > freq["streaks"] - 0.02
    fractions = np.array(fractions)
    assert fractions.min() >= 0.02 and fractions.max() <= 0.65
    assert (fractions < 0.08).mean() > 0.1 and (fractions > 0.3).mean() > 0.1
    assert np.mean(np.array(contrast) > 0) > 0.95  # lesions are darker than the skin around them


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="layout"):
        synth.generate(tmp_path, layout="isic2020", n=1)
    with pytest.raises(ValueError, match="split"):
        synth.generate(tmp_path, layout="ph2", n=1, split="Test")
    with pytest.raises(ValueError, match="size_range"):
        synth.generate(tmp_path, n=1, size_range=((50, 40), (60, 80)))


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = synth.main([str(tmp_path / "out"), "--layout", "plain", "--n", "3", "--seed", "4",
                     "--min-size", "40", "60", "--max-size", "50", "70"])
    assert rc == 0
    assert "wrote 3 images and 3 masks" in capsys.readouterr().out
    assert len(list((tmp_path / "out" / "images").glob("*.jpg"))) == 3
    parser = synth.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args([str(tmp_path / "cli2"), "--n", "2", "--min-size", "40", "60", "--max-size", "50", "70"])
    assert args.layout == "isic2018" and args.seed == 0
    assert synth.run(args) == 0
    assert len(list((tmp_path / "cli2" / "ISIC2018_Task2_Training_GroundTruth_v3").iterdir())) == 2 * len(ATTRIBUTES)


def _tensor_set(seed: int, n: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Render ``n`` non-square cases and resize them to ``size`` x ``size`` (images float CHW, masks 1HW)."""
    images, masks = [], []
    for i in range(n):
        rng = _rng(seed, i)
        rgb, lesion, _ = synth.render_case(rng, int(rng.integers(120, 160)), int(rng.integers(170, 210)))
        x = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR), np.float32) / 255.0
        y = np.asarray(Image.fromarray(lesion.astype(np.float32)).resize((size, size), Image.Resampling.BILINEAR))
        images.append(x.transpose(2, 0, 1))
        masks.append((y > 0.5)[None].astype(np.float32))
    return np.stack(images), np.stack(masks)


@pytest.mark.slow
def test_tiny_unet_learns_lesions() -> None:
    torch = pytest.importorskip("torch")
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    x_train, y_train = (torch.from_numpy(a) for a in _tensor_set(100, 48))
    x_val, y_val = (torch.from_numpy(a) for a in _tensor_set(200, 16))
    mean, std = x_train.mean((0, 2, 3), keepdim=True), x_train.std((0, 2, 3), keepdim=True)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: fast on a shared CPU, where oversubscribed OpenMP threads stall
    try:
        net = UNet(spatial_dims=2, in_channels=3, out_channels=1, channels=(8, 16, 32), strides=(2, 2))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        loss_fn = DiceCELoss(sigmoid=True)
        gen = torch.Generator().manual_seed(0)
        net.train()
        for step in range(200):
            idx = torch.randint(0, len(x_train), (16,), generator=gen)
            x, y = (x_train[idx] - mean) / std, y_train[idx]
            if step % 2:
                x, y = x.flip(-1), y.flip(-1)
            if (step // 2) % 2:
                x, y = x.flip(-2), y.flip(-2)
            loss = loss_fn(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            pred = (net((x_val - mean) / std) > 0).float()
    finally:
        torch.set_num_threads(threads)
    inter = (pred * y_val).sum((1, 2, 3))
    dice = (2 * inter / (pred.sum((1, 2, 3)) + y_val.sum((1, 2, 3))).clamp(min=1.0)).mean().item()
    print(f"validation Dice {dice:.3f}")
    assert dice >= 0.8


def test_splits_in_one_root_build_one_datalist(tmp_path: Path) -> None:
    """Training and Validation written into one ISIC 2018 root get distinct ids, as in the real release."""
    from isic_monai.data import build_datalist

    synth.generate(tmp_path, layout="isic2018", n=4, seed=0, size_range=SMALL, split="Training")
    synth.generate(tmp_path, layout="isic2018", n=3, seed=0, size_range=SMALL, split="Validation")
    datalist = build_datalist(tmp_path)
    assert len(datalist["training"]) + len(datalist["validation"]) == 4
    assert [e["id"] for e in datalist["testing"]] == _ids(n=3, start=1_000_000)
