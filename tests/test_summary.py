"""Tests for isic_monai.results.summary on a MetricsSaver-style folder written by hand."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from isic_monai.results.summary import mean_std, write_summary


def _write(path: Path, text: str) -> None:
    path.write_text(text.lstrip("\n"))


@pytest.fixture()
def saver_dir(tmp_path) -> Path:
    # the format of monai.handlers.utils.write_metrics_reports: header "filename,class0,...,mean", 4 decimals, nan
    _write(tmp_path / "dice_raw.csv", """
filename,class0,class1,mean
img_b,0.4000,nan,0.4000
img_a,0.8000,0.6000,0.7000
img_c,1.0000,0.2000,0.6000
""")
    _write(tmp_path / "accuracy_raw.csv", """
filename,class0,mean
img_a,0.9000,0.9000
img_b,0.5000,0.5000
img_c,nan,nan
img_d,0.7000,0.7000
""")
    _write(tmp_path / "confusion_tp_raw.csv", """
filename,class0,class1,mean
img_a,120.0000,30.0000,75.0000
img_b,10.0000,0.0000,5.0000
img_c,99.0000,1.0000,50.0000
""")
    _write(tmp_path / "set_jaccard_raw.csv", """
filename,class0,class1,mean
img_a,0.5000,0.5000,0.5000
""")
    _write(tmp_path / "dice_summary.csv", "class\tmean\nclass0\t0.7333\n")
    _write(tmp_path / "metrics.csv", """
