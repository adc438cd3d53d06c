"""isic_monai.engines.folder_inference: scanning an input folder with good and bad files, and the final report."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isic_monai.engines.folder_inference import (
    Failure,
    InputScan,
    Skipped,
    check_output_dirs,
    finish,
    mask_name_suffix,
    scan_inputs,
)


def _photo(seed: int, h: int = 48, w: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))


@pytest.fixture()
def input_dir(tmp_path) -> Path:
    root = tmp_path / "in"
    root.mkdir()
    _photo(0).save(root / "b_photo.jpg", quality=90)
    _photo(1).save(root / "a_photo.png")
    _photo(2).save(root / "c_photo.bmp")
    Image.fromarray(np.full((10, 12), 80, np.uint8), mode="L").save(root / "d_grey.png")
    buf = io.BytesIO()
    _photo(3, 256, 256).save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "empty.png").write_bytes(b"")
    (root / "notes.png").write_text("this is not a picture\n")
    # outputs of an earlier run in the same folder: never inputs, even though they are valid PNGs
    Image.new("L", (64, 48)).save(root / "x_segmentation.png")
    _photo(4).save(root / "x_overlay.png")
    Image.new("L", (64, 48)).save(root / "x_attribute_streaks.png")
    (root / "readme.txt").write_text("not an image suffix")
    return root


def test_scan_inputs_good_and_bad(input_dir):
    good, bad = scan_inputs(input_dir)
    assert [g["id"] for g in good] == ["a_photo", "b_photo", "c_photo", "d_grey"]
    assert [Path(g["image"]).name for g in good] == ["a_photo.png", "b_photo.jpg", "c_photo.bmp", "d_grey.png"]
    assert all(Path(g["image"]).is_absolute() for g in good)
    assert all(isinstance(f, Failure) for f in bad)
    assert sorted(Path(f.path).name for f in bad) == ["empty.png", "notes.png", "truncated.jpg"]
    for failure in bad:
        assert "cannot be read as an image" in failure.problem
    names = {Path(g["image"]).name for g in good} | {Path(f.path).name for f in bad}
    assert not any(m in n for n in names for m in ("_segmentation", "_overlay", "_attribute_", ".txt"))
    # every other file is accounted for, with its reason
    skipped = scan_inputs(input_dir).skipped
    assert all(isinstance(s, Skipped) for s in skipped)
    reasons = {Path(s.path).name: s.reason for s in skipped}
    assert sorted(reasons) == ["readme.txt", "x_attribute_streaks.png", "x_overlay.png", "x_segmentation.png"]
    assert reasons["readme.txt"].startswith("not an image file")
    assert "'_segmentation'" in reasons["x_segmentation.png"] and "--skip_mask_names false" in reasons["x_overlay.png"]


def test_scan_inputs_truncated_jpeg_is_a_failure(tmp_path):
    buf = io.BytesIO()
    _photo(5, 512, 512).save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    path = tmp_path / "big.jpg"
    path.write_bytes(data[: int(len(data) * 0.6)])
    good_path = tmp_path / "ok.jpg"
    good_path.write_bytes(data)
    good, bad = scan_inputs(tmp_path)
    assert [g["id"] for g in good] == ["ok"]
    assert [Path(f.path).name for f in bad] == ["big.jpg"]


def test_scan_inputs_single_file(tmp_path):
    path = tmp_path / "one.png"
    _photo(6).save(path)
    good, bad = scan_inputs(path)
    assert good == [{"image": str(path.resolve()), "id": "one"}]
    assert bad == []


def test_scan_inputs_recursive(tmp_path):
    (tmp_path / "sub").mkdir()
    _photo(7).save(tmp_path / "top.png")
    _photo(8).save(tmp_path / "sub" / "deep.png")
    assert [g["id"] for g in scan_inputs(tmp_path).good] == ["top"]
    assert sorted(g["id"] for g in scan_inputs(tmp_path, recursive=True).good) == ["deep", "top"]


@pytest.mark.parametrize(("name", "suffix"), [
    ("patient_mask_3.jpg", None),  # a photo: only the end of the name marks a mask
    ("mask.jpg", None),
    ("lesion_overlay_study.png", None),
    ("x_mask.jpg", "_mask"),
    ("ISIC_0000000_Segmentation.png", "_Segmentation"),  # ISIC 2016 ground truth
    ("ISIC_0000000_segmentation.png", "_segmentation"),
    ("ISIC_0000000_attribute_pigment_network.png", "_attribute_pigment_network"),
    ("IMD002_lesion.bmp", "_lesion"),  # PH2
    ("ISIC_0000000_superpixels.png", "_superpixels"),  # ISIC 2017 data folders
    ("x_OVERLAY.PNG", "_OVERLAY"),
])
def test_mask_name_suffix(name: str, suffix: str | None) -> None:
    assert mask_name_suffix(Path(name)) == suffix


def test_photo_with_mask_in_the_middle_of_its_name_is_segmented(tmp_path: Path) -> None:
    _photo(10).save(tmp_path / "patient_mask_3.jpg")
    _photo(11).save(tmp_path / "patient_lesion.jpg")
    scan = scan_inputs(tmp_path)
    assert [g["id"] for g in scan.good] == ["patient_mask_3"]
    assert [(Path(s.path).name, "'_lesion'" in s.reason) for s in scan.skipped] == [("patient_lesion.jpg", True)]
    everything = scan_inputs(tmp_path, skip_mask_names=False)  # --skip_mask_names false: every image
    assert [g["id"] for g in everything.good] == ["patient_lesion", "patient_mask_3"] and not everything.skipped


def test_only_mask_named_images_is_an_error_naming_them(tmp_path: Path) -> None:
    Image.new("L", (4, 4)).save(tmp_path / "a_segmentation.png")
    with pytest.raises(ValueError, match=r"no images .* 1 file\(s\) skipped, e\.g\. .*a_segmentation\.png"):
        scan_inputs(tmp_path)


def test_same_id_twice_fails_both_and_names_each_other(tmp_path: Path) -> None:
    """``x.jpg`` and ``x.png`` would both write ``x_segmentation.png``: neither is segmented, each names the other;
    ids differing only in case clash too (one file on a case-insensitive disk); the other photos are unaffected."""
    _photo(12).save(tmp_path / "x.jpg")
    _photo(13).save(tmp_path / "x.png")
    _photo(14).save(tmp_path / "Case.png")
    _photo(15).save(tmp_path / "case.bmp")
    _photo(16).save(tmp_path / "ok.png")
    scan = scan_inputs(tmp_path)
    assert [g["id"] for g in scan.good] == ["ok"]
    problems = {Path(f.path).name: f.problem for f in scan.failed}
    assert sorted(problems) == ["Case.png", "case.bmp", "x.jpg", "x.png"]
    assert str(tmp_path / "x.png") in problems["x.jpg"] and str(tmp_path / "x.jpg") in problems["x.png"]
    assert "x_segmentation.png" in problems["x.jpg"] and str(tmp_path / "case.bmp") in problems["Case.png"]


def test_same_id_in_sub_folders_clashes_only_when_recursive(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _photo(17).save(tmp_path / "a" / "lesion1.jpg")
    _photo(18).save(tmp_path / "b" / "lesion1.jpg")
    _photo(19).save(tmp_path / "top.jpg")
    assert [g["id"] for g in scan_inputs(tmp_path).good] == ["top"]  # sub-folders not scanned
    scan = scan_inputs(tmp_path, recursive=True)
    assert [g["id"] for g in scan.good] == ["top"]
    assert sorted(Path(f.path).relative_to(tmp_path).as_posix() for f in scan.failed) == ["a/lesion1.jpg",
                                                                                          "b/lesion1.jpg"]
    assert str(tmp_path / "b" / "lesion1.jpg") in scan.failed[0].problem


def test_scan_unpacks_as_good_and_failed(tmp_path: Path) -> None:
    _photo(20).save(tmp_path / "one.png")
    scan = scan_inputs(tmp_path)
    good, failed = scan
    assert isinstance(scan, InputScan) and good == scan.good and failed == scan.failed == []


def test_scan_inputs_none():
    with pytest.raises(ValueError, match="--input_dir"):
        scan_inputs(None)


def test_scan_inputs_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        scan_inputs(tmp_path / "missing")


def test_scan_inputs_no_images(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    Image.new("L", (4, 4)).save(tmp_path / "a_segmentation.png")
    with pytest.raises(ValueError, match="no images"):
        scan_inputs(tmp_path)


def test_finish_with_failures_exits_1(tmp_path):
    failures = [Failure("/in/bad.jpg", "cannot be read as an image (OSError: truncated)")]
    with pytest.raises(SystemExit) as err:
        finish(failures, tmp_path / "out", written=3)
    assert err.value.code == 1
    report = json.loads((tmp_path / "out" / "failures.json").read_text())
    assert report == {
        "failed": [{"path": "/in/bad.jpg", "problem": "cannot be read as an image (OSError: truncated)"}],
        "n_failed": 1,
        "n_written": 3,
        "skipped": [],
        "n_skipped": 0,
    }


def test_finish_without_failures_returns(tmp_path):
    assert finish([], tmp_path, written=5) is None
    report = json.loads((tmp_path / "failures.json").read_text())
    assert report == {"failed": [], "n_failed": 0, "n_written": 5, "skipped": [], "n_skipped": 0}


def test_finish_lists_skipped_files_without_failing(tmp_path):
    """Files skipped by design are listed with their reason; they do not make the exit status 1. The report is
    written atomically: replacing an earlier one leaves no partial file."""
    from isic_monai.data.atomic import PARTIAL_GLOB

    (tmp_path / "failures.json").write_text("an earlier run's report")
    os.link(tmp_path / "failures.json", tmp_path / "reader.json")  # a reader of the old report keeps it whole
    skipped = [Skipped("/in/x_segmentation.png", "named like a mask or overlay (ends in '_segmentation')")]
    assert finish([], tmp_path, written=2, skipped=skipped) is None
    report = json.loads((tmp_path / "failures.json").read_text())
    assert report["skipped"] == [{"path": "/in/x_segmentation.png",
                                  "reason": "named like a mask or overlay (ends in '_segmentation')"}]
    assert report["n_skipped"] == 1 and report["n_failed"] == 0
    assert (tmp_path / "reader.json").read_text() == "an earlier run's report"  # replaced by a rename
    assert not list(tmp_path.glob(PARTIAL_GLOB))


def test_scan_then_finish_reports_the_bad_files(input_dir, tmp_path):
    good, bad = scan_inputs(input_dir)
    with pytest.raises(SystemExit):
        finish(bad, tmp_path / "report", written=len(good))
    report = json.loads((tmp_path / "report" / "failures.json").read_text())
    assert report["n_failed"] == 3 and report["n_written"] == 4
    assert sorted(Path(f["path"]).name for f in report["failed"]) == ["empty.png", "notes.png", "truncated.jpg"]


def test_check_output_dirs_creates_them(tmp_path):
    made = check_output_dirs([tmp_path / "a" / "masks", tmp_path / "a" / "masks_report"])
    assert all(p.is_dir() for p in made)
    assert not any(p.name.startswith(".write-test") for p in (tmp_path / "a" / "masks").iterdir())


def test_check_output_dirs_unwritable_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(PermissionError, match="file/out: output folder cannot be written"):
        check_output_dirs([tmp_path / "ok", blocker / "out"])


def test_inputs_follow_the_dataset_image_rules(tmp_path):
    Image.fromarray(np.zeros((20, 30), np.uint16)).save(tmp_path / "deep.png")  # 16-bit: an error in validate too
    _photo(9).convert("CMYK").save(tmp_path / "cmyk.jpg")  # converted to RGB: only a warning
    good, bad = scan_inputs(tmp_path)
    assert [g["id"] for g in good] == ["cmyk"]
    assert [(Path(f.path).name, f.problem.split(" (")[0]) for f in bad] == [("deep.png", "unsupported image mode")]


# ------------------------------------------------------------------------------------------ quiet logs


def test_line_progress_writes_a_line_per_tenth() -> None:
    """Off a terminal: at most 11 lines (each 10 % and the end) for any total; none of tqdm's redraws."""
    from isic_monai.data.parallel import LineProgress, progress_bar

    out = io.StringIO()
    bar = progress_bar(600, "inference", "photo", stream=out)
    assert isinstance(bar, LineProgress)
    with bar:
        for _ in range(600):
            bar.update()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in out.getvalue()
    assert lines[0].startswith("inference: 60/600 photo (10%)") and lines[-1].startswith("inference: 600/600 photo")
    small = io.StringIO()
    with progress_bar(3, "x", stream=small) as bar3:
        for _ in range(3):
            bar3.update()
    assert len(small.getvalue().splitlines()) == 3  # 33 %, 66 %, then the end
    assert progress_bar(5, "off", enabled=False, stream=small).disable  # nothing shown when disabled


