"""``isic-monai report`` on real tiny runs (Task 1 and Task 2: train, evaluate, report), the page loaded in headless
Chromium (Debian's ``chromium``): no console error, tables of the right size, sorting, a screenshot."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_command
from PIL import Image
from tiny_runs import EVALUATE, TRAIN, evaluate, reported_run, train

from isic_monai.results.html_report import (
    build_report,
    confusion_matrices,
    gallery_cases,
    image_scores,
    presence_counts,
    read_per_image,
)

TASK2 = "configs/tasks/task2_attributes.yaml"
CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium: apt-get install chromium (.ci/run does)")
GALLERY = 2


@pytest.fixture(scope="module")
def datalist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return reported_run(tmp_path_factory)[0]


@pytest.fixture(scope="module")
def task1_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny Task 1 run, trained and evaluated once (shared with tests/test_pictures.py)."""
    return reported_run(tmp_path_factory)[1]


@pytest.fixture(scope="module")
def task1_page(task1_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report written by the console script."""
    out = tmp_path_factory.mktemp("report_page") / "report.html"
    proc = run_command([sys.executable, "-m", "isic_monai.cli", "report", str(task1_run), "-o", str(out),
                        "--gallery", str(GALLERY)], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "report:" in proc.stderr  # the progress bar over the gallery
    return out


def chromium(target: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium on a page (local files only; logging to stderr, where console messages appear)."""
    profile = tmp_path / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args, target]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def console_messages(stderr: str) -> list[str]:
    """The page's console messages and uncaught errors, as Chromium logs them (``INFO:CONSOLE``)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def table_rows(dom: str, table_id: str) -> list[str]:
    """The ``<tr>`` elements of a table's body."""
    match = re.search(rf'<table id="{re.escape(table_id)}"[^>]*>.*?<tbody>(.*?)</tbody>', dom, re.S)
    assert match, f"no table {table_id}"
    return re.findall(r"<tr>.*?</tr>", match.group(1), re.S)


# ------------------------------------------------------------------------------------------ evaluation record


@pytest.mark.slow
def test_evaluation_saves_the_evaluated_masks(task1_run: Path) -> None:
    """eval/predictions holds the masks that were scored: recomputing each Jaccard gives per_image.csv's."""
    record = json.loads((task1_run / "eval" / "evaluation.json").read_text())
    assert record["channel_names"] == ["lesion"] and record["settings"]["tta"] is True  # the default
    columns, rows = read_per_image(task1_run / "eval" / "per_image.csv")
    assert len(record["cases"]) == len(rows) == 5
    by_image = {row["image"]: row for row in rows}
    for case in record["cases"]:
        pred_img = Image.open(task1_run / "eval" / "predictions" / case["predictions"][0])
        photo = Image.open(case["image"])
        assert pred_img.size == photo.size and pred_img.mode == "L"  # the photo's own size
        pred = np.asarray(pred_img)
        assert set(np.unique(pred)) <= {0, 255}
        truth = np.asarray(Image.open(case["truth"][0]).convert("L")) > 127
        union = ((pred > 127) | truth).sum()
        jaccard = ((pred > 127) & truth).sum() / union if union else 1.0
        assert jaccard == pytest.approx(by_image[case["image"]]["jaccard"], abs=1e-5)


# ------------------------------------------------------------------------------------------ the page


@pytest.mark.slow
def test_report_sections_from_the_run(task1_page: Path, task1_run: Path) -> None:
    page = task1_page.read_text()
    assert "src=\"file:" not in page and "http://" not in page and "https://" not in page  # self-contained
    assert page.count('<figure class="case worst">') == GALLERY and page.count('<figure class="case best">') == GALLERY
    assert page.count("data:image/jpeg;base64,") == 2 * GALLERY
    for element in ('id="training-curves"', 'id="score-histogram"', 'id="confusion-lesion"', 'id="run-settings"',
                    'id="eval-settings"', 'id="thresholds"', "the ISIC 2018 Task 1 score"):
        assert element in page, element
    assert 'id="attribute-chart"' not in page  # Task 1 has one channel
    # Task 1 is scored per image: its three official scores, not the set-level pixel sums under seven names
    official = table_rows(page, "official-table")
    assert len(official) == 3 and not any("set_" in row or "set level" in row for row in official)


