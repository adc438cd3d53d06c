"""``isic-monai score PRED_DIR GT_DIR``: the real command on generated folders, compared with the ISIC challenge's own
scorer (``isic-challenge-scoring``, the ``scorer`` extra, run through :func:`conftest.official_scorer`), and its
errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import official_scorer
from PIL import Image
from test_official_scores import SIZES, task2_case, write_task2

from isic_monai import ATTRIBUTES
from isic_monai.cli import main

TOL = 1e-9
CLI = Path(sys.executable).with_name("isic-monai")


def _save(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


def _disc(hw: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: hw[0], : hw[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def task1_case(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """Lesion masks of several sizes; image 0 empty in both, 1 predicted empty, 2 a false positive on an empty
    truth, 3 a truth covering the whole image, the others good or poor overlaps (some below the 0.65 cut-off)."""
    rng = np.random.default_rng(seed)
    truth_dir, pred_dir = root / "truth", root / "pred"
    for i, hw in enumerate(SIZES * 2):
        h, w = hw
        truth = _disc(hw, h / 2, w / 2, 0.35 * min(h, w))
        shift = rng.uniform(0, 0.2) * min(h, w)
        pred = _disc(hw, h / 2 + shift, w / 2, rng.uniform(0.28, 0.4) * min(h, w))
        if i == 0:
            truth[:], pred[:] = False, False
        elif i == 1:
            pred[:] = False
        elif i == 2:
            truth[:] = False
        elif i == 3:
            truth[:] = True
        _save(truth_dir / f"ISIC_{i:07d}_segmentation.png", truth)
        _save(pred_dir / f"ISIC_{i:07d}_segmentation.png", pred)
    return pred_dir, truth_dir


@pytest.fixture(scope="module")
def task1(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return task1_case(tmp_path_factory.mktemp("task1"))


@pytest.fixture(scope="module")
def task2_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("task2")
    ids, preds, truths = task2_case(seed=1)
    return write_task2(root / "pred", ids, preds), write_task2(root / "truth", ids, truths)


@pytest.fixture(scope="module")
def task2_official(task2_dirs: tuple[Path, Path]) -> dict:
    """The official scorer's Task 2 result on ``task2_dirs``."""
    pred, truth = task2_dirs
    return official_scorer("task2", truth, pred)


def _run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(["score", *args, "-q"])
    out = capsys.readouterr()
    return code, out.out, out.err


def _close(ours: dict, theirs: dict) -> None:
    for k, v in theirs.items():
        if isinstance(v, dict):
            _close(ours[k], v)
        elif v is None:
            assert ours[k] is None, k
        else:
            assert ours[k] == pytest.approx(v, abs=TOL), k


def test_task1_json_matches_the_official_scorer(task1, capsys) -> None:
    pred, truth = task1
    code, out, _ = _run(capsys, str(pred), str(truth), "--format", "json")
    assert code == 0
    ours = json.loads(out)
    official = official_scorer("task1", truth, pred)
    assert set(official) == {"overall", "validation", "macro_average"}
    _close(ours, official)  # overall, validation and the six macro averages, named as the scorer names them
    assert list(ours["macro_average"]) == list(official["macro_average"])
    # the extras: precision, mean ± std, confusion matrices
    assert ours["task"] == 1 and ours["n_images"] == 2 * len(SIZES)
    assert ours["mean_std"]["jaccard"]["mean"] == pytest.approx(official["macro_average"]["jaccard"], abs=TOL)
    assert ours["mean_std"]["jaccard"]["n"] == 2 * len(SIZES)
    assert 0 < ours["mean_std"]["jaccard"]["std"] < 1
    assert ours["precision"] == pytest.approx(ours["mean_std"]["precision"]["mean"])
    assert sum(ours["confusion_matrix"]["pixels"].values()) == 2 * sum(h * w for h, w in SIZES)
    assert sum(ours["confusion_matrix"]["mean_fraction"].values()) == pytest.approx(1.0)


def test_task1_per_image_csv_matches_the_official_per_image_values(task1, tmp_path, capsys) -> None:
    pred, truth = task1
    out_csv = tmp_path / "per_image.csv"
    code, out, _ = _run(capsys, str(pred), str(truth), "--csv", str(out_csv))
    assert code == 0 and "Overall (mean thresholded Jaccard" in out and "precision" in out
    with out_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(SIZES)
    official = official_scorer("per-image", *[f for row in rows for f in (row["truth"], row["prediction"])])
    names = ("accuracy", "sensitivity", "specificity", "jaccard", "threshold_jaccard", "dice", "precision")
    for row, theirs in zip(rows, official, strict=True):
        assert [int(row[k]) for k in ("tp", "fp", "fn", "tn")] == [theirs[k] for k in ("TP", "FP", "FN", "TN")]
        assert [int(row["height"]), int(row["width"])] == theirs["shape"]
        for name in names:
            assert float(row[name]) == pytest.approx(theirs[name], abs=TOL), (row["image"], name)
    jaccards = [float(r["jaccard"]) for r in rows]
    assert sum(0.65 <= j < 1 for j in jaccards) >= 2 and sum(0 < j < 0.65 for j in jaccards) >= 2  # both sides