def test_progress_bar_draws_on_a_terminal() -> None:
    """On a terminal the display is tqdm's bar."""
    from tqdm import tqdm

    from isic_monai.data.parallel import progress_bar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    with progress_bar(4, "bar", stream=stream) as bar:
        bar.update(4)
    assert isinstance(bar, tqdm) and "\r" in stream.getvalue()


N_FOLDER = 60
"""Photos of the folder-inference runs below."""


def _inference(photos: Path, out: Path, *extra: str) -> list[str]:
    """The bundle's folder inference as a user types it (run inside ``bundle/``)."""
    import sys

    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml", "--dataset_dir",
            str(photos), "--output_dir", str(out), "--num_workers", "0", *extra]


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}
"""The environment of the folder-inference runs: one torch thread."""


def _run_inference(photos: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """:func:`_inference` run to its end inside ``bundle/`` with :data:`ONE_THREAD`, its output captured."""
    from conftest import REPO_ROOT, run_command

    return run_command(_inference(photos, out, *extra), cwd=REPO_ROOT / "bundle", timeout=600, env=ONE_THREAD)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """:data:`N_FOLDER` synthetic photos and one uninterrupted folder inference of them with the bundle's defaults
    (TTA, overlays), its output written to a pipe: ``(photos, output folder, log)``."""
    from isic_monai.data.synth import generate

    root = tmp_path_factory.mktemp("folder_inference")
    generate(root / "data", layout="isic2018", n=N_FOLDER, seed=4, size_range=((40, 48), (52, 64)), split="Test")
    photos, full = root / "data" / "ISIC2018_Task1-2_Test_Input", root / "full"
    proc = _run_inference(photos, full)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return photos, full, proc.stdout + proc.stderr


@pytest.mark.slow
def test_folder_inference_log_stays_short(uninterrupted: tuple[Path, Path, str]) -> None:
    """Folder inference of 60 photos written to a pipe: a short log (the bar's redraws never reach it)."""
    _, full, log = uninterrupted
    assert len(list(full.glob("*_segmentation.png"))) == N_FOLDER
    progress = [line for line in log.splitlines() if line.startswith("inference: ")]
    assert 1 <= len(progress) <= 11 and progress[-1].startswith(f"inference: {N_FOLDER}/{N_FOLDER} photo")
    assert "\r" not in log and len(log.splitlines()) <= 50, log


@pytest.mark.slow
def test_killed_folder_inference_resumes_with_skip_existing(uninterrupted: tuple[Path, Path, str],
                                                            tmp_path: Path) -> None:
    """A folder inference killed midway, run again with ``--skip_existing true``: every mask once, each identical to an
    uninterrupted run's, the masks written before the kill left as they were, and only the missing ones written."""
    import signal
    import time

    from conftest import REPO_ROOT

    from isic_monai.data.atomic import PARTIAL_GLOB

    photos, full, _ = uninterrupted
    n = N_FOLDER
    expected = {p.name: p.read_bytes() for p in full.glob("*_segmentation.png")}
    assert len(expected) == n

    out = tmp_path / "out"
    killed = subprocess.Popen(_inference(photos, out), cwd=REPO_ROOT / "bundle", stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=ONE_THREAD)
    deadline = time.monotonic() + 300
    while killed.poll() is None and time.monotonic() < deadline and len(list(out.glob("*_segmentation.png"))) < 5:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*_segmentation.png")}
    assert 5 <= len(before) < n, f"the kill came at {len(before)} of {n} masks: not midway"

    proc = _run_inference(photos, out, "--skip_existing", "true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{len(before)} of {n} photos already have their masks" in proc.stdout + proc.stderr
    masks = {p.name: p.read_bytes() for p in out.glob("*_segmentation.png")}
    assert masks == expected  # every mask once, each as an uninterrupted run writes it
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*_segmentation.png") if p.name in before} == before
    assert json.loads((tmp_path / "out_report" / "failures.json").read_text())["n_written"] == n - len(before)
    assert len(list((tmp_path / "out_overlays").glob("*.png"))) == n  # the overlays too: masks are written last
    assert not list(out.glob(PARTIAL_GLOB)) and not list((tmp_path / "out_overlays").glob(PARTIAL_GLOB))
    # predictions.csv: one row per photo, each as the uninterrupted run's (rows are written before the masks)
    table = (tmp_path / "out_report" / "predictions.csv").read_text()
    assert table == Path(f"{full}_report", "predictions.csv").read_text() and len(table.splitlines()) == n + 1
    proc = _run_inference(photos, out, "--skip_existing", "true")  # nothing left: nothing rewritten
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "out_report" / "failures.json").read_text())["n_written"] == 0
    assert {p.name: p.read_bytes() for p in out.glob("*_segmentation.png")} == expected
    assert (tmp_path / "out_report" / "predictions.csv").read_text() == table