@needs_chromium
@pytest.mark.slow
def test_report_in_headless_chromium(task1_page: Path, task1_run: Path, tmp_path: Path) -> None:
    summary = json.loads((task1_run / "eval" / "summary.json").read_text())
    columns, rows = read_per_image(task1_run / "eval" / "per_image.csv")
    proc = chromium(task1_page.as_uri() + "#sort=jaccard:asc", tmp_path, "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-3000:]
    dom = proc.stdout
    assert console_messages(proc.stderr) == []
    assert re.search(r'<pre id="js-errors"></pre>', dom)
    assert 'id="js-status" data-ready="1"' in dom  # the page's script ran to its end
    assert len(table_rows(dom, "summary-table")) == len(summary["per_image"]) == 8  # one row per metric
    body = table_rows(dom, "per-image-table")
    assert len(body) == len(rows) == 5
    # sorted on load by the hash: ascending Jaccard
    assert 'data-sorted="jaccard:asc"' in dom
    index = _per_image_index(dom, "jaccard")
    shown = [float(re.findall(r'data-value="([^"]*)"', row)[index]) for row in body]
    assert shown == sorted(shown) and shown[0] == pytest.approx(min(r["jaccard"] for r in rows), abs=1e-4)
    # and by each prediction's confidence, the least confident first: the photos to check by eye
    proc = chromium(task1_page.as_uri() + "#sort=confidence:asc", tmp_path, "--dump-dom")
    assert proc.returncode == 0 and 'data-sorted="confidence:asc"' in proc.stdout, proc.stderr[-3000:]
    index = _per_image_index(proc.stdout, "confidence")
    shown = [float(re.findall(r'data-value="([^"]*)"', row)[index]) for row in table_rows(proc.stdout,
                                                                                           "per-image-table")]
    assert shown == sorted(shown) and shown[0] == pytest.approx(min(r["confidence"] for r in rows), abs=1e-4)

    shot = tmp_path / "report.png"
    proc = chromium(task1_page.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1280,2400",
                    "--hide-scrollbars")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert console_messages(proc.stderr) == []
    with Image.open(shot) as img:
        assert img.format == "PNG" and img.size == (1280, 2400)
        grey = np.asarray(img.convert("L"), dtype=float)
    assert grey.std() > 20 and (grey < 128).mean() > 0.01  # text, tables and pictures, not a blank page


def _per_image_index(dom: str, column: str) -> int:
    head = re.search(r'<table id="per-image-table"[^>]*>\s*<thead>(.*?)</thead>', dom, re.S).group(1)
    names = re.findall(r'data-column="([^"]*)"', head)
    return names.index(column)


@needs_chromium
def test_chromium_check_catches_a_script_error(tmp_path: Path) -> None:
    """The two error detectors the report test relies on do fire on a broken page."""
    from isic_monai.results.html_report import error_collector  # the collector the report uses

    broken = tmp_path / "broken.html"
    broken.write_text(f"<html><head><script>{error_collector()}</script></head><body><pre id=\"js-errors\"></pre>"
                      "<script>notDefinedAnywhere();</script></body></html>")
    proc = chromium(broken.as_uri(), tmp_path, "--dump-dom")
    assert "notDefinedAnywhere" in proc.stdout.split('<pre id="js-errors">')[1]
    assert any("notDefinedAnywhere" in line for line in console_messages(proc.stderr))


# ------------------------------------------------------------------------------------------ older evaluations


@pytest.mark.slow
def test_report_of_an_evaluation_without_record_takes_truth_from_a_datalist(task1_run: Path, datalist: Path,
                                                                           tmp_path: Path) -> None:
    older = tmp_path / "older"
    shutil.copytree(task1_run, older, ignore=shutil.ignore_patterns("evaluation.json", "predictions", "*.png"))
    page = build_report(older, n_gallery=1, datalist=json.loads(datalist.read_text()))
    assert page.count('<figure class="case') == 2 and page.count("data:image/jpeg;base64,") == 2
    assert "saved no predictions" in page
    assert "drawn from logs/training_history.csv" in page  # the curves PNG was left behind: drawn again
    no_truth = build_report(older, n_gallery=1)  # the photos from per_image.csv, no truth known
    assert no_truth.count("data:image/jpeg;base64,") == 2 and "no truth files are known" in no_truth


# ------------------------------------------------------------------------------------------ Task 2


@pytest.mark.slow
def test_task2_report_official_scores_and_attribute_chart(datalist: Path, tmp_path: Path) -> None:
    root = tmp_path / "t2"
    train(datalist, root, configs=(TRAIN, TASK2), epochs=2)
    evaluate(datalist, root, configs=(TRAIN, TASK2, EVALUATE))
    page = build_report(root, n_gallery=1)
    summary = json.loads((root / "eval" / "summary.json").read_text())
    assert "Official set-level scores" in page and f"{summary['set_scores']['overall']:.4f}" in page
    official = table_rows(page, "official-table")
    assert len(official) == 5 + 2  # five attributes, overall, mean
    assert "milia like cyst" in official[3] and "the official score" in official[5]
    summary_rows = table_rows(page, "summary-table")
    assert len(summary_rows) == len(summary["per_image"])
    assert all(row.count("<td>") == 1 + 1 + 5 + 1 for row in summary_rows)  # metric, mean, five channels, n
    assert 'id="attribute-chart"' in page
    columns, rows = read_per_image(root / "eval" / "per_image.csv")
    assert len(table_rows(page, "per-image-table")) == len(rows)
    record = json.loads((root / "eval" / "evaluation.json").read_text())
    assert len(record["cases"][0]["predictions"]) == 5
    assert all((root / "eval" / "predictions" / n).is_file() for n in record["cases"][0]["predictions"])


# ------------------------------------------------------------------------------------------ pure parts


def test_scores_gallery_presence_and_confusion_from_rows() -> None:
    columns = ["jaccard_a", "jaccard_b", "confusion_tp_a", "confusion_fp_a", "confusion_fn_a", "confusion_tn_a",
               "confusion_tp_b", "confusion_fp_b", "confusion_fn_b", "confusion_tn_b"]
    nan = float("nan")
    values = [(0.5, nan, 1, 0, 1, 8, 0, 0, 0, 10), (0.9, 0.7, 3, 1, 0, 6, 2, 0, 0, 8),
              (nan, nan, 0, 2, 0, 8, 0, 0, 0, 10), (0.1, 0.3, 0, 0, 4, 6, 0, 3, 1, 6)]
    rows = [{"image": f"i{k}.jpg", **dict(zip(columns, v, strict=True))} for k, v in enumerate(values)]
    scores = image_scores(rows, columns, "jaccard", ["a", "b"])
    assert scores[0] == 0.5 and scores[1] == pytest.approx(0.8) and np.isnan(scores[2])
    assert gallery_cases(scores, 5) == ([3], [1])  # NaN left out; at most half of the scored images each
    assert presence_counts(rows, columns, ["a", "b"]) == {
        "a": {"truth": 3, "prediction": 3, "images": 4}, "b": {"truth": 2, "prediction": 2, "images": 4}}
    matrices = confusion_matrices(rows, columns, ["a", "b"])
    assert matrices["a"].tolist() == [[28, 3], [5, 4]]
    with pytest.raises(ValueError, match="no 'dice' column"):
        image_scores(rows, columns, "dice")