dice,0.5667
set_jaccard,0.5
set_jaccard_streaks,0.25
accuracy,0.7
""")
    return tmp_path


def test_mean_std_population_and_nan():
    stats = mean_std([1.0, 2.0, 3.0, 4.0, float("nan")])
    assert stats["n"] == 4
    assert stats["mean"] == pytest.approx(2.5)
    assert stats["std"] == pytest.approx(math.sqrt(1.25))  # population: sum of squares 5 / 4
    empty = mean_std([float("nan")])
    assert empty["n"] == 0 and math.isnan(empty["mean"]) and math.isnan(empty["std"])


def test_per_image_csv_columns_and_cells(saver_dir):
    write_summary(saver_dir, ["lesion", "streaks"])
    with (saver_dir / "per_image.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0].keys())
    assert header[0] == "image"
    assert header[1:] == [  # raw files in name order; a one-channel metric keeps its own name
        "accuracy", "confusion_tp_lesion", "confusion_tp_streaks", "dice_lesion", "dice_streaks",
        "set_jaccard_lesion", "set_jaccard_streaks",
    ]
    assert [r["image"] for r in rows] == ["img_a", "img_b", "img_c", "img_d"]
    by_image = {r["image"]: r for r in rows}
    assert float(by_image["img_a"]["dice_lesion"]) == pytest.approx(0.8)
    assert float(by_image["img_a"]["dice_streaks"]) == pytest.approx(0.6)
    assert math.isnan(float(by_image["img_b"]["dice_streaks"]))
    assert float(by_image["img_c"]["confusion_tp_lesion"]) == pytest.approx(99.0)
    assert math.isnan(float(by_image["img_d"]["dice_lesion"]))  # img_d only appears in accuracy
    assert float(by_image["img_d"]["accuracy"]) == pytest.approx(0.7)


def test_per_image_csv_default_channel_names(saver_dir):
    write_summary(saver_dir)
    with (saver_dir / "per_image.csv").open(newline="") as f:
        header = next(csv.reader(f))
    assert "dice_class0" in header and "dice_class1" in header
    # wrong number of names: fall back to class0.. rather than mislabel
    write_summary(saver_dir, ["only_one"])
    with (saver_dir / "per_image.csv").open(newline="") as f:
        header = next(csv.reader(f))
    assert "dice_class1" in header and "dice_only_one" not in header


def test_summary_values(saver_dir):
    summary = write_summary(saver_dir, ["lesion", "streaks"])
    assert summary["n_images"] == 4
    # counts and set-level details are not averaged
    assert set(summary["per_image"]) == {"dice", "accuracy"}
    dice = summary["per_image"]["dice"]
    # per image: nan-mean over channels: a 0.7, b 0.4 (streaks nan), c 0.6
    image_means = [0.7, 0.4, 0.6]
    mean = sum(image_means) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in image_means) / 3)
    assert dice["mean"] == pytest.approx(0.5666667, abs=1e-6) == pytest.approx(mean)
    assert dice["std"] == pytest.approx(0.1247219, abs=1e-6) == pytest.approx(std)
    assert dice["n"] == 3
    lesion = dice["channels"]["lesion"]  # 0.8, 0.4, 1.0
    assert lesion["mean"] == pytest.approx(2.2 / 3)
    assert lesion["std"] == pytest.approx(math.sqrt((0.2 / 3) ** 2 + (1.0 / 3) ** 2 + (0.8 / 3) ** 2) / math.sqrt(3))
    streaks = dice["channels"]["streaks"]  # 0.6, nan, 0.2
    assert streaks["n"] == 2
    assert streaks["mean"] == pytest.approx(0.4)
    assert streaks["std"] == pytest.approx(0.2)
    accuracy = summary["per_image"]["accuracy"]  # 0.9, 0.5, nan, 0.7
    assert accuracy["n"] == 3
    assert accuracy["mean"] == pytest.approx(0.7)
    assert accuracy["std"] == pytest.approx(math.sqrt(0.08 / 3))
    assert "channels" not in accuracy


def test_set_level_from_metrics_csv(saver_dir):
    summary = write_summary(saver_dir)
    assert summary["set_level"] == {"set_jaccard": 0.5, "set_jaccard_streaks": 0.25}
    saved = json.loads((saver_dir / "summary.json").read_text())
    assert saved["set_level"] == {"set_jaccard": 0.5, "set_jaccard_streaks": 0.25}
    assert saved["per_image"]["dice"]["n"] == 3


def test_summary_markdown(saver_dir):
    write_summary(saver_dir, ["lesion", "streaks"])
    md = (saver_dir / "summary.md").read_text()
    assert md.startswith("Images: 4\n")
    assert "| metric | mean ± std over images | n |" in md
    assert "| dice | 0.5667 ± 0.1247 | 3 |" in md
    assert "dice · streaks | 0.4000 ± 0.2000 | 2 |" in md
    assert "| accuracy | 0.7000 ± 0.1633 | 3 |" in md
    assert "| set_jaccard | 0.5000 |" in md
    assert "| set_jaccard_streaks | 0.2500 |" in md
    assert "confusion_tp" not in md


def test_no_metrics_csv_no_set_level(tmp_path):
    _write(tmp_path / "jaccard_raw.csv", "filename,class0,mean\nx,0.5000,0.5000\ny,0.2500,0.2500\n")
    summary = write_summary(tmp_path)
    assert summary["set_level"] == {}
    assert summary["per_image"]["jaccard"]["mean"] == pytest.approx(0.375)
    assert "set-level" not in (tmp_path / "summary.md").read_text()


def test_no_raw_files(tmp_path):
    (tmp_path / "metrics.csv").write_text("set_jaccard,0.5\n")
    with pytest.raises(FileNotFoundError, match="_raw.csv"):
        write_summary(tmp_path)


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")  # MONAI's raw "mean" of image d
def test_summary_matches_monai_summary_csv(tmp_path):
    # write_summary recomputes MONAI's own summary ops (nanmean, population nanstd, notnans) at full precision
    import numpy as np
    from monai.handlers.utils import write_metrics_reports

    details = np.array([[0.8, 0.6], [0.4, np.nan], [1.0, 0.2], [np.nan, np.nan]])
    write_metrics_reports(tmp_path, ["a", "b", "c", "d"], None, {"dice": details}, summary_ops="*")
    summary = write_summary(tmp_path, ["lesion", "streaks"])["per_image"]["dice"]
    with (tmp_path / "dice_summary.csv").open(newline="") as f:
        monai_rows = {row["class"]: row for row in csv.DictReader(f)}
    for label, stats in [("class0", summary["channels"]["lesion"]), ("class1", summary["channels"]["streaks"]),
                         ("mean", summary)]:
        assert float(monai_rows[label]["mean"]) == pytest.approx(stats["mean"], abs=5e-5)
        assert float(monai_rows[label]["std"]) == pytest.approx(stats["std"], abs=5e-5)
        assert float(monai_rows[label]["notnans"]) == stats["n"]


def _linked(path: Path) -> Path:
    """A hard link to ``path``'s current file: a writer replacing the file by a rename leaves it as it was, one
    writing in place changes it (what a reader holding the file open would see half-written)."""
    link = path.with_name(path.name + ".reader")
    link.hardlink_to(path)
    return link


def test_files_other_steps_read_are_replaced_atomically(saver_dir):
    """summary.json / summary.md / per_image.csv, the evaluation recorder's masks and evaluation.json, and problem
    lists are each written under another name and renamed over the old file, never rewritten in place."""
    import torch
    from ignite.engine import Engine
    from monai.data import MetaTensor

    from isic_monai.data.records import Problem, write_problems
    from isic_monai.results.html_report import EvaluationRecorder

    write_summary(saver_dir, ["lesion", "streaks"])
    names = ("summary.json", "summary.md", "per_image.csv")
    links = {name: _linked(saver_dir / name) for name in names}
    before = {name: link.read_bytes() for name, link in links.items()}
    (saver_dir / "dice_raw.csv").write_text("filename,class0,mean\nimg_a,0.1000,0.1000\n")
    write_summary(saver_dir, ["lesion"])
    for name in names:
        assert links[name].read_bytes() == before[name], f"{name} was rewritten in place"
        assert (saver_dir / name).read_bytes() != before[name], f"{name} was not rewritten"

    out = saver_dir / "eval"
    item = {"pred": torch.zeros(1, 4, 5), "image": MetaTensor(torch.zeros(3, 4, 5),
                                                             meta={"filename_or_obj": "/x/ISIC_0000001.jpg"})}
    engine = Engine(lambda engine, batch: batch)
    EvaluationRecorder(out, [], ["lesion"]).attach(engine)
    engine.run([[item]])
    mask, record = out / "predictions" / "ISIC_0000001_segmentation.png", out / "evaluation.json"
    old_mask, old_record = _linked(mask), _linked(record)
    mask_bytes, record_bytes = old_mask.read_bytes(), old_record.read_bytes()
    item["pred"] = torch.ones(1, 4, 5)
    engine.run([[item]])
    assert old_mask.read_bytes() == mask_bytes and mask.read_bytes() != mask_bytes
    assert old_record.read_bytes() == record_bytes
    assert not list(out.rglob(".*.partial*"))

    problems = saver_dir / "datalist.problems.json"
    write_problems([Problem("a.jpg", "corrupt", "cannot be read")], problems)
    old_problems = _linked(problems)
    write_problems([], problems)
    assert json.loads(old_problems.read_text())["errors"] == 1 and json.loads(problems.read_text())["errors"] == 0