@pytest.mark.slow
def test_folder_inference_accounts_for_every_input(tmp_path: Path) -> None:
    """The real CLI on a folder with a photo named ``patient_mask_3`` (segmented), images named like masks
    (skipped, listed with their reason), two photos with one id (neither segmented: both named, exit status 1) and a
    text file: every file is in the masks or in ``failures.json``, and the log names each one not segmented.
    Run again with ``--skip_mask_names false``, the mask-named images are segmented too."""
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(21).save(photos / "ISIC_0000001.jpg", quality=90)
    _photo(22).save(photos / "patient_mask_3.jpg", quality=90)
    _photo(23).save(photos / "twin.jpg", quality=90)
    _photo(24).save(photos / "twin.png")
    _photo(25).save(photos / "IMD002_lesion.bmp")
    Image.new("L", (64, 48)).save(photos / "ISIC_0000001_segmentation.png")
    (photos / "LICENSE.txt").write_text("CC-BY-NC\n")
    out = tmp_path / "out"
    proc = _run_inference(photos, out, "--progress", "false")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-4000:]
    assert sorted(p.name for p in out.iterdir()) == ["ISIC_0000001_segmentation.png",
                                                     "patient_mask_3_segmentation.png"]
    report = json.loads((tmp_path / "out_report" / "failures.json").read_text())
    failed = {Path(f["path"]).name: f["problem"] for f in report["failed"]}
    assert sorted(failed) == ["twin.jpg", "twin.png"] and report["n_written"] == 2
    assert str(photos / "twin.png") in failed["twin.jpg"] and str(photos / "twin.jpg") in failed["twin.png"]
    skipped = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert sorted(skipped) == ["IMD002_lesion.bmp", "ISIC_0000001_segmentation.png", "LICENSE.txt"]
    assert report["n_skipped"] == 3 and "named like a mask" in skipped["IMD002_lesion.bmp"]
    for name in ("twin.jpg", "twin.png", "IMD002_lesion.bmp", "ISIC_0000001_segmentation.png"):
        assert name in log, name
    every = tmp_path / "every"
    proc = _run_inference(photos, every, "--progress", "false", "--skip_mask_names", "false")
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-4000:]  # the twins still clash
    assert sorted(p.name for p in every.iterdir()) == sorted(f"{i}_segmentation.png" for i in (
        "IMD002_lesion", "ISIC_0000001", "ISIC_0000001_segmentation", "patient_mask_3"))
    assert [Path(s["path"]).name for s in json.loads((tmp_path / "every_report" / "failures.json").read_text())[
        "skipped"]] == ["LICENSE.txt"]