def test_task2_json_matches_the_official_scorer(task2_dirs, task2_official, capsys) -> None:
    pred, truth = task2_dirs
    code, out, _ = _run(capsys, str(pred), str(truth), "--format", "json")
    assert code == 0
    ours = json.loads(out)
    official = task2_official
    _close(ours, official)  # jaccard and dice per attribute, micro_average, overall
    assert official["streaks"]["jaccard"] == 1.0
    assert ours["task"] == 2 and ours["n_images"] == len(SIZES) and ours["n_masks"] == 5 * len(SIZES)
    assert ours["mean_jaccard"] == pytest.approx(np.mean([official[n]["jaccard"] for n in ATTRIBUTES]), abs=TOL)
    assert ours["pixel_set_jaccard"]["streaks"] is None  # NaN (empty everywhere) is written as null
    assert set(ours["attributes"]) == set(ATTRIBUTES)
    assert ours["attributes"]["globules"]["mean_std"]["dice"]["n"] == len(SIZES)


def test_task2_through_the_console_script(task2_dirs, task2_official, tmp_path) -> None:
    pred, truth = task2_dirs
    out_csv = tmp_path / "t2.csv"
    proc = subprocess.run([str(CLI), "score", str(pred), str(truth), "--task", "2", "--format", "json", "--csv",
                           str(out_csv), "-q"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _close(json.loads(proc.stdout), task2_official)
    with out_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 * len(SIZES) and {r["attribute"] for r in rows} == set(ATTRIBUTES)


def test_task2_table(task2_dirs, task2_official, capsys) -> None:
    pred, truth = task2_dirs
    code, out, _ = _run(capsys, str(pred), str(truth))
    official = task2_official
    assert code == 0
    assert f"Overall (micro-averaged Jaccard, the official score): {official['overall']:.4f}" in out
    assert f"micro_average{official['micro_average']['jaccard']:>17.4f}" in out


def test_ph2_tree_and_other_file_names(tmp_path, capsys) -> None:
    """PH2 truth (IMDxxx/IMDxxx_lesion/IMDxxx_lesion.bmp, 1-bit) against predictions named IMDxxx.png."""
    rng = np.random.default_rng(3)
    expected = []
    for case, hw in (("IMD002", (40, 52)), ("IMD010", (33, 30)), ("IMD437", (20, 25))):
        truth = rng.random(hw) > 0.5
        pred = truth ^ (rng.random(hw) > 0.8)
        folder = tmp_path / "PH2 Dataset images" / case / f"{case}_lesion"
        folder.mkdir(parents=True)
        Image.fromarray(truth).convert("1").save(folder / f"{case}_lesion.bmp")
        (tmp_path / "PH2 Dataset images" / case / f"{case}_Dermoscopic_Image").mkdir()
        Image.new("RGB", hw[::-1]).save(tmp_path / "PH2 Dataset images" / case / f"{case}_Dermoscopic_Image" /
                                        f"{case}.bmp")
        _save(tmp_path / "pred" / f"{case}.png", pred)
        expected.append((truth & pred).sum() / (truth | pred).sum())
    code, out, _ = _run(capsys, str(tmp_path / "pred"), str(tmp_path / "PH2 Dataset images"), "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert report["n_images"] == 3
    assert report["macro_average"]["jaccard"] == pytest.approx(float(np.mean(expected)), abs=TOL)


def test_ph2_rgb_truth_with_equal_channels_is_scored_as_grey_with_a_warning(tmp_path, capsys) -> None:
    """PH2 stores some truth masks as RGB with three equal {0, 255} channels: scored as greyscale, each file named in
    a warning; the scores equal those of the same masks stored as mode L."""
    rng = np.random.default_rng(5)
    expected = []
    for case, hw in (("IMD002", (40, 52)), ("IMD003", (30, 36))):
        truth = rng.random(hw) > 0.5
        pred = truth ^ (rng.random(hw) > 0.8)
        folder = tmp_path / "PH2 Dataset images" / case / f"{case}_lesion"
        folder.mkdir(parents=True)
        Image.fromarray(truth.astype(np.uint8) * 255).convert("RGB").save(folder / f"{case}_lesion.bmp")
        (tmp_path / "PH2 Dataset images" / case / f"{case}_Dermoscopic_Image").mkdir()
        Image.new("RGB", hw[::-1]).save(tmp_path / "PH2 Dataset images" / case / f"{case}_Dermoscopic_Image" /
                                        f"{case}.bmp")
        _save(tmp_path / "pred" / f"{case}.png", pred)
        expected.append((truth & pred).sum() / (truth | pred).sum())
    report = tmp_path / "problems.json"
    code, out, err = _run(capsys, str(tmp_path / "pred"), str(tmp_path / "PH2 Dataset images"), "--format", "json",
                          "--problems", str(report))
    assert code == 0
    assert json.loads(out)["macro_average"]["jaccard"] == pytest.approx(float(np.mean(expected)), abs=TOL)
    for case in ("IMD002", "IMD003"):
        assert f"{case}_lesion.bmp: mode RGB with equal colour channels, read as a greyscale mask" in err
    assert {p["kind"] for p in json.loads(report.read_text())["problems"]} == {"colour_grey"}


def test_size_mismatch_missing_and_bad_files_are_errors_naming_them(task1, tmp_path, capsys) -> None:
    pred, truth = task1
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in sorted(pred.iterdir()):
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "ISIC_0000004_segmentation.png").unlink()  # missing
    _save(bad / "ISIC_0000005_segmentation.png", np.zeros((7, 9), dtype=bool))  # wrong size
    Image.new("RGB", (SIZES[6][1], SIZES[6][0]), (255, 0, 0)).save(bad / "ISIC_0000006_segmentation.png")  # red
    _save(bad / "ISIC_0000099_segmentation.png", np.zeros((5, 5), dtype=bool))  # no truth: a warning
    report = tmp_path / "problems.json"
    code, out, err = _run(capsys, str(bad), str(truth), "--problems", str(report))
    assert code == 1 and out == ""
    assert "3 error(s)" in err
    assert f"{truth / 'ISIC_0000004_segmentation.png'}: no prediction for ISIC_0000004" in err
    assert f"{bad / 'ISIC_0000005_segmentation.png'}: size (H, W) = (7, 9) but its truth" in err
    assert "never resized" in err
    assert f"{bad / 'ISIC_0000006_segmentation.png'}: mode RGB whose channels differ, not a single-channel" in err
    assert "no truth file for ISIC_0000099" in err
    kinds = {p["kind"] for p in json.loads(report.read_text())["problems"]}
    assert kinds == {"missing_prediction", "size_mismatch", "not_greyscale", "unmatched_prediction"}


def test_duplicates_task_mismatch_and_missing_folder(task1, task2_dirs, tmp_path, capsys) -> None:
    pred, truth = task1
    dup = tmp_path / "dup"
    dup.mkdir()
    for f in sorted(pred.iterdir()):
        (dup / f.name).write_bytes(f.read_bytes())
    (dup / "ISIC_0000001.png").write_bytes((pred / "ISIC_0000001_segmentation.png").read_bytes())
    code, _, err = _run(capsys, str(dup), str(truth))
    assert code == 1 and "several prediction files for ISIC_0000001" in err
    code, _, err = _run(capsys, str(pred), str(truth), "--task", "2")
    assert code == 1 and "--task 2 but the truth folder holds Task 1 masks" in err
    code, _, err = _run(capsys, str(pred), str(tmp_path / "nowhere"))
    assert code == 2 and "nowhere: not a folder" in err
    t2_pred, _ = task2_dirs
    code, _, err = _run(capsys, str(t2_pred), str(truth))  # Task 2 predictions for Task 1 truth: all missing
    assert code == 1 and "no prediction for ISIC_0000000" in err


def test_zero_one_masks_are_scored_as_empty_with_a_warning(tmp_path, capsys) -> None:
    truth = np.zeros((10, 12), dtype=bool)
    truth[2:8, 3:9] = True
    _save(tmp_path / "truth" / "ISIC_0000001_segmentation.png", truth)
    (tmp_path / "pred").mkdir()
    Image.fromarray(truth.astype(np.uint8), mode="L").save(tmp_path / "pred" / "ISIC_0000001.png")
    code, out, err = _run(capsys, str(tmp_path / "pred"), str(tmp_path / "truth"), "--format", "json")
    assert code == 0 and "0/1 mask" in err
    official = official_scorer("task1", tmp_path / "truth", tmp_path / "pred")
    assert json.loads(out)["macro_average"]["jaccard"] == official["macro_average"]["jaccard"] == 0.0
